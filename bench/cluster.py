"""Cluster figures (issue 19) on the local clusters, one per region (scripts/cluster.sh).

    python bench/cluster.py                       # setup, 10 change rounds, 3+3 loss runs
    python bench/cluster.py --zones 1000          # also the 1,000-zone x 100-record stacks
    python bench/cluster.py --no-setup --skip change --loss-runs 1   # stacks already up
    python bench/cluster.py --down                # ... then destroy every stack, cluster down

Parts (each can be left out with --skip):

setup   `bash scripts/run-cluster.sh --keep`: the clusters up, the project copied into
        .cache/cluster/project, `pulumi up` of every cluster stack (file backend).
change  N rounds: one record of configs/zones/example.com.yaml of the *copied* project
        changed, `pulumi up --stack cluster` timed, while every pod of every instance of
        every region is asked for the zone's SOA serial every ~20 ms over UDP (pod IPs
        from `kubectl get pods` in each stack's cluster (`kubernetes:context`), refreshed
        every 0.5 s; the host routes to every cluster's pods); per secondary pod, the
        delay from the first primary pod serving the new serial to that pod serving it.
        Then `pulumi up` of each region stack, timed.
loss    `dnsperf` at --qps per Service (every Service LoadBalancer address of the cluster
        stack files, -t 1: ClusterIPs do not leave their cluster) during a `kubectl
        rollout restart` of the primary Deployment, and during one of every secondary
        Deployment (one after the other); lost queries per Service from dnsperf's
        statistics; --loss-runs runs each.
big     (--zones N) a synthetic N-zone primary stack and two region stacks (bench/synth.py),
        each on its region's cluster in its own namespace, `pulumi up` of each, cold (fresh
        state, empty zone content cache), timed, with the peak RSS of the engine's tree.

Prints a table and writes bench/results/cluster-<label>.json (--label, default latest).
Everything is relative to the repository this file lives in (or $BENCH_REPO).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import math
import os
import re
import secrets
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.serial
import yaml

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("BENCH_REPO") or HERE.parent)
sys.path.insert(0, str(HERE))

import synth  # noqa: E402
from clusters import HOST_IP, Region  # noqa: E402  (scripts/cluster.sh's layout)
from clusters import regions as cluster_regions  # noqa: E402
from run import machine  # noqa: E402  (one description of the machine for every bench)

RESULTS = HERE / "results"
PROJECT = ROOT / ".cache" / "cluster" / "project"  # scripts/run-cluster.sh copies it here
LOGS = ROOT / ".cache" / "cluster" / "bench"
PREFIX = "bind9-topology:"
PRIMARY_STACK = "cluster"
BENCH_RECORD = "bench-cluster"  # the record each round changes
TARGETS = {
    "change_all_secondaries_p50_s": ("<", 1.0),
    "change_all_secondaries_max_s": ("<", 3.0),
    "up_primary_p50_s": ("<", 15.0),
    "loss_primary_roll_lost_max": ("<=", 0),
    "loss_secondary_roll_lost_max": ("<=", 0),
    "big_up_primary_s": ("<", 120.0),
    "big_up_region_max_s": ("<", 60.0),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def quantile(values: list[float], q: float) -> float | None:
    """Nearest rank (p95 of 10 values is the largest)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summary(values: list[float], digits: int = 3) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    return {"n": len(values), "p50": round(statistics.median(values), digits),
            "p95": round(quantile(values, 0.95) or 0.0, digits),
            "max": round(max(values), digits)}


# --------------------------------------------------------------------------- environment


def cluster_env() -> dict[str, str]:
    """os.environ plus `scripts/cluster.sh env` and `scripts/engine-env.sh` (engine on PATH)."""
    script = ('eval "$(bash scripts/cluster.sh env)" && ENGINE_ENV_QUIET=1 '
              'source scripts/engine-env.sh >/dev/null && env -0')
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True,
                         check=True, timeout=600).stdout.decode()
    env = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin"
    return env


@dataclass
class Stack:
    name: str
    namespace: str
    instances: list[dict[str, Any]]
    zones: list[str]
    context: str | None = None  # `kubernetes:context`: each stack its own cluster

    @property
    def services(self) -> list[tuple[str, str, str]]:
        """(instance, role, address) of every instance with a fixed address the host reaches:
        its LoadBalancer address (a ClusterIP only where no LoadBalancer is set)."""
        out = []
        for i in self.instances:
            svc = i.get("service") or {}
            if addr := svc.get("loadBalancerIP") or svc.get("clusterIP"):
                out.append((i["name"], i["role"], str(addr)))
        return out


def kubectl(context: str | None) -> list[str]:
    """kubectl aimed at one cluster (the merged kubeconfig's current one without a context)."""
    return ["kubectl", "--context", context] if context else ["kubectl"]


def read_stacks(project: Path, pattern: str = "Pulumi.cluster*.yaml") -> list[Stack]:
    """The cluster stacks, the primary stack first (the one with primary instances)."""
    stacks = []
    for path in sorted(project.glob(pattern)):
        config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
        stacks.append(Stack(
            name=path.name.removeprefix("Pulumi.").removesuffix(".yaml"),
            namespace=config[f"{PREFIX}namespace"],
            instances=config.get(f"{PREFIX}instances") or [],
            zones=sorted({z["zoneName"] for z in config.get(f"{PREFIX}zones") or []}),
            context=config.get("kubernetes:context")))
    stacks.sort(key=lambda s: (not any(i["role"] == "primary" for i in s.instances),
                               s.name != PRIMARY_STACK))
    return stacks


