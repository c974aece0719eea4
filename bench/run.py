"""All benchmarks, one entry point: prints a table, writes bench/results/latest.json.

    python bench/run.py            # full: 1,000 zones x 100 records, 3 stacks, ...
    python bench/run.py --quick    # small sizes, under two minutes
    python bench/run.py --size 10000   # issue 21: every figure at 10,000 and at 1,000
                                       # zones in one run, the ratio, the 10k verdicts

Keys of latest.json (see bench/README.md for what each measures):
  eval_s, eval_peak_rss_mb, eval_cold_s, eval_stages, engine_preview_s,
  engine_preview_largest_s (cold cache), engine_preview_largest_warm_s, engine_up_s,
  engine_preview_nochange_s, engine_preview_largest_edit_s, engine_preview_edit_steps,
  engine_peak_rss_mb,
  render_ratio_vs_octodns, gate_overhead_p50_ms,
  gate_overhead_p95_ms, change_to_secondaries_p50_ms, change_to_secondaries_p95_ms,
  change_to_gate_ready_p50_ms, change_to_gate_ready_p95_ms, all_zones_to_secondaries_p50_ms,
  all_zones_to_secondaries_p95_ms, verify_1000x3_s, gate_sessions_before_s,
  gate_sessions_after_s, gate_sessions_ratio, max_zone_records, validate_200k_s,
  machine, notes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("BENCH_REPO") or HERE.parent)
sys.path.insert(0, str(HERE))

import synth  # noqa: E402

RESULTS = HERE / "results"
TARGETS = {
    "eval_s": ("<", 10.0),
    "eval_cold_s": ("<", 8.0),
    "eval_peak_rss_mb": ("<", 250.0),
    "engine_preview_largest_s": ("<", 12.0),
    "render_ratio_vs_octodns": (">=", 5.0),
    "gate_overhead_p50_ms": ("<", 100.0),
    "change_to_secondaries_p50_ms": ("<", 100.0),
    "validate_200k_s": ("<", 10.0),
    "verify_1000x3_s": ("<", 3.0),
    "max_zone_records": (">=", 100_000),
}
#: issue 21's targets at 10,000 zones (`--size 10000`; the 1,000-zone targets above stay
#: those of the full mode)
TARGETS_SCALED = {
    "eval_cold_s": ("<", 20.0),
    "engine_preview_largest_s": ("<", 40.0),
    "engine_preview_largest_edit_s": ("<", 10.0),
    "verify_s": ("<", 15.0),
    "change_to_secondaries_p50_ms": ("<", 50.0),
    "gate_overhead_p50_ms": ("<", 100.0),
    "validate_big_s": ("<", 40.0),
    "eval_peak_rss_mb": ("<", 1000.0),
    "engine_peak_rss_mb": ("<", 1000.0),
    "render_ratio_vs_octodns": (">=", 10.0),
}
# the stack with the most resources (bench/synth.py: the 1,000 primary zones)
LARGEST_STACK = "bench"
SIZES: dict[str, dict[str, Any]] = {
    "full": {"zones": 1000, "records": 100, "gate_zones": 50, "gate_rounds": 3,
             "edit_rounds": 40, "verify_zones": 1000, "max_start": 25_000,
             "max_cap": 800_000, "engine_stacks": "all"},
    "quick": {"zones": 100, "records": 100, "gate_zones": 20, "gate_rounds": 2,
              "edit_rounds": 20, "verify_zones": 1000, "max_start": 25_000, "max_cap": 100_000,
              "engine_stacks": "largest"},
}


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = round(kb / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "mem_gib": mem,
            "python": platform.python_version(), "platform": platform.platform()}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def child_json(args: list[str], timeout: float = 3600,
               env: dict[str, str] | None = None) -> dict[str, Any]:
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, **(env or {})})
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {r.returncode}:\n{r.stderr[-2000:]}")
    text = r.stdout.strip()
    try:
        doc = json.loads(text)  # one document, possibly indented
    except ValueError:
        doc = json.loads(text.splitlines()[-1])  # log lines, then one JSON line
    if not isinstance(doc, dict):
        raise RuntimeError(f"{' '.join(args)} printed {type(doc).__name__}, not an object")
    return doc


def project_for(zones: int, records: int, octodns: bool = True) -> Path:
    """The synthetic project, kept under .cache/ between runs (it is input, not output).
    Without *octodns* (the 10,000-zone project: octoDNS runs at 1,000) no octoDNS files."""
    path = ROOT / ".cache" / "bench" / f"project-{zones}x{records}"
    stamp = path / ".synth-source"
    source = (HERE / "synth.py").read_text() + f"\noctodns={octodns}"
    if not (stamp.exists() and stamp.read_text() == source):
        log(f"writing synthetic project {path} ({zones} zones x {records} records) ...")
        synth.write_project(path, zones, records, octodns=octodns)
        stamp.write_text(source)
    return path


def bench_eval(project: Path) -> dict[str, Any]:
    """Each stack in a fresh process: cold (empty zone cache), then warm (cache filled)."""
    out: dict[str, Any] = {"cold": {}, "warm": {}}
    with tempfile.TemporaryDirectory(prefix="zone-cache-") as cache:
        for phase in ("cold", "warm"):
            for stack in synth.STACKS:
                log(f"eval {phase} {stack} ...")
                out[phase][stack] = child_json([str(HERE / "eval_stack.py"), str(project),
                                                stack, "--cache-dir", cache])
    for phase in ("cold", "warm"):
        runs = out[phase].values()
        out[f"{phase}_program_s"] = round(sum(r["program_s"] for r in runs), 3)
        out[f"{phase}_max_stack_s"] = round(max(r["program_s"] for r in runs), 3)
        out[f"{phase}_peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return out


def bench_gate(zones: int, rounds: int, edit: str = "all"
               ) -> tuple[dict[str, Any] | None, str]:
    script = HERE / "gate_latency.py"
    try:
        return child_json([str(script), "--zones", str(zones), "--rounds", str(rounds),
                           "--edit", edit, "--secondaries", "3", "--json"], timeout=900), ""
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
        return None, f"gate_latency.py --edit {edit} failed: {str(exc)[-600:]}"


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def verdict(key: str, value: Any) -> str:
    if key not in TARGETS:
        return ""
    op, target = TARGETS[key]
    if value is None:
        return "not measured"
    ok = value < target if op == "<" else value >= target
    return ("met" if ok else "MISSED") + f" ({op} {fmt(target)})"


# --------------------------------------------------------------------------- --size N

#: the rows of `--size N`: label, key (TARGETS_SCALED), unit
SCALED_ROWS = [
    ("eval of 3 stacks under mocks, cold", "eval_cold_s", "s"),
    ("eval of 3 stacks under mocks, warm", "eval_s", "s"),
    ("  primary stack, cold: config/model/render/register", "eval_primary_stages", ""),
    ("peak RSS of eval (largest stack)", "eval_peak_rss_mb", "MB"),
    ("engine `pulumi preview` of the primary, cold", "engine_preview_largest_s", "s"),
    ("engine preview of the primary, warm", "engine_preview_largest_warm_s", "s"),
    ("engine `pulumi up` of the primary (render dir, gate off)", "engine_up_s", "s"),
    ("engine preview of the primary, nothing changed", "engine_preview_nochange_s", "s"),
    ("engine preview of the primary, one zone edited", "engine_preview_largest_edit_s", "s"),
    ("  resources it changes, of its steps", "engine_preview_edit_steps", ""),
    ("  load average (1 min) during the engine runs, max", "engine_load1", ""),
    ("peak RSS of the engine's largest process", "engine_peak_rss_mb", "MB"),
    ("verify N zones x 3 secondaries (full gate)", "verify_s", "s"),
    ("one edit -> every secondary serving, p50", "change_to_secondaries_p50_ms", "ms"),
    ("one edit -> gate ready, p50", "change_to_gate_ready_p50_ms", "ms"),
    ("gate overhead, 50 zones changed at once, p50", "gate_overhead_p50_ms", "ms"),
    ("validate of one big zone (1k: 100,000, 10k: 1,000,000 records)", "validate_big_s", "s"),
    ("render vs octoDNS 1.22, cold, 1,000 zones", "render_ratio_vs_octodns", "x"),
]


def engine_keys(ep: dict[str, Any]) -> dict[str, Any]:
    """run.py's keys from engine_preview.py's row of the largest stack: previews cold and
    warm against no state, `up` (render directory, gate off), a preview with nothing
    changed and one after one zone edited, against the deployed state."""
    row = ep["stacks"][LARGEST_STACK]
    edit = row["runs"].get("edit") or {}
    return {
        "engine_preview_largest_s": row.get("preview_s"),
        "engine_preview_largest_warm_s": row.get("warm_preview_s"),
        "engine_up_s": row.get("up_s"),
        "engine_preview_nochange_s": row.get("nochange_preview_s"),
        "engine_preview_largest_edit_s": row.get("edit_preview_s"),
        # resources the edit preview changes, of all its steps (the rest are `same`)
        "engine_preview_edit_steps": (f"{edit['changed_resources']} of {edit['steps']:,}"
                                      if edit else None),
        "engine_peak_rss_mb": row.get("peak_rss_mb"),
        "engine_load1": max(r["load1"] for r in row["runs"].values()),
    }


def scaled_verdict(key: str, value: Any) -> str:
    if key not in TARGETS_SCALED:
        return ""
    op, target = TARGETS_SCALED[key]
    if not isinstance(value, (int, float)):
        return "not measured"
    ok = value < target if op == "<" else value >= target
    return ("met" if ok else "MISSED") + f" ({op} {fmt(target)})"


def _get(doc: dict[str, Any] | None, key: str) -> Any:
    """A key of a child's JSON as it is today; a missing one is None (printed n/a)."""
    return doc.get(key) if isinstance(doc, dict) else None


