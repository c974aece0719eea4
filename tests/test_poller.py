"""The SOA poller (bind9_topology.dns.poller) against the sequential ``checks.query_soa``.

A small DNS server in a thread on 127.0.0.1 (UDP and TCP on one port) answers by the
zone's first label: a plain authoritative answer, one without AA, REFUSED, SERVFAIL,
no SOA, no answer at all, a truncated UDP answer (the full one over TCP), signed
answers. For every case, over UDP and over TCP (``tcp_only``), with and without a
key, all at once through the poller, each result equals the one ``query_soa`` gives
alone (everything but the elapsed time). Also: stray packets are ignored, and the
poller keeps at most ``max_tcp_in_flight`` connections to one server.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest

from bind9_topology.dns.checks import Endpoint, Reason, SoaProbe, make_tsig_key, query_soa
from bind9_topology.dns.poller import SoaPoller, SoaRequest
from bind9_topology.local.named_process import free_port

pytestmark = pytest.mark.unit

HOST = "127.0.0.1"
KEY = make_tsig_key("transfer-key", "hmac-sha256", base64.b64encode(bytes(range(32))).decode())
CASES = ["ok", "noaa", "refused", "servfail", "nosoa", "drop", "tc"]
TIMEOUT = 0.4


@dataclass
class FakeServer:
    """Answers SOA queries by the first label of the zone asked for (see module doc)."""

    port: int = field(default_factory=lambda: free_port(HOST))
    stop: threading.Event = field(default_factory=threading.Event)
    tcp_now: int = 0
    tcp_max: int = 0
    tcp_hold_s: float = 0.0  # keep each TCP answer back this long (to see concurrency)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, wire: bytes, *, tcp: bool) -> bytes | None:
        q = dns.message.from_wire(wire, keyring={KEY.name: KEY})
        case = q.question[0].name.labels[0].decode()
        if case == "drop":
            return None
        r = dns.message.make_response(q)
        if case == "tc" and not tcp:
            r.flags |= dns.flags.TC
            return r.to_wire()
        if case in ("refused", "servfail"):
            r.set_rcode(dns.rcode.REFUSED if case == "refused" else dns.rcode.SERVFAIL)
            return r.to_wire()
        if case != "noaa":
            r.flags |= dns.flags.AA
        if case != "nosoa":
            serial = 9 if case == "tc" else 7
            r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "SOA",
                                                f"ns. h. {serial} 1 1 1 1"))
        return r.to_wire()

    def serve_udp(self, sock: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                wire, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            out = self.answer(wire, tcp=False)
            if out is not None:
                if b"stray" in wire:  # first an answer with another id, then the real one
                    sock.sendto(bytes([out[0] ^ 0x5A]) + out[1:], peer)
                sock.sendto(out, peer)

    def serve_tcp_client(self, conn: socket.socket) -> None:
        """One connection: counted from its accept until its answer goes out (after
        that the client may open the next one before this thread ends)."""
        counted = True
        with self.lock:
            self.tcp_now += 1
            self.tcp_max = max(self.tcp_max, self.tcp_now)

        def uncount() -> None:
            nonlocal counted
            if counted:
                counted = False
                with self.lock:
                    self.tcp_now -= 1

        try:
            with conn:
                conn.settimeout(2)
                head = conn.recv(2)
                if len(head) < 2:
                    return
                (length,) = struct.unpack("!H", head)
                wire = b""
                while len(wire) < length:
                    wire += conn.recv(length - len(wire))
                time.sleep(self.tcp_hold_s)
                out = self.answer(wire, tcp=True)
                if out is None:
                    self.stop.wait(TIMEOUT * 3)
                    return
                uncount()
                conn.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            pass
        finally:
            uncount()

    def serve_tcp(self, sock: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self.serve_tcp_client, args=(conn,), daemon=True).start()


@contextlib.contextmanager
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    udp.bind((HOST, server.port))
    tcp.bind((HOST, server.port))
    tcp.listen(64)
    udp.settimeout(0.05)
    tcp.settimeout(0.05)
    threads = [threading.Thread(target=server.serve_udp, args=(udp,), daemon=True),
               threading.Thread(target=server.serve_tcp, args=(tcp,), daemon=True)]
    for t in threads:
        t.start()
    try:
        yield server
    finally:
        server.stop.set()
        for t in threads:
            t.join(timeout=5)
        udp.close()
        tcp.close()


def same(probe: SoaProbe) -> tuple[object, ...]:
    """Everything of a probe but its elapsed time."""
    return probe.endpoint, probe.zone, probe.reason, probe.serial, probe.detail


@pytest.fixture
def poller() -> Iterator[SoaPoller]:
    p = SoaPoller()
    try:
        yield p
    finally:
        p.close()


def test_each_answer_is_what_query_soa_gives(poller: SoaPoller) -> None:
    with fake_server() as server:
        requests = [
            SoaRequest(Endpoint(HOST, server.port, f"{case}-{tcp}", tcp_only=tcp),
                       f"{case}.example.", key)
            for case in CASES for tcp in (False, True) for key in (None, KEY)
        ]
        t0 = time.monotonic()
        together = poller.query(requests, timeout=TIMEOUT)
        took = time.monotonic() - t0
        alone = [query_soa(r.endpoint, r.zone, timeout=TIMEOUT, key=r.key) for r in requests]
    assert [same(p) for p in together] == [same(p) for p in alone]
    reasons = {r.endpoint.label: p.reason for r, p in zip(requests, together, strict=True)}
    assert reasons["ok-False"] is Reason.OK and reasons["ok-True"] is Reason.OK
    assert reasons["noaa-False"] is Reason.NOT_AUTHORITATIVE
    assert reasons["drop-False"] is Reason.TIMEOUT and reasons["drop-True"] is Reason.TIMEOUT
    assert {p.serial for r, p in zip(requests, together, strict=True)
            if r.endpoint.label.startswith("tc")} == {9}  # the TCP answer
    # all at once: the drops cost one timeout, not one each
    assert took < TIMEOUT * 2.5, took


def test_a_server_that_is_down_times_out_like_query_soa(poller: SoaPoller) -> None:
    down = Endpoint(HOST, free_port(HOST), "down")
    down_tcp = Endpoint(HOST, free_port(HOST), "down-tcp", tcp_only=True)
    together = poller.query([SoaRequest(down, "example.com"), SoaRequest(down_tcp, "example.com")],
                            timeout=TIMEOUT)
    alone = [query_soa(down, "example.com", timeout=TIMEOUT),
             query_soa(down_tcp, "example.com", timeout=TIMEOUT)]
    assert [same(p) for p in together] == [same(p) for p in alone]
    assert together[0].reason is Reason.TIMEOUT
    assert together[1].reason is Reason.CONNECTION_REFUSED


def test_stray_packets_are_ignored(poller: SoaPoller) -> None:
    """A packet that answers no query in flight (another id) changes nothing: the real
    answer still counts. (``dns.query.udp`` on its own socket fails on it instead.)"""
    with fake_server() as server:
        ep = Endpoint(HOST, server.port, "stray")
        results = poller.query([SoaRequest(ep, f"stray.n{i}.example.") for i in range(20)],
                               timeout=TIMEOUT)
        assert all(p.reason is Reason.OK and p.serial == 7 for p in results), results
        assert query_soa(ep, "stray.example.", timeout=TIMEOUT).reason is Reason.ERROR


def test_many_queries_share_one_socket_and_tcp_stays_bounded() -> None:
    poller = SoaPoller(max_tcp_in_flight=3)
    try:
        with fake_server() as server:
            server.tcp_hold_s = 0.02
            udp = [SoaRequest(Endpoint(HOST, server.port, "u"), f"ok.z{i}.example.")
                   for i in range(500)]
            tcp = [SoaRequest(Endpoint(HOST, server.port, "t", tcp_only=True),
                              f"ok.z{i}.example.") for i in range(30)]
            results = poller.query(udp + tcp, timeout=2.0)
            assert all(p.reason is Reason.OK and p.serial == 7 for p in results), {
                p.detail for p in results}
            assert 1 <= server.tcp_max <= 3, server.tcp_max
    finally:
        poller.close()


def test_batches_from_many_threads(poller: SoaPoller) -> None:
    with fake_server() as server:
        ep = Endpoint(HOST, server.port, "ok")
        out: dict[int, list[SoaProbe]] = {}

        def one(n: int) -> None:
            out[n] = poller.query([SoaRequest(ep, f"ok.t{n}.example.", KEY)] * 5, timeout=2.0)

        threads = [threading.Thread(target=one, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert sorted(out) == list(range(16))
        assert all(p.ok and p.zone == f"ok.t{n}.example." for n, ps in out.items() for p in ps)


def test_closed_poller_starts_again(poller: SoaPoller) -> None:
    with fake_server() as server:
        ep = Endpoint(HOST, server.port, "ok")
        assert poller.query([SoaRequest(ep, "ok.example.")], timeout=TIMEOUT)[0].ok
        poller.close()
        assert poller.query([SoaRequest(ep, "ok.example.")], timeout=TIMEOUT)[0].ok
    assert poller.query([], timeout=TIMEOUT) == []