@dataclass
class Timed:
    seconds: float
    rc: int
    log: str


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """TERM the process group started with *proc* (start_new_session), KILL it 30 s later."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_logged(cmd: list[str], env: dict[str, str], cwd: Path, log_name: str,
               timeout: float, stdin_text: str | None = None) -> Timed:
    LOGS.mkdir(parents=True, exist_ok=True)
    path = LOGS / log_name
    start = time.monotonic()
    with path.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.PIPE if stdin_text is not None else
                                subprocess.DEVNULL, text=True, start_new_session=True)
        try:
            proc.communicate(stdin_text, timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            out.write(f"\n[bench] killed after {timeout} s\n")
    return Timed(round(time.monotonic() - start, 3), proc.returncode, str(path))


def pulumi(args: list[str], stack: str, env: dict[str, str], cwd: Path, log_name: str,
           timeout: float = 900, stdin_text: str | None = None) -> Timed:
    return run_logged(["pulumi", *args, "--stack", stack, "--non-interactive"], env, cwd,
                      log_name, timeout, stdin_text)


def pulumi_up(stack: str, env: dict[str, str], cwd: Path, log_name: str,
              timeout: float = 900) -> Timed:
    return pulumi(["up", "--yes", "--skip-preview"], stack, env, cwd, log_name, timeout)


def tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------- pods, serials


@dataclass
class Pod:
    name: str
    namespace: str
    ip: str
    role: str
    instance: str
    deleting: bool


def list_pods(namespaces: dict[str, str | None], env: dict[str, str]) -> list[Pod]:
    """The BIND pods of the given namespaces ({namespace: context}), each from its cluster."""
    by_context: dict[str | None, set[str]] = {}
    for ns, context in namespaces.items():
        by_context.setdefault(context, set()).add(ns)
    pods = []
    for context, wanted in by_context.items():
        out = subprocess.run([*kubectl(context), "get", "pods", "-A", "-o", "json"], env=env,
                             capture_output=True, text=True, timeout=30, check=True).stdout
        pods += pods_from_json(out, wanted)
    return pods


def pods_from_json(text: str, namespaces: set[str]) -> list[Pod]:
    pods = []
    for item in json.loads(text)["items"]:
        meta, status = item["metadata"], item.get("status") or {}
        labels = meta.get("labels") or {}
        if meta["namespace"] not in namespaces or not status.get("podIP"):
            continue
        if "instance" not in labels:
            continue
        pods.append(Pod(meta["name"], meta["namespace"], status["podIP"],
                        labels.get("dns-role", "?"), labels["instance"],
                        bool(meta.get("deletionTimestamp"))))
    return pods


@dataclass
class PodSerials:
    pod: Pod
    first: dict[int, float] = field(default_factory=dict)  # serial -> first answer (monotonic)
    answers: int = 0


class SerialPoller:
    """Asks every pod for the zone's SOA every `interval` s from one UDP socket.

    A second thread refreshes the pod set from the API every `refresh` s. For each pod
    it keeps the first time it answered (authoritatively) with each serial.
    """

    def __init__(self, zone: str, namespaces: dict[str, str | None], env: dict[str, str],
                 interval: float = 0.02, refresh: float = 0.5) -> None:
        self.zone, self.namespaces, self.env = zone, namespaces, env
        self.interval, self.refresh = interval, refresh
        self.pods: dict[str, PodSerials] = {}  # pod name -> serials
        self.by_ip: dict[str, str] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._refresh_loop, daemon=True),
                        threading.Thread(target=self._poll_loop, daemon=True)]

    def start(self) -> SerialPoller:
        self._refresh_once()
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(10)

    def _refresh_once(self) -> None:
        try:
            pods = list_pods(self.namespaces, self.env)
        except (subprocess.SubprocessError, ValueError, KeyError) as exc:
            self.errors.append(f"kubectl get pods: {exc}"[:300])
            return
        with self.lock:
            for pod in pods:
                known = self.pods.get(pod.name)
                if known is None:
                    self.pods[pod.name] = PodSerials(pod)
                else:
                    known.pod = pod
            self.by_ip = {p.ip: p.name for p in pods}

    def _refresh_loop(self) -> None:
        while not self.stop_event.wait(self.refresh):
            self._refresh_once()

    def _poll_loop(self) -> None:
        query = dns.message.make_query(self.zone, dns.rdatatype.SOA)
        query.flags &= ~dns.flags.RD
        wire = bytearray(query.to_wire())
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        qid = 0
        try:
            while not self.stop_event.is_set():
                tick = time.monotonic()
                with self.lock:
                    ips = list(self.by_ip)
                for ip in ips:
                    qid = (qid + 1) & 0xFFFF
                    wire[0:2] = qid.to_bytes(2, "big")
                    with contextlib.suppress(OSError):
                        sock.sendto(bytes(wire), (ip, 53))
                deadline = tick + self.interval
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    ready, _, _ = select.select([sock], [], [], left)
                    if not ready:
                        break
                    self._drain(sock)
        finally:
            sock.close()

    def _drain(self, sock: socket.socket) -> None:
        while True:
            try:
                data, (ip, _port) = sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            now = time.monotonic()
            try:
                msg = dns.message.from_wire(data)
            except (dns.exception.DNSException, ValueError):  # a garbled answer is no answer
                continue
            if msg.rcode() != dns.rcode.NOERROR or not msg.flags & dns.flags.AA:
                continue
            serial = next((rr.serial for rrset in msg.answer
                           if rrset.rdtype == dns.rdatatype.SOA for rr in rrset), None)
            if serial is None:
                continue
            with self.lock:
                name = self.by_ip.get(ip)
                entry = self.pods.get(name) if name else None
                if entry is not None:
                    entry.answers += 1
                    entry.first.setdefault(serial, now)

    def snapshot(self) -> dict[str, PodSerials]:
        with self.lock:
            return {k: PodSerials(v.pod, dict(v.first), v.answers) for k, v in self.pods.items()}


def newest(serials: list[int]) -> int | None:
    best: int | None = None
    for s in serials:
        if best is None or dns.serial.Serial(s) > dns.serial.Serial(best):
            best = s
    return best


def served_at(entry: PodSerials, target: int) -> float | None:
    """First time the pod answered with `target` or a later serial."""
    times = [t for s, t in entry.first.items()
             if s == target or dns.serial.Serial(s) > dns.serial.Serial(target)]
    return min(times) if times else None


# --------------------------------------------------------------------------- setup


def setup(env_base: dict[str, str], timeout: float) -> dict[str, Any]:
    log("setup: bash scripts/run-cluster.sh --keep (cluster up, project copied, every "
        "cluster stack up) ...")
    t = run_logged(["bash", "scripts/run-cluster.sh", "--keep"], env_base, ROOT,
                   "setup.log", timeout)
    text = Path(t.log).read_text(errors="replace")
    ups = {m.group(1): float(m.group(2)) for m in
           re.finditer(r"== pulumi up --stack (\S+)\n\s+done in (\d+)s", text)}
    if t.rc != 0:
        raise RuntimeError(f"run-cluster.sh --keep exited {t.rc} (log {t.log}):\n"
                           f"{tail(t.log, 40)}")
    return {"setup_s": t.seconds, "initial_up_s": ups, "log": t.log}


# --------------------------------------------------------------------------- change rounds


def set_bench_record(records_file: Path, value: str) -> None:
    lines = [ln for ln in records_file.read_text().splitlines()
             if f"name: {BENCH_RECORD}," not in ln]
    lines.append(f"  - {{name: {BENCH_RECORD}, type: TXT, data: '\"{value}\"'}}")
    records_file.write_text("\n".join(lines) + "\n")


def zone_records_file(stack_file: Path, zone: str) -> Path:
    config = yaml.safe_load(stack_file.read_text())["config"]
    for z in config.get(f"{PREFIX}zones") or []:
        if z["zoneName"] == zone and z.get("type") == "primary" and z.get("recordsFile"):
            return stack_file.parent / str(z["recordsFile"])
    raise RuntimeError(f"{stack_file.name}: no primary zone {zone} with a recordsFile")


def change_rounds(stacks: list[Stack], env: dict[str, str], rounds: int, zone: str,
                  converge_timeout: float, up_timeout: float) -> dict[str, Any]:
    primary, regions = stacks[0], stacks[1:]
    namespaces = {s.namespace: s.context for s in stacks}
    records = zone_records_file(PROJECT / f"Pulumi.{primary.name}.yaml", zone)
    out: dict[str, Any] = {"zone": zone, "records_file": str(records), "rounds": []}
    for n in range(1, rounds + 1):
        poller = SerialPoller(zone, namespaces, env).start()
        time.sleep(1.0)  # every pod answered at least once: the serials before the change
        before = poller.snapshot()
        baseline = newest([s for e in before.values() for s in e.first])
        set_bench_record(records, f"round {n} {time.time():.3f} {secrets.token_hex(4)}")
        t0 = time.monotonic()
        log(f"round {n}/{rounds}: record changed (serial before {baseline}); "
            f"pulumi up --stack {primary.name} ...")
        up = pulumi_up(primary.name, env, PROJECT, f"round{n}-up-{primary.name}.log", up_timeout)
        rnd: dict[str, Any] = {"round": n, "serial_before": baseline,
                               "up_primary_s": up.seconds, "up_primary_rc": up.rc}
        if up.rc != 0:
            rnd["up_error"] = tail(up.log)
        # wait until every secondary pod serves a serial past the baseline (or time out)
        deadline = time.monotonic() + converge_timeout
        target: int | None = None
        while True:
            snap = poller.snapshot()
            prim = [e for e in snap.values() if e.pod.role == "primary"]
            seen = [s for e in prim for s in e.first
                    if baseline is None or dns.serial.Serial(s) > dns.serial.Serial(baseline)]
            target = newest(seen)
            sec = [e for e in snap.values() if e.pod.role == "secondary" and not e.pod.deleting]
            if target is not None and sec and all(served_at(e, target) for e in sec):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        poller.stop()
        snap = poller.snapshot()
        rnd["serial_after"] = target
        if target is None:
            rnd["error"] = "no primary pod served a new serial"
            out["rounds"].append(rnd)
            log(f"round {n}: no primary pod served a new serial (up rc {up.rc})")
            continue
        prim_times = [t for e in snap.values() if e.pod.role == "primary"
                      for t in [served_at(e, target)] if t is not None]
        t_primary = min(prim_times)
        rnd["first_primary_after_start_s"] = round(t_primary - t0, 3)
        delays: dict[str, float | None] = {}
        for name, e in sorted(snap.items()):
            if e.pod.role != "secondary" or e.pod.deleting:
                continue
            t = served_at(e, target)
            delays[f"{e.pod.namespace}/{name}"] = (None if t is None
                                                   else round(max(0.0, t - t_primary), 3))
        rnd["secondary_delay_s"] = delays
        done = [d for d in delays.values() if d is not None]
        rnd["secondaries"] = len(delays)
        rnd["secondaries_not_converged"] = len(delays) - len(done)
        rnd["all_secondaries_s"] = (max(done) if done and len(done) == len(delays) else None)
        by_ns: dict[str, float | None] = {}
        for key, d in delays.items():
            ns = key.split("/", 1)[0]
            prev = by_ns.get(ns, 0.0)
            by_ns[ns] = None if d is None or prev is None else max(prev, d)
        rnd["last_secondary_by_namespace_s"] = by_ns
        if poller.errors:
            rnd["poller_errors"] = poller.errors[:5]
        rnd["up_regions_s"] = {}
        for region in regions:
            r = pulumi_up(region.name, env, PROJECT, f"round{n}-up-{region.name}.log",
                          up_timeout)
            rnd["up_regions_s"][region.name] = r.seconds
            if r.rc != 0:
                rnd.setdefault("up_region_errors", {})[region.name] = tail(r.log)
        log(f"round {n}: up {up.seconds:.1f} s, first primary serving "
            f"+{rnd['first_primary_after_start_s']:.2f} s, every secondary "
            f"{rnd['all_secondaries_s']} s after it ({rnd['secondaries_not_converged']} of "
            f"{len(delays)} not converged in {converge_timeout:.0f} s), regions "
            f"{rnd['up_regions_s']}")
        out["rounds"].append(rnd)
    ok = [r for r in out["rounds"] if "secondary_delay_s" in r]
    out["all_secondaries_s"] = summary([r["all_secondaries_s"] for r in ok
                                        if r["all_secondaries_s"] is not None])
    out["rounds_not_converged"] = sum(1 for r in ok if r["all_secondaries_s"] is None) + (
        len(out["rounds"]) - len(ok))
    out["per_pod_delay_s"] = summary([d for r in ok for d in r["secondary_delay_s"].values()
                                      if d is not None])
    out["first_primary_after_start_s"] = summary([r["first_primary_after_start_s"]
                                                  for r in ok])
    out["up_primary_s"] = summary([r["up_primary_s"] for r in out["rounds"]])
    out["up_region_s"] = {s.name: summary([r["up_regions_s"][s.name] for r in ok
                                           if s.name in r.get("up_regions_s", {})])
                          for s in regions}
    out["converge_timeout_s"] = converge_timeout
    return out


# --------------------------------------------------------------------------- query loss

STAT_RE = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "interrupted": re.compile(r"Queries interrupted:\s+(\d+)"),
}


def ensure_dnsperf() -> str:
    path = shutil.which("dnsperf")
    if path:
        return path
    log("installing Debian's dnsperf (apt-get install -y dnsperf) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(["apt-get", "install", "-y", "-qq", "dnsperf"], env=env,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "dnsperf"], env=env,
                       capture_output=True, text=True, timeout=600, check=True)
    path = shutil.which("dnsperf")
    if not path:
        raise RuntimeError("dnsperf is not installed and apt-get could not install it")
    return path


def parse_dnsperf(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, rx in STAT_RE.items():
        m = rx.search(text)
        out[key] = int(m.group(1)) if m else None
    m = re.search(r"Response codes:\s*(.*)", text)
    codes = dict(re.findall(r"([A-Z]+) (\d+)", m.group(1))) if m else {}
    out["rcodes"] = {k: int(v) for k, v in codes.items()}
    # every query names an existing zone's SOA or NS: any other answer than NOERROR is a
    # failure (NXDOMAIN too); REFUSED/SERVFAIL from a pod starting or going away show here
    out["not_noerror"] = sum(v for k, v in out["rcodes"].items() if k != "NOERROR")
    return out


def loss_run(kind: str, run: int, stacks: list[Stack], env: dict[str, str], qps: int,
             clients: int, lead: float, tail_s: float, queries: Path) -> dict[str, Any]:
    services = [(s, inst, role, ip) for s in stacks for inst, role, ip in s.services]
    rolls = [(s.context, s.namespace, inst) for s, inst, role, _ in services if role == kind]
    LOGS.mkdir(parents=True, exist_ok=True)
    procs = []
    for s, inst, _role, ip in services:
        path = LOGS / f"dnsperf-{kind}-{run}-{inst}.log"
        fh = path.open("w")
        cmd = ["dnsperf", "-s", ip, "-d", str(queries), "-Q", str(qps), "-t", "1",
               "-c", str(clients), "-l", "3600"]
        procs.append((s, inst, ip, path, fh,
                      subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                       start_new_session=True)))
    started = time.monotonic()
    time.sleep(lead)
    roll_times: dict[str, float] = {}
    errors: list[str] = []
    for context, ns, name in rolls:
        t = time.monotonic()
        for cmd in ([*kubectl(context), "-n", ns, "rollout", "restart", f"deployment/{name}"],
                    [*kubectl(context), "-n", ns, "rollout", "status", f"deployment/{name}",
                     "--timeout=600s"]):
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=660)
            if r.returncode != 0:
                errors.append(f"{' '.join(cmd)}: {r.stderr.strip()[-300:]}")
                break
        roll_times[f"{ns}/{name}"] = round(time.monotonic() - t, 2)
    time.sleep(tail_s)  # the old pods' preStop sleep and termination, kube-proxy's update
    for *_rest, proc in procs:
        proc.send_signal(signal.SIGINT)
    per_service: dict[str, Any] = {}
    for s, inst, ip, path, fh, proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        fh.close()
        stats = parse_dnsperf(path.read_text(errors="replace"))
        per_service[ip] = {"stack": s.name, "instance": inst, "log": str(path), **stats}
    lost = sum(v["lost"] or 0 for v in per_service.values())
    sent = sum(v["sent"] or 0 for v in per_service.values())
    result = {"kind": kind, "run": run, "window_s": round(time.monotonic() - started, 1),
              "rolled": roll_times, "sent": sent, "lost": lost,
              "completed": sum(v["completed"] or 0 for v in per_service.values()),
              "not_noerror": sum(v["not_noerror"] for v in per_service.values()),
              "services": per_service}
    if errors:
        result["errors"] = errors
    log(f"loss {kind} roll run {run}: sent {sent}, lost {lost}, non-NOERROR "
        f"{result['not_noerror']} over {result['window_s']} s "
        f"({', '.join(f'{k} {v} s' for k, v in roll_times.items())})")
    return result


def query_loss(stacks: list[Stack], env: dict[str, str], runs: int, qps: int, clients: int,
               lead: float, tail_s: float) -> dict[str, Any]:
    ensure_dnsperf()
    zones = sorted({z for s in stacks for z in s.zones})
    with tempfile.TemporaryDirectory(prefix="bench-dnsperf-") as tmp:
        queries = Path(tmp) / "queries.txt"
        queries.write_text("".join(f"{z} SOA\n{z} NS\n" for z in zones))
        out: dict[str, Any] = {"qps_per_service": qps, "clients": clients, "timeout_s": 1,
                               "services": [ip for s in stacks for *_x, ip in s.services],
                               "queries": [f"{z} SOA, {z} NS" for z in zones]}
        for kind in ("primary", "secondary"):
            results = [loss_run(kind, run, stacks, env, qps, clients, lead, tail_s, queries)
                       for run in range(1, runs + 1)]
            out[kind] = {"runs": results, "lost": [r["lost"] for r in results],
                         "sent": [r["sent"] for r in results],
                         "not_noerror": [r["not_noerror"] for r in results]}
    return out


# --------------------------------------------------------------------------- 1,000 zones


class RssSampler:
    """Peak RSS of a process tree (the pulumi CLI and every descendant), from /proc."""

    PAGE = os.sysconf("SC_PAGE_SIZE")

    def __init__(self, root_pid: int, interval: float = 0.2) -> None:
        self.root, self.interval = root_pid, interval
        self.peak_total = 0
        self.peak_by_name: dict[str, int] = {}
        self.lives: dict[int, dict[str, Any]] = {}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _tree(self) -> list[int]:
        kids: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rfind(")") + 2:].split()[1])
            kids.setdefault(ppid, []).append(int(d))
        todo, seen = [self.root], []
        while todo:
            pid = todo.pop()
            seen.append(pid)
            todo.extend(kids.get(pid, []))
        return seen

    TICK = os.sysconf("SC_CLK_TCK")

    def sample(self) -> None:
        total = 0
        now = time.monotonic()
        for pid in self._tree():
            try:
                rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * self.PAGE
                name = Path(f"/proc/{pid}/comm").read_text().strip()
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rfind(")") + 2:].split()
                cpu = (int(fields[11]) + int(fields[12])) / self.TICK
            except (OSError, ValueError, IndexError):
                continue
            total += rss
            self.peak_by_name[name] = max(self.peak_by_name.get(name, 0), rss)
            seen = self.lives.setdefault(pid, {"name": self._label(pid, name),
                                               "first": now, "last": now, "cpu": cpu})
            seen["last"], seen["cpu"] = now, cpu
        self.peak_total = max(self.peak_total, total)

    @staticmethod
    def _label(pid: int, name: str) -> str:
        """comm, and for Python which engine part it is (the program, a provider host)."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return name
        words = [Path(a.decode(errors="replace")).name for a in argv[:3] if a]
        tail = next((w for w in words if w.startswith(("pulumi-", "__main__", "provider"))),
                    "")
        return f"{name} {tail}".strip()

    def lifetimes(self, start: float) -> list[dict[str, Any]]:
        """Each process of the tree: when it was first and last seen (seconds after
        *start*, 0.2 s resolution) and its CPU seconds when last seen; which part of the
        engine is still alive, and busy, at the end of a run."""
        return [{"pid": pid, "name": v["name"], "first_s": round(v["first"] - start, 1),
                 "last_s": round(v["last"] - start, 1), "cpu_s": round(v["cpu"], 2)}
                for pid, v in sorted(self.lives.items(), key=lambda kv: kv[1]["first"])]

    def _loop(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()

    def start(self) -> RssSampler:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)


