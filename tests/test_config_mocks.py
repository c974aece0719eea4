"""The program under Pulumi's standard unit-test setup: `pulumi.runtime.set_mocks` and
`pulumi.runtime.set_all_config`, no PULUMI_CONFIG in the environment.

The program reads its config through `pulumi.Config` (the TSIG secret through
`get_secret`), so config set the standard way reaches it: the components register,
and a bad key is reported by its config path before anything is registered.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pulumi
import pytest
from pulumi.runtime.mocks import _sync_await
from pulumi.runtime.stack import run_pulumi_func

from bind9_topology.config.topology import PREFIX, SECRET_KEY, read_stack_file
from components import program
from tests.conftest import PROJECT_DIR, new_secret

pytestmark = pytest.mark.unit

SECRET_FULL_KEY = f"{PREFIX}{SECRET_KEY}"


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.registered: list[tuple[str, str, dict[str, Any]]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        self.registered.append((args.typ, args.name, dict(args.inputs)))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        return {}

    def types(self) -> list[str]:
        return [t for t, _, _ in self.registered]


@pytest.fixture(autouse=True)
def _standard_config(monkeypatch) -> Iterator[None]:
    """Only set_all_config speaks here; the map is emptied again for the other tests."""
    monkeypatch.delenv("PULUMI_CONFIG", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_SECRET_KEYS", raising=False)
    pulumi.runtime.set_all_config({}, [])
    yield
    pulumi.runtime.set_all_config({}, [])


def config_map(raw: dict[str, Any]) -> dict[str, str]:
    """Stack config as the engine hands it over: prefixed keys, objects as JSON text."""
    return {f"{PREFIX}{k}": v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


def run(raw: dict[str, Any], *, stack: str = "prod", secret: bool = True) -> RecordingMocks:
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="bind9-topology", stack=stack, preview=True)
    pulumi.runtime.set_all_config(
        config_map(raw), [SECRET_FULL_KEY] if secret and SECRET_KEY in raw else [])
    _sync_await(run_pulumi_func(program.main))
    return mocks


def test_set_all_config_registers_the_components(minimal_raw) -> None:
    raw = {**copy.deepcopy(minimal_raw), SECRET_KEY: new_secret()}
    raw["gate"] = {"enabled": False}  # no probing of servers under mocks
    mocks = run(raw)
    types = mocks.types()
    assert "bind9-topology:index:Bind9Region" in types
    assert types.count("bind9-topology:index:Bind9Instance") == 2
    assert types.count("kubernetes:apps/v1:Deployment") == 2
    assert "kubernetes:core/v1:Secret" in types


def test_set_all_config_with_records_files(monkeypatch, tmp_path) -> None:
    """The prod stack as it is (zones from recordsFile): paths resolve against the
    project although the mocks' root directory is a placeholder."""
    monkeypatch.chdir(tmp_path)  # neither the working directory nor the placeholder
    raw = {**read_stack_file(PROJECT_DIR, "prod"), SECRET_KEY: new_secret()}
    raw["gate"] = {"enabled": False}
    mocks = run(raw)
    config_maps = [name for t, name, _ in mocks.registered if t == "kubernetes:core/v1:ConfigMap"]
    assert any("zones" in name for name in config_maps), config_maps
    assert not (tmp_path / "root_directory").exists()


def test_bad_key_reported_by_path_and_nothing_registered(minimal_raw) -> None:
    raw = {**copy.deepcopy(minimal_raw), SECRET_KEY: new_secret()}
    raw["instances"][0]["replcas"] = 2  # unknown key
    raw["instances"][1]["replicas"] = 0  # bad value
    raw["gate"] = {"enabled": False}
    mocks = RecordingMocks()
    with pytest.raises(pulumi.RunError) as info:
        pulumi.runtime.set_mocks(mocks, project="bind9-topology", stack="prod", preview=True)
        pulumi.runtime.set_all_config(config_map(raw), [SECRET_FULL_KEY])
        _sync_await(run_pulumi_func(program.main))
    message = str(info.value)
    assert mocks.registered == []
    assert f"{PREFIX}instances[0].replcas: unknown key 'replcas'; did you mean 'replicas'?" in (
        message), message
    assert f"{PREFIX}instances[1].replicas" in message
    assert "2 problem(s)" in message


def test_misspelt_namespace_warned_and_secret_in_clear_refused(minimal_raw) -> None:
    """Keys of other namespaces are seen too (set_all_config's whole map), and a secret
    not listed in secret_keys is refused as in clear."""
    raw = {**copy.deepcopy(minimal_raw), SECRET_KEY: new_secret()}
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="bind9-topology", stack="prod", preview=True)
    config = {**config_map(raw), "bind9-topolgy:zones": "[]"}
    pulumi.runtime.set_all_config(config, [])  # the secret is not a secret
    with pytest.raises(pulumi.RunError) as info:
        _sync_await(run_pulumi_func(program.main))
    message = str(info.value)
    assert mocks.registered == []
    assert f"Pulumi.prod.yaml:{SECRET_FULL_KEY}" in message
    assert "--secret" in message
    assert "bind9-topolgy" in message
    assert raw[SECRET_KEY] not in message


def test_config_keys_lists_both_channels(monkeypatch) -> None:
    pulumi.runtime.set_all_config({f"{PREFIX}region": "x"})
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({f"{PREFIX}namespace": "y", "aws:region": "z"}))
    assert program.config_keys() == ["aws:region", f"{PREFIX}namespace", f"{PREFIX}region"]
    raw = program.raw_config()
    assert raw == {"region": "x", "namespace": "y"}
