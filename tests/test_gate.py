"""The transfer gate against REAL named on 127.0.0.1: one primary, two secondaries.

Everything is rendered by the product's own path (load_topology ->
render_instance with a root-prefixed Placement -> write_tree), the gate is
bind9_topology.dns.gate.wait_until_transferred with endpoints from gate_plans, as in
the provider and the local runner. Every test has its own tmp dir; every
named is stopped by pid in teardown; every wait is bounded.
"""

from __future__ import annotations

import base64
import copy
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bind9_topology.dns.checks import Endpoint, Reason, axfr, make_tsig_key
from bind9_topology.dns.gate import GateReport, gate_plans, map_address, wait_until_transferred
from bind9_topology.local.named_process import NamedProcess, free_port
from bind9_topology.render.bind_files import Placement, render_instance, write_tree
from bind9_topology.spec.digest import zone_digest_from_text
from bind9_topology.spec.topology import Topology, load_topology

HOST = "127.0.0.1"
ZONE = "example.com"
PROJECT = Path(__file__).resolve().parent.parent


pytestmark = [
    pytest.mark.bind,
]

RAW: dict[str, Any] = {
    "region": "us-east-1",
    "instances": [
        {"name": "primary-dns", "role": "primary",
         "service": {"type": "LoadBalancer", "loadBalancerIP": "10.0.1.10"}},
        {"name": "sec-a", "role": "secondary",
         "service": {"type": "LoadBalancer", "loadBalancerIP": "10.0.1.20"}},
        {"name": "sec-b", "role": "secondary",
         "service": {"type": "LoadBalancer", "loadBalancerIP": "10.0.1.21"}},
    ],
    "zones": [
        {
            "zoneName": ZONE, "type": "primary",
            "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
            "soaRecord": {"primaryNs": "ns1.example.com.", "adminEmail": "hostmaster@example.com",
                          "refresh": 3600, "retry": 2},
            "alsoNotify": ["10.0.1.20", "10.0.1.21"],
            "records": [
                {"name": "@", "type": "NS", "data": "ns1.example.com."},
                {"name": "ns1", "type": "A", "data": "10.0.1.10"},
                {"name": "www", "type": "A", "data": "192.0.2.10"},
            ],
        },
        {
            "zoneName": ZONE, "type": "secondary",
            "instanceSelector": {"matchLabels": {"dns-role": "secondary"}},
            "secondaryConfig": {"primaryServers": ["10.0.1.10"]},
        },
    ],
}


