"""Bind9Instance: one BIND server (Deployment) with its ConfigMaps, Secret, Service, policy."""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from bind9_topology.render import manifests
from bind9_topology.render.bind_files import render_tsig_key
from bind9_topology.render.plan import InstancePlan

TYPE = "bind9-topology:index:Bind9Instance"


@dataclass
class Bind9InstanceArgs:
    """What one instance needs: its plan (pure, computed once) and the Outputs it waits on."""

    plan: InstancePlan
    tsig_key_name: str
    tsig_algorithm: str
    #: zone -> its serial (ZoneSerials' output), holding every primary zone in plan.zones
    serials: pulumi.Input[Mapping[str, int]] = field(default_factory=dict)
    tsig_secret: pulumi.Input[str] = ""
    #: signed zones this instance serves as a primary: zone -> DnssecKeys.material (secret)
    dnssec_keys: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)
    #: ... and their key tags (public): a pod annotation, so new keys roll the pods
    dnssec_tags: Mapping[str, pulumi.Output[Any]] = field(default_factory=dict)


class Bind9Instance(pulumi.ComponentResource):
    """One BIND server: a Deployment with its ConfigMaps, Secrets, Service and policies."""

    deployment: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service
    config_maps: list[k8s.core.v1.ConfigMap]
    secret: k8s.core.v1.Secret
    dnssec_secret: k8s.core.v1.Secret | None
    network_policy: k8s.networking.v1.NetworkPolicy
    pdb: k8s.policy.v1.PodDisruptionBudget | None
    service_monitor: k8s.apiextensions.CustomResource | None
    #: the in-pod agent's ServiceAccount, Role and RoleBinding (namespaced), when it runs
    agent_rbac: tuple[k8s.core.v1.ServiceAccount, k8s.rbac.v1.Role,
                      k8s.rbac.v1.RoleBinding] | None
    #: sha256 of everything mounted from ConfigMaps (the pod template's annotation)
    checksum: pulumi.Output[str]
    #: the Service's fixed address (loadBalancerIP or clusterIP), else the assigned one
    address: pulumi.Output[str | None]

    def __init__(
        self, name: str, args: Bind9InstanceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        plan, inst = args.plan, args.plan.instance
        child = pulumi.ResourceOptions(parent=self)
        self.config_maps = self._config_maps(name, plan, args.serials, child)
        self.secret = self._tsig_secret(plan, args, child)
        self.dnssec_secret = self._dnssec_secret(plan, args, child)
        self.agent_rbac = self._agent_rbac(plan, child)
        self.deployment = self._deployment(plan, args)
        svc = plan.service
        self.service = k8s.core.v1.Service(
            f"{inst.name}-svc", metadata=svc["metadata"], spec=svc["spec"], opts=child
        )
        policy = plan.network_policy
        self.network_policy = k8s.networking.v1.NetworkPolicy(
            f"{inst.name}-netpol", metadata=policy["metadata"], spec=policy["spec"], opts=child
        )
        pdb = plan.pod_disruption_budget
        self.pdb = (
            k8s.policy.v1.PodDisruptionBudget(
                f"{inst.name}-pdb", metadata=pdb["metadata"], spec=pdb["spec"], opts=child
            )
            if pdb
            else None
        )
        monitor = plan.service_monitor
        self.service_monitor = (
            k8s.apiextensions.CustomResource(
                f"{inst.name}-servicemonitor", api_version=monitor["apiVersion"],
                kind=monitor["kind"], metadata=monitor["metadata"], spec=monitor["spec"],
                opts=child,
            )
            if monitor
            else None
        )
        self.checksum = pulumi.Output.from_input(plan.checksum)
        # A LoadBalancer's address as its controller reports it (the pinned one, whether
        # through spec.loadBalancerIP or an annotation), else the Service's cluster IP.
        self.address = pulumi.Output.all(self.service.spec, self.service.status).apply(
            lambda ss: _service_address(ss[0], ss[1]))
        self.register_outputs(
            {
                "name": inst.name,
                "role": inst.role,
                "service": self.service.metadata.name,
                "address": self.address,
                "checksum": self.checksum,
            }
        )

    @staticmethod
    def _config_maps(name: str, plan: InstancePlan, serials_in: pulumi.Input[Mapping[str, int]],
                     child: pulumi.ResourceOptions) -> list[k8s.core.v1.ConfigMap]:
        """The config ConfigMap and the zone ConfigMaps. Each zone ConfigMap's data is
        filled in from the serials of the zones its bytes hold; the config ConfigMap waits
        on none. The serials are known at preview (ZoneSerials decides them in check), so
        preview shows exactly which zone ConfigMaps change."""
        serials = pulumi.Output.from_input(serials_in)
        maps = []
        for shard in plan.config_maps:
            content: pulumi.Output[dict[str, dict[str, str]]] | dict[str, dict[str, str]]
            if shard.zones:
                content = serials.apply(functools.partial(_shard_content, name, shard))
            else:
                content = shard.content({})
            if not shard.packed:
                data: Any = (content.apply(lambda c: c["data"])
                             if isinstance(content, pulumi.Output) else content["data"])
                maps.append(k8s.core.v1.ConfigMap(
                    shard.name, metadata=shard.body["metadata"], data=data, opts=child))
                continue
            # packed: binaryData, or data where the zones would not pack smaller (rare)
            if isinstance(content, pulumi.Output):
                data = content.apply(lambda c: c.get("data"))
                binary: Any = content.apply(lambda c: c.get("binaryData"))
            else:
                data, binary = content.get("data"), content.get("binaryData")
            maps.append(k8s.core.v1.ConfigMap(
                shard.name, metadata=shard.body["metadata"], data=data, binary_data=binary,
                opts=child))
        return maps

    @staticmethod
    def _tsig_secret(plan: InstancePlan, args: Bind9InstanceArgs,
                     child: pulumi.ResourceOptions) -> k8s.core.v1.Secret:
        """The TSIG key as named reads it, built from the secret Output (never in clear)."""
        key_name, algorithm = args.tsig_key_name, args.tsig_algorithm
        secret_body = pulumi.Output.secret(args.tsig_secret).apply(
            lambda s: render_tsig_key(key_name, algorithm, s).decode()
        )
        return k8s.core.v1.Secret(
            plan.tsig_secret["metadata"]["name"],
            metadata=plan.tsig_secret["metadata"],
            type=plan.tsig_secret["type"],
            string_data={plan.tsig_secret_key: secret_body},
            opts=child,
        )

    @staticmethod
    def _dnssec_secret(plan: InstancePlan, args: Bind9InstanceArgs,
                       child: pulumi.ResourceOptions) -> k8s.core.v1.Secret | None:
        """A signing primary's key files (secrets already; they stay so)."""
        if plan.dnssec_secret is None or not args.dnssec_keys:
            return None
        plain: Any = pulumi.Output.all(**args.dnssec_keys).apply(_dnssec_secret_data)
        return k8s.core.v1.Secret(
            plan.dnssec_secret["metadata"]["name"],
            metadata=plan.dnssec_secret["metadata"],
            type=plan.dnssec_secret["type"],
            string_data=pulumi.Output.secret(plain),
            opts=child,
        )

    def _agent_rbac(self, plan: InstancePlan, child: pulumi.ResourceOptions) -> tuple[
            k8s.core.v1.ServiceAccount, k8s.rbac.v1.Role, k8s.rbac.v1.RoleBinding] | None:
        """The agent's ServiceAccount, Role and RoleBinding, in the instance's namespace."""
        if plan.agent_rbac is None:
            return None
        inst = plan.instance
        account, role, binding = plan.agent_rbac
        sa = k8s.core.v1.ServiceAccount(
            f"{inst.name}-agent-sa", metadata=account["metadata"],
            automount_service_account_token=account["automountServiceAccountToken"],
            opts=child)
        rbac_role = k8s.rbac.v1.Role(
            f"{inst.name}-agent-role", metadata=role["metadata"], rules=role["rules"],
            opts=child)
        return sa, rbac_role, k8s.rbac.v1.RoleBinding(
            f"{inst.name}-agent-binding", metadata=binding["metadata"],
            role_ref=binding["roleRef"], subjects=binding["subjects"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[sa, rbac_role]))

    def _deployment(self, plan: InstancePlan, args: Bind9InstanceArgs) -> k8s.apps.v1.Deployment:
        """The pods, after everything they mount; new DNSSEC keys roll them (annotation)."""
        dep = copy.deepcopy(plan.deployment)
        if self.dnssec_secret is not None and args.dnssec_tags:
            annotations = dep["spec"]["template"]["metadata"]["annotations"]
            annotations[manifests.ANNOTATION_DNSSEC_KEYS] = pulumi.Output.all(
                **args.dnssec_tags).apply(lambda tags: " ".join(
                    f"{zone}:{t['ksk']}/{t['zsk']}" for zone, t in sorted(tags.items())))
        return k8s.apps.v1.Deployment(
            plan.instance.name,
            metadata=dep["metadata"],
            spec=dep["spec"],
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*self.config_maps, self.secret,
                                         *([self.dnssec_secret] if self.dnssec_secret else []),
                                         *(self.agent_rbac or ())]
            ),
        )


