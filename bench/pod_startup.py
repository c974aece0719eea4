"""named start-up at many zones: start -> ready, and memory, for a primary and a secondary.

What a pod pays before its readiness probe passes, measured on this machine with real
named on loopback and the product's own rendering (load_topology -> render_instance ->
write_tree), synth's `bench` stack (its primary-dns and secondary-dns instances):

  primary    named started with every zone file on disk -> every zone loaded
  secondary  named started with an empty zone directory, the primary running ->
             every zone transferred (TSIG AXFR) and loaded

"Loaded" is what the pod's readiness check reads (bind9_topology/pod/ready.py: named's
statistics channel lists the zone with a serial), polled every 0.2 s with one request (the
poll must not take the CPU named needs); the check's own cost is reported too
(`ready_check_ms`: one statistics request and parse at that size, median of 5). Memory:
named's peak RSS (VmHWM) once ready. Each size runs in its own directory under a temporary
root; every named is stopped by pid.

    python bench/pod_startup.py --zones 1000,10000 [--records 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("BENCH_REPO") or HERE.parent)
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import synth  # noqa: E402

HOST = "127.0.0.1"
#: where every address the stack names that is not one of the two instances goes: a port
#: nothing listens on, so NOTIFYs to other regions stay on this machine
NOWHERE = (HOST, 9)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _vm(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _loaded(stats_port: int, zones: list[str]) -> int:
    """How many of *zones* named has loaded: one request, as the pod's check makes it."""
    import urllib.request

    from bind9_topology.pod.ready import loaded_zones

    try:
        with urllib.request.urlopen(f"http://{HOST}:{stats_port}/json/v1/zones",
                                    timeout=10) as resp:
            doc = json.loads(resp.read())
    except (OSError, ValueError):
        return -1
    have = loaded_zones(doc)
    return sum(1 for z in zones if z in have)


def _ready_check_ms(stats_port: int, zones: list[str]) -> float:
    """The readiness check itself (ready.py's request and parse), as the probe runs it."""
    from bind9_topology.pod import ready

    times = []
    for _ in range(5):
        t = time.perf_counter()
        rc = ready.main([str(stats_port), *zones])
        times.append((time.perf_counter() - t) * 1000)
        assert rc == 0, "ready.py says not ready after the bench saw every zone loaded"
    return round(statistics.median(times), 1)


def _wait_loaded(proc: Any, stats_port: int, zones: list[str], timeout: float,
                 started: float) -> float:
    deadline = started + timeout
    while time.monotonic() < deadline:
        if not proc.is_running():
            raise RuntimeError(f"named exited early; see {proc.log_path}")
        if _loaded(stats_port, zones) == len(zones):
            return round(time.monotonic() - started, 2)
        time.sleep(0.2)
    raise RuntimeError(f"not every zone loaded within {timeout:.0f} s "
                       f"({_loaded(stats_port, zones)} of {len(zones)})")


def one_size(zones: int, records: int, work: Path, timeout: float) -> dict[str, Any]:
    from bind9_topology.config.topology import load_topology, read_stack_file
    from bind9_topology.local.named_process import NamedProcess, free_port
    from bind9_topology.render.bind_files import Placement, render_instance, write_tree

    project = ROOT / ".cache" / "bench" / f"project-{zones}x{records}"
    stamp = project / ".synth-source"
    if not (stamp.exists() and stamp.read_text() == (HERE / "synth.py").read_text()):
        log(f"writing synthetic project {project} ...")
        synth.write_project(project, zones, records, octodns=False)
        stamp.write_text((HERE / "synth.py").read_text())
    t = time.perf_counter()
    topo = load_topology(read_stack_file(project, synth.PRIMARY_STACK),
                         stack=synth.PRIMARY_STACK, project_dir=project,
                         tsig_secret=synth.TSIG_SECRET)
    log(f"{zones} zones: model built in {time.perf_counter() - t:.1f} s")
    serials = {name: 2026120300 for name in topo.contents}
    names = sorted(topo.contents)
    ports = {"primary-dns": free_port(HOST), "secondary-dns": free_port(HOST)}
    stats = {"primary-dns": free_port(HOST), "secondary-dns": free_port(HOST)}
    amap: dict[tuple[str, int], tuple[str, int]] = {
        (synth.PRIMARY_IP, 53): (HOST, ports["primary-dns"]),
        ("10.0.1.20", 53): (HOST, ports["secondary-dns"])}
    for addr in synth.NOTIFY:
        amap.setdefault((addr, 53), NOWHERE)
    out: dict[str, Any] = {"zones": zones, "records": records}
    procs: list[Any] = []
    try:
        for name in ("primary-dns", "secondary-dns"):
            inst = next(i for i in topo.spec.instances if i.name == name)
            d = work / name
            placement = Placement(root=str(d), port=ports[name], listen_v4=HOST,
                                  listen_v6="none", address_map=amap,
                                  stats_port=stats[name])
            rendered = render_instance(topo.spec, inst, topo.contents, serials, placement,
                                       synth.TSIG_SECRET)
            write_tree(rendered, d, include_secrets=True)
            conf = d / "etc/bind/named.conf"
            proc = NamedProcess(name=name)
            started = time.monotonic()
            proc.start(conf, d, d / "named.log")
            procs.append(proc)
            ready_s = _wait_loaded(proc, stats[name], names, timeout, started)
            pid = proc.pid
            assert pid is not None
            out[name.split("-")[0]] = {
                "ready_s": ready_s,
                "peak_rss_mb": round((_vm(pid, "VmHWM") or 0) / 2**20, 1),
                "rss_mb": round((_vm(pid, "VmRSS") or 0) / 2**20, 1),
                "named_conf_bytes": conf.stat().st_size,
                "ready_check_ms": _ready_check_ms(stats[name], names),
            }
            log(f"{zones} zones: {name} ready in {ready_s} s, "
                f"peak RSS {out[name.split('-')[0]]['peak_rss_mb']} MB")
    finally:
        for proc in procs:
            proc.stop(timeout=10)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zones", default="1000,10000", help="comma list of zone counts")
    ap.add_argument("--records", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=900.0, help="bound of each wait")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", type=Path, default=None,
                    help="run in this directory and keep it (named's logs) instead of a "
                    "temporary one")
    args = ap.parse_args()
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin"
    result: dict[str, Any] = {"sizes": []}
    with tempfile.TemporaryDirectory(prefix="pod-startup-") as tmp:
        for n in (int(x) for x in args.zones.split(",") if x):
            work = (args.keep or Path(tmp)) / str(n)
            work.mkdir(parents=True)
            result["sizes"].append(one_size(n, args.records, work, args.timeout))
    if args.json:
        print(json.dumps(result))
    else:
        for s in result["sizes"]:
            for role in ("primary", "secondary"):
                r = s[role]
                print(f"{s['zones']:>6} zones  {role:<9} ready {r['ready_s']:>7.2f} s  "
                      f"peak RSS {r['peak_rss_mb']:>7.1f} MB  named.conf "
                      f"{r['named_conf_bytes']:>9,} B  readiness check "
                      f"{r['ready_check_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