def measure_size(zones: int, records: int, skip: set[str], notes: list[str],
                 *, big_validate: int, octodns: bool, install: bool) -> dict[str, Any]:
    """Every figure of issue 21's table at one size (zones x records over the 3 stacks)."""
    tag = f"{zones:,} zones"
    out: dict[str, Any] = {"zones": zones, "records": records}
    project = project_for(zones, records, octodns=octodns)
    if "eval" not in skip:
        ev = bench_eval(project)
        out["eval"] = ev
        out["eval_cold_s"] = ev["cold_program_s"]
        out["eval_s"] = ev["warm_program_s"]
        out["eval_peak_rss_mb"] = max(ev["cold_peak_rss_mb"], ev["warm_peak_rss_mb"])
        p = ev["cold"][synth.PRIMARY_STACK]
        out["eval_primary_stages"] = (f"{p['config_s']:.1f}/{p['model_s']:.1f}/"
                                      f"{p['render_s']:.1f}/{p['register_s']:.1f}")
    if "engine" not in skip:
        if shutil.which("pulumi") is None:
            notes.append("engine: no `pulumi` CLI on PATH; run `source scripts/engine-env.sh`")
        else:
            log(f"[{tag}] engine on {LARGEST_STACK}: preview cold and warm, up, preview "
                "with nothing changed and after one zone edited ...")
            try:
                ep = child_json([str(HERE / "engine_preview.py"), str(project), "--stacks",
                                 LARGEST_STACK, "--json"], timeout=7200)
                out["engine_preview"] = ep
                out.update(engine_keys(ep))
            except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
                notes.append(f"[{tag}] engine preview failed: {str(exc)[-600:]}")
    if "verify" not in skip:
        log(f"[{tag}] verify {zones} zones x 3 secondaries ...")
        try:
            vf = child_json([str(HERE / "verify_fanout.py"), "--zones", str(zones),
                             "--records", "10", "--json"], timeout=3600)
            out["verify_fanout"] = vf
            out["verify_s"] = _get(vf, "verify_s")
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            notes.append(f"[{tag}] verify failed: {str(exc)[-600:]}")
    if "gate" not in skip:
        log(f"[{tag}] gate latency: one zone edited at a time, {zones} zones loaded ...")
        one, why = bench_gate(zones, 10, "one")
        out["gate_latency_one"] = one
        out["change_to_secondaries_p50_ms"] = _get(one, "all_secondaries_p50_ms")
        out["change_to_gate_ready_p50_ms"] = _get(one, "gate_ready_p50_ms")
        if why:
            notes.append(f"[{tag}] {why}")
    if "validate" not in skip:
        log(f"[{tag}] validate of one {big_validate:,}-record zone ...")
        try:
            vb = child_json([str(HERE / "validate_big.py"), "--records", str(big_validate),
                             "--json"], timeout=3600)
            out["validate_big"] = vb
            out["validate_big_s"] = _get(vb, "validate_s")
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            notes.append(f"[{tag}] validate_big failed: {str(exc)[-600:]}")
    if octodns and "octodns" not in skip:
        log(f"[{tag}] render vs octoDNS ...")
        from render_vs_octodns import compare

        oc = compare(project, install=install)
        out["render_vs_octodns"] = oc
        out["render_ratio_vs_octodns"] = oc.get("ratio_cold")
        if oc.get("note"):
            notes.append(oc["note"])
    return out


