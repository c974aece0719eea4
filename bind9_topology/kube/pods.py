"""Which pods stand for an instance right now: those of its Deployment's current ReplicaSet.

Pure (plain dicts as the Kubernetes API returns them, no client import), so the
choice during a roll, when old and new ReplicaSets both have pods, is unit-tested.
The transfer gate verifies every pod this returns; a pod of an old ReplicaSet is
on its way out and says nothing about what the instance serves after `pulumi up`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

REVISION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH = "pod-template-hash"


@dataclass(frozen=True)
class PodTarget:
    """One pod to verify: where it is and how the gate names it in messages."""

    namespace: str
    name: str
    node: str
    instance: str
    ready: bool
    ip: str = ""  # status.podIP ("" until the pod has one): gate.via pod-network asks it

    @property
    def label(self) -> str:
        return f"pod {self.namespace}/{self.name} on {self.node or 'no node'} ({self.instance})"


def _owned_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    return any(ref.get("uid") == owner_uid
               for ref in obj.get("metadata", {}).get("ownerReferences") or [])


def current_replicaset(deployment: Mapping[str, Any],
                       replicasets: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The ReplicaSet of the Deployment's current revision (None before the first one)."""
    uid = deployment["metadata"].get("uid", "")
    revision = (deployment["metadata"].get("annotations") or {}).get(REVISION)
    owned = [rs for rs in replicasets if _owned_by(rs, uid)]
    for rs in owned:
        if revision is not None and (rs["metadata"].get("annotations") or {}).get(
                REVISION) == revision:
            return rs
    return None


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def current_pods(instance: str, deployment: Mapping[str, Any],
                 replicasets: Sequence[Mapping[str, Any]],
                 pods: Sequence[Mapping[str, Any]]) -> list[PodTarget]:
    """Pods of the current ReplicaSet that are not being deleted, sorted by name."""
    rs = current_replicaset(deployment, replicasets)
    if rs is None:
        return []
    rs_uid = rs["metadata"].get("uid", "")
    template_hash = (rs["metadata"].get("labels") or {}).get(TEMPLATE_HASH)
    chosen = []
    for pod in pods:
        meta = pod.get("metadata", {})
        if meta.get("deletionTimestamp"):
            continue
        if not _owned_by(pod, rs_uid) and (
                template_hash is None
                or (meta.get("labels") or {}).get(TEMPLATE_HASH) != template_hash):
            continue
        chosen.append(PodTarget(
            namespace=meta.get("namespace", ""), name=meta.get("name", ""),
            node=pod.get("spec", {}).get("nodeName") or "", instance=instance,
            ready=_ready(pod), ip=pod.get("status", {}).get("podIP") or ""))
    return sorted(chosen, key=lambda p: p.name)
