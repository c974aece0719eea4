"""Rendering: golden files, determinism, the BIND semantics each role must have,
no secret outside the Secret, the bindy form equal to the stack form, and the
$INCLUDE split of a zone too big for one ConfigMap file.

Golden files live in tests/golden/; rewrite them with UPDATE_GOLDEN=1 and
review the diff before committing.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import dns.name
import dns.rdatatype
import dns.zone
import pytest
from conftest import BIG_ZONE_NAME, BIG_ZONE_RECORDS, FIXED_SERIAL

from bind9_topology.config.topology import Topology, list_stacks, load_topology, read_stack_file
from bind9_topology.render.bind_files import (
    CONTAINER,
    ZONE_DIR,
    ZONE_PART_BYTES,
    Placement,
    RenderedInstance,
    render_instance,
    write_tree,
)

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
NAMED_CONF = "etc/bind/named.conf"


def load(raw: dict[str, Any], project_dir: Path, secret: str, stack: str = "prod") -> Topology:
    return load_topology(raw, stack=stack, project_dir=project_dir, tsig_secret=secret)


def render_all(
    topo: Topology, placement: Placement = CONTAINER, serial: int = FIXED_SERIAL
) -> dict[str, RenderedInstance]:
    serials = dict.fromkeys(topo.contents, serial)
    return {
        inst.name: render_instance(topo.spec, inst, topo.contents, serials, placement,
                                   topo.tsig_secret)
        for inst in topo.spec.instances
    }


@pytest.fixture
def prod(prod_raw, project_dir, tsig_secret) -> Topology:
    return load(prod_raw, project_dir, tsig_secret)


@pytest.fixture
def prod_rendered(prod) -> dict[str, RenderedInstance]:
    return render_all(prod)


def all_stacks(project_dir: Path, secret: str) -> dict[str, Topology]:
    return {
        stack: load(read_stack_file(project_dir, stack), project_dir, secret, stack)
        for stack in list_stacks(project_dir)
    }


def zone_blocks(named_conf: str) -> dict[str, str]:
    """zone name -> the text of its zone { ... }; block."""
    return {
        m.group(1): m.group(0)
        for m in re.finditer(r'^zone "([^"]+)" \{\n.*?^\};$', named_conf, re.M | re.S)
    }


def resolve_lists(named_conf: str, block: str) -> str:
    """*block* with each server list it names (`"notify-0"`, `"primaries-0"`) replaced by the
    entries named.conf defines for it (`primaries "<name>" { ... };`), as named reads it."""
    lists = dict(re.findall(r'^primaries "([^"]+)" \{ (.*?)\};$', named_conf, re.M))

    def entries(m: re.Match[str]) -> str:
        assert m.group(1) in lists, (m.group(1), sorted(lists))
        return lists[m.group(1)]

    return re.sub(r'"((?:notify|primaries)-\d+)"; ', entries, block)


def options_block(named_conf: str) -> str:
    m = re.search(r"^options \{\n.*?^\};$", named_conf, re.M | re.S)
    assert m, named_conf
    return m.group(0)


# --------------------------------------------------------------------------- golden files


def check_golden(name: str, data: bytes) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return
    assert path.exists(), f"{path} is missing; create it with UPDATE_GOLDEN=1 pytest {__file__}"
    expected = path.read_bytes()
    assert data == expected, (
        f"{name} differs from its golden file; if the change is intended, run "
        f"UPDATE_GOLDEN=1 python -m pytest {__file__} and review the diff\n"
        f"--- golden\n{expected.decode()}\n--- rendered\n{data.decode()}"
    )


def test_golden_primary_named_conf(prod_rendered):
    check_golden("primary-dns.named.conf", prod_rendered["primary-dns"].config_files[NAMED_CONF])


def test_golden_secondary_named_conf(prod_rendered):
    check_golden(
        "secondary-dns.named.conf", prod_rendered["secondary-dns"].config_files[NAMED_CONF]
    )


def test_golden_zone_file(prod_rendered):
    check_golden(
        "db.example.com", prod_rendered["primary-dns"].zone_files[f"{ZONE_DIR}/db.example.com"]
    )


def test_golden_ready_script(prod_rendered):
    ready = prod_rendered["primary-dns"].config_files["etc/bind/ready.sh"]
    check_golden("primary-dns.ready.sh", ready)


# --------------------------------------------------------------------------- determinism


def test_render_is_deterministic(prod_raw, project_dir, tsig_secret):
    """Two loads and renders of the same config give the same bytes and checksums."""
    first = render_all(load(prod_raw, project_dir, tsig_secret))
    second = render_all(load(dict(prod_raw), project_dir, tsig_secret))
    assert first.keys() == second.keys()
    for name, a in first.items():
        b = second[name]
        assert a.config_files == b.config_files, name
        assert a.zone_files == b.zone_files, name
        assert a.secret_files == b.secret_files, name
        assert a.checksum == b.checksum, name
        assert re.fullmatch(r"[0-9a-f]{64}", a.checksum)


def test_checksum_follows_content_not_secret(prod, project_dir, prod_raw, tsig_secret):
    base = render_all(prod)
    bumped = render_all(prod, serial=FIXED_SERIAL + 1)
    # the agent applies zone files live: a new serial does not roll the primaries ...
    assert bumped["primary-dns"].live_zones
    assert bumped["primary-dns"].checksum == base["primary-dns"].checksum
    # ... but a zone file is what they restart for when no agent applies it
    still = dataclasses.replace(bumped["primary-dns"], live_zones=False)
    assert still.checksum != dataclasses.replace(base["primary-dns"], live_zones=False).checksum
    # secondaries mount no zone data: a new serial does not roll them
    assert bumped["secondary-dns"].checksum == base["secondary-dns"].checksum
    # the secret is in the Secret, not the ConfigMaps: rotating it changes no checksum
    from conftest import new_secret

    rotated = render_all(load(prod_raw, project_dir, new_secret()))
    for name in base:
        assert rotated[name].checksum == base[name].checksum
        assert rotated[name].secret_files != base[name].secret_files


def test_content_hash_ignores_serial(prod):
    for content in prod.contents.values():
        assert content.text(1) != content.text(2)
        assert content.content_hash == content.content_hash  # stable property


# --------------------------------------------------------------------------- role semantics


def test_secondaries_refuse_transfers_and_transfer_with_key(project_dir, tsig_secret):
    found = 0
    for stack, topo in all_stacks(project_dir, tsig_secret).items():
        for name, rendered in render_all(topo).items():
            if rendered.instance.role != "secondary":
                continue
            zones = {z.zoneName: z for z in topo.spec.zones_for(rendered.instance)}
            conf = rendered.config_files[NAMED_CONF].decode()
            where = f"{stack}/{name}"
            # catalog members (zones named creates from a catalog) take the options' ACL:
            # the project's key only, as every listed secondary zone's
            acl = "key transfer-key; " if "catalog-zones {" in conf else "none; "
            assert f"allow-transfer {{ {acl}}};" in options_block(conf), where
            assert "recursion no;" in conf, where
            # they notify only their pod's agent (the relay to the instance's other pods)
            assert ("notify explicit;\n    notify-delay 0;\n    also-notify { 127.0.0.1 port 5354 "
                    "key transfer-key; };") in options_block(conf), where
            assert "allow-notify { key transfer-key; };" in conf, where
            blocks = zone_blocks(conf)
            assert sorted(blocks) == sorted(rendered.zones), where
            assert blocks, f"{where} serves no zone"
            for zone, block in blocks.items():
                block = resolve_lists(conf, block)
                found += 1
                assert "type secondary;" in block, (where, zone)
                # only to the project's key: the gate proves a secondary's content by AXFR
                assert "allow-transfer { key transfer-key; };" in block, (where, zone)
                assert re.search(
                    r"primaries \{ (\S+ port \d+ key transfer-key; )+\};", block
                ), (where, zone, block)
                config = zones[zone].secondaryConfig
                assert config is not None
                listed = re.findall(r"(\S+) port (\d+) key transfer-key;", block)
                assert listed == [(ip, str(port)) for ip, port in config.servers], (where, block)
                assert f'file "/var/lib/bind/zones/db.{zone}";' in block
    # at least prod's secondary-dns and the 3 secondary-region instances, 3 zones each
    assert found >= 12


def test_primaries_notify_explicitly_and_transfer_only_with_key(prod_rendered):
    conf = prod_rendered["primary-dns"].config_files[NAMED_CONF].decode()
    options = options_block(conf)
    assert "recursion no;" in options
    assert "allow-recursion { none; };" in options
    assert "allow-transfer { key transfer-key; };" in options
    assert "notify explicit;" in options
    assert 'include "/etc/bind/tsig/transfer-key.conf";' in conf
    blocks = zone_blocks(conf)
    assert sorted(blocks) == ["example.com", "example.net", "example.org"]
    for zone, block in blocks.items():
        assert "type primary;" in block, zone
        assert "notify explicit;" in block, zone
        block = resolve_lists(conf, block)
        targets = re.findall(r"(\S+) port (\d+) key transfer-key;", block)
        assert targets == [
            ("10.0.1.20", "53"), ("10.0.2.20", "53"), ("10.0.2.21", "53"), ("10.0.3.20", "53"),
        ], (zone, block)
        assert re.search(r"also-notify \{ (\S+ port \d+ key transfer-key; )+\};", block), block
        assert f'file "/var/lib/bind/zones/db.{zone}";' in block


def test_primary_serves_every_primary_zone_with_the_serial(prod_rendered):
    rendered = prod_rendered["primary-dns"]
    assert rendered.serials == dict.fromkeys(rendered.zones, FIXED_SERIAL)
    for zone in rendered.zones:
        text = rendered.zone_files[f"{ZONE_DIR}/db.{zone}"].decode()
        assert text.startswith(f"$ORIGIN {zone}.\n@ 3600 IN SOA ns1.example.com. "
                               f"hostmaster.example.com. {FIXED_SERIAL} ")
    # a secondary has no zone data in its ConfigMaps: it transfers it
    assert prod_rendered["secondary-dns"].zone_files == {}


def test_placement_prefixes_every_path(prod, tmp_path):
    root = str(tmp_path)
    placed = render_all(prod, Placement(root=root, port=5353, listen_v4="127.0.0.1",
                                        listen_v6="none"))
    for name, rendered in placed.items():
        conf = rendered.config_files[NAMED_CONF].decode()
        paths = re.findall(r'(?:file|directory|include|pid-file|session-keyfile|'
                           r'managed-keys-directory|dump-file|statistics-file|journal) "([^"]+)"',
                           conf)
        assert paths, name
        assert all(p.startswith(root + "/") for p in paths), (name, paths)
        assert "listen-on port 5353 { 127.0.0.1; };" in conf
        assert "listen-on-v6 port 5353 { none; };" in conf


# --------------------------------------------------------------------------- secrets


def test_tsig_secret_only_in_secret_files(project_dir, tsig_secret):
    for stack, topo in all_stacks(project_dir, tsig_secret).items():
        for name, rendered in render_all(topo).items():
            where = f"{stack}/{name}"
            for path, data in {**rendered.config_files, **rendered.zone_files}.items():
                assert tsig_secret.encode() not in data, f"secret in {where}:{path}"
            assert list(rendered.secret_files) == ["etc/bind/tsig/transfer-key.conf"], where
            key_file = rendered.secret_files["etc/bind/tsig/transfer-key.conf"].decode()
            assert f'secret "{tsig_secret}";' in key_file, where
            assert "algorithm hmac-sha256;" in key_file, where
            assert tsig_secret not in repr(rendered.checksum)


def test_write_tree_without_secrets_writes_no_key(prod_rendered, tmp_path, tsig_secret):
    write_tree(prod_rendered["primary-dns"], tmp_path, include_secrets=False)
    assert not (tmp_path / "etc/bind/tsig/transfer-key.conf").exists()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert tsig_secret.encode() not in path.read_bytes(), path


def test_write_tree_key_file_is_private(prod_rendered, tmp_path):
    write_tree(prod_rendered["primary-dns"], tmp_path, include_secrets=True)
    key = tmp_path / "etc/bind/tsig/transfer-key.conf"
    assert key.stat().st_mode & 0o077 == 0


# --------------------------------------------------------------------------- bindy form


def test_bindy_manifest_renders_the_same_as_the_stack_form(prod_raw, project_dir, tsig_secret):
    bindy_raw = {
        key: prod_raw[key]
        for key in ("region", "environment", "namespace", "tsigKey", "gate")
    }
    bindy_raw["bindyManifests"] = ["configs/bindy/prod.yaml"]
    stack_topo = load(prod_raw, project_dir, tsig_secret)
    bindy_topo = load(bindy_raw, project_dir, tsig_secret)

    assert [z.resource_name for z in bindy_topo.spec.zones] == [
        z.resource_name for z in stack_topo.spec.zones
    ]
    assert bindy_topo.spec.instances == stack_topo.spec.instances
    for placement in (CONTAINER, Placement(root="/tmp/x", port=5353)):
        stack_files = render_all(stack_topo, placement)
        bindy_files = render_all(bindy_topo, placement)
        assert sorted(bindy_files) == sorted(stack_files) == ["primary-dns", "secondary-dns"]
        for name, rendered in stack_files.items():
            other = bindy_files[name]
            assert other.config_files == rendered.config_files, name
            assert other.zone_files == rendered.zone_files, name
            assert other.secret_files == rendered.secret_files, name
            assert other.checksum == rendered.checksum, name


# --------------------------------------------------------------------------- big zone split


def test_big_zone_is_split_with_include_and_still_loads(big_topology, tmp_path):
    content = big_topology.contents[BIG_ZONE_NAME]
    assert len(content.text(FIXED_SERIAL).encode()) > ZONE_PART_BYTES
    primary = next(i for i in big_topology.spec.instances if i.role == "primary")
    placement = Placement(root=str(tmp_path), port=5353, listen_v4="127.0.0.1",
                          listen_v6="none")
    rendered = render_instance(
        big_topology.spec, primary, big_topology.contents,
        dict.fromkeys(big_topology.contents, FIXED_SERIAL), placement, big_topology.tsig_secret,
    )
    main_rel = f"{ZONE_DIR}/db.{BIG_ZONE_NAME}"
    parts = sorted(p for p in rendered.zone_files if p.startswith(main_rel + ".part"))
    assert len(parts) >= 2, sorted(rendered.zone_files)
    for part in parts:
        assert 0 < len(rendered.zone_files[part]) <= ZONE_PART_BYTES, part
    main = rendered.zone_files[main_rel].decode()
    assert main.splitlines()[:2] == [
        f"$ORIGIN {BIG_ZONE_NAME}.",
        f"@ 3600 IN SOA ns1.example.com. hostmaster.example.com. {FIXED_SERIAL} 3600 600 "
        "1209600 300",
    ]
    assert [line for line in main.splitlines()[2:]] == [
        f"$INCLUDE {tmp_path}/{part}" for part in parts
    ]
    # the parts are the body, in order, cut only at line ends
    assert b"".join(rendered.zone_files[p] for p in parts).decode() == content.body
    # the small zone beside it is not split
    assert f"{ZONE_DIR}/db.example.com" in rendered.zone_files
    assert not [p for p in rendered.zone_files if p.startswith(f"{ZONE_DIR}/db.example.com.")]

    # it loads: follow the $INCLUDEs from the main file, as named does
    write_tree(rendered, tmp_path, include_secrets=True)
    zone = dns.zone.from_file(str(tmp_path / main_rel), origin=BIG_ZONE_NAME,
                              relativize=True, allow_include=True)
    aaaa = sum(1 for _ in zone.iterate_rdatas(dns.rdatatype.AAAA))
    assert aaaa == BIG_ZONE_RECORDS
    soa = zone.get_rdataset(dns.name.empty, dns.rdatatype.SOA)
    assert soa is not None and soa[0].serial == FIXED_SERIAL  # type: ignore[attr-defined]


def test_big_zone_include_uses_container_paths(big_topology):
    primary = next(i for i in big_topology.spec.instances if i.role == "primary")
    rendered = render_instance(
        big_topology.spec, primary, big_topology.contents,
        dict.fromkeys(big_topology.contents, FIXED_SERIAL), CONTAINER, big_topology.tsig_secret,
    )
    main = rendered.zone_files[f"{ZONE_DIR}/db.{BIG_ZONE_NAME}"].decode()
    includes = [line for line in main.splitlines() if line.startswith("$INCLUDE")]
    assert includes
    assert all(line.startswith(f"$INCLUDE /{ZONE_DIR}/db.{BIG_ZONE_NAME}.part")
               for line in includes), includes


def _zone_files(sizes: dict[str, int]) -> tuple[dict[str, bytes], dict[str, str]]:
    files = {f"var/lib/bind/zones/db.{z}": b"x" * n for z, n in sizes.items()}
    return files, {f"var/lib/bind/zones/db.{z}": z for z in sizes}


def test_stable_shards_one_edit_changes_one_shard() -> None:
    """ADR 16: a zone that grows changes its own shard only; a zone added touches at most
    the shard it lands in and the one before; no shard passes the budget."""
    from bind9_topology.render.bind_files import CONFIGMAP_BUDGET, stable_shards

    sizes = {f"zone{i:05d}.example": 5000 + (i * 7919) % 4000 for i in range(3000)}
    files, zone_of = _zone_files(sizes)
    before = stable_shards(files, zone_of)
    assert len(before) > 10
    assert all(sum(len(k) + len(v) for k, v in s.items()) <= CONFIGMAP_BUDGET for s in before)
    assert [p for s in before for p in sorted(s)] == sorted(files)
    for zone in ("zone00000.example", "zone01500.example", "zone02999.example"):
        grown = dict(sizes, **{zone: sizes[zone] + 40})
        after = stable_shards(*_zone_files(grown))
        changed = [a for a, b in zip(after, before, strict=False) if a != b]
        assert len(after) == len(before) and len(changed) == 1, zone
    added = stable_shards(*_zone_files(dict(sizes, **{"zone01500a.example": 6000})))
    keys_before = {tuple(sorted(s)) for s in before}
    assert len([s for s in added if tuple(sorted(s)) not in keys_before]) <= 2
