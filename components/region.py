"""Bind9Region: everything one region stack deploys, from a checked Topology."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import pulumi

from bind9_topology.dns.gate import gate_plans, map_address
from bind9_topology.dns.targets import Target, direct, pods_of, probe_targets
from bind9_topology.render.plan import plan_instance
from bind9_topology.spec.topology import Topology

from .args import KubeAccess, TsigArgs
from .bind9_instance import Bind9Instance, Bind9InstanceArgs
from .dns_zone import DNSZone, DNSZoneArgs
from .dnssec_keys import DnssecKeys
from .transfer_gate import TransferGate, TransferGateArgs

TYPE = "bind9-topology:index:Bind9Region"


@dataclass
class Bind9RegionArgs:
    topology: Topology
    tsig_secret: pulumi.Input[str]


class Bind9Region(pulumi.ComponentResource):
    """A region stack's instances, zones, DNSSEC keys and transfer gates."""

    instances: dict[str, Bind9Instance]
    zones: dict[str, DNSZone]  # by resource name
    dnssec_keys: dict[str, DnssecKeys]  # by zone name (signed primary zones)
    gates: dict[str, TransferGate]  # by zone name (gate.enabled)

    def __init__(
        self, name: str, args: Bind9RegionArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        topo = args.topology
        spec = topo.spec
        child = pulumi.ResourceOptions(parent=self)
        tsig = TsigArgs(spec.tsigKey.name, spec.tsigKey.algorithm, args.tsig_secret)
        kube = KubeAccess.of_stack()  # the stack provider's cluster

        self.zones = {}
        for zone in spec.zones:
            self.zones[zone.resource_name] = DNSZone(
                zone.resource_name,
                DNSZoneArgs(
                    zone_name=zone.zoneName,
                    type=zone.type,
                    instances=[i.name for i in spec.instances_for(zone)],
                    content=topo.contents.get(zone.zoneName) if zone.type == "primary" else None,
                    probe=probe_targets(spec, zone),
                    tsig=tsig,
                    kube=kube,
                ),
                opts=child,
            )
        # Signed zones (dnssec): keys made once, kept in state as secrets (DnssecKeys).
        self.dnssec_keys = {}
        for zone in spec.zones:
            if zone.type == "primary" and zone.dnssec is not None:
                adopt = topo.dnssec_material.get(zone.zoneName)
                self.dnssec_keys[zone.zoneName] = DnssecKeys(
                    f"{zone.resource_name}-dnssec-keys", zone.zoneName,
                    material=json.dumps(adopt) if adopt is not None else None,
                    opts=pulumi.ResourceOptions(parent=self.zones[zone.resource_name]))
        serial_of = {
            z.zone_name: z.serial for z in self.zones.values() if z.serial is not None
        }

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

        self.gates = self._transfer_gates(topo, tsig, kube)

        self.register_outputs(
            {
                "instances": {n: i.address for n, i in self.instances.items()},
                "zones": {n: z.serial for n, z in self.zones.items()},
                "ready": {n: g.ready for n, g in self.gates.items()},
            }
        )

    def _transfer_gates(
        self, topo: Topology, tsig: TsigArgs, kube: KubeAccess
    ) -> dict[str, TransferGate]:
        """One TransferGate per zone name (gate.enabled), parented to its DNSZone.

        Its inputs are the zone's own (servers, expected serial and digest, key), so a
        change to one zone re-runs one gate. A pod roll needs no gate: the readiness
        probe holds a new pod back until every zone it serves answers authoritatively,
        and `pulumi up` waits for the rollout.
        """
        spec = topo.spec
        gate = spec.gate
        if not gate.enabled:
            return {}
        via_api = gate.via == "kubernetes-api"

        def target(name: str, address: str | None) -> pulumi.Input[Target]:
            if via_api and name in self.instances:
                return pods_of(name, spec.namespace)  # every pod, through the API
            if address:
                return direct(*map_address(address, gate.addressMap), name=name)
            # no fixed IP: the Service's address
            return self.instances[name].address.apply(functools.partial(_at_port_53, name))

        gates = {}
        for plan in gate_plans(spec):
            zone = self.zones[plan.resource_name]
            content = topo.contents.get(plan.zone) if plan.primary_zone else None
            involved = [self.instances[n] for n in plan.instances if n in self.instances]
            keys = self.dnssec_keys.get(plan.zone)
            gates[plan.zone] = TransferGate(
                f"{plan.resource_name}-gate",
                TransferGateArgs(
                    zone_name=plan.zone,
                    primaries=[target(n, a) for n, a in plan.primaries],
                    secondaries=[target(n, a) for n, a in plan.secondaries],
                    expected_serial=zone.serial if plan.primary_zone else None,
                    expected_digest=content.digest if content is not None else None,
                    tsig=tsig,
                    deadline_seconds=gate.deadlineSeconds,
                    poll_interval_seconds=gate.pollIntervalSeconds,
                    kube=kube if via_api else None,
                    expected_ds=keys.ds if keys is not None else None,
                ),
                opts=pulumi.ResourceOptions(
                    parent=zone, depends_on=[i.deployment for i in involved]
                ),
            )
        return gates


def _at_port_53(name: str, address: str | None) -> Target:
    return direct(str(address), 53, name=name)