# synth's host parts -> offsets into a region's LoadBalancer pool: its upper half, as the
# cluster stacks, which stay up beside the big ones, take the lower (.64i+16, +17).
BIG_POOL_OFFSETS = {10: 8, 20: 9, 21: 10}


def big_address(addr: str, by_index: dict[int, Region]) -> str:
    """synth's 10.0.X.Y -> an address of the pool of region X (synth numbers its regions as
    scripts/cluster.sh does: 1 us-east-1, 2 us-west-2, 3 eu-west-1)."""
    m = re.fullmatch(r"10\.0\.(\d+)\.(\d+)", addr)
    if not m:
        return addr
    return by_index[int(m.group(1))].pool_address(BIG_POOL_OFFSETS[int(m.group(2))])


def _region_of(addr: str, regions: list[Region]) -> Region | None:
    ip = ipaddress.ip_address(addr.rsplit(":", 1)[0] if addr.count(":") == 1 else addr)
    return next((r for r in regions if ip in ipaddress.ip_network(r.block)), None)


def big_stack_config(config: dict[str, Any], regions: list[Region],
                     ref: dict[str, Any], gate_via: str | None = None) -> dict[str, Any]:
    """One of synth's stack configs moved onto its region's cluster, as the cluster stacks
    are: its context, LoadBalancer addresses of its region's pool pinned by annotation, and
    peerCidrs for the NAT blocks of the other regions it talks to (plus the host, whose gate
    asks the primaries); *gate_via*: the stacks' gate.via (None: the default)."""
    if gate_via:
        config[f"{PREFIX}gate"] = {**(config.get(f"{PREFIX}gate") or {}), "via": gate_via}
    by_index = {r.index: r for r in regions}
    region = next(r for r in regions if r.name == config[f"{PREFIX}region"])
    config["kubernetes:context"] = region.context
    config[f"{PREFIX}namespace"] = f"bench-{region.name}"
    config[f"{PREFIX}environment"] = "test"
    zones = config[f"{PREFIX}zones"]
    for zone in zones:
        if zone.get("alsoNotify"):
            zone["alsoNotify"] = [big_address(a, by_index) for a in zone["alsoNotify"]]
        sc = zone.get("secondaryConfig")
        if sc and sc.get("primaryServers"):
            sc["primaryServers"] = [big_address(a, by_index) for a in sc["primaryServers"]]
    ref_svc = ref.get("service") or {}
    for inst in config[f"{PREFIX}instances"]:
        addr = big_address(inst["service"]["loadBalancerIP"], by_index)
        if _region_of(addr, regions) != region:
            raise ValueError(f"{inst['name']}: {addr} is not in {region.name}'s pool")
        inst["service"] = {"type": "LoadBalancer", "loadBalancerIP": addr,
                           "loadBalancerIPAnnotation": ref_svc.get(
                               "loadBalancerIPAnnotation", "metallb.io/loadBalancerIPs")}
        inst["image"] = ref["image"]
        inst["resources"] = {"requests": {"cpu": "100m", "memory": "128Mi"},
                             "limits": {"memory": "1Gi"}}
        labels = inst.get("labels") or {}
        mine = [z for z in zones if z.get("type") == inst["role"] and all(
            labels.get(k) == v for k, v in
            ((z.get("instanceSelector") or {}).get("matchLabels") or {}).items())]
        # a primary hears from its zones' secondaries, a secondary from its primaries
        peers = [a for z in mine for a in (z.get("alsoNotify") or []) + (
            (z.get("secondaryConfig") or {}).get("primaryServers") or [])]
        cidrs = sorted({r.block for a in peers if (r := _region_of(a, regions))
                        and r != region}, key=ipaddress.ip_network)
        if inst["role"] == "primary":
            cidrs.append(f"{HOST_IP}/32")
        if cidrs:
            inst.setdefault("config", {})["peerCidrs"] = cidrs
    return config


