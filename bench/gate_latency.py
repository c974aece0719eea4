"""Latency of the transfer gate against real named: zone change -> transfer -> gate ready.

A primary and a secondary on 127.0.0.1, N zones (default 50) rendered by the
product's render path (notify-delay 0). Each round changes every zone (one
record), rewrites the zone files and SIGHUPs the primary, and at once runs
one gate per zone (bind9_topology.dns.gate.wait_until_transferred, poll cap 1 s as
in the stacks). Per zone it measures

  (a) transfer: from the SIGHUP to the secondary logging the completed
      transfer ("transfer of '<zone>/IN' ... Transfer completed", named's
      print-time, millisecond resolution), and
  (b) gate overhead: from that log line to the gate seeing the secondary
      pass (ServerStatus.verified_at, millisecond resolution).

    python bench/gate_latency.py [--zones 50] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bind9_topology.dns.checks import Endpoint, make_tsig_key, zone_digest_from_text  # noqa: E402
from bind9_topology.dns.gate import wait_until_transferred  # noqa: E402
from bind9_topology.local.named_process import NamedProcess, free_port  # noqa: E402
from bind9_topology.render.bind_files import Placement, render_instance, write_tree  # noqa: E402
from bind9_topology.spec.topology import load_topology  # noqa: E402

HOST = "127.0.0.1"
LOG_TIME = re.compile(
    r"^(\d{2}-\w{3}-\d{4} \d{2}:\d{2}:\d{2}\.\d{3}) .*transfer of '([^/]+)/IN' from .*"
    r"Transfer completed", re.M)


def raw_config(zones: int, version: int) -> dict[str, Any]:
    def zone(n: int) -> dict[str, Any]:
        return {
            "zoneName": f"z{n:04d}.bench", "type": "primary",
            "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
            "soaRecord": {"primaryNs": "ns1.bench.", "adminEmail": "hostmaster@bench.example"},
            "alsoNotify": ["10.0.1.20"],
            "records": [
                {"name": "@", "type": "NS", "data": "ns1.bench."},
                {"name": "www", "type": "A", "data": "192.0.2.10"},
                {"name": "version", "type": "TXT", "data": f'"v{version}"'},
            ],
        }

    return {
        "region": "bench",
        "instances": [
            {"name": "primary", "role": "primary",
             "service": {"type": "LoadBalancer", "loadBalancerIP": "10.0.1.10"}},
            {"name": "secondary", "role": "secondary",
             "service": {"type": "LoadBalancer", "loadBalancerIP": "10.0.1.20"}},
        ],
        "zones": [zone(n) for n in range(zones)] + [
            {"zoneName": f"z{n:04d}.bench", "type": "secondary",
             "instanceSelector": {"matchLabels": {"dns-role": "secondary"}},
             "secondaryConfig": {"primaryServers": ["10.0.1.10"]}}
            for n in range(zones)
        ],
    }


def log_times(text: str) -> dict[str, float]:
    """zone -> epoch seconds of its last 'Transfer completed' line (named logs local time)."""
    out = {}
    for m in LOG_TIME.finditer(text):
        t = datetime.datetime.strptime(m.group(1), "%d-%b-%Y %H:%M:%S.%f").astimezone()
        out[m.group(2)] = t.timestamp()
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zones", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--poll", type=float, default=1.0, help="the gate's poll cap (s)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    secret = base64.b64encode(os.urandom(32)).decode()
    key = make_tsig_key("transfer-key", "hmac-sha256", secret)
    ports = {"primary": free_port(HOST), "secondary": free_port(HOST)}
    amap = {("10.0.1.10", 53): (HOST, ports["primary"]),
            ("10.0.1.20", 53): (HOST, ports["secondary"])}
    gate_ms: list[float] = []
    xfer_ms: list[float] = []
    procs: dict[str, NamedProcess] = {}
    with tempfile.TemporaryDirectory(prefix="gate-bench-") as tmp:
        root = Path(tmp)
        serial = 2024010100

        def render(version: int) -> Any:
            topo = load_topology(raw_config(args.zones, version), stack="bench",
                                 project_dir=ROOT, tsig_secret=secret)
            for inst in topo.spec.instances:
                placement = Placement(root=str(root / inst.name), port=ports[inst.name],
                                      listen_v4=HOST, listen_v6="none", notify_delay=0,
                                      address_map=amap)
                rendered = render_instance(topo.spec, inst, topo.contents,
                                           dict.fromkeys(topo.contents, serial), placement,
                                           secret)
                write_tree(rendered, root / inst.name, include_secrets=True)
            later = time.time() + 1
            for f in (root / "primary/var/lib/bind/zones").glob("db.*"):
                os.utime(f, (later, later))
            return topo

        def gate_all(topo: Any) -> dict[str, Any]:
            def one(zone: str) -> Any:
                digest = zone_digest_from_text(topo.contents[zone].text(0), zone)
                return zone, wait_until_transferred(
                    zone, [Endpoint(HOST, ports["primary"], "primary")],
                    [Endpoint(HOST, ports["secondary"], "secondary")],
                    serial, digest, key, 120, args.poll)
            with ThreadPoolExecutor(max_workers=len(topo.contents)) as pool:
                return dict(pool.map(one, sorted(topo.contents)))

        try:
            topo = render(0)
            for name in ("primary", "secondary"):
                d = root / name
                procs[name] = NamedProcess(name=name)
                procs[name].start(d / "etc/bind/named.conf", d, d / "named.log")
                if name == "primary":
                    procs[name].wait_ready((HOST, ports[name]), sorted(topo.contents), 30)
            reports = gate_all(topo)
            assert all(r.ok for r in reports.values()), [r.message for r in reports.values()]
            for rnd in range(1, args.rounds + 1):
                serial += 1
                topo = render(rnd)
                offset = procs["secondary"].log_offset()
                t0 = time.time()
                procs["primary"].reload()
                reports = gate_all(topo)
                bad = [r.message for r in reports.values() if not r.ok]
                if bad:
                    print("\n".join(bad), file=sys.stderr)
                    return 1
                time.sleep(0.05)
                done = log_times(procs["secondary"].log_text()[offset:])
                for zone, report in reports.items():
                    sec = next(s for s in report.servers if s.role == "secondary")
                    if zone not in done or sec.verified_at is None:
                        continue
                    ready = datetime.datetime.fromisoformat(sec.verified_at).timestamp()
                    xfer_ms.append((done[zone] - t0) * 1000)
                    gate_ms.append((ready - done[zone]) * 1000)
        finally:
            for p in procs.values():
                p.stop()

    result = {
        "zones": args.zones, "rounds": args.rounds, "samples": len(gate_ms),
        "gate_overhead_p50_ms": round(statistics.median(gate_ms), 1),
        "gate_overhead_p95_ms": round(pct(gate_ms, 0.95), 1),
        "transfer_p50_ms": round(statistics.median(xfer_ms), 1),
        "transfer_p95_ms": round(pct(xfer_ms, 0.95), 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['samples']} samples ({args.zones} zones x {args.rounds} rounds)")
        print(f"zone change -> transfer completed: median {result['transfer_p50_ms']} ms, "
              f"p95 {result['transfer_p95_ms']} ms")
        print(f"transfer completed -> gate ready:  median {result['gate_overhead_p50_ms']} ms, "
              f"p95 {result['gate_overhead_p95_ms']} ms  (named logs ms; target median < 100)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