def _shard_content(name: str, shard: Any,
                   serials: Mapping[str, int]) -> dict[str, dict[str, str]]:
    """A zone ConfigMap's content with its zones' serials filled in (packed or not)."""
    missing = sorted(set(shard.zones) - set(serials))
    if missing:
        raise ValueError(f"Bind9Instance {name}: no serial for {', '.join(missing)}")
    own = {zone: serials[zone] for zone in shard.zones}
    if not shard.packed:
        return dict(shard.content(own))
    return _packed_cached(shard.name, shard.data(own), lambda: shard.content(own))


#: the zone content cache's switch (bind9_topology/config/zone_records.py): "off" disables
#: this cache too; packed shards live beside the zones, under .cache/packed
CACHE_ENV = "BIND9_TOPOLOGY_CACHE_DIR"
PACK_CACHE_FORMAT = 1


def _pack_cache_dir() -> Path | None:
    """.cache/packed of the project (the program runs in its directory), or `packed` under
    the zone cache's directory when BIND9_TOPOLOGY_CACHE_DIR names one (a cold run's)."""
    configured = os.environ.get(CACHE_ENV)
    if configured is None:
        return Path.cwd() / ".cache" / "packed"
    if configured.strip().lower() in ("", "0", "off", "none"):
        return None
    return Path(configured) / "packed"


