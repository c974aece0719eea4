"""DNSZone: one zone of the topology, its serial in state, and (when gated) its transfer gate."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from .model import StackSpec, Zone
from .zone_serial import ZoneSerial
from .zonedata import ZoneContent

TYPE = "bind9-topology:index:DNSZone"


@dataclass
class DNSZoneArgs:
    spec: StackSpec
    zone: Zone
    content: ZoneContent | None  # primary zones only


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
                opts=pulumi.ResourceOptions(parent=self),
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
