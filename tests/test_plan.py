"""InstancePlan: rendered once with a placeholder serial; real serials fill slots.

The oracle is render_instance with the real serials: the plan's files and ConfigMap
data must equal it byte for byte, for every stack of the project, a zone split into
$INCLUDE parts and a signed zone; and the Pulumi program renders each instance once.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from bind9_topology.config.topology import Topology, list_stacks, load_topology, read_stack_file
from bind9_topology.render import manifests
from bind9_topology.render.bind_files import ZONE_DIR, render_instance, zone_file_name
from bind9_topology.render.plan import PLACEHOLDER_SERIAL, InstancePlan, plan_instance
from tests.conftest import BIG_ZONE_NAME, PROJECT_DIR, new_secret

pytestmark = pytest.mark.unit

RNG = random.Random(20261128)
SERIALS = [0, 1, 9, 10, 2026112800, 4294967295, *(RNG.randrange(2**32) for _ in range(20))]


def stack_topologies() -> list[Topology]:
    topos = []
    for stack in list_stacks(PROJECT_DIR):
        raw = read_stack_file(PROJECT_DIR, stack)
        topos.append(load_topology(raw, stack=stack, project_dir=PROJECT_DIR,
                                   tsig_secret=new_secret()))
    return topos


@pytest.fixture(scope="module")
def topologies() -> list[Topology]:
    return stack_topologies()


def signed(topo: Topology) -> Topology:
    """*topo* with its first primary zone signed (dnssec: policy signed)."""
    raw: dict[str, Any] = read_stack_file(PROJECT_DIR, topo.stack)
    zone = next(z for z in raw["zones"] if z["type"] == "primary")
    zone["dnssec"] = {"policy": "signed"}
    return load_topology(raw, stack=topo.stack, project_dir=PROJECT_DIR, tsig_secret=new_secret())


def check_against_oracle(topo: Topology, plan: InstancePlan, serials: dict[str, int]) -> None:
    want = render_instance(topo.spec, plan.instance, topo.contents, serials)
    got = plan.with_serials(serials)
    assert got.config_files == want.config_files
    assert got.zone_files == want.zone_files
    assert got.serials == want.serials
    want_maps = manifests.config_maps(topo.spec, want)
    assert [m.name for m in plan.config_maps] == [m["metadata"]["name"] for m in want_maps]
    for shard, obj in zip(plan.config_maps, want_maps, strict=True):
        assert shard.data(serials) == obj["data"]
        assert {**shard.body, "data": obj["data"]} == obj


def test_serial_split_holds_for_any_serial(topologies: list[Topology]) -> None:
    contents = [c for t in topologies for c in t.contents.values()]
    assert contents
    for content in contents:
        before, after = content.serial_split()
        for serial in SERIALS:
            assert content.text(serial) == before + str(serial) + after


def test_plan_equals_rendering_with_real_serials(topologies: list[Topology]) -> None:
    checked, signing = 0, 0
    prod = next(t for t in topologies if t.stack == "prod")
    for topo in [*topologies, signed(prod)]:
        for inst in topo.spec.instances:
            plan = plan_instance(topo.spec, inst, topo.contents)
            for serial in SERIALS[:6]:
                check_against_oracle(topo, plan, dict.fromkeys(plan.zones, serial))
            checked += 1
            signing += plan.dnssec_secret is not None
    assert checked >= len(topologies) and signing >= 1


def test_split_zone_waits_only_where_its_serial_is(big_topology: Topology) -> None:
    """The $INCLUDE parts hold no serial: only the shard with the zone's main file waits."""
    primary = next(i for i in big_topology.spec.instances if i.role == "primary")
    plan = plan_instance(big_topology.spec, primary, big_topology.contents)
    zone_shards = plan.config_maps[1:]
    assert len(zone_shards) >= 2
    main = manifests.config_map_key(f"{ZONE_DIR}/{zone_file_name(BIG_ZONE_NAME)}")
    waiting = [s for s in zone_shards if BIG_ZONE_NAME in s.zones]
    assert waiting and all(main in s.slots for s in waiting)
    parts_only = [s for s in zone_shards if main not in s.slots]
    assert parts_only and all(BIG_ZONE_NAME not in s.zones for s in parts_only)
    assert sum(main in s.slots for s in plan.config_maps) == 1
    assert plan.config_maps[0].zones == ()
    serials = {z: RNG.randrange(2**32) for z in plan.zones}
    check_against_oracle(big_topology, plan, serials)


def test_placeholder_is_as_wide_as_any_serial() -> None:
    assert len(str(PLACEHOLDER_SERIAL)) == len(str(2**32 - 1))


def test_a_missing_serial_is_refused(topologies: list[Topology]) -> None:
    topo = topologies[0]
    inst = next(i for i in topo.spec.instances if i.role == "primary")
    plan = plan_instance(topo.spec, inst, topo.contents)
    assert plan.zones
    with pytest.raises(KeyError, match="no serial for"):
        plan.with_serials({})


def test_the_program_renders_each_instance_once(monkeypatch: pytest.MonkeyPatch,
                                                 topologies: list[Topology]) -> None:
    """No repeated rendering: one render per instance, whatever the number of zones."""
    from bind9_topology.render import plan as plan_module
    from components.preview import run_components

    calls: list[str] = []
    real = plan_module.render_instance

    def counting(spec: Any, instance: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(instance.name)
        return real(spec, instance, *args, **kwargs)

    monkeypatch.setattr(plan_module, "render_instance", counting)
    topo = next(t for t in topologies if t.stack == "prod")
    run_components(topo)
    assert sorted(calls) == sorted(i.name for i in topo.spec.instances)


def test_project_dir_is_the_checkout() -> None:
    assert (PROJECT_DIR / "Pulumi.yaml").is_file() and isinstance(PROJECT_DIR, Path)


def test_zone_text_is_dnspythons(topologies: list[Topology], big_topology: Topology) -> None:
    """bind_files.zone_text (the SOA written once per zone) equals ZoneContent.text, which
    dnspython writes each time, for any serial; and so the content hash the serials key on."""
    from bind9_topology.config.digest import content_hash
    from bind9_topology.render.bind_files import zone_text

    contents = [c for t in [*topologies, big_topology] for c in t.contents.values()]
    assert contents
    for content in contents:
        for serial in (0, 1, PLACEHOLDER_SERIAL, 2**32 - 1, RNG.randrange(2**32)):
            assert zone_text(content, serial) == content.text(serial)
        assert content_hash(zone_text(content, 0)) == content.content_hash