def _packed_cached(name: str, files: Mapping[str, str],
                   pack: Any) -> dict[str, dict[str, str]]:
    """*pack*() (a packed shard's content), kept on disk under a hash of the shard's name
    and files and of this machine's zlib: every preview packs only the shards whose
    bytes changed (at 10,000 zones, packing them all costs seconds)."""
    directory = _pack_cache_dir()
    if directory is None:
        return dict(pack())
    digest = hashlib.sha256(
        f"{PACK_CACHE_FORMAT}\0{zlib.ZLIB_RUNTIME_VERSION}\0{manifests.PACK_LEVEL}\0"
        f"{name}\0".encode())
    for key in sorted(files):
        body = files[key].encode()
        digest.update(f"{key}\0{len(body)}\0".encode())
        digest.update(body)
    path = directory / f"{digest.hexdigest()}.json"
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(path.read_bytes())
        if isinstance(cached, dict):
            return cached
    content = dict(pack())
    with contextlib.suppress(OSError):
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(content))
        os.replace(tmp, path)
    return content


def _dnssec_secret_data(materials: dict[str, str]) -> dict[str, str]:
    """The key files of every signed zone, keyed as a Secret allows ('+' -> '_')."""
    import json

    from bind9_topology.dns.dnssec import secret_files, secret_key

    data: dict[str, str] = {}
    for zone, material in sorted(materials.items()):
        for name, body in secret_files(zone, json.loads(material)).items():
            data[secret_key(name)] = body.decode()
    return data


def _field(obj: Any, *names: str) -> Any:
    """A field of a Kubernetes output, typed object or plain dict (camel or snake case)."""
    for name in names:
        value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _service_address(spec: Any, status: Any) -> str | None:
    balancer = _field(status, "load_balancer", "loadBalancer") if status else None
    for entry in (_field(balancer, "ingress") if balancer else None) or []:
        if ip := _field(entry, "ip"):
            return str(ip)
    if not spec:
        return None
    fixed = _field(spec, "load_balancer_ip", "loadBalancerIP") or _field(
        spec, "cluster_ip", "clusterIP")
    return str(fixed) if fixed else None
