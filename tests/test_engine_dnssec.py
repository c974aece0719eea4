"""A signed zone through the real Pulumi engine: the local stack with `dnssec` on
local.example, `local up`, then `pulumi up`. DnssecKeys runs in the engine's provider host,
its private keys stay secret in state, the gate validates the runner's signatures against
the stack's DS, and `pulumi stack output dnssec` shows the DS; a second `pulumi up` with
no change keeps the keys (no replacement, same DS)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from bind9_topology.dns import dnssec
from tests.enginekit import Engine, local_runner_engine

pytestmark = pytest.mark.engine

ZONE = "local.example"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with local_runner_engine(tmp_path_factory.mktemp("engine-dnssec")) as eng:
        yield eng


def test_signed_local_stack_through_the_engine(engine: Engine) -> None:
    stack_file = engine.project / "Pulumi.local.yaml"
    doc = yaml.safe_load(stack_file.read_text())
    zone = next(z for z in doc["config"]["bind9-topology:zones"]
                if z["zoneName"] == ZONE and z["type"] == "primary")
    zone["dnssec"] = {"policy": "signed"}
    stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))

    engine.cli("local", "up", "--stack", "local")
    secret = (engine.project / ".local-run/tsig.secret").read_text().strip()
    engine.run("stack", "init", "local")
    engine.run("config", "set", "--secret", "bind9-topology:tsigSecret", secret, stack="local")
    engine.run("up", "--yes", "--skip-preview", stack="local")
    outputs = json.loads(engine.run("stack", "output", "--json", stack="local").stdout)
    material = json.loads((engine.project / f".local-run/dnssec/{ZONE}.json").read_text())
    assert outputs["dnssec"][ZONE]["ds"] == dnssec.public_info(ZONE, material)["ds"], outputs
    assert all(z["ready"] is True for z in outputs["zones"].values()), outputs

    exported = engine.run("stack", "export", stack="local").stdout
    assert material["ksk"]["private"] not in exported  # a secret in state, never clear
    keys = [r for r in json.loads(exported)["deployment"]["resources"]
            if r["type"].endswith("bind9:DnssecKeys")]
    assert len(keys) == 1

    again = engine.run("up", "--yes", "--skip-preview", stack="local")
    assert "replace" not in again.stdout.lower() or "DnssecKeys" not in again.stdout
    after = json.loads(engine.run("stack", "output", "--json", stack="local").stdout)
    assert after["dnssec"] == outputs["dnssec"]
    engine.cli("local", "down")
    engine.run("destroy", "--yes", "--skip-preview", stack="local", check=False)
