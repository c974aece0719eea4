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
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("BENCH_REPO") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))

from bind9_topology.config.digest import zone_digest_from_text  # noqa: E402
from bind9_topology.config.topology import load_topology  # noqa: E402
from bind9_topology.dns import gate  # noqa: E402
from bind9_topology.dns.checks import Endpoint, make_tsig_key  # noqa: E402
from bind9_topology.local.named_process import NamedProcess, free_port  # noqa: E402
from bind9_topology.render.bind_files import (  # noqa: E402
    TSIG_DIR,
    ZONE_DIR,
    Placement,
    render_instance,
    write_tree,
    zone_file_name,
    zone_text,
)

HOST = "127.0.0.1"
PRIMARY_IP = "10.0.1.10"
LOG_TIME = re.compile(
    r"^(\d{2}-\w{3}-\d{4} \d{2}:\d{2}:\d{2}\.\d{3}) .*transfer of '([^/]+)/IN' from .*"
    r"Transfer completed", re.M)


def secondary_ips(count: int) -> dict[str, str]:
    return {f"secondary-{i}": f"10.0.2.{20 + i}" for i in range(count)}


def zone_name(n: int) -> str:
    return f"z{n:05d}.bench"


def raw_config(zones: int | list[int], versions: dict[int, int], secondaries: dict[str, str]
               ) -> dict[str, Any]:
    """The stack: zones 0..zones-1, or just the given zone numbers (what a round rewrites)."""
    numbers = range(zones) if isinstance(zones, int) else zones
    def zone(n: int) -> dict[str, Any]:
        return {
            "zoneName": zone_name(n), "type": "primary",
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
        "zones": [zone(n) for n in numbers] + [
            {"zoneName": zone_name(n), "type": "secondary",
             "instanceSelector": {"matchLabels": {"dns-role": "secondary"}},
             "secondaryConfig": {"primaryServers": [PRIMARY_IP]}}
            for n in numbers
        ],
    }


#: the local runner's choice (bind9_topology/local/runner.py), mirrored by --apply auto
RNDC_MAX_ZONES = 10


def rndc_reload(rndc: list[str], zones: list[str]) -> None:
    """`rndc reload <zone>` of each changed zone (at most 16 at once): named loads that zone
    file only, neither named.conf nor the other zones' files (what the pod agent does)."""
    def one(zone: str) -> None:
        done = subprocess.run([*rndc, "reload", zone], capture_output=True, text=True,
                              timeout=30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"rndc reload {zone}: {done.stdout} {done.stderr}")
    with ThreadPoolExecutor(max_workers=min(16, len(zones))) as pool:
        list(pool.map(one, zones))


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


