"""The gate over kept sessions against REAL named on 127.0.0.1, through a counting TCP proxy.

One primary and one secondary ``named`` serve 50 zones (rendered by the product's own
path, the secondary seeded with the primary's zone files so it serves them at start).
Each is reached through a small proxy in this process (:class:`CountingProxy`: accepts on
127.0.0.1, counts the connections it accepted, forwards to named), as the gate reaches a
pod through a port-forward listener (``Endpoint.tcp_only``: every question over TCP,
every new connection a new stream of the API). Checked:

* the gate verifying 50 zones (SOA, TSIG AXFR digest) opens a handful of connections to
  each proxy, where one connection per question opens one per exchange; the verdicts
  equal the gate's over the real addresses (UDP questions, transfers on connections of
  their own), and every digest equals dnspython's (``checks.axfr``, its own connection)
  and the rendered zone's;
* a server that closes its connections between questions (the proxy drops them all, or
  hangs up on the next question) is reconnected without a trace in the verdict; a
  transfer cut after part of its answer is reported as it always was, never re-asked;
* a wrong key fails with the reason it always failed with;
* after the sessions close, the threads and open descriptors are what they were.
"""

from __future__ import annotations

import base64
import contextlib
import os
import queue
import selectors
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from bind9_topology.config.topology import load_topology
from bind9_topology.dns import gate
from bind9_topology.dns.checks import (
    Endpoint,
    Reason,
    axfr,
    axfr_probe,
    axfr_probes,
    ixfr,
    make_tsig_key,
)
from bind9_topology.dns.gate import GateReport, wait_until_transferred
from bind9_topology.dns.proofs import ContentProofs
from bind9_topology.dns.sessions import SESSIONS_PER_SERVER, Sessions
from bind9_topology.local.named_process import NamedProcess, free_port
from bind9_topology.render.bind_files import ZONE_DIR, Placement, render_instance, write_tree

pytestmark = [pytest.mark.bind]

HOST = "127.0.0.1"
ZONES = 50
SERIAL = 2024060100
IPS = {"primary": "10.0.1.10", "sec-a": "10.0.1.20"}