def big_project(zones: int, records: int, cluster_stack: Path,
                gate_via: str | None = None) -> tuple[Path, list[Stack]]:
    """synth's three stacks, each made to run on its region's local cluster."""
    from engine_preview import zones_to_manifests  # bench/engine_preview.py

    project = ROOT / ".cache" / "bench" / f"cluster-project-{zones}x{records}"
    log(f"writing the synthetic project {project} ({zones} zones x {records} records) ...")
    synth.write_project(project, zones, records, octodns=False, inline=True)
    shutil.copy(ROOT / "Pulumi.yaml", project / "Pulumi.yaml")
    for item in ("__main__.py", "components", "bind9_topology", "requirements.txt"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, project / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, project / item)
    ref = yaml.safe_load(cluster_stack.read_text())["config"][f"{PREFIX}instances"][0]
    regions = cluster_regions(ROOT)
    for stack in synth.STACKS:
        path = project / f"Pulumi.{stack}.yaml"
        doc = yaml.safe_load(path.read_text())
        big_stack_config(doc["config"], regions, ref, gate_via)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        zones_to_manifests(project, stack)
    stacks = []
    for stack in synth.STACKS:
        config = yaml.safe_load((project / f"Pulumi.{stack}.yaml").read_text())["config"]
        stacks.append(Stack(stack, config[f"{PREFIX}namespace"],
                            config[f"{PREFIX}instances"], [],
                            config.get("kubernetes:context")))
    return project, stacks


