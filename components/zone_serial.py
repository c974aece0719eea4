"""A zone's SOA serial, kept in Pulumi state and keyed on the zone's content hash.

The serial moves only when the content hash moves, and only forwards
(components.serials.next_serial), so `pulumi preview` with no change shows no
diff, and recreating a stack's other resources never rewinds a serial. The
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
        from components.serials import SerialState, next_serial

        previous = None
        if olds and olds.get("serial") is not None:
            previous = SerialState(int(olds["serial"]), str(olds.get("contentHash", "")))
        today = datetime.datetime.now(datetime.UTC).date()
        state = next_serial(previous, news["contentHash"], today)
        return {**news, "serial": state.serial}

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


class ZoneSerial(Resource, module="bind9", name="ZoneSerial"):
    """`serial` only grows; it changes only when `contentHash` changes."""

    serial: pulumi.Output[int]
    contentHash: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        zone_name: str,
        content_hash: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            ZoneSerialProvider(),
            name,
            {"zoneName": zone_name, "contentHash": content_hash, "serial": None},
            opts,
        )
