"""DNSZone: one zone of the topology and, for a primary zone, its serial in state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi

from bind9_topology.dns.targets import Target
from bind9_topology.spec.zone_records import ZoneContent

from .args import KubeAccess, TsigArgs
from .zone_serial import ZoneSerial, ZoneSerialArgs

TYPE = "bind9-topology:index:DNSZone"


@dataclass
class DNSZoneArgs:
    zone_name: str
    type: str  # "primary" | "secondary"
    instances: Sequence[str]  # the instances that serve it (an output for scripts)
    #: primary zones only: the records without a serial
    content: ZoneContent | None = None
    #: servers that may hold the zone, asked before a serial is picked
    probe: Sequence[Target] = field(default_factory=list)
    #: the key whose AXFR proves a served serial holds this content before it is reused
    tsig: TsigArgs | None = None
    kube: KubeAccess | None = None


class DNSZone(pulumi.ComponentResource):
    """A zone; for a primary zone its ZoneSerial (the gate is parented here too)."""

    #: the zone's serial (primary zones), else None
    serial: pulumi.Output[int] | None
    serial_resource: ZoneSerial | None

    def __init__(
        self, name: str, args: DNSZoneArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        self.zone_name = args.zone_name
        self.zone_type = args.type
        self.serial = None
        self.serial_resource = None
        if args.content is not None:
            self.serial_resource = ZoneSerial(
                f"{name}-serial",
                ZoneSerialArgs(
                    zone_name=args.zone_name,
                    content_hash=args.content.content_hash,
                    probe=args.probe,
                    digest=args.content.digest if args.tsig is not None else None,
                    tsig=args.tsig,
                    kube=args.kube,
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.serial = self.serial_resource.serial
        self.register_outputs(
            {
                "zoneName": args.zone_name,
                "type": args.type,
                "serial": self.serial,
                "instances": list(args.instances),
            }
        )
