"""DNSSEC (zones with `dnssec: {policy: ...}`) on REAL named on 127.0.0.1.

Rendered by the product's path (load_topology -> render_instance with the zone's key
material -> write_tree), as tests/namedkit.py does: the primary signs with the keys
generated in Python (never its own), a secondary transfers the signed zone, and both
validate (dnspython) against the DS the stack outputs.
"""

from __future__ import annotations

import calendar
import copy
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bind9_topology.config.model import Zone
from bind9_topology.dns import dnssec
from bind9_topology.dns.checks import Endpoint
from bind9_topology.render.bind_files import Placement, render_instance
from tests.conftest import new_secret
from tests.namedkit import HOST, PROJECT, RAW, ZONE, LoopbackTopology, loopback_topology

POLICY = "signed"


def signed_raw() -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    raw["zones"][0]["dnssec"] = {"policy": POLICY}
    return raw


@pytest.fixture
def signed(tmp_path: Path) -> Iterator[LoopbackTopology]:
    with loopback_topology(tmp_path, signed_raw(), dnssec.generate_material()) as c:
        yield c


def wait_signed(c: LoopbackTopology, name: str, ds: list[str], timeout: float = 20.0
                ) -> tuple[bool, str]:
    deadline = time.monotonic() + timeout
    ok, detail = False, "not probed"
    while time.monotonic() < deadline:
        ok, detail = dnssec.check_signed(c.ep(name), ZONE, ds)
        if ok:
            break
        time.sleep(0.2)
    return ok, detail


@pytest.mark.bind
def test_signed_zone_validates_on_primary_and_secondary_and_gate_passes(
        signed: LoopbackTopology) -> None:
    info = dnssec.public_info(ZONE, signed.dnssec_material)
    signed.start("primary-dns")
    signed.start("sec-a", wait=False)
    signed.start("sec-b", wait=False)
    for name in ("primary-dns", "sec-a", "sec-b"):
        ok, detail = wait_signed(signed, name, info["ds"])
        assert ok, f"{name}: {detail}\n{signed.procs[name].log_tail()}"
    # exactly the generated keys: named made none of its own
    tags = dnssec.served_key_tags(signed.ep("primary-dns"), ZONE)
    assert tags == set(info["keyTags"].values())
    # the gate (content digest over the signed zone's transfer) passes, and checks signing
    report = signed.gate(deadline=20, ds=info["ds"])
    assert report.ok, report.message
    # a DS of other keys fails the check
    other = dnssec.public_info(ZONE, dnssec.generate_material())["ds"]
    ok, detail = dnssec.check_signed(signed.ep("sec-a"), ZONE, other)
    assert not ok and "DS" in detail
    # secondaries never get a dnssec-policy
    for name in ("sec-a", "sec-b"):
        conf = (signed.root / name / "etc/bind/named.conf").read_text()
        assert "dnssec-policy" not in conf and "inline-signing" not in conf
    assert f'dnssec-policy "{POLICY}";' in (
        signed.root / "primary-dns/etc/bind/named.conf").read_text()


@pytest.mark.bind
def test_restarted_primary_keeps_key_tags(signed: LoopbackTopology) -> None:
    info = dnssec.public_info(ZONE, signed.dnssec_material)
    signed.start("primary-dns")
    assert wait_signed(signed, "primary-dns", info["ds"])[0]
    before = dnssec.served_key_tags(signed.ep("primary-dns"), ZONE)
    signed.procs["primary-dns"].stop(timeout=5)
    signed.start("primary-dns")  # re-rendered from the same (kept) material
    ok, detail = wait_signed(signed, "primary-dns", info["ds"])
    assert ok, detail
    assert dnssec.served_key_tags(signed.ep("primary-dns"), ZONE) == before
    assert before == set(info["keyTags"].values())
    # a fresh tree (a new pod: empty key-directory) signs with the same keys too
    signed.procs["primary-dns"].stop(timeout=5)
    import shutil
    shutil.rmtree(signed.root / "primary-dns")
    signed.start("primary-dns")
    assert wait_signed(signed, "primary-dns", info["ds"])[0]
    assert dnssec.served_key_tags(signed.ep("primary-dns"), ZONE) == before


