"""The stacks' deploy order (bind9_topology/config/fleet.py), read from stack files only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bind9_topology.config.fleet import deploy_order
from bind9_topology.config.model import TopologyError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def _before(stacks: list[str], first: str, then: str) -> bool:
    return stacks.index(first) < stacks.index(then)


def test_the_projects_stacks_come_after_their_primaries() -> None:
    got = deploy_order(ROOT)
    stacks = got.stacks
    assert sorted(stacks) == sorted(p.name[len("Pulumi."):-len(".yaml")]
                                    for p in ROOT.glob("Pulumi.*.yaml"))
    for primary, regions in {"prod": ["prod-us-west-2", "prod-eu-west-1"],
                             "cluster": ["cluster-us-west-2", "cluster-eu-west-1"],
                             "catalog": ["catalog-region"]}.items():
        for region in regions:
            assert _before(stacks, primary, region), stacks
            assert primary in got.after[region], got.after
    # The primary stacks first (a wave), then the regions; the reasons name the address.
    assert set(got.primaries()) == {"prod", "cluster", "catalog", "local"}
    assert stacks[:4] == sorted(got.primaries())
    assert got.after["prod-us-west-2"] == {"prod": "primaryServers name 10.0.1.10"}
    assert got.after["catalog-region"] == {"catalog": "primaryServers name 10.8.0.10"}
    # The cluster stack's own secondary transfers from its own primary: no self-link.
    assert got.after["cluster"] == {} and got.after["local"] == {}


def test_a_selection_keeps_the_order_of_the_whole() -> None:
    assert deploy_order(ROOT, ["cluster-eu-west-1", "cluster", "cluster-us-west-2"]).stacks == [
        "cluster", "cluster-eu-west-1", "cluster-us-west-2"]
    assert deploy_order(ROOT, ["prod-eu-west-1"]).stacks == ["prod-eu-west-1"]
    with pytest.raises(TopologyError, match="no stack file for nope; known stacks: catalog"):
        deploy_order(ROOT, ["prod", "nope"])


def _write(project: Path, stack: str, config: dict[str, Any]) -> None:
    doc = {"config": {f"bind9-topology:{k}": v for k, v in config.items()}}
    (project / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(doc))


def _primary(address: str) -> dict[str, Any]:
    return {"name": f"p-{address.replace('.', '-')}", "role": "primary",
            "service": {"type": "ClusterIP", "clusterIP": address}}


def _secondary_zone(*servers: str) -> dict[str, Any]:
    return {"zoneName": "example.com", "type": "secondary",
            "secondaryConfig": {"primaryServers": list(servers)}}


def test_made_up_stacks_primary_stack_and_ports(tmp_path: Path) -> None:
    _write(tmp_path, "zeta", {"instances": [_primary("10.1.0.1")]})
    _write(tmp_path, "alpha", {"zones": [_secondary_zone("10.1.0.1:5353")]})
    _write(tmp_path, "beta", {"primaryStack": "organization/bind9-topology/alpha"})
    _write(tmp_path, "gamma", {"primaryStack": "someorg/other-project/prod",
                               "zones": [_secondary_zone("192.0.2.1")]})
    got = deploy_order(tmp_path)
    assert got.stacks == ["gamma", "zeta", "alpha", "beta"]
    assert got.after["alpha"] == {"zeta": "primaryServers name 10.1.0.1"}
    assert got.after["beta"] == {"alpha": "primaryStack organization/bind9-topology/alpha"}
    assert got.after["gamma"] == {}  # another project's stack, an external address


def test_unknown_primary_stack_is_named(tmp_path: Path) -> None:
    _write(tmp_path, "region", {"primaryStack": "organization/bind9-topology/missing"})
    with pytest.raises(TopologyError) as err:
        deploy_order(tmp_path)
    text = err.value.render()
    assert "Pulumi.region.yaml:bind9-topology:primaryStack" in text, text
    assert "names stack 'missing'" in text and "known stacks: region" in text, text


def test_a_cycle_names_the_stacks(tmp_path: Path) -> None:
    _write(tmp_path, "east", {"instances": [_primary("10.1.0.1")],
                              "zones": [_secondary_zone("10.2.0.1")]})
    _write(tmp_path, "west", {"instances": [_primary("10.2.0.1")],
                              "zones": [_secondary_zone("10.1.0.1")]})
    _write(tmp_path, "leaf", {"primaryStack": "west"})
    _write(tmp_path, "alone", {"instances": [_primary("10.3.0.1")]})
    with pytest.raises(TopologyError) as err:
        deploy_order(tmp_path)
    text = err.value.render()
    assert "cycle: east -> west -> east" in text, text
    assert "east after west (primaryServers name 10.2.0.1)" in text, text
    # A stack outside the cycle and what it waits for still orders.
    assert deploy_order(tmp_path, ["alone"]).stacks == ["alone"]
