"""Packed zone ConfigMaps (ADR 20): a large instance's zone shards go out as one tar.gz each
in binaryData, expanded in the pod by the zone copy step (tar) and by the agent (tarfile).

The oracle is the rendering: what a packed ConfigMap expands to must be exactly the zone
files render_instance writes with the same serials, and a small stack keeps its text.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from bind9_topology.config.topology import Topology
from bind9_topology.pod import agent
from bind9_topology.render import manifests
from bind9_topology.render.bind_files import render_instance
from tests.test_components import CONFIG_MAP, DEPLOYMENT, of_type, one, run

pytestmark = pytest.mark.unit


def test_pack_is_deterministic_and_the_agent_unpacks_it() -> None:
    files = {"db.b.example": "b\n" * 1000, "db.a.example": "$ORIGIN a.example.\n",
             "db.c.example.part0001": "x" * 70_000}
    blob = manifests.pack_files(files)
    assert blob == manifests.pack_files(dict(reversed(list(files.items()))))
    assert agent.unpack(blob) == {k: v.encode() for k, v in files.items()}
    packed = manifests.packed_content("m-zones-0", files)
    assert list(packed) == ["binaryData"]
    assert list(packed["binaryData"]) == ["m-zones-0.tar.gz"]
    obj = {"metadata": {"name": "m-zones-0"}, **packed}
    assert agent.configmap_files(obj) == {k: v.encode() for k, v in files.items()}


def test_incompressible_zones_stay_text() -> None:
    noise = base64.b85encode(bytes(range(256)) * 7).decode()  # no repeats within a window
    files = {"db.n.example": noise[:300]}
    assert manifests.packed_content("m-zones-0", files) == {"data": files}


def test_a_small_stack_keeps_readable_text(big_topology: Topology) -> None:
    mocks = run(big_topology)
    for cm in of_type(mocks, CONFIG_MAP):
        assert "binaryData" not in cm.inputs and cm.inputs.get("data"), cm.name


def test_a_large_instance_packs_its_zone_configmaps(
        big_topology: Topology, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(manifests, "PACK_OVER_BYTES", 0)
    monkeypatch.chdir(tmp_path)  # the packed shard cache: .cache/packed of the project
    mocks = run(big_topology)
    zone_maps = [cm for cm in of_type(mocks, CONFIG_MAP)
                 if cm.name.startswith("primary-dns-zones-")]
    assert len(zone_maps) >= 2
    expanded: dict[str, bytes] = {}
    for cm in zone_maps:
        assert "data" not in cm.inputs or not cm.inputs["data"], cm.name
        assert list(cm.inputs["binaryData"]) == [manifests.archive_key(cm.name)]
        files = agent.configmap_files(cm.inputs)
        assert not set(files) & set(expanded), "a zone file in two ConfigMaps"
        expanded.update({k: v if isinstance(v, bytes) else v.encode() for k, v in files.items()})
    # the oracle: exactly the files the rendering writes with the serials ZoneSerials gave
    inst = next(i for i in big_topology.spec.instances if i.name == "primary-dns")
    rendered = render_instance(big_topology.spec, inst, big_topology.contents, mocks.serials)
    assert expanded == {p.rsplit("/", 1)[-1]: d for p, d in rendered.zone_files.items()}
    # named.conf and the zone statements stay readable text
    config = one(mocks, CONFIG_MAP, "primary-dns-config")
    assert "named.conf" in config.inputs["data"] and "binaryData" not in config.inputs
    # the pod expands them before named starts, into the writable zone directory
    pod = one(mocks, DEPLOYMENT, "primary-dns").inputs["spec"]["template"]["spec"]
    init = next(c for c in pod["initContainers"] if c["name"] == "zones")
    assert "tar -xzf" in init["command"][-1]
    volumes = {v["name"]: v for v in pod["volumes"]}
    sources = [s["configMap"]["name"] for s in volumes["zone-source"]["projected"]["sources"]]
    assert sorted(sources) == sorted(cm.name for cm in zone_maps)
    assert "emptyDir" in volumes["zones"]


def test_the_zone_copy_step_expands_packed_shards(tmp_path: Path) -> None:
    """The init container's script, run by /bin/sh with the system's tar: plain keys are
    copied, archives expanded and not left behind."""
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    target.mkdir()
    shard = {"db.a.example": "a\n" * 500, "db.b.example.part0001": "b\n" * 900}
    (source / "m-zones-0.tar.gz").write_bytes(manifests.pack_files(shard))
    (source / "db.c.example").write_text("c\n")
    script = manifests.zone_copy_script(True, str(source), str(target))
    subprocess.run(["/bin/sh", "-c", script], check=True, timeout=30)
    assert sorted(p.name for p in target.iterdir()) == [
        "db.a.example", "db.b.example.part0001", "db.c.example"]
    for key, text in shard.items():
        assert (target / key).read_text() == text


def test_unchanged_shards_are_not_packed_again(
        big_topology: Topology, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The second run takes every packed shard from .cache/packed: the same bytes, and
    pack_files is not called (a preview packs only what changed)."""
    monkeypatch.setattr(manifests, "PACK_OVER_BYTES", 0)
    monkeypatch.chdir(tmp_path)
    first = {cm.name: cm.inputs for cm in of_type(run(big_topology), CONFIG_MAP)}
    assert list((tmp_path / ".cache/packed").glob("*.json"))
    calls: list[int] = []
    real = manifests.pack_files
    monkeypatch.setattr(manifests, "pack_files", lambda files: calls.append(1) or real(files))
    second = {cm.name: cm.inputs for cm in of_type(run(big_topology), CONFIG_MAP)}
    assert second == first
    assert calls == []
