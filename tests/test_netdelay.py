"""cluster/netdelay on real network namespaces: latency between regions without netem.

Three namespaces b9tnd-a, b9tnd-b, b9tnd-c (10.251.0.1, .65, .129: the blocks
10.251.0.0/26, .64/26, .128/26) stand for us-east-1, us-west-2 and eu-west-1,
each joined by a veth to the bridge b9tnd0 on the host, as the local clusters are.
Each runs its own netdelay on ingress (cluster/netdelay/rules.sh), holding packets
from the other regions for half the round trip. Root only (namespaces, iptables);
no Kubernetes build, only the small Go binary (cluster/netdelay/build.sh, cached).
Every process is stopped by pid and every namespace and link removed, pass or fail.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent
BRIDGE = "b9tnd0"
QUEUE = 7
ADDR = {"a": "10.251.0.1", "b": "10.251.0.65", "c": "10.251.0.129"}
BLOCK = {"a": "10.251.0.0/26", "b": "10.251.0.64/26", "c": "10.251.0.128/26"}
ECHO_PORT, BURST_PORT, TCP_PORT = 7007, 7008, 7009
SLACK_MS = 20  # a held packet is released within this of its due time (p50)

# The helpers run in a namespace as `python3 -c`; every one ends on its own.
ECHO_SERVER = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", {ECHO_PORT}))
s.settimeout(600)
while True:
    try:
        data, peer = s.recvfrom(2048)
    except TimeoutError:
        break
    s.sendto(data, peer)
"""

ECHO_CLIENT = f"""
import json, socket, sys, time
host, count, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
rtts = []
for i in range(count):
    token = str(i).encode()
    start = time.monotonic()
    s.sendto(token, (host, {ECHO_PORT}))
    try:
        while s.recv(2048) != token:
            pass
        rtts.append((time.monotonic() - start) * 1000)
    except TimeoutError:
        rtts.append(None)
    time.sleep(gap)
print(json.dumps(rtts))
"""

BURST_RECEIVER = f"""
import json, socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: hold the whole burst
s.bind(("0.0.0.0", {BURST_PORT}))
print("ready", flush=True)
got, deadline = [], time.monotonic() + 30
s.settimeout(10)  # the first datagram
while time.monotonic() < deadline:
    try:
        got.append(int(s.recv(64)))
    except TimeoutError:
        break
    s.settimeout(2)  # then quiet for 2 s ends it
print(json.dumps(got))
"""

BURST_SENDER = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[2])):
    s.sendto(str(i).encode(), (sys.argv[1], {BURST_PORT}))
"""

TCP_SINK = f"""
import socket
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", {TCP_PORT}))
listener.listen(1)
listener.settimeout(30)
print("ready", flush=True)
conn, _ = listener.accept()
conn.settimeout(30)
total = 0
while chunk := conn.recv(1 << 16):
    total += len(chunk)
conn.sendall(str(total).encode())
"""

TCP_SOURCE = f"""
import json, socket, sys, time
start = time.monotonic()
conn = socket.create_connection((sys.argv[1], {TCP_PORT}), timeout=30)
connected = time.monotonic()
block = b"x" * (1 << 20)
for _ in range(int(sys.argv[2])):
    conn.sendall(block)
conn.shutdown(socket.SHUT_WR)
total = int(conn.recv(64))
done = time.monotonic()
print(json.dumps({{"connect_ms": (connected - start) * 1000, "bytes": total,
                  "seconds": done - connected}}))
