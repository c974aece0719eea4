"""DNS over kept TCP connections: one small pool of sessions per server, reused by every probe.

On the cluster the transfer gate reaches each pod through a local listener whose every
TCP connection opens a new port-forward stream of the Kubernetes API
(:mod:`bind9_topology.kube.forward`, about 50-100 ms each). A gate that opens a
connection per SOA question and per zone transfer pays that thousands of times for a
1,000-zone stack. Here a :class:`Session` is one TCP connection to one server that
carries one exchange after another (RFC 7766 6.2.1: a client reuses its connection
for its next queries; RFC 5936 4.1: a connection may carry several zone transfers): SOA
questions (signed or not), TSIG AXFRs (read by :mod:`bind9_topology.dns.fastxfr`, or by
dnspython), IXFRs, DNSSEC lookups.

:class:`Sessions` keeps, per server (host, port), at most ``per_server`` sessions; taking
one holds one of the server's slots, so it is also the bound on what the gate asks of
one server at a time (named serves ``transfers-out``, 10, at once and answers SERVFAIL
past that; its TCP listen queue is short). A session goes back open after an exchange
read to its end (the answer whole, nothing left over) and is dropped after anything
else (a timeout, a half-read transfer, an answer to another query). A kept connection
is used again only while it idled less than ``max_idle_s`` (named closes idle TCP
connections after ``tcp-idle-timeout``, 30 s by default) and neither closed nor wrote
meanwhile; one that the server closed anyway (EOF or reset before any byte of the
answer) is replaced by a new connection and the query sent again, once. A fresh
connection that fails, or a transfer that fails after part of its answer came, is
never asked again here: the caller reports it as it always did.

Messages are dnspython's: a query is sent as ``to_wire()`` gives it, its answer parsed
by ``dns.message.from_wire`` with the query's keyring and MAC (TSIG verified) and
matched by ``Message.is_response`` (id, opcode, question), transfers read through
``dns.xfr.Inbound`` message by message as ``dns.query.inbound_xfr`` reads them. Only
the two-byte length framing of DNS over TCP (RFC 1035 4.2.2) is done here.

Thread-safe: the gate runs many zones at once in a thread pool; one session is used by
one thread at a time. :meth:`Sessions.lanes` runs a batch of exchanges over many servers
side by side (a few threads of the registry's, each draining one server's share over one
session). :meth:`Sessions.close` closes the connections (the gate closes those of its
run before the port-forward listeners close); the registry stays usable after it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import dns.exception
import dns.inet
import dns.message
import dns.query
import dns.rdatatype
import dns.transaction
import dns.xfr

from bind9_topology.dns.endpoint import Endpoint

__all__ = ["MAX_IDLE_S", "SESSIONS_PER_SERVER", "Session", "Sessions", "default_sessions",
           "server_of"]

#: sessions (TCP connections) per server: what one server is asked at a time
SESSIONS_PER_SERVER = 4
#: a kept connection idle longer than this is closed, not used (named: 30 s)
MAX_IDLE_S = 10.0
#: threads of a registry's lanes (the gate asks a few servers per zone, 16 zones at once)
LANE_THREADS = 32
#: how long a caller waits for one of a server's sessions (every holder is bounded by its
#: own timeouts; this only turns a bug into an error instead of a hang)
TAKE_TIMEOUT_S = 600.0

Server = tuple[str, int]
T = TypeVar("T")
R = TypeVar("R")


def server_of(endpoint: Endpoint) -> Server:
    return (endpoint.host, endpoint.port)


def _timeout() -> dns.exception.Timeout:
    return dns.exception.Timeout()  # type: ignore[no-untyped-call]


class _ClosedEarly(Exception):
    """The server closed the connection (EOF, reset) before any byte of the answer."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _remaining(expiration: float) -> float:
    left = expiration - time.monotonic()
    if left <= 0:
        raise _timeout()
    return left


def _send(sock: socket.socket, data: bytes, expiration: float) -> None:
    try:
        sock.settimeout(_remaining(expiration))
        sock.sendall(data)
    except TimeoutError:
        raise _timeout() from None
    except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
        raise _ClosedEarly(exc) from None


def _recv(sock: socket.socket, count: int, expiration: float) -> bytes:
    """Exactly *count* bytes (EOFError when the server closes before)."""
    data = bytearray()
    while len(data) < count:
        try:
            sock.settimeout(_remaining(expiration))
            chunk = sock.recv(count - len(data))
        except TimeoutError:
            raise _timeout() from None
        if not chunk:
            raise EOFError("EOF")
        data += chunk
    return bytes(data)