def run(zones: int, rounds: int, n_secondaries: int, edit: str, poll: float,
        loaded: int | None = None, apply: str = "auto") -> dict[str, Any]:
    secret = base64.b64encode(os.urandom(32)).decode()
    key = make_tsig_key("transfer-key", "hmac-sha256", secret)
    secondaries = secondary_ips(n_secondaries)
    names = ["primary", *secondaries]
    ports = {n: free_port(HOST) for n in names}
    control_port = free_port(HOST)
    total = max(loaded or zones, zones)  # zones in the stack; the first `zones` are edited
    ips = {"primary": PRIMARY_IP, **secondaries}
    amap = {(ips[n], 53): (HOST, ports[n]) for n in names}
    samples: dict[str, list[float]] = {"transfer": [], "all": [], "gate": [], "overhead": []}
    procs: dict[str, NamedProcess] = {}
    versions: dict[int, int] = {}
    with tempfile.TemporaryDirectory(prefix="gate-bench-") as tmp:
        root = Path(tmp)
        serials = dict.fromkeys((zone_name(n) for n in range(total)), 2024010100)
        zone_dir = root / "primary" / ZONE_DIR
        rndc = ["rndc", "-k", "", "-s", HOST, "-p", str(control_port)]

        def render_all() -> Any:
            """Every instance's files (the start): the primary with an rndc channel on
            loopback, signed with the TSIG key, as in a pod (Placement.agent)."""
            topo = load_topology(raw_config(total, versions, secondaries), stack="bench",
                                 project_dir=ROOT, tsig_secret=secret)
            for inst in topo.spec.instances:
                placement = Placement(root=str(root / inst.name), port=ports[inst.name],
                                      listen_v4=HOST, listen_v6="none", notify_delay=0,
                                      address_map=amap, agent=inst.name == "primary",
                                      control_port=control_port)
                rendered = render_instance(topo.spec, inst, topo.contents, serials, placement,
                                           secret)
                write_tree(rendered, root / inst.name, include_secrets=True)
                if inst.name == "primary":
                    rndc[2] = str(root / inst.name / next(
                        rel for rel in rendered.secret_files if rel.startswith(TSIG_DIR)))
            return topo

        def render(changed: list[str]) -> Any:
            """The changed zones' files only (the other zones' files keep their bytes and
            times, as the pod agent writes a changed ConfigMap's files)."""
            numbers = [int(z[1:z.index(".")]) for z in changed]
            topo = load_topology(raw_config(numbers, versions, secondaries), stack="bench",
                                 project_dir=ROOT, tsig_secret=secret)
            later = time.time() + 1
            for zone in changed:  # named reloads the files whose time moved
                path = zone_dir / zone_file_name(zone)
                path.write_text(zone_text(topo.contents[zone], serials[zone]))
                os.utime(path, (later, later))
            return topo

        def gate_all(topo: Any, changed: list[str]) -> dict[str, Any]:
            """One gate run over the changed zones (wait_many where the product has it: the
            provider's path; else one wait_until_transferred per zone in threads)."""
            prim = [Endpoint(HOST, ports["primary"], "primary")]
            secs = [Endpoint(HOST, ports[n], n) for n in secondaries]
            digests = {z: zone_digest_from_text(topo.contents[z].text(0), z) for z in changed}
            many = getattr(gate, "wait_many", None)
            if many is not None:
                reports = many([gate.ZoneJob(z, prim, secs, serials[z], digests[z])
                                for z in changed], key, 300, poll)
                return dict(zip(changed, reports, strict=True))

            def one(zone: str) -> Any:
                return zone, gate.wait_until_transferred(zone, prim, secs, serials[zone],
                                                         digests[zone], key, 120, poll)
            with ThreadPoolExecutor(max_workers=max(1, min(len(changed), 64))) as pool:
                return dict(pool.map(one, changed))

        try:
            all_zones = sorted(serials)
            topo = render_all()
            for name in secondaries:  # seeded with the primary's zones: they start loaded
                shutil.copytree(zone_dir, root / name / ZONE_DIR, dirs_exist_ok=True)
            for name in names:
                d = root / name
                procs[name] = NamedProcess(name=name)
                procs[name].start(d / "etc/bind/named.conf", d, d / "named.log")
                if name == "primary":
                    procs[name].wait_ready((HOST, ports[name]), all_zones[-1:],
                                           max(30, total / 50))
            for name in secondaries:  # every zone loaded (the last one in its files)
                procs[name].wait_ready((HOST, ports[name]), all_zones[-1:],
                                       max(60, total / 20))
            reports = gate_all(topo, all_zones)
            assert all(r.ok for r in reports.values()), [r.message for r in reports.values()]
            for rnd in range(1, rounds + 1):
                edited = all_zones[:zones]
                changed = edited if edit == "all" else [edited[(rnd - 1) % zones]]
                for zone in changed:
                    versions[int(zone[1:zone.index(".")])] = rnd
                    serials[zone] += 1
                topo = render(changed)
                offsets = {n: procs[n].log_offset() for n in secondaries}
                t0, m0 = time.time(), time.monotonic()
                reloading = None
                by_rndc = apply == "rndc" or (apply == "auto" and len(changed) <= RNDC_MAX_ZONES)
                if by_rndc:  # beside the gate, as the pod agent applies while `pulumi up`
                    # gates (the gate must not start after the last reload)
                    reloading = threading.Thread(target=rndc_reload, args=(rndc, changed))
                    reloading.start()
                else:
                    procs["primary"].reload()
                reports = gate_all(topo, changed)
                if reloading is not None:
                    reloading.join()
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

    result: dict[str, Any] = {"zones": zones, "loaded": total, "apply": apply, "rounds": rounds,
                              "secondaries": n_secondaries, "edit": edit,
                              "samples": len(samples["all"])}
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
    ap.add_argument("--loaded", type=int, default=None,
                    help="zones loaded in all (default --zones); the first --zones are edited")
    ap.add_argument("--apply", choices=("auto", "hup", "rndc"), default="auto",
                    help="how the primary takes an edit: SIGHUP (named.conf and every zone "
                         "file looked at again), `rndc reload <zone>` of each changed zone "
                         "(what the pod agent does), or auto: as the local runner, rndc for "
                         "at most RNDC_MAX_ZONES changed zones, else SIGHUP")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = run(args.zones, args.rounds, args.secondaries, args.edit, args.poll, args.loaded,
                 args.apply)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['samples']} changed zones ({result['loaded']} loaded, {args.zones} "
              f"edited, apply {args.apply}, {args.rounds} rounds, "
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
