"""The gate verifying N zones (default 1,000) on 3 secondaries, concurrently and bounded.

Real `named` on loopback: one primary and three secondaries, started with
bind9_topology.local.named_process from configs rendered by
bind9_topology.render.bind_files (the same bytes as the ConfigMaps, with a
loopback Placement). The secondaries are seeded with the primary's zone files so
the bench measures verification, not the
initial transfer of N zones (named's serial-query-rate would pace that).

Timed: bind9_topology.dns.gate.wait_many (the gate's pure polling function, every
zone in one call as the provider and the local runner make it; ``--mode threads``:
wait_until_transferred per zone over a thread pool of gate.MAX_WORKERS zones, as
before); per zone it checks the primary (SOA with AA, exact serial, TSIG AXFR and
content digest) and the 3 secondaries (AA, serial at or past, and at the target the
TSIG AXFR digest). Also timed: the secondaries alone (the SOA fan-out only,
primaries=[]), and the full gate once more in the same process with nothing
changed (``verify_again_s``: what the process's content proofs save; ``pulls`` counts
the zone transfers of each pass where the gate reports them; ``answers_reused``: of those,
the answers whose bytes, but for the id and TSIG, equal one read before, so only their
TSIG was checked: bind9_topology.dns.fastxfr.ANSWERS, where the checkout has it).

    python bench/verify_fanout.py [--zones 1000] [--records 10] [--mode batch|threads] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("BENCH_REPO") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))

from bind9_topology.config.topology import load_topology  # noqa: E402
from bind9_topology.dns import gate  # noqa: E402
from bind9_topology.dns.checks import Endpoint, make_tsig_key  # noqa: E402
from bind9_topology.local.named_process import NamedProcess, free_port  # noqa: E402
from bind9_topology.render.bind_files import ZONE_DIR, Placement, render_instance, write_tree  # noqa: E402

HOST = "127.0.0.1"
SECONDARIES = {"sec-a": "10.0.1.20", "sec-b": "10.0.2.20", "sec-c": "10.0.3.20"}
SERIAL = 2024010100


def raw_config(zones: int, records: int) -> dict[str, Any]:
    def zone(n: int) -> dict[str, Any]:
        recs = [{"name": "@", "type": "NS", "data": "ns1.bench."}]
        recs += [{"name": f"h{i}", "type": "A", "data": f"10.{n % 256}.{i // 256}.{i % 256}"}
                 for i in range(records - 1)]
        return {
            "zoneName": f"z{n:05d}.bench", "type": "primary",
            "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
            "soaRecord": {"primaryNs": "ns1.bench.", "adminEmail": "hostmaster@bench.example"},
            "alsoNotify": list(SECONDARIES.values()),
            "records": recs,
        }

    instances = [{"name": "primary", "role": "primary",
                  "service": {"type": "LoadBalancer", "loadBalancerIP": "10.0.1.10"}}]
    instances += [{"name": n, "role": "secondary",
                   "service": {"type": "LoadBalancer", "loadBalancerIP": ip}}
                  for n, ip in SECONDARIES.items()]
    return {
        "region": "bench",
        "instances": instances,
        "zones": [zone(n) for n in range(zones)] + [
            {"zoneName": f"z{n:05d}.bench", "type": "secondary",
             "instanceSelector": {"matchLabels": {"dns-role": "secondary"}},
             "secondaryConfig": {"primaryServers": ["10.0.1.10"]}}
            for n in range(zones)
        ],
    }


def write_fanout(root: Path, zones: int, records: int, secret: str, ports: dict[str, int],
                 amap: dict[str, str]) -> Any:
    """The fan-out topology's named trees under *root* (the secondaries seeded with the
    primary's zones, so they start loaded): the loaded topology."""
    topo = load_topology(raw_config(zones, records), stack="bench", project_dir=root,
                         tsig_secret=secret)
    for inst in topo.spec.instances:
        placement = Placement(root=str(root / inst.name), port=ports[inst.name],
                              listen_v4=HOST, listen_v6="none", notify_delay=0,
                              address_map=amap)
        rendered = render_instance(topo.spec, inst, topo.contents,
                                   dict.fromkeys(topo.contents, SERIAL), placement, secret)
        write_tree(rendered, root / inst.name, include_secrets=True)
    for sec in SECONDARIES:
        shutil.copytree(root / "primary" / ZONE_DIR, root / sec / ZONE_DIR, dirs_exist_ok=True)
    return topo


