"""Zone change -> every secondary serving it -> the gate ready, against real named.

A primary and S secondaries (default 3) on 127.0.0.1, N zones (default 50) rendered
by the product's render path (notify-delay 0). Each round changes zones (``--edit
all``: every zone at once; ``--edit one``: one zone, a different one each round),
rewrites the zone files and SIGHUPs the primary, and at once runs one gate per changed
zone (bind9_topology.dns.gate.wait_until_transferred, poll cap 1 s as in the stacks).
Per changed zone it measures

  (a) transfer: from the SIGHUP to each secondary logging the completed transfer
      ("transfer of '<zone>/IN' ... Transfer completed", named's print-time,
      millisecond resolution), one sample per secondary;
  (b) every secondary serving: from the SIGHUP to the last of those lines for the
      zone (the change is served everywhere);
  (c) gate ready: from the SIGHUP to the gate's report that every server passed
      (GateReport.ready_monotonic: what `pulumi up` waits for);
  (d) gate overhead: from a secondary's log line to the gate seeing it pass
      (ServerStatus.verified_at).

    python bench/gate_latency.py [--zones 50] [--rounds 3] [--secondaries 3]
                                 [--edit all|one] [--json]
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

ROOT = Path(os.environ.get("BENCH_REPO") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))

from bind9_topology.config.digest import zone_digest_from_text  # noqa: E402
from bind9_topology.config.topology import load_topology  # noqa: E402
from bind9_topology.dns.checks import Endpoint, make_tsig_key  # noqa: E402
from bind9_topology.dns.gate import wait_until_transferred  # noqa: E402
from bind9_topology.local.named_process import NamedProcess, free_port  # noqa: E402
from bind9_topology.render.bind_files import Placement, render_instance, write_tree  # noqa: E402

HOST = "127.0.0.1"
PRIMARY_IP = "10.0.1.10"
LOG_TIME = re.compile(
    r"^(\d{2}-\w{3}-\d{4} \d{2}:\d{2}:\d{2}\.\d{3}) .*transfer of '([^/]+)/IN' from .*"
    r"Transfer completed", re.M)


def secondary_ips(count: int) -> dict[str, str]:
    return {f"secondary-{i}": f"10.0.2.{20 + i}" for i in range(count)}


def raw_config(zones: int, versions: dict[int, int], secondaries: dict[str, str]
               ) -> dict[str, Any]:
    def zone(n: int) -> dict[str, Any]:
        return {
            "zoneName": f"z{n:04d}.bench", "type": "primary",
            "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
            "soaRecord": {"primaryNs": "ns1.bench.", "adminEmail": "hostmaster@bench.example"},
            "alsoNotify": list(secondaries.values()),
            "records": [
                {"name": "@", "type": "NS", "data": "ns1.bench."},
                {"name": "www", "type": "A", "data": "192.0.2.10"},
                {"name": "version", "type": "TXT", "data": f'"v{versions.get(n, 0)}"'},
            ],
        }

    instances = [{"name": "primary", "role": "primary",
                  "service": {"type": "LoadBalancer", "loadBalancerIP": PRIMARY_IP}}]
    instances += [{"name": name, "role": "secondary",
                   "service": {"type": "LoadBalancer", "loadBalancerIP": ip}}
                  for name, ip in secondaries.items()]
    return {
        "region": "bench",
        "instances": instances,
        "zones": [zone(n) for n in range(zones)] + [
            {"zoneName": f"z{n:04d}.bench", "type": "secondary",
             "instanceSelector": {"matchLabels": {"dns-role": "secondary"}},
             "secondaryConfig": {"primaryServers": [PRIMARY_IP]}}
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


def summary(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return round(statistics.median(values), 1), round(pct(values, 0.95), 1)


def run(zones: int, rounds: int, n_secondaries: int, edit: str, poll: float) -> dict[str, Any]:
    secret = base64.b64encode(os.urandom(32)).decode()
    key = make_tsig_key("transfer-key", "hmac-sha256", secret)
    secondaries = secondary_ips(n_secondaries)
    names = ["primary", *secondaries]
    ports = {n: free_port(HOST) for n in names}
    ips = {"primary": PRIMARY_IP, **secondaries}
    amap = {(ips[n], 53): (HOST, ports[n]) for n in names}
    samples: dict[str, list[float]] = {"transfer": [], "all": [], "gate": [], "overhead": []}
    procs: dict[str, NamedProcess] = {}
    versions: dict[int, int] = {}
    with tempfile.TemporaryDirectory(prefix="gate-bench-") as tmp:
        root = Path(tmp)
        serials = dict.fromkeys((f"z{n:04d}.bench" for n in range(zones)), 2024010100)

        def render(changed: list[str]) -> Any:
            topo = load_topology(raw_config(zones, versions, secondaries), stack="bench",
                                 project_dir=ROOT, tsig_secret=secret)
            for inst in topo.spec.instances:
                placement = Placement(root=str(root / inst.name), port=ports[inst.name],
                                      listen_v4=HOST, listen_v6="none", notify_delay=0,
                                      address_map=amap)
                rendered = render_instance(topo.spec, inst, topo.contents, serials, placement,
                                           secret)
                write_tree(rendered, root / inst.name, include_secrets=True)
            later = time.time() + 1
            for zone in changed:  # named reloads the files whose time moved
                os.utime(root / "primary/var/lib/bind/zones" / f"db.{zone}", (later, later))
            return topo

        def gate_all(topo: Any, changed: list[str]) -> dict[str, Any]:
            prim = [Endpoint(HOST, ports["primary"], "primary")]
            secs = [Endpoint(HOST, ports[n], n) for n in secondaries]

            def one(zone: str) -> Any:
                digest = zone_digest_from_text(topo.contents[zone].text(0), zone)
                return zone, wait_until_transferred(zone, prim, secs, serials[zone], digest, key,
                                                    120, poll)
            with ThreadPoolExecutor(max_workers=max(1, min(len(changed), 64))) as pool:
                return dict(pool.map(one, changed))

        try:
            all_zones = sorted(serials)
            topo = render(all_zones)
            for name in names:
                d = root / name
                procs[name] = NamedProcess(name=name)
                procs[name].start(d / "etc/bind/named.conf", d, d / "named.log")
                if name == "primary":
                    procs[name].wait_ready((HOST, ports[name]), all_zones, 30)
            reports = gate_all(topo, all_zones)
            assert all(r.ok for r in reports.values()), [r.message for r in reports.values()]
            for rnd in range(1, rounds + 1):
                changed = all_zones if edit == "all" else [all_zones[(rnd - 1) % zones]]
                for zone in changed:
                    versions[int(zone[1:5])] = rnd
                    serials[zone] += 1
                topo = render(changed)
                offsets = {n: procs[n].log_offset() for n in secondaries}
                t0, m0 = time.time(), time.monotonic()
                procs["primary"].reload()
                reports = gate_all(topo, changed)
                bad = [r.message for r in reports.values() if not r.ok]
                if bad:
                    raise RuntimeError("\n".join(bad))
                time.sleep(0.05)
                done = {n: log_times(procs[n].log_text()[offsets[n]:]) for n in secondaries}
                for zone, report in reports.items():
                    when = [done[n][zone] for n in secondaries if zone in done[n]]
                    if len(when) != len(secondaries) or report.ready_monotonic is None:
                        continue  # a secondary took the change another way (not logged)
                    samples["transfer"] += [(t - t0) * 1000 for t in when]
                    samples["all"].append((max(when) - t0) * 1000)
                    samples["gate"].append((report.ready_monotonic - m0) * 1000)
                    for status in report.servers:
                        if status.role == "secondary" and status.verified_at is not None:
                            seen = datetime.datetime.fromisoformat(status.verified_at).timestamp()
                            samples["overhead"].append(
                                (seen - done[status.endpoint.label][zone]) * 1000)
        finally:
            for p in procs.values():
                p.stop()

    result: dict[str, Any] = {"zones": zones, "rounds": rounds, "secondaries": n_secondaries,
                              "edit": edit, "samples": len(samples["all"])}
    for label, key_name in (("transfer", "transfer"), ("all", "all_secondaries"),
                            ("gate", "gate_ready"), ("overhead", "gate_overhead")):
        p50, p95 = summary(samples[label])
        result[f"{key_name}_p50_ms"] = p50
        result[f"{key_name}_p95_ms"] = p95
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zones", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secondaries", type=int, default=3)
    ap.add_argument("--edit", choices=("all", "one"), default="all",
                    help="change every zone at once each round, or one zone per round")
    ap.add_argument("--poll", type=float, default=1.0, help="the gate's poll cap (s)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = run(args.zones, args.rounds, args.secondaries, args.edit, args.poll)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['samples']} changed zones ({args.zones} zones, {args.rounds} rounds, "
              f"edit {args.edit}, {args.secondaries} secondaries)")
        for label, key_name in (("change -> one secondary transferred", "transfer"),
                                ("change -> every secondary serving", "all_secondaries"),
                                ("change -> gate ready", "gate_ready"),
                                ("transfer -> gate sees it", "gate_overhead")):
            print(f"{label:38} median {result[f'{key_name}_p50_ms']} ms, "
                  f"p95 {result[f'{key_name}_p95_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
