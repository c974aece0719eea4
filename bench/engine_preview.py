"""Time the real engine's `pulumi preview` on each stack of a synthetic project.

Each stack is previewed twice: first with a cold zone content cache (a fresh clone, a
new CI machine), then warm (a user's next preview). Needs the engine on PATH
(`source scripts/engine-env.sh`). The synthetic
project (bench/synth.py) is copied, its inline zones moved to bindy DNSZone files
(see zones_to_manifests), and it gets the product's `__main__.py`; `components` is
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

import yaml

ROOT = Path(os.environ.get("BENCH_REPO") or Path(__file__).resolve().parent.parent)


def zones_to_manifests(project: Path, stack: str) -> int:
    """Move a stack's inline zones into a bindy DNSZone file (bindyManifests).

    Pulumi hands the whole stack config to the program in one environment
    variable, and Linux caps one at 128 KiB (pulumi/pulumi#8680): 1,000 inline
    zones fail with "argument list too long" before the program starts. Large
    topologies keep their DNSZone documents in files, as README.md says.
    """
    stack_file = project / f"Pulumi.{stack}.yaml"
    doc = yaml.safe_load(stack_file.read_text())
    config = doc["config"]
    zones = config.pop("bind9-topology:zones", None)
    if not zones:
        return 0
    rel = f"configs/bindy/{stack}-zones.yaml"
    docs = []
    for zone in zones:
        spec = {k: v for k, v in zone.items() if k != "name"}
        name = zone.get("name") or zone["zoneName"].replace(".", "-") + (
            "" if zone["type"] == "primary" else "-secondary")
        docs.append({"apiVersion": "dns.firestoned.io/v1alpha1", "kind": "DNSZone",
                     "metadata": {"name": name}, "spec": spec})
    (project / rel).parent.mkdir(parents=True, exist_ok=True)
    (project / rel).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    config["bind9-topology:bindyManifests"] = [rel]
    stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    return len(docs)


def preview(project: Path, stacks: list[str]) -> dict:
    if shutil.which("pulumi") is None:
        raise RuntimeError("no `pulumi` on PATH: run `source scripts/engine-env.sh` first")
    source = project
    work = Path(tempfile.mkdtemp(prefix="bench-engine-project-"))
    project = work / "project"
    # never the source's zone content cache (.cache): the first preview must be cold
    shutil.copytree(source, project,
                    ignore=shutil.ignore_patterns("octodns", "ours-out", ".cache"))
    for stack in stacks:
        zones_to_manifests(project, stack)
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
            # again, as a user's next preview runs: the zone content cache is warm
            start = time.perf_counter()
            pulumi("preview", "--json", stack=stack)
            warm = time.perf_counter() - start
            results[stack] = {"preview_s": round(elapsed, 2), "warm_preview_s": round(warm, 2),
                              "steps": len(steps),
                              "peak_rss_mb": round(max(peak, before) / 1024, 1)}
    shutil.rmtree(work, ignore_errors=True)
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
            print(f"{stack:12} pulumi preview {r['preview_s']:7.2f} s cold, "
                  f"{r['warm_preview_s']:7.2f} s warm  {r['steps']:5} steps  "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB")
        print(f"sum {result['preview_s_sum']:.2f} s, slowest stack {result['preview_s_max']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
