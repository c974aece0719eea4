"""Evaluate one stack's whole Pulumi program under mocks, in this process, and print JSON.

run.py starts this in a fresh subprocess per stack so that peak RSS
(resource.getrusage in this child) is the stack's own. Stages:

  config     read Pulumi.<stack>.yaml (the engine hands config over as JSON instead)
  model      load_topology: pydantic model, records files, zone build (dnspython or cache)
  render     plan_instance calls made by the components (named.conf, zone files, bodies)
  register   the rest of run_components: ComponentResources, resource registration,
             Outputs, dynamic providers (pulumi mocks, no engine)

Each stage's wall time (_s) and, beside it, CPU time (_cpu_s: user + system of this
process and of the zone-build workers it waited for, ADR 12): on a machine shared with
other work the wall time moves with the load, the CPU time much less.

    python bench/eval_stack.py PROJECT_DIR STACK [--cache-dir DIR|off]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

# BENCH_REPO: measure another checkout of the product (e.g. with a patch applied)
ROOT = Path(os.environ.get("BENCH_REPO") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _cpu() -> float:
    """User + system CPU seconds of this process and of its reaped children (workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("project", type=Path)
    ap.add_argument("stack")
    ap.add_argument("--cache-dir", default=None,
                    help="zone content cache directory, or 'off' (default: the product's)")
    args = ap.parse_args()
    if args.cache_dir is not None:
        os.environ["BIND9_TOPOLOGY_CACHE_DIR"] = args.cache_dir

    t_start = time.perf_counter()
    import synth

    from bind9_topology.config.topology import load_topology, read_stack_file
    from components import region
    from components.preview import run_components

    t_import = time.perf_counter()
    render_s = render_cpu_s = 0.0
    real_render = region.plan_instance

    def timed_render(*a, **kw):
        nonlocal render_s, render_cpu_s
        t, c = time.perf_counter(), time.process_time()
        try:
            return real_render(*a, **kw)
        finally:
            render_s += time.perf_counter() - t
            render_cpu_s += time.process_time() - c

    region.plan_instance = timed_render

    raw = read_stack_file(args.project, args.stack)
    t_config, c_config = time.perf_counter(), _cpu()
    topo = load_topology(raw, stack=args.stack, project_dir=args.project,
                         tsig_secret=synth.TSIG_SECRET)
    t_model, c_model = time.perf_counter(), _cpu()
    mocks = run_components(topo)
    t_end, c_end = time.perf_counter(), _cpu()
    records = sum(c.record_count for c in topo.contents.values())
    out = {
        "stack": args.stack,
        "zones": len(topo.spec.zones),
        "primary_zones": len(topo.contents),
        "records": records,
        "resources": len(mocks.resources),
        "import_s": round(t_import - t_start, 3),
        "config_s": round(t_config - t_import, 3),
        "model_s": round(t_model - t_config, 3),
        "render_s": round(render_s, 3),
        "register_s": round(t_end - t_model - render_s, 3),
        # the program as the engine runs it: model + components (config read excluded)
        "program_s": round(t_end - t_config, 3),
        "total_s": round(t_end - t_start, 3),
        "model_cpu_s": round(c_model - c_config, 3),
        "render_cpu_s": round(render_cpu_s, 3),
        "register_cpu_s": round(c_end - c_model - render_cpu_s, 3),
        "program_cpu_s": round(c_end - c_config, 3),
        "load1": round(os.getloadavg()[0], 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
