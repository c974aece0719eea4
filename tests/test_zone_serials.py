"""ZoneSerials: every primary zone's serial of a stack, decided in ``check`` (ADR 11).

The provider's own rules, without servers: a zone whose content hash did not move keeps
its serial and asks nobody; a moved one goes forward (RFC 1982, dnspython's
``dns.serial`` as the oracle), whatever the previous serial; unknown inputs give unknown
serials; diff follows the serials only. What servers already serve is tested against
real named in test_faults.py and test_gate.py, and through the engine in test_engine.py.
"""

from __future__ import annotations

import datetime
import pickle
import random
from typing import Any

import dill
import dns.serial
import pytest
from pulumi.runtime import rpc

from bind9_topology.dns import poller
from bind9_topology.dns.checks import Reason, SoaProbe
from bind9_topology.dns.serials import SERIAL_MODULUS, date_serial
from components.zone_serial import ZoneSerialProvider, ZoneSerialsProvider

pytestmark = pytest.mark.unit

TODAY = datetime.datetime.now(datetime.UTC).date()


def news(hashes: dict[str, str], probe: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"zones": {z: {"contentHash": h, "probe": list(probe or []), "digest": None}
                      for z, h in hashes.items()},
            "tsigKeyName": "transfer-key", "tsigAlgorithm": "hmac-sha256", "tsigSecret": ""}


def olds(serials: dict[str, tuple[int, str]]) -> dict[str, Any]:
    return {"serials": {z: {"serial": s, "contentHash": h} for z, (s, h) in serials.items()}}


