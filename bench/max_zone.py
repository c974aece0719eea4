"""The largest zone that still deploys, found by search (doubling, then bisection).

A size N "deploys" when, for one primary zone of N records (the synth record mix):
  1. load_topology accepts it (records file -> model -> dnspython -> maxZoneBytes check),
  2. render_instance renders it (split into $INCLUDE parts over ZONE_PART_BYTES),
  3. manifests.config_maps shards the files into ConfigMaps that each fit 1 MiB
     (data + keys, the API server's limit), and
  4. named-checkzone loads the rendered file with its $INCLUDE parts and reports OK.
The search doubles N from --start until a size fails or --cap is reached, then
bisects between the last pass and the first fail (to --precision). When nothing
fails below the cap, the result is "at least the cap" and the report says so,
with the byte budget that would stop it next (maxZoneBytes).

    python bench/max_zone.py [--start 25000] [--cap 800000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("BENCH_REPO") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import synth  # noqa: E402

from bind9_topology.config.model import TopologyError  # noqa: E402
from bind9_topology.config.topology import load_topology  # noqa: E402
from bind9_topology.render import manifests  # noqa: E402
from bind9_topology.render.bind_files import ZONE_DIR, Placement, render_instance, write_tree  # noqa: E402

CONFIGMAP_LIMIT = 1024 * 1024  # bytes of data an API server accepts in one ConfigMap


def raw_config(records_file: str) -> dict[str, Any]:
    zn = synth.zone_name(0)
    return {
        "region": "bench",
        "instances": [{"name": "primary", "role": "primary",
                       "service": {"type": "LoadBalancer", "loadBalancerIP": "10.0.1.10"}}],
        "zones": [{
            "zoneName": zn, "type": "primary",
            "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
            "soaRecord": {"primaryNs": f"ns1.{zn}.", "adminEmail": f"hostmaster@{zn}"},
            "recordsFile": records_file,
        }],
    }


def try_size(n: int, work: Path) -> dict[str, Any]:
    """Does a zone of n records deploy? Returns what happened at each step."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "zone.yaml").write_text(synth.records_yaml(synth.zone_records(0, n)))
    out: dict[str, Any] = {"records": n, "ok": False}
    t = time.perf_counter()
    os.environ["BIND9_TOPOLOGY_CACHE_DIR"] = "off"  # every size is new content anyway
    try:
        topo = load_topology(raw_config("zone.yaml"), stack="bench", project_dir=work,
                             tsig_secret=synth.TSIG_SECRET)
    except TopologyError as exc:
        out["failed_at"] = "load_topology"
        out["why"] = exc.render()[:500]
        return out
    out["build_s"] = round(time.perf_counter() - t, 2)
    inst = topo.spec.instances[0]
    tree = work / "tree"
    rendered = render_instance(topo.spec, inst, topo.contents,
                               dict.fromkeys(topo.contents, 2024010100),
                               Placement(root=str(tree)))
    out["zone_bytes"] = sum(len(b) for b in rendered.zone_files.values())
    out["zone_files"] = len(rendered.zone_files)
    try:
        maps = manifests.config_maps(topo.spec, rendered)
    except ValueError as exc:
        out["failed_at"] = "config_maps"
        out["why"] = str(exc)
        return out
    # text in data, or (a large instance, ADR 20) one tar.gz per shard in binaryData
    sizes = [sum(len(k) + len(v.encode()) for part in ("data", "binaryData")
                 for k, v in (m.get(part) or {}).items()) for m in maps]
    out["config_maps"] = len(maps)
    out["largest_config_map_bytes"] = max(sizes)
    if max(sizes) > CONFIGMAP_LIMIT:
        out["failed_at"] = "config_maps"
        out["why"] = f"a ConfigMap holds {max(sizes)} bytes > {CONFIGMAP_LIMIT}"
        return out
    write_tree(rendered, tree, include_secrets=False)
    zn = synth.zone_name(0)
    t = time.perf_counter()
    r = subprocess.run(["named-checkzone", "-q", zn, str(tree / ZONE_DIR / f"db.{zn}")],
                       capture_output=True, text=True)
    out["checkzone_s"] = round(time.perf_counter() - t, 2)
    if r.returncode != 0:
        out["failed_at"] = "named-checkzone"
        out["why"] = (r.stdout + r.stderr)[-500:]
        return out
    out["ok"] = True
    return out


def search(start: int, cap: int, precision: float = 0.05, log=print) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="max-zone-") as tmp:
        work = Path(tmp) / "w"
        tried: list[dict[str, Any]] = []
        good, bad = 0, None
        n = start
        while True:
            r = try_size(n, work)
            tried.append(r)
            log(f"  max_zone: {n} records -> {'ok' if r['ok'] else 'FAIL at ' + r['failed_at']}")
            if not r["ok"]:
                bad = n
                break
            good = n
            if n >= cap:
                break
            n = min(cap, n * 2)
        while bad is not None and bad - good > max(1, int(good * precision)):
            mid = (good + bad) // 2
            r = try_size(mid, work)
            tried.append(r)
            log(f"  max_zone: {mid} records -> {'ok' if r['ok'] else 'FAIL'}")
            if r["ok"]:
                good = mid
            else:
                bad = mid
    best = next((t for t in tried if t["records"] == good), {})
    result: dict[str, Any] = {
        "max_zone_records": good,
        "first_failing_records": bad,
        "bounded_by": "search cap (nothing failed)" if bad is None else next(
            t for t in tried if t["records"] == bad).get("failed_at"),
        "largest_passing": best,
        "tried": tried,
    }
    if bad is None and best.get("zone_bytes"):
        per = best["zone_bytes"] / good
        result["projected_limit_records"] = int(64 * 1024 * 1024 / per)
        result["note"] = (f"no size up to the cap failed; at {per:.0f} bytes a record the next "
                          f"bound is maxZoneBytes (64 MiB default) at about "
                          f"{result['projected_limit_records']} records")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", type=int, default=25_000)
    ap.add_argument("--cap", type=int, default=800_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = search(args.start, args.cap, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
