"""The gate's fan-out against REAL named on 127.0.0.1 (tests/namedkit.LoopbackTopology).

* the SOA poller gives, for every server at once, the SoaProbe ``query_soa`` gives for
  it alone: a primary and a secondary (signed and not), a server that is down, one that
  refuses the zone, one that is not authoritative for it (a delegated name), a wrong
  key, a TCP-only endpoint;
* the wire reader's AXFR probe equals dnspython's ``axfr`` on the same servers, and so
  does ``verify_primary`` built on it;
* a primary whose serial did not move is not pulled twice (named's own log counts the
  transfers), one whose serial moved is; a digest that differs at the same serial is
  pulled again and named;
* a secondary is proven in one exchange when the zone is small, and one that is behind
  is still named for what it serves.
"""

from __future__ import annotations

import re
import socket
import threading

import pytest

from bind9_topology.dns import gate as gate_module
from bind9_topology.dns.checks import (
    Endpoint,
    Reason,
    SoaProbe,
    axfr,
    axfr_probe,
    make_tsig_key,
    query_soa,
    verify_primary,
)
from bind9_topology.dns.gate import GateReport, wait_until_transferred
from bind9_topology.dns.poller import SoaPoller, SoaRequest
from bind9_topology.dns.proofs import ContentProofs
from bind9_topology.local.named_process import free_port
from tests.conftest import new_secret
from tests.namedkit import HOST, ZONE, LoopbackTopology, start_all

pytestmark = [pytest.mark.bind]


def same(probe: SoaProbe) -> tuple[object, ...]:
    return probe.endpoint, probe.zone, probe.reason, probe.serial, probe.detail


def axfrs_started(c: LoopbackTopology, name: str) -> int:
    return len(re.findall(r"transfer of 'example\.com/IN': AXFR started", c.procs[name].log_text()))


def test_poller_answers_as_query_soa_for_every_kind_of_server(loopback: LoopbackTopology) -> None:
    loopback.raw["zones"][0]["records"].append(
        {"name": "sub", "type": "NS", "data": "ns.elsewhere.net."})  # a delegation
    loopback.topo = loopback.load()
    start_all(loopback)
    assert loopback.gate().ok
    key = make_tsig_key("transfer-key", "hmac-sha256", loopback.secret)
    wrong = make_tsig_key("transfer-key", "hmac-sha256", new_secret())
    other_name = make_tsig_key("other-key", "hmac-sha256", loopback.secret)
    primary, sec = loopback.ep("primary-dns"), loopback.ep("sec-a")
    down = Endpoint(HOST, free_port(HOST), "down")
    requests = [
        SoaRequest(primary, ZONE), SoaRequest(primary, ZONE, key), SoaRequest(sec, ZONE, key),
        SoaRequest(down, ZONE), SoaRequest(down, ZONE, key),
        SoaRequest(primary, "not-served.example"),  # refused
        SoaRequest(primary, f"sub.{ZONE}"),  # a referral: no AA
        SoaRequest(sec, ZONE, wrong), SoaRequest(sec, ZONE, other_name),
        SoaRequest(Endpoint(HOST, loopback.ports["sec-b"], "sec-b tcp", tcp_only=True), ZONE,
                   key),
    ]
    poller = SoaPoller()
    try:
        together = poller.query(requests, timeout=0.5)
    finally:
        poller.close()
    alone = [query_soa(r.endpoint, r.zone, timeout=0.5, key=r.key) for r in requests]
    assert [same(p) for p in together] == [same(p) for p in alone]
    reasons = [p.reason for p in together]
    assert reasons[:3] == [Reason.OK] * 3 and together[0].serial == loopback.serial
    assert reasons[3:5] == [Reason.TIMEOUT] * 2
    assert reasons[5] is Reason.REFUSED
    assert reasons[6] is Reason.NOT_AUTHORITATIVE
    assert reasons[7] is Reason.TSIG_BADSIG and reasons[8] is Reason.TSIG_BADKEY
    assert reasons[9] is Reason.OK


def test_wire_reader_equals_dnspython_on_real_named(loopback: LoopbackTopology) -> None:
    start_all(loopback)
    assert loopback.gate().ok
    key = make_tsig_key("transfer-key", "hmac-sha256", loopback.secret)
    wrong = make_tsig_key("transfer-key", "hmac-sha256", new_secret())
    down = Endpoint(HOST, free_port(HOST), "down")
    for ep in [loopback.ep("primary-dns"), loopback.ep("sec-a"), loopback.ep("sec-b"), down]:
        for k in (key, None, wrong):
            fast = axfr_probe(ep, ZONE, key=k, timeout=2)
            slow, _ = axfr(ep, ZONE, key=k, timeout=2)
            assert (fast.reason, fast.serial, fast.digest, fast.records, fast.detail) == (
                slow.reason, slow.serial, slow.digest, slow.records, slow.detail), (ep, k)
    fast = axfr_probe(loopback.ep("primary-dns"), ZONE, key=key)
    assert fast.ok and fast.digest == loopback.digest and fast.authoritative
    assert verify_primary(loopback.ep("primary-dns"), ZONE, loopback.serial, loopback.digest,
                          key).ok


