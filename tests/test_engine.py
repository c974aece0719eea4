"""The real Pulumi engine (built from Go modules by scripts/bootstrap-engine.sh).

`pulumi preview` on every region stack must plan exactly what the components
register under mocks; the `local` stack goes through `pulumi up` with the
dynamic providers running in the engine's provider host against named servers
started by the local runner, then a no-change preview, a one-record change,
and `pulumi destroy`. Every failure shows the engine's own output.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from bind9_topology.config.topology import load_topology, read_stack_file
from components.preview import run_components
from tests.enginekit import Engine, make_engine

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent
REGION_STACKS = ["prod", "prod-us-west-2", "prod-eu-west-1"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return make_engine(tmp_path_factory.mktemp("engine"))


def _new_secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _steps(preview_json: str) -> list[dict]:
    return json.loads(preview_json).get("steps", [])


def _type_and_name(urn: str) -> tuple[str, str]:
    parts = urn.split("::")
    return parts[-2].split("$")[-1], parts[-1]


@pytest.mark.parametrize("stack", REGION_STACKS)
def test_preview_plans_what_the_components_register(engine: Engine, stack: str) -> None:
    """No cluster here: pulumi-kubernetes previews without one (it only fails on `up`)."""
    secret = _new_secret()
    engine.init(stack, secret)
    steps = _steps(engine.run("preview", "--json", stack=stack).stdout)
    planned = Counter(_type_and_name(s["urn"]) for s in steps
                      if not _type_and_name(s["urn"])[0].startswith("pulumi:"))
    assert {s["op"] for s in steps} == {"create"}, {s["op"] for s in steps}

    topo = load_topology(read_stack_file(engine.project, stack), stack=stack,
                         project_dir=engine.project, tsig_secret=secret)
    mocks = run_components(topo)
    registered = Counter((r.type, r.name) for r in mocks.resources)
    assert planned == registered
    kinds = Counter(t for t, _ in planned)
    print(f"{stack}: pulumi preview plans {sum(planned.values())} resources: {dict(kinds)}")
    assert kinds["kubernetes:apps/v1:Deployment"] == len(topo.spec.instances)
    assert kinds["pulumi-python:dynamic/bind9:TransferGate"] == 1  # one per stack


def test_local_stack_up_noop_change_destroy(engine: Engine) -> None:
    secret = _new_secret()
    env = {"BIND9_TSIG_SECRET": secret}
    local = json.loads(engine.cli("local", "up", "--stack", "local", "--json", env=env).stdout)
    try:
        assert local["ready"], local
        stack_file = engine.project / "Pulumi.local.yaml"
        doc = yaml.safe_load(stack_file.read_text())
        doc["config"]["bind9-topology:gate"]["addressMap"] = {
            ip: local["addressMap"][ip] for ip in ("10.9.0.10", "10.9.0.20")}
        stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        engine.init("local", secret)

        # 1. up: the gates run inside the engine's provider host against real named.
        engine.run("up", "--yes", "--skip-preview", stack="local")
        outputs = json.loads(engine.run("stack", "output", "--json", stack="local").stdout)
        primary_zones = {n: z for n, z in outputs["zones"].items() if z["type"] == "primary"}
        assert set(primary_zones) == {"local-example", "local-test"}
        for zone in outputs["zones"].values():
            assert zone["ready"] is True, zone
        serial_before = primary_zones["local-example"]["serial"]
        manifests = list((engine.project / ".cache" / "local-manifests").rglob("*.yaml"))
        assert any("deployment" in p.name.lower() for p in manifests), manifests

        state = "\n".join(p.read_text() for p in
                          Path(engine.env["PULUMI_BACKEND_URL"][len("file://"):]).rglob("*.json"))
        assert secret not in state, "the TSIG secret is in clear in the Pulumi state"

        # 2. nothing changed: nothing to do.
        engine.run("preview", "--expect-no-changes", stack="local")

        # 3. one record of one zone changes: that zone's serial, its ConfigMap and the
        #    stack's gate (whose update re-checks that zone only); nothing else: the
        #    primary's pods take the zone from the ConfigMap live (the agent), so its
        #    Deployment does not change.
        records = engine.project / "configs" / "zones" / "local.example.yaml"
        records.write_text(records.read_text().replace("192.0.2.30", "192.0.2.31"))
        engine.cli("local", "up", "--stack", "local", "--json", env=env)
        steps = _steps(engine.run("preview", "--json", stack="local").stdout)
        changed = sorted(_type_and_name(s["urn"]) for s in steps if s["op"] != "same")
        assert changed == sorted([
            ("pulumi-python:dynamic/bind9:ZoneSerials", "local-zone-serials"),
            ("pulumi-python:dynamic/bind9:TransferGate", "local-transfer-gate"),
            ("kubernetes:core/v1:ConfigMap", "local-primary-zones-0"),
        ]), changed
        # The preview knows the new serial (decided in ZoneSerials' check) and shows it in
        # the ConfigMap's data; the other zone's serial does not move.
        serials = next(s for s in steps if s["urn"].endswith("::local-zone-serials"))
        before_serials = serials["oldState"]["outputs"]["serials"]
        planned = serials["newState"]["inputs"]["serials"]
        assert planned["local.test"] == before_serials["local.test"], (planned, before_serials)
        planned_serial = planned["local.example"]["serial"]
        assert planned_serial > serial_before, (planned, serial_before)
        zones_map = next(s for s in steps if s["urn"].endswith("::local-primary-zones-0"))
        assert str(planned_serial) in json.dumps(zones_map["newState"]["inputs"]["data"])
        engine.run("up", "--yes", "--skip-preview", stack="local")
        after = json.loads(engine.run("stack", "output", "--json", stack="local").stdout)
        example = after["zones"]["local-example"]
        assert example["ready"] is True and example["serial"] == planned_serial, example
        assert after["zones"]["local-test"]["serial"] == primary_zones["local-test"]["serial"]
        assert after["zones"]["local-test"]["serial"] == primary_zones["local-test"]["serial"]

        # 4. destroy removes everything.
        engine.run("destroy", "--yes", "--skip-preview", stack="local")
        resources = json.loads(engine.run("stack", "export", stack="local").stdout)
        assert not resources["deployment"].get("resources"), resources["deployment"]
    finally:
        subprocess.run([sys.executable, "-m", "components", "local", "down"],
                       cwd=engine.project, env=engine.env, capture_output=True, timeout=60)


def test_bad_config_fails_before_any_resource(engine: Engine) -> None:
    stack_file = engine.project / "Pulumi.broken.yaml"
    doc = yaml.safe_load((ROOT / "Pulumi.prod-eu-west-1.yaml").read_text())
    doc["config"].pop("bind9-topology:tsigSecret", None)  # an earlier test may have set one
    doc.pop("encryptionsalt", None)
    text = yaml.safe_dump(doc, sort_keys=False)
    stack_file.write_text(text.replace("replicas: 3", "replicas: 0")
                          .replace("0.0.0.0/0", "0.0.0.300/0", 1))
    engine.run("stack", "init", "broken")
    proc = engine.run("up", "--yes", "--skip-preview", stack="broken", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in output
    for fragment in (
        "bind9-topology:instances[0].replicas: replicas is 0; set it to 1 or more",
        "bind9-topology:instances[0].config.allowQuery[0]: '0.0.0.300/0' is not a CIDR",
        "pulumi config set --secret --stack broken bind9-topology:tsigSecret",
    ):
        assert fragment in output, output
    exported = json.loads(engine.run("stack", "export", stack="broken").stdout)
    types = [r["type"] for r in exported["deployment"].get("resources") or []]
    assert all(t.startswith("pulumi:") for t in types), types
