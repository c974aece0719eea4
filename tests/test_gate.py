"""The transfer gate against REAL named on 127.0.0.1: one primary, two secondaries.

Everything is rendered by the product's own path (load_topology ->
render_instance with a root-prefixed Placement -> write_tree), the gate is
bind9_topology.dns.gate.wait_until_transferred with endpoints from gate_plans, as in
the provider and the local runner. Every test has its own tmp dir; every
named is stopped by pid in teardown; every wait is bounded.
"""

from __future__ import annotations

import threading
import time

import pytest

from bind9_topology.dns.checks import Reason, axfr, make_tsig_key
from bind9_topology.dns.gate import wait_until_transferred
from bind9_topology.local.named_process import free_port
from tests.conftest import new_secret
from tests.namedkit import HOST, ZONE, LoopbackTopology, start_all

pytestmark = [
    pytest.mark.bind,
]


def test_initial_axfr_then_change_gives_ixfr_and_gate_passes(loopback: LoopbackTopology) -> None:
    start_all(loopback)
    report = loopback.gate()
    assert report.ok, report.message
    assert report.target_serial == loopback.serial
    assert {s.endpoint.label for s in report.servers} == {"primary-dns", "sec-a", "sec-b"}
    for name in ("sec-a", "sec-b"):
        loopback.procs[name].wait_for_log(r"transfer of 'example.com/IN' from .*Transfer completed",
                                         timeout=5)
    since = {n: p.log_offset() for n, p in loopback.procs.items()}

    loopback.change_records()
    report2 = loopback.gate()
    assert report2.ok, report2.message
    assert report2.target_serial == loopback.serial
    assert all(s.serial == loopback.serial for s in report2.servers)
    primary = loopback.procs["primary-dns"]
    primary.wait_for_log(r"IXFR started", timeout=5, since=since["primary-dns"])
    for name in ("sec-a", "sec-b"):
        proc = loopback.procs[name]
        proc.wait_for_log(r"notify from .* serial", timeout=5, since=since[name])
        proc.wait_for_log(r"Transfer status: success", timeout=5, since=since[name])
    # the old expected serial is not enough for the old digest: content is proven
    stale = wait_until_transferred(ZONE, *loopback.endpoints(), loopback.serial,
                                   "00" * 48, make_tsig_key("transfer-key", "hmac-sha256",
                                                            loopback.secret), 1.0, 0.2)
    assert not stale.ok and "CONTENT_MISMATCH" in stale.message


def test_axfr_without_key_is_refused_everywhere(loopback: LoopbackTopology) -> None:
    start_all(loopback)
    assert loopback.gate().ok
    prims, secs = loopback.endpoints()
    for ep in prims + secs:
        probe, zone = axfr(ep, ZONE, key=None, timeout=3)
        assert zone is None and probe.reason is Reason.REFUSED, (ep, probe)
    # and with the key the primary transfers (the secondaries serve nobody)
    probe, _ = axfr(prims[0], ZONE, key=make_tsig_key("transfer-key", "hmac-sha256",
                                                      loopback.secret))
    assert probe.ok


def test_wrong_key_fails_with_tsig_reason_before_deadline(loopback: LoopbackTopology) -> None:
    start_all(loopback)
    t0 = time.monotonic()
    report = loopback.gate(secret=new_secret(), deadline=20)
    elapsed = time.monotonic() - t0
    assert not report.ok
    assert "TSIG_BADSIG" in report.message or "TSIG_BADKEY" in report.message, report.message
    assert "primary-dns" in report.message
    assert loopback.secret not in report.message
    assert elapsed < 10, elapsed


def test_primary_starting_late_gate_waits_then_passes(loopback: LoopbackTopology) -> None:
    loopback.start("sec-a", wait=False)
    loopback.start("sec-b", wait=False)
    starter = threading.Timer(1.5, lambda: loopback.start("primary-dns", wait=False))
    starter.start()
    try:
        t0 = time.monotonic()
        report = loopback.gate(deadline=40, poll=0.5)
        assert report.ok, report.message
        assert time.monotonic() - t0 >= 1.4
        primary = next(s for s in report.servers if s.role == "primary")
        assert primary.attempts > 1
    finally:
        starter.join()


