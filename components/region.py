"""Bind9Region: everything one region stack deploys, from a checked Topology."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from bind9_topology.config.digest import content_hash
from bind9_topology.config.model import Zone
from bind9_topology.config.topology import Topology
from bind9_topology.dns.gate import gate_plans, map_address
from bind9_topology.dns.targets import Target, direct, pods_of, probe_targets
from bind9_topology.render import alerts
from bind9_topology.render.bind_files import zone_text
from bind9_topology.render.plan import plan_instance

from .args import KubeAccess, TsigArgs
from .bind9_instance import Bind9Instance, Bind9InstanceArgs
from .dnssec_keys import DnssecKeys
from .transfer_gate import TransferGate, TransferGateArgs, ZoneGateArgs
from .zone_serial import ZoneSerialArgs, ZoneSerials, ZoneSerialsArgs

TYPE = "bind9-topology:index:Bind9Region"
#: the per-zone component that once parented DnssecKeys (aliases)
DNS_ZONE_TYPE = "bind9-topology:index:DNSZone"


@dataclass
class Bind9RegionArgs:
    topology: Topology
    tsig_secret: pulumi.Input[str]


class Bind9Region(pulumi.ComponentResource):
    """A region stack's instances, zones, DNSSEC keys and transfer gates."""

    instances: dict[str, Bind9Instance]
    zone_serials: ZoneSerials | None  # every primary zone's serial (None: no primary zone)
    serials: pulumi.Output[dict[str, int]]  # zone name -> serial (primary zones)
    dnssec_keys: dict[str, DnssecKeys]  # by zone name (signed primary zones)
    gate: TransferGate | None  # every zone of the stack (gate.enabled)
    #: metrics.alerts: the alerting rules (PrometheusRule or ConfigMap) and the dashboard
    monitoring: list[pulumi.CustomResource]

    def __init__(
        self, name: str, args: Bind9RegionArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        topo = args.topology
        spec = topo.spec
        tsig = TsigArgs(spec.tsigKey.name, spec.tsigKey.algorithm, args.tsig_secret)
        kube = KubeAccess.of_stack()  # the stack provider's cluster

        # Every primary zone's serial in one ZoneSerials, decided in its `check` so the
        # serials (and the ConfigMaps made from them) are known at preview (ADR 11).
        self.dnssec_keys = {}
        by_name: dict[str, list[Zone]] = {}
        for zone in spec.zones:
            by_name.setdefault(zone.zoneName, []).append(zone)
        primary = [z for z in spec.zones if z.type == "primary"]
        self.zone_serials = ZoneSerials(
            f"{name}-zone-serials",
            ZoneSerialsArgs(
                zones=[ZoneSerialArgs(
                    zone_name=z.zoneName,
                    # == ZoneContent.content_hash, with the SOA written once per zone
                    content_hash=content_hash(zone_text(topo.contents[z.zoneName], 0)),
                    probe=probe_targets(spec, z, by_name[z.zoneName]),
                    digest=topo.contents[z.zoneName].digest) for z in primary],
                tsig=tsig, kube=kube),
            opts=pulumi.ResourceOptions(parent=self),
        ) if primary else None
        # One Output for every zone's serial (not one per zone: a thousand Outputs cost
        # the SDK more than the resource they come from).
        self.serials = (self.zone_serials.serials.apply(_serial_map)
                        if self.zone_serials is not None else pulumi.Output.from_input({}))
        for zone in primary:
            # Signed zones (dnssec): keys made once, kept in state as secrets (DnssecKeys).
            # Earlier versions registered them under a DNSZone component per zone; the
            # alias keeps them in state (no replacement, no new keys).
            if zone.dnssec is not None:
                was_under = pulumi.Alias(parent=pulumi.create_urn(
                    zone.resource_name, DNS_ZONE_TYPE, parent=self))
                adopt = topo.dnssec_material.get(zone.zoneName)
                self.dnssec_keys[zone.zoneName] = DnssecKeys(
                    f"{zone.resource_name}-dnssec-keys", zone.zoneName,
                    material=json.dumps(adopt) if adopt is not None else None,
                    opts=pulumi.ResourceOptions(parent=self, aliases=[was_under]))

        self.instances = {}
        previous_in_region: dict[str, Bind9Instance] = {}
        primaries: list[Bind9Instance] = []
        running = _running_instances(topo, kube)
        # primaries first: the stack's secondaries transfer from them (ADR 21)
        for inst in sorted(spec.instances, key=lambda i: i.role != "primary"):
            region = inst.labels.get("region", spec.region)
            # One instance of a region rolls at a time: each waits for the previous one,
            # where it already runs (a first deploy creates them side by side: ADR 21).
            after = previous_in_region.get(region)
            signed = [z.zoneName for z in spec.zones_for(inst)
                      if z.zoneName in self.dnssec_keys and inst.role == "primary"]
            self.instances[inst.name] = Bind9Instance(
                inst.name,
                Bind9InstanceArgs(
                    plan=plan_instance(spec, inst, topo.contents),
                    tsig_key_name=tsig.key_name,
                    tsig_algorithm=tsig.algorithm,
                    serials=self.serials,
                    tsig_secret=args.tsig_secret,
                    dnssec_keys={z: self.dnssec_keys[z].material for z in signed},
                    dnssec_tags={z: self.dnssec_keys[z].keyTags for z in signed},
                ),
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=_rolls_after(
                        running, inst.name, after,
                        primaries if inst.role == "secondary" else []),
                ),
            )
            previous_in_region[region] = self.instances[inst.name]
            if inst.role == "primary":
                primaries.append(self.instances[inst.name])

        # One set of alerting rules and one dashboard per stack (metrics.alerts).
        self.monitoring = [_monitoring_object(obj, self) for obj in alerts.stack_objects(spec)]

        self.gate = self._transfer_gate(name, topo, tsig, kube)

        self.register_outputs(
            {
                "instances": {n: i.address for n, i in self.instances.items()},
                "serials": self.serials,
                "ready": self.gate.ready if self.gate is not None else None,
            }
        )

    def _transfer_gate(
        self, name: str, topo: Topology, tsig: TsigArgs, kube: KubeAccess
    ) -> TransferGate | None:
        """The stack's TransferGate (gate.enabled): every zone, keyed by zone name.

        A zone's entry holds its own inputs (servers, expected serial and digest, DS), so
        a change to one zone re-checks that zone only. A pod roll needs no gate: the
        readiness probe holds a new pod back until every zone it serves answers
        authoritatively, and `pulumi up` waits for the rollout.
        """
        spec = topo.spec
        gate = spec.gate
        if not gate.enabled:
            return None
        via_api = gate.via != "direct"  # the pods, listed through the API

        def target(name: str, address: str | None) -> pulumi.Input[Target]:
            if via_api and name in self.instances:
                return pods_of(name, spec.namespace, gate.via)  # type: ignore[arg-type]
            if address:
                return direct(*map_address(address, gate.addressMap), name=name)
            # no fixed IP: the Service's address
            return self.instances[name].address.apply(functools.partial(_at_port_53, name))

        # each server once (ADR 19): the zones name it by ref, not a copy each
        servers: dict[str, pulumi.Input[Target]] = {}
        addresses: dict[str, str | None] = {}

        def ref(name: str, address: str | None) -> str:
            key = name if addresses.setdefault(name, address) == address else f"{name}@{address}"
            if key not in servers:
                servers[key] = target(name, address)
            return key

        zones = []
        involved: dict[str, Bind9Instance] = {}
        for plan in gate_plans(spec):
            content = topo.contents.get(plan.zone) if plan.primary_zone else None
            keys = self.dnssec_keys.get(plan.zone)
            involved.update({n: self.instances[n] for n in plan.instances if n in self.instances})
            zones.append(ZoneGateArgs(
                zone_name=plan.zone,
                primaries=[ref(n, a) for n, a in plan.primaries],
                secondaries=[ref(n, a) for n, a in plan.secondaries],
                expected_digest=content.digest if content is not None else None,
                expected_ds=keys.ds if keys is not None else None,
            ))
        if not zones:
            return None
        return TransferGate(
            f"{name}-transfer-gate",
            TransferGateArgs(zones=zones, tsig=tsig, expected_serials=self.serials,
                             servers=servers,
                             deadline_seconds=gate.deadlineSeconds,
                             poll_interval_seconds=gate.pollIntervalSeconds,
                             kube=kube if via_api else None),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[i.deployment for i in involved.values()]),
        )


