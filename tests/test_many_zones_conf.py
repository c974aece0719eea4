"""named.conf at thousands of zones: zone statements in files of their own, each in its own
ConfigMap, so no ConfigMap passes Kubernetes' 1 MiB however many zones an instance serves.

Secondary zones carry no records, so 6,000 of them render in seconds; the real
named-checkconf reads the written tree as named would (includes and all).
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bind9_topology.config.topology import Topology, load_topology
from bind9_topology.render import manifests
from bind9_topology.render.bind_files import (
    ZONE_CONF_INLINE_BYTES,
    Placement,
    RenderedInstance,
    render_instance,
    write_tree,
)
from bind9_topology.render.plan import plan_instance
from tests.conftest import new_secret
from tests.namedkit import RAW
from tests.test_checkconf import assert_ok, checkconf  # noqa: F401 (fixture)

pytestmark = pytest.mark.config

PROJECT = Path(__file__).resolve().parent.parent
#: what the API server takes in one ConfigMap (data and metadata)
CONFIGMAP_LIMIT = 1024 * 1024


def many(count: int) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    raw["zones"] = [raw["zones"][0]] + [
        {"zoneName": f"zone{i:05d}.example", "type": "secondary",
         "instanceSelector": {"matchLabels": {"dns-role": "secondary"}},
         "secondaryConfig": {"primaryServers": ["10.0.1.10"]}}
        for i in range(count)]
    return raw


def load(raw: dict[str, Any]) -> Topology:
    return load_topology(raw, stack="test", project_dir=PROJECT, tsig_secret=new_secret())


def render(topo: Topology, root: Path | None = None) -> RenderedInstance:
    inst = next(i for i in topo.spec.instances if i.name == "sec-a")
    placement = Placement(root=str(root), port=5353, listen_v4="127.0.0.1",
                          listen_v6="none") if root else Placement()
    serials = dict.fromkeys(topo.contents, 2026120300)
    return render_instance(topo.spec, inst, topo.contents, serials, placement,
                           topo.tsig_secret)


def test_few_zones_stay_in_named_conf() -> None:
    rendered = render(load(many(10)))
    conf = rendered.config_files["etc/bind/named.conf"].decode()
    assert "include \"/etc/bind/zones.d/" not in conf
    assert conf.count('type secondary;') == 10 == len(rendered.zones)
    assert manifests.zone_conf_files(rendered) == []


def test_thousands_of_zones_leave_named_conf_for_their_own_configmaps(
        tmp_path: Path, checkconf: str) -> None:  # noqa: F811
    topo = load(many(6000))
    rendered = render(topo)
    confs = manifests.zone_conf_files(rendered)
    assert len(confs) >= 2, confs
    conf = rendered.config_files["etc/bind/named.conf"].decode()
    assert [line for line in conf.splitlines() if line.startswith("include \"/etc/bind/zones.d")
            ] == [f'include "/{path}";' for path in confs]
    # every zone in exactly one file, none left in named.conf
    seen: list[str] = []
    for path in confs:
        body = rendered.config_files[path].decode()
        assert len(body.encode()) <= ZONE_CONF_INLINE_BYTES * 1.5, path
        seen += [line.split('"')[1] for line in body.splitlines() if line.startswith("zone ")]
    assert sorted(seen) == sorted(rendered.zones)
    assert "zone \"" not in conf

    # the manifests: each ConfigMap under the API's limit, each file projected where
    # named.conf includes it
    inst = rendered.instance
    maps = manifests.config_maps(topo.spec, rendered)
    for obj in maps:
        assert len(json.dumps(obj).encode()) < CONFIGMAP_LIMIT, obj["metadata"]["name"]
    names = [m["metadata"]["name"] for m in maps]
    assert names[0] == manifests.config_map_name(inst)
    assert names[1:] == [manifests.zone_conf_map_name(inst, p) for p in confs]
    plan = plan_instance(topo.spec, inst, topo.contents)
    volumes = {v["name"]: v for v in plan.deployment["spec"]["template"]["spec"]["volumes"]}
    projected = {src["configMap"]["name"]: src["configMap"]["items"]
                 for src in volumes["etc-bind"]["projected"]["sources"] if "configMap" in src}
    for path in confs:
        key = path.rsplit("/", 1)[-1]
        assert projected[manifests.zone_conf_map_name(inst, path)] == [
            {"key": key, "path": f"zones.d/{key}"}]
    assert [m.name for m in plan.config_maps] == names

    # named reads it: the real named-checkconf on the written tree, includes and all
    on_disk = render(topo, tmp_path)
    write_tree(on_disk, tmp_path, include_secrets=True)
    proc = subprocess.run([checkconf, str(tmp_path / "etc/bind/named.conf")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert_ok(proc, "named-checkconf")
    listed = subprocess.run([checkconf, "-l", str(tmp_path / "etc/bind/named.conf")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert_ok(listed, "named-checkconf -l")
    assert len([ln for ln in listed.stdout.splitlines() if ln.strip()]) == len(rendered.zones)


def test_one_zone_more_changes_one_zone_file() -> None:
    before = render(load(many(6000)))
    raw = many(6000)
    raw["zones"].append({"zoneName": "added.example", "type": "secondary",
                         "instanceSelector": {"matchLabels": {"dns-role": "secondary"}},
                         "secondaryConfig": {"primaryServers": ["10.0.1.10"]}})
    after = render(load(raw))
    confs = manifests.zone_conf_files(before)
    assert manifests.zone_conf_files(after) == confs
    changed = [p for p in confs if before.config_files[p] != after.config_files[p]]
    assert len(changed) == 1 and "added.example" in after.config_files[changed[0]].decode()
    # named.conf itself (the include list) did not move
    assert (before.config_files["etc/bind/named.conf"]
            == after.config_files["etc/bind/named.conf"])