@pytest.mark.config
def test_named_checkconf_passes_for_signed_primary(signed: LoopbackTopology) -> None:
    for name in ("primary-dns", "sec-a"):
        signed.render(name)
        conf = signed.root / name / "etc/bind/named.conf"
        result = subprocess.run(["named-checkconf", str(conf)], capture_output=True,
                                text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.config
def test_key_files_match_dnssec_keygen(tmp_path: Path) -> None:
    for flags_args, role in ((["-f", "KSK"], "ksk"), ([], "zsk")):
        out = subprocess.run(["dnssec-keygen", "-K", str(tmp_path), "-a", "ECDSAP256SHA256",
                              *flags_args, ZONE], capture_output=True, text=True, check=True)
        base = out.stdout.strip()
        private = (tmp_path / f"{base}.private").read_bytes()
        fields = dict(line.split(": ", 1) for line in private.decode().splitlines())
        created = calendar.timegm(time.strptime(fields["Created"], "%Y%m%d%H%M%S"))
        key = dnssec.ZoneKey(ZONE, role, fields["PrivateKey"], created)
        assert key.basename == base
        assert key.key_file() == (tmp_path / f"{base}.key").read_bytes()
        assert key.private_file() == private


@pytest.mark.unit
def test_dnssec_only_on_primary_zones() -> None:
    with pytest.raises(ValueError, match="secondary zone"):
        Zone.model_validate({"zoneName": ZONE, "type": "secondary", "instanceSelector": {},
                             "dnssec": {"policy": POLICY}})
    with pytest.raises(ValueError, match="BIND's own"):
        Zone.model_validate({"zoneName": ZONE, "type": "primary", "instanceSelector": {},
                             "dnssec": {"policy": "default"}})


@pytest.mark.unit
def test_ds_and_tags_are_stable_for_the_same_material() -> None:
    material = dnssec.generate_material()
    assert dnssec.public_info(ZONE, material) == dnssec.public_info(ZONE, material)
    assert dnssec.public_info(ZONE, material)["ds"][0].startswith(f"{ZONE}. IN DS ")


# --------------------------------------------------------------------------- the Pulumi path


def signed_topology() -> Any:
    from bind9_topology.config.topology import load_topology

    return load_topology(signed_raw(), stack="test", project_dir=PROJECT,
                         tsig_secret=new_secret())


@pytest.mark.unit
def test_components_register_keys_secret_init_container_and_ds_output() -> None:
    from components.preview import CaptureMocks, kubernetes_objects, run_components

    mocks = run_components(signed_topology(), mocks=CaptureMocks(stack="test"))
    keys = [r for r in mocks.resources if r.type.endswith("bind9:DnssecKeys")]
    assert [r.inputs["zoneName"] for r in keys] == [ZONE]
    objs = kubernetes_objects(mocks)
    secrets = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "Secret"}
    assert "primary-dns-dnssec" in secrets and "sec-a-dnssec" not in secrets
    names = set(secrets["primary-dns-dnssec"]["stringData"])
    assert len(names) == 4 and all("+" not in n and n.startswith(f"K{ZONE}._013_")
                                   for n in names)
    deps = {o["metadata"]["name"]: o for o in objs if o.get("kind") == "Deployment"}
    pod = deps["primary-dns"]["spec"]["template"]["spec"]
    zones, init = pod["initContainers"]  # the zones copy (for the agent), then the keys
    assert zones["name"] == "zones" and init["name"] == "dnssec-keys"
    assert init["image"] == pod["containers"][0]["image"]
    assert init["securityContext"] == pod["containers"][0]["securityContext"]
    assert {"name": "dnssec-keys", "secret": {"secretName": "primary-dns-dnssec",
                                              "defaultMode": 0o440}} in pod["volumes"]
    tags = deps["primary-dns"]["spec"]["template"]["metadata"]["annotations"][
        "bind9-topology/dnssec-key-tags"]
    assert tags.startswith(f"{ZONE}:") and "/" in tags
    for name in ("sec-a", "sec-b"):  # no keys: only the wait for a path to the primaries
        assert [c["name"] for c in deps[name]["spec"]["template"]["spec"]["initContainers"]] == [
            "wait-primaries"]
    (gate,) = [r for r in mocks.resources if r.type.endswith("bind9:TransferGate")]
    assert "expectedDs" in gate.inputs["zones"][ZONE]


