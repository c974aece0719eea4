"""Bind9Region: everything one region stack deploys, from a checked Topology."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi

from bind9_topology.render.bind_files import render_instance
from bind9_topology.spec.model import Instance
from bind9_topology.spec.topology import Topology

from .bind9_instance import Bind9Instance, Bind9InstanceArgs
from .dns_zone import DNSZone, DNSZoneArgs, provider_kube_settings

TYPE = "bind9-topology:index:Bind9Region"


@dataclass
class Bind9RegionArgs:
    topology: Topology
    tsig_secret: pulumi.Input[str]


class Bind9Region(pulumi.ComponentResource):
    instances: dict[str, Bind9Instance]
    zones: dict[str, DNSZone]

    def __init__(
        self, name: str, args: Bind9RegionArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        topo = args.topology
        spec = topo.spec
        child = pulumi.ResourceOptions(parent=self)

        self.zones = {}
        for zone in spec.zones:
            self.zones[zone.resource_name] = DNSZone(
                zone.resource_name,
                DNSZoneArgs(spec=spec, zone=zone, content=topo.contents.get(zone.zoneName)
                            if zone.type == "primary" else None, tsig_secret=args.tsig_secret),
                opts=child,
            )
        # Signed zones (dnssec): keys made once, kept in state as secrets (DnssecKeys).
        from .dnssec_keys import DnssecKeys

        self.dnssec_keys: dict[str, DnssecKeys] = {}
        for zone in spec.zones:
            if zone.type == "primary" and zone.dnssec is not None:
                adopt = topo.dnssec_material.get(zone.zoneName)
                self.dnssec_keys[zone.zoneName] = DnssecKeys(
                    f"{zone.resource_name}-dnssec-keys", zone.zoneName,
                    material=json.dumps(adopt) if adopt is not None else None,
                    opts=pulumi.ResourceOptions(parent=self.zones[zone.resource_name]))
        serial_of = {
            z.zone.zoneName: z.serial for z in self.zones.values() if z.serial is not None
        }

        self.instances = {}
        previous_in_region: dict[str, Bind9Instance] = {}
        for inst in spec.instances:
            region = inst.labels.get("region", spec.region)
            # One instance of a region rolls at a time: each waits for the previous one.
            after = previous_in_region.get(region)
            opts = pulumi.ResourceOptions(
                parent=self, depends_on=[after.deployment] if after else None
            )
            self.instances[inst.name] = Bind9Instance(
                inst.name,
                Bind9InstanceArgs(
                    spec=spec,
                    instance=inst,
                    render=_renderer(topo, inst),
                    serials={
                        z.zoneName: serial_of[z.zoneName]
                        for z in spec.zones_for(inst)
                        if z.zoneName in serial_of and z.type == "primary"
                    },
                    tsig_secret=args.tsig_secret,
                    dnssec_keys={
                        z.zoneName: self.dnssec_keys[z.zoneName].material
                        for z in spec.zones_for(inst)
                        if z.zoneName in self.dnssec_keys and inst.role == "primary"
                    },
                    dnssec_tags={
                        z.zoneName: self.dnssec_keys[z.zoneName].keyTags
                        for z in spec.zones_for(inst)
                        if z.zoneName in self.dnssec_keys and inst.role == "primary"
                    },
                ),
                opts=opts,
            )
            previous_in_region[region] = self.instances[inst.name]

        self.gates = _transfer_gates(topo, self.zones, self.instances, args.tsig_secret,
                                     self.dnssec_keys)

        self.register_outputs(
            {
                "instances": {n: i.address for n, i in self.instances.items()},
                "zones": {n: z.serial for n, z in self.zones.items()},
                "ready": {n: g.ready for n, g in self.gates.items()},
            }
        )


def _renderer(topo: Topology, inst: Instance):
    def render(serials):
        return render_instance(topo.spec, inst, topo.contents, serials)

    return render


def _transfer_gates(topo, zones, instances, tsig_secret, dnssec_keys=None) -> dict:
    """One TransferGate per zone name (gate.enabled), parented to its DNSZone.

    Its inputs are the zone's own (servers, expected serial and digest, key), so a
    change to one zone re-runs one gate. A pod roll needs no gate: the readiness
    probe holds a new pod back until every zone it serves answers authoritatively,
    and `pulumi up` waits for the rollout.
    """
    from bind9_topology.dns.gate import gate_plans, map_address

    from .transfer_gate import TransferGate

    spec = topo.spec
    gate = spec.gate
    if not gate.enabled:
        return {}

    kubeconfig, kube_context = provider_kube_settings()  # the stack provider's cluster

    def endpoint(name: str, address: str | None):
        if gate.via == "kubernetes-api" and name in instances:
            # every pod of the instance, through a port-forward of the API
            return {"name": name, "instance": name, "namespace": spec.namespace,
                    "via": "kubernetes-api"}
        if address:
            host, port = map_address(address, gate.addressMap)
            return {"name": name, "host": host, "port": port}
        return instances[name].address.apply(  # no fixed IP: the Service's address
            lambda a, name=name: {"name": name, "host": a, "port": 53}
        )

    gates = {}
    for plan in gate_plans(spec):
        zone = zones[plan.resource_name]
        content = topo.contents.get(plan.zone) if plan.primary_zone else None
        involved = [instances[n] for n in plan.instances if n in instances]
        gates[plan.zone] = TransferGate(
            f"{plan.resource_name}-gate",
            zone_name=plan.zone,
            primaries=[endpoint(n, a) for n, a in plan.primaries],
            secondaries=[endpoint(n, a) for n, a in plan.secondaries],
            expected_serial=zone.serial if plan.primary_zone else None,
            expected_digest=content.digest
            if content is not None else None,
            tsig_key_name=spec.tsigKey.name,
            tsig_algorithm=spec.tsigKey.algorithm,
            tsig_secret=tsig_secret,
            deadline_seconds=gate.deadlineSeconds,
            poll_interval_seconds=gate.pollIntervalSeconds,
            kubeconfig=kubeconfig if gate.via == "kubernetes-api" else None,
            kube_context=kube_context if gate.via == "kubernetes-api" else None,
            expected_ds=dnssec_keys[plan.zone].ds if plan.zone in (dnssec_keys or {}) else None,
            opts=pulumi.ResourceOptions(
                parent=zone, depends_on=[i.deployment for i in involved]
            ),
        )
    return gates