def new_secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@dataclass
class Cluster:
    """The small topology rendered into root/<instance>/ and run in real named."""

    root: Path
    secret: str
    raw: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(RAW))
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, NamedProcess] = field(default_factory=dict)
    serial: int = 2024051700
    overrides: dict[str, dict[tuple[str, int], tuple[str, int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for inst in self.raw["instances"]:
            self.ports[inst["name"]] = free_port(HOST)
        self.topo = self.load()

    def load(self) -> Topology:
        return load_topology(copy.deepcopy(self.raw), stack="test", project_dir=PROJECT,
                             tsig_secret=self.secret)

    @property
    def lb(self) -> dict[str, str]:
        return {i["name"]: i["service"]["loadBalancerIP"] for i in self.raw["instances"]}

    @property
    def address_map(self) -> dict[str, str]:
        return {ip: f"{HOST}:{self.ports[n]}" for n, ip in self.lb.items()}

    def render(self, name: str) -> None:
        inst = next(i for i in self.topo.spec.instances if i.name == name)
        amap = {(ip, 53): (HOST, self.ports[n]) for n, ip in self.lb.items()}
        amap.update(self.overrides.get(name, {}))
        placement = Placement(root=str(self.root / name), port=self.ports[name], listen_v4=HOST,
                              listen_v6="none", notify_delay=0, address_map=amap)
        rendered = render_instance(self.topo.spec, inst, self.topo.contents, {ZONE: self.serial},
                                   placement, self.secret)
        write_tree(rendered, self.root / name, include_secrets=True)

    def start(self, name: str, *, wait: bool = True) -> NamedProcess:
        self.render(name)
        d = self.root / name
        proc = NamedProcess(name=name)
        proc.start(d / "etc/bind/named.conf", d, d / "named.log")
        self.procs[name] = proc
        if wait:
            proc.wait_ready((HOST, self.ports[name]), [ZONE], timeout=15)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.stop(timeout=5)

    @property
    def digest(self) -> str:
        return zone_digest_from_text(self.topo.contents[ZONE].text(0), ZONE)

    def endpoints(self) -> tuple[list[Endpoint], list[Endpoint]]:
        (plan,) = gate_plans(self.topo.spec)
        amap = self.address_map

        def ep(label: str, address: str | None) -> Endpoint:
            host, port = map_address(address or "", amap)
            return Endpoint(host, port, label)

        return ([ep(n, a) for n, a in plan.primaries], [ep(n, a) for n, a in plan.secondaries])

    def gate(self, *, secret: str | None = None, deadline: float = 20.0,
             serial: int | None = None, poll: float = 0.5) -> GateReport:
        prims, secs = self.endpoints()
        key = make_tsig_key("transfer-key", "hmac-sha256", secret or self.secret)
        return wait_until_transferred(ZONE, prims, secs, serial or self.serial, self.digest,
                                      key, deadline, poll)

    def change_records(self) -> None:
        """A record change: new content, next serial, zone file rewritten, SIGHUP."""
        zone = self.raw["zones"][0]
        zone["records"].append({"name": "api", "type": "A", "data": "192.0.2.30"})
        zone["records"][2]["data"] = "192.0.2.11"
        self.topo = self.load()
        self.serial += 1
        self.render("primary-dns")
        zone_file = self.root / "primary-dns/var/lib/bind/zones" / f"db.{ZONE}"
        later = time.time() + 1
        os.utime(zone_file, (later, later))
        self.procs["primary-dns"].reload()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, new_secret())
    try:
        yield c
    finally:
        c.stop_all()
        assert not any(p.is_running() for p in c.procs.values())


def start_all(c: Cluster) -> None:
    c.start("primary-dns")
    c.start("sec-a", wait=False)
    c.start("sec-b", wait=False)


def test_initial_axfr_then_change_gives_ixfr_and_gate_passes(cluster: Cluster) -> None:
    start_all(cluster)
    report = cluster.gate()
    assert report.ok, report.message
    assert report.target_serial == cluster.serial
    assert {s.endpoint.label for s in report.servers} == {"primary-dns", "sec-a", "sec-b"}
    for name in ("sec-a", "sec-b"):
        cluster.procs[name].wait_for_log(r"transfer of 'example.com/IN' from .*Transfer completed",
                                         timeout=5)
    since = {n: p.log_offset() for n, p in cluster.procs.items()}

    cluster.change_records()
    report2 = cluster.gate()
    assert report2.ok, report2.message
    assert report2.target_serial == cluster.serial
    assert all(s.serial == cluster.serial for s in report2.servers)
    primary = cluster.procs["primary-dns"]
    primary.wait_for_log(r"IXFR started", timeout=5, since=since["primary-dns"])
    for name in ("sec-a", "sec-b"):
        proc = cluster.procs[name]
        proc.wait_for_log(r"notify from .* serial", timeout=5, since=since[name])
        proc.wait_for_log(r"Transfer status: success", timeout=5, since=since[name])
    # the old expected serial is not enough for the old digest: content is proven
    stale = wait_until_transferred(ZONE, *cluster.endpoints(), cluster.serial,
                                   "00" * 48, make_tsig_key("transfer-key", "hmac-sha256",
                                                            cluster.secret), 1.0, 0.2)
    assert not stale.ok and "CONTENT_MISMATCH" in stale.message


def test_axfr_without_key_is_refused_everywhere(cluster: Cluster) -> None:
    start_all(cluster)
    assert cluster.gate().ok
    prims, secs = cluster.endpoints()
    for ep in prims + secs:
        probe, zone = axfr(ep, ZONE, key=None, timeout=3)
        assert zone is None and probe.reason is Reason.REFUSED, (ep, probe)
    # and with the key the primary transfers (the secondaries serve nobody)
    probe, _ = axfr(prims[0], ZONE, key=make_tsig_key("transfer-key", "hmac-sha256",
                                                      cluster.secret))
    assert probe.ok


def test_wrong_key_fails_with_tsig_reason_before_deadline(cluster: Cluster) -> None:
    start_all(cluster)
    t0 = time.monotonic()
    report = cluster.gate(secret=new_secret(), deadline=20)
    elapsed = time.monotonic() - t0
    assert not report.ok
    assert "TSIG_BADSIG" in report.message or "TSIG_BADKEY" in report.message, report.message
    assert "primary-dns" in report.message
    assert cluster.secret not in report.message
    assert elapsed < 10, elapsed


def test_primary_starting_late_gate_waits_then_passes(cluster: Cluster) -> None:
    cluster.start("sec-a", wait=False)
    cluster.start("sec-b", wait=False)
    starter = threading.Timer(1.5, lambda: cluster.start("primary-dns", wait=False))
    starter.start()
    try:
        t0 = time.monotonic()
        report = cluster.gate(deadline=40, poll=0.5)
        assert report.ok, report.message
        assert time.monotonic() - t0 >= 1.4
        primary = next(s for s in report.servers if s.role == "primary")
        assert primary.attempts > 1
    finally:
        starter.join()


def test_primary_never_up_fails_clearly_within_deadline(cluster: Cluster) -> None:
    cluster.start("sec-a", wait=False)
    t0 = time.monotonic()
    report = cluster.gate(deadline=3, poll=0.5)
    elapsed = time.monotonic() - t0
    assert not report.ok
    assert elapsed < 3 + 2.5, elapsed
    assert f"primary primary-dns ({HOST}#{cluster.ports['primary-dns']})" in report.message
    assert "serves serial none" in report.message
    assert "TIMEOUT" in report.message or "CONNECTION_REFUSED" in report.message
    assert not any(s.ok for s in report.servers if s.role == "secondary")


def test_secondary_that_cannot_reach_primary_is_named(cluster: Cluster) -> None:
    dead = free_port(HOST)  # nobody listens there
    cluster.overrides["sec-b"] = {("10.0.1.10", 53): (HOST, dead)}
    start_all(cluster)
    report = cluster.gate(deadline=4, poll=0.5)
    assert not report.ok
    lag = report.lagging()
    assert [s.endpoint.label for s in lag] == ["sec-b"], report.message
    assert f"secondary sec-b ({HOST}#{cluster.ports['sec-b']})" in report.message
    assert "SERVFAIL" in report.message or "NOT_AUTHORITATIVE" in report.message


def test_named_killed_and_restarted_converges(cluster: Cluster) -> None:
    start_all(cluster)
    assert cluster.gate().ok
    cluster.procs["sec-a"].kill()
    cluster.procs["primary-dns"].kill()
    down = cluster.gate(deadline=1.5, poll=0.2)
    assert not down.ok and "primary-dns" in down.message
    cluster.start("primary-dns")
    cluster.start("sec-a", wait=False)
    report = cluster.gate(deadline=30)
    assert report.ok, report.message


def test_serial_never_goes_backwards_when_state_is_lost(cluster: Cluster) -> None:
    """A fresh ZoneSerial (state lost, stack recreated) starts past what the servers serve;
    and a primary whose serial did go backwards never passes the gate."""
    from bind9_topology.dns.targets import probe_targets
    from components.zone_serial import ZoneSerialProvider

    cluster.serial = 2099010105  # served now, far ahead of today's YYYYMMDD00
    start_all(cluster)
    assert cluster.gate().ok

    spec = cluster.topo.spec.model_copy(update={"gate": cluster.topo.spec.gate.model_copy(
        update={"addressMap": cluster.address_map, "via": "direct"})})
    primary_zone = next(z for z in spec.zones if z.type == "primary")
    probe = probe_targets(spec, primary_zone)
    assert {(p["host"], p["port"]) for p in probe} == {
        (HOST, port) for port in cluster.ports.values()}
    created = ZoneSerialProvider().create(
        {"zoneName": ZONE, "contentHash": "lost-state", "probe": probe})
    assert created.outs["serial"] == 2099010106

    # A primary pod that restarts from a rendering whose serial went backwards (state lost,
    # no probe): the secondaries keep their old data; the gate names them, never "ready".
    cluster.procs["primary-dns"].stop(timeout=5)
    for journal in (cluster.root / "primary-dns/var/cache/bind").glob("*.jnl"):
        journal.unlink()
    cluster.raw["zones"][0]["records"][2]["data"] = "192.0.2.11"
    cluster.topo = cluster.load()
    cluster.serial = 2026010100
    cluster.start("primary-dns")
    report = cluster.gate(deadline=4.0, serial=2026010100, poll=0.2)
    assert not report.ok
    assert "went backwards" in report.message, report.message
    assert "sec-a" in report.message and "sec-b" in report.message


def test_the_gate_nudges_a_secondary_that_no_notify_reached(cluster: Cluster) -> None:
    """A replica behind a Service address misses the primary's NOTIFY (it reaches one
    replica); with its refresh an hour away, the gate's signed NOTIFY brings it along."""
    cluster.raw["zones"][0]["alsoNotify"] = ["10.0.1.20"]  # sec-b is never notified
    for inst in cluster.raw["instances"][1:]:
        inst["config"] = {"maxRefreshSeconds": 3600}
    cluster.topo = cluster.load()
    start_all(cluster)
    assert cluster.gate().ok
    cluster.change_records()
    started = time.monotonic()
    report = cluster.gate(deadline=20)
    assert report.ok, report.message
    assert time.monotonic() - started < 10
    assert {s.serial for s in report.servers} == {cluster.serial}