class CountingProxy:
    """127.0.0.1:<port> -> *upstream*, one selector loop in a thread.

    ``accepted`` counts the connections it accepted. :meth:`drop_all` closes every
    connection (both ends); :meth:`hangup_next` makes every open connection close on
    the client's next bytes, unanswered; :meth:`cut_answers` passes only the first *n*
    bytes of each connection's next answer, then closes it (None: whole answers again).
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server((HOST, 0))
        self.listener.setblocking(False)
        self.port = int(self.listener.getsockname()[1])
        self.accepted = 0
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.peer: dict[socket.socket, socket.socket] = {}
        self.clients: set[socket.socket] = set()
        self.hangup: set[socket.socket] = set()
        self.cut: int | None = None
        self.calls: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = (
            queue.SimpleQueue())
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="counting-proxy", daemon=True)
        self.thread.start()

    def ep(self, label: str) -> Endpoint:
        return Endpoint(HOST, self.port, label, tcp_only=True)

    def call(self, fn: Callable[[], None]) -> None:
        """*fn* in the loop's thread, between two of its rounds."""
        done = threading.Event()
        self.calls.put((fn, done))
        assert done.wait(5)

    def drop_all(self) -> None:
        self.call(lambda: [self.close_pair(c) for c in list(self.clients)] and None)

    def hangup_next(self) -> None:
        self.call(lambda: self.hangup.update(self.clients))

    def cut_answers(self, n: int | None) -> None:
        self.call(lambda: setattr(self, "cut", n))

    def open_pairs(self) -> int:
        return len(self.clients)

    def run(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.sel.select(0.02):
                if key.fileobj is self.listener:
                    self.accept()
                else:
                    self.relay(key.fileobj)  # type: ignore[arg-type]
            while not self.calls.empty():
                fn, done = self.calls.get()
                fn()
                done.set()
        for client in list(self.clients):
            self.close_pair(client)
        self.sel.close()
        self.listener.close()

    def accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        self.accepted += 1
        conn.setblocking(True)
        up = socket.create_connection(self.upstream, timeout=5)
        up.settimeout(None)
        self.peer[conn], self.peer[up] = up, conn
        self.clients.add(conn)
        self.sel.register(conn, selectors.EVENT_READ, None)
        self.sel.register(up, selectors.EVENT_READ, None)

    def relay(self, sock: socket.socket) -> None:
        other = self.peer.get(sock)
        if other is None:
            return
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data or sock in self.hangup:
            self.close_pair(sock)
            return
        try:
            if sock not in self.clients and self.cut is not None:
                other.sendall(data[:self.cut])
                self.close_pair(sock)
                return
            other.sendall(data)
        except OSError:
            self.close_pair(sock)

    def close_pair(self, sock: socket.socket) -> None:
        other = self.peer.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self.peer.pop(s, None)
            self.clients.discard(s)
            self.hangup.discard(s)
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(s)
            s.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


@dataclass
class Fleet:
    """The running servers, their proxies, the key and what each zone must serve."""

    ports: dict[str, int]
    proxies: dict[str, CountingProxy]
    zones: list[str]
    digests: dict[str, str]
    secret: str

    @property
    def key(self) -> Any:
        return make_tsig_key("transfer-key", "hmac-sha256", self.secret)

    def direct(self) -> tuple[list[Endpoint], list[Endpoint]]:
        return ([Endpoint(HOST, self.ports["primary"], "primary")],
                [Endpoint(HOST, self.ports["sec-a"], "sec-a")])

    def proxied(self) -> tuple[list[Endpoint], list[Endpoint]]:
        return [self.proxies["primary"].ep("primary")], [self.proxies["sec-a"].ep("sec-a")]

    def accepted(self) -> dict[str, int]:
        return {name: p.accepted for name, p in self.proxies.items()}


def raw_config() -> dict[str, Any]:
    def zone(n: int) -> dict[str, Any]:
        return {
            "zoneName": f"z{n:03d}.sessions.test", "type": "primary",
            "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
            "soaRecord": {"primaryNs": "ns1.sessions.test.",
                          "adminEmail": "hostmaster@sessions.test"},
            "alsoNotify": [IPS["sec-a"]],
            "records": [{"name": "@", "type": "NS", "data": "ns1.sessions.test."}] + [
                {"name": f"h{i}", "type": "A", "data": f"10.{n}.0.{i}"} for i in range(8)],
        }

    return {
        "region": "sessions",
        "instances": [
            {"name": "primary", "role": "primary",
             "service": {"type": "LoadBalancer", "loadBalancerIP": IPS["primary"]}},
            {"name": "sec-a", "role": "secondary",
             "service": {"type": "LoadBalancer", "loadBalancerIP": IPS["sec-a"]}},
        ],
        "zones": [zone(n) for n in range(ZONES)] + [
            {"zoneName": f"z{n:03d}.sessions.test", "type": "secondary",
             "instanceSelector": {"matchLabels": {"dns-role": "secondary"}},
             "secondaryConfig": {"primaryServers": [IPS["primary"]]}} for n in range(ZONES)],
    }


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("sessions")
    secret = base64.b64encode(os.urandom(32)).decode()
    ports = {n: free_port(HOST) for n in IPS}
    amap = {(IPS[n], 53): (HOST, ports[n]) for n in IPS}
    topo = load_topology(raw_config(), stack="sessions", project_dir=root, tsig_secret=secret)
    for inst in topo.spec.instances:
        placement = Placement(root=str(root / inst.name), port=ports[inst.name], listen_v4=HOST,
                              listen_v6="none", notify_delay=0, address_map=amap)
        rendered = render_instance(topo.spec, inst, topo.contents,
                                   dict.fromkeys(topo.contents, SERIAL), placement, secret)
        write_tree(rendered, root / inst.name, include_secrets=True)
    shutil.copytree(root / "primary" / ZONE_DIR, root / "sec-a" / ZONE_DIR, dirs_exist_ok=True)
    zones = sorted(topo.contents)
    procs: dict[str, NamedProcess] = {}
    proxies: dict[str, CountingProxy] = {}
    try:
        for name in IPS:
            d = root / name
            procs[name] = NamedProcess(name=name)
            procs[name].start(d / "etc/bind/named.conf", d, d / "named.log")
        for name in IPS:
            procs[name].wait_ready((HOST, ports[name]), zones[-1:], 60)
            proxies[name] = CountingProxy((HOST, ports[name]))
        yield Fleet(ports, proxies, zones, {z: topo.contents[z].digest for z in zones}, secret)
    finally:
        for proxy in proxies.values():
            proxy.close()
        for proc in procs.values():
            proc.stop(timeout=5)


def gate_all(fleet: Fleet, endpoints: tuple[list[Endpoint], list[Endpoint]],
             sessions: Sessions, *, key: Any = None, zones: list[str] | None = None,
             deadline: float = 20.0) -> dict[str, GateReport]:
    """Every zone gated at once (MAX_WORKERS at a time, as the provider does)."""
    prims, secs = endpoints
    chosen = zones or fleet.zones

    def one(zone: str) -> GateReport:
        return wait_until_transferred(zone, prims, secs, SERIAL, fleet.digests[zone],
                                      key or fleet.key, deadline, 0.2, proofs=ContentProofs(),
                                      sessions=sessions)

    with ThreadPoolExecutor(max_workers=gate.MAX_WORKERS) as pool:
        return dict(zip(chosen, pool.map(one, chosen), strict=True))


def verdict(report: GateReport) -> tuple[object, ...]:
    """What a report says, without times and attempts."""
    return (report.ok, report.target_serial, tuple(
        (s.endpoint.label, s.role, s.ok, s.serial, s.reason) for s in report.servers))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settle(until: Callable[[], bool], seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while not until() and time.monotonic() < end:
        time.sleep(0.02)
    return until()


def test_the_gate_opens_a_handful_of_connections_with_the_verdicts_of_the_direct_gate(
        fleet: Fleet) -> None:
    with Sessions() as direct_sessions:
        direct = gate_all(fleet, fleet.direct(), direct_sessions)
    assert all(r.ok for r in direct.values()), [r.message for r in direct.values() if not r.ok]

    before = fleet.accepted()
    with Sessions() as sessions:
        kept = gate_all(fleet, fleet.proxied(), sessions)
        exchanges = sessions.count("exchanges")
    opened = {n: fleet.accepted()[n] - before[n] for n in before}
    assert {z: verdict(r) for z, r in kept.items()} == {z: verdict(r) for z, r in direct.items()}
    # per zone: the primary's SOA and TSIG AXFR, the secondary's AXFR (a small zone: no SOA)
    assert exchanges >= 3 * ZONES
    assert all(1 <= n <= 2 * SESSIONS_PER_SERVER for n in opened.values()), opened
    assert sum(r.pulls for r in kept.values()) == 2 * ZONES

    # one connection per question (the gate before sessions): one per exchange
    before = fleet.accepted()
    with Sessions(keep=False) as each:
        fresh = gate_all(fleet, fleet.proxied(), each)
        exchanges = each.count("exchanges")
    opened = {n: fleet.accepted()[n] - before[n] for n in before}
    assert {z: verdict(r) for z, r in fresh.items()} == {z: verdict(r) for z, r in direct.items()}
    assert sum(opened.values()) == each.count("opened") >= exchanges >= 3 * ZONES, opened


def test_every_digest_equals_dnspythons_and_the_rendered_one(fleet: Fleet) -> None:
    key = fleet.key
    prims, secs = fleet.proxied()
    direct = [*fleet.direct()[0], *fleet.direct()[1]]
    before = fleet.accepted()
    with Sessions() as sessions:
        for zone in fleet.zones:
            pulled = axfr_probes([*prims, *secs], zone, key=key, timeout=2, sessions=sessions)
            for probe, ep in zip(pulled, direct, strict=True):
                oracle, zobj = axfr(ep, zone, key=key)  # dnspython, its own connection
                assert zobj is not None and oracle.ok and probe.ok, (probe, oracle)
                assert (probe.serial, probe.digest, probe.records) == (
                    oracle.serial, oracle.digest, oracle.records) == (
                    SERIAL, fleet.digests[zone], oracle.records)
        # dnspython's own transfer and an IXFR over the same kept connections
        for zone in fleet.zones[:5]:
            for ep, real in zip([*prims, *secs], direct, strict=True):
                over = axfr(ep, zone, key=key, sessions=sessions)[0]
                alone = axfr(real, zone, key=key)[0]
                assert (over.reason, over.serial, over.digest, over.records) == (
                    alone.reason, alone.serial, alone.digest, alone.records)
                inc = ixfr(ep, zone, since_serial=SERIAL, key=key, sessions=sessions)
                inc_alone = ixfr(real, zone, since_serial=SERIAL, key=key)
                assert (inc.reason, inc.kind, inc.serial, inc.records, inc.detail) == (
                    inc_alone.reason, inc_alone.kind, inc_alone.serial, inc_alone.records,
                    inc_alone.detail)
    opened = {n: fleet.accepted()[n] - before[n] for n in before}
    assert all(1 <= n <= SESSIONS_PER_SERVER for n in opened.values()), opened


def test_a_server_that_closes_its_connections_is_reconnected_unseen(fleet: Fleet) -> None:
    zones = fleet.zones[:10]
    with Sessions() as sessions:
        first = gate_all(fleet, fleet.proxied(), sessions, zones=zones)
        assert all(r.ok for r in first.values())
        assert sessions.open_connections() >= 2

        fleet.proxies["primary"].drop_all()  # closed while kept: seen before the next use
        fleet.proxies["sec-a"].drop_all()
        assert settle(lambda: fleet.proxies["primary"].open_pairs() == 0)
        again = gate_all(fleet, fleet.proxied(), sessions, zones=zones)
        assert {z: verdict(r) for z, r in again.items()} == {
            z: verdict(r) for z, r in first.items()}
        assert sessions.count("stale") >= 2

        for proxy in fleet.proxies.values():  # closed on the next question, unanswered
            proxy.hangup_next()
        before = fleet.accepted()
        third = gate_all(fleet, fleet.proxied(), sessions, zones=zones)
        assert {z: verdict(r) for z, r in third.items()} == {
            z: verdict(r) for z, r in first.items()}
        assert sessions.count("reconnected") >= 2
        opened = {n: fleet.accepted()[n] - before[n] for n in before}
        assert all(n <= 2 * SESSIONS_PER_SERVER for n in opened.values()), opened


def test_a_transfer_cut_in_its_answer_is_reported_as_before_and_never_asked_again(
        fleet: Fleet) -> None:
    key, zone = fleet.key, fleet.zones[0]
    proxy = fleet.proxies["primary"]
    ep = proxy.ep("primary")
    with Sessions(per_server=1) as sessions:
        assert axfr_probe(ep, zone, key=key, sessions=sessions).ok  # the connection is kept
        before = proxy.accepted
        proxy.cut_answers(10)
        try:
            cut = axfr_probe(ep, zone, key=key, timeout=2, sessions=sessions)
            assert proxy.accepted == before  # the kept connection, and no second try
            alone = axfr_probe(ep, zone, key=key, timeout=2)  # its own connection, cut too
        finally:
            proxy.cut_answers(None)
        assert not cut.ok
        assert (cut.reason, cut.detail) == (alone.reason, alone.detail) == (
            Reason.REFUSED,
            "AXFR: server closed the transfer connection without an answer (EOFError)")
        assert sessions.open_connections() == 0
        assert axfr_probe(ep, zone, key=key, sessions=sessions).ok  # and a new one works


def test_a_wrong_key_fails_with_the_reason_it_always_had(fleet: Fleet) -> None:
    wrong = make_tsig_key("transfer-key", "hmac-sha256", base64.b64encode(os.urandom(32)).decode())
    zones = fleet.zones[:3]
    with Sessions() as sessions:
        kept = gate_all(fleet, fleet.proxied(), sessions, key=wrong, zones=zones, deadline=10)
    with Sessions(keep=False) as each:
        fresh = gate_all(fleet, fleet.proxied(), each, key=wrong, zones=zones, deadline=10)
    with Sessions() as direct_sessions:
        direct = gate_all(fleet, fleet.direct(), direct_sessions, key=wrong, zones=zones,
                          deadline=10)
    for zone in zones:
        assert not kept[zone].ok and "TSIG rejected by" in kept[zone].message
        assert verdict(kept[zone]) == verdict(fresh[zone]) == verdict(direct[zone])
        primary = kept[zone].servers[0]
        assert primary.reason is Reason.TSIG_BADSIG, primary
        assert primary.detail == direct[zone].servers[0].detail
        assert kept[zone].elapsed_s < 10


def test_nothing_is_left_open_after_the_sessions_close(fleet: Fleet) -> None:
    proxies = list(fleet.proxies.values())
    assert settle(lambda: all(p.open_pairs() == 0 for p in proxies))
    threads, fds = threading.active_count(), open_fds()
    sessions = Sessions()
    reports = gate_all(fleet, fleet.proxied(), sessions)
    assert all(r.ok for r in reports.values())
    assert sessions.open_connections() >= 2
    sessions.close()
    assert sessions.open_connections() == 0
    assert settle(lambda: all(p.open_pairs() == 0 for p in proxies))
    assert settle(lambda: threading.active_count() == threads and open_fds() == fds), (
        threading.active_count(), threads, open_fds(), fds, [t.name for t in threading.enumerate()])
