"""`local up` of a stack whose zones sit in a zone file (zonesFiles): the prod stack with
its zones moved out of the stack file, run in real named and gated like the inline one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bind9_topology.local.runner import load_state
from tests.test_local import local_project, run

pytestmark = pytest.mark.bind

P = "bind9-topology:"


def test_local_up_serves_the_zones_of_a_zone_file(tmp_path: Path) -> None:
    with local_project(tmp_path, ["Pulumi.prod.yaml"]) as project:
        stack_file = project / "Pulumi.prod.yaml"
        doc = yaml.safe_load(stack_file.read_text())
        zones = doc["config"].pop(f"{P}zones")
        (project / "configs" / "zone-lists").mkdir()
        (project / "configs" / "zone-lists" / "prod.yaml").write_text(yaml.safe_dump(zones))
        doc["config"][f"{P}zonesFiles"] = ["configs/zone-lists"]
        stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))

        result = run(project, "local", "up", "--once", "--stack", "prod", "--json",
                     "--timeout", "60")
        assert result.returncode == 0, result.stdout + result.stderr
        data = json.loads(result.stdout)
        assert data["ready"] is True
        assert {z["zone"] for z in data["zones"]} == {"example.com", "example.org",
                                                      "example.net"}
        assert {r["instance"] for r in data["rows"]} == {"primary-dns", "secondary-dns"}
        assert not load_state(project)["servers"]
