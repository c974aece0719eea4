"""Region stacks wired to the primary stack by `primaryStack` (pulumi.StackReference).

Validation (the two forms are exclusive, errors name their path), the program under
pulumi.runtime.set_mocks where the StackReference is a resource read answered by the
mocks with the primary stack's outputs, and the offline path (validate, render, local
runner) that reads the referenced stack's file instead.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pulumi
import pytest

from bind9_topology.config.model import TopologyError
from bind9_topology.config.topology import (
    PREFIX,
    SECRET_KEY,
    load_topology,
    read_stack_file,
    resolve_offline,
    with_primary_stack,
)
from tests.conftest import PROJECT_DIR, new_secret
from tests.test_program_errors import run_program

pytestmark = pytest.mark.unit

REF = "organization/bind9-topology/prod"
STACK_REFERENCE = "pulumi:pulumi:StackReference"

#: The prod stack's `instances` output as `pulumi stack output --json` shows it.
PROD_INSTANCES = {
    "primary-dns": {"role": "primary", "service": "primary-dns", "address": "10.0.1.10",
                    "replicas": 2, "zones": ["example.com", "example.org"]},
    "primary-dns-b": {"role": "primary", "service": "primary-dns-b", "address": "10.0.1.11",
                      "replicas": 1, "zones": ["example.com"]},
    "secondary-dns": {"role": "secondary", "service": "secondary-dns", "address": "10.0.1.20",
                      "replicas": 2, "zones": ["example.com", "example.org"]},
}


def region_raw(**overrides: Any) -> dict[str, Any]:
    """A region stack of secondaries only, wired by primaryStack."""
    raw: dict[str, Any] = {
        "region": "us-west-2",
        "primaryStack": REF,
        "instances": [{"name": "secondary-usw2", "role": "secondary",
                       "service": {"type": "LoadBalancer", "loadBalancerIP": "10.0.2.20"}}],
        "zones": [
            {"zoneName": zone, "type": "secondary",
             "instanceSelector": {"matchLabels": {"dns-role": "secondary"}}}
            for zone in ("example.com", "example.org")
        ],
        "gate": {"enabled": False},
    }
    raw.update(overrides)
    return raw


def problems(raw: dict[str, Any], stack: str = "prod-us-west-2") -> list[str]:
    with pytest.raises(TopologyError) as info:
        load_topology(raw, stack=stack, project_dir=PROJECT_DIR, tsig_secret=new_secret())
    return [str(i) for i in info.value.issues]


# --------------------------------------------------------------------------- validation


def test_primary_stack_alone_validates() -> None:
    topo = load_topology(region_raw(), stack="prod-us-west-2", project_dir=PROJECT_DIR,
                         tsig_secret=new_secret())
    assert topo.spec.primaryStack == REF


def test_a_zone_with_neither_form() -> None:
    raw = region_raw()
    del raw["primaryStack"]
    found = problems(raw)
    assert len(found) == 2
    assert found[0].startswith(f"{PREFIX}zones[0].secondaryConfig.primaryServers: a secondary "
                               "zone needs the IPs of its primaries")
    assert f"{PREFIX}primaryStack" in found[0]


def test_a_zone_with_both_forms() -> None:
    raw = region_raw()
    raw["zones"][1]["secondaryConfig"] = {"primaryServers": ["10.0.1.10"]}
    assert problems(raw) == [
        f"{PREFIX}zones[1].secondaryConfig.primaryServers: the primaries come from "
        f"{PREFIX}primaryStack ({REF}) and this zone lists primaryServers too; use one form: "
        f"remove primaryServers (the zone then transfers from the primaries of {REF}) or "
        f"remove {PREFIX}primaryStack and list every zone's primaries"]


@pytest.mark.parametrize("name", ["prod/x", "organization//prod", "a/b/c/d", "-prod", "p rod"])
def test_a_malformed_reference(name: str) -> None:
    found = problems(region_raw(primaryStack=name))
    assert len(found) == 1 and found[0].startswith(f"{PREFIX}primaryStack: {name!r} is not a "
                                                   "stack name"), found


def test_a_reference_to_itself_and_one_without_secondary_zones() -> None:
    assert problems(region_raw(primaryStack="prod-us-west-2")) == [
        f"{PREFIX}primaryStack: names this very stack (prod-us-west-2); name the stack that "
        "holds the primaries"]
    raw = region_raw(zones=[])
    assert problems(raw) == [f"{PREFIX}primaryStack: is set but the stack has no secondary "
                             "zone to take primaries for; remove it"]


def test_resolution_takes_the_primaries_that_serve_each_zone() -> None:
    topo = load_topology(region_raw(), stack="prod-us-west-2", project_dir=PROJECT_DIR,
                         tsig_secret=new_secret())
    resolved = with_primary_stack(topo, PROD_INSTANCES)
    servers = {z.zoneName: z.secondaryConfig.primaryServers for z in resolved.spec.zones
               if z.secondaryConfig}
    # secondaries of the primary stack are never primaries; each zone only its own primaries
    assert servers == {"example.com": ["10.0.1.10", "10.0.1.11"], "example.org": ["10.0.1.10"]}


def test_resolution_names_a_zone_no_primary_serves_and_a_missing_output() -> None:
    topo = load_topology(region_raw(), stack="prod-us-west-2", project_dir=PROJECT_DIR,
                         tsig_secret=new_secret())
    only_com = {"p": {"role": "primary", "address": "10.0.1.10", "zones": ["example.com"]}}
    with pytest.raises(TopologyError) as info:
        with_primary_stack(topo, only_com)
    assert [str(i) for i in info.value.issues] == [
        f"{PREFIX}primaryStack: zone example.org (example-org-secondary): no instance with "
        f"role primary and an address in stack {REF}'s 'instances' output serves it; add the "
        f"zone to a primary of {REF} (and `pulumi up` it) or remove the zone here"]
    with pytest.raises(TopologyError) as info:
        with_primary_stack(topo, None)
    assert "has no 'instances' output" in str(info.value)


def test_offline_resolution_reads_the_primary_stack_file() -> None:
    """validate, render and the local runner read the referenced stack's file."""
    topo = load_topology(region_raw(), stack="prod-us-west-2", project_dir=PROJECT_DIR,
                         tsig_secret=new_secret())
    resolved = resolve_offline(topo, PROJECT_DIR)
    prod = read_stack_file(PROJECT_DIR, "prod")
    primary_ips = {i["service"]["loadBalancerIP"] for i in prod["instances"]
                   if i["role"] == "primary"}
    for zone in resolved.spec.zones:
        assert zone.secondaryConfig and set(zone.secondaryConfig.primaryServers) == primary_ips
    other = copy.deepcopy(topo)
    other = other.__class__(**{**other.__dict__, "spec": other.spec.model_copy(
        update={"primaryStack": "organization/other-project/prod"})})
    with pytest.raises(TopologyError, match="is a stack of project 'other-project'"):
        resolve_offline(other, PROJECT_DIR)


