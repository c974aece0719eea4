"""The in-pod agent (bind9_topology/pod/agent.py) with real named, rndc and NOTIFY on loopback.

One primary and three "pods" of one secondary instance, each a real named with its own
agent process, rendered by the product's own path (render_instance with an agent
Placement). The primary notifies one pod only, as a NOTIFY to a Service address reaches
one replica; refresh timers are left long (300 s), so a pod that serves the change within
seconds got it by NOTIFY. The primary's agent reads a zone directory laid out as the
kubelet mounts a ConfigMap (..data swapped atomically) and reloads named with rndc.
The API side of the agent runs on the cluster tier (tests/test_cluster.py).
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rdatatype
import dns.tsig
import pytest

from bind9_topology.config.topology import load_topology
from bind9_topology.dns.checks import Endpoint, query_soa
from bind9_topology.local.named_process import NamedProcess, free_port
from bind9_topology.pod import agent as agent_module
from bind9_topology.render import manifests
from bind9_topology.render.bind_files import Placement, render_instance, write_tree
from tests.conftest import new_secret
from tests.namedkit import PROJECT, RAW, ZONE

pytestmark = pytest.mark.bind

HOST = "127.0.0.1"
AGENT = Path(agent_module.__file__)
PODS = ("sec-0", "sec-1", "sec-2")
#: the interpreter the agents run in: this one, or (AGENT_PYTHON) one with the dnspython
#: of the pod image (Debian 12: 2.3), which the agent must work with too
AGENT_PYTHON = os.environ.get("AGENT_PYTHON") or sys.executable


def raw_config() -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    raw["instances"] = [
        raw["instances"][0],
        {"name": "secondary-dns", "role": "secondary", "replicas": 3,
         "config": {"maxRefreshSeconds": 3600},  # min-refresh-time 300 s: never in a test
         "service": {"type": "LoadBalancer", "loadBalancerIP": "10.0.1.20"}},
    ]
    raw["zones"][0]["alsoNotify"] = ["10.0.1.20"]  # the Service: one pod gets it
    return raw


@dataclass
class Pods:
    """The primary and the secondary instance's pods, each with its named and agent."""

    root: Path
    secret: str = field(default_factory=new_secret)
    raw: dict[str, Any] = field(default_factory=raw_config)
    serial: int = 2026120300
    ports: dict[str, int] = field(default_factory=dict)
    agent_ports: dict[str, int] = field(default_factory=dict)
    stats_ports: dict[str, int] = field(default_factory=dict)
    named: dict[str, NamedProcess] = field(default_factory=dict)
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("primary-dns", *PODS):
            self.ports[name] = free_port(HOST)
            self.agent_ports[name] = free_port(HOST)
            self.stats_ports[name] = free_port("127.0.0.1")
        self.topo = load_topology(copy.deepcopy(self.raw), stack="test", project_dir=PROJECT,
                                  tsig_secret=self.secret)

    def rendered(self, name: str) -> Any:
        instance = "primary-dns" if name == "primary-dns" else "secondary-dns"
        inst = next(i for i in self.topo.spec.instances if i.name == instance)
        amap = {("10.0.1.10", 53): (HOST, self.ports["primary-dns"]),
                ("10.0.1.20", 53): (HOST, self.ports[PODS[0]])}  # the Service -> one pod
        placement = Placement(root=str(self.root / name), port=self.ports[name],
                              listen_v4=HOST, listen_v6="none", address_map=amap, agent=True,
                              agent_notify_port=self.agent_ports[name],
                              control_port=self.agent_ports[name],
                              stats_port=self.stats_ports[name])
        return render_instance(self.topo.spec, inst, self.topo.contents, {ZONE: self.serial},
                               placement, self.secret)

    def start_named(self, name: str) -> None:
        d = self.root / name
        write_tree(self.rendered(name), d, include_secrets=True)
        proc = NamedProcess(name=name)
        proc.start(d / "etc/bind/named.conf", d, d / "named.log")
        self.named[name] = proc

    def key_file(self, name: str) -> Path:
        return self.root / name / "etc/bind/tsig/transfer-key.conf"

    def start_agent(self, name: str, *args: str) -> None:
        role = "primary" if name == "primary-dns" else "secondary"
        log = (self.root / f"{name}.agent.log").open("ab")
        self.agents[name] = subprocess.Popen(
            [AGENT_PYTHON, str(AGENT), role, "--instance", name,
             "--key-file", str(self.key_file(name)), *args],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def start_relay(self, name: str) -> None:
        peers = ",".join(f"{HOST}:{self.ports[p]}" for p in PODS if p != name)
        self.start_agent(name, "--listen", f"{HOST}:{self.agent_ports[name]}", "--peers", peers)
        log = self.root / f"{name}.agent.log"
        deadline = time.monotonic() + 10
        while "relaying NOTIFY from" not in log.read_text() and time.monotonic() < deadline:
            assert self.agents[name].poll() is None, log.read_text()
            time.sleep(0.05)

    def next_serial_by_hand(self) -> None:
        """A new serial on the primary without its agent: the zone file rewritten (newer
        than named's load) and SIGHUP, as the local runner does."""
        self.serial += 1
        write_tree(self.rendered("primary-dns"), self.root / "primary-dns", include_secrets=True)
        zone_file = self.root / "primary-dns/var/lib/bind/zones" / f"db.{ZONE}"
        later = time.time() + 1
        os.utime(zone_file, (later, later))
        self.named["primary-dns"].reload()

    def serial_of(self, name: str) -> int | None:
        return query_soa(Endpoint(HOST, self.ports[name], name), ZONE, timeout=1.0).serial

    def wait_serial(self, names: list[str], serial: int, within: float) -> dict[str, float]:
        """When each of *names* first served *serial* (seconds from now); bounded."""
        start, seen = time.monotonic(), {}
        while time.monotonic() - start < within and len(seen) < len(names):
            for name in names:
                if name not in seen and self.serial_of(name) == serial:
                    seen[name] = time.monotonic() - start
            time.sleep(0.02)
        return seen

    def stop(self) -> None:
        for proc in self.agents.values():
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        for named in self.named.values():
            named.stop(timeout=5)


@contextlib.contextmanager
def pods(root: Path) -> Iterator[Pods]:
    p = Pods(root)
    try:
        yield p
    finally:
        p.stop()
        assert not any(n.is_running() for n in p.named.values())
        assert all(a.poll() is not None for a in p.agents.values())


def mounted_configmap(source: Path, files: dict[str, bytes], generation: int) -> None:
    """Lay *files* out as the kubelet mounts a ConfigMap: a timestamped folder, the ..data
    link swapped to it atomically, one link per key."""
    folder = source / f"..gen_{generation}"
    folder.mkdir(parents=True)
    for key, data in files.items():
        (folder / key).write_bytes(data)
    tmp = source / "..data_tmp"
    tmp.symlink_to(folder.name)
    os.replace(tmp, source / "..data")
    for key in files:
        link = source / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")


def test_relay_reaches_every_pod_by_notify(tmp_path: Path) -> None:
    with pods(tmp_path) as p:
        p.start_named("primary-dns")
        for name in PODS:
            p.start_named(name)
            p.start_relay(name)
        first = p.wait_serial(list(PODS), p.serial, within=20)
        assert sorted(first) == sorted(PODS), "the pods did not load the zone at start"

        p.next_serial_by_hand()
        seen = p.wait_serial(list(PODS), p.serial, within=10)
        # sec-0 got the primary's NOTIFY; the others only the relay (refresh: >= 300 s)
        assert sorted(seen) == sorted(PODS), seen
        assert max(seen.values()) < 5, seen
        wanted = [f"-> {HOST}:{p.ports[other]}: serving it" for other in PODS[1:]]
        deadline = time.monotonic() + 5  # the relay's own check of each peer, then its log
        while time.monotonic() < deadline:
            relay_log = (tmp_path / f"{PODS[0]}.agent.log").read_text()
            if all(w in relay_log for w in wanted):
                break
            time.sleep(0.05)
        for other in PODS[1:]:
            assert f"-> {HOST}:{p.ports[other]}: serving it" in relay_log, relay_log


def test_without_the_relay_the_other_pods_wait_for_their_timers(tmp_path: Path) -> None:
    """The control: the same change, no agent on the pod that gets the NOTIFY."""
    with pods(tmp_path) as p:
        p.start_named("primary-dns")
        for name in PODS:
            p.start_named(name)
            if name != PODS[0]:
                p.start_relay(name)
        assert sorted(p.wait_serial(list(PODS), p.serial, within=20)) == sorted(PODS)
        p.next_serial_by_hand()
        seen = p.wait_serial(list(PODS), p.serial, within=5)
        assert list(seen) == [PODS[0]], seen


def test_relay_ignores_unsigned_and_wrongly_signed_notify(tmp_path: Path) -> None:
    with pods(tmp_path) as p:
        p.start_named("primary-dns")
        for name in PODS:
            p.start_named(name)
        p.start_relay(PODS[0])
        assert sorted(p.wait_serial(list(PODS), p.serial, within=20)) == sorted(PODS)
        notify = dns.message.make_query(ZONE, dns.rdatatype.SOA)
        notify.flags = dns.flags.AA
        notify.set_opcode(dns.opcode.NOTIFY)
        wrong = dns.tsig.Key("transfer-key", new_secret(), "hmac-sha256")
        signed = copy.deepcopy(notify)
        signed.use_tsig({wrong.name: wrong}, keyname=wrong.name)
        for message in (notify, signed):
            with pytest.raises(dns.exception.Timeout):
                dns.query.udp(message, HOST, port=p.agent_ports[PODS[0]], timeout=1.0)
        time.sleep(0.5)
        log = (tmp_path / f"{PODS[0]}.agent.log").read_text()
        assert log.count("ignored a message") == 2, log
        assert " -> " not in log  # nothing was relayed


def shard_keys(zone_files: dict[str, bytes], packed: bool) -> dict[str, bytes]:
    """A zone ConfigMap's keys as the kubelet mounts them: one per file, or (packed, ADR
    20) the one tar.gz of binaryData, decoded."""
    files = {k.rsplit("/", 1)[-1]: v for k, v in zone_files.items()}
    if not packed:
        return files
    return {manifests.archive_key("primary-dns-zones-0"): manifests.pack_files(files)}


@pytest.mark.parametrize("packed", [False, True], ids=["text", "packed"])
def test_primary_agent_applies_a_changed_configmap_with_rndc(tmp_path: Path,
                                                             packed: bool) -> None:
    """The zone ConfigMap changes, the pod does not restart: the agent writes the file,
    `rndc reload` loads it, and the secondary pods follow by NOTIFY and the relay. Packed:
    the same with the shard as one tar.gz, as a large instance's ConfigMaps carry it."""
    with pods(tmp_path) as p:
        source = tmp_path / "zones-src"
        first = p.rendered("primary-dns").zone_files
        mounted_configmap(source / "primary-dns-zones-0", shard_keys(first, packed), 1)
        p.start_named("primary-dns")
        for name in PODS:
            p.start_named(name)
            p.start_relay(name)
        zone_dir = tmp_path / "primary-dns/var/lib/bind/zones"
        p.start_agent("primary-dns", "--source", str(source), "--poll", "0.2",
                      "--zone-dir", str(zone_dir), "--rndc-port",
                      str(p.agent_ports["primary-dns"]))
        assert sorted(p.wait_serial(list(PODS), p.serial, within=20)) == sorted(PODS)

        p.serial += 1
        changed = p.rendered("primary-dns").zone_files
        assert changed != first
        mounted_configmap(source / "primary-dns-zones-0", shard_keys(changed, packed), 2)
        pid = p.named["primary-dns"].pid
        seen = p.wait_serial(["primary-dns", *PODS], p.serial, within=15)
        assert sorted(seen) == sorted(["primary-dns", *PODS]), seen
        assert p.named["primary-dns"].pid == pid and p.named["primary-dns"].is_running()
        log = (tmp_path / "primary-dns.agent.log").read_text()
        assert f"reloaded {ZONE}" in log, log
        assert (zone_dir / f"db.{ZONE}").read_bytes() == changed[f"var/lib/bind/zones/db.{ZONE}"]


def test_ready_script_fails_while_draining_and_for_a_missing_zone(tmp_path: Path) -> None:
    """The pod's readiness script, run for real against its named: ready with every zone
    loaded, not ready once the preStop hook made the draining file, nor for a zone named
    does not serve."""
    with pods(tmp_path) as p:
        p.start_named("primary-dns")
        p.named["primary-dns"].wait_ready((HOST, p.ports["primary-dns"]), [ZONE], timeout=15)
        ready = tmp_path / "primary-dns/etc/bind/ready.sh"

        def run() -> int:
            return subprocess.run(["/bin/sh", str(ready)], capture_output=True, timeout=10,
                                  env={**os.environ, "PATH": os.environ["PATH"] + ":/usr/bin"},
                                  check=False).returncode

        assert run() == 0
        draining = tmp_path / "primary-dns/run/named/draining"
        draining.touch()
        assert run() == 1
        draining.unlink()
        assert run() == 0
        marker = tmp_path / "primary-dns/run/named/zones-ready"
        assert marker.exists()  # every zone answered once: later runs ask the first only
        text = ready.read_text()
        ready.write_text(text.replace(f"set -- {ZONE} SOA\n", "set -- missing.example SOA\n"))
        assert run() == 1
        both = text.replace(f'zones="{ZONE}"', f'zones="{ZONE} missing.example"')
        assert both != text
        ready.write_text(both)
        assert run() == 0  # the first-zone path once ready ...
        marker.unlink()
        assert run() == 1  # ... every zone before: one missing keeps the pod unready
        assert not marker.exists()
        # An image without python3 asks every zone by DNS in one batch: the same verdicts.
        bare = tmp_path / "bin-without-python"
        bare.mkdir()
        for tool in ("sh", "dig", "grep", "touch", "cat"):
            found = shutil.which(tool)
            assert found, tool
            (bare / tool).symlink_to(found)

        def run_bare() -> int:
            return subprocess.run(["/bin/sh", str(ready)], capture_output=True, timeout=10,
                                  env={"PATH": str(bare)}, check=False).returncode

        assert run_bare() == 1
        ready.write_text(text)
        assert run_bare() == 0 and marker.exists()


def test_ready_script_holds_a_secondary_until_its_zone_is_transferred(tmp_path: Path) -> None:
    """A secondary pod whose primary is not there yet: named runs and answers, but its
    zone is not loaded, so the statistics check keeps the pod unready and says which zone;
    once the primary runs and the zone is transferred, the pod turns ready."""
    with pods(tmp_path) as p:
        pod = PODS[0]
        p.start_named(pod)
        ready = tmp_path / pod / "etc/bind/ready.sh"

        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(["/bin/sh", str(ready)], capture_output=True, text=True,
                                  timeout=10, check=False)

        deadline = time.monotonic() + 10
        while "not loaded" not in (out := run()).stdout and time.monotonic() < deadline:
            time.sleep(0.2)  # named still starting: its statistics channel not up yet
        assert out.returncode == 1 and f"1 of 1 zones not loaded yet ({ZONE})" in out.stdout
        assert not (tmp_path / pod / "run/named/zones-ready").exists()
        p.start_named("primary-dns")
        deadline = time.monotonic() + 30
        while (out := run()).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.5)  # named retries its primary on its own schedule
        assert out.returncode == 0, out.stdout
        assert (tmp_path / pod / "run/named/zones-ready").exists()


