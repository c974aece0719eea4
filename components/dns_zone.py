"""DNSZone: one zone of the topology, its serial in state, and (when gated) its transfer gate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from bind9_topology.dns.gate import map_address
from bind9_topology.spec.model import StackSpec, Zone
from bind9_topology.spec.zone_records import ZoneContent

from .zone_serial import ZoneSerial

TYPE = "bind9-topology:index:DNSZone"


@dataclass
class DNSZoneArgs:
    spec: StackSpec
    zone: Zone
    content: ZoneContent | None  # primary zones only
    # the TSIG secret: the serial proves served content by AXFR before it reuses a serial
    tsig_secret: pulumi.Input[str] | None = None


def probe_endpoints(spec: StackSpec, zone: Zone) -> list[dict[str, Any]]:
    """Every server that may hold the zone: its primaries, secondaries, NOTIFY targets.

    With gate.via kubernetes-api, the stack's own instances are asked pod by pod
    through the API (as the gate asks them); other addresses directly.
    """
    via_api = spec.gate.via == "kubernetes-api"
    addresses: list[str] = []
    endpoints: list[dict[str, Any]] = []
    owned: set[str] = set()
    for z in spec.zones:
        if z.zoneName == zone.zoneName:
            for inst in spec.instances_for(z):
                if inst.service.fixed_address:
                    owned.add(inst.service.fixed_address)
                if via_api:
                    item = {"name": inst.name, "instance": inst.name,
                            "namespace": spec.namespace, "via": "kubernetes-api"}
                    if item not in endpoints:
                        endpoints.append(item)
                elif inst.service.fixed_address:
                    addresses.append(inst.service.fixed_address)
    addresses += [a for a in zone.alsoNotify if not (via_api and a in owned)]
    for address in dict.fromkeys(addresses):
        host, port = map_address(address, spec.gate.addressMap)
        endpoints.append({"host": host, "port": port})
    return endpoints


def provider_kube_settings() -> tuple[pulumi.Output[str] | None, str | None]:
    """The kubeconfig (a secret) and context of the stack's Kubernetes provider, which
    the gate and the serials use to reach pods through the API."""
    kube = pulumi.Config("kubernetes")
    kubeconfig = kube.get_secret("kubeconfig") if kube.get("kubeconfig") else None
    return kubeconfig, kube.get("context")


class DNSZone(pulumi.ComponentResource):
    serial: pulumi.Output[int] | None

    def __init__(
        self, name: str, args: DNSZoneArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        self.zone = args.zone
        self.serial = None
        if args.content is not None:
            kubeconfig, kube_context = provider_kube_settings()
            self.serial_resource = ZoneSerial(
                f"{name}-serial",
                zone_name=args.zone.zoneName,
                content_hash=args.content.content_hash,
                probe=probe_endpoints(args.spec, args.zone),
                opts=pulumi.ResourceOptions(parent=self),
                digest=args.content.digest if args.tsig_secret is not None else None,
                tsig_key_name=args.spec.tsigKey.name,
                tsig_algorithm=args.spec.tsigKey.algorithm,
                tsig_secret=args.tsig_secret,
                kubeconfig=kubeconfig,
                kube_context=kube_context,
            )
            self.serial = self.serial_resource.serial
        self.register_outputs(
            {
                "zoneName": args.zone.zoneName,
                "type": args.zone.type,
                "serial": self.serial,
                "instances": [i.name for i in args.spec.instances_for(args.zone)],
            }
        )