def _cell(value: Any, unit: str) -> str:
    return fmt(value) + (f" {unit}" if unit and value is not None else "")


def main_scaled(zones: int, args: argparse.Namespace) -> int:
    """`--size N`: every figure at N zones and at 1,000 zones in the same run, the ratio
    N/1,000 and the verdicts against issue 21's targets at N (TARGETS_SCALED)."""
    skip = set(filter(None, args.skip.split(",")))
    t0 = time.perf_counter()
    notes: list[str] = []
    base = 1000
    result: dict[str, Any] = {"mode": f"size-{zones}", "machine": machine(),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    small = measure_size(base, 100, skip, notes, big_validate=100_000, octodns=True,
                         install=not args.no_install)
    # The gate's overhead with 50 zones changed at once does not grow with the zones
    # loaded as gate_latency.py measures it (it loads the zones it changes): one run.
    if "gate" not in skip:
        log("gate latency: 50 zones changed at once ...")
        gl, why = bench_gate(50, 3, "all")
        small["gate_latency"] = gl
        small["gate_overhead_p50_ms"] = _get(gl, "gate_overhead_p50_ms")
        if why:
            notes.append(why)
    large = measure_size(zones, 100, skip, notes, big_validate=1_000_000, octodns=False,
                         install=False)
    large["gate_overhead_p50_ms"] = small.get("gate_overhead_p50_ms")
    large["render_ratio_vs_octodns"] = small.get("render_ratio_vs_octodns")
    notes.append("gate overhead (50 zones changed at once) and render vs octoDNS (1,000 "
                 "zones) are one measurement each, shown in both columns")
    notes.append("verify: verify_fanout.py --zones N --records 10 (its default record count)")
    result.update({"small": small, "large": large, "notes": notes,
                   "wall_s": round(time.perf_counter() - t0, 1)})
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS / f"size-{zones}.json"
    out_path.write_text(json.dumps(result, indent=2, default=str) + "\n")

    m = result["machine"]
    print(f"bench --size {zones} on {m['nproc']} x {m['cpu']}, {m['mem_gib']} GiB, "
          f"Python {m['python']}; {result['wall_s']} s")
    width = max(len(label) for label, _, _ in SCALED_ROWS)
    print(f"  {'figure':<{width}}  {f'{base:,} zones':>12}  {f'{zones:,} zones':>12}  "
          f"{'ratio':>7}  verdict at {zones:,}")
    for label, key, unit in SCALED_ROWS:
        a, b = small.get(key), large.get(key)
        ratio = (f"{b / a:.1f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float))
                 and a and key not in ("gate_overhead_p50_ms", "render_ratio_vs_octodns")
                 else "")
        print(f"  {label:<{width}}  {_cell(a, unit):>12}  {_cell(b, unit):>12}  {ratio:>7}  "
              f"{scaled_verdict(key, b)}")
    for n in notes:
        print(f"  note: {n}")
    print(f"wrote {out_path}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, under two minutes")
    ap.add_argument("--size", type=int, default=None, metavar="ZONES",
                    help="issue 21: every figure at ZONES (e.g. 10000) and at 1,000 zones in "
                    "one run, with the ratio and the verdicts at ZONES")
    ap.add_argument("--no-install", action="store_true",
                    help="do not create the octoDNS virtualenv when it is missing")
    ap.add_argument("--skip", default="",
                    help="comma list: eval,engine,octodns,gate,verify,sessions,maxzone,"
                    "validate,plot")
    args = ap.parse_args()
    if args.size is not None:
        return main_scaled(args.size, args)
    mode = "quick" if args.quick else "full"
    size = SIZES[mode]
    skip = set(filter(None, args.skip.split(",")))
    t0 = time.perf_counter()
    notes: list[str] = []
    result: dict[str, Any] = {"mode": mode, "machine": machine(), "sizes": size,
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    project = project_for(size["zones"], size["records"])

    # 1. the whole program under mocks, per stack
    if "eval" not in skip:
        ev = bench_eval(project)
        result["eval"] = ev
        result["eval_s"] = ev["warm_program_s"]
        result["eval_cold_s"] = ev["cold_program_s"]
        result["eval_peak_rss_mb"] = ev["warm_peak_rss_mb"]
        result["eval_cold_peak_rss_mb"] = ev["cold_peak_rss_mb"]
        result["eval_stages"] = {
            phase: {stack: {k: r[k] for k in ("config_s", "model_s", "render_s", "register_s",
                                              "resources", "peak_rss_mb")}
                    for stack, r in ev[phase].items()}
            for phase in ("cold", "warm")}
        notes.append("eval_s: sum over the 3 stacks of the program (model + components under "
                     "mocks), each stack in a fresh process, zone cache warm; eval_cold_s: "
                     "the same with an empty cache (a fresh clone)")
    if "engine" in skip:
        pass
    elif shutil.which("pulumi") is None:
        result["engine_preview_s"] = result["engine_preview_largest_s"] = None
        notes.append("engine: no `pulumi` CLI on PATH, so no `pulumi preview` timing "
                     "(mocks only); run `source scripts/engine-env.sh` first")
    else:
        stacks = (LARGEST_STACK if size["engine_stacks"] == "largest"
                  else ",".join(synth.STACKS))
        log(f"pulumi preview with the real engine ({stacks}) ...")
        try:
            ep = child_json([str(HERE / "engine_preview.py"), str(project), "--stacks", stacks,
                             "--json"], timeout=7200)
            result["engine_preview"] = ep
            result.update(engine_keys(ep))
            if size["engine_stacks"] != "largest":
                result["engine_preview_s"] = ep["preview_s_sum"]
            notes.append(f"engine_preview_largest_s: real `pulumi preview` of the largest stack "
                         f"({LARGEST_STACK}, {ep['stacks'][LARGEST_STACK]['steps']} steps)"
                         + ("" if size["engine_stacks"] == "largest" else
                            "; engine_preview_s: every stack, summed"))
        except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
            result["engine_preview_largest_s"] = None
            notes.append(f"engine preview failed: {str(exc)[-600:]}")

    # 2. octoDNS side by side
    if "octodns" not in skip:
        log("render vs octoDNS ...")
        sys.path.insert(0, str(HERE))
        from render_vs_octodns import compare

        oc = compare(project, install=not args.no_install)
        result["render_vs_octodns"] = oc
        result["render_ratio_vs_octodns"] = oc["ratio_cold"]
        result["render_ratio_vs_octodns_warm"] = oc["ratio_warm"]
        if oc.get("note"):
            notes.append(oc["note"])
        else:
            notes.append("render_ratio_vs_octodns: octoDNS time / our time with an empty "
                         "zone cache (every record parsed by dnspython); _warm: cache filled")

    # 3. change -> every secondary serving, and the gate's overhead, on real named
    if "gate" not in skip:
        log("gate latency: one zone edited at a time ...")
        one, why = bench_gate(size["gate_zones"], size["edit_rounds"], "one")
        result["gate_latency_one"] = one
        result["change_to_secondaries_p50_ms"] = one and one.get("all_secondaries_p50_ms")
        result["change_to_secondaries_p95_ms"] = one and one.get("all_secondaries_p95_ms")
        result["change_to_gate_ready_p50_ms"] = one and one.get("gate_ready_p50_ms")
        result["change_to_gate_ready_p95_ms"] = one and one.get("gate_ready_p95_ms")
        if one:
            notes.append(f"change_to_secondaries: one zone edited (of {one['zones']}; SIGHUP "
                         f"of the primary) -> the last of {one['secondaries']} secondaries logs "
                         f"the completed transfer, {one['samples']} edits; change_to_gate_ready:"
                         " -> the gate reports every server passed (gate_latency.py --edit one)")
        if why:
            notes.append(why)
        log("gate latency: every zone changed at once ...")
        gl, why = bench_gate(size["gate_zones"], size["gate_rounds"], "all")
        result["gate_latency"] = gl
        result["gate_overhead_p50_ms"] = gl and gl.get("gate_overhead_p50_ms")
        result["gate_overhead_p95_ms"] = gl and gl.get("gate_overhead_p95_ms")
        result["all_zones_to_secondaries_p50_ms"] = gl and gl.get("all_secondaries_p50_ms")
        result["all_zones_to_secondaries_p95_ms"] = gl and gl.get("all_secondaries_p95_ms")
        if gl:
            notes.append(f"all_zones_to_secondaries: {gl['zones']} zones changed at once -> "
                         "every secondary serves each; gate_overhead: a secondary's log line -> "
                         "the gate sees it pass (gate_latency.py --edit all)")
        if why:
            notes.append(why)

    # 4. verification fan-out
    if "verify" not in skip:
        log(f"verify {size['verify_zones']} zones x 3 secondaries ...")
        try:
            vf = child_json([str(HERE / "verify_fanout.py"), "--zones",
                             str(size["verify_zones"]), "--json"], timeout=900)
            result["verify_fanout"] = vf
            result["verify_1000x3_s"] = vf["verify_s"] if vf["zones"] == 1000 else None
            result["verify_again_s"] = vf.get("verify_again_s")
            if vf["zones"] != 1000:
                result[f"verify_{vf['zones']}x3_s"] = vf["verify_s"]
                notes.append(f"verify: quick mode ran {vf['zones']} zones, not 1,000")
            notes.append(f"verify: {vf['function']} per zone (primary SOA+TSIG AXFR+digest "
                         f"and 3 secondaries), {vf['workers']} zones at a time, "
                         f"{vf.get('pulls')} zone transfers; verify_again_s: the same once more "
                         f"in the same process, no serial moved ({vf.get('pulls_again')} "
                         "transfers: the process's content proofs)")
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            result["verify_1000x3_s"] = None
            notes.append(f"verify failed: {str(exc)[-600:]}")

    # 4b. the gate through port-forward-like listeners: a connection per question vs sessions
    if "sessions" not in skip:
        log("gate through 50 ms listeners, before/after kept sessions ...")
        try:
            gs = child_json([str(HERE / "gate_sessions.py"), "--zones", "200", "--rounds",
                             "2" if mode == "quick" else "3", "--json"], timeout=900)
            result["gate_sessions"] = gs
            result["gate_sessions_before_s"] = gs["before_s"]
            result["gate_sessions_after_s"] = gs["after_s"]
            result["gate_sessions_ratio"] = gs["ratio_before_over_after"]
            notes.append(f"gate_sessions: {gs['zones']} zones x {gs['servers']} servers behind "
                         f"listeners adding {gs['connect_delay_ms']:g} ms per new connection "
                         f"(tcp_only, as through the API): {gs['before_connections']} "
                         f"connections before ({gs['before_rev']}), "
                         f"{gs['after_connections']} with kept sessions")
        except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
            result["gate_sessions_before_s"] = result["gate_sessions_after_s"] = None
            notes.append(f"gate_sessions failed: {str(exc)[-600:]}")

    # 5. largest zone
    if "maxzone" not in skip:
        log("largest zone search ...")
        mz = child_json([str(HERE / "max_zone.py"), "--start", str(size["max_start"]),
                         "--cap", str(size["max_cap"]), "--json"], timeout=3600)
        result["max_zone"] = mz
        result["max_zone_records"] = mz["max_zone_records"]
        notes.append(f"max_zone: bounded by {mz['bounded_by']}"
                     + (f"; {mz['note']}" if mz.get("note") else ""))

    # 6. validate of one very large zone
    if "validate" not in skip:
        log("validate of one 200,000-record zone ...")
        try:
            vb = child_json([str(HERE / "validate_big.py"), "--records", "200000", "--json"],
                            timeout=1800)
            result["validate_big"] = vb
            result["validate_200k_s"] = vb["validate_s"]
            notes.append("validate_200k_s: `python -m components validate` of one "
                         "200,000-record zone (records file, content cache off), end to end")
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
            result["validate_200k_s"] = None
            notes.append(f"validate_big failed: {str(exc)[-600:]}")

    # 7. the timeline picture
    if "plot" not in skip:
        log("gate timeline plot ...")
        r = subprocess.run([sys.executable, str(HERE / "plot_timeline.py"), "--zones", "20"],
                           capture_output=True, text=True, timeout=600)
        result["gate_timeline_png"] = (str(RESULTS / "gate_timeline.png")
                                       if r.returncode == 0 else None)
        if r.returncode != 0:
            notes.append(f"plot failed: {r.stderr[-400:]}")

    result["notes"] = notes
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2) + "\n")

    rows = [("eval_s (warm, 3 stacks)", "eval_s"), ("eval_cold_s", "eval_cold_s"),
            ("eval_peak_rss_mb", "eval_peak_rss_mb"),
            ("engine preview, largest stack s", "engine_preview_largest_s"),
            ("engine preview, largest stack, warm cache s", "engine_preview_largest_warm_s"),
            ("engine preview, all stacks s", "engine_preview_s"),
            ("engine up, largest stack s", "engine_up_s"),
            ("engine preview, nothing changed s", "engine_preview_nochange_s"),
            ("engine preview, one zone edited s", "engine_preview_largest_edit_s"),
            ("  resources it changes, of its steps", "engine_preview_edit_steps"),
            ("engine's largest process, peak RSS MB", "engine_peak_rss_mb"),
            ("render_ratio_vs_octodns (cold)", "render_ratio_vs_octodns"),
            ("render ratio (warm)", "render_ratio_vs_octodns_warm"),
            ("one edit -> all secondaries p50 ms", "change_to_secondaries_p50_ms"),
            ("one edit -> all secondaries p95 ms", "change_to_secondaries_p95_ms"),
            ("one edit -> gate ready p50 ms", "change_to_gate_ready_p50_ms"),
            ("one edit -> gate ready p95 ms", "change_to_gate_ready_p95_ms"),
            ("all zones -> secondaries p50 ms", "all_zones_to_secondaries_p50_ms"),
            ("all zones -> secondaries p95 ms", "all_zones_to_secondaries_p95_ms"),
            ("gate_overhead_p50_ms", "gate_overhead_p50_ms"),
            ("gate_overhead_p95_ms", "gate_overhead_p95_ms"),
            ("verify_1000x3_s", "verify_1000x3_s"),
            ("verify again, nothing moved s", "verify_again_s"),
            ("gate, 50 ms listeners, before s", "gate_sessions_before_s"),
            ("gate, 50 ms listeners, sessions s", "gate_sessions_after_s"),
            ("gate, 50 ms listeners, before/after", "gate_sessions_ratio"),
            ("max_zone_records", "max_zone_records"),
            ("validate_200k_s", "validate_200k_s")]
    m = result["machine"]
    print(f"bench ({mode}) on {m['nproc']} x {m['cpu']}, {m['mem_gib']} GiB, "
          f"Python {m['python']}; {result['wall_s']} s")
    width = max(len(label) for label, _ in rows)
    for label, key in rows:
        if key in result:
            print(f"  {label:<{width}}  {fmt(result[key]):>12}  {verdict(key, result[key])}")
    if "eval" in result:
        print("  per stack (warm / cold), seconds and MB:")
        for stack in synth.STACKS:
            w, c = result["eval"]["warm"][stack], result["eval"]["cold"][stack]
            print(f"    {stack:<11} model {w['model_s']:>6.2f}/{c['model_s']:<6.2f} "
                  f"render {w['render_s']:>5.2f} register {w['register_s']:>6.2f} "
                  f"resources {w['resources']:>5} rss {w['peak_rss_mb']:>6.1f}/"
                  f"{c['peak_rss_mb']:.1f}")
    if "render_vs_octodns" in result:
        o = result["render_vs_octodns"]
        print(f"  octoDNS {fmt(o.get('octodns_s'))} s vs ours cold {fmt(o.get('ours_cold_s'))} s"
              f" / warm {fmt(o.get('ours_warm_s'))} s")
    if "verify_fanout" in result:
        v = result["verify_fanout"]
        print(f"  verify {v['zones']} zones x 3: full gate {v['verify_s']} s, secondaries "
              f"only {v['verify_secondaries_only_s']} s")
    for n in notes:
        print(f"  note: {n}")
    print(f"wrote {RESULTS / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