"""


def run(*args: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def in_ns(ns: str, *args: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/b9tnd-{ns}", *args]


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    """Signal one process we started, by its pid, and reap it (bounded)."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _remove_network() -> None:
    """Remove our namespaces (and the processes still in them) and the bridge."""
    listed = run("ip", "netns", "list", check=False).stdout.split()
    for ns in (name for name in listed if name.startswith("b9tnd-")):
        pids = run("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:  # only what runs inside a namespace of ours
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        run("ip", "netns", "del", ns, check=False)  # its iptables rules go with it
    # The host ends of the veths: a deleted namespace can outlive its processes for
    # minutes (the kernel retransmits an orphaned TCP socket's FIN), and its veth with it.
    links = run("ip", "-o", "link", "show", check=False).stdout.splitlines()
    for name in (line.split(":")[1].strip().split("@")[0] for line in links):
        if name.startswith("b9tnd-") or name == BRIDGE:
            run("ip", "link", "del", name, check=False)


@pytest.fixture(scope="session")
def netdelay_bin() -> Path:
    if os.environ.get("SKIP_CLUSTER"):
        pytest.skip("SKIP_CLUSTER is set")
    if os.geteuid() != 0:
        pytest.skip("network namespaces and iptables need root")
    for tool in ("ip", "iptables", "nsenter"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
        pytest.skip("no Go toolchain to build cluster/netdelay")
    built = run("bash", str(ROOT / "cluster/netdelay/build.sh"), timeout=900)
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def network(netdelay_bin: Path) -> Iterator[None]:
    """The bridge and three namespaces, each with a UDP echo server on ECHO_PORT."""
    lock_path = ROOT / ".cache/netdelay/.test-lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:  # one run of this module at a time on the machine
        deadline = time.monotonic() + 300
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail("another test_netdelay run holds the lock for 300 s")
                time.sleep(1)
        _remove_network()  # leftovers of a run that was killed
        servers: list[subprocess.Popen[str]] = []
        try:
            run("ip", "link", "add", BRIDGE, "type", "bridge")
            run("ip", "link", "set", BRIDGE, "up")
            for ns, addr in ADDR.items():
                name = f"b9tnd-{ns}"
                run("ip", "netns", "add", name)
                run("ip", "link", "add", name, "type", "veth", "peer", "name", "eth0",
                    "netns", name)
                run("ip", "link", "set", name, "master", BRIDGE, "up")
                run("ip", "-n", name, "addr", "add", f"{addr}/24", "dev", "eth0")
                run("ip", "-n", name, "link", "set", "eth0", "up")
                run("ip", "-n", name, "link", "set", "lo", "up")
                servers.append(subprocess.Popen(in_ns(ns, sys.executable, "-c", ECHO_SERVER),
                                                text=True))
            for ns in ADDR:  # every pair answers before any test measures
                for other in ADDR:
                    if other != ns:
                        rtts = echo(ns, other, count=1)
                        assert rtts[0] is not None, f"{ns} -> {other}: no echo"
            yield
        finally:
            for server in servers:
                stop(server)
            _remove_network()


def echo(src: str, dst: str, count: int = 20, gap: float = 0.02) -> list[float | None]:
    """UDP echo round trips (ms; None when lost) from namespace src to dst's address."""
    deadline = 10 + count * (1 + gap)
    out = run(*in_ns(src, sys.executable, "-c", ECHO_CLIENT, ADDR[dst], str(count), str(gap)),
              timeout=deadline)
    rtts: list[float | None] = json.loads(out.stdout)
    return rtts


def p50(rtts: list[float | None]) -> float:
    assert None not in rtts, f"lost: {rtts}"
    return statistics.median(r for r in rtts if r is not None)


@dataclass
class Delayer:
    ns: str
    proc: subprocess.Popen[str]
    log: Path

    def stats(self) -> dict[str, int]:
        """The counts of its exit line (after it has exited)."""
        found = re.search(r"exit: (\d+) delayed, (\d+) accepted at once, (\d+) over",
                          self.log.read_text())
        assert found, self.log.read_text()
        return dict(zip(("delayed", "direct", "overflow"), map(int, found.groups()),
                        strict=True))


@dataclass
class Delayers:
    """netdelay processes and their rules, all removed at the end of a test."""

    binary: Path
    tmp: Path
    started: list[Delayer] = field(default_factory=list)

    def start(self, ns: str, delays: dict[str, int], queued: list[str] | None = None,
              max_queue: int | None = None) -> Delayer:
        """In ns: packets from the `queued` namespaces (default: those of `delays`) go to the
        queue; those from a namespace of `delays` are held that many ms."""
        sources = queued if queued is not None else list(delays)
        run(*in_ns(ns, "bash", str(ROOT / "cluster/netdelay/rules.sh"), "add", str(QUEUE),
                   *(BLOCK[s] for s in sources)))
        args = [str(self.binary), "--queue", str(QUEUE)]
        for src, ms in delays.items():
            args += ["--delay", f"{BLOCK[src]},{BLOCK[ns]}={ms}ms"]
        if max_queue is not None:
            args += ["--max-queue", str(max_queue)]
        log = self.tmp / f"netdelay-{ns}-{len(self.started)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(in_ns(ns, *args), stdout=out, stderr=subprocess.STDOUT,
                                    text=True)
        delayer = Delayer(ns, proc, log)
        self.started.append(delayer)
        deadline = time.monotonic() + 10
        while "netdelay: queue" not in log.read_text():  # bound to the queue
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"netdelay in {ns} did not start: {log.read_text()}")
            time.sleep(0.05)
        return delayer

    def cleanup(self) -> None:
        for delayer in self.started:
            stop(delayer.proc, signal.SIGTERM)  # what it holds goes on: no orphaned retransmits
        for ns in {d.ns for d in self.started}:
            run(*in_ns(ns, "bash", str(ROOT / "cluster/netdelay/rules.sh"), "del", str(QUEUE)),
                check=False)


@pytest.fixture
def delayers(network: None, netdelay_bin: Path, tmp_path: Path) -> Iterator[Delayers]:
    ds = Delayers(netdelay_bin, tmp_path)
    try:
        yield ds
    finally:
        ds.cleanup()


