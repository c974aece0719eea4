"""Bad config through the Pulumi program path: a RunError listing every problem, and
not one resource registered.

The program runs as the engine runs it: config arrives in PULUMI_CONFIG (the
language host's channel, objects as JSON text), `components.program.main`
reads it, and a recording Mocks counts every registration.
"""

from __future__ import annotations

import base64
import copy
import json
import os
from typing import Any

import pulumi
import pytest
from pulumi.runtime.mocks import _sync_await
from pulumi.runtime.stack import run_pulumi_func

from bind9_topology.config.topology import PREFIX, SECRET_KEY
from components import program

pytestmark = pytest.mark.unit


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.registered: list[tuple[str, str]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        self.registered.append((args.typ, args.name))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        return {}


def _secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def run_program(
    monkeypatch, raw: dict[str, Any], mocks: RecordingMocks, stack: str = "prod",
    *, secret_keys: list[str] | None = None, extra: dict[str, Any] | None = None,
) -> RecordingMocks:
    """Run components.program.main with raw (unprefixed) config, as the engine would.

    The TSIG secret counts as set with --secret (PULUMI_CONFIG_SECRET_KEYS) unless
    secret_keys says otherwise; `extra` adds fully qualified keys (other namespaces).
    """
    engine_config = {
        f"{PREFIX}{k}": v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()
    }
    for key, value in (extra or {}).items():
        engine_config[key] = value if isinstance(value, str) else json.dumps(value)
    if secret_keys is None:
        secret_keys = [f"{PREFIX}{SECRET_KEY}"] if SECRET_KEY in raw else []
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(engine_config))
    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", json.dumps(secret_keys))
    pulumi.runtime.set_mocks(mocks, project="bind9-topology", stack=stack, preview=True)
    _sync_await(run_pulumi_func(program.main))
    return mocks


def expect_run_error(monkeypatch, raw: dict[str, Any]) -> str:
    mocks = RecordingMocks()
    with pytest.raises(pulumi.RunError) as info:
        run_program(monkeypatch, raw, mocks)
    assert mocks.registered == [], f"registered before failing: {mocks.registered}"
    message = str(info.value)
    assert "Traceback" not in message
    return message


def test_valid_config_registers(monkeypatch, minimal_raw) -> None:
    """Guard: the same path with good config does register resources."""
    raw = {**copy.deepcopy(minimal_raw), SECRET_KEY: _secret()}
    raw["gate"] = {"enabled": False}  # no probing of servers under mocks
    mocks = run_program(monkeypatch, raw, RecordingMocks())
    assert any(t == "kubernetes:apps/v1:Deployment" for t, _ in mocks.registered)


def test_bad_config_raises_run_error_listing_all_and_registers_nothing(
    monkeypatch, minimal_raw
) -> None:
    raw = copy.deepcopy(minimal_raw)
    raw[SECRET_KEY] = _secret()
    raw["instances"][0]["replicas"] = 0
    raw["instances"][0]["version"] = "8.0"
    raw["instances"][1]["config"] = {"allowQuery": ["not-a-cidr"]}
    raw["zones"][0]["records"].append({"name": "www", "type": "A", "data": "999.1.1.1"})
    message = expect_run_error(monkeypatch, raw)
    for path, fix in (
        (f"{PREFIX}instances[0].replicas", "set it to 1 or more"),
        (f"{PREFIX}instances[0].version", "use one of"),
        (f"{PREFIX}instances[1].config.allowQuery[0]", "not a CIDR"),
        (f"{PREFIX}zones[0].records[2].data", "is not valid"),
    ):
        assert any(path in line and fix in line for line in message.splitlines()), (
            f"{path} / {fix!r} missing from:\n{message}"
        )
    assert "4 problem(s)" in message


def test_cross_field_problems_register_nothing(monkeypatch, minimal_raw) -> None:
    raw = copy.deepcopy(minimal_raw)
    raw[SECRET_KEY] = _secret()
    raw["zones"][1]["secondaryConfig"] = {"primaryServers": []}
    raw["zones"][0]["instanceSelector"] = {"matchLabels": {"dns-role": "nobody"}}
    message = expect_run_error(monkeypatch, raw)
    assert f"{PREFIX}zones[1].secondaryConfig.primaryServers" in message
    assert f"{PREFIX}zones[0].instanceSelector" in message


def test_missing_tsig_secret(monkeypatch, minimal_raw) -> None:
    message = expect_run_error(monkeypatch, copy.deepcopy(minimal_raw))
    assert f"{PREFIX}{SECRET_KEY}" in message
    assert "pulumi config set --secret" in message
    assert "--stack prod" in message


def test_tsig_secret_not_base64(monkeypatch, minimal_raw) -> None:
    raw = {**copy.deepcopy(minimal_raw), SECRET_KEY: "not base64!"}
    message = expect_run_error(monkeypatch, raw)
    assert "not valid base64" in message
    assert "not base64!" not in message  # the (bad) secret is not echoed