@pytest.mark.unit
def test_ready_reads_loaded_zones_from_named_statistics() -> None:
    """ready.py's reading of /json/v1/zones, in the shape BIND 9.18 writes it: a zone is
    loaded when it has a serial (named omits it before the first load or transfer)."""
    from bind9_topology.pod import ready

    doc = {"views": {
        "_default": {"zones": [
            {"name": "a.example", "class": "IN", "serial": 7, "type": "primary"},
            {"name": "b.example", "class": "IN", "type": "secondary",
             "loaded": "1970-01-01T00:00:00Z"},
            {"name": "Zero.Example", "class": "IN", "serial": 0, "type": "secondary"},
            {"name": "c.example", "class": "CH", "serial": 1},
            {"name": "d.example", "class": "IN", "serial": True},
        ]},
        "_bind": {"zones": [{"name": "version.bind", "class": "CH", "serial": 0}]},
    }}
    assert ready.loaded_zones(doc) == {"a.example", "zero.example"}
    assert ready.not_loaded(doc, ["a.example.", "b.example", "zero.example", "c.example",
                                  "d.example", "version.bind"]) == [
        "b.example", "c.example", "d.example", "version.bind"]
    assert ready.not_loaded({}, []) == []
    assert ready.main(["x"]) == 2


@pytest.mark.unit
def test_zone_file_names_map_to_their_zones() -> None:
    assert agent_module.zone_of_file("db.example.com") == "example.com"
    assert agent_module.zone_of_file("db.example.com.part0003") == "example.com"
    assert agent_module.zone_of_file("db.a.partial.example") == "a.partial.example"
    assert agent_module.zone_of_file("named.conf") is None
    assert agent_module.split_address("10.0.0.1:5353", 53) == ("10.0.0.1", 5353)
    assert agent_module.split_address("10.0.0.1", 53) == ("10.0.0.1", 53)
    assert agent_module.split_address("fd00::1", 53) == ("fd00::1", 53)
    assert agent_module.split_address("[fd00::1]", 53) == ("fd00::1", 53)


@pytest.mark.unit
def test_the_agents_serial_arithmetic_is_dnspythons() -> None:
    """RFC 1982 in the agent (it cannot import the project) against dnspython's own."""
    import random

    import dns.serial

    rng = random.Random(1982)
    pairs = [(rng.randrange(2**32), rng.randrange(2**32)) for _ in range(2000)]
    pairs += [(0, 2**32 - 1), (2**32 - 1, 0), (5, 5), (2**31, 0), (0, 2**31)]
    for a, b in pairs:
        want = dns.serial.Serial(a) == dns.serial.Serial(b) or (
            dns.serial.Serial(a) > dns.serial.Serial(b))
        assert agent_module.serial_at_least(a, b) == want, (a, b)
