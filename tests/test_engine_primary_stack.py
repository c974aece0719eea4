"""A region stack wired to its primary stack by `primaryStack` (pulumi.StackReference), on
the real engine and the file backend: `pulumi up` of a small primary stack that renders its
manifests to a directory (no cluster, no servers: its gate is off), then `pulumi preview`
of a region stack that references it, whose secondaries' named.conf must list exactly the
primary stack's primaries. A zone the primary stack does not serve fails the preview with
the zone named and no traceback.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
import yaml

from tests.enginekit import Engine, make_engine

pytestmark = pytest.mark.engine

P = "bind9-topology:"
PRIMARY_IP, PRIMARY_SECONDARY_IP, REGION_IP = "192.0.2.53", "192.0.2.63", "198.51.100.20"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return make_engine(tmp_path_factory.mktemp("engine-primary-stack"))


def _write_stack(engine: Engine, name: str, config: dict[str, Any]) -> None:
    doc = {"config": {f"{P}{k}": v for k, v in config.items()}}
    (engine.project / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def _instance(name: str, role: str, ip: str) -> dict[str, Any]:
    return {"name": name, "role": role, "labels": {"dns-role": role},
            "service": {"type": "LoadBalancer", "loadBalancerIP": ip}}


def _secondary_zone(zone: str) -> dict[str, Any]:
    return {"zoneName": zone, "type": "secondary",
            "instanceSelector": {"matchLabels": {"dns-role": "secondary"}}}


def test_region_stack_takes_its_primaries_from_the_primary_stack(engine: Engine) -> None:
    secret = base64.b64encode(os.urandom(32)).decode()
    _write_stack(engine, "ps-primary", {
        "region": "ps-east", "namespace": "dns-ps", "kubernetesRenderDir": ".cache/ps-manifests",
        "gate": {"enabled": False},
        "instances": [_instance("ps-primary", "primary", PRIMARY_IP),
                      _instance("ps-secondary", "secondary", PRIMARY_SECONDARY_IP)],
        "zones": [
            {"zoneName": "ps.example", "type": "primary",
             "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
             "soaRecord": {"primaryNs": "ns1.ps.example.", "adminEmail": "hostmaster@ps.example"},
             "records": [{"name": "@", "type": "NS", "data": "ns1.ps.example."},
                         {"name": "ns1", "type": "A", "data": PRIMARY_IP}]},
            {**_secondary_zone("ps.example"),
             "secondaryConfig": {"primaryServers": [PRIMARY_IP]}},
        ],
    })
    engine.init("ps-primary", secret)
    engine.run("up", "--yes", "--skip-preview", stack="ps-primary")
    outputs = json.loads(engine.run("stack", "output", "--json", stack="ps-primary").stdout)
    assert outputs["instances"]["ps-primary"]["address"] == PRIMARY_IP, outputs
    assert outputs["instances"]["ps-primary"]["zones"] == ["ps.example"], outputs

    region = {"region": "ps-west", "namespace": "dns-ps",
              "primaryStack": "organization/bind9-topology/ps-primary",
              "instances": [_instance("ps-west-secondary", "secondary", REGION_IP)],
              "zones": [_secondary_zone("ps.example")]}
    _write_stack(engine, "ps-west", region)
    engine.init("ps-west", secret)
    preview = engine.run("preview", "--json", stack="ps-west")
    steps = json.loads(preview.stdout)["steps"]
    config_maps = {s["urn"].rsplit("::", 1)[-1]: s for s in steps
                   if "kubernetes:core/v1:ConfigMap" in s["urn"]}
    named_conf = config_maps["ps-west-secondary-config"]["newState"]["inputs"]["data"][
        "named.conf"]
    print(named_conf)
    assert f'primaries "primaries-0" {{ {PRIMARY_IP} port 53 key transfer-key; }};' in named_conf
    assert 'primaries { "primaries-0"; };' in named_conf
    assert PRIMARY_SECONDARY_IP not in named_conf  # a secondary of the primary stack is no primary
    policies = [s for s in steps if "NetworkPolicy" in s["urn"]]
    assert f"{PRIMARY_IP}/32" in json.dumps(policies[0]["newState"]["inputs"]["spec"])
    reads = [s["urn"] for s in steps if s["op"] == "read"]
    assert [u.split("::")[-2] for u in reads] == ["pulumi:pulumi:StackReference"], reads
    assert {s["op"] for s in steps} == {"create", "read"}

    # A zone the primary stack does not serve: the preview fails naming it, no traceback.
    stack_file = engine.project / "Pulumi.ps-west.yaml"  # keeps the secret and its salt
    doc = yaml.safe_load(stack_file.read_text())
    doc["config"][f"{P}zones"].append(_secondary_zone("other.example"))
    stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = engine.run("preview", stack="ps-west", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert ("zone other.example (other-example-secondary): no instance with role primary and "
            "an address in stack organization/bind9-topology/ps-primary's 'instances' output "
            "serves it") in output, output
    assert "Traceback" not in output, output