def test_round_trips_between_three_regions(delayers: Delayers) -> None:
    """us-east-1 (a) and us-west-2 (b) 30 ms apart, eu-west-1 (c) 80 ms from both:
    each side holds what it receives for half the round trip."""
    base = {(s, d): p50(echo(s, d, count=5)) for s, d in [("a", "b"), ("a", "c"), ("b", "c")]}
    assert max(base.values()) < 5, base
    delayers.start("a", {"b": 15, "c": 40})
    delayers.start("b", {"a": 15, "c": 40})
    delayers.start("c", {"a": 40, "b": 40})
    for (src, dst), want in {("a", "b"): 30, ("a", "c"): 80, ("b", "c"): 80}.items():
        rtts = echo(src, dst)
        got = p50(rtts)
        assert min(r for r in rtts if r is not None) >= want, (src, dst, rtts)
        assert want <= got < want + SLACK_MS, (src, dst, rtts)


def test_unmatched_pair_is_not_delayed(delayers: Delayers) -> None:
    """Packets from c reach b's queue but match no --delay: accepted at once."""
    held = delayers.start("b", {"a": 25}, queued=["a", "c"])
    assert p50(echo("c", "b")) < 5
    assert 25 <= p50(echo("a", "b")) < 25 + SLACK_MS
    stop(held.proc, signal.SIGTERM)
    assert held.proc.returncode == 0, held.log.read_text()
    stats = held.stats()
    assert stats["direct"] >= 20 and stats["delayed"] >= 20, stats


def burst(src: str, dst: str, count: int) -> list[int]:
    """Datagrams 0..count-1 sent back to back from src; the sequence dst received."""
    receiver = subprocess.Popen(in_ns(dst, sys.executable, "-c", BURST_RECEIVER),
                                stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "ready"
        run(*in_ns(src, sys.executable, "-c", BURST_SENDER, ADDR[dst], str(count)))
        out, _ = receiver.communicate(timeout=60)
        got: list[int] = json.loads(out)
        return got
    finally:
        stop(receiver)


def test_a_burst_keeps_its_order(delayers: Delayers) -> None:
    delayers.start("b", {"a": 15})
    got = burst("a", "b", 1000)
    assert got == list(range(1000)), f"{len(got)} received, first out of order: " + str(
        next((i for i, (x, y) in enumerate(zip(got, sorted(got), strict=True)) if x != y), None))


def test_over_max_queue_is_accepted_not_dropped(delayers: Delayers) -> None:
    """With at most 16 held, the kernel accepts the rest of a burst at once (fail-open)."""
    held = delayers.start("b", {"a": 15}, max_queue=16)
    got = burst("a", "b", 1000)
    assert sorted(got) == list(range(1000)), f"{len(got)} of 1000 received"
    stop(held.proc, signal.SIGTERM)
    assert held.stats()["delayed"] < 1000, held.stats()


def test_tcp_stream_is_not_throttled(delayers: Delayers) -> None:
    """Held on ingress, a TCP stream keeps its speed (on egress the sender's small-queue
    budget throttled it to 0.4 MB/s): the handshake takes one round trip, 20 MB stream
    in seconds."""
    delayers.start("a", {"b": 15})
    delayers.start("b", {"a": 15})
    sink = subprocess.Popen(in_ns("b", sys.executable, "-c", TCP_SINK), stdout=subprocess.PIPE,
                            text=True)
    try:
        assert sink.stdout is not None
        assert sink.stdout.readline().strip() == "ready"
        out = run(*in_ns("a", sys.executable, "-c", TCP_SOURCE, ADDR["b"], "20"), timeout=60)
        sink.wait(timeout=30)
    finally:
        stop(sink)
    result = json.loads(out.stdout)
    assert result["bytes"] == 20 << 20
    assert 30 <= result["connect_ms"] < 30 + SLACK_MS, result
    assert result["seconds"] < 10, result


def test_stopping_the_delayer_lets_traffic_flow(delayers: Delayers) -> None:
    """SIGTERM: the held packets are accepted (no loss), exit 0. SIGKILL: the queue is
    bypassed (--queue-bypass), traffic flows undelayed."""
    held = delayers.start("b", {"a": 40})
    client = subprocess.Popen(in_ns("a", sys.executable, "-c", ECHO_CLIENT, ADDR["b"], "30",
                                    "0.005"), stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # mid-stream: packets are held
        stop(held.proc, signal.SIGTERM)
        out, _ = client.communicate(timeout=60)
    finally:
        stop(client)
    assert held.proc.returncode == 0, held.log.read_text()
    rtts = json.loads(out)
    assert None not in rtts, rtts
    assert rtts[0] >= 40 and rtts[-1] < 5, rtts
    assert p50(echo("a", "b")) < 5

    killed = delayers.start("b", {"a": 40})
    assert 40 <= p50(echo("a", "b", count=5)) < 40 + SLACK_MS
    stop(killed.proc, signal.SIGKILL)
    assert p50(echo("a", "b")) < 5
