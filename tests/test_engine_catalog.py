"""Catalog zones through the real Pulumi engine on a local-runner stack (file backend,
no cluster): `pulumi up` gates a member zone on the secondary that serves it only
through the catalog; a zone added to the stack's zones (never to the secondary's) is
gated ready there; removed, the secondary stops serving it.

The stack both produces (`catalog`) and consumes (`catalogs`) the catalog, so that
`gate.localRunner` can map every address to a server `local up` started.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
import yaml

from bind9_topology.local.runner import load_state
from tests.enginekit import Engine, local_runner_engine

pytestmark = pytest.mark.engine

STACK = "catalog-local"
P = "bind9-topology:"


def _zone(name: str) -> dict[str, Any]:
    return {
        "zoneName": name, "type": "primary",
        "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
        "soaRecord": {"primaryNs": "ns1.cat.example.", "adminEmail": "hostmaster@cat.example"},
        "ttl": 300,
        "records": [{"name": "@", "type": "NS", "data": "ns1.cat.example."},
                    {"name": "www", "type": "A", "data": "192.0.2.10"}],
        "alsoNotify": ["10.7.0.20"],
    }


def _write(engine: Engine, zones: list[str]) -> None:
    config = {
        f"{P}region": "local", f"{P}environment": "test", f"{P}namespace": "dns-catalog",
        f"{P}kubernetesRenderDir": ".cache/catalog-manifests",
        f"{P}gate": {"enabled": True, "deadlineSeconds": 60, "localRunner": True,
                     "pollIntervalSeconds": 0.2},
        f"{P}catalog": {"zoneName": "catalog.invalid"},
        f"{P}catalogs": [{"zoneName": "catalog.invalid", "primaryServers": ["10.7.0.10"]}],
        f"{P}instances": [
            {"name": "cat-primary", "role": "primary",
             "service": {"type": "LoadBalancer", "loadBalancerIP": "10.7.0.10"}},
            {"name": "cat-secondary", "role": "secondary",
             "service": {"type": "LoadBalancer", "loadBalancerIP": "10.7.0.20"}},
        ],
        f"{P}zones": [_zone(z) for z in zones],
    }
    path = engine.project / f"Pulumi.{STACK}.yaml"
    # keep what `pulumi config set --secret` wrote (the secret, the encryption salt)
    doc = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    doc["config"] = {**(doc.get("config") or {}), **config}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _rcode(port: int, zone: str) -> str:
    query = dns.message.make_query(zone, "SOA")
    query.flags &= ~dns.flags.RD
    try:
        return dns.rcode.to_text(dns.query.udp(query, "127.0.0.1", port=port, timeout=1).rcode())
    except Exception as exc:
        return f"error {exc}"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with local_runner_engine(tmp_path_factory.mktemp("engine-catalog")) as eng:
        yield eng


def test_pulumi_up_gates_catalog_members_on_the_secondary(engine: Engine) -> None:
    _write(engine, ["one.example"])
    engine.cli("local", "up", "--stack", STACK, "--timeout", "60")
    secret = (engine.project / ".local-run/tsig.secret").read_text().strip()
    engine.init(STACK, secret)
    engine.run("up", "--yes", "--skip-preview", stack=STACK)
    outputs = json.loads(engine.run("stack", "output", "--json", stack=STACK).stdout)
    assert set(outputs["zones"]) >= {"one-example", "catalog-invalid",
                                     "catalog-invalid-secondary"}, outputs

    # a zone added to the stack's zones only: the secondary gets it from the catalog,
    # and pulumi up's gate for it checks the secondary (its alsoNotify address)
    _write(engine, ["one.example", "two.example"])
    engine.cli("local", "up", "--stack", STACK, "--timeout", "60")
    up = engine.run("up", "--yes", "--skip-preview", stack=STACK)
    state = json.loads(engine.run("stack", "export", stack=STACK).stdout)
    (gate,) = [r["outputs"] for r in state["deployment"]["resources"]
               if r["type"].endswith("TransferGate") and r.get("outputs")]
    gates = gate["status"]
    assert "two.example" in gates, (gates.keys(), up.stdout[-2000:])
    servers = json.dumps(gates["two.example"])
    assert "10.7.0.20" in servers or "cat-secondary" in servers, servers
    secondary = next(i for i in load_state(engine.project)["servers"].values()
                     if i["instance"] == "cat-secondary")
    assert _rcode(int(secondary["port"]), "two.example") == "NOERROR"

    # removed: the catalog drops it and the secondary stops serving it
    _write(engine, ["one.example"])
    engine.cli("local", "up", "--stack", STACK, "--timeout", "60")
    engine.run("up", "--yes", "--skip-preview", stack=STACK)
    end = time.monotonic() + 20
    while _rcode(int(secondary["port"]), "two.example") != "REFUSED" and time.monotonic() < end:
        time.sleep(0.2)
    assert _rcode(int(secondary["port"]), "two.example") == "REFUSED"
    assert _rcode(int(secondary["port"]), "one.example") == "NOERROR"
    engine.run("destroy", "--yes", "--skip-preview", stack=STACK, check=False)