#: engine events whose arrival `copy_marking` notes: (mark, substrings the line has)
MARKS = (("first_event", ('"preludeEvent"',)),
         ("gate_outputs", ('"resOutputsEvent"', "TransferGate::")),
         ("region_outputs", ('"resOutputsEvent"', "index:Bind9Region::")),
         ("stack_outputs", ('"resOutputsEvent"', "pulumi:pulumi:Stack::")),
         ("summary", ('"summaryEvent"',)))


def copy_marking(proc: subprocess.Popen[bytes], fh: Any, start: float,
                 marks: dict[str, float]) -> None:
    """Copy the CLI's `--json` events to *fh*, noting when (seconds after *start*) the
    events of MARKS arrive: the engine's own timestamps are whole seconds, and say
    nothing of the time between its summary and the CLI's exit."""
    assert proc.stdout is not None
    for raw in proc.stdout:
        fh.write(raw.decode(errors="replace"))
        head = raw[:600].decode(errors="replace")
        for mark, needles in MARKS:
            if mark not in marks and all(n in head for n in needles):
                marks[mark] = time.monotonic() - start


def slowest_steps(events: Path, top: int = 8) -> list[dict[str, Any]]:
    """Where an `up` spent its time: per resource, the engine's step from its pre-event to
    its outputs event (`pulumi up --json`), slowest first, as offsets from the start."""
    begin: dict[str, float] = {}
    steps: list[dict[str, Any]] = []
    first: float | None = None
    try:
        lines = events.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        ts = ev.get("timestamp")
        if not isinstance(ts, (int, float)):
            continue
        first = ts if first is None else first
        for kind, bucket in (("resourcePreEvent", "pre"), ("resOutputsEvent", "out")):
            meta = (ev.get(kind) or {}).get("metadata") or {}
            urn = meta.get("urn")
            if not urn:
                continue
            if bucket == "pre":
                begin[urn] = ts
            elif urn in begin:
                steps.append({"resource": urn.rsplit("::", 1)[-1], "type": meta.get("type"),
                              "op": meta.get("op"), "start_s": round(begin[urn] - first, 1),
                              "seconds": round(ts - begin[urn], 1)})
    steps.sort(key=lambda st: -st["seconds"])
    return steps[:top]


