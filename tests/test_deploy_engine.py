"""`python -m components deploy` against the real engine (Automation API -> the built CLI)
on the local stack: a missing stack is named, `--up` streams steps and the gate's
verdicts, `--preview --json` names the zone whose serial a record change moves, and a
gate that fails (a secondary of the local runner stopped) stops the run with the gate's
report, no traceback, and the next stack not run.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.enginekit import Engine, local_runner_engine

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with local_runner_engine(tmp_path_factory.mktemp("engine-deploy")) as eng:
        yield eng


def _deploy(engine: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "components", "deploy", *args],
                          cwd=engine.project, env=engine.env, capture_output=True, text=True,
                          timeout=300)


def _preview(engine: Engine) -> dict[str, Any]:
    proc = _deploy(engine, "--preview", "--stacks", "local", "--json")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and doc["order"] == ["local"], doc
    [stack] = doc["stacks"]
    assert stack["policyViolations"] == [], stack
    return dict(stack)


def _no_traceback(output: str) -> None:
    assert "Traceback" not in output and 'File "' not in output, output


def test_deploy_local_stack(engine: Engine) -> None:
    # Not in the backend yet: named, with the steps to create it.
    proc = _deploy(engine, "--preview", "--stacks", "local", "--json")
    assert proc.returncode == 1
    assert "local do not exist in the backend" in json.loads(proc.stdout)["error"], proc.stdout
    assert "pulumi stack init local" in proc.stderr, proc.stderr

    engine.cli("local", "up", "--stack", "local")
    secret = (engine.project / ".local-run/tsig.secret").read_text().strip()
    engine.init("local", secret)

    # up: every step as it lands, then each zone's verdict.
    up = _deploy(engine, "--up", "--stacks", "local")
    assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
    assert "== local (1/1): pulumi up" in up.stdout, up.stdout
    assert "  create   Deployment local-primary" in up.stdout, up.stdout
    for zone in ("local.example", "local.test"):
        assert f"  gate     {zone}: ready at serial " in up.stdout, up.stdout
    assert "local: done in " in up.stdout, up.stdout
    _no_traceback(up.stdout + up.stderr)
    serials = {z["zoneName"]: z["serial"] for z in json.loads(engine.run(
        "stack", "output", "zones", "--json", stack="local").stdout).values()
        if z["type"] == "primary"}

    # Nothing changed: nothing planned, no serial moves.
    stack = _preview(engine)
    assert (stack["creates"], stack["updates"], stack["deletes"], stack["replaces"]) == (
        0, 0, 0, 0), stack
    assert stack["serialMoves"] == {} and stack["changes"] == [], stack

    # A record change: the preview names that zone, from its serial in state to the next.
    records = engine.project / "configs" / "zones" / "local.example.yaml"
    records.write_text(records.read_text().replace("192.0.2.30", "192.0.2.31"))
    engine.cli("local", "up", "--stack", "local")
    stack = _preview(engine)
    moves = stack["serialMoves"]
    assert list(moves) == ["local.example"], stack
    assert moves["local.example"]["from"] == serials["local.example"], (moves, serials)
    assert moves["local.example"]["to"] > serials["local.example"], moves
    changed = {(c["type"].rsplit(":", 1)[-1], c["name"]) for c in stack["changes"]}
    assert ("ZoneSerials", "local-zone-serials") in changed, changed
    assert ("TransferGate", "local-transfer-gate") in changed, changed
    table = _deploy(engine, "--preview", "--stacks", "local", "--no-policy")
    assert table.returncode == 0, table.stdout + table.stderr
    row = next(ln for ln in table.stdout.splitlines() if ln.startswith("local "))
    assert f"local.example ({serials['local.example']} -> " in row, table.stdout

    # The gate fails (the secondary stopped, a short deadline): the run stops at this
    # stack with the gate's report, and the stack after it is not run.
    engine.init("prod", base64.b64encode(os.urandom(32)).decode())
    stack_file = engine.project / "Pulumi.local.yaml"
    doc = yaml.safe_load(stack_file.read_text())
    doc["config"]["bind9-topology:gate"]["deadlineSeconds"] = 5
    stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    state = json.loads((engine.project / ".local-run" / "state.json").read_text())
    pid = int(state["servers"]["local/local-secondary"]["pid"])
    os.kill(pid, signal.SIGSTOP)
    try:
        failed = _deploy(engine, "--up", "--stacks", "local,prod")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    output = failed.stdout + failed.stderr
    assert failed.returncode == 1, output
    assert "deploy --up: local -> prod" in failed.stdout, output
    assert "local: the transfer gate failed after " in failed.stdout, output
    assert "not ready after 5s" in failed.stdout, output
    assert "secondary local-secondary (127.0.0.1#" in failed.stdout, output
    assert "stopped: not run: prod" in failed.stdout, output
    assert "== prod" not in failed.stdout, output
    assert secret not in output
    _no_traceback(output)