@pytest.mark.unit
def test_init_script_copies_keys_renamed_and_links_the_zone(tmp_path: Path) -> None:
    """The init container's script, run with its absolute paths moved under tmp_path."""
    from bind9_topology.render.manifests import DNSSEC_KEYS_MOUNT, dnssec_init_container

    topo = signed_topology()
    inst = next(i for i in topo.spec.instances if i.name == "primary-dns")
    material = dnssec.generate_material()
    rendered = render_instance(topo.spec, inst, topo.contents, {ZONE: 1}, Placement(),
                               new_secret(), {ZONE: material})
    script = dnssec_init_container(rendered, {"image": "x", "imagePullPolicy": "x",
                                              "securityContext": {}})["command"][2]
    script = script.replace(" /", f" {tmp_path}/")
    mount = Path(f"{tmp_path}{DNSSEC_KEYS_MOUNT}")
    mount.mkdir(parents=True)
    for name, data in dnssec.secret_files(ZONE, material).items():
        (mount / dnssec.secret_key(name)).write_bytes(data)
    subprocess.run(["/bin/sh", "-c", script], check=True)
    keys = tmp_path / dnssec.KEY_DIR
    assert sorted(p.name for p in keys.iterdir()) == sorted(dnssec.secret_files(ZONE, material))
    link = tmp_path / dnssec.SIGNED_DIR / f"db.{ZONE}"
    assert link.is_symlink() and str(link.readlink()).endswith(f"var/lib/bind/zones/db.{ZONE}")


# --------------------------------------------------------------------------- the local runner


@pytest.mark.bind
def test_local_runner_signs_with_kept_keys(tmp_path: Path) -> None:
    """`local up` on a copy of the project with example.com signed: the gate (which checks
    DNSKEY and signatures against the DS) passes on the primary and every secondary of
    prod and the region stacks; a second `up` after `down` serves the same key tags."""
    import json

    import yaml

    from tests.test_local import PROD_STACKS, local_project, run

    with local_project(tmp_path, PROD_STACKS) as project:
        prod = yaml.safe_load((project / "Pulumi.prod.yaml").read_text())
        zone = next(z for z in prod["config"]["bind9-topology:zones"]
                    if z["zoneName"] == ZONE and z["type"] == "primary")
        zone["dnssec"] = {"policy": POLICY}
        (project / "Pulumi.prod.yaml").write_text(yaml.safe_dump(prod, sort_keys=False))
        tags = []
        for _ in range(2):
            result = run(project, "local", "up", "--all", "--json", "--timeout", "90")
            assert result.returncode == 0, result.stdout + result.stderr
            state = json.loads((project / ".local-run/state.json").read_text())
            primary = next(s for s in state["servers"].values()
                           if s["stack"] == "prod" and s["role"] == "primary")
            tags.append(dnssec.served_key_tags(Endpoint(HOST, primary["port"]), ZONE))
            material = json.loads((project / f".local-run/dnssec/{ZONE}.json").read_text())
            ds = dnssec.public_info(ZONE, material)["ds"]
            for server in state["servers"].values():
                ok, detail = dnssec.check_signed(Endpoint(HOST, server["port"]), ZONE, ds)
                assert ok, f"{server['stack']}/{server['instance']}: {detail}"
            assert (project / f".local-run/dnssec/{ZONE}.json").stat().st_mode & 0o077 == 0
            down = run(project, "local", "down", timeout=30)
            assert down.returncode == 0, down.stderr
        assert tags[0] == tags[1] == set(dnssec.public_info(ZONE, material)["keyTags"].values())


@pytest.mark.unit
def test_local_runner_stack_adopts_the_runners_keys() -> None:
    """A gate.localRunner stack's servers are the runner's, signing with the runner's keys:
    DnssecKeys adopts them (topology.dnssec_material), so the DS the gate expects and the
    stack outputs is the one those servers serve."""
    from dataclasses import replace

    from components.preview import CaptureMocks, run_components

    material = dnssec.generate_material()
    topo = replace(signed_topology(), dnssec_material={ZONE: material})
    mocks = run_components(topo, mocks=CaptureMocks(stack="test"))
    (gate,) = [r for r in mocks.resources if r.type.endswith("bind9:TransferGate")]
    expected = dnssec.public_info(ZONE, material)["ds"]
    assert gate.inputs["zones"][ZONE]["expectedDs"] == expected