def pod_memory(stack: Stack, env: dict[str, str]) -> dict[str, dict[str, float]]:
    """pod/container -> peak and current memory (MiB) from the cluster's own cgroups (v1
    here: /sys/fs/cgroup/memory/<cgroupRoot>/kubepods/<qos>/pod<uid>/<container id>)."""
    r = subprocess.run([*kubectl(stack.context), "-n", stack.namespace, "get", "pods", "-o",
                        "json"], env=env, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return {}
    root = Path("/sys/fs/cgroup/memory") / (stack.context or "")
    out: dict[str, dict[str, float]] = {}
    for pod in json.loads(r.stdout).get("items", []):
        uid = pod["metadata"]["uid"]
        for st in (pod.get("status") or {}).get("containerStatuses") or []:
            cid = (st.get("containerID") or "").rpartition("://")[2]
            found = list(root.glob(f"kubepods*/**/pod{uid}/{cid}")) if cid else []
            if not found:
                continue
            def read(name: str, d: Path = found[0]) -> float:
                return round(int((d / name).read_text()) / 2**20, 1)
            out[f"{pod['metadata']['name']}/{st['name']}"] = {
                "peak_mib": read("memory.max_usage_in_bytes"),
                "now_mib": read("memory.usage_in_bytes")}
    return out


def keep_pod_logs(stack: Stack, env: dict[str, str], prefix: str) -> None:
    """named's log of every pod of *stack* (start-up, transfers), kept beside the up log."""
    r = subprocess.run([*kubectl(stack.context), "-n", stack.namespace, "get", "pods", "-o",
                        "name"], env=env, capture_output=True, text=True, timeout=60)
    for pod in r.stdout.split():
        name = pod.removeprefix("pod/")
        with (LOGS / f"{prefix}-{name}.named.log").open("w") as fh:
            subprocess.run([*kubectl(stack.context), "-n", stack.namespace, "logs", name,
                            "-c", "bind9", "--timestamps"], env=env, stdout=fh,
                           stderr=subprocess.STDOUT, timeout=120)


def big_stacks(env: dict[str, str], zones: int, records: int, up_timeout: float,
               destroy: bool, gate_via: str | None = None) -> dict[str, Any]:
    project, stacks = big_project(zones, records, PROJECT / f"Pulumi.{PRIMARY_STACK}.yaml",
                                  gate_via)
    state = project / ".state"
    shutil.rmtree(state, ignore_errors=True)
    shutil.rmtree(project / ".cache", ignore_errors=True)  # the zone content cache: cold
    state.mkdir(parents=True)
    benv = {**env, "PULUMI_BACKEND_URL": f"file://{state}"}
    out: dict[str, Any] = {"zones": zones, "records": records, "project": str(project),
                           "gate_via": gate_via or "kubernetes-api (default)",
                           "stacks": {}}
    for s in stacks:
        subprocess.run([*kubectl(s.context), "create", "namespace", s.namespace], env=env,
                       capture_output=True, timeout=60)
        pulumi(["stack", "select", "--create"], s.name, benv, project,
               f"big-init-{s.name}.log", 120)
        pulumi(["config", "set", "--secret", f"{PREFIX}tsigSecret"], s.name, benv, project,
               f"big-config-{s.name}.log", 120, stdin_text=synth.TSIG_SECRET)
    for s in stacks:
        log(f"big: pulumi up --stack {s.name} (cold, {zones} zones) ...")
        LOGS.mkdir(parents=True, exist_ok=True)
        log_path = LOGS / f"big-up-{s.name}.log"
        start = time.monotonic()
        with log_path.open("w") as fh:
            # --json: the engine's events, one JSON object per line, each timestamped
            events = log_path
            proc = subprocess.Popen([*os.environ.get("BENCH_UP_WRAP", "").replace(
                                        "%s", s.name).split(),
                                     "pulumi", "up", "--yes", "--skip-preview",
                                     "--non-interactive", "--stack", s.name, "--json"],
                                    cwd=project, env=benv, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            sampler = RssSampler(proc.pid).start()
            marks: dict[str, float] = {}
            copier = threading.Thread(target=copy_marking, args=(proc, fh, start, marks),
                                      daemon=True)
            copier.start()
            try:
                proc.wait(up_timeout)
            except subprocess.TimeoutExpired:
                stop_group(proc)
            copier.join(30)
            sampler.stop()
        elapsed = round(time.monotonic() - start, 2)
        res: dict[str, Any] = {
            "up_s": elapsed, "rc": proc.returncode, "log": str(log_path),
            "peak_rss_tree_mb": round(sampler.peak_total / 2**20, 1),
            "peak_rss_by_process_mb": {k: round(v / 2**20, 1) for k, v in
                                       sorted(sampler.peak_by_name.items(),
                                              key=lambda kv: -kv[1])[:8]}}
        res["slowest_steps"] = slowest_steps(events)
        res["processes"] = sampler.lifetimes(start)
        res["marks_s"] = {k: round(v, 1) for k, v in marks.items()}
        res["marks_s"]["exit"] = elapsed
        if proc.returncode != 0:
            res["error"] = tail(str(log_path), 25)
        keep_pod_logs(s, env, f"big-{s.name}")
        res["pod_memory_mib"] = pod_memory(s, env)
        out["stacks"][s.name] = res
        log(f"big: {s.name} up in {elapsed} s (rc {proc.returncode}), peak RSS of the "
            f"engine's tree {res['peak_rss_tree_mb']} MB")
        if proc.returncode != 0:
            break
    if destroy:
        for s in reversed(stacks):
            if s.name in out["stacks"]:
                log(f"big: pulumi destroy --stack {s.name} ...")
                d = pulumi(["destroy", "--yes"], s.name, benv, project,
                           f"big-destroy-{s.name}.log", up_timeout)
                out["stacks"][s.name]["destroy_s"] = d.seconds
                out["stacks"][s.name]["destroy_rc"] = d.rc
    return out


# --------------------------------------------------------------------------- report


def git_rev() -> str | None:
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                       text=True)
    return r.stdout.strip() or None


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, list):
        return "/".join(fmt(x) for x in v)
    return str(v)


