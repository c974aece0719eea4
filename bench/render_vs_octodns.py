"""Zone data to BIND zone files: octoDNS (YamlProvider -> octodns_bind.ZoneFileProvider)
versus our renderer, on the same synthetic zones, timed in the same run.

Ours: load_topology (records files -> pydantic -> dnspython-checked zones) +
render_instance for the primary + writing the zone files. Cold: the zone content
cache is empty (every record parsed by dnspython, as on a fresh clone); warm: the
cache holds the zones (the steady state of repeated previews).
octoDNS: Manager(config).sync(dry_run=False) of the same zones, in the separate
virtualenv that holds bench/requirements.txt (octodns 1.22.0, octodns-bind 1.1.0).
Each side runs in its own subprocess; the time is taken inside it (imports excluded).

    python bench/render_vs_octodns.py PROJECT_DIR [--zones N] [--json]
(PROJECT_DIR from synth.write_project, with octodns/octodns.yaml)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("BENCH_REPO") or HERE.parent)
VENV = ROOT / ".cache" / "bench-venv"


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv(install: bool = True) -> tuple[Path | None, str]:
    """The bench virtualenv's python with octoDNS importable, or (None, why not)."""
    py = venv_python()
    check = [str(py), "-c", "import octodns, octodns_bind, matplotlib"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return py, "ok"
    if not install:
        return None, f"octoDNS is not installed in {VENV} (run: python -m venv {VENV} && " \
                     f"{VENV}/bin/pip install -r bench/requirements.txt)"
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True,
                           capture_output=True, timeout=300)
        r = subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "-r",
                            str(HERE / "requirements.txt")], capture_output=True, text=True,
                           timeout=900)
        if r.returncode != 0:
            return None, "pip install -r bench/requirements.txt failed: " + (
                r.stderr.strip().splitlines() or ["?"])[-1]
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not create {VENV}: {exc}"
    if subprocess.run(check, capture_output=True).returncode != 0:
        return None, "octoDNS still not importable after installing bench/requirements.txt"
    return py, "ok"


# --------------------------------------------------------------------------- child sides


def side_octodns(project: Path) -> dict:
    from octodns.manager import Manager

    out = project / "octodns" / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t = time.perf_counter()
    manager = Manager(str(project / "octodns" / "octodns.yaml"))
    manager.sync(dry_run=False)
    elapsed = time.perf_counter() - t
    files = list(out.iterdir())
    return {"seconds": elapsed, "files": len(files),
            "bytes": sum(f.stat().st_size for f in files),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def side_ours(project: Path, cache_dir: str) -> dict:
    os.environ["BIND9_TOPOLOGY_CACHE_DIR"] = cache_dir
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    import synth

    from bind9_topology.config.topology import load_topology, read_stack_file
    from bind9_topology.render.bind_files import render_instance, write_tree

    raw = read_stack_file(project, synth.PRIMARY_STACK)  # config read: not timed (engine: JSON)
    out = project / "ours-out"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    topo = load_topology(raw, stack=synth.PRIMARY_STACK, project_dir=project,
                         tsig_secret=synth.TSIG_SECRET)
    primary = next(i for i in topo.spec.instances if i.role == "primary")
    rendered = render_instance(topo.spec, primary, topo.contents,
                               dict.fromkeys(topo.contents, 2024010100))
    write_tree(rendered, out, include_secrets=False)
    elapsed = time.perf_counter() - t
    return {"seconds": elapsed, "files": len(rendered.zone_files),
            "bytes": sum(len(b) for b in rendered.zone_files.values()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# --------------------------------------------------------------------------- driver


def _child(python: str, *args: str, timeout: float = 1800) -> dict:
    r = subprocess.run([python, str(Path(__file__).resolve()), *args], capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def compare(project: Path, install: bool = True) -> dict:
    result: dict = {"ours_cold_s": None, "ours_warm_s": None, "octodns_s": None,
                    "ratio_cold": None, "ratio_warm": None, "note": ""}
    with tempfile.TemporaryDirectory(prefix="zone-cache-") as cache:
        cold = _child(sys.executable, "--side", "ours", str(project), "--cache-dir", cache)
        warm = _child(sys.executable, "--side", "ours", str(project), "--cache-dir", cache)
    result.update(ours_cold_s=round(cold["seconds"], 3), ours_warm_s=round(warm["seconds"], 3),
                  ours_peak_rss_mb=round(cold["peak_rss_mb"], 1), ours_files=cold["files"])
    py, why = ensure_venv(install)
    if py is None:
        result["note"] = f"octoDNS not run: {why}"
        return result
    try:
        octo = _child(str(py), "--side", "octodns", str(project))
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        result["note"] = f"octoDNS failed: {exc}"
        return result
    result.update(octodns_s=round(octo["seconds"], 3), octodns_files=octo["files"],
                  octodns_peak_rss_mb=round(octo["peak_rss_mb"], 1),
                  ratio_cold=round(octo["seconds"] / cold["seconds"], 2),
                  ratio_warm=round(octo["seconds"] / warm["seconds"], 2))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project", type=Path)
    ap.add_argument("--side", choices=["ours", "octodns"])
    ap.add_argument("--cache-dir", default="off")
    ap.add_argument("--no-install", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.side == "octodns":
        print(json.dumps(side_octodns(args.project)))
        return 0
    if args.side == "ours":
        print(json.dumps(side_ours(args.project, args.cache_dir)))
        return 0
    result = compare(args.project, install=not args.no_install)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
