"""DNSZone: one zone of the topology, its serial in state, and (when gated) its transfer gate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from .gate import map_address
from .model import StackSpec, Zone
from .zone_serial import ZoneSerial
from .zonedata import ZoneContent

TYPE = "bind9-topology:index:DNSZone"


@dataclass
class DNSZoneArgs:
    spec: StackSpec
    zone: Zone
    content: ZoneContent | None  # primary zones only
    # the TSIG secret: the serial proves served content by AXFR before it reuses a serial
    tsig_secret: pulumi.Input[str] | None = None


def probe_endpoints(spec: StackSpec, zone: Zone) -> list[dict[str, Any]]:
    """Every server that may hold the zone: its primaries, secondaries, NOTIFY targets."""
    addresses: list[str] = []
    for z in spec.zones:
        if z.zoneName == zone.zoneName:
            addresses += [i.service.fixed_address for i in spec.instances_for(z)
                          if i.service.fixed_address]
    addresses += zone.alsoNotify
    endpoints = []
    for address in dict.fromkeys(addresses):
        host, port = map_address(address, spec.gate.addressMap)
        endpoints.append({"host": host, "port": port})
    return endpoints


class DNSZone(pulumi.ComponentResource):
    serial: pulumi.Output[int] | None

    def __init__(
        self, name: str, args: DNSZoneArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        self.zone = args.zone
        self.serial = None
        if args.content is not None:
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