def verdict(key: str, value: Any) -> str:
    if key not in TARGETS or value is None:
        return ""
    op, target = TARGETS[key]
    ok = {"<": value < target, "<=": value <= target}[op]
    return ("met" if ok else "MISSED") + f" ({op} {target})"


def flat_figures(result: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, flat, as in bench/run.py's latest.json."""
    f: dict[str, Any] = {}
    ch = result.get("change")
    if ch:
        for stat in ("p50", "p95", "max"):
            f[f"change_all_secondaries_{stat}_s"] = ch["all_secondaries_s"][stat]
            f[f"change_per_pod_{stat}_s"] = ch["per_pod_delay_s"][stat]
            f[f"up_primary_{stat}_s"] = ch["up_primary_s"][stat]
        f["change_rounds_not_converged"] = ch["rounds_not_converged"]
        for stack, s in ch["up_region_s"].items():
            for stat in ("p50", "max"):
                f[f"up_{stack}_{stat}_s"] = s[stat]
    lo = result.get("loss")
    if lo:
        for kind in ("primary", "secondary"):
            f[f"loss_{kind}_roll_lost"] = lo[kind]["lost"]
            f[f"loss_{kind}_roll_lost_max"] = max(lo[kind]["lost"]) if lo[kind]["lost"] else None
            f[f"loss_{kind}_roll_sent"] = lo[kind]["sent"]
            f[f"loss_{kind}_roll_not_noerror"] = lo[kind]["not_noerror"]
    big = result.get("big")
    if big and big.get("stacks"):
        st = big["stacks"]
        prim = st.get(synth.PRIMARY_STACK, {})
        f["big_up_primary_s"] = prim.get("up_s") if prim.get("rc") == 0 else None
        regions = [st[s]["up_s"] for s in synth.SECONDARY_STACKS
                   if s in st and st[s].get("rc") == 0]
        f["big_up_region_s"] = regions
        f["big_up_region_max_s"] = (max(regions) if len(regions) == len(synth.SECONDARY_STACKS)
                                    else None)
        f["big_peak_rss_tree_mb"] = max((v["peak_rss_tree_mb"] for v in st.values()),
                                        default=None)
    return f


def print_table(result: dict[str, Any]) -> None:
    f = result["figures"]
    m = result["machine"]
    print(f"cluster bench ({result.get('label')}) at {result.get('git_rev')} on "
          f"{m['nproc']} x {m['cpu']}; {result['wall_s']} s")
    rows: list[tuple[str, str]] = [
        ("change -> every secondary pod, after 1st primary: p50 s", "change_all_secondaries_p50_s"),
        ("                                              p95 s", "change_all_secondaries_p95_s"),
        ("                                              max s", "change_all_secondaries_max_s"),
        ("rounds with a secondary pod not converged", "change_rounds_not_converged"),
        ("per secondary pod delay p50 / p95 / max s", ""),
        ("pulumi up --stack cluster (one record) p50 s", "up_primary_p50_s"),
        ("                                       p95 s", "up_primary_p95_s"),
        ("                                       max s", "up_primary_max_s"),
    ]
    width = 56
    for label, key in rows:
        if key == "" and "change_per_pod_p50_s" in f:
            print(f"  {label:<{width}} {fmt(f['change_per_pod_p50_s'])} / "
                  f"{fmt(f['change_per_pod_p95_s'])} / {fmt(f['change_per_pod_max_s'])}")
        elif key in f:
            print(f"  {label:<{width}} {fmt(f[key]):>10}  {verdict(key, f[key])}")
    for stack, s in (result.get("change") or {}).get("up_region_s", {}).items():
        label = f"pulumi up --stack {stack} (after the change) p50 / max s"
        print(f"  {label:<{width}} {fmt(s['p50'])} / {fmt(s['max'])}")
    for kind in ("primary", "secondary"):
        key = f"loss_{kind}_roll_lost"
        if key in f:
            print(f"  {f'queries lost, {kind} roll (per run)':<{width}} {fmt(f[key]):>10}  "
                  f"{verdict(key + '_max', f[key + '_max'])}  of "
                  f"{fmt(f[f'loss_{kind}_roll_sent'])} sent, non-NOERROR "
                  f"{fmt(f[f'loss_{kind}_roll_not_noerror'])}")
    if "big_up_primary_s" in f or "big_up_region_s" in f:
        big = result["big"]
        print(f"  {big['zones']} zones x {big['records']} records, cold:")
        for stack, s in big["stacks"].items():
            key = "big_up_primary_s" if stack == synth.PRIMARY_STACK else "big_up_region_max_s"
            print(f"    pulumi up --stack {stack:<12} {fmt(s['up_s']):>8} s (rc {s['rc']})  "
                  f"peak RSS tree {s['peak_rss_tree_mb']} MB  "
                  f"{verdict(key, s['up_s'] if s['rc'] == 0 else None)}")
            top = ", ".join(f"{k} {v}" for k, v in list(s["peak_rss_by_process_mb"].items())[:4])
            print(f"      largest processes (MB): {top}")
    for note in result.get("notes", []):
        print(f"  note: {note}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--zone", default="example.com")
    ap.add_argument("--converge-timeout", type=float, default=90.0,
                    help="per round: how long after `pulumi up` to wait for every secondary pod")
    ap.add_argument("--loss-runs", type=int, default=3)
    ap.add_argument("--qps", type=int, default=100, help="dnsperf rate per Service")
    ap.add_argument("--clients", type=int, default=4, help="dnsperf -c (source ports)")
    ap.add_argument("--lead", type=float, default=3.0, help="dnsperf seconds before the roll")
    ap.add_argument("--tail", type=float, default=20.0,
                    help="dnsperf seconds after `rollout status` (old pods terminating)")
    ap.add_argument("--zones", type=int, default=0, help="the big part: N zones (0: skip it)")
    ap.add_argument("--records", type=int, default=100)
    ap.add_argument("--big-timeout", type=float, default=1200.0,
                    help="bound of each big `pulumi up`")
    ap.add_argument("--gate-via", choices=["kubernetes-api", "pod-network"], default=None,
                    help="big: the stacks' gate.via (default: the product's, kubernetes-api)")
    ap.add_argument("--keep-big", action="store_true",
                    help="leave the big stacks up (default: destroy them unless --down)")
    ap.add_argument("--skip", default="", help="comma list: setup,change,loss,big")
    ap.add_argument("--no-setup", action="store_true", help="the same as --skip setup")
    ap.add_argument("--up-timeout", type=float, default=900.0)
    ap.add_argument("--down", action="store_true",
                    help="at the end: bash scripts/run-cluster.sh --destroy (stacks, cluster)")
    ap.add_argument("--label", default="latest", help="bench/results/cluster-<label>.json")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if args.no_setup:
        skip.add("setup")
    if not args.zones:
        skip.add("big")
    t0 = time.monotonic()
    result: dict[str, Any] = {"label": args.label, "git_rev": git_rev(), "root": str(ROOT),
                              "machine": machine(), "args": vars(args),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    notes: list[str] = []
    status = 0
    try:
        if "setup" not in skip:
            result["setup"] = setup(dict(os.environ), args.up_timeout * 4)
        env = cluster_env()
        stacks = read_stacks(PROJECT)
        if not stacks:
            raise RuntimeError(f"no Pulumi.cluster*.yaml in {PROJECT}: run without --no-setup")
        result["stacks"] = {s.name: {"namespace": s.namespace, "context": s.context,
                                     "services": s.services}
                            for s in stacks}
        if "change" not in skip:
            result["change"] = change_rounds(stacks, env, args.rounds, args.zone,
                                             args.converge_timeout, args.up_timeout)
            notes.append("change: per round, the last secondary pod (of every instance of "
                         "every region) to serve the new SOA serial, after the first primary "
                         f"pod served it (UDP SOA to each pod IP every 20 ms); a pod not "
                         f"serving it {args.converge_timeout:.0f} s after `pulumi up` counts "
                         "as not converged (no delay)")
        if "loss" not in skip:
            result["loss"] = query_loss(stacks, env, args.loss_runs, args.qps, args.clients,
                                        args.lead, args.tail)
            notes.append(f"loss: dnsperf -Q {args.qps} -t 1 -c {args.clients} to each of "
                         f"{len(result['loss']['services'])} Services during `kubectl rollout "
                         "restart` of the primary Deployment / of each secondary Deployment "
                         f"in turn, {args.lead:.0f} s before and {args.tail:.0f} s after; "
                         "lost = dnsperf's 'Queries lost' summed over the Services")
        if "big" not in skip:
            result["big"] = big_stacks(env, args.zones, args.records, args.big_timeout,
                                       destroy=not (args.keep_big or args.down),
                                       gate_via=args.gate_via)
            notes.append("big: cold `pulumi up` (fresh state, empty zone content cache) of "
                         "synth's 3 stacks, each moved onto its region's cluster (LoadBalancer "
                         "addresses .64i+24-26 of each pool, namespaces bench-<region>); peak "
                         "RSS: the sum over the pulumi CLI's process tree, sampled from /proc "
                         "every 0.2 s")
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        notes.append(f"stopped: {exc}"[:2000])
        log(f"stopped: {exc}")
        status = 1
    finally:
        if args.down:
            log("bash scripts/run-cluster.sh --destroy ...")
            d = run_logged(["bash", "scripts/run-cluster.sh", "--destroy"], dict(os.environ),
                           ROOT, "down.log", args.up_timeout * 4)
            result["down"] = {"seconds": d.seconds, "rc": d.rc, "log": d.log}
    result["notes"] = notes
    result["figures"] = flat_figures(result)
    result["wall_s"] = round(time.monotonic() - t0, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"cluster-{args.label}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
