"""Time the real engine's `pulumi preview` on each stack of a synthetic project.

Needs the engine on PATH (`source scripts/engine-env.sh`). The synthetic
project (bench/synth.py) gets the product's `__main__.py`; `components` is
imported from this checkout through PYTHONPATH. A throwaway file backend and
passphrase are used; peak RSS is the largest of the language host's children
(the Python program), read from the kernel's accounting of waited-for children.

    python bench/engine_preview.py PROJECT_DIR [--stacks bench,bench-west,bench-eu] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(os.environ.get("BENCH_REPO") or Path(__file__).resolve().parent.parent)


def preview(project: Path, stacks: list[str]) -> dict:
    if shutil.which("pulumi") is None:
        raise RuntimeError("no `pulumi` on PATH: run `source scripts/engine-env.sh` first")
    shutil.copy(ROOT / "__main__.py", project / "__main__.py")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as state:
        env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{state}",
               "PULUMI_CONFIG_PASSPHRASE": "bench", "PYTHONPATH": str(ROOT)}
        env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)

        def pulumi(*args: str, stack: str) -> subprocess.CompletedProcess[str]:
            proc = subprocess.run(["pulumi", *args, "--stack", stack, "--non-interactive"],
                                  cwd=project, env=env, capture_output=True, text=True,
                                  timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(f"pulumi {' '.join(args)} ({stack}) exited "
                                   f"{proc.returncode}:\n{proc.stdout[-3000:]}"
                                   f"{proc.stderr[-3000:]}")
            return proc

        for stack in stacks:
            subprocess.run(["pulumi", "stack", "init", stack, "--non-interactive"], cwd=project,
                           env=env, capture_output=True, text=True, timeout=120, check=True)
            secret = base64.b64encode(os.urandom(32)).decode()
            pulumi("config", "set", "--secret", "bind9-topology:tsigSecret", secret, stack=stack)
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            start = time.perf_counter()
            out = pulumi("preview", "--json", stack=stack).stdout
            elapsed = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            steps = json.loads(out).get("steps", [])
            results[stack] = {"preview_s": round(elapsed, 2), "steps": len(steps),
                              "peak_rss_mb": round(max(peak, before) / 1024, 1)}
    return {"stacks": results,
            "preview_s_sum": round(sum(r["preview_s"] for r in results.values()), 2),
            "preview_s_max": round(max(r["preview_s"] for r in results.values()), 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("project", type=Path)
    ap.add_argument("--stacks", default="bench,bench-west,bench-eu")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = preview(args.project.resolve(), args.stacks.split(","))
    if args.json:
        print(json.dumps(result))
    else:
        for stack, r in result["stacks"].items():
            print(f"{stack:12} pulumi preview {r['preview_s']:7.2f} s  {r['steps']:5} steps  "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB")
        print(f"sum {result['preview_s_sum']:.2f} s, slowest stack {result['preview_s_max']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