def test_primary_never_up_fails_clearly_within_deadline(loopback: LoopbackTopology) -> None:
    loopback.start("sec-a", wait=False)
    t0 = time.monotonic()
    report = loopback.gate(deadline=3, poll=0.5)
    elapsed = time.monotonic() - t0
    assert not report.ok
    assert elapsed < 3 + 2.5, elapsed
    assert f"primary primary-dns ({HOST}#{loopback.ports['primary-dns']})" in report.message
    assert "serves serial none" in report.message
    assert "TIMEOUT" in report.message or "CONNECTION_REFUSED" in report.message
    assert not any(s.ok for s in report.servers if s.role == "secondary")


def test_secondary_that_cannot_reach_primary_is_named(loopback: LoopbackTopology) -> None:
    dead = free_port(HOST)  # nobody listens there
    loopback.overrides["sec-b"] = {("10.0.1.10", 53): (HOST, dead)}
    start_all(loopback)
    report = loopback.gate(deadline=4, poll=0.5)
    assert not report.ok
    lag = report.lagging()
    assert [s.endpoint.label for s in lag] == ["sec-b"], report.message
    assert f"secondary sec-b ({HOST}#{loopback.ports['sec-b']})" in report.message
    assert "SERVFAIL" in report.message or "NOT_AUTHORITATIVE" in report.message


def test_named_killed_and_restarted_converges(loopback: LoopbackTopology) -> None:
    start_all(loopback)
    assert loopback.gate().ok
    loopback.procs["sec-a"].kill()
    loopback.procs["primary-dns"].kill()
    down = loopback.gate(deadline=1.5, poll=0.2)
    assert not down.ok and "primary-dns" in down.message
    loopback.start("primary-dns")
    loopback.start("sec-a", wait=False)
    report = loopback.gate(deadline=30)
    assert report.ok, report.message


def test_serial_never_goes_backwards_when_state_is_lost(loopback: LoopbackTopology) -> None:
    """A zone's fresh serial (state lost, stack recreated) starts past what the servers serve;
    and a primary whose serial did go backwards never passes the gate."""
    from bind9_topology.dns.targets import probe_targets
    from tests.namedkit import fresh_serial

    loopback.serial = 2099010105  # served now, far ahead of today's YYYYMMDD00
    start_all(loopback)
    assert loopback.gate().ok

    spec = loopback.topo.spec.model_copy(update={"gate": loopback.topo.spec.gate.model_copy(
        update={"addressMap": loopback.address_map, "via": "direct"})})
    primary_zone = next(z for z in spec.zones if z.type == "primary")
    probe = probe_targets(spec, primary_zone)
    assert {(p["host"], p["port"]) for p in probe} == {
        (HOST, port) for port in loopback.ports.values()}
    created = fresh_serial({"zoneName": ZONE, "contentHash": "lost-state", "probe": probe})
    assert created == 2099010106

    # A primary pod that restarts from a rendering whose serial went backwards (state lost,
    # no probe): the secondaries keep their old data; the gate names them, never "ready".
    loopback.procs["primary-dns"].stop(timeout=5)
    for journal in (loopback.root / "primary-dns/var/cache/bind").glob("*.jnl"):
        journal.unlink()
    loopback.raw["zones"][0]["records"][2]["data"] = "192.0.2.11"
    loopback.topo = loopback.load()
    loopback.serial = 2026010100
    loopback.start("primary-dns")
    report = loopback.gate(deadline=4.0, serial=2026010100, poll=0.2)
    assert not report.ok
    assert "went backwards" in report.message, report.message
    assert "sec-a" in report.message and "sec-b" in report.message


def test_the_gate_nudges_a_secondary_that_no_notify_reached(loopback: LoopbackTopology) -> None:
    """A replica behind a Service address misses the primary's NOTIFY (it reaches one
    replica); with its refresh an hour away, the gate's signed NOTIFY brings it along."""
    loopback.raw["zones"][0]["alsoNotify"] = ["10.0.1.20"]  # sec-b is never notified
    for inst in loopback.raw["instances"][1:]:
        inst["config"] = {"maxRefreshSeconds": 3600}
    loopback.topo = loopback.load()
    start_all(loopback)
    assert loopback.gate().ok
    loopback.change_records()
    started = time.monotonic()
    report = loopback.gate(deadline=20)
    assert report.ok, report.message
    assert time.monotonic() - started < 10
    assert {s.serial for s in report.servers} == {loopback.serial}
