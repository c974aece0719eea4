"""The local runner end to end, through its command line, on a copy of the project.

Each test copies the project's stack files, configs and package into its own
tmp dir (so .local-run and the deterministic ports of a developer's running
`local up` are never touched) and drives `python -m components --project DIR
local ...` as a user does. Bounded by subprocess timeouts; teardown runs
`local down` and checks no recorded pid is left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from bind9_topology.local.runner import load_state, pid_alive

PROJECT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.bind,
]


#: the example topology's stack files (the primary stack and its two regions)
PROD_STACKS = tuple(sorted(p.name for p in PROJECT.glob("Pulumi.prod*.yaml")))


@contextlib.contextmanager
def local_project(tmp_path: Path, stack_files: Iterable[str]) -> Iterator[Path]:
    """A copy of the project (Pulumi.yaml, *stack_files*, configs/) whose local runner is
    stopped afterwards, every server it started checked gone."""
    dest = tmp_path / "project"
    dest.mkdir()
    for name in ("Pulumi.yaml", *stack_files):
        shutil.copy(PROJECT / name, dest / name)
    shutil.copytree(PROJECT / "configs", dest / "configs")
    try:
        yield dest
    finally:
        run(dest, "local", "down", timeout=30)
        assert not load_state(dest)["servers"]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    with local_project(tmp_path, PROD_STACKS) as dest:
        yield dest


def run(project: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BIND9_TSIG_SECRET"}
    env["PYTHONPATH"] = str(PROJECT)
    return subprocess.run(
        [sys.executable, "-m", "components", "--project", str(project), *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=timeout,
    )


def test_up_once_json_prod_every_zone_ready(project: Path) -> None:
    result = run(project, "local", "up", "--once", "--stack", "prod", "--json", "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["ready"] is True
    assert {z["zone"] for z in data["zones"]} == {"example.com", "example.org", "example.net"}
    assert all(z["ready"] for z in data["zones"])
    for row in data["rows"]:
        assert row["result"] == "ready", row
        assert row["host"] == "127.0.0.1" and isinstance(row["port"], int)
    assert {r["instance"] for r in data["rows"]} == {"primary-dns", "secondary-dns"}
    assert data["addressMap"]["10.0.1.10"].startswith("127.0.0.1:")
    # --once stopped everything it started
    assert not load_state(project)["servers"]
    for server in data["servers"]:
        assert not pid_alive(server["pid"])
    secret_file = project / ".local-run" / "tsig.secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert secret_file.read_text().strip() not in result.stdout + result.stderr


def test_up_status_change_down_leaves_no_process(project: Path) -> None:
    result = run(project, "local", "up", "--stack", "prod", "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TIME TO READY" in result.stdout and "not" not in result.stdout.splitlines()[-1]
    state = load_state(project)
    pids = [info["pid"] for info in state["servers"].values()]
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)

    status = run(project, "local", "status", "--json")
    assert all(s["alive"] for s in json.loads(status.stdout)["servers"])

    # a record change: new serial, named reloaded (same pids), gate passes again; the
    # primary loads the one changed zone over its rndc channel (`rndc reload <zone>`),
    # not a SIGHUP that re-reads named.conf and looks at every zone file (ADR 19)
    assert state["servers"]["prod/primary-dns"].get("controlPort")
    primary_log = project / ".local-run/prod/primary-dns/named.log"
    log_before = len(primary_log.read_text())
    serials_file = project / ".local-run/serials.json"
    before = json.loads(serials_file.read_text())["serials"]["prod/example.com"]["serial"]
    records = project / "configs/zones/example.com.yaml"
    records.write_text(records.read_text() + "  - {name: added, type: A, data: 192.0.2.99}\n")
    again = run(project, "local", "up", "--stack", "prod", "--json", "--timeout", "60")
    assert again.returncode == 0, again.stdout + again.stderr
    data = json.loads(again.stdout)
    com = next(z for z in data["zones"] if z["zone"] == "example.com")
    assert com["ready"] and com["serial"] > before, (com, before)
    assert all(r["serial"] == com["serial"] for r in data["rows"] if r["zone"] == "example.com")
    assert sorted(info["pid"] for info in load_state(project)["servers"].values()) == sorted(pids)
    assert "IXFR started" in primary_log.read_text()
    after = primary_log.read_text()[log_before:]
    assert "received control channel command 'reload example.com'" in after, after[-2000:]
    assert "reloading configuration" not in after, after[-2000:]

    down = run(project, "local", "down")
    assert down.returncode == 0 and "stopped 2" in down.stdout
    assert not any(pid_alive(p) for p in pids)
    status = run(project, "local", "status")
    assert "no local servers" in status.stdout
