"""Kept DNS-over-TCP sessions (bind9_topology.dns.sessions), against a small server in a thread.

The server (127.0.0.1, TCP only) answers SOA queries by the zone's first label, as
tests/test_poller.py's does, and keeps each connection for the next query (RFC 7766)
unless told otherwise: close after each answer, hang up on the next query without an
answer, answer with another id, never answer. It counts the connections it accepted and
the most it held at once. Checked here: many questions over one connection; each probe
over a session equals the one ``query_soa`` gives over a connection of its own
(dnspython's ``dns.query.tcp``); a kept connection the server closed is replaced and the
question asked again, once, unseen; a fresh connection that fails is reported, not
retried; a timeout or an answer out of step drops the connection; the bound per server;
idle connections closed; ``close`` per server and in all (threads and sockets back to
where they were); the resolver and the port-forwarder close what they handed out.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import dns.tsig
import pytest

from bind9_topology.dns.checks import (
    Endpoint,
    Reason,
    SoaProbe,
    make_tsig_key,
    query_soa,
    soa_over,
)
from bind9_topology.dns.poller import SoaRequest, soa_probes
from bind9_topology.dns.sessions import Sessions, default_sessions

pytestmark = pytest.mark.unit

HOST = "127.0.0.1"
KEY = make_tsig_key("transfer-key", "hmac-sha256", base64.b64encode(bytes(range(32))).decode())
WRONG = make_tsig_key("transfer-key", "hmac-sha256", base64.b64encode(bytes(32)).decode())
CASES = ["ok", "noaa", "refused", "servfail", "nosoa"]


@dataclass
class KeptServer:
    """SOA answers over TCP, one connection carrying one query after another."""

    close_after_answer: bool = False  # close each connection after its answer
    hangup_next: int = 0  # hang up on this many next queries (read, then close unanswered)
    other_id: bool = False  # answer with another id
    silent: bool = False  # never answer
    hold_s: float = 0.0  # keep each answer back this long
    accepted: int = 0
    now: int = 0
    most: int = 0
    queries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    listener: socket.socket = field(default_factory=lambda: socket.create_server((HOST, 0)))

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def ep(self, label: str = "kept") -> Endpoint:
        return Endpoint(HOST, self.port, label, tcp_only=True)

    def answer(self, wire: bytes) -> bytes:
        try:
            q = dns.message.from_wire(wire, keyring={KEY.name: KEY})
        except dns.tsig.BadSignature:  # as named answers another secret: BADSIG, NOTAUTH
            q = dns.message.from_wire(wire, keyring=False)
            r = dns.message.make_response(q)
            r.set_rcode(dns.rcode.NOTAUTH)
            r.use_tsig({KEY.name: KEY}, KEY.name, tsig_error=dns.rcode.BADSIG)
            return r.to_wire()
        case = q.question[0].name.labels[0].decode()
        r = dns.message.make_response(q)
        if self.other_id:
            r.id = (q.id + 1) % 65536
        if case in ("refused", "servfail"):
            r.set_rcode(dns.rcode.REFUSED if case == "refused" else dns.rcode.SERVFAIL)
            return r.to_wire()
        if case != "noaa":
            r.flags |= dns.flags.AA
        if case != "nosoa":
            r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "SOA",
                                                "ns. h. 7 1 1 1 1"))
        return r.to_wire()

    def client(self, conn: socket.socket) -> None:
        with self.lock:
            self.accepted += 1
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            with conn:
                conn.settimeout(5)
                while not self.stop.is_set():
                    head = conn.recv(2)
                    if len(head) < 2:
                        return
                    (length,) = struct.unpack("!H", head)
                    wire = b""
                    while len(wire) < length:
                        chunk = conn.recv(length - len(wire))
                        if not chunk:
                            return
                        wire += chunk
                    with self.lock:
                        self.queries += 1
                        hangup = self.hangup_next > 0
                        if hangup:
                            self.hangup_next -= 1
                    if hangup:
                        return
                    if self.silent:
                        self.stop.wait(3)
                        return
                    time.sleep(self.hold_s)
                    out = self.answer(wire)
                    conn.sendall(struct.pack("!H", len(out)) + out)
                    if self.close_after_answer:
                        return
        except OSError:
            pass
        finally:
            with self.lock:
                self.now -= 1

    def serve(self) -> None:
        self.listener.settimeout(0.05)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self.client, args=(conn,), daemon=True).start()


@contextlib.contextmanager
def kept_server(**options: object) -> Iterator[KeptServer]:
    server = KeptServer(**options)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        thread.join(timeout=5)
        server.listener.close()


def same(probe: SoaProbe) -> tuple[object, ...]:
    return probe.endpoint, probe.zone, probe.reason, probe.serial, probe.detail


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ----------------------------------------------------------------------------- exchanges


def test_many_questions_go_over_one_connection_and_answer_as_query_soa() -> None:
    with kept_server() as server, Sessions() as sessions:
        ep = server.ep()
        for key in (None, KEY):
            for case in CASES:
                zone = f"{case}.example."
                alone = query_soa(ep, zone, key=key, timeout=2)  # a connection of its own
                kept = query_soa(ep, zone, key=key, timeout=2, sessions=sessions)
                assert same(kept) == same(alone)
        # 10 on their own, 10 over one kept connection
        assert server.accepted == 10 + 1, server.accepted
        assert sessions.stats() == {"opened": 1, "exchanges": 10, "stale": 0, "reconnected": 0}
        assert sessions.open_connections() == 1


def test_a_wrong_key_is_named_as_without_sessions() -> None:
    with kept_server() as server, Sessions() as sessions:
        ep = server.ep()
        alone = query_soa(ep, "ok.example.", key=WRONG, timeout=2)
        kept = query_soa(ep, "ok.example.", key=WRONG, timeout=2, sessions=sessions)
        assert kept.reason is Reason.TSIG_BADSIG and same(kept) == same(alone)
        # the answer was read whole: the connection carries the next question
        assert query_soa(ep, "ok.example.", key=KEY, timeout=2, sessions=sessions).ok
        assert sessions.count("opened") == 1


def test_a_kept_connection_the_server_closed_is_replaced_unseen() -> None:
    with kept_server(close_after_answer=True) as server, Sessions() as sessions:
        ep = server.ep()
        for _ in range(3):
            assert query_soa(ep, "ok.example.", timeout=2, sessions=sessions).ok
        # each was closed while kept: found closed before use, a new one opened
        assert sessions.count("opened") == 3 and sessions.count("stale") >= 1


def test_a_kept_connection_that_hangs_up_on_the_question_is_asked_again_once() -> None:
    with kept_server() as server, Sessions() as sessions:
        ep = server.ep()
        assert query_soa(ep, "ok.example.", timeout=2, sessions=sessions).ok
        server.hangup_next = 1  # reads the next question, closes without an answer
        probe = query_soa(ep, "ok.example.", timeout=2, sessions=sessions)
        assert probe.ok, probe
        assert sessions.count("reconnected") == 1 and server.accepted == 2
        # twice in a row: the second hang-up is on a new connection, and is reported
        server.hangup_next = 2
        probe = query_soa(ep, "ok.example.", timeout=2, sessions=sessions)
        alone_server_says = "EOFError: EOF"
        assert probe.reason is Reason.ERROR and probe.detail == alone_server_says, probe
        assert sessions.count("reconnected") == 2 and server.accepted == 3


def test_a_fresh_connection_that_fails_is_reported_not_retried() -> None:
    with kept_server(hangup_next=1) as server, Sessions() as sessions:
        ep = server.ep()
        port = server.port
        probe = query_soa(ep, "ok.example.", timeout=2, sessions=sessions)
        server.hangup_next = 1
        alone = query_soa(ep, "ok.example.", timeout=2)
        assert same(probe) == same(alone) and probe.reason is Reason.ERROR
        assert sessions.count("reconnected") == 0 and sessions.count("opened") == 1
        assert sessions.open_connections() == 0
    with Sessions() as sessions:  # nobody listens on that port now
        ep = Endpoint(HOST, port, "down", tcp_only=True)
        probe = query_soa(ep, "ok.example.", timeout=1, sessions=sessions)
        assert same(probe) == same(query_soa(ep, "ok.example.", timeout=1))
        assert probe.reason is Reason.CONNECTION_REFUSED


def test_a_timeout_or_an_answer_out_of_step_drops_the_connection() -> None:
    with kept_server(silent=True) as server, Sessions() as sessions:
        ep = server.ep()
        probe = query_soa(ep, "ok.example.", timeout=0.3, sessions=sessions)
        assert probe.reason is Reason.TIMEOUT
        assert sessions.open_connections() == 0  # its answer may still come: never reused
    with kept_server(other_id=True) as server, Sessions() as sessions:
        ep = server.ep()
        probe = query_soa(ep, "ok.example.", timeout=2, sessions=sessions)
        assert same(probe) == same(query_soa(ep, "ok.example.", timeout=2))
        assert probe.reason is Reason.ERROR and "BadResponse" in probe.detail
        assert sessions.open_connections() == 0


def test_an_idle_connection_is_not_used_past_max_idle() -> None:
    now = [100.0]
    with kept_server() as server, Sessions(max_idle_s=10.0, clock=lambda: now[0]) as sessions:
        ep = server.ep()
        assert query_soa(ep, "ok.example.", timeout=2, sessions=sessions).ok
        now[0] += 5
        assert query_soa(ep, "ok.example.", timeout=2, sessions=sessions).ok
        assert sessions.count("opened") == 1
        now[0] += 11
        assert query_soa(ep, "ok.example.", timeout=2, sessions=sessions).ok
        assert sessions.count("opened") == 2 and sessions.count("stale") == 1


# ----------------------------------------------------------------------------- the pool


def test_at_most_per_server_sessions_and_each_held_by_one() -> None:
    with Sessions(per_server=2) as sessions:
        a, b = Endpoint(HOST, 1, "a"), Endpoint(HOST, 2, "b")
        one = sessions.take(a, blocking=False)
        two = sessions.take(a, blocking=False)
        assert one is not None and two is not None and one is not two
        assert sessions.take(a, blocking=False) is None  # both held
        assert sessions.take(a, timeout=0.05) is None
        other = sessions.take(b, blocking=False)  # another server has its own
        assert other is not None
        sessions.give(one)
        assert sessions.take(a, blocking=False) is one  # the same session again
        for s in (one, two, other):
            sessions.give(s)


def test_close_per_server_closes_idle_now_and_held_ones_when_given_back() -> None:
    with Sessions() as sessions:
        a, b = Endpoint(HOST, 1, "a"), Endpoint(HOST, 2, "b")
        pairs = [socket.socketpair() for _ in range(3)]
        idle_a, held_a, idle_b = (sessions.take(e) for e in (a, a, b))
        assert idle_a is not None and held_a is not None and idle_b is not None
        for session, (mine, _) in zip((idle_a, held_a, idle_b), pairs, strict=True):
            session.attach(mine)
            session.done()
        sessions.give(idle_a)
        sessions.give(idle_b)
        assert sessions.open_connections() == 2
        sessions.close([a])
        assert pairs[0][0].fileno() == -1 and pairs[2][0].fileno() != -1
        assert pairs[1][0].fileno() != -1  # in use: its holder's until given back
        sessions.give(held_a)
        assert pairs[1][0].fileno() == -1
        again = sessions.take(a)  # usable after close: a new session, no connection
        assert again is not None and again.sock is None
        sessions.give(again)
        for _, peer in pairs:
            peer.close()


def test_lanes_keep_the_order_bound_each_server_and_run_servers_side_by_side() -> None:
    with kept_server(hold_s=0.05) as one, kept_server(hold_s=0.05) as two, \
            Sessions(per_server=2) as sessions:
        requests = [SoaRequest(server.ep(f"s{n}"), f"ok.z{i}.example.", KEY)
                    for i in range(12) for n, server in enumerate((one, two))]
        started = time.monotonic()
        probes = soa_probes(requests, timeout=2, sessions=sessions)
        took = time.monotonic() - started
        assert [p.zone for p in probes] == [r.zone for r in requests]
        assert [p.endpoint for p in probes] == [r.endpoint for r in requests]
        assert all(p.ok and p.serial == 7 for p in probes), probes
        assert one.most <= 2 and two.most <= 2 and one.accepted == two.accepted == 2
        # 12 answers of 50 ms per server over 2 connections, both servers at once
        assert took < 12 * 0.05, took


def test_soa_probes_ask_the_rest_through_the_poller() -> None:
    with kept_server() as server, Sessions() as sessions:
        down = Endpoint(HOST, 9, "udp, nobody there")
        probes = soa_probes([SoaRequest(server.ep(), "ok.example."),
                             SoaRequest(down, "ok.example.")], timeout=0.5, sessions=sessions)
        assert probes[0].ok and probes[1].endpoint == down and not probes[1].ok
        assert sessions.count("opened") == 1  # the UDP one never touched a session


def test_without_keeping_every_exchange_has_its_own_connection() -> None:
    with kept_server() as server, Sessions(keep=False) as sessions:
        for _ in range(3):
            assert query_soa(server.ep(), "ok.example.", timeout=2, sessions=sessions).ok
        assert server.accepted == 3 and sessions.open_connections() == 0


def test_a_held_session_answers_one_question_after_another() -> None:
    with kept_server() as server, Sessions() as sessions:
        ep = server.ep()
        with sessions.session(ep) as session:
            probes = [soa_over(session, ep, f"ok.z{i}.example.", KEY, 2) for i in range(5)]
        assert all(p.ok for p in probes) and server.accepted == 1


def test_close_ends_the_lane_threads_and_sockets() -> None:
    with kept_server() as server:
        threads, fds = threading.active_count(), open_fds()
        sessions = Sessions()
        requests = [SoaRequest(server.ep(), f"ok.z{i}.example.") for i in range(8)]
        assert all(p.ok for p in soa_probes(requests, timeout=2, sessions=sessions))
        assert threading.active_count() > threads  # a lane ran in the registry's thread
        sessions.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (threading.active_count() > threads
                                               or open_fds() > fds):
            time.sleep(0.02)  # the server's threads see the close
        assert threading.active_count() == threads and open_fds() == fds


# ----------------------------------------------------------------------------- who closes


def test_the_resolver_closes_the_sessions_of_what_it_handed_out() -> None:
    from bind9_topology.kube.forward import endpoint_resolver

    with kept_server() as server:
        item = {"name": "kept", "host": HOST, "port": server.port}
        with endpoint_resolver([item]) as expand:
            (ep,) = expand([item])
            assert query_soa(Endpoint(ep.host, ep.port, tcp_only=True), "ok.example.",
                             sessions=default_sessions()).ok
            assert default_sessions().count("opened", ep) >= 1
            kept_before = default_sessions().open_connections()
            assert kept_before >= 1
        assert default_sessions().open_connections() == kept_before - 1


def test_the_port_forwarder_closes_sessions_to_its_listeners() -> None:
    from bind9_topology.kube.forward import PodForwarder
    from bind9_topology.kube.pods import PodTarget

    forwarder = PodForwarder(None, [PodTarget("dns", "p-1", "node", "primary", True)])
    port = next(iter(forwarder.listeners.values())).port
    session = default_sessions().take(Endpoint("127.0.0.1", port, tcp_only=True))
    assert session is not None
    mine, peer = socket.socketpair()
    session.attach(mine)
    session.done()
    default_sessions().give(session)
    try:
        forwarder.close()
        assert mine.fileno() == -1
    finally:
        peer.close()
