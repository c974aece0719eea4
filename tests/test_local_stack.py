"""The local stack from the README alone: `local up --stack local`,
then the Pulumi program, with no address map copied by hand; the program only ever
targets the loopback servers the runner started, and refuses clearly when none runs.

The program runs as under the engine (components.program.main, config from
PULUMI_CONFIG) with recording mocks; the servers are real named started by the
local runner in a copy of the project (tests/test_local's fixture).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from bind9_topology.config.topology import SECRET_KEY, read_stack_file
from bind9_topology.local.runner import load_state
from tests.test_local import PROD_STACKS, local_project, run
from tests.test_program_errors import RecordingMocks, run_program

pytestmark = [pytest.mark.bind]


class InputMocks(RecordingMocks):
    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, dict[str, Any]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        self.inputs[args.name] = dict(args.inputs)
        return super().new_resource(args)


@pytest.fixture
def project(tmp_path: Path):
    """A copy of the project with the local stack; `local down` after (pids checked)."""
    with local_project(tmp_path, [*PROD_STACKS, "Pulumi.local.yaml"]) as dest:
        yield dest


def local_raw(project: Path) -> dict[str, Any]:
    raw = read_stack_file(project, "local")
    raw[SECRET_KEY] = (project / ".local-run/tsig.secret").read_text().strip() \
        if (project / ".local-run/tsig.secret").exists() else "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"
    return raw


def run_local_program(monkeypatch, project: Path, raw: dict[str, Any]) -> InputMocks:
    monkeypatch.setattr(pulumi, "get_root_directory", lambda: str(project))
    return run_program(monkeypatch, raw, InputMocks(), stack="local")  # type: ignore[return-value]


def expect_refusal(monkeypatch, project: Path, raw: dict[str, Any]) -> str:
    mocks = InputMocks()
    monkeypatch.setattr(pulumi, "get_root_directory", lambda: str(project))
    with pytest.raises(pulumi.RunError) as info:
        run_program(monkeypatch, raw, mocks, stack="local")
    assert mocks.registered == [], mocks.registered
    message = str(info.value)
    assert "Traceback" not in message
    return message


def test_pulumi_program_refuses_when_no_runner_runs(monkeypatch, project: Path) -> None:
    message = expect_refusal(monkeypatch, project, local_raw(project))
    assert message.startswith("bind9-topology:gate.localRunner: the local runner is not running")
    assert "python -m components local up --stack local" in message
    assert "local-primary" in message and "local-secondary" in message


def test_pulumi_program_probes_only_the_runner_servers(monkeypatch, project: Path) -> None:
    up = run(project, "local", "up", "--stack", "local", "--json", "--timeout", "60")
    assert up.returncode == 0, up.stdout + up.stderr
    every = json.loads(up.stdout)["addressMap"]  # every stack's owners; local's two run
    runner = {ip: every[ip] for ip in ("10.9.0.10", "10.9.0.20")}
    assert "addressMap" not in yaml.safe_load(
        (project / "Pulumi.local.yaml").read_text())["config"]["bind9-topology:gate"]

    from components.transfer_gate import zone_props
    from components.zone_serial import probe_of

    mocks = run_local_program(monkeypatch, project, local_raw(project))
    gate = mocks.inputs["local-transfer-gate"]
    serial_inputs = mocks.inputs["local-zone-serials"]
    serials = serial_inputs["zones"]
    assert set(gate["zones"]) == {"local.example", "local.test"}
    assert set(serials) == {"local.example", "local.test"}
    reached = set()
    for name in gate["zones"]:  # each zone names its servers (ADR 19): resolved as the gate does
        zone = zone_props(gate, name)
        for ep in [*zone["primaries"], *zone["secondaries"]]:
            reached.add(f"{ep['host']}:{int(ep['port'])}")
    for inputs in serials.values():
        for ep in probe_of(inputs, serial_inputs["servers"]):
            reached.add(f"{ep['host']}:{int(ep['port'])}")
    assert reached == set(runner.values()), (reached, runner)
    assert all(r.startswith("127.") for r in reached)

    # The runner stops: the program refuses again instead of probing anything.
    assert run(project, "local", "down").returncode == 0
    assert not load_state(project)["servers"]
    message = expect_refusal(monkeypatch, project, local_raw(project))
    assert "local up --stack local" in message


def test_an_address_no_local_server_stands_for_is_refused(monkeypatch, project: Path) -> None:
    up = run(project, "local", "up", "--stack", "local", "--timeout", "60")
    assert up.returncode == 0, up.stdout + up.stderr
    raw = local_raw(project)
    raw["zones"][0]["alsoNotify"] = ["10.9.0.20", "192.0.2.53"]
    message = expect_refusal(monkeypatch, project, raw)
    assert "192.0.2.53 is not an address of an instance of stack local" in message
