"""Faults against REAL named on 127.0.0.1.

* a serial reused after lost state (today's first serial, YYYYMMDD00, already served
  with other content): ZoneSerials moves past it, and the gate proves the content of a
  secondary at the target serial, so a reused serial is reported, never "ready";
* a secondary that holds another TSIG key is named as a TSIG failure within seconds.

The topology, rendering and servers are tests/namedkit.LoopbackTopology's (each test its own
tmp dir, its own ports, every named stopped by pid, every wait bounded).
"""

from __future__ import annotations

import datetime
import time

import pytest

from bind9_topology.dns.checks import Endpoint, Reason, axfr, make_tsig_key, query_soa
from bind9_topology.dns.serials import date_serial
from tests.conftest import new_secret
from tests.namedkit import HOST, ZONE, LoopbackTopology, fresh_serial, start_all

pytestmark = [pytest.mark.bind]


def today00() -> int:
    return date_serial(datetime.datetime.now(datetime.UTC).date())


def serial_inputs(c: LoopbackTopology, content_hash: str, *, secret: str | None = None) -> dict:
    prims, secs = c.endpoints()
    return {
        "zoneName": ZONE, "contentHash": content_hash,
        "probe": [{"host": e.host, "port": e.port} for e in prims + secs],
        "digest": c.digest, "tsigKeyName": "transfer-key", "tsigAlgorithm": "hmac-sha256",
        "tsigSecret": secret or c.secret,
    }


def change_content(c: LoopbackTopology) -> None:
    c.raw["zones"][0]["records"][2]["data"] = "192.0.2.77"
    c.raw["zones"][0]["records"].append({"name": "new", "type": "A", "data": "192.0.2.78"})
    c.topo = c.load()


# ----------------------------------------------------------------------------- item 8


def test_lost_state_at_todays_first_serial_moves_past_it(loopback: LoopbackTopology) -> None:
    """State lost; today's YYYYMMDD00 is what every server serves, with other content."""
    loopback.serial = today00()
    start_all(loopback)
    assert loopback.gate().ok
    served_hash = loopback.topo.contents[ZONE].content_hash

    # Same content, state lost: every server proves it serves this content -> kept.
    assert fresh_serial(serial_inputs(loopback, served_hash)) == today00()

    # Other content, state lost: next_serial alone would say today00 again; it moves past.
    change_content(loopback)
    assert fresh_serial(serial_inputs(loopback, "lost-state-new-content")) == today00() + 1

    # No key to prove content with: never reuse a served serial.
    nokey = serial_inputs(loopback, served_hash)
    nokey["tsigSecret"] = ""
    assert fresh_serial(nokey) == today00() + 1
    # A wrong key proves nothing either.
    assert fresh_serial(serial_inputs(loopback, served_hash, secret=new_secret())) == today00() + 1


def test_lost_state_asks_secondaries_too(loopback: LoopbackTopology) -> None:
    """Only the secondaries still serve the lost serial (the primary is new and empty of
    it): the serial still moves past what they serve."""
    loopback.serial = today00() + 3
    start_all(loopback)
    assert loopback.gate().ok
    loopback.procs["primary-dns"].stop()
    change_content(loopback)
    assert fresh_serial(serial_inputs(loopback, "after-loss")) == today00() + 4


