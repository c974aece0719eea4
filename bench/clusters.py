"""Issue 20's limits of the local clusters (scripts/cluster.sh: one cluster per region).

    python3 bench/clusters.py --up-time --json bench/results/clusters-up.json
        the clusters DOWN first (it refuses otherwise): `scripts/cluster.sh build`
        (untimed, so the figure is warm), then `bash scripts/cluster.sh up`, timed;
        the clusters are left up.
    python3 bench/clusters.py --memory --seconds 30 --json bench/results/clusters-memory.json
        the clusters and the cluster stacks up: RSS (VmRSS) of every process each cluster
        started (its pid files), containerd with its pods (shims and everything under
        them), per cluster and for the machine, sampled every second; peaks against the
        target (< 3 GB for every cluster together).

Reads /proc and /sys/fs/cgroup only; run as root (other users' /proc/<pid>/smaps_rollup).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("BENCH_REPO") or HERE.parent)
RUNS = ROOT / ".cache" / "cluster" / "run"  # scripts/cluster.sh: <region>/pids, shared/pids
LOGS = ROOT / ".cache" / "cluster" / "bench"
SOCKROOT = Path("/run/b9t")  # scripts/cluster.sh SOCKROOT: <region>/containerd.sock
CGROUP_MEMORY = Path("/sys/fs/cgroup/memory")  # cgroup v1; kubelet's cgroupRoot /b9t-<region>
HOST_IP = "10.250.0.1"  # the host on the bridge b9t0 (scripts/cluster.sh HOST_IP)
TARGET_BYTES = 3 * 10**9  # issue 20: every cluster together under 3 GB
MIB = 2**20
PODS = "pods"  # the row of containerd's shims and every process under them
sys.path.insert(0, str(HERE))

from run import machine  # noqa: E402  (one description of the machine for every bench)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- regions


@dataclass(frozen=True)
class Region:
    """One cluster as `scripts/cluster.sh regions` describes it."""

    name: str
    index: int
    node_ip: str
    pool: tuple[str, str]  # first and last LoadBalancer address
    netns: str

    @property
    def context(self) -> str:
        return f"b9t-{self.name}"

    @property
    def block(self) -> str:
        """The region's /26 of the bridge: where its pods' NAT'ed traffic comes from."""
        return str(ipaddress.ip_network(f"{self.node_ip}/26", strict=False))

    def pool_address(self, offset: int) -> str:
        first, last = (ipaddress.IPv4Address(a) for a in self.pool)
        addr = first + offset
        if not first <= addr <= last:
            raise ValueError(f"{self.name}: offset {offset} is outside the pool "
                             f"{self.pool[0]}-{self.pool[1]}")
        return str(addr)


