"""The stack's one TransferGate: which zones an update re-checks, and what it keeps.

The per-zone check (``TransferGateProvider._wait``) runs against real named in
test_gate, test_faults and test_provider_grpc; here it is replaced by a recorder so
the dispatch itself is pinned down: a change to one zone re-checks that zone only,
a shared input re-checks all, a zone not yet ready is re-checked, the others keep
their status, and failures of several zones come back in one message.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest

from components.transfer_gate import (
    GateFailed,
    ServerRefs,
    TransferGateProvider,
    changed_zones,
    server_status,
    zone_props,
)

pytestmark = pytest.mark.unit


def zone(serial: int) -> dict[str, Any]:
    return {"primaries": [{"name": "p", "host": "127.0.0.1", "port": 53}], "secondaries": [],
            "expectedSerial": serial, "expectedDigest": "ab" * 48}


def inputs(**zones: int) -> dict[str, Any]:
    return {"zones": {f"{name}.example": zone(s) for name, s in zones.items()},
            "tsigKeyName": "k", "tsigAlgorithm": "hmac-sha256", "tsigSecret": "c2VjcmV0",
            "deadlineSeconds": 5, "pollIntervalSeconds": 0.5, "kubeconfig": None,
            "kubeContext": None}


@dataclass(frozen=True)
class FakeReport:
    zone: str
    ok: bool
    target_serial: int | None
    message: str
    servers: tuple[Any, ...] = ()
    elapsed_s: float = 0.0


class Recorder(TransferGateProvider):
    """The gate's zones as ``_gate_many`` is handed them: once per create/update, every
    zone to check in that one call (one wait_many), with the shared resolver's endpoints."""

    def __init__(self, failing: set[str] | None = None) -> None:
        self.checked: list[str] = []
        self.calls = 0
        self.failing = failing or set()
        self.lock = threading.Lock()

    def _gate_many(self, zones: list[tuple[dict[str, Any], list[Any], list[Any]]]) -> list[Any]:
        self.calls += 1
        out = []
        for props, primaries, _secondaries in zones:
            assert [e.port for e in primaries] == [53]
            zone_name = str(props["zoneName"])
            with self.lock:
                self.checked.append(zone_name)
            assert props["tsigKeyName"] == "k" and props["expectedSerial"] is not None
            if zone_name in self.failing:
                out.append(FakeReport(zone_name, False, None,
                                      f"zone {zone_name}: not ready after 5s"))
            else:
                out.append(FakeReport(zone_name, True, props["expectedSerial"], "ok"))
        return out


def test_zone_props_merge_the_shared_inputs() -> None:
    props = zone_props(inputs(a=1), "a.example")
    assert props["zoneName"] == "a.example" and props["expectedSerial"] == 1
    assert props["tsigSecret"] == "c2VjcmV0" and props["deadlineSeconds"] == 5


def test_changed_zones() -> None:
    old = inputs(a=1, b=1)
    assert changed_zones(old, inputs(a=1, b=1)) == []
    assert changed_zones(old, inputs(a=1, b=2)) == ["b.example"]
    assert changed_zones(old, inputs(a=1, b=1, c=1)) == ["c.example"]
    shared = {**inputs(a=1, b=1), "deadlineSeconds": 9}
    assert changed_zones(old, shared) == ["a.example", "b.example"]


def test_create_checks_every_zone_then_update_only_the_changed_one() -> None:
    gate = Recorder()
    created = gate.create(inputs(a=1, b=1, c=1)).outs
    assert sorted(gate.checked) == ["a.example", "b.example", "c.example"]
    assert gate.calls == 1  # the three zones in one wait_many
    assert created["ready"] is True and set(created["status"]) == set(gate.checked)

    gate.checked.clear()
    news = inputs(a=1, b=2, c=1)
    assert gate.diff("id", created, news).changes is True
    updated = gate.update("id", created, news).outs
    assert gate.checked == ["b.example"]
    assert updated["status"]["b.example"]["servedSerial"] == 2
    assert updated["status"]["a.example"] == created["status"]["a.example"]

    assert gate.diff("id", updated, news).changes is False
    removed = inputs(a=1, b=2)
    assert gate.diff("id", updated, removed).changes is True
    gate.checked.clear()
    assert set(gate.update("id", updated, removed).outs["status"]) == {"a.example", "b.example"}
    assert gate.checked == []


def test_a_zone_not_ready_is_checked_again() -> None:
    gate = Recorder()
    created = gate.create(inputs(a=1, b=1)).outs
    created["status"]["a.example"]["ready"] = False  # e.g. a refresh saw it lagging
    gate.checked.clear()
    gate.update("id", created, inputs(a=1, b=1))
    assert gate.checked == ["a.example"]


def test_failures_of_several_zones_come_back_together() -> None:
    gate = Recorder(failing={"b.example", "c.example"})
    with pytest.raises(GateFailed) as failed:
        gate.create(inputs(a=1, b=1, c=1))
    lines = str(failed.value).splitlines()
    assert lines[0] == "2 of 3 zone(s) not ready"
    assert lines[1:] == ["zone b.example: not ready after 5s", "zone c.example: not ready after 5s"]