def _named_cpu(procs: dict[str, NamedProcess]) -> float:
    """CPU seconds (user + system) the named processes used so far, from /proc."""
    total = 0
    for p in procs.values():
        pid = p.pid
        if pid is None:
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def run(zones: int, records: int, workers: int | None = None,
        mode: str = "batch") -> dict[str, Any]:
    secret = base64.b64encode(os.urandom(32)).decode()
    key = make_tsig_key("transfer-key", "hmac-sha256", secret)
    names = ["primary", *SECONDARIES]
    ports = {n: free_port(HOST) for n in names}
    ips = {"primary": "10.0.1.10", **SECONDARIES}
    amap = {(ips[n], 53): (HOST, ports[n]) for n in names}
    workers = workers or gate.MAX_WORKERS
    procs: dict[str, NamedProcess] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="verify-fanout-") as tmp:
        root = Path(tmp)
        topo = write_fanout(root, zones, records, secret, ports, amap)
        zone_names = sorted(topo.contents)
        digests = {z: topo.contents[z].digest for z in zone_names}
        setup_s = time.perf_counter() - t0
        try:
            t1 = time.perf_counter()
            for n in names:
                d = root / n
                procs[n] = NamedProcess(name=n)
                procs[n].start(d / "etc/bind/named.conf", d, d / "named.log")
            for n in names:
                procs[n].wait_ready((HOST, ports[n]), zone_names[-1:], 120)
            start_s = time.perf_counter() - t1
            prim = [Endpoint(HOST, ports["primary"], "primary")]
            secs = [Endpoint(HOST, ports[n], n) for n in SECONDARIES]

            def full(z: str) -> Any:
                return gate.wait_until_transferred(z, prim, secs, SERIAL, digests[z], key, 60, 1.0)

            def secondaries_only(z: str) -> Any:
                return gate.wait_until_transferred(z, [], secs, SERIAL, None, None, 60, 1.0)

            many = getattr(gate, "wait_many", None)
            if mode == "batch" and many is not None:  # every zone in one call, as the
                # provider and the local runner gate a stack's zones (ADR 19)
                def batch(jobs: list[Any], k: Any) -> Any:
                    return lambda: many(jobs, k, 60, 1.0)
                full_all = batch([gate.ZoneJob(z, prim, secs, SERIAL, digests[z])
                                  for z in zone_names], key)
                sec_all = batch([gate.ZoneJob(z, [], secs, SERIAL) for z in zone_names], None)
            else:
                def threads(fn: Any) -> Any:
                    def go() -> list[Any]:
                        with ThreadPoolExecutor(max_workers=workers) as pool:
                            return list(pool.map(fn, zone_names))
                    return go
                full_all, sec_all = threads(full), threads(secondaries_only)

            timings = {}
            cpu: dict[str, float] = {}
            named_cpu: dict[str, float] = {}
            pulls: dict[str, int | None] = {}
            answers = getattr(__import__("bind9_topology.dns.fastxfr", fromlist=["ANSWERS"]),
                              "ANSWERS", None)
            reused: dict[str, int | None] = {}
            for label, go in (("secondaries", sec_all), ("full", full_all),
                              ("again", full_all)):
                hits = answers.hits if answers is not None else 0
                t, c, nc = time.perf_counter(), time.process_time(), _named_cpu(procs)
                reports = go()
                reused[label] = answers.hits - hits if answers is not None else None
                timings[label] = time.perf_counter() - t
                cpu[label] = time.process_time() - c
                named_cpu[label] = _named_cpu(procs) - nc
                bad = [r.message for r in reports if not r.ok]
                if bad:
                    raise RuntimeError(f"{len(bad)} zones failed ({label}): {bad[:3]}")
                counted = [getattr(r, "pulls", None) for r in reports]
                pulls[label] = None if None in counted else sum(c or 0 for c in counted)
        finally:
            for p in procs.values():
                p.stop()
    return {
        "zones": zones, "records_per_zone": records, "secondaries": len(SECONDARIES),
        "workers": workers, "mode": mode,
        "function": ("bind9_topology.dns.gate.wait_many" if mode == "batch"
                     and hasattr(gate, "wait_many")
                     else "bind9_topology.dns.gate.wait_until_transferred"),
        "verify_s": round(timings["full"], 3),
        "verify_secondaries_only_s": round(timings["secondaries"], 3),
        "verify_again_s": round(timings["again"], 3),
        "pulls": pulls["full"], "pulls_again": pulls["again"],
        "answers_reused": reused["full"],
        # CPU seconds of this process (the gate) and of the 4 named during each pass: on a
        # shared 2-core machine the wall clock moves with the neighbours, these much less
        "verify_cpu_s": round(cpu["full"], 3), "verify_named_cpu_s": round(named_cpu["full"], 3),
        "verify_again_cpu_s": round(cpu["again"], 3),
        "verify_again_named_cpu_s": round(named_cpu["again"], 3),
        "verify_secondaries_only_cpu_s": round(cpu["secondaries"], 3),
        "setup_s": round(setup_s, 2), "named_start_s": round(start_s, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zones", type=int, default=1000)
    ap.add_argument("--records", type=int, default=10)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--mode", choices=("batch", "threads"), default="batch",
                    help="every zone in one wait_many (what the provider does), or "
                         "wait_until_transferred per zone over --workers threads (before)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = run(args.zones, args.records, args.workers, args.mode)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
