"""Time the real engine's `pulumi preview` on each stack of a synthetic project.

Each stack is previewed three times: first with a cold zone content cache (a fresh clone,
a new CI machine), then warm (a user's next preview), then after one zone's records file
was edited (one record's data changed: the preview a change under review gets; the
figure issue 21 asks to be proportional to what changed). Needs the engine on PATH
(`source scripts/engine-env.sh`). The synthetic project (bench/synth.py: zones in
`zonesFiles`) is copied (inline zones of an older project are moved to bindy DNSZone
files, see zones_to_manifests), and it gets the product's `__main__.py`; `components`
is imported from this checkout through PYTHONPATH. A throwaway file backend and
passphrase are used; peak RSS is the largest of the engine's processes (the CLI, the
language host, the Python program, the providers), read from the kernel's accounting of
waited-for children. The engine's events are streamed (`--json`,
PULUMI_ENABLE_STREAMING_JSON_PREVIEW): each preview's first and last resource step
(after the provider's Check and Diff) and the steps that change something are kept
(`--keep DIR`: the event logs too).

    python bench/engine_preview.py PROJECT_DIR [--stacks bench,bench-west,bench-eu] [--json]
        [--no-edit] [--keep DIR]
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
from typing import Any

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


EDIT_LINE = '  - {name: "bench-edit", type: A, data: "192.0.2.99"}\n'


def edit_one_zone(project: Path, stack: str) -> str | None:
    """Add one record to one primary zone of *stack* (the one in the middle of its zone
    list): the edit a reviewed change makes. Returns the zone, None without primary zones."""
    config = yaml.safe_load((project / f"Pulumi.{stack}.yaml").read_text())["config"]
    zones = list(config.get("bind9-topology:zones") or [])
    for entry in config.get("bind9-topology:zonesFiles") or []:
        target = project / entry
        for path in sorted(target.glob("*.yaml")) if target.is_dir() else [target]:
            zones += yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader",
                                                                yaml.SafeLoader)) or []
    primary = [z for z in zones if z.get("type") == "primary" and z.get("recordsFile")]
    if not primary:
        return None
    zone = primary[len(primary) // 2]
    with open(project / zone["recordsFile"], "a") as fh:
        fh.write(EDIT_LINE)
    return str(zone["zoneName"])


def step_times(events: list[dict[str, Any]], started: float) -> dict[str, Any]:
    """From the engine's streamed events (`--json` with PULUMI_ENABLE_STREAMING_JSON_PREVIEW):
    seconds from the preview's start to the engine's first and last resource step (each
    after its provider's Check and Diff), and the steps that change something."""
    pre = [e for e in events if "resourcePreEvent" in e]
    stamps = [float(e.get("timestamp") or 0) for e in pre]
    changed = sorted(
        f"{m.get('op')} {str(m.get('urn', '')).rsplit('::', 1)[-1]}"
        for e in pre for m in [e["resourcePreEvent"].get("metadata") or {}]
        if m.get("op") not in ("same", "read"))
    return {"first_step_s": round(min(stamps) - started, 1) if stamps else None,
            "last_step_s": round(max(stamps) - started, 1) if stamps else None,
            "steps": len(pre), "changed": changed}


def preview(project: Path, stacks: list[str], *, edit: bool = True,
            keep: Path | None = None) -> dict:
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
               "PULUMI_CONFIG_PASSPHRASE": "bench", "PYTHONPATH": str(ROOT),
               # --json streams the engine's events (timestamped) instead of one summary
               "PULUMI_ENABLE_STREAMING_JSON_PREVIEW": "1"}
        env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)

        def pulumi(*args: str, stack: str) -> subprocess.CompletedProcess[str]:
            proc = subprocess.run(["pulumi", *args, "--stack", stack, "--non-interactive"],
                                  cwd=project, env=env, capture_output=True, text=True,
                                  timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError(f"pulumi {' '.join(args)} ({stack}) exited "
                                   f"{proc.returncode}:\n{proc.stdout[-3000:]}"
                                   f"{proc.stderr[-3000:]}")
            return proc

        def timed(stack: str, label: str) -> tuple[float, dict[str, Any], int]:
            start_wall, start = time.time(), time.perf_counter()
            out = pulumi("preview", "--json", stack=stack).stdout
            elapsed = time.perf_counter() - start
            (work / f"events-{stack}-{label}.jsonl").write_text(out)
            events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            found = step_times(events, start_wall)
            return elapsed, found, int(found["steps"])

        for stack in stacks:
            subprocess.run(["pulumi", "stack", "init", stack, "--non-interactive"], cwd=project,
                           env=env, capture_output=True, text=True, timeout=120, check=True)
            secret = base64.b64encode(os.urandom(32)).decode()
            pulumi("config", "set", "--secret", "bind9-topology:tsigSecret", secret, stack=stack)
            cold, cold_steps, nsteps = timed(stack, "cold")
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            # again, as a user's next preview runs: the zone content cache is warm
            warm, warm_steps, _ = timed(stack, "warm")
            row: dict[str, Any] = {"preview_s": round(cold, 2), "warm_preview_s": round(warm, 2),
                                   "steps": nsteps, "cold_events": cold_steps,
                                   "warm_events": warm_steps,
                                   "peak_rss_mb": round(peak / 1024, 1)}
            zone = edit_one_zone(project, stack) if edit else None
            if zone is not None:
                edited, edit_steps, _ = timed(stack, "edit")
                row.update({"edit_preview_s": round(edited, 2), "edited_zone": zone,
                            "edit_events": edit_steps})
            row["peak_rss_mb"] = round(
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
            results[stack] = row
    if keep is not None:
        shutil.rmtree(keep, ignore_errors=True)
        shutil.move(str(work), str(keep))
    else:
        shutil.rmtree(work, ignore_errors=True)
    return {"stacks": results,
            "preview_s_sum": round(sum(r["preview_s"] for r in results.values()), 2),
            "preview_s_max": round(max(r["preview_s"] for r in results.values()), 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("project", type=Path)
    ap.add_argument("--stacks", default="bench,bench-west,bench-eu")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-edit", action="store_true", help="no preview after a zone edit")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep the project copy and the event logs in this directory")
    args = ap.parse_args()
    result = preview(args.project.resolve(), args.stacks.split(","), edit=not args.no_edit,
                     keep=args.keep)
    if args.json:
        print(json.dumps(result))
    else:
        for stack, r in result["stacks"].items():
            print(f"{stack:12} pulumi preview {r['preview_s']:7.2f} s cold, "
                  f"{r['warm_preview_s']:7.2f} s warm, {r.get('edit_preview_s', 0):7.2f} s "
                  f"after one zone edited  {r['steps']:5} steps  "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB")
        print(f"sum {result['preview_s_sum']:.2f} s, slowest stack {result['preview_s_max']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
