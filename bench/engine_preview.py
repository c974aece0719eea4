"""Time the real engine on each stack of a synthetic project, against deployed state.

There is no cluster: each stack is deployed with the Kubernetes provider writing YAML
(`bind9-topology:kubernetesRenderDir`, as the `local` stack does) and the transfer gate
off (`gate: {enabled: false}`: no servers to wait for), so a preview after an edit
diffs against real state and shows what an unchanged ConfigMap costs. Per stack, in order:

1. `preview`, cold: fresh state, empty zone content cache (a new CI machine);
2. `preview`, warm: the same, the cache filled (a user's next preview; still no state);
3. `up` (`--skip-preview`): every resource created, written to the render directory;
4. `preview` with nothing changed (every step `same`);
5. `preview` after adding one record to one zone's records file (the zone in the middle of
   the primary's list): the preview a reviewed change gets, the figure issue 21 asks to be
   proportional to what changed.

Each run reports its wall time, the load average at its start, the engine's steps by op
(from its streamed events: `--json` with PULUMI_ENABLE_STREAMING_JSON_PREVIEW, each line
stamped on arrival), the steps that change something, where the time went (first and last
step, the gaps between steps summed by resource type), and the peak RSS of the engine's
largest process (the CLI, the language host, the program, the providers; /proc of the
pulumi process tree sampled every 0.2 s by bench/cluster.py's RssSampler).

Needs the engine on PATH (`source scripts/engine-env.sh`). The project is copied without
its zone content cache (inline zones of an older project are moved to bindy DNSZone
files, see zones_to_manifests) and gets the product's `__main__.py`; `components` is
imported from this checkout through PYTHONPATH. A throwaway file backend and passphrase.

    python bench/engine_preview.py PROJECT_DIR [--stacks bench,bench-west,bench-eu] [--json]
        [--no-edit] [--no-warm] [--keep DIR]
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("BENCH_REPO") or HERE.parent)
sys.path.insert(0, str(HERE))

from cluster import RssSampler  # noqa: E402  (peak RSS of a process tree, from /proc)

P = "bind9-topology:"
#: where each stack's Kubernetes objects are written, relative to the project copy
RENDER_DIR = ".cache/bench-manifests/{stack}"
MB = 2**20
#: a step event's op and URN, read from the head of a long line (bench/README: the
#: events of a 10,000-zone preview are 200 MB of JSON; parsing them all took the bench
#: a minute of CPU that the engine, on 2 shared cores, then did not get)
STEP_HEAD = re.compile(r'^\{"sequence":\d+,"timestamp":\d+,"resourcePreEvent":\{"metadata":'
                       r'\{"op":"(?P<op>[^"]*)","urn":"(?P<urn>[^"]*)"')
LONG_LINE = 65536


def parse_event(line: str) -> dict[str, Any] | None:
    """One streamed engine event; a long one (a step with every property of the resource,
    old and new) only as far as step_report reads it: a step's op and URN."""
    if len(line) <= LONG_LINE:
        try:
            event = json.loads(line)
        except ValueError:
            return None
        return event if isinstance(event, dict) else None
    head = STEP_HEAD.match(line[:4096])
    if head is None:
        return None  # outputs events and the like: not read
    return {"resourcePreEvent": {"metadata": {"op": head["op"], "urn": head["urn"]}}}