# --------------------------------------------------------------------------- the program


class StackReferenceMocks(pulumi.runtime.Mocks):
    """Answers the StackReference read with the primary stack's outputs; records the rest."""

    def __init__(self, outputs: dict[str, Any]) -> None:
        self.outputs = outputs
        self.registered: list[tuple[str, str, dict[str, Any]]] = []
        self.references: list[dict[str, Any]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        if args.typ == STACK_REFERENCE:
            self.references.append({"name": args.name, "id": args.resource_id,
                                    "inputs": dict(args.inputs)})
            return args.inputs["name"], {"name": args.inputs["name"], "outputs": self.outputs,
                                         "secretOutputNames": []}
        self.registered.append((args.typ, args.name, dict(args.inputs)))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        return {}


def _by_type(mocks: StackReferenceMocks, typ: str) -> dict[str, dict[str, Any]]:
    return {name: inputs for t, name, inputs in mocks.registered if t == typ}


def test_program_reads_the_primary_stack_and_renders_its_primaries(monkeypatch) -> None:
    mocks = StackReferenceMocks({"instances": PROD_INSTANCES, "region": "us-east-1"})
    run_program(monkeypatch, {**region_raw(), SECRET_KEY: new_secret()}, mocks,
                stack="prod-us-west-2")
    assert [r["inputs"]["name"] for r in mocks.references] == [REF]
    config = _by_type(mocks, "kubernetes:core/v1:ConfigMap")["secondary-usw2-config"]
    named_conf = config["data"]["named.conf"]
    assert ('zone "example.com" {\n    type secondary;' in named_conf)
    # each zone names its server list; the lists are defined once
    assert ('primaries "primaries-0" { 10.0.1.10 port 53 key transfer-key; 10.0.1.11 port 53 '
            "key transfer-key; };") in named_conf
    assert 'primaries "primaries-1" { 10.0.1.10 port 53 key transfer-key; };' in named_conf
    assert ('zone "example.org" {\n    type secondary;\n    file "/var/lib/bind/zones/'
            'db.example.org";\n    primaries { "primaries-1"; };') in named_conf
    policy = _by_type(mocks, "kubernetes:networking.k8s.io/v1:NetworkPolicy")
    notify_from = json.dumps(policy["secondary-usw2-netpol"]["spec"]["ingress"][1])
    assert "10.0.1.10/32" in notify_from and "10.0.1.11/32" in notify_from
    assert "10.0.1.20" not in named_conf + notify_from  # the prod secondary is no primary


def test_program_refuses_when_the_primary_stack_lacks_a_zone(monkeypatch) -> None:
    only_com = {"p": {"role": "primary", "address": "10.0.1.10", "zones": ["example.com"]}}
    mocks = StackReferenceMocks({"instances": only_com})
    with pytest.raises(pulumi.RunError) as info:
        run_program(monkeypatch, {**region_raw(), SECRET_KEY: new_secret()}, mocks,
                    stack="prod-us-west-2")
    message = str(info.value)
    assert "zone example.org (example-org-secondary): no instance with role primary" in message
    assert "Traceback" not in message
    assert not [r for r in mocks.registered if r[0].startswith("kubernetes:")]


def test_program_without_primary_stack_reads_no_stack(monkeypatch, minimal_raw) -> None:
    mocks = StackReferenceMocks({})
    raw = {**copy.deepcopy(minimal_raw), SECRET_KEY: new_secret(), "gate": {"enabled": False}}
    run_program(monkeypatch, raw, mocks)
    assert mocks.references == []
    assert _by_type(mocks, "kubernetes:apps/v1:Deployment")