def _running_instances(topo: Topology, kube: KubeAccess) -> pulumi.Output[Any]:
    """The stack's Deployments that exist now (frozenset of names), or None: unknown.

    Asked of the API only in `pulumi up` against a cluster; a preview, rendered manifests
    and the mocks keep every stagger (None), which is what an update does, so the plan a
    preview shows never depends on the cluster."""
    from pulumi.runtime.mocks import MockMonitor
    from pulumi.runtime.settings import get_monitor

    if (pulumi.runtime.is_dry_run() or topo.spec.kubernetesRenderDir
            or isinstance(get_monitor(), MockMonitor)):
        return pulumi.Output.from_input(None)
    from bind9_topology.kube.forward import existing_deployments

    namespace, context = topo.spec.namespace, kube.context
    return pulumi.Output.from_input(kube.kubeconfig).apply(
        lambda kubeconfig: existing_deployments(namespace, kubeconfig, context))


def _staggered(running: pulumi.Output[Any], name: str,
               after: Bind9Instance) -> pulumi.Output[list[pulumi.Resource]]:
    """depends_on of instance *name*: the previous instance's Deployment, unless *name*'s
    own Deployment does not exist yet (its creation rolls nothing that serves)."""
    return running.apply(lambda names: [] if names is not None and name not in names
                         else [after.deployment])


def _rolls_after(running: pulumi.Output[Any], name: str, after: Bind9Instance | None,
                 sources: list[Bind9Instance]) -> pulumi.Input[list[pulumi.Resource]] | None:
    """depends_on of instance *name*: the Deployments of *sources* (a secondary's primaries
    in this stack: always, as a secondary started before its primary serves is refused and
    then skips that primary as unreachable for 10 minutes, BIND's unreachable cache) and
    the previous instance of its region where the stagger holds (:func:`_staggered`)."""
    fixed: list[pulumi.Resource] = [s.deployment for s in sources]
    if after is None:
        return fixed or None
    if after in sources:
        return fixed
    return _staggered(running, name, after).apply(lambda staggered: [*fixed, *staggered])


def _monitoring_object(obj: dict[str, Any], parent: pulumi.Resource) -> pulumi.CustomResource:
    opts = pulumi.ResourceOptions(parent=parent)
    name = obj["metadata"]["name"]
    if obj["kind"] == "ConfigMap":
        return k8s.core.v1.ConfigMap(name, metadata=obj["metadata"], data=obj["data"],
                                     opts=opts)
    return k8s.apiextensions.CustomResource(
        name, api_version=obj["apiVersion"], kind=obj["kind"], metadata=obj["metadata"],
        spec=obj["spec"], opts=opts)


def _at_port_53(name: str, address: str | None) -> Target:
    return direct(str(address), 53, name=name)


def _serial_map(serials: dict[str, Any]) -> dict[str, int]:
    """ZoneSerials' `serials` output as zone -> serial."""
    return {zone: int(entry["serial"]) for zone, entry in serials.items()}
