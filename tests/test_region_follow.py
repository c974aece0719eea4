"""Region stacks follow the primary (issue 19, ADR 13), against real named on loopback.

A region stack's zones have no serial or digest of their own: its TransferGate asks the
zone's primaries in ``check`` (what `pulumi preview` and `pulumi up` run) for the serial
and content they serve now, so a zone whose primary moved differs from state and
``update`` re-verifies it (every secondary at that serial or later, with the primaries'
content), and ``read`` (`pulumi refresh`) compares the secondaries with what the primaries
serve now. The servers are tests/namedkit.py's primary and two secondaries; the provider
runs in this process (``bind``) and in the engine's provider host over gRPC
(``provider``); tests/test_engine_region_follow.py drives the same through the real CLI.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bind9_topology.dns.checks import make_tsig_key
from bind9_topology.dns.gate import wait_until_transferred
from bind9_topology.dns.proofs import ContentProofs
from bind9_topology.local.named_process import free_port
from components.transfer_gate import (
    GateFailed,
    TransferGateProvider,
    changed_zones,
    follows,
)
from tests.namedkit import HOST, ZONE, LoopbackTopology, loopback_topology, start_all
from tests.test_provider_grpc import host  # noqa: F401  (the provider host fixture)

PRIMARY_IP = "10.0.1.10"


@pytest.fixture
def region(tmp_path: Path) -> Iterator[LoopbackTopology]:
    with loopback_topology(tmp_path / "dns") as c:
        start_all(c)
        assert c.gate().ok  # everyone serves the first serial
        yield c


def region_inputs(c: LoopbackTopology, *, deadline: float = 10.0) -> dict[str, Any]:
    """The gate's inputs as a region stack registers them: the primaries at direct
    addresses, no expected serial or digest (whatever the primaries serve)."""
    def server(name: str) -> dict[str, Any]:
        return {"name": name, "host": HOST, "port": c.ports[name]}

    return {
        "zones": {ZONE: {"primaries": [server("primary-dns")],
                         "secondaries": [server("sec-a"), server("sec-b")],
                         "expectedSerial": None, "expectedDigest": None}},
        "tsigKeyName": "transfer-key", "tsigAlgorithm": "hmac-sha256",
        "tsigSecret": c.secret, "deadlineSeconds": deadline, "pollIntervalSeconds": 0.2,
        "kubeconfig": None, "kubeContext": None,
    }


def cut_off_from_the_primary(c: LoopbackTopology, name: str) -> None:
    """Restart secondary *name* transferring from a port nobody listens on (a blocked
    port): it keeps serving the copy it has and never sees a newer one."""
    c.procs[name].stop(timeout=5)
    c.overrides[name] = {(PRIMARY_IP, 53): (HOST, free_port(HOST))}
    c.start(name, wait=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        from bind9_topology.dns.checks import query_soa

        if query_soa(c.ep(name), ZONE, timeout=0.5).serial == c.serial:
            return
        time.sleep(0.1)
    pytest.fail(f"{name} does not serve its copy after the restart")


def move_primary(c: LoopbackTopology) -> None:
    """The primary stack changes a record: the primary serves the next serial (its own
    `pulumi up` waited for that) before the region looks."""
    from bind9_topology.dns.checks import query_soa

    c.change_records()
    deadline = time.monotonic() + 10
    while query_soa(c.ep("primary-dns"), ZONE, timeout=0.5).serial != c.serial:
        if time.monotonic() > deadline:
            pytest.fail("the primary did not load the changed zone")
        time.sleep(0.05)


# --------------------------------------------------------------------------- unit


@pytest.mark.unit
def test_which_zones_are_followed() -> None:
    direct = {"name": "p", "host": "10.0.1.10", "port": 53}
    assert follows({"primaries": [direct], "secondaries": []})
    assert follows({"primaries": [direct], "expectedSerial": None, "expectedDigest": None})
    # a primary zone of the stack: its own serial and digest
    assert not follows({"primaries": [direct], "expectedSerial": 7})
    assert not follows({"primaries": [direct], "expectedDigest": "ab" * 48})
    # the stack's own pods are never asked in check; nothing to ask; not known yet
    assert not follows({"primaries": [{"name": "p", "instance": "p", "namespace": "n",
                                       "via": "kubernetes-api"}]})
    assert not follows({"primaries": []})
    from pulumi.runtime import rpc

    assert not follows({"primaries": [rpc.UNKNOWN]})
    assert not follows({"primaries": [{"name": "p", "host": rpc.UNKNOWN, "port": 53}]})


@pytest.mark.unit
def test_a_refresh_that_saw_a_zone_lagging_makes_the_next_up_re_verify_it() -> None:
    news = {"zones": {"a.example": {"primaries": []}}, "tsigKeyName": "k"}
    olds = {**news, "status": {"a.example": {"ready": True}}}
    assert TransferGateProvider().diff("id", olds, news).changes is False
    olds["status"]["a.example"]["ready"] = False
    assert TransferGateProvider().diff("id", olds, news).changes is True


# --------------------------------------------------------------------------- bind


@pytest.mark.bind
def test_check_names_the_zone_whose_primary_moved_and_update_re_verifies_it(
        region: LoopbackTopology) -> None:
    gate = TransferGateProvider()
    first = gate.check({}, region_inputs(region))
    assert not first.failures
    entry = first.inputs["zones"][ZONE]
    assert entry["primarySerial"] == region.serial
    assert entry["primaryDigest"] == region.digest
    assert entry["primaryErrors"] == []
    assert region.secret not in repr(entry)

    created = gate.create(first.inputs).outs
    status = created["status"][ZONE]
    assert created["ready"] is True and status["servedSerial"] == region.serial
    assert set(status["servers"]) == {"primary-dns", "sec-a", "sec-b"}

    # Nothing moved: the same inputs, no diff (what a no-change `pulumi preview` shows).
    again = gate.check(first.inputs, region_inputs(region))
    assert again.inputs["zones"] == first.inputs["zones"]
    assert gate.diff("id", created, again.inputs).changes is False

    # The primary stack moves the zone: the region's check names it, update re-verifies it.
    move_primary(region)
    moved = gate.check(created, region_inputs(region))
    assert moved.inputs["zones"][ZONE]["primarySerial"] == region.serial
    assert moved.inputs["zones"][ZONE]["primaryDigest"] == region.digest
    assert changed_zones(created, moved.inputs) == [ZONE]
    assert gate.diff("id", created, moved.inputs).changes is True
    updated = gate.update("id", created, moved.inputs).outs
    status = updated["status"][ZONE]
    assert updated["ready"] is True and status["servedSerial"] == region.serial
    assert {s["serial"] for s in status["servers"].values()} == {region.serial}
    assert status["checkedAt"] != created["status"][ZONE]["checkedAt"]


@pytest.mark.bind
def test_a_primary_that_cannot_be_asked_gives_a_stable_diff_and_fails_up_naming_it(
        region: LoopbackTopology) -> None:
    gate = TransferGateProvider()
    checked = gate.check({}, region_inputs(region, deadline=3)).inputs
    created = gate.create(checked).outs
    region.procs["primary-dns"].stop(timeout=5)

    started = time.monotonic()
    down = gate.check(created, region_inputs(region, deadline=3)).inputs
    assert time.monotonic() - started < 3.0  # bounded: one 1 s question per server
    entry = down["zones"][ZONE]
    # what state said is kept; the zone differs only by who could not be asked
    assert entry["primarySerial"] == region.serial and entry["primaryDigest"] == region.digest
    (error,) = entry["primaryErrors"]
    assert error.startswith(f"primary-dns ({HOST}#{region.ports['primary-dns']}): ")
    assert error.rsplit(": ", 1)[1] in ("TIMEOUT", "CONNECTION_REFUSED")
    assert changed_zones(created, down) == [ZONE]
    # every preview while it is down shows the same diff, not an ever-changing one
    assert gate.check(created, region_inputs(region, deadline=3)).inputs["zones"] == down["zones"]

    with pytest.raises(GateFailed) as failed:
        gate.update("id", created, down)
    message = str(failed.value)
    assert f"primary primary-dns ({HOST}#{region.ports['primary-dns']})" in message, message
    assert "fix: the gate cannot reach it" in message, message
    assert "could not ask for the zone's serial: primary-dns" in message, message
    assert region.secret not in message


@pytest.mark.bind
def test_a_secondary_cut_off_from_the_primary_fails_up_and_shows_as_drift_on_refresh(
        region: LoopbackTopology) -> None:
    gate = TransferGateProvider()
    created = gate.create(gate.check({}, region_inputs(region, deadline=3)).inputs).outs
    before = region.serial
    cut_off_from_the_primary(region, "sec-b")
    move_primary(region)

    # refresh: sec-b lags what the primary serves now
    read = gate.read("transfer-gate", created).outs
    status = read["status"][ZONE]
    assert read["ready"] is False and status["ready"] is False
    assert status["primarySerial"] == region.serial
    assert status["servers"]["sec-b"]["serial"] == before
    assert status["servers"]["sec-b"]["reason"] == "STALE_SERIAL"
    assert status["servers"]["primary-dns"]["reason"] == "OK"
    # ... and the next `up` re-verifies the zone even with inputs that did not move
    assert gate.diff("id", read, created).changes is True

    moved = gate.check(created, region_inputs(region, deadline=3)).inputs
    with pytest.raises(GateFailed) as failed:
        gate.update("id", created, moved)
    message = str(failed.value)
    lagging = [line for line in message.splitlines() if line.strip().startswith("- ")]
    assert len(lagging) == 1, message
    assert f"secondary sec-b ({HOST}#{region.ports['sec-b']}): serves serial {before}" \
        in lagging[0], message
    assert "STALE_SERIAL" in lagging[0] and f"target serial {region.serial}" in message


@pytest.mark.bind
def test_a_secondary_with_another_key_fails_up_naming_it(region: LoopbackTopology) -> None:
    gate = TransferGateProvider()
    created = gate.create(gate.check({}, region_inputs(region, deadline=10)).inputs).outs
    right = region.secret
    region.procs["sec-a"].stop(timeout=5)
    from tests.conftest import new_secret

    region.secret = new_secret()  # sec-a's named.conf gets another key
    region.start("sec-a", wait=False)
    region.secret = right
    move_primary(region)
    moved = gate.check(created, region_inputs(region, deadline=10)).inputs
    started = time.monotonic()
    with pytest.raises(GateFailed) as failed:
        gate.update("id", created, moved)
    assert time.monotonic() - started < 8  # a wrong key fails within seconds
    message = str(failed.value)
    assert f"TSIG rejected by sec-a ({HOST}#{region.ports['sec-a']})" in message, message
    assert "holds another TSIG key" in message and right not in message


# ----------------------------------------------------------------- the gate itself


@pytest.mark.bind
def test_follow_learns_the_primaries_content_and_proves_it_on_the_secondaries(
        region: LoopbackTopology) -> None:
    prims, secs = region.endpoints()
    key = make_tsig_key("transfer-key", "hmac-sha256", region.secret)
    proofs = ContentProofs()
    report = wait_until_transferred(ZONE, prims, secs, None, None, key, 10, 0.2,
                                    proofs=proofs, follow_primaries=True)
    assert report.ok, report.message
    assert report.target_serial == region.serial
    assert all("digest verified" in s.detail or "AXFR" in s.detail for s in report.servers)
    # the content the secondaries proved is the primary's, learned by the pull
    for ep in secs:
        proof = proofs.known(ep, ZONE, region.serial)
        assert proof is not None and proof.digest == region.digest


@pytest.mark.bind
def test_a_primary_that_moves_on_between_check_and_up_is_followed(
        region: LoopbackTopology) -> None:
    """The check saw serial n; the primary serves n+1 by the time the gate runs: the gate
    targets n+1 (at least n: serials never go back) instead of failing."""
    gate = TransferGateProvider()
    created = gate.create(gate.check({}, region_inputs(region)).inputs).outs
    move_primary(region)
    seen = gate.check(created, region_inputs(region)).inputs
    move_primary(region)  # moves on again before `up` gets to the zone
    updated = gate.update("id", created, seen).outs
    assert seen["zones"][ZONE]["primarySerial"] == region.serial - 1
    assert updated["status"][ZONE]["servedSerial"] == region.serial


@pytest.mark.bind
def test_a_secondary_ahead_of_the_primaries_makes_the_gate_ask_them_again(
        region: LoopbackTopology) -> None:
    """The gate saw its primary at n, and a secondary already serves n+1: the primary is
    asked again each round, and once it serves n+1 that is the target (no failure); a
    secondary ahead of every primary for good fails, named, as a serial gone backwards.

    Staged with real servers: sec-b, cut off from the primary at n, stands as the region's
    primary; sec-a follows the real primary to n+1. Reconnected, sec-b moves to n+1.
    """
    import threading

    key = make_tsig_key("transfer-key", "hmac-sha256", region.secret)
    cut_off_from_the_primary(region, "sec-b")
    move_primary(region)
    from bind9_topology.dns.checks import query_soa

    assert query_soa(region.ep("sec-b"), ZONE, timeout=1).serial == region.serial - 1
    primaries, secondaries = [region.ep("sec-b")], [region.ep("sec-a")]

    stuck = wait_until_transferred(ZONE, primaries, secondaries, None, None, key, 2.0, 0.2,
                                   follow_primaries=True)
    assert not stuck.ok and stuck.target_serial == region.serial - 1, stuck.message
    assert "secondary sec-a" in stuck.message and "ahead of the primaries" in stuck.message

    reports: list[Any] = []
    gate = threading.Thread(target=lambda: reports.append(wait_until_transferred(
        ZONE, primaries, secondaries, None, None, key, 15.0, 0.2, follow_primaries=True)))
    gate.start()
    time.sleep(1.0)
    region.procs["sec-b"].stop(timeout=5)
    region.overrides.pop("sec-b")
    region.start("sec-b", wait=False)
    from bind9_topology.dns.checks import send_notify

    deadline = time.monotonic() + 10  # a NOTIFY, as the primary's next change sends one
    while query_soa(region.ep("sec-b"), ZONE, timeout=0.5).serial != region.serial:
        assert time.monotonic() < deadline, "sec-b did not transfer once reconnected"
        send_notify(region.ep("sec-b"), ZONE, key=key, serial=region.serial, timeout=0.5)
        time.sleep(0.2)
    gate.join(timeout=30)
    (report,) = reports
    assert report.ok and report.target_serial == region.serial, report.message


# --------------------------------------------------------------------------- provider


@pytest.mark.provider
def test_provider_host_check_observes_the_primaries(tmp_path: Path, host: Any) -> None:  # noqa: F811
    """Check, Diff, Create and Update through the engine's provider host (the provider
    dill-serialized, gRPC): what `pulumi preview` and `up` of a region stack run."""
    from google.protobuf import struct_pb2
    from pulumi.dynamic.dynamic import serialize_provider
    from pulumi.runtime.proto import provider_pb2 as pb

    from tests.test_provider_grpc import URN, _deserialize, _serialize

    with loopback_topology(tmp_path / "dns") as c:
        start_all(c)
        assert c.gate().ok
        host.Configure(pb.ConfigureRequest(args=struct_pb2.Struct(), acceptSecrets=True))
        provider = serialize_provider(TransferGateProvider())

        def check(olds: dict[str, Any]) -> dict[str, Any]:
            news = {**region_inputs(c), "__provider": provider}
            reply = host.Check(pb.CheckRequest(urn=URN, olds=_serialize(olds),
                                               news=_serialize(news)))
            assert not reply.failures
            return _deserialize(reply.inputs)

        first = check({})
        assert first["zones"][ZONE]["primarySerial"] == c.serial
        assert first["zones"][ZONE]["primaryDigest"] == c.digest
        created = _deserialize(host.Create(pb.CreateRequest(
            urn=URN, properties=_serialize(first), timeout=60)).properties)
        same = host.Diff(pb.DiffRequest(id="transfer-gate", urn=URN,
                                        olds=_serialize(created),
                                        news=_serialize(check(first))))
        assert same.changes == pb.DiffResponse.DIFF_NONE
        move_primary(c)
        moved = check(first)
        assert moved["zones"][ZONE]["primarySerial"] == c.serial
        diff = host.Diff(pb.DiffRequest(id="transfer-gate", urn=URN,
                                        olds=_serialize(created), news=_serialize(moved)))
        assert diff.changes == pb.DiffResponse.DIFF_SOME
        updated = _deserialize(host.Update(pb.UpdateRequest(
            id="transfer-gate", urn=URN, olds=_serialize(created), news=_serialize(moved),
            timeout=60)).properties)
        assert updated["status"][ZONE]["servedSerial"] == c.serial
