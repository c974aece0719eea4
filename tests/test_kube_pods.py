"""Which pods the gate verifies: the current ReplicaSet's, during and after a roll."""

from __future__ import annotations

from typing import Any

import pytest

from bind9_topology.kube.pods import REVISION, TEMPLATE_HASH, current_pods, current_replicaset

pytestmark = pytest.mark.unit

DEPLOY_UID = "d-1"


def deployment(revision: str) -> dict[str, Any]:
    return {"metadata": {"name": "primary-dns", "uid": DEPLOY_UID,
                         "annotations": {REVISION: revision}}}


def replicaset(uid: str, revision: str, template_hash: str,
               owner: str = DEPLOY_UID) -> dict[str, Any]:
    return {"metadata": {"name": f"primary-dns-{template_hash}", "uid": uid,
                         "labels": {"instance": "primary-dns", TEMPLATE_HASH: template_hash},
                         "annotations": {REVISION: revision},
                         "ownerReferences": [{"kind": "Deployment", "uid": owner}]}}


def pod(name: str, rs_uid: str, template_hash: str, *, ready: bool = True,
        deleting: bool = False, node: str = "node-a") -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name, "namespace": "dns", "labels": {"instance": "primary-dns",
                                                      TEMPLATE_HASH: template_hash},
        "ownerReferences": [{"kind": "ReplicaSet", "uid": rs_uid}]}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-28T00:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": node},
            "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}


OLD = replicaset("rs-old", "1", "aaa")
NEW = replicaset("rs-new", "2", "bbb")


def test_mid_roll_only_the_new_replicaset_counts() -> None:
    pods = [pod("p-old-1", "rs-old", "aaa"), pod("p-old-2", "rs-old", "aaa"),
            pod("p-new-1", "rs-new", "bbb", ready=False)]
    chosen = current_pods("primary-dns", deployment("2"), [OLD, NEW], pods)
    assert [p.name for p in chosen] == ["p-new-1"]
    assert chosen[0].ready is False  # not Ready yet: the gate still verifies it


def test_after_the_roll_every_new_pod_and_no_terminating_one() -> None:
    pods = [pod("p-new-2", "rs-new", "bbb", node="node-b"), pod("p-new-1", "rs-new", "bbb"),
            pod("p-old-1", "rs-old", "aaa", deleting=True),
            pod("p-new-0", "rs-new", "bbb", deleting=True)]
    chosen = current_pods("primary-dns", deployment("2"), [OLD, NEW], pods)
    assert [p.name for p in chosen] == ["p-new-1", "p-new-2"]
    assert chosen[1].label == "pod dns/p-new-2 on node-b (primary-dns)"


def test_rollback_makes_the_old_replicaset_current_again() -> None:
    rolled_back = replicaset("rs-old", "3", "aaa")
    pods = [pod("p-old-1", "rs-old", "aaa"), pod("p-new-1", "rs-new", "bbb")]
    chosen = current_pods("primary-dns", deployment("3"), [rolled_back, NEW], pods)
    assert [p.name for p in chosen] == ["p-old-1"]


def test_a_replicaset_of_another_owner_is_never_current() -> None:
    foreign = replicaset("rs-x", "2", "ccc", owner="someone-else")
    assert current_replicaset(deployment("2"), [foreign]) is None
    assert current_pods("primary-dns", deployment("2"), [foreign],
                        [pod("p-x", "rs-x", "ccc")]) == []


def test_no_replicaset_yet_means_no_pod() -> None:
    assert current_pods("primary-dns", deployment("1"), [], []) == []


def test_a_pod_carries_its_ip_for_gate_via_pod_network() -> None:
    with_ip = pod("p-new-1", "rs-new", "bbb")
    with_ip["status"]["podIP"] = "10.244.3.7"
    pending = pod("p-new-2", "rs-new", "bbb", ready=False)  # no IP yet
    chosen = current_pods("primary-dns", deployment("2"), [OLD, NEW], [with_ip, pending])
    assert [(p.name, p.ip) for p in chosen] == [("p-new-1", "10.244.3.7"), ("p-new-2", "")]


def test_gate_via_pod_network_is_checked_like_the_api_route() -> None:
    """pod-network lists pods through the API: a stack with no cluster cannot use it, and
    probe targets name the pods with that route."""
    from bind9_topology.config.model import StackSpec

    base = {"region": "r", "namespace": "dns", "instances": [], "zones": []}
    spec = StackSpec.model_validate({**base, "gate": {"via": "pod-network"}})
    assert spec.gate.via == "pod-network"
    with pytest.raises(ValueError, match=r"gate\.via is pod-network but this stack deploys"):
        StackSpec.model_validate({**base, "kubernetesRenderDir": "out",
                                  "gate": {"via": "pod-network"}})
    with pytest.raises(ValueError, match=r"gate\.via"):
        StackSpec.model_validate({**base, "gate": {"via": "pods"}})


def test_direct_endpoints_never_ask_the_api() -> None:
    from bind9_topology.kube.forward import gate_endpoints

    items = [{"name": "knot", "host": "127.0.0.9", "port": 5353}]
    with gate_endpoints(items, [], kubeconfig="/nonexistent/kubeconfig") as (prim, sec):
        assert [(e.host, e.port, e.label, e.tcp_only) for e in prim] == [
            ("127.0.0.9", 5353, "knot", False)]
        assert sec == []


def test_an_unusable_kubeconfig_fails_the_gate_with_the_fix(tmp_path: Any) -> None:
    from components.transfer_gate import GateFailed, TransferGateProvider

    bad = tmp_path / "kubeconfig"
    bad.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    props = {"zoneName": "example.com", "primaries": [], "kubeconfig": str(bad),
             "secondaries": [{"name": "s", "instance": "s", "namespace": "dns",
                              "via": "kubernetes-api"}]}
    with pytest.raises(GateFailed) as failed:
        TransferGateProvider()._wait(props)
    message = str(failed.value)
    assert "zone example.com: cannot load the kubeconfig" in message
    assert "gate.via" in message and "Traceback" not in message


def test_a_reset_port_forward_thread_prints_no_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client's port-forward threads die with ConnectionResetError when the API server
    closes a stream; that traceback would reach the user through the engine beside the
    gate's report. It is dropped; any other thread's failure still goes to the hook."""
    import threading

    from bind9_topology.kube.forward import quiet_forward_threads

    seen: list[str] = []
    monkeypatch.setattr(threading, "excepthook",
                        lambda args: seen.append(f"{args.thread.name}: {args.exc_type.__name__}"))
    quiet_forward_threads()
    quiet_forward_threads()  # idempotent: one hook
    for name, exc in (("Kubernetes port forward proxy: 53", ConnectionResetError(104, "reset")),
                      ("another thread", ValueError("a bug")),
                      ("Kubernetes port forward proxy: 53", ValueError("a bug there"))):
        threading.excepthook(threading.ExceptHookArgs(  # type: ignore[call-arg]
            (type(exc), exc, None, threading.Thread(name=name))))
    assert seen == ["another thread: ValueError",
                    "Kubernetes port forward proxy: 53: ValueError"]