def _still_open(sock: socket.socket) -> bool:
    """An idle connection with nothing to read (the server neither closed nor wrote)."""
    try:
        sock.setblocking(False)
        sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False
    return False  # it reads: closed by the server (nothing) or something unasked for


class Session:
    """One TCP connection to one server, opened when first needed and kept between
    exchanges; held by one caller at a time (:meth:`Sessions.take` / :meth:`Sessions.give`).

    ``sock`` is the open connection (None: none yet, or dropped); ``exchanges`` counts
    the exchanges it carried to their end. Blocking exchanges: :meth:`query` and
    :meth:`xfr`. A selector loop (``fastxfr.transfer_many``) uses ``sock`` itself, with
    :meth:`kept`, :meth:`attach`, :meth:`done` and :meth:`drop`.
    """

    __slots__ = ("clean", "exchanges", "generation", "idle_since", "owner", "server", "sock")

    def __init__(self, owner: Sessions, server: Server, generation: int) -> None:
        self.owner = owner
        self.server = server
        self.generation = generation
        self.sock: socket.socket | None = None
        self.exchanges = 0
        self.idle_since = owner.clock()
        #: the last exchange ended with its answer read whole: the connection can go back
        self.clean = True

    # ------------------------------------------------------------------ the connection

    def kept(self) -> socket.socket | None:
        """The open connection when the server can still be asked over it (idle less than
        ``max_idle_s``, not closed or written to by the server meanwhile), else None (and
        a connection that cannot is closed)."""
        sock = self.sock
        if sock is None:
            return None
        if self.owner.clock() - self.idle_since > self.owner.max_idle_s or not _still_open(sock):
            self.drop()
            self.owner._count("stale", self.server)
            return None
        return sock

    def attach(self, sock: socket.socket) -> None:
        """*sock*, a new connection to the server, is this session's from now on."""
        self.drop()
        self.sock = sock
        self.exchanges = 0
        self.owner._count("opened", self.server)

    def connect(self, expiration: float) -> socket.socket:
        """A new connection to the server (blocking, bounded by *expiration*)."""
        host, port = self.server
        sock = socket.socket(dns.inet.af_for_address(host), socket.SOCK_STREAM)
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(_remaining(expiration))
            sock.connect((host, port))
        except TimeoutError:
            sock.close()
            raise _timeout() from None
        except BaseException:
            sock.close()
            raise
        self.attach(sock)
        return sock

    def done(self) -> None:
        """An exchange was read to its end: the connection may carry the next one."""
        self.exchanges += 1
        self.idle_since = self.owner.clock()
        self.clean = True
        self.owner._count("exchanges", self.server)
        if not self.owner.keep:
            self.drop()

    def drop(self) -> None:
        """Close the connection (the next exchange opens a new one)."""
        sock, self.sock = self.sock, None
        self.exchanges = 0
        if sock is not None:
            sock.close()

    # ------------------------------------------------------------------ exchanges

    def _ask(self, wire: bytes, expiration: float) -> bytes:
        """Send the query *wire* and read the first message of its answer, over the kept
        connection or a new one. A kept one that the server closed before any byte of the
        answer came is replaced and asked again, once; a new one is not."""
        self.clean = False
        frame = struct.pack("!H", len(wire)) + wire
        while True:
            sock = self.kept()
            reused = sock is not None
            if sock is None:
                sock = self.connect(expiration)
            try:
                _send(sock, frame, expiration)
                return self._frame(expiration, first=True)
            except _ClosedEarly as exc:
                self.drop()
                if not reused:
                    raise exc.cause from None
                self.owner._count("reconnected", self.server)

    def _frame(self, expiration: float, *, first: bool = False) -> bytes:
        """The next length-prefixed message of the answer."""
        sock = self.sock
        assert sock is not None
        try:
            head = _recv(sock, 1, expiration)
        except (EOFError, ConnectionResetError, ConnectionAbortedError) as exc:
            if first:
                raise _ClosedEarly(exc) from None
            raise
        head += _recv(sock, 1, expiration)
        (length,) = struct.unpack("!H", head)
        return _recv(sock, length, expiration)

    def query(self, q: dns.message.Message, timeout: float) -> dns.message.Message:
        """One query and its answer within *timeout*, as ``dns.query.tcp`` gives it: the
        answer matched to the query (``is_response``: id, opcode, question) and its TSIG
        verified with the query's key (``from_wire`` raises dnspython's TSIG errors)."""
        wire = self._ask(q.to_wire(), time.monotonic() + timeout)
        self.done()  # read whole: the connection can carry the next query
        r = dns.message.from_wire(wire, keyring=q.keyring, request_mac=q.mac)
        if not q.is_response(r):
            self.drop()  # an answer to something else: the connection is out of step
            raise dns.query.BadResponse
        return r

    def xfr(self, q: dns.message.Message, txn_manager: dns.transaction.TransactionManager, *,
            serial: int | None, timeout: float, lifetime: float | None,
            raise_on_serial_went_backwards: bool = True) -> Iterator[dns.message.Message]:
        """A zone transfer (the AXFR or IXFR query *q*) into *txn_manager*, message by
        message, as ``dns.query.inbound_xfr`` reads it: ``dns.xfr.Inbound`` checks the
        sequence, ``from_wire`` each TSIG (a TSIG context across the messages). *timeout*
        bounds each message, *lifetime* the whole transfer. The connection goes back
        only when the transfer was read to its end."""
        end = time.monotonic() + lifetime if lifetime is not None else float("inf")

        def expiration() -> float:
            return min(time.monotonic() + timeout, end)

        rdtype = q.question[0].rdtype
        is_ixfr = rdtype == dns.rdatatype.IXFR
        origin = txn_manager.from_wire_origin()
        wire = self._ask(q.to_wire(), expiration())
        with dns.xfr.Inbound(txn_manager, rdtype, serial, False,
                             raise_on_serial_went_backwards) as inbound:
            first = True
            tsig_ctx = None
            while True:
                r = dns.message.from_wire(wire, keyring=q.keyring, request_mac=q.mac, xfr=True,
                                          origin=origin, tsig_ctx=tsig_ctx, multi=True,
                                          one_rr_per_rrset=is_ixfr)
                if not q.is_response(r, xfr_continuation=not first):
                    raise dns.query.BadResponse
                first = False
                finished = inbound.process_message(r)
                yield r
                tsig_ctx = r.tsig_ctx
                if finished:
                    break
                wire = self._frame(expiration())
        self.done()


