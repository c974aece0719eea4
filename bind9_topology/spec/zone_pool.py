"""Cold zone builds across the machine's cores.

Building a zone (parse its records, validate, sort, digest) is pure CPU in Python, one
core's worth. A fresh clone or a new CI machine builds every zone at once (a thousand
zones of a hundred records: about four seconds on one core), so when many zones miss
the content cache they are split among worker processes. A worker is a fresh
interpreter (``python -m bind9_topology.spec.zone_pool``), not a fork: the Pulumi
program that calls this runs gRPC and asyncio threads that a fork would copy mid-flight,
and multiprocessing's spawn would import the program's ``__main__`` again. Work goes in
and results come back as pickles over the worker's stdin/stdout (the parent's own
child, nothing else reads them). A worker's environment holds only what Python needs
to start: never the stack's config or secrets. A worker that fails costs its share of
the zones being built here instead, never a different result.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bind9_topology.spec.model import ConfigIssue, Zone
    from bind9_topology.spec.zone_records import ZoneContent

#: fewer zones to build than this: build them here (a worker costs an interpreter start)
MIN_ZONES_PER_WORKER = 64
MAX_WORKERS = 4
#: what a worker's environment keeps from ours (Python's own settings, no secrets)
KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONHASHSEED",
            "PYTHONDONTWRITEBYTECODE", "BIND9_TOPOLOGY_CACHE_DIR")

Built = tuple["ZoneContent | None", list["ConfigIssue"]]


def workers_for(count: int) -> int:
    """How many processes build *count* zones: this one plus the extra workers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    return max(1, min(cores, MAX_WORKERS, count // MIN_ZONES_PER_WORKER))


def build_many(zones: list[tuple[Zone, str]], project_dir: Path,
               max_file_bytes: int) -> list[Built]:
    """``_build_zone`` of each (zone, path), in order; the same result however many
    processes share the work."""
    from bind9_topology.spec.zone_records import _build_zone

    parts = workers_for(len(zones))
    if parts <= 1:
        return [_build_zone(z, p, project_dir, max_file_bytes) for z, p in zones]
    # interleaved shares: neighbouring zones are often alike in size
    shares = [list(range(i, len(zones), parts)) for i in range(parts)]
    started = [_start([zones[i] for i in share], project_dir, max_file_bytes)
               for share in shares[1:]]
    results: dict[int, Built] = {
        i: _build_zone(*zones[i], project_dir, max_file_bytes) for i in shares[0]}
    for share, (proc, sent) in zip(shares[1:], started, strict=True):
        done = _collect(proc, sent, len(share))
        for i, built in zip(share, done or [
                _build_zone(*zones[i], project_dir, max_file_bytes) for i in share],
                strict=True):
            results[i] = built
    return [results[i] for i in range(len(zones))]


def worker_env() -> dict[str, str]:
    """What a worker starts with: Python's own settings and this process's import path."""
    env = {k: os.environ[k] for k in KEPT_ENV if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def _start(zones: list[tuple[Zone, str]], project_dir: Path,
           max_file_bytes: int) -> tuple[subprocess.Popen[bytes] | None, bytes]:
    work = pickle.dumps((zones, project_dir, max_file_bytes), protocol=pickle.HIGHEST_PROTOCOL)
    env = worker_env()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "bind9_topology.spec.zone_pool"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=env)
    except OSError:
        return None, work
    return proc, work


def _collect(proc: subprocess.Popen[bytes] | None, work: bytes, count: int) -> list[Built] | None:
    """The worker's results, or None when it could not deliver them."""
    if proc is None:
        return None
    try:
        out, _ = proc.communicate(work, timeout=3600)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()
        return None
    if proc.returncode != 0:
        return None
    try:
        results: Any = pickle.loads(out)
    except Exception:
        return None
    return results if isinstance(results, list) and len(results) == count else None


def _worker() -> int:
    from bind9_topology.spec.zone_records import _build_zone

    zones, project_dir, max_file_bytes = pickle.loads(sys.stdin.buffer.read())
    results = [_build_zone(z, p, project_dir, max_file_bytes) for z, p in zones]
    sys.stdout.buffer.write(pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