def checked(old: dict[str, Any], new: dict[str, Any]) -> dict[str, int]:
    result = ZoneSerialsProvider().check(old, new)
    assert not result.failures
    return {z: int(v["serial"]) for z, v in result.inputs["serials"].items()}


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The zones whose servers were asked; each server answers REFUSED (a BIND that does
    not hold the zone: alive, so asked about every zone, and serving no serial)."""
    seen: list[str] = []

    def refuse(requests: Any, *, timeout: float = 2.0) -> Any:
        seen.extend(str(r.zone) for r in requests)
        return [SoaProbe(r.endpoint, str(r.zone), Reason.REFUSED, None, "refused", 0.0)
                for r in requests]

    monkeypatch.setattr(poller, "poll_soa", refuse)
    return seen


def test_unchanged_zones_keep_their_serial_and_ask_nobody(asked: list[str]) -> None:
    probe = [{"host": "127.0.0.1", "port": 9}]
    got = checked(olds({"a.example": (2026010105, "h-a"), "b.example": (7, "h-b")}),
                  news({"a.example": "h-a", "b.example": "h-b2", "c.example": "h-c"}, probe))
    assert got["a.example"] == 2026010105
    assert got["b.example"] == date_serial(TODAY)  # forward from 7: today's first serial
    assert got["c.example"] == date_serial(TODAY)  # new zone, nothing served
    assert sorted(asked) == ["b.example", "c.example"]


def test_no_change_is_no_network_and_no_diff(asked: list[str]) -> None:
    old = olds({"a.example": (5, "h")})
    new = ZoneSerialsProvider().check(old, news({"a.example": "h"}))
    assert asked == []
    diff = ZoneSerialsProvider().diff("zone-serials", {**old, "zones": {}}, new.inputs)
    assert diff.changes is False and not diff.replaces


def test_a_moved_serial_is_an_update_never_a_replace() -> None:
    new = ZoneSerialsProvider().check(olds({"a.example": (5, "h")}), news({"a.example": "h2"}))
    diff = ZoneSerialsProvider().diff("zone-serials", olds({"a.example": (5, "h")}), new.inputs)
    assert diff.changes is True and diff.replaces == []


@pytest.mark.parametrize("seed", range(3))
def test_a_changed_zone_always_moves_forward(asked: list[str], seed: int) -> None:
    """Previous serials anywhere in the 32-bit space, wrap included: the new one is newer
    in RFC 1982 arithmetic (dnspython's dns.serial), never 0, and unchanged zones stay."""
    rng = random.Random(seed)
    edges = [0, 1, 2**31 - 1, 2**31, 2**31 + 1, SERIAL_MODULUS - 1, SERIAL_MODULUS - 2,
             date_serial(TODAY), date_serial(TODAY) + 99, date_serial(TODAY) - 1]
    previous = {f"z{i}.example": (s, f"h{i}") for i, s in enumerate(
        edges + [rng.randrange(SERIAL_MODULUS) for _ in range(200)])}
    changed = {z for z in previous if rng.random() < 0.6}
    got = checked(olds(previous),
                  news({z: (h + "'" if z in changed else h) for z, (_, h) in previous.items()},
                       [{"host": "127.0.0.1", "port": 9}]))
    for zone, (old, _) in previous.items():
        if zone in changed:
            assert dns.serial.Serial(got[zone]) > dns.serial.Serial(old), (zone, old, got[zone])
            assert got[zone] != 0
        else:
            assert got[zone] == old
    assert set(asked) == changed


def test_unknown_inputs_give_unknown_serials() -> None:
    new = news({"a.example": "h"})
    new["zones"]["a.example"]["contentHash"] = rpc.UNKNOWN
    assert ZoneSerialsProvider().check({}, new).inputs["serials"] == rpc.UNKNOWN


def test_created_and_updated_outputs_are_the_checked_inputs() -> None:
    new = ZoneSerialsProvider().check({}, news({"a.example": "h"})).inputs
    assert ZoneSerialsProvider().create(new).outs == new
    assert ZoneSerialsProvider().update("zone-serials", {}, new).outs == new


def test_the_retired_per_zone_provider_still_unpickles_for_delete() -> None:
    """State written before ADR 11 holds per-zone serials whose provider is pickled by
    reference: the first `up` after the move deletes them through it."""
    blob = dill.dumps(ZoneSerialProvider(), protocol=pickle.DEFAULT_PROTOCOL, recurse=True)
    provider = dill.loads(blob)
    assert isinstance(provider, ZoneSerialProvider)
    provider.delete("example.com", {"zoneName": "example.com", "serial": 2026010100})


def test_a_silent_server_is_asked_once_not_once_per_zone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens on 127.0.0.1:9 or 127.0.0.2:9 (real sockets, real timeouts): with
    300 new zones each server is asked one question, and every zone starts at today's
    first serial (nothing served)."""
    sent: list[Any] = []
    real = poller.poll_soa

    def count(requests: Any, *, timeout: float = 2.0) -> Any:
        sent.extend(requests)
        return real(requests, timeout=timeout)

    monkeypatch.setattr(poller, "poll_soa", count)
    probe = [{"host": "127.0.0.1", "port": 9}, {"host": "127.0.0.2", "port": 9}]
    hashes = {f"z{i}.example": f"h{i}" for i in range(300)}
    got = checked({}, news(hashes, probe))
    assert set(got.values()) == {date_serial(TODAY)}
    assert sorted((r.endpoint.host, str(r.zone)) for r in sent) == [
        ("127.0.0.1", "z0.example"), ("127.0.0.2", "z0.example")]


def test_probe_refs_into_the_servers_map_decide_as_the_lists_did(asked: list[str]) -> None:
    """The compact shape (ADR 19): each server once, a zone's probe its refs; the same
    serials, the same servers asked, as the per-zone lists (an older state or caller)."""
    probe = [{"name": "p", "host": "127.0.0.1", "port": 9},
             {"name": "s", "host": "127.0.0.2", "port": 9}]
    hashes = {"a.example": "h-a", "b.example": "h-b"}
    by_list = checked({}, news(hashes, probe))
    listed = sorted(asked)
    asked.clear()
    refs = {**news(hashes), "servers": {"p": probe[0], "s": probe[1]},
            "zones": {z: {"contentHash": h, "probe": "p s", "digest": None}
                      for z, h in hashes.items()}}
    assert checked({}, refs) == by_list
    assert sorted(asked) == listed
    # old olds (zones with lists), new news (refs): the serials in state decide, no diff
    old = {**news(hashes, probe), "serials": {
        z: {"serial": s, "contentHash": hashes[z]} for z, s in by_list.items()}}
    again = ZoneSerialsProvider().check(old, refs).inputs
    assert ZoneSerialsProvider().diff("id", old, again).changes is False
    with pytest.raises(ValueError, match="probe names q, not in servers"):
        checked({}, {**refs, "zones": {"a.example": {"contentHash": "x", "probe": "q"}}})
