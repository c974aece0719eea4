"""`python -m components validate` of one very large zone, timed end to end.

Writes (once, under .cache/bench/) a project with one primary zone of N records
(the synth record mix, in a records file) and runs the real command in a fresh
process with the zone content cache off, so every record is parsed, checked,
sorted and digested as a fresh clone would:

    python bench/validate_big.py [--records 200000] [--json] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("BENCH_REPO") or HERE.parent)
sys.path.insert(0, str(HERE))

import synth  # noqa: E402

STACK = "big"


def project_for(records: int) -> Path:
    path = HERE.parent / ".cache" / "bench" / f"validate-{records}"
    stamp = path / ".synth-source"
    source = (HERE / "synth.py").read_text()
    if stamp.exists() and stamp.read_text() == source:
        return path
    path.mkdir(parents=True, exist_ok=True)
    zn = synth.zone_name(0)
    (path / "Pulumi.yaml").write_text("name: bind9-topology\nruntime: python\n")
    (path / "zone.yaml").write_text(synth.records_yaml(synth.zone_records(0, records)))
    config = {
        "bind9-topology:region": "bench",
        "bind9-topology:instances": [{"name": "primary", "role": "primary"}],
        "bind9-topology:zones": [{
            "zoneName": zn, "type": "primary",
            "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
            "soaRecord": {"primaryNs": f"ns1.{zn}.", "adminEmail": f"hostmaster@{zn}"},
            "recordsFile": "zone.yaml",
        }],
    }
    (path / f"Pulumi.{STACK}.yaml").write_text(json.dumps({"config": config}, indent=1))
    stamp.write_text(source)
    return path


def run(records: int, profile: str | None = None) -> dict[str, Any]:
    project = project_for(records)
    cmd = [sys.executable]
    if profile:
        cmd += ["-m", "cProfile", "-o", profile]
    cmd += ["-m", "components", "--project", str(project), "validate", "--stack", STACK]
    env = {**os.environ, "BIND9_TOPOLOGY_CACHE_DIR": "off",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    took = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"validate exited {r.returncode}:\n{(r.stdout + r.stderr)[-2000:]}")
    # the largest child waited for so far: the validate process (synth runs in this one)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"records": records, "validate_s": round(took, 2),
            "peak_rss_mb": round(peak_kb / 1024, 1),
            "output": r.stdout.splitlines()[0] if r.stdout else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--profile", help="write a cProfile of the run to this file")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = run(args.records, args.profile)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"validate of one {args.records:,}-record zone: {result['validate_s']} s, "
              f"peak RSS {result['peak_rss_mb']} MB ({result['output']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