def parse_regions(text: str) -> list[Region]:
    """Lines `name index node-ip first-last netns`, as `scripts/cluster.sh regions` prints."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        name, index, node_ip, pool, netns = line.split()
        first, last = pool.split("-")
        out.append(Region(name, int(index), node_ip, (first, last), netns))
    return out


def regions(root: Path = ROOT) -> list[Region]:
    """The clusters' regions and addresses from scripts/cluster.sh (one source of truth)."""
    out = subprocess.run(["bash", str(root / "scripts" / "cluster.sh"), "regions"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return parse_regions(out)


# --------------------------------------------------------------------------- pid files


def read_pids(runs: Path = RUNS) -> dict[str, dict[str, int]]:
    """{cluster dir (region or shared): {process: pid}} from `<runs>/*/pids/*`."""
    out: dict[str, dict[str, int]] = {}
    for path in sorted(runs.glob("*/pids/*")):
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            continue
        out.setdefault(path.parent.parent.name, {})[path.name] = pid
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def running_containerds(runs: Path = RUNS) -> dict[str, int]:
    """{region: pid} of every cluster whose containerd is alive (the cluster is up)."""
    return {group: pids["containerd"] for group, pids in read_pids(runs).items()
            if "containerd" in pids and alive(pids["containerd"])}


# --------------------------------------------------------------------------- /proc


@dataclass
class Proc:
    pid: int
    ppid: int
    comm: str
    rss: int  # bytes (VmRSS; 0 for kernel threads)
    cmdline: str
    pss: int | None = None  # bytes (smaps_rollup), when readable


def parse_stat_ppid(text: str) -> int:
    """The ppid from /proc/<pid>/stat (after the comm, which may hold spaces and ')')."""
    return int(text[text.rfind(")") + 2:].split()[1])


def parse_status_rss(text: str) -> int:
    """VmRSS from /proc/<pid>/status in bytes; 0 when absent (kernel threads)."""
    m = re.search(r"^VmRSS:\s+(\d+)\s+kB", text, re.M)
    return int(m.group(1)) * 1024 if m else 0


def parse_smaps_pss(text: str) -> int | None:
    """Pss from /proc/<pid>/smaps_rollup in bytes: RSS with shared pages split."""
    m = re.search(r"^Pss:\s+(\d+)\s+kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


def read_proc(pid: int, proc: Path = Path("/proc")) -> Proc | None:
    base = proc / str(pid)
    try:
        stat = (base / "stat").read_text()
        status = (base / "status").read_text()
        cmdline = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return None  # gone between listing and reading
    comm = stat[stat.find("(") + 1:stat.rfind(")")]
    return Proc(pid, parse_stat_ppid(stat), comm, parse_status_rss(status), cmdline.strip())


def read_pss(p: Proc, proc: Path = Path("/proc")) -> Proc:
    """Fill p.pss: only for the processes counted, as smaps_rollup walks page tables."""
    try:
        p.pss = parse_smaps_pss((proc / str(p.pid) / "smaps_rollup").read_text())
    except OSError:
        p.pss = None
    if p.pss is None and p.rss == 0:  # a zombie or kernel thread holds no memory
        p.pss = 0
    return p


def proc_table(proc: Path = Path("/proc")) -> dict[int, Proc]:
    """Every process once (the tree needs them all): one consistent view per sample."""
    table = {}
    for d in os.listdir(proc):
        if d.isdigit() and (p := read_proc(int(d), proc)) is not None:
            table[p.pid] = p
    return table


def descendants(table: dict[int, Proc], roots: list[int]) -> list[int]:
    """The roots (those still present) and every process below them."""
    kids: dict[int, list[int]] = {}
    for p in table.values():
        kids.setdefault(p.ppid, []).append(p.pid)
    seen: list[int] = []
    todo = [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(kids.get(pid, []))
    return seen


def shims_of(table: dict[int, Proc], sock: str) -> list[int]:
    """containerd's shims for one socket: they re-parent away from containerd (to 1 or a
    subreaper), so they are found by their `-address <sock>` argument, as cluster.sh does."""
    return [p.pid for p in table.values()
            if p.comm.startswith("containerd-shim") and f"-address {sock}" in p.cmdline]


@dataclass
class Usage:
    rss: int = 0
    pss: int | None = 0
    procs: int = 0

    def add(self, p: Proc) -> None:
        self.rss += p.rss
        self.procs += 1
        self.pss = None if self.pss is None or p.pss is None else self.pss + p.pss


def cluster_usage(table: dict[int, Proc], pids: dict[str, int],
                  sock: str | None) -> dict[str, Usage]:
    """Per process of a cluster's pid files, each with its descendants; containerd's shims
    and what runs under them (the pods) as the row `pods`. No process counts twice."""
    rows: dict[str, Usage] = {}
    counted: set[int] = set()
    groups: list[tuple[str, list[int]]] = []
    if sock and "containerd" in pids:
        groups.append((PODS, shims_of(table, sock)))
    groups += [(name, [pid]) for name, pid in sorted(pids.items())]
    for name, roots in groups:
        usage = rows.setdefault(name, Usage())
        for pid in descendants(table, roots):
            if pid not in counted:
                counted.add(pid)
                usage.add(read_pss(table[pid]))
    return rows


def cgroup_memory(name: str, root: Path = CGROUP_MEMORY) -> dict[str, int] | None:
    """A cluster's pod cgroup (kubelet's cgroupRoot): usage (with page cache), total_rss."""
    base = root / name
    try:
        usage = int((base / "memory.usage_in_bytes").read_text())
        stat = dict(line.split() for line in (base / "memory.stat").read_text().splitlines()
                    if line.count(" ") == 1)
    except (OSError, ValueError):
        return None
    return {"usage": usage, "total_rss": int(stat.get("total_rss", 0)),
            "total_cache": int(stat.get("total_cache", 0))}


def meminfo_used(path: Path = Path("/proc/meminfo")) -> int | None:
    """MemTotal - MemAvailable: the whole machine, everything else on it included."""
    try:
        info = {k: int(v.split()[0]) * 1024 for k, v in
                (line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)}
        return info["MemTotal"] - info["MemAvailable"]
    except (OSError, KeyError, ValueError):
        return None


# --------------------------------------------------------------------------- --memory


@dataclass
class Peaks:
    """Largest value seen per key over the samples (a total's peak is of one sample's sum)."""

    values: dict[str, int] = field(default_factory=dict)

    def see(self, key: str, value: int | None) -> None:
        if value is not None:
            self.values[key] = max(self.values.get(key, 0), value)


def sample(pid_map: dict[str, dict[str, int]], socks: dict[str, str],
           table: dict[int, Proc], cgroups: dict[str, dict[str, int] | None]) -> dict[str, Any]:
    """One sample: per cluster (group of pid files) the rows and totals, then the machine."""
    out: dict[str, Any] = {"clusters": {}, "total_rss": 0, "total_pss": 0}
    for group, pids in sorted(pid_map.items()):
        rows = cluster_usage(table, pids, socks.get(group))
        rss = sum(u.rss for u in rows.values())
        pss = (None if any(u.pss is None for u in rows.values())
               else sum(u.pss or 0 for u in rows.values()))
        out["clusters"][group] = {"rows": rows, "rss": rss, "pss": pss,
                                  "cgroup": cgroups.get(group)}
        out["total_rss"] += rss
        out["total_pss"] = None if pss is None or out["total_pss"] is None else (
            out["total_pss"] + pss)
    return out


def measure_memory(seconds: int, interval: float, pid_map: dict[str, dict[str, int]],
                   region_names: list[str]) -> dict[str, Any]:
    socks = {r: str(SOCKROOT / r / "containerd.sock") for r in region_names}
    peaks = Peaks()
    procs_seen: dict[str, int] = {}
    n = max(1, round(seconds / interval))  # samples, `interval` apart from the start
    next_at = time.monotonic()
    for i in range(n):
        if i:
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        table = proc_table()
        cgroups = {r: cgroup_memory(f"b9t-{r}") for r in region_names}
        s = sample(pid_map, socks, table, cgroups)
        for group, c in s["clusters"].items():
            for name, u in c["rows"].items():
                peaks.see(f"{group}/{name}/rss", u.rss)
                peaks.see(f"{group}/{name}/pss", u.pss)
                procs_seen[f"{group}/{name}"] = max(procs_seen.get(f"{group}/{name}", 0),
                                                    u.procs)
            peaks.see(f"{group}/rss", c["rss"])
            peaks.see(f"{group}/pss", c["pss"])
            for k, v in (c["cgroup"] or {}).items():
                peaks.see(f"{group}/cgroup_{k}", v)
        peaks.see("machine/rss", s["total_rss"])
        peaks.see("machine/pss", s["total_pss"])
        peaks.see("machine/meminfo_used", meminfo_used())
    return report_memory(peaks.values, procs_seen, pid_map, region_names, n, interval)


def report_memory(peaks: dict[str, int], procs_seen: dict[str, int],
                  pid_map: dict[str, dict[str, int]], region_names: list[str], samples: int,
                  interval: float) -> dict[str, Any]:
    """The JSON of --memory (MiB), from the peaks keyed `<cluster>/<row>/<kind>`."""
    def mib(key: str) -> float | None:
        return round(peaks[key] / MIB, 1) if key in peaks else None

    clusters: dict[str, Any] = {}
    groups = [r for r in region_names if r in pid_map] + sorted(set(pid_map) - set(region_names))
    for group in groups:
        rows = sorted({k.split("/")[1] for k in peaks
                       if k.startswith(f"{group}/") and k.count("/") == 2})
        clusters[group] = {
            "processes": {row: {"rss_mib": mib(f"{group}/{row}/rss"),
                                "pss_mib": mib(f"{group}/{row}/pss"),
                                "pids": pid_map[group].get(row),
                                "max_processes": procs_seen.get(f"{group}/{row}", 0)}
                          for row in rows},
            "total_rss_mib": mib(f"{group}/rss"),
            "total_pss_mib": mib(f"{group}/pss"),
            "cgroup_usage_mib": mib(f"{group}/cgroup_usage"),
            "cgroup_total_rss_mib": mib(f"{group}/cgroup_total_rss"),
        }
    total = peaks.get("machine/rss")
    return {
        "samples": samples, "interval_s": interval,
        "clusters": clusters,
        "machine_total_rss_mib": mib("machine/rss"),
        "machine_total_pss_mib": mib("machine/pss"),
        "machine_used_mib": mib("machine/meminfo_used"),
        "target_bytes": TARGET_BYTES,
        "target_mib": round(TARGET_BYTES / MIB, 1),
        "met": None if total is None else total < TARGET_BYTES,
        "notes": [
            "peaks over the samples; a total's peak is the largest sum of one sample, so it "
            "can be below the sum of the rows' peaks",
            "rss: VmRSS summed over each process and its descendants (shared pages, e.g. "
            "one binary's text in three clusters, count once per process: an upper bound); "
            "pss: the same with shared pages split (smaps_rollup), the better machine figure",
            f"{PODS}: every containerd-shim of the cluster's socket and everything under it "
            "(pause, named, the agent, the exporter)",
            "cgroup_*: /sys/fs/cgroup/memory/b9t-<region> (the pods only; usage includes "
            "page cache)",
            "machine_total_*: every cluster and the shared etcd, the figure the target is "
            "for; machine_used: MemTotal - MemAvailable, everything on the machine",
        ],
    }


def print_memory(res: dict[str, Any]) -> None:
    groups = list(res["clusters"])
    rows: list[str] = []
    for g in groups:
        rows += [r for r in res["clusters"][g]["processes"] if r not in rows]
    order = ["containerd", PODS]
    rows.sort(key=lambda r: (order.index(r) if r in order else len(order), r))
    width = 30

    def cell(v: float | None) -> str:
        return f"{v:>12,.1f}" if v is not None else f"{'-':>12}"

    print(f"cluster memory, MiB, peaks over {res['samples']} samples "
          f"{res['interval_s']:g} s apart (RSS)")
    print(f"  {'':<{width}}" + "".join(f"{g:>12}" for g in groups))
    for r in rows:
        vals = [res["clusters"][g]["processes"].get(r, {}).get("rss_mib") for g in groups]
        print(f"  {r:<{width}}" + "".join(cell(v) for v in vals))
    for key, label in (("total_rss_mib", "total RSS"), ("total_pss_mib", "total PSS"),
                       ("cgroup_usage_mib", "cgroup usage (pods, +cache)"),
                       ("cgroup_total_rss_mib", "cgroup total_rss (pods)")):
        print(f"  {label:<{width}}" + "".join(cell(res["clusters"][g].get(key))
                                              for g in groups))
    total = res["machine_total_rss_mib"]
    verdict = "n/a" if res["met"] is None else ("met" if res["met"] else "MISSED")
    print(f"  {'every cluster, RSS':<{width}}{cell(total)}  target < 3 GB "
          f"({res['target_mib']:,.0f} MiB): {verdict}")
    print(f"  {'every cluster, PSS':<{width}}{cell(res['machine_total_pss_mib'])}")
    print(f"  {'machine used (all of it)':<{width}}{cell(res['machine_used_mib'])}")


# --------------------------------------------------------------------------- --up-time

LINE_RE = re.compile(r"^cluster: \[(\d+) s\] (.*)$")


def parse_up_log(text: str) -> dict[str, Any]:
    """cluster.sh's `cluster: [N s] msg` lines: each region's ready time, and every step."""
    steps = [(int(m.group(1)), m.group(2)) for line in text.splitlines()
             if (m := LINE_RE.match(line))]
    ready = {}
    for sec, msg in steps:
        if m := re.match(r"(\S+): ready \(", msg):
            ready[m.group(1)] = sec
    return {"region_ready_s": ready, "steps": [f"[{s} s] {m}" for s, m in steps]}


def timed(cmd: list[str], log_path: Path) -> tuple[float, int, str]:
    """Run cmd from the repository, its output to the terminal and log_path; wall time."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log_path.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(line)
            fh.write(line)
        rc = proc.wait()
    return round(time.monotonic() - start, 2), rc, log_path.read_text(errors="replace")


def up_time(build: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if build:
        log("bash scripts/cluster.sh build (untimed: the measured `up` finds it done) ...")
        secs, rc, _ = timed(["bash", "scripts/cluster.sh", "build"], LOGS / "clusters-build.log")
        out["build"] = {"seconds": secs, "rc": rc}
        if rc != 0:
            raise RuntimeError(f"scripts/cluster.sh build exited {rc} "
                               f"(log {LOGS / 'clusters-build.log'})")
    log("bash scripts/cluster.sh up (timed) ...")
    path = LOGS / "clusters-up.log"
    secs, rc, text = timed(["bash", "scripts/cluster.sh", "up"], path)
    out.update({"up_s": secs, "rc": rc, "log": str(path), **parse_up_log(text)})
    return out


# --------------------------------------------------------------------------- main


def git_rev() -> str | None:
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                       text=True)
    return r.stdout.strip() or None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--up-time", action="store_true",
                      help="time `scripts/cluster.sh up`; the clusters must be down")
    mode.add_argument("--memory", action="store_true",
                      help="peak RSS of the running clusters (and their pods)")
    ap.add_argument("--seconds", type=int, default=30,
                    help="--memory: sample this long (one sample per --interval)")
    ap.add_argument("--interval", type=float, default=1.0, help="--memory: seconds apart")
    ap.add_argument("--no-build", action="store_true",
                    help="--up-time: skip the untimed `scripts/cluster.sh build` first")
    ap.add_argument("--json", type=Path, help="write the result here")
    args = ap.parse_args()

    names = [r.name for r in regions()]
    result: dict[str, Any] = {"git_rev": git_rev(), "machine": machine(),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "regions": names}
    status = 0
    if args.up_time:
        running = [f"{group}/{name} (pid {pid})" for group, pids in read_pids().items()
                   for name, pid in sorted(pids.items()) if alive(pid)]
        if running:  # a warm `up` from nothing: a process left running would skip its start
            print("clusters.py --up-time: the clusters must be down first; running: "
                  f"{', '.join(running)}. Run: bash scripts/cluster.sh down", file=sys.stderr)
            return 2
        if os.geteuid() != 0:
            print("clusters.py --up-time: run as root (scripts/cluster.sh up needs it)",
                  file=sys.stderr)
            return 2
        result["mode"] = "up-time"
        try:
            result.update(up_time(build=not args.no_build))
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            result["error"] = str(exc)
            status = 1
        if result.get("rc"):
            status = 1
        ready = result.get("region_ready_s", {})
        print(f"scripts/cluster.sh up: {result.get('up_s', 'n/a')} s (rc {result.get('rc')})"
              + "".join(f"\n  {r} ready at {s} s" for r, s in ready.items()))
        if "error" in result:
            print(f"  error: {result['error']}")
        print("the clusters are left up: bash scripts/cluster.sh down")
    else:
        up = running_containerds()
        missing = [r for r in names if r not in up]
        if missing:
            print(f"clusters.py --memory: no running containerd for {', '.join(missing)}: "
                  "bring the clusters and the cluster stacks up first "
                  "(bash scripts/run-cluster.sh --keep)", file=sys.stderr)
            return 2
        pid_map = read_pids()
        result["mode"] = "memory"
        result["pid_files"] = pid_map
        warnings = [f"{group}/{name}: pid {pid} is not running (its row reads 0)"
                    for group, pids in pid_map.items() for name, pid in sorted(pids.items())
                    if not alive(pid)]
        log(f"sampling every {args.interval:g} s for {args.seconds} s ...")
        result.update(measure_memory(args.seconds, args.interval, pid_map, names))
        no_pods = [r for r in names
                   if not (result["clusters"].get(r, {}).get("processes", {})
                           .get(PODS, {}).get("max_processes"))]
        if no_pods:
            warnings.append(f"no pods in {', '.join(no_pods)}: are the cluster stacks up? "
                            "(bash scripts/run-cluster.sh --keep)")
        result["warnings"] = warnings
        print_memory(result)
        for warning in warnings:
            print(f"  warning: {warning}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