class CpuSampler(RssSampler):
    """RssSampler that also keeps each process's CPU (user + system, /proc/<pid>/stat) as
    last seen, summed by name at the end: which engine process spends the time (the CLI,
    the program, the Kubernetes provider). A process's last 0.2 s may be missed."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, root_pid: int, interval: float = 0.2) -> None:
        super().__init__(root_pid, interval)
        self.cpu: dict[int, tuple[str, float]] = {}

    def sample(self) -> None:
        super().sample()
        for pid in self._tree():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            name = stat[stat.find("(") + 1:stat.rfind(")")]
            fields = stat[stat.rfind(")") + 2:].split()
            self.cpu[pid] = (name, (int(fields[11]) + int(fields[12])) / self.TICK)

    def cpu_by_name(self) -> dict[str, float]:
        total: Counter[str] = Counter()
        for name, seconds in self.cpu.values():
            total[name] += seconds
        return {k: round(v, 2) for k, v in total.most_common(6)}


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
    zones = config.pop(f"{P}zones", None)
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
    config[f"{P}bindyManifests"] = [rel]
    stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    return len(docs)


def without_cluster(project: Path, stack: str) -> None:
    """Make *stack* deployable here: its Kubernetes objects written as YAML to a directory
    (kubernetesRenderDir, README "Deploying", the `local` stack) and its transfer gate off
    (it would wait for servers that do not exist)."""
    stack_file = project / f"Pulumi.{stack}.yaml"
    doc = yaml.safe_load(stack_file.read_text())
    doc["config"][f"{P}kubernetesRenderDir"] = RENDER_DIR.format(stack=stack)
    doc["config"][f"{P}gate"] = {"enabled": False}
    stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))


EDIT_LINE = '  - {{name: "bench-edit-{n}", type: A, data: "192.0.2.{n}"}}\n'


def edit_one_zone(project: Path, stack: str, n: int = 99) -> str | None:
    """Add one record to one primary zone of *stack* (the one in the middle of its zone
    list): the edit a reviewed change makes. Returns the zone, None without primary zones.
    *n* names the record (a repeated edit adds another record to the same zone)."""
    config = yaml.safe_load((project / f"Pulumi.{stack}.yaml").read_text())["config"]
    zones = list(config.get(f"{P}zones") or [])
    for entry in config.get(f"{P}zonesFiles") or []:
        target = project / entry
        for path in sorted(target.glob("*.yaml")) if target.is_dir() else [target]:
            zones += yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader",
                                                                yaml.SafeLoader)) or []
    primary = [z for z in zones if z.get("type") == "primary" and z.get("recordsFile")]
    if not primary:
        return None
    zone = primary[len(primary) // 2]
    with open(project / zone["recordsFile"], "a") as fh:
        fh.write(EDIT_LINE.format(n=n))
    return str(zone["zoneName"])


def _short(urn: str) -> str:
    """`type name` of a URN (the type's last segment: ConfigMap, ZoneSerials, ...)."""
    parts = urn.split("::")
    kind = parts[-2].rsplit("$", 1)[-1].rsplit(":", 1)[-1] if len(parts) >= 2 else "?"
    return f"{kind} {parts[-1]}"


def step_report(events: list[tuple[float, dict[str, Any]]]) -> dict[str, Any]:
    """What the engine did, from its streamed events stamped on arrival (seconds from the
    command's start): steps by op, the steps that change something, the first and last
    step (each after its provider's Check and Diff), and the gaps between consecutive
    steps summed by the resource type of the later one (where the time between steps
    goes: the program's registrations and the providers' Check/Diff of that type)."""
    pre = [(t, e["resourcePreEvent"].get("metadata") or {}) for t, e in events
           if "resourcePreEvent" in e]
    ops = Counter(str(m.get("op")) for _, m in pre)
    changed = sorted(f"{m.get('op')} {_short(str(m.get('urn', '')))}" for _, m in pre
                     if m.get("op") not in ("same", "read"))
    # a replacement is three steps (create-replacement, replace, delete-replaced) of one URN
    changed_urns = {str(m.get("urn")) for _, m in pre if m.get("op") not in ("same", "read")}
    gaps: Counter[str] = Counter()
    for (t0, _), (t1, m) in itertools.pairwise(pre):
        gaps[_short(str(m.get("urn", ""))).split(" ", 1)[0]] += t1 - t0
    # the program's last "registering resource" debug line: after it, what is left is the
    # engine's serial Check/Diff of each step and the outputs the program waits on
    registering = [t for t, e in events if str((e.get("diagnosticEvent") or {}).get(
        "message", "")).startswith("registering resource")]
    summary = next((e["summaryEvent"] for _, e in reversed(events) if "summaryEvent" in e), {})
    return {
        "steps": len(pre), "ops": dict(ops), "changed": changed[:50],
        "changed_resources": len(changed_urns),
        "last_registering_s": round(registering[-1], 2) if registering else None,
        "first_step_s": round(pre[0][0], 2) if pre else None,
        "last_step_s": round(pre[-1][0], 2) if pre else None,
        "last_event_s": round(events[-1][0], 2) if events else None,
        "gaps_by_type_s": {k: round(v, 2) for k, v in gaps.most_common(8)},
        "summary": summary.get("resourceChanges"),
    }


def home_without_logs(home: Path) -> Path:
    """A PULUMI_HOME whose entries link to the real one's, but whose `logs` is a file: the
    CLI (3.260) then cannot start its automatic log (~/.pulumi/logs, every verbose line with
    every resource's properties, compressed and encrypted), which it otherwise writes
    whatever -v says. For a side-by-side of what that log costs; users pay it."""
    real = Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
    home.mkdir(parents=True)
    for entry in real.iterdir() if real.is_dir() else []:
        if entry.name != "logs":
            (home / entry.name).symlink_to(entry)
    (home / "logs").write_text("automatic logging off for this bench run\n")
    return home


def _median(runs: dict[str, dict[str, Any]], label: str) -> float:
    """The median wall time of *label*'s runs (label, label2, label3, ...)."""
    return statistics.median(r["s"] for k, r in runs.items()
                             if k == label or (k.startswith(label) and k[len(label):].isdigit()))


def preview(project: Path, stacks: list[str], *, edit: bool = True, warm: bool = True,
            repeat: int = 1, engine_log: bool = True, log_both: bool = False,
            skip_checkpoints: bool = False, keep: Path | None = None) -> dict:
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
        without_cluster(project, stack)
    shutil.copy(ROOT / "__main__.py", project / "__main__.py")
    results: dict[str, dict] = {}
    state = work / "state"  # the file backend (kept with --keep: preview again by hand)
    state.mkdir()
    env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{state}",
           "PULUMI_CONFIG_PASSPHRASE": "bench", "PYTHONPATH": str(ROOT),
           # --json streams the engine's events instead of one summary at the end
           "PULUMI_ENABLE_STREAMING_JSON_PREVIEW": "1"}
    env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    no_log_env = {"PULUMI_HOME": str(home_without_logs(work / "pulumi-home"))} if (
        log_both or not engine_log) else {}
    if not engine_log:
        env.update(no_log_env)

    def pulumi(*args: str, stack: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["pulumi", *args, "--stack", stack, "--non-interactive"],
                              cwd=project, env=env, capture_output=True, text=True,
                              timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"pulumi {' '.join(args)} ({stack}) exited "
                               f"{proc.returncode}:\n{proc.stdout[-3000:]}"
                               f"{proc.stderr[-3000:]}")
        return proc

    def timed(stack: str, label: str, *args: str,
              extra_env: dict[str, str] | None = None) -> dict[str, Any]:
        """One engine command with --json, as the CLI's child; its events stamped as
        they arrive, the process tree's RSS and each process's CPU sampled."""
        load = os.getloadavg()[0]
        log = work / f"events-{stack}-{label}.jsonl"
        err = work / f"stderr-{stack}-{label}.txt"
        events: list[tuple[float, dict[str, Any]]] = []
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        with open(err, "w") as err_fh, open(log, "w") as log_fh:
            proc = subprocess.Popen(
                ["pulumi", *args, "--json", "--stack", stack, "--non-interactive"],
                cwd=project, env={**env, **(extra_env or {})}, stdout=subprocess.PIPE,
                stderr=err_fh, text=True)
            sampler = CpuSampler(proc.pid).start()
            killer = threading.Timer(3600, proc.kill)
            killer.start()
            assert proc.stdout is not None
            for line in proc.stdout:
                log_fh.write(line)
                if line.startswith("{") and (event := parse_event(line)) is not None:
                    events.append((time.perf_counter() - start, event))
            code = proc.wait()
            elapsed = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            killer.cancel()
            sampler.stop()
        if code != 0:
            raise RuntimeError(f"pulumi {' '.join(args)} ({stack}) exited {code}:\n"
                               f"{log.read_text()[-3000:]}{err.read_text()[-3000:]}")
        by_name = {k: round(v / MB, 1) for k, v in sorted(
            sampler.peak_by_name.items(), key=lambda kv: -kv[1])[:6]}
        # CPU of the whole tree (each process waited for by its parent): less
        # sensitive than wall time to the other work on a shared machine
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {"s": round(elapsed, 2), "load1": round(load, 1), "cpu_s": round(cpu, 2),
                "cpu_by_process_s": sampler.cpu_by_name(),
                **step_report(events),
                "peak_rss_mb": max(by_name.values(), default=None),
                "peak_rss_by_process_mb": by_name,
                "peak_rss_tree_mb": round(sampler.peak_total / MB, 1)}

    for stack in stacks:
        subprocess.run(["pulumi", "stack", "init", stack, "--non-interactive"], cwd=project,
                       env=env, capture_output=True, text=True, timeout=120, check=True)
        secret = base64.b64encode(os.urandom(32)).decode()
        pulumi("config", "set", "--secret", f"{P}tsigSecret", secret, stack=stack)
        runs: dict[str, dict[str, Any]] = {}
        runs["cold"] = timed(stack, "cold", "preview")
        if warm:
            runs["warm"] = timed(stack, "warm", "preview")
        # PULUMI_SKIP_CHECKPOINTS: the state written once at the end, not after every
        # step (each write serializes the whole state: at 10,000 zones 131 x 150 MB)
        runs["up"] = timed(stack, "up", "up", "--yes", "--skip-preview", extra_env=(
            {"PULUMI_SKIP_CHECKPOINTS": "true"} if skip_checkpoints else None))
        runs["nochange"] = timed(stack, "nochange", "preview")
        if log_both:  # the same preview with the CLI's automatic log off, side by side
            runs["nochange_nolog"] = timed(stack, "nochange_nolog", "preview",
                                           extra_env=no_log_env)
        for n in range(2, repeat + 1):  # the machine is shared: the same preview again
            runs[f"nochange{n}"] = timed(stack, f"nochange{n}", "preview")
        zone = edit_one_zone(project, stack) if edit else None
        if zone is not None:
            runs["edit"] = timed(stack, "edit", "preview")
            if log_both:
                runs["edit_nolog"] = timed(stack, "edit_nolog", "preview", extra_env=no_log_env)
            for n in range(2, repeat + 1):  # one more record in the same zone each time
                edit_one_zone(project, stack, 98 + n)
                runs[f"edit{n}"] = timed(stack, f"edit{n}", "preview")
        row: dict[str, Any] = {
            "preview_s": runs["cold"]["s"], "steps": runs["cold"]["steps"],
            "up_s": runs["up"]["s"],
            "nochange_preview_s": _median(runs, "nochange"),
            "peak_rss_mb": max(r["peak_rss_mb"] or 0 for r in runs.values()),
            "runs": runs}
        if warm:
            row["warm_preview_s"] = runs["warm"]["s"]
        if zone is not None:
            row.update({"edit_preview_s": _median(runs, "edit"), "edited_zone": zone,
                        "edit_ops": runs["edit"]["ops"],
                        "edit_changed": runs["edit"]["changed"]})
        for label in ("nochange_nolog", "edit_nolog"):
            if label in runs:
                row[f"{label}_preview_s"] = runs[label]["s"]
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
    ap.add_argument("--no-warm", action="store_true",
                    help="no second preview against empty state (warm cache)")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run the no-change and the edit preview N times each (median)")
    ap.add_argument("--no-engine-log", action="store_true",
                    help="the CLI's automatic log off (a PULUMI_HOME whose logs is a file)")
    ap.add_argument("--log-both", action="store_true",
                    help="also run the no-change and the edit preview with the automatic log "
                         "off (labels nochange_nolog, edit_nolog), side by side")
    ap.add_argument("--skip-checkpoints", action="store_true",
                    help="`up` with PULUMI_SKIP_CHECKPOINTS=true (state saved once, at the end)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep the project copy (render dirs), its file backend and the event logs")
    args = ap.parse_args()
    result = preview(args.project.resolve(), args.stacks.split(","), edit=not args.no_edit,
                     warm=not args.no_warm, repeat=args.repeat, engine_log=not args.no_engine_log,
                     log_both=args.log_both, skip_checkpoints=args.skip_checkpoints,
                     keep=args.keep)
    if args.json:
        print(json.dumps(result))
    else:
        for stack, r in result["stacks"].items():
            print(f"{stack}: peak RSS of the engine's largest process {r['peak_rss_mb']:.0f} MB")
            for label, run in r["runs"].items():
                ops = ", ".join(f"{n} {op}" for op, n in sorted(run["ops"].items()))
                print(f"  {label:14} {run['s']:8.2f} s  cpu {run['cpu_s']:7.2f} s  "
                      f"(load {run['load1']:4.1f})  "
                      f"registered {run['last_registering_s']} s, steps "
                  f"{run['first_step_s']}..{run['last_step_s']} s: {ops}")
                print(f"{'':16}cpu by process {run['cpu_by_process_s']}, "
                      f"peak RSS {run['peak_rss_by_process_mb']}")
                for change in run["changed"][:6] if label == "edit" else []:
                    print(f"            {change}")
        print(f"sum {result['preview_s_sum']:.2f} s, slowest stack {result['preview_s_max']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
