"""A zone's SOA serial, kept in Pulumi state and keyed on the zone's content hash.

The serial moves only when the content hash moves, and only forwards
(components.serials.next_serial), so `pulumi preview` with no change shows no
diff. When it moves (or is first created, e.g. after the state was lost or the
stack recreated), it also moves past the highest serial the zone's servers
answer with right now (`probe`: primaries, secondaries, NOTIFY targets), so a
secondary holding older data at a higher serial is never left behind. (Left
open: state lost on a day when the lost serial was exactly today's first,
YYYYMMDD00, with other content; the gate's check that no secondary is ahead
of the primaries does not see that case either.) The
provider runs in the engine's provider host, so it imports little.
"""

from __future__ import annotations

import datetime
from typing import Any

import pulumi
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)


class ZoneSerialProvider(ResourceProvider):
    def _advance(self, olds: dict[str, Any] | None, news: dict[str, Any]) -> dict[str, Any]:
        from components.serials import (
            SERIAL_MODULUS,
            SerialState,
            next_serial,
            serial_is_newer,
        )

        previous = None
        if olds and olds.get("serial") is not None:
            previous = SerialState(int(olds["serial"]), str(olds.get("contentHash", "")))
        today = datetime.datetime.now(datetime.UTC).date()
        serial = next_serial(previous, news["contentHash"], today).serial
        served = _highest_served(str(news["zoneName"]), news.get("probe") or [])
        if served is not None and serial_is_newer(served, serial):
            # Equal is kept: the servers already serve this serial (e.g. the same content
            # rendered by the local runner); only a serial behind them is moved past them.
            serial = (served + 1) % SERIAL_MODULUS or 1
        return {**news, "serial": serial}

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=props["zoneName"], outs=self._advance(None, props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = olds.get("contentHash") != news.get("contentHash")
        replaces = ["zoneName"] if olds.get("zoneName") != news.get("zoneName") else []
        return DiffResult(
            changes=changed or bool(replaces),
            replaces=replaces,
            stables=["zoneName"],
            delete_before_replace=False,
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._advance(olds, news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)


def _highest_served(zone: str, probe: list[dict[str, Any]]) -> int | None:
    """The newest serial (RFC 1982) any reachable server answers authoritatively with."""
    from concurrent.futures import ThreadPoolExecutor

    from components.dnscheck import Endpoint, query_soa, serial_compare_safe

    endpoints = [Endpoint(str(p["host"]), int(p.get("port") or 53)) for p in probe]
    if not endpoints:
        return None
    with ThreadPoolExecutor(max_workers=min(16, len(endpoints))) as pool:
        answers = list(pool.map(lambda ep: query_soa(ep, zone, timeout=1.0), endpoints))
    highest: int | None = None
    for soa in answers:
        if soa.ok and soa.serial is not None and (
            highest is None or serial_compare_safe(soa.serial, highest) > 0
        ):
            highest = soa.serial
    return highest


class ZoneSerial(Resource, module="bind9", name="ZoneSerial"):
    """`serial` only grows; it changes only when `contentHash` changes."""

    serial: pulumi.Output[int]
    contentHash: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        zone_name: str,
        content_hash: str,
        probe: list[dict[str, Any]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            ZoneSerialProvider(),
            name,
            {
                "zoneName": zone_name,
                "contentHash": content_hash,
                "probe": probe or [],
                "serial": None,
            },
            opts,
        )