class _Server:
    """One server's slots and its sessions not in use."""

    __slots__ = ("free", "generation", "idle")

    def __init__(self, size: int) -> None:
        self.free = threading.BoundedSemaphore(size)
        self.idle: list[Session] = []
        self.generation = 0  # moved by close(): sessions of an older one are not kept


class Sessions:
    """Per server, at most *per_server* sessions (TCP connections), kept between exchanges.

    *keep* False: every exchange gets a new connection, closed after it (what the gate
    did before sessions; for comparison). ``stats()``: connections opened, exchanges
    carried, kept connections found closed before use (``stale``) or when asked
    (``reconnected``), in all and per server.
    """

    def __init__(self, per_server: int = SESSIONS_PER_SERVER, *, max_idle_s: float = MAX_IDLE_S,
                 keep: bool = True, threads: int = LANE_THREADS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_server < 1:
            raise ValueError("per_server must be at least 1")
        self.per_server = per_server
        self.max_idle_s = max_idle_s
        self.keep = keep
        self.threads = threads
        self.clock = clock
        self._lock = threading.Lock()
        self._servers: dict[Server, _Server] = {}
        self._counts: dict[str, dict[Server, int]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pid = os.getpid()
        self._swept = clock()

    # ------------------------------------------------------------------ taking and giving

    def _server(self, server: Server) -> _Server:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's connections are the parent's
                self._servers, self._pool, self._pid = {}, None, os.getpid()
            entry = self._servers.get(server)
            if entry is None:
                entry = self._servers[server] = _Server(self.per_server)
            return entry

    def take(self, endpoint: Endpoint, *, blocking: bool = True,
             timeout: float | None = None) -> Session | None:
        """One of *endpoint*'s sessions, holding one of its slots until :meth:`give`; None
        when none is free (*blocking* False) or none came free within *timeout*."""
        server = server_of(endpoint)
        entry = self._server(server)
        got = entry.free.acquire(timeout=timeout) if blocking else entry.free.acquire(False)
        if not got:
            return None
        with self._lock:
            if entry.idle:
                return entry.idle.pop()
            return Session(self, server, entry.generation)

    def give(self, session: Session) -> None:
        """*session* back, its connection kept when its last exchange ended cleanly."""
        now = self.clock()
        with self._lock:
            entry = self._servers.get(session.server)
            current = entry is not None and session.generation == entry.generation \
                and self._pid == os.getpid()
            if not (current and self.keep and session.clean):
                session.drop()
            session.clean = True
            if entry is not None and current:
                if session.sock is not None:
                    session.idle_since = now
                entry.idle.append(session)
            if now - self._swept >= 1.0:
                self._sweep(now)
        if entry is not None:
            entry.free.release()

    def _sweep(self, now: float) -> None:
        """Close what idled too long, whichever server it goes to (under the lock)."""
        self._swept = now
        for entry in self._servers.values():
            for session in entry.idle:
                if session.sock is not None and now - session.idle_since > self.max_idle_s:
                    session.drop()

    @contextlib.contextmanager
    def session(self, endpoint: Endpoint, *,
                timeout: float | None = TAKE_TIMEOUT_S) -> Iterator[Session]:
        """One of *endpoint*'s sessions for the block (blocking until one is free)."""
        session = self.take(endpoint, timeout=timeout)
        if session is None:
            raise _timeout()
        try:
            yield session
        finally:
            self.give(session)

    # ------------------------------------------------------------------ batches

    def lanes(self, items: Sequence[T], endpoint_of: Callable[[T], Endpoint],
              fn: Callable[[Session, T], R]) -> list[R]:
        """``fn(session, item)`` for every item, in order of *items*: one server's items one
        after another over at most ``per_server`` of its sessions, servers side by side
        (the first lane in this thread, the others in the registry's threads)."""
        if not items:
            return []
        shares: dict[Server, tuple[Endpoint, list[int], threading.Lock]] = {}
        for i, item in enumerate(items):
            ep = endpoint_of(item)
            share = shares.setdefault(server_of(ep), (ep, [], threading.Lock()))
            share[1].append(i)
        results: dict[int, R] = {}

        def lane(ep: Endpoint, todo: list[int], lock: threading.Lock) -> None:
            with self.session(ep) as session:
                while True:
                    with lock:
                        if not todo:
                            return
                        i = todo.pop()
                    results[i] = fn(session, items[i])

        runs: list[tuple[Endpoint, list[int], threading.Lock]] = []
        for ep, todo, lock in shares.values():
            todo.reverse()  # popped from the end: asked in the order given
            runs += [(ep, todo, lock)] * min(len(todo), self.per_server)
        futures: list[Future[None]] = []
        if len(runs) > 1:
            pool = self._executor()
            futures = [pool.submit(lane, *run) for run in runs[1:]]
        try:
            lane(*runs[0])
        finally:
            for future in futures:
                future.result()
        return [results[i] for i in range(len(items))]

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(max_workers=self.threads,
                                                thread_name_prefix="dns-session")
                self._pid = os.getpid()
            return self._pool

    # ------------------------------------------------------------------ the end

    def close(self, servers: Iterable[Server | Endpoint] | None = None) -> None:
        """Close the connections to *servers* (default: every server, and the lanes'
        threads). Sessions in use are closed when given back; the registry stays usable
        (the next exchange opens a new connection)."""
        chosen = None if servers is None else {
            server_of(s) if isinstance(s, Endpoint) else s for s in servers}
        with self._lock:
            for server, entry in self._servers.items():
                if chosen is not None and server not in chosen:
                    continue
                entry.generation += 1
                for session in entry.idle:
                    session.drop()
                entry.idle.clear()
            pool = self._pool if servers is None else None
            if pool is not None:
                self._pool = None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> Sessions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ counters

    def _count(self, what: str, server: Server) -> None:
        with self._lock:
            per = self._counts.setdefault(what, {})
            per[server] = per.get(server, 0) + 1

    def count(self, what: str, endpoint: Endpoint | Server | None = None) -> int:
        """How many times *what* happened ("opened", "exchanges", "stale", "reconnected"),
        in all or for one server."""
        with self._lock:
            per = self._counts.get(what, {})
            if endpoint is None:
                return sum(per.values())
            server = server_of(endpoint) if isinstance(endpoint, Endpoint) else endpoint
            return per.get(server, 0)

    def stats(self) -> dict[str, int]:
        return {what: self.count(what) for what in ("opened", "exchanges", "stale",
                                                     "reconnected")}

    def open_connections(self) -> int:
        """Connections open now (idle ones; in-use ones are the holders')."""
        with self._lock:
            return sum(1 for entry in self._servers.values() for s in entry.idle
                       if s.sock is not None)


_default: Sessions | None = None
_default_lock = threading.Lock()


def default_sessions() -> Sessions:
    """The process's sessions (the gate's, the provider's checks'): closed per server by
    whoever handed out the endpoints (``kube.forward.endpoint_resolver`` at its end)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Sessions()
        return _default