def test_a_serial_that_did_not_move_is_not_pulled_again(loopback: LoopbackTopology) -> None:
    start_all(loopback)
    assert loopback.gate().ok  # every server up and at the serial
    prims, secs = loopback.endpoints()
    key = make_tsig_key("transfer-key", "hmac-sha256", loopback.secret)
    proofs = ContentProofs()

    def gate(expected_digest: str | None = None) -> tuple[GateReport, dict[str, int]]:
        report = wait_until_transferred(ZONE, prims, secs, loopback.serial,
                                        expected_digest or loopback.digest, key, 20, 0.2,
                                        proofs=proofs)
        return report, {n: axfrs_started(loopback, n) for n in loopback.procs}

    before = {n: axfrs_started(loopback, n) for n in loopback.procs}
    first, after_first = gate()
    assert first.ok and first.pulls == 3, first  # the primary and both secondaries, once
    assert after_first == {n: before[n] + 1 for n in before}, (before, after_first)
    second, after_second = gate()
    assert second.ok and second.pulls == 0, second.message
    assert after_second == after_first  # named saw no transfer at all
    assert all("earlier pull" in s.detail for s in second.servers), second.servers

    # another expected digest at the same serial is not taken from the proofs
    stale = wait_until_transferred(ZONE, prims, secs, loopback.serial, "00" * 48, key, 1.0, 0.2,
                                   proofs=proofs)
    assert not stale.ok and stale.pulls >= 1 and "CONTENT_MISMATCH" in stale.message

    # the serial moves: pulled again, everywhere
    loopback.change_records()
    third, after_third = gate()
    assert third.ok and third.target_serial == loopback.serial, third.message
    assert third.pulls >= 3
    assert all(after_third[n] > after_first[n] for n in after_first), (after_first, after_third)
    fourth, after_fourth = gate()
    assert fourth.ok and fourth.pulls == 0 and after_fourth == after_third


def test_a_fresh_process_proves_again(loopback: LoopbackTopology) -> None:
    """The proofs are the process's (or the caller's): new proofs pull again."""
    start_all(loopback)
    assert loopback.gate().ok
    prims, secs = loopback.endpoints()
    key = make_tsig_key("transfer-key", "hmac-sha256", loopback.secret)
    for _ in range(2):
        report = wait_until_transferred(ZONE, prims, secs, loopback.serial, loopback.digest, key,
                                        20, 0.2, proofs=ContentProofs())
        assert report.ok and report.pulls == 3


def test_a_zone_past_the_direct_size_is_dropped_at_once_and_proven_the_usual_way(
        loopback: LoopbackTopology, monkeypatch: pytest.MonkeyPatch) -> None:
    """The secondaries are pulled beside the primaries (no SOA question first), read up to
    DIRECT_PROOF_MAX_RECORDS records: a larger zone's answers are dropped (TooLarge) and
    the secondaries asked the usual way (SOA, then the pull), with the same verdict."""
    start_all(loopback)
    assert loopback.gate().ok
    prims, secs = loopback.endpoints()
    key = make_tsig_key("transfer-key", "hmac-sha256", loopback.secret)
    small = wait_until_transferred(ZONE, prims, secs, loopback.serial, loopback.digest, key,
                                   20, 0.2, proofs=ContentProofs())
    assert small.ok and small.pulls == 3, small.message  # one pull per server
    monkeypatch.setattr(gate_module, "DIRECT_PROOF_MAX_RECORDS", 2)
    large = wait_until_transferred(ZONE, prims, secs, loopback.serial, loopback.digest, key,
                                   20, 0.2, proofs=ContentProofs())
    assert large.ok, large.message
    assert large.pulls == 5  # the primary's, 2 dropped, then each secondary once more
    assert [(s.ok, s.serial, s.reason) for s in large.servers] == [
        (s.ok, s.serial, s.reason) for s in small.servers]
    assert all("digest verified" in s.detail or "records" in s.detail for s in large.servers)


