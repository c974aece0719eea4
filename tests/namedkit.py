"""One primary and two secondaries of real named on 127.0.0.1, from the product's own path.

Shared by the gate and fault tests (the `loopback` fixture in conftest.py): the
topology is rendered by load_topology -> render_instance with a root-prefixed
Placement -> write_tree, and the gate is bind9_topology.dns.gate.wait_until_transferred
with endpoints from gate_plans, as in the provider and the local runner. Every named is
stopped by pid; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bind9_topology.config.digest import zone_digest_from_text
from bind9_topology.config.topology import Topology, load_topology
from bind9_topology.dns.checks import Endpoint, make_tsig_key
from bind9_topology.dns.gate import GateReport, gate_plans, map_address, wait_until_transferred
from bind9_topology.local.named_process import NamedProcess, free_port
from bind9_topology.render.bind_files import Placement, render_instance, write_tree
from tests.conftest import new_secret

HOST = "127.0.0.1"
ZONE = "example.com"
PROJECT = Path(__file__).resolve().parent.parent

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


@dataclass
class LoopbackTopology:
    """The small topology rendered into root/<instance>/ and run in real named."""

    root: Path
    secret: str
    raw: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(RAW))
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, NamedProcess] = field(default_factory=dict)
    serial: int = 2024051700
    overrides: dict[str, dict[tuple[str, int], tuple[str, int]]] = field(default_factory=dict)
    #: DNSSEC key material for ZONE when the raw config signs it (dnssec: {policy: ...})
    dnssec_material: dict[str, Any] | None = None

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
        keys = {ZONE: self.dnssec_material} if self.dnssec_material is not None else None
        rendered = render_instance(self.topo.spec, inst, self.topo.contents, {ZONE: self.serial},
                                   placement, self.secret, keys)
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

    def ep(self, name: str) -> Endpoint:
        return Endpoint(HOST, self.ports[name], name)

    def gate(self, *, secret: str | None = None, deadline: float = 20.0,
             serial: int | None = None, poll: float = 0.5,
             ds: list[str] | None = None) -> GateReport:
        prims, secs = self.endpoints()
        key = make_tsig_key("transfer-key", "hmac-sha256", secret or self.secret)
        return wait_until_transferred(ZONE, prims, secs, serial or self.serial, self.digest,
                                      key, deadline, poll, expected_ds=ds)

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


@contextlib.contextmanager
def loopback_topology(root: Path, raw: dict[str, Any] | None = None,
                      dnssec_material: dict[str, Any] | None = None,
                      ) -> Iterator[LoopbackTopology]:
    """A LoopbackTopology under *root* whose named processes are stopped (by pid) after."""
    c = LoopbackTopology(root, new_secret(), raw=copy.deepcopy(raw or RAW),
                         dnssec_material=dnssec_material)
    try:
        yield c
    finally:
        c.stop_all()
        assert not any(p.is_running() for p in c.procs.values())


def start_all(c: LoopbackTopology) -> None:
    c.start("primary-dns")
    c.start("sec-a", wait=False)
    c.start("sec-b", wait=False)




def fresh_serial(inputs: dict[str, Any], olds: dict[str, Any] | None = None) -> int:
    """What ZoneSerials' ``check`` decides for one zone with no state (a lost state, a new
    stack) or with *olds*: *inputs* is the zone's {zoneName, contentHash, probe, digest}
    with the shared tsig*/kube* inputs, as a test writes them."""
    from components.zone_serial import ZoneSerialsProvider

    zone = inputs["zoneName"]
    shared = {k: v for k, v in inputs.items()
              if k.startswith(("tsig", "kube"))}
    news = {**shared, "zones": {zone: {
        "contentHash": inputs["contentHash"], "probe": list(inputs.get("probe") or []),
        "digest": inputs.get("digest")}}}
    checked = ZoneSerialsProvider().check(olds or {}, news)
    return int(checked.inputs["serials"][zone]["serial"])