def test_one_zone_fails_with_its_message_alone() -> None:
    with pytest.raises(GateFailed) as failed:
        Recorder(failing={"a.example"}).create(inputs(a=1))
    assert str(failed.value) == "zone a.example: not ready after 5s"


def test_check_refuses_a_zones_input_that_is_not_a_map() -> None:
    result = TransferGateProvider().check({}, {**inputs(a=1), "zones": ["a.example"]})
    assert [f.property for f in result.failures] == ["zones"]


def test_the_zones_share_one_lookup_of_pods_and_forwards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many zones of one gate reach the same instances' pods: one resolver for them all."""
    import contextlib

    from bind9_topology.kube import forward

    entered: list[int] = []
    real = forward.endpoint_resolver

    @contextlib.contextmanager
    def counting(items: Any, *args: Any) -> Any:
        entered.append(len(items))
        with real(items, *args) as expand:
            yield expand

    monkeypatch.setattr(forward, "endpoint_resolver", counting)
    Recorder().create(inputs(a=1, b=1, c=1))
    assert entered == [3]  # once, with the three zones' servers


def ref_inputs(servers: dict[str, dict[str, Any]], **zones: tuple[int, str]) -> dict[str, Any]:
    """The gate's inputs as the program registers them (ADR 19): each server once, a
    zone's primaries as refs."""
    return {**inputs(), "servers": servers, "zones": {
        f"{name}.example": {"primaries": refs, "secondaries": "", "expectedSerial": serial,
                            "expectedDigest": "ab" * 48}
        for name, (serial, refs) in zones.items()}}


def test_refs_resolve_to_the_servers_and_compare_with_the_old_shape() -> None:
    p = {"name": "p", "host": "127.0.0.1", "port": 53}
    q = {"name": "q", "host": "127.0.0.2", "port": 53}
    new = ref_inputs({"p": p, "q": q}, a=(1, "p"), b=(1, "q"))
    assert zone_props(new, "a.example")["primaries"] == [p]
    assert zone_props(new, "b.example")["primaries"] == [q]
    # a state of the old shape with the same servers: nothing changed
    old = {**inputs(a=1), "zones": {"a.example": zone(1), "b.example": {**zone(1),
                                                                        "primaries": [q]}}}
    assert changed_zones(old, new) == []
    assert changed_zones(new, old) == []
    assert TransferGateProvider().diff("id", old, new).changes is False
    # a server that moves changes exactly the zones that name it
    moved = ref_inputs({"p": p, "q": {**q, "port": 5353}}, a=(1, "p"), b=(1, "q"))
    assert changed_zones(new, moved) == ["b.example"]
    assert changed_zones(old, moved) == ["b.example"]
    # a zone that names another server is a change of that zone
    assert changed_zones(new, ref_inputs({"p": p, "q": q}, a=(1, "q"), b=(1, "q"))) == [
        "a.example"]
    # a ref to no server is a check failure naming it
    bad = TransferGateProvider().check({}, ref_inputs({"p": p}, a=(1, "p x")))
    assert [f.reason for f in bad.failures] == [
        "zones.a.example.primaries names x, not in servers (servers: p)"]


def test_update_of_an_old_state_re_verifies_only_changed_zones_and_compacts_status() -> None:
    gate = Recorder()
    p = {"name": "p", "host": "127.0.0.1", "port": 53}
    server = {"host": "127.0.0.1", "port": 53, "role": "primary", "serial": 1,
              "verifiedAt": "2026-12-03T17:00:00Z", "attempts": 2, "reason": "OK"}
    old = {**inputs(a=1, b=1), "ready": True, "status": {
        z: {"ready": True, "servedSerial": 1, "servers": {"p": server}}
        for z in ("a.example", "b.example")}}
    news = ref_inputs({"p": p}, a=(1, "p"), b=(2, "p"))
    outs = gate.update("id", old, news).outs
    assert gate.checked == ["b.example"]
    kept = outs["status"]["a.example"]["servers"]["p"]
    assert kept == "primary 1 OK 2 2026-12-03T17:00:00Z 127.0.0.1 53"
    assert server_status(kept) == server
    assert outs["status"]["a.example"]["servedSerial"] == 1


def test_server_refs_keep_each_server_once() -> None:
    refs = ServerRefs({"sec": {"name": "sec", "host": "10.0.0.2", "port": 53}})
    p = {"name": "p", "host": "10.0.0.1", "port": 53}
    other_p = {"name": "p", "host": "10.0.0.9", "port": 53}
    assert refs.refs([p, "sec"]) == "p sec"
    assert refs.refs([dict(p), other_p]) == "p p@10.0.0.9:53"
    assert list(refs.used) == ["p", "sec", "p@10.0.0.9:53"]
    with pytest.raises(ValueError, match="server 'nope' is not one of"):
        refs.ref("nope")