def test_a_secondary_behind_is_still_named_for_what_it_serves(loopback: LoopbackTopology) -> None:
    """sec-b never hears of the change (its NOTIFYs go nowhere): a direct pull finds it
    behind, and the report names the serial it serves, as the SOA path always did."""
    loopback.overrides["sec-b"] = {("10.0.1.10", 53): (HOST, free_port(HOST))}  # no primary
    start_all(loopback)
    assert loopback.gate(deadline=1.0).lagging() != []
    report = loopback.gate(deadline=1.5, poll=0.2)
    assert not report.ok
    (lag,) = report.lagging()
    assert lag.endpoint.label == "sec-b"
    assert lag.reason in (Reason.SERVFAIL, Reason.STALE_SERIAL), lag
    ok = {s.endpoint.label for s in report.servers if s.ok}
    assert ok == {"primary-dns", "sec-a"}
    for s in report.servers:
        if s.ok and s.role == "secondary":
            assert "content digest verified" in s.detail


def test_a_kept_connection_the_server_closed_is_replaced(loopback: LoopbackTopology) -> None:
    """Pulls go over kept connections. One the server closed while it was kept is dropped
    when taken (named restarted on the same port); one that fails before any answer (here
    a connection that reads the query and hangs up) is replaced once, unseen."""
    from bind9_topology.dns import fastxfr

    loopback.start("primary-dns")
    key = make_tsig_key("transfer-key", "hmac-sha256", loopback.secret)
    ep = loopback.ep("primary-dns")
    assert axfr_probe(ep, ZONE, key=key).ok
    kept = fastxfr.CONNECTIONS.take(ep)
    assert kept is not None  # the first pull's connection was kept
    fastxfr.CONNECTIONS.give(ep, kept)
    loopback.procs["primary-dns"].stop(timeout=5)
    loopback.start("primary-dns")
    before = axfrs_started(loopback, "primary-dns")
    probe = axfr_probe(ep, ZONE, key=key)
    assert probe.ok and probe.digest == loopback.digest, probe
    assert axfrs_started(loopback, "primary-dns") == before + 1

    # a kept connection that hangs up on the next query
    with socket.create_server((HOST, 0)) as listener:
        hangup = socket.create_connection(listener.getsockname())
        hangup.setblocking(False)
        conn, _ = listener.accept()
        while (spare := fastxfr.CONNECTIONS.take(ep)) is not None:
            spare.close()
        fastxfr.CONNECTIONS.give(ep, hangup)

        def close_on_query() -> None:
            with conn:
                conn.settimeout(5)
                conn.recv(2)

        closer = threading.Thread(target=close_on_query)
        closer.start()
        probe = axfr_probe(ep, ZONE, key=key, timeout=2)
        closer.join(timeout=5)
    assert probe.ok and probe.digest == loopback.digest, probe
    assert hangup.fileno() == -1


def test_wait_many_gives_each_zone_what_its_own_gate_gives(loopback: LoopbackTopology) -> None:
    """Zones batched in one wait_many (the provider's and the runner's call, ADR 19): one
    served zone passes, the same zone with another digest fails as content mismatch, a
    zone no server holds fails on its own deadline, a server that is down is named; each
    report says what the zone's own wait_until_transferred says, and the passing zone is
    decided in its first round, not held back by the failing ones."""
    from bind9_topology.dns.gate import ZoneJob, wait_many

    start_all(loopback)
    assert loopback.gate().ok
    prims, secs = loopback.endpoints()
    down = Endpoint(HOST, free_port(HOST), "down")
    key = make_tsig_key("transfer-key", "hmac-sha256", loopback.secret)
    jobs = [ZoneJob(ZONE, prims, secs, loopback.serial, loopback.digest),
            ZoneJob(ZONE, prims, secs, loopback.serial, "00" * 48),
            ZoneJob("absent.example", prims, secs, 1, "11" * 48),
            ZoneJob(ZONE, prims, [*secs, down], loopback.serial, loopback.digest)]
    decided: list[str] = []
    reports = wait_many(jobs, key, 1.5, 0.2, proofs=ContentProofs(),
                        on_report=lambda r: decided.append(f"{r.zone}:{r.ok}"))
    alone = [wait_until_transferred(j.zone, j.primaries, j.secondaries, j.expected_serial,
                                    j.expected_digest, key, 1.5, 0.2, proofs=ContentProofs())
             for j in jobs]
    assert [r.ok for r in reports] == [a.ok for a in alone] == [True, False, False, False]
    for got, want in zip(reports, alone, strict=True):
        assert got.zone == want.zone and got.target_serial == want.target_serial
        assert [(s.endpoint, s.ok, s.reason) for s in got.servers] == \
               [(s.endpoint, s.ok, s.reason) for s in want.servers], got.message
    assert reports[0].pulls == 3 and reports[0].elapsed_s < 1.0
    assert "CONTENT_MISMATCH" in reports[1].message
    assert "down" in reports[3].message and reports[3].lagging()[0].endpoint == down
    assert decided[0] == f"{ZONE}:True"  # told at once, before the failures' deadlines
