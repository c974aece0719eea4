"""Cold zone builds across the machine's cores.

Building a zone (parse its records, validate, sort, digest) is pure CPU in Python, one
core's worth. A fresh clone or a new CI machine builds every zone at once (a thousand
zones of a hundred records: about four seconds on one core), so when many zones miss
the content cache they are shared with worker processes. A worker is a fresh
interpreter (``python -m bind9_topology.config.zone_pool``), not a fork: the Pulumi
program that calls this runs gRPC and asyncio threads that a fork would copy mid-flight,
and multiprocessing's spawn would import the program's ``__main__`` again.

The work is shared, not split up front: this process builds zones from the front of
the list while each worker is handed small chunks from the back, one after the other,
so a worker's start-up (an interpreter and its imports) costs only what it did not
build, and all finish together. Chunks and results travel as length-prefixed pickles
over the worker's stdin/stdout (the parent's own child, nothing else reads them). A
worker's environment holds only what Python needs to start: never the stack's config
or secrets. A worker that fails hands its chunk back to this process, so the result is
the same, only later.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import selectors
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bind9_topology.config.model import ConfigIssue, Zone
    from bind9_topology.config.zone_records import ZoneContent

#: fewer zones to build than this: build them here (a worker costs an interpreter start)
MIN_ZONES_PER_WORKER = 64
MAX_WORKERS = 4
#: zones handed to a worker at a time
CHUNK = 8
#: a worker silent this long with a chunk in hand is stopped and its chunk built here
WORKER_SILENCE_S = 300.0
#: what a worker's environment keeps from ours (Python's own settings, no secrets)
KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONHASHSEED",
            "PYTHONDONTWRITEBYTECODE", "BIND9_TOPOLOGY_CACHE_DIR")
_LENGTH = struct.Struct(">Q")

Built = tuple["ZoneContent | None", list["ConfigIssue"]]


def workers_for(count: int) -> int:
    """How many processes build *count* zones: this one plus the extra workers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    return max(1, min(cores, MAX_WORKERS, count // MIN_ZONES_PER_WORKER))


def build_many(zones: list[tuple[Zone, str]], project_dir: Path,
               max_file_bytes: int,
               on_result: Callable[[int, Built], None] | None = None) -> list[Built]:
    """``_build_zone`` of each (zone, path), in order; the same result however many
    processes share the work. *on_result(index, result)* is called as each result comes
    (in no set order): the caller's work on it (a cache write) overlaps the workers'."""
    from bind9_topology.config.zone_records import _build_zone

    def build(i: int) -> Built:
        return _build_zone(*zones[i], project_dir, max_file_bytes)

    def got(i: int, result: Built) -> None:
        results[i] = result
        if on_result is not None:
            on_result(i, result)

    results: dict[int, Built] = {}
    parts = workers_for(len(zones))
    if parts <= 1:
        for i in range(len(zones)):
            got(i, build(i))
        return [results[i] for i in range(len(zones))]
    todo = collections.deque(range(len(zones)))
    with _Workers(parts - 1, project_dir, max_file_bytes) as workers:
        for worker in workers.idle():
            workers.hand(worker, _take_back(todo), zones)
        while todo or workers.busy():
            if todo:
                i = todo.popleft()
                got(i, build(i))
            for worker, chunk, done in workers.finished(wait=not todo):
                if done is None:  # the worker failed: its chunk is built here
                    todo.extendleft(reversed(chunk))
                    continue
                if todo:  # the worker's next chunk first: it builds while we go on
                    workers.hand(worker, _take_back(todo), zones)
                for i, result in zip(chunk, done, strict=True):
                    got(i, result)
    return [results[i] for i in range(len(zones))]


def _take_back(todo: collections.deque[int]) -> list[int]:
    chunk = [todo.pop() for _ in range(min(CHUNK, len(todo)))]
    return chunk[::-1]


class _Worker:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.chunk: list[int] | None = None


class _Workers:
    """The worker processes of one build_many call, each with its chunk in hand."""

    def __init__(self, count: int, project_dir: Path, max_file_bytes: int) -> None:
        self.setup = (project_dir, max_file_bytes)
        self.selector = selectors.DefaultSelector()
        self.workers: list[_Worker] = []
        env = worker_env()
        for _ in range(count if sys.executable else 0):  # an embedded Python has none
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "bind9_topology.config.zone_pool"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                    env=env)
            except OSError:
                continue
            worker = _Worker(proc)
            self.workers.append(worker)
            assert proc.stdout is not None
            self.selector.register(proc.stdout, selectors.EVENT_READ, worker)

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            self._stop(worker, kill=worker.chunk is not None)
        self.selector.close()

    def idle(self) -> list[_Worker]:
        return [w for w in self.workers if w.chunk is None and w.proc.poll() is None]

    def busy(self) -> bool:
        return any(w.chunk is not None for w in self.workers)

    def hand(self, worker: _Worker, chunk: list[int], zones: list[tuple[Zone, str]]) -> None:
        """Send *chunk* (indices into *zones*) to *worker*, without waiting for it to read;
        a worker that cannot take it hands the chunk back through :meth:`finished`."""
        worker.chunk = chunk
        stdin = worker.proc.stdin
        assert stdin is not None
        # From a thread: a chunk bigger than the pipe's buffer would otherwise hold this
        # process until the worker reads (after its start-up), or for ever if it never
        # does. A worker that cannot take it is caught by finished() (EOF or silence).
        threading.Thread(target=_send_quietly, args=(
            stdin, ([zones[i] for i in chunk], *self.setup)), daemon=True).start()

    def finished(self, *, wait: bool) -> list[tuple[_Worker, list[int], list[Built] | None]]:
        """Workers that returned (or lost) their chunk: (worker, chunk, results or None)."""
        out: list[tuple[_Worker, list[int], list[Built] | None]] = []
        for worker in self.workers:  # stopped or exited with a chunk in hand
            if worker.chunk is not None and worker.proc.poll() is not None \
                    and worker.proc.stdout is not None and worker.proc.stdout.closed:
                out.append((worker, worker.chunk, None))
                worker.chunk = None
        if out or not self.busy():
            return out
        ready = self.selector.select(timeout=WORKER_SILENCE_S if wait else 0)
        if wait and not ready:  # every busy worker is stuck: build their chunks here
            for worker in self.workers:
                if worker.chunk is not None:
                    self._stop(worker)
                    out.append((worker, worker.chunk, None))
                    worker.chunk = None
            return out
        for key, _ in ready:
            worker = key.data
            chunk, worker.chunk = worker.chunk, None
            if chunk is None:  # an idle worker's output ended: it exited; stop watching it
                self._stop(worker)
                continue
            done = _receive(key.fileobj)  # type: ignore[arg-type]
            if not isinstance(done, list) or len(done) != len(chunk):
                self._stop(worker)
                done = None
            out.append((worker, chunk, done))
        return out

    def _stop(self, worker: _Worker, *, kill: bool = True) -> None:
        """Close the worker's pipes; an idle one then exits by itself (end of its input),
        a failed one (*kill*) is killed at once."""
        proc = worker.proc
        if kill and proc.poll() is None:
            proc.kill()
        if proc.stdout is not None and not proc.stdout.closed:
            self.selector.unregister(proc.stdout)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _send(stream: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def _send_quietly(stream: IO[bytes], value: Any) -> None:
    with contextlib.suppress(OSError, ValueError):  # the worker went away, or was stopped
        _send(stream, value)


def _receive(stream: IO[bytes]) -> Any:
    """The next message, or None at the end of the stream or on a damaged one."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        return None
    try:
        return pickle.loads(data)
    except Exception:
        return None


def worker_env() -> dict[str, str]:
    """What a worker starts with: Python's own settings and this process's import path."""
    env = {k: os.environ[k] for k in KEPT_ENV if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def _worker() -> int:
    """Build the chunks sent on stdin until it closes; each result list goes to stdout."""
    from bind9_topology.config.zone_records import _build_zone, forget_real_paths

    while (work := _receive(sys.stdin.buffer)) is not None:
        forget_real_paths()
        zones, project_dir, max_file_bytes = work
        _send(sys.stdout.buffer, [_build_zone(z, p, project_dir, max_file_bytes)
                                  for z, p in zones])
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
