"""Many SOA queries in flight at once: one UDP socket per address family, one selector loop.

The transfer gate asks every secondary of every zone for its SOA, round after round; one
thread per query (and one socket per query, as ``dns.query.udp`` opens) costs more than
the query. :class:`SoaPoller` keeps one daemon thread that owns a UDP socket per
address family and a ``selectors`` loop: callers hand it a batch of
:class:`SoaRequest` and block until every answer (or timeout) is in, while other
threads' batches share the same socket. Messages are built and parsed by dnspython
(``checks.soa_query`` and ``checks.soa_answer``, the very functions of
:func:`checks.query_soa`), so each :class:`~bind9_topology.dns.checks.SoaProbe` is the
one ``query_soa`` gives for the same server: TCP when the answer is truncated or the
endpoint is ``tcp_only`` (a port-forward), the same :class:`Reason` and detail for
timeouts, refusals, TSIG errors, answers without AA. Only ``elapsed_s`` differs.

Answers are matched by (source address, message id) and must be answers to the
question asked (``Message.is_response``); anything else on the socket is ignored. Ids
are drawn at random among those not in flight to the same server. At most
``max_in_flight`` queries are on the wire per server (``max_tcp_in_flight`` over TCP),
so a burst never overflows a server's receive buffer or TCP listen queue (a dropped
datagram or SYN would cost a whole timeout).

:func:`soa_probes` is what the gate asks through: with *sessions*, the questions to
``tcp_only`` endpoints (port-forwards, where every new connection is costly) go over the
servers' kept connections (:mod:`bind9_topology.dns.sessions`), the rest through the
poller.

Pure standard library and dnspython; no state shared with callers but the result.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import heapq
import itertools
import os
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.query
import dns.tsig

from bind9_topology.dns import fastxfr
from bind9_topology.dns.checks import (
    Endpoint,
    Reason,
    SoaProbe,
    _exception_reason,
    _keyring,
    _zone_name,
    soa_answer,
    soa_over,
    soa_query,
)
from bind9_topology.dns.sessions import Sessions, default_sessions

__all__ = ["SoaPoller", "SoaRequest", "default_poller", "poll_soa", "soa_probes"]

MAX_IN_FLIGHT = 64  # per server
MAX_TCP_IN_FLIGHT = 4  # per server: named's TCP listen queue is short (10)
RECV_BUFFER = 4 * 1024 * 1024


@dataclass(frozen=True)
class SoaRequest:
    """One SOA question: *zone* at *endpoint*, signed with *key* when given."""

    endpoint: Endpoint
    zone: str | dns.name.Name
    key: dns.tsig.Key | None = None


class _Batch:
    def __init__(self, size: int) -> None:
        self.results: list[SoaProbe | None] = [None] * size
        self.left = size
        self.done = threading.Event()
        if size == 0:
            self.done.set()


class _Query:
    """One request in the loop: its message, where it is, when it gives up."""

    __slots__ = ("admitted", "batch", "buffer", "deadline", "dest", "family", "index", "mac",
                 "msg_id", "name", "query", "request", "sock", "started", "tcp", "timeout",
                 "tsig", "want", "wire", "zone_wire")

    def __init__(self, batch: _Batch, index: int, request: SoaRequest, timeout: float) -> None:
        self.batch = batch
        self.index = index
        self.request = request
        self.timeout = timeout
        zone = request.zone
        self.name = _zone_name(zone)
        self.family = dns.inet.af_for_address(request.endpoint.host)
        self.dest = (request.endpoint.host, request.endpoint.port)
        self.started = time.monotonic()
        self.deadline = float("inf")
        self.query: dns.message.Message | None = None  # dnspython's, when it built the wire
        self.tsig: fastxfr.Tsig | None = None  # the wire's TSIG, when fastxfr signed it
        self.mac = b""  # the query's MAC (signed by fastxfr)
        self.zone_wire = b""  # the zone's canonical wire form (fastxfr's reader)
        self.wire = b""
        self.msg_id = -1
        self.admitted: tuple[tuple[str, int], bool] | None = None  # the lane it counts in
        self.tcp = request.endpoint.tcp_only
        self.sock: socket.socket | None = None  # the TCP connection, when over TCP
        self.buffer = b""
        self.want = 0  # TCP: bytes still to send (negative: reading)


class SoaPoller:
    """A selector loop answering batches of SOA requests; thread-safe, started lazily."""

    def __init__(self, *, max_in_flight: int = MAX_IN_FLIGHT,
                 max_tcp_in_flight: int = MAX_TCP_IN_FLIGHT) -> None:
        self.max_in_flight = max_in_flight
        self.max_tcp_in_flight = max_tcp_in_flight
        self._lock = threading.Lock()
        self._incoming: collections.deque[_Query] = collections.deque()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._closing = False
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    # ------------------------------------------------------------------ callers

    def query(self, requests: Sequence[SoaRequest], *, timeout: float = 2.0) -> list[SoaProbe]:
        """The SOA of each request, in order, as :func:`checks.query_soa` would give it.

        *timeout* bounds each exchange (UDP, then TCP when truncated), as for
        ``query_soa``. Blocks until all are in.
        """
        batch = _Batch(len(requests))
        if not requests:
            return []
        queries = [_Query(batch, i, r, timeout) for i, r in enumerate(requests)]
        with self._lock:
            self._ensure_running()
            self._incoming.extend(queries)
        self._wake()
        # every query ends by its own deadline (queued ones later): wait as long as the
        # loop runs; one that died (a bug) ends its batches as timeouts on the way out
        while not batch.done.wait(1.0):
            thread = self._thread
            if thread is None or not thread.is_alive():  # pragma: no cover - the loop died
                if batch.done.wait(1.0):
                    break
                raise RuntimeError("the SOA poller stopped answering")
        return [r for r in batch.results if r is not None]

    def close(self) -> None:
        """Stop the loop (pending batches end as timeouts); the next query starts it again."""
        with self._lock:
            thread = self._thread
            self._closing = True
        if thread is not None:
            self._wake()
            thread.join(timeout=5)

    # ------------------------------------------------------------------ loop

    def _ensure_running(self) -> None:
        if self._pid != os.getpid():  # forked: the loop thread stayed in the parent
            self._pid = os.getpid()
            self._thread = None
        if self._thread is not None and self._thread.is_alive():
            return
        self._closing = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, args=(self._wake_r, self._wake_w),
                                        name="soa-poller", daemon=True)
        self._thread.start()

    def _wake(self) -> None:
        w = self._wake_w
        if w is not None:
            with contextlib.suppress(OSError):  # already woken (buffer full) or closing
                w.send(b"\0")

    def _run(self, wake: socket.socket, wake_w: socket.socket) -> None:
        loop = _Loop(self, wake, wake_w)
        try:
            loop.run()
        finally:
            loop.shutdown()


class _Loop:
    """The state of one running loop; touched by the loop thread only."""

    def __init__(self, poller: SoaPoller, wake: socket.socket, wake_w: socket.socket) -> None:
        self.poller = poller
        self.sel = selectors.DefaultSelector()
        self.wake = wake
        self.wake_w = wake_w
        self.sel.register(wake, selectors.EVENT_READ, None)
        self.udp: dict[int, socket.socket] = {}
        self.pending: dict[tuple[tuple[str, int], int], _Query] = {}  # (server, id) -> query
        # per (server, over TCP from the start): queries on the wire, and those waiting
        self.in_flight: collections.Counter[tuple[tuple[str, int], bool]] = collections.Counter()
        self.waiting: dict[tuple[tuple[str, int], bool], collections.deque[_Query]] = {}
        self.timers: list[tuple[float, int, _Query]] = []
        self.seq = itertools.count()

    def run(self) -> None:
        while True:
            with self.poller._lock:
                if self.poller._closing:
                    return
                incoming = list(self.poller._incoming)
                self.poller._incoming.clear()
            for q in incoming:
                self.admit(q)
            timeout = None
            while self.timers and self.timers[0][2].deadline != self.timers[0][0]:
                heapq.heappop(self.timers)  # stale: the query moved on or ended
            if self.timers:
                timeout = max(0.0, self.timers[0][0] - time.monotonic())
            for sel_key, events in self.sel.select(timeout):
                if sel_key.fileobj is self.wake:
                    try:
                        while self.wake.recv(4096):
                            pass
                    except (BlockingIOError, OSError):
                        pass
                elif sel_key.data is None:
                    self.read_udp(sel_key.fileobj)  # type: ignore[arg-type]
                else:
                    self.tcp_event(sel_key.data, events)
            self.expire()

    def shutdown(self) -> None:
        with self.poller._lock:
            left = list(self.poller._incoming)
            self.poller._incoming.clear()
        for q in left + list(self.pending.values()) + [t[2] for t in self.timers]:
            if q.batch.results[q.index] is None:
                self.finish(q, _timeout())
        for waiting in self.waiting.values():
            for q in waiting:
                self.finish(q, _timeout())
        for s in self.udp.values():
            s.close()
        self.sel.close()
        self.wake.close()
        self.wake_w.close()

    # ------------------------------------------------------------------ admission

    def admit(self, q: _Query) -> None:
        lane = (q.dest, q.tcp)
        limit = self.poller.max_tcp_in_flight if q.tcp else self.poller.max_in_flight
        if self.in_flight[lane] >= limit:
            self.waiting.setdefault(lane, collections.deque()).append(q)
            return
        self.in_flight[lane] += 1
        q.admitted = lane
        self.start(q)

    def release(self, lane: tuple[tuple[str, int], bool]) -> None:
        self.in_flight[lane] -= 1
        waiting = self.waiting.get(lane)
        if waiting:
            q = waiting.popleft()
            if not waiting:
                del self.waiting[lane]
            self.in_flight[lane] += 1
            q.admitted = lane
            self.start(q)
        elif self.in_flight[lane] <= 0:
            del self.in_flight[lane]

    def start(self, q: _Query) -> None:
        try:
            q.msg_id = self.free_id(q.dest)
            try:  # the bytes dnspython would send, stamped from a per-zone template
                q.wire, q.tsig = fastxfr.soa_query_wire(q.name, q.request.key, q.msg_id)
                q.mac = q.tsig.prior_mac if q.tsig is not None else b""
                q.zone_wire = fastxfr.zone_wire(q.name)
            except fastxfr.NotPlain:  # a TSIG algorithm fastxfr leaves to dnspython
                q.query = soa_query(q.name, q.request.key)
                q.query.id = q.msg_id
                q.wire = q.query.to_wire()
        except Exception as exc:
            self.finish(q, exc)
            return
        self.arm(q, time.monotonic() + q.timeout)
        if q.tcp:
            self.tcp_open(q)
            return
        self.pending[(q.dest, q.msg_id)] = q
        try:
            self.udp_socket(q.family).sendto(q.wire, q.dest)
        except BlockingIOError:
            pass  # the send buffer is full: the timeout names it, as a lost datagram
        except Exception as exc:
            self.finish(q, exc)

    def free_id(self, dest: tuple[str, int]) -> int:
        while True:
            msg_id = secrets.randbits(16)
            if (dest, msg_id) not in self.pending:
                return msg_id

    def arm(self, q: _Query, deadline: float) -> None:
        q.deadline = deadline
        heapq.heappush(self.timers, (deadline, next(self.seq), q))

    def udp_socket(self, family: int) -> socket.socket:
        s = self.udp.get(family)
        if s is None:
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.setblocking(False)
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            s.bind(("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))
            self.sel.register(s, selectors.EVENT_READ, None)
            self.udp[family] = s
        return s

    # ------------------------------------------------------------------ answers

    def read_udp(self, s: socket.socket) -> None:
        while True:
            try:
                wire, source = s.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error surfaced on the socket: not one query's
            if len(wire) < 2:
                continue
            (msg_id,) = struct.unpack_from("!H", wire)
            q = self.pending.get(((source[0], source[1]), msg_id))
            if q is None:
                continue  # late, spoofed or for nobody
            self.answer(q, wire, udp=True)

    def answer(self, q: _Query, wire: bytes, *, udp: bool) -> None:
        if q.query is None and q.tsig is not None and q.tsig.prior_mac != q.mac:
            q.tsig.prior_mac, q.tsig.first = q.mac, True  # a read that failed half-way
        if q.query is None:
            try:  # the plain answer, read in place (dnspython reads the rest below)
                serial, aa = fastxfr.read_soa_answer(wire, q.msg_id, q.zone_wire, q.tsig)
            except Exception:  # NotPlain (or a reader's bug): dnspython's verdict stands
                pass
            else:
                self.finish(q, (serial, aa))
                return
        query = self.dns_query(q)
        keyring = query.keyring if q.query is not None else (
            _keyring(q.request.key) if q.request.key is not None else None)
        try:
            r = dns.message.from_wire(wire, keyring=keyring, request_mac=q.mac or query.mac)
        except Exception as exc:
            if udp and not self.looks_like_answer(q, wire):
                return  # not an answer to this query (dnspython would read on)
            self.finish(q, exc)
            return
        if not query.is_response(r):
            if udp:
                return
            self.finish(q, _bad_response())
            return
        if udp and r.flags & dns.flags.TC:
            # truncated: ask again over TCP, with a fresh timeout as query_soa does
            self.pending.pop((q.dest, q.msg_id), None)
            q.tcp = True
            self.arm(q, time.monotonic() + q.timeout)
            self.tcp_open(q)
            return
        self.finish(q, r)

    @staticmethod
    def dns_query(q: _Query) -> dns.message.Message:
        """dnspython's message of the query sent (what an odd answer is judged against)."""
        if q.query is not None:
            return q.query
        query = soa_query(q.name, None)
        query.id = q.msg_id
        return query

    @classmethod
    def looks_like_answer(cls, q: _Query, wire: bytes) -> bool:
        try:
            return cls.dns_query(q).is_response(dns.message.from_wire(wire, question_only=True))
        except Exception:
            return False

    # ------------------------------------------------------------------ TCP

    def tcp_open(self, q: _Query) -> None:
        try:
            s = socket.socket(q.family, socket.SOCK_STREAM)
        except OSError as exc:
            self.finish(q, exc)
            return
        s.setblocking(False)
        q.sock = s
        q.buffer = struct.pack("!H", len(q.wire)) + q.wire
        q.want = len(q.buffer)
        err = s.connect_ex(q.dest)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            self.finish(q, OSError(err, os.strerror(err)))
            return
        self.sel.register(s, selectors.EVENT_WRITE, q)

    def tcp_event(self, q: _Query, events: int) -> None:
        s = q.sock
        assert s is not None
        try:
            if q.want > 0:  # connecting or sending
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                sent = s.send(q.buffer)
                q.buffer = q.buffer[sent:]
                q.want = len(q.buffer)
                if q.want == 0:
                    q.want = -1
                    self.sel.modify(s, selectors.EVENT_READ, q)
                return
            data = s.recv(65537)
            if not data:
                raise EOFError("EOF")
            q.buffer += data
            if len(q.buffer) >= 2:
                (length,) = struct.unpack_from("!H", q.buffer)
                if len(q.buffer) >= 2 + length:
                    self.answer(q, q.buffer[2:2 + length], udp=False)
        except (BlockingIOError, InterruptedError):
            return
        except Exception as exc:
            self.finish(q, exc)

    # ------------------------------------------------------------------ endings

    def expire(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            deadline, _, q = heapq.heappop(self.timers)
            if q.deadline == deadline and q.batch.results[q.index] is None:
                self.finish(q, _timeout())

    def finish(self, q: _Query,
               outcome: dns.message.Message | BaseException | tuple[int, bool]) -> None:
        if q.batch.results[q.index] is not None:
            return
        q.deadline = -1.0  # its timers are stale now
        if q.msg_id >= 0:
            self.pending.pop((q.dest, q.msg_id), None)
        if q.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(q.sock)
            q.sock.close()
            q.sock = None
        elapsed = round(time.monotonic() - q.started, 6)
        ep = q.request.endpoint
        if isinstance(outcome, tuple):  # fastxfr's read: soa_answer's verdict, the same words
            serial, aa = outcome
            probe = (SoaProbe(ep, q.name.to_text(), Reason.OK, serial, f"serial {serial}", elapsed)
                     if aa else
                     SoaProbe(ep, q.name.to_text(), Reason.NOT_AUTHORITATIVE, serial,
                              "answered without the AA bit (not loaded as authoritative)",
                              elapsed))
        elif isinstance(outcome, dns.message.Message):
            probe = soa_answer(ep, q.name, outcome, elapsed)
        else:
            reason, detail = _exception_reason(outcome)
            probe = SoaProbe(ep, q.name.to_text(), reason, None, detail, elapsed)
        if q.admitted is not None:
            lane, q.admitted = q.admitted, None
            self.release(lane)
        batch = q.batch
        batch.results[q.index] = probe
        batch.left -= 1
        if batch.left == 0:
            batch.done.set()


def _timeout() -> BaseException:
    return dns.exception.Timeout()  # type: ignore[no-untyped-call]


def _bad_response() -> BaseException:
    return dns.query.BadResponse()  # type: ignore[no-untyped-call]


_default: SoaPoller | None = None
_default_lock = threading.Lock()


def default_poller() -> SoaPoller:
    """The process's poller (one loop thread, started on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = SoaPoller()
        return _default


def poll_soa(requests: Sequence[SoaRequest], *, timeout: float = 2.0) -> list[SoaProbe]:
    """:func:`soa_probes` on the process's poller and sessions (those to a ``tcp_only``
    endpoint over its kept connections)."""
    return soa_probes(requests, timeout=timeout, sessions=default_sessions())


def soa_probes(requests: Sequence[SoaRequest], *, timeout: float = 2.0,
               poller: SoaPoller | None = None,
               sessions: Sessions | None = None) -> list[SoaProbe]:
    """The SOA of each request, in order, as :func:`checks.query_soa` gives it: through
    *poller* (default: the process's), except, with *sessions*, those to ``tcp_only``
    endpoints: each server's one after another over its kept connections
    (:meth:`Sessions.lanes`, servers side by side, while the poller asks the rest)."""
    poller = poller if poller is not None else default_poller()
    tcp = [i for i, r in enumerate(requests) if r.endpoint.tcp_only] if sessions else []
    if sessions is None or not tcp:
        return poller.query(requests, timeout=timeout)
    rest = [i for i, r in enumerate(requests) if not r.endpoint.tcp_only]
    out: list[SoaProbe | None] = [None] * len(requests)
    if rest:
        results: list[SoaProbe] = []
        thread = threading.Thread(
            target=lambda: results.extend(poller.query([requests[i] for i in rest],
                                                       timeout=timeout)),
            name="soa-probes", daemon=True)
        thread.start()
    over = sessions.lanes([requests[i] for i in tcp], lambda r: r.endpoint,
                          lambda s, r: soa_over(s, r.endpoint, r.zone, r.key, timeout))
    for i, probe in zip(tcp, over, strict=True):
        out[i] = probe
    if rest:
        thread.join()
        for i, probe in zip(rest, results, strict=True):
            out[i] = probe
    return [p for p in out if p is not None]
