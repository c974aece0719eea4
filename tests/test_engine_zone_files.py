"""zonesFiles through the real engine (one `pulumi preview`, file backend, no cluster): the
program reads a zone from a zone file, and the size of the stack config that `validate`
computes from the stack file is the size of the PULUMI_CONFIG the engine really handed
the program (both warn near the cap with the same byte count).
"""

from __future__ import annotations

import base64
import json
import os
import re
from typing import Any

import pytest
import yaml

from bind9_topology.config.config_size import MAX_ARG_STRLEN, go_json, measure
from tests.enginekit import make_engine

pytestmark = pytest.mark.engine

P = "bind9-topology:"
PRIMARY_IP, SECONDARY_IP = "192.0.2.53", "192.0.2.63"
SIZE = re.compile(r"the stack config is ([\d,]+) bytes")


def _selector(role: str) -> dict[str, Any]:
    return {"matchLabels": {"dns-role": role}}


def _padding_zone(records: int) -> dict[str, Any]:
    """An inline zone of *records* TXT records: brings the stack near the cap."""
    return {"zoneName": "pad.example", "type": "primary", "instanceSelector": _selector("primary"),
            "soaRecord": {"primaryNs": "ns1.pad.example.", "adminEmail": "hostmaster@pad.example"},
            "records": [{"name": "@", "type": "NS", "data": "ns.provider.example."},
                        *({"name": f"t{n}", "type": "TXT", "data": f'"padding {n}"'}
                          for n in range(records))]}


def _records_for(fraction: float) -> int:
    def size(n: int) -> int:
        return measure({f"{P}zones": go_json([_padding_zone(n)])}).total

    return int((fraction * MAX_ARG_STRLEN - size(10)) / (size(11) - size(10))) + 10


def test_preview_reads_zone_files_and_measures_the_config_as_the_engine(tmp_path) -> None:
    engine = make_engine(tmp_path)
    zone_file = engine.project / "configs" / "zone-lists" / "zf.yaml"
    zone_file.parent.mkdir(parents=True)
    zone_file.write_text(yaml.safe_dump([
        {"zoneName": "zf.example", "type": "primary", "instanceSelector": _selector("primary"),
         "soaRecord": {"primaryNs": "ns1.zf.example.", "adminEmail": "hostmaster@zf.example"},
         "alsoNotify": [SECONDARY_IP],
         "records": [{"name": "@", "type": "NS", "data": "ns1.zf.example."},
                     {"name": "ns1", "type": "A", "data": PRIMARY_IP},
                     {"name": "from-a-zone-file", "type": "A", "data": "192.0.2.7"}]},
        {"zoneName": "zf.example", "type": "secondary", "instanceSelector": _selector("secondary"),
         "secondaryConfig": {"primaryServers": [PRIMARY_IP]}},
    ], sort_keys=False))
    config = {
        "region": "zf-east", "namespace": "dns-zf", "kubernetesRenderDir": ".cache/zf-manifests",
        "gate": {"enabled": False},
        "instances": [
            {"name": "zf-primary", "role": "primary",
             "service": {"type": "LoadBalancer", "loadBalancerIP": PRIMARY_IP}},
            {"name": "zf-secondary", "role": "secondary",
             "service": {"type": "LoadBalancer", "loadBalancerIP": SECONDARY_IP}}],
        "zonesFiles": ["configs/zone-lists"],
        "zones": [_padding_zone(_records_for(0.85))],
    }
    (engine.project / "Pulumi.zf.yaml").write_text(yaml.safe_dump(
        {"config": {f"{P}{k}": v for k, v in config.items()}}, sort_keys=False))
    engine.init("zf", base64.b64encode(os.urandom(32)).decode())

    validate = engine.cli("validate", "--stack", "zf")
    assert "zf: OK" in validate.stdout and f"warning: Pulumi.zf.yaml:{P}zones" in validate.stdout
    offline = SIZE.search(validate.stdout)
    assert offline, validate.stdout

    preview = engine.run("preview", "--json", stack="zf")
    result = json.loads(preview.stdout)
    config_maps = [s for s in result["steps"] if "kubernetes:core/v1:ConfigMap" in s["urn"]]
    data = json.dumps([s["newState"]["inputs"].get("data") for s in config_maps])
    assert "from-a-zone-file" in data and "zone \\\"zf.example\\\"" in data, data[:2000]
    in_engine = SIZE.search(preview.stdout)
    assert in_engine, preview.stdout[-4000:]
    # the program measured its own PULUMI_CONFIG: the very figure validate computed offline
    assert in_engine.group(1) == offline.group(1), (in_engine.group(0), offline.group(0))