def test_gate_catches_a_reused_serial_on_secondaries(loopback: LoopbackTopology) -> None:
    """The primary serves new content at the very serial the secondaries hold with the old
    content (what a reused serial does): the gate names both secondaries, never ready."""
    loopback.serial = today00()
    start_all(loopback)
    assert loopback.gate().ok
    old_digest = loopback.digest

    loopback.procs["primary-dns"].stop(timeout=5)
    for journal in (loopback.root / "primary-dns/var/cache/bind").glob("*.jnl"):
        journal.unlink()
    change_content(loopback)  # same serial (loopback.serial unchanged), other content
    assert loopback.digest != old_digest
    loopback.start("primary-dns")

    t0 = time.monotonic()
    report = loopback.gate(deadline=20, poll=0.2)
    elapsed = time.monotonic() - t0
    assert not report.ok
    assert elapsed < 10, elapsed  # it does not fix itself: reported well before the deadline
    primary = next(s for s in report.servers if s.role == "primary")
    assert primary.ok, report.message
    lag = {s.endpoint.label: s for s in report.lagging()}
    assert set(lag) == {"sec-a", "sec-b"}, report.message
    for status in lag.values():
        assert status.reason is Reason.CONTENT_MISMATCH and status.serial == loopback.serial
    assert "CONTENT_MISMATCH" in report.message and "serial was reused" in report.message
    assert "fix: " in report.message


def test_gate_proves_secondary_content_when_it_matches(loopback: LoopbackTopology) -> None:
    start_all(loopback)
    report = loopback.gate()
    assert report.ok, report.message
    for status in report.servers:
        if status.role == "secondary":
            assert "content digest verified" in status.detail, status
    # secondaries transfer with the project's key only
    _, secs = loopback.endpoints()
    key = make_tsig_key("transfer-key", "hmac-sha256", loopback.secret)
    for ep in secs:
        assert axfr(ep, ZONE, key=key, timeout=3)[0].ok
        assert axfr(ep, ZONE, key=None, timeout=3)[0].reason is Reason.REFUSED


# ----------------------------------------------------------------------------- item 10


def start_with_wrong_key(c: LoopbackTopology, name: str) -> None:
    right = c.secret
    c.secret = new_secret()
    try:
        c.start(name, wait=False)
    finally:
        c.secret = right


@pytest.mark.parametrize("bad", ["sec-b", "sec-a"])
def test_secondary_with_wrong_key_is_a_tsig_failure_within_seconds(
    loopback: LoopbackTopology, bad: str
) -> None:
    loopback.start("primary-dns")
    good = "sec-a" if bad == "sec-b" else "sec-b"
    loopback.start(good, wait=False)
    start_with_wrong_key(loopback, bad)
    t0 = time.monotonic()
    report = loopback.gate(deadline=60, poll=0.5)
    elapsed = time.monotonic() - t0
    assert not report.ok
    assert elapsed < 10, (elapsed, report.message)
    assert f"TSIG rejected by {bad} ({HOST}#{loopback.ports[bad]})" in report.message
    lag = report.lagging()
    assert [s.endpoint.label for s in lag] == [bad], report.message
    assert lag[0].reason in (Reason.TSIG_BADSIG, Reason.TSIG_BADKEY)
    assert "rejects the project's TSIG key" in lag[0].detail
    assert "SERVFAIL" not in report.message
    assert loopback.secret not in report.message
    # and the secondary really cannot transfer: named's own log says so
    loopback.procs[bad].wait_for_log(r"(?i)tsig|bad ?sig|failed", timeout=10)


def test_secondary_with_another_key_name_is_badkey(loopback: LoopbackTopology) -> None:
    loopback.start("primary-dns")
    loopback.start("sec-a", wait=False)
    loopback.raw["tsigKey"] = {"name": "other-key"}
    loopback.topo = loopback.load()
    loopback.start("sec-b", wait=False)
    loopback.raw.pop("tsigKey")
    loopback.topo = loopback.load()
    report = loopback.gate(deadline=30, poll=0.5)
    assert not report.ok
    (lag,) = report.lagging()
    assert lag.endpoint.label == "sec-b" and lag.reason is Reason.TSIG_BADKEY, report.message


def test_signed_soa_query_with_the_right_key_is_ok(loopback: LoopbackTopology) -> None:
    start_all(loopback)
    assert loopback.gate().ok
    key = make_tsig_key("transfer-key", "hmac-sha256", loopback.secret)
    for name in ("sec-a", "sec-b"):
        probe = query_soa(Endpoint(HOST, loopback.ports[name]), ZONE, key=key)
        assert probe.ok and probe.serial == loopback.serial, probe
