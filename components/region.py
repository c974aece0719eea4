"""Bind9Region: everything one region stack deploys, from a checked Topology."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import pulumi

from bind9_topology.dns.gate import gate_plans, map_address
from bind9_topology.dns.targets import Target, direct, pods_of, probe_targets
from bind9_topology.render.plan import plan_instance
from bind9_topology.spec.model import Zone
from bind9_topology.spec.topology import Topology

from .args import KubeAccess, TsigArgs
from .bind9_instance import Bind9Instance, Bind9InstanceArgs
from .dnssec_keys import DnssecKeys
from .transfer_gate import TransferGate, TransferGateArgs, ZoneGateArgs
from .zone_serial import ZoneSerial, ZoneSerialArgs

TYPE = "bind9-topology:index:Bind9Region"
#: the per-zone component that once parented ZoneSerial and DnssecKeys (aliases)
DNS_ZONE_TYPE = "bind9-topology:index:DNSZone"


@dataclass
class Bind9RegionArgs:
    topology: Topology
    tsig_secret: pulumi.Input[str]


class Bind9Region(pulumi.ComponentResource):
    """A region stack's instances, zones, DNSSEC keys and transfer gates."""

    instances: dict[str, Bind9Instance]
    zone_serials: dict[str, ZoneSerial]  # by zone name (primary zones)
    dnssec_keys: dict[str, DnssecKeys]  # by zone name (signed primary zones)
    gate: TransferGate | None  # every zone of the stack (gate.enabled)

    def __init__(
        self, name: str, args: Bind9RegionArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        topo = args.topology
        spec = topo.spec
        tsig = TsigArgs(spec.tsigKey.name, spec.tsigKey.algorithm, args.tsig_secret)
        kube = KubeAccess.of_stack()  # the stack provider's cluster

        # One ZoneSerial per primary zone, parented here. Until issue 13 each sat under a
        # DNSZone component per zone; the alias keeps the serials in state (no replace).
        self.zone_serials = {}
        self.dnssec_keys = {}
        by_name: dict[str, list[Zone]] = {}
        for zone in spec.zones:
            by_name.setdefault(zone.zoneName, []).append(zone)
        for zone in spec.zones:
            if zone.type != "primary":
                continue
            was_under = pulumi.Alias(parent=pulumi.create_urn(
                zone.resource_name, DNS_ZONE_TYPE, parent=self))
            content = topo.contents[zone.zoneName]
            self.zone_serials[zone.zoneName] = ZoneSerial(
                f"{zone.resource_name}-serial",
                ZoneSerialArgs(zone_name=zone.zoneName, content_hash=content.content_hash,
                               probe=probe_targets(spec, zone, by_name[zone.zoneName]),
                               digest=content.digest, tsig=tsig, kube=kube),
                opts=pulumi.ResourceOptions(parent=self, aliases=[was_under]),
            )
            # Signed zones (dnssec): keys made once, kept in state as secrets (DnssecKeys).
            if zone.dnssec is not None:
                adopt = topo.dnssec_material.get(zone.zoneName)
                self.dnssec_keys[zone.zoneName] = DnssecKeys(
                    f"{zone.resource_name}-dnssec-keys", zone.zoneName,
                    material=json.dumps(adopt) if adopt is not None else None,
                    opts=pulumi.ResourceOptions(parent=self, aliases=[was_under]))
        serial_of = {z: r.serial for z, r in self.zone_serials.items()}

        self.instances = {}
        previous_in_region: dict[str, Bind9Instance] = {}
        for inst in spec.instances:
            region = inst.labels.get("region", spec.region)
            # One instance of a region rolls at a time: each waits for the previous one.
            after = previous_in_region.get(region)
            signed = [z.zoneName for z in spec.zones_for(inst)
                      if z.zoneName in self.dnssec_keys and inst.role == "primary"]
            self.instances[inst.name] = Bind9Instance(
                inst.name,
                Bind9InstanceArgs(
                    plan=plan_instance(spec, inst, topo.contents),
                    tsig_key_name=tsig.key_name,
                    tsig_algorithm=tsig.algorithm,
                    serials={
                        z.zoneName: serial_of[z.zoneName]
                        for z in spec.zones_for(inst)
                        if z.zoneName in serial_of and z.type == "primary"
                    },
                    tsig_secret=args.tsig_secret,
                    dnssec_keys={z: self.dnssec_keys[z].material for z in signed},
                    dnssec_tags={z: self.dnssec_keys[z].keyTags for z in signed},
                ),
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=[after.deployment] if after else None
                ),
            )
            previous_in_region[region] = self.instances[inst.name]

        self.gate = self._transfer_gate(name, topo, tsig, kube)

        self.register_outputs(
            {
                "instances": {n: i.address for n, i in self.instances.items()},
                "serials": {z: r.serial for z, r in self.zone_serials.items()},
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
        via_api = gate.via == "kubernetes-api"

        def target(name: str, address: str | None) -> pulumi.Input[Target]:
            if via_api and name in self.instances:
                return pods_of(name, spec.namespace)  # every pod, through the API
            if address:
                return direct(*map_address(address, gate.addressMap), name=name)
            # no fixed IP: the Service's address
            return self.instances[name].address.apply(functools.partial(_at_port_53, name))

        zones = []
        involved: dict[str, Bind9Instance] = {}
        for plan in gate_plans(spec):
            content = topo.contents.get(plan.zone) if plan.primary_zone else None
            serial = self.zone_serials.get(plan.zone) if plan.primary_zone else None
            keys = self.dnssec_keys.get(plan.zone)
            involved.update({n: self.instances[n] for n in plan.instances if n in self.instances})
            zones.append(ZoneGateArgs(
                zone_name=plan.zone,
                primaries=[target(n, a) for n, a in plan.primaries],
                secondaries=[target(n, a) for n, a in plan.secondaries],
                expected_serial=serial.serial if serial is not None else None,
                expected_digest=content.digest if content is not None else None,
                expected_ds=keys.ds if keys is not None else None,
            ))
        if not zones:
            return None
        return TransferGate(
            f"{name}-transfer-gate",
            TransferGateArgs(zones=zones, tsig=tsig, deadline_seconds=gate.deadlineSeconds,
                             poll_interval_seconds=gate.pollIntervalSeconds,
                             kube=kube if via_api else None),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[i.deployment for i in involved.values()]),
        )


def _at_port_53(name: str, address: str | None) -> Target:
    return direct(str(address), 53, name=name)
