"""Catalog zones (RFC 9432, version 2): Pulumi.catalog.yaml serves a generated catalog,
Pulumi.catalog-region.yaml's secondaries follow it.

unit:   the catalog's content (version, stable labels, .ext properties), the region's
        named.conf (catalog-zones with default-primaries and the key, no member entries),
        the gate plans, validation with path-named errors.
config: named-checkconf/named-checkzone of both sides, with advertisePrimaries too.
bind:   the local runner on a copy of the two stacks: a zone added to the primary stack
        only is served by the region secondaries; removed, it is gone (zone and file); a
        secondary holding another key serves no member.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.name
import pytest
import yaml
from conftest import FIXED_SERIAL, PROJECT_DIR, new_secret

from bind9_topology.config.catalog import member_label
from bind9_topology.config.model import TopologyError
from bind9_topology.config.topology import Topology, load_topology, read_stack_file
from bind9_topology.dns.gate import gate_plans
from bind9_topology.local.runner import load_state, pid_alive
from bind9_topology.render.bind_files import Placement, render_instance, write_tree
from tests.test_local import local_project, run

PRIMARY, REGION = "catalog", "catalog-region"
CATALOG = "catalog.invalid"


def load(raw: dict[str, Any], stack: str, project: Path = PROJECT_DIR,
         secret: str | None = None) -> Topology:
    return load_topology(raw, stack=stack, project_dir=project,
                         tsig_secret=secret or new_secret())


def raw_of(stack: str) -> dict[str, Any]:
    return copy.deepcopy(dict(read_stack_file(PROJECT_DIR, stack)))


def problems(raw: dict[str, Any], stack: str, project: Path = PROJECT_DIR) -> list[str]:
    with pytest.raises(TopologyError) as info:
        load(raw, stack, project)
    return [str(i) for i in info.value.issues]


def conf_of(topo: Topology, instance: str, placement: Placement | None = None,
            secret: str | None = None) -> str:
    inst = next(i for i in topo.spec.instances if i.name == instance)
    rendered = render_instance(topo.spec, inst, topo.contents,
                               dict.fromkeys(topo.contents, FIXED_SERIAL),
                               placement or Placement(), secret)
    return rendered.config_files["etc/bind/named.conf"].decode()


# --------------------------------------------------------------------------- unit


@pytest.mark.unit
def test_catalog_zone_is_version_2_with_a_stable_label_per_member() -> None:
    topo = load(raw_of(PRIMARY), PRIMARY)
    text = topo.contents[CATALOG].text(FIXED_SERIAL)
    assert 'version 3600 IN TXT "2"' in text
    assert "@ 3600 IN NS invalid." in text
    for member in ("catalog.example", "catalog.test"):
        label = member_label(member)
        # the RFC 9432 example's form: SHA-1 of the member's wire-format name
        import hashlib
        assert label == hashlib.sha1(dns.name.from_text(member).to_wire()).hexdigest()
        assert f"{label}.zones 3600 IN PTR {member}." in text
    assert "primaries.ext" not in text  # advertisePrimaries is opt-in
    # a re-render (a fresh load) changes nothing: same bytes, same content hash
    again = load(raw_of(PRIMARY), PRIMARY)
    assert again.contents[CATALOG].text(FIXED_SERIAL) == text
    assert again.contents[CATALOG].content_hash == topo.contents[CATALOG].content_hash
    # the catalog is a primary zone of the stack like any other, served by the primary
    zone = next(z for z in topo.spec.zones if z.zoneName == CATALOG)
    assert zone.type == "primary" and zone.alsoNotify == ["10.8.1.20", "10.8.1.21"]
    conf = conf_of(topo, "catalog-primary")
    assert f'zone "{CATALOG}"' in conf and "catalog-zones" not in conf


@pytest.mark.unit
def test_adding_a_member_changes_the_catalog_but_not_the_other_labels() -> None:
    raw = raw_of(PRIMARY)
    before = load(raw, PRIMARY).contents[CATALOG]
    added = copy.deepcopy(raw["zones"][1])
    added["zoneName"] = "added.example"
    added.pop("recordsFile")
    added["records"] = [{"name": "@", "type": "NS", "data": "ns1.catalog.example."}]
    raw["zones"].append(added)
    after = load(raw, PRIMARY).contents[CATALOG]
    assert after.content_hash != before.content_hash
    new_lines = set(after.body.splitlines()) - set(before.body.splitlines())
    assert new_lines == {f"{member_label('added.example')}.zones 3600 IN PTR added.example."}


@pytest.mark.unit
def test_advertise_primaries_writes_primaries_ext_with_the_key_name() -> None:
    raw = raw_of(PRIMARY)
    raw["catalog"] = {**raw["catalog"], "advertisePrimaries": True}
    text = load(raw, PRIMARY).contents[CATALOG].text(FIXED_SERIAL)
    assert "catalog-primary.primaries.ext 3600 IN A 10.8.0.10" in text
    assert 'catalog-primary.primaries.ext 3600 IN TXT "transfer-key"' in text


@pytest.mark.unit
def test_members_can_be_chosen() -> None:
    raw = raw_of(PRIMARY)
    raw["catalog"] = {**raw["catalog"], "members": ["catalog.test"]}
    text = load(raw, PRIMARY).contents[CATALOG].body
    assert "PTR catalog.test." in text and "PTR catalog.example." not in text


@pytest.mark.unit
def test_region_secondaries_configure_catalog_zones_and_no_member_entries() -> None:
    topo = load(raw_of(REGION), REGION)
    conf = conf_of(topo, "catalog-secondary-a")
    assert "catalog-zones {" in conf
    assert (f'zone "{CATALOG}"\n            default-primaries {{ 10.8.0.10 port 53 key '
            "transfer-key; }") in conf
    # the catalog itself is a secondary zone; member zones are never listed
    assert f'zone "{CATALOG}" {{\n    type secondary;' in conf
    assert conf.count("\nzone ") == 1
    assert "catalog.example" not in conf
    # member zones allow transfers to the key only, so the gate proves their content
    assert "allow-transfer { key transfer-key; };" in conf.split("controls")[0]
    # the local placement maps the primaries' address to the local server with its port
    local = conf_of(topo, "catalog-secondary-a",
                    Placement(root="/r", port=15999,
                              address_map={("10.8.0.10", 53): ("127.0.0.1", 15301)}))
    assert "default-primaries { 127.0.0.1 port 15301 key transfer-key; }" in local
    assert 'zone-directory "/r/var/lib/bind/zones"' in local


@pytest.mark.unit
def test_gate_checks_every_also_notify_secondary_for_each_member() -> None:
    plans = {p.zone: p for p in gate_plans(load(raw_of(PRIMARY), PRIMARY).spec)}
    assert set(plans) == {"catalog.example", "catalog.test", CATALOG}
    for plan in plans.values():
        assert [a for _, a in plan.secondaries] == ["10.8.1.20", "10.8.1.21"]
    raw = raw_of(PRIMARY)
    raw["catalog"] = {**raw["catalog"], "verifySecondaries": False}
    assert all(not p.secondaries for p in gate_plans(load(raw, PRIMARY).spec))


@pytest.mark.unit
def test_catalog_name_colliding_with_a_zone_is_named() -> None:
    raw = raw_of(PRIMARY)
    raw["catalog"] = {"zoneName": "catalog.test"}
    found = problems(raw, PRIMARY)
    assert any(p.startswith("bind9-topology:catalog.zoneName: catalog.test is also a zone")
               for p in found), found


@pytest.mark.unit
def test_unknown_member_and_bad_shapes_are_named() -> None:
    raw = raw_of(PRIMARY)
    raw["catalog"] = {"zoneName": CATALOG, "members": ["nope.example"], "sizes": 1}
    found = problems(raw, PRIMARY)
    assert any(p.startswith("bind9-topology:catalog.sizes: unknown key") for p in found), found
    raw["catalog"] = {"zoneName": CATALOG, "members": ["nope.example"]}
    found = problems(raw, PRIMARY)
    assert any(p.startswith("bind9-topology:catalog.members[0]: nope.example is not a primary")
               for p in found), found


@pytest.mark.unit
def test_region_errors_are_named() -> None:
    raw = raw_of(REGION)
    raw["catalogs"] = [{"zoneName": CATALOG, "primaryServers": ["10.8.0.10"],
                        "instanceSelector": {"matchLabels": {"region": "catalog-west"}}},
                       {"zoneName": CATALOG, "primaryServers": ["10.8.0.10"]},
                       {"zoneName": "other.invalid", "primaryServers": []}]
    raw["instances"].append({"name": "oops-primary", "role": "primary",
                             "labels": {"region": "catalog-west"}})
    raw["zones"] = [{"zoneName": "other.invalid", "type": "secondary",
                     "instanceSelector": {"matchLabels": {"dns-role": "secondary"}},
                     "secondaryConfig": {"primaryServers": ["10.8.0.10"]}}]
    found = problems(raw, REGION)
    expected = [
        "bind9-topology:catalogs[0].instanceSelector: selects primary instance 'oops-primary'",
        f"bind9-topology:catalogs[1].zoneName: {CATALOG} is listed twice",
        "bind9-topology:catalogs[2].primaryServers: a catalog needs the IPs",
        "bind9-topology:catalogs[2].zoneName: other.invalid is also a zone of this stack",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in found), (prefix, found)


@pytest.mark.unit
def test_region_listing_a_member_as_secondary_entry_is_named(tmp_path: Path) -> None:
    """The catalog's producer is another stack file of the project: its members are known."""
    for name in ("Pulumi.yaml", "Pulumi.catalog.yaml", "Pulumi.catalog-region.yaml"):
        shutil.copy(PROJECT_DIR / name, tmp_path / name)
    shutil.copytree(PROJECT_DIR / "configs", tmp_path / "configs")
    raw = raw_of(REGION)
    raw["zones"] = [{"zoneName": "catalog.example", "type": "secondary",
                     "instanceSelector": {"matchLabels": {"dns-role": "secondary"}},
                     "secondaryConfig": {"primaryServers": ["10.8.0.10"]}}]
    found = problems(raw, REGION, tmp_path)
    assert any(p.startswith(
        "bind9-topology:zones[0]: catalog.example is a member of catalog catalog.invalid "
        "(Pulumi.catalog.yaml), which bind9-topology:catalogs[0] configures on "
        "catalog-secondary-a, catalog-secondary-b") for p in found), found

    # the same within one stack that both produces and consumes the catalog
    both = raw_of(PRIMARY)
    both["instances"].append({"name": "local-secondary", "role": "secondary"})
    both["catalogs"] = [{"zoneName": CATALOG, "primaryServers": ["10.8.0.10"]}]
    ok = load(copy.deepcopy(both), PRIMARY)
    assert {z.zoneName for z in ok.spec.zones if z.type == "secondary"} == {CATALOG}
    both["zones"].append({"zoneName": "catalog.test", "type": "secondary",
                          "instanceSelector": {"matchLabels": {"dns-role": "secondary"}},
                          "secondaryConfig": {"primaryServers": ["10.8.0.10"]}})
    found = problems(both, PRIMARY)
    assert any("catalog.test is a member of catalog catalog.invalid "
               "(bind9-topology:catalog of this stack)" in p for p in found), found


# --------------------------------------------------------------------------- config


def _tool(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin") if (p := Path(d) / name).is_file()), None)
    if found is None:
        pytest.fail(f"{name} is not installed: apt-get install bind9 bind9-utils",
                    pytrace=False)
    return found


@pytest.mark.config
@pytest.mark.parametrize("advertise", [False, True])
def test_named_checkconf_and_checkzone_on_both_sides(tmp_path: Path, advertise: bool) -> None:
    raw = raw_of(PRIMARY)
    raw["catalog"] = {**raw["catalog"], "advertisePrimaries": advertise}
    secret = new_secret()
    for stack, instance, topo in (
            (PRIMARY, "catalog-primary", load(raw, PRIMARY, secret=secret)),
            (REGION, "catalog-secondary-a", load(raw_of(REGION), REGION, secret=secret))):
        root = tmp_path / stack
        inst = next(i for i in topo.spec.instances if i.name == instance)
        rendered = render_instance(
            topo.spec, inst, topo.contents, dict.fromkeys(topo.contents, FIXED_SERIAL),
            Placement(root=str(root), port=5353, listen_v4="127.0.0.1", listen_v6="none"),
            secret)
        write_tree(rendered, root, include_secrets=True)
        proc = subprocess.run([_tool("named-checkconf"), "-z", str(root / "etc/bind/named.conf")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    zone_file = tmp_path / PRIMARY / "var/lib/bind/zones" / f"db.{CATALOG}"
    proc = subprocess.run([_tool("named-checkzone"), CATALOG, str(zone_file)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- bind


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    with local_project(tmp_path, ["Pulumi.catalog.yaml", "Pulumi.catalog-region.yaml"]) as dest:
        yield dest


def _port_of(project: Path, instance: str) -> int:
    info = next(i for i in load_state(project)["servers"].values() if i["instance"] == instance)
    assert pid_alive(info["pid"])
    return int(info["port"])


def _status(port: int, zone: str, name: str | None = None) -> tuple[str, list[str]]:
    import dns.message
    import dns.query
    import dns.rcode

    query = dns.message.make_query(name or zone, "SOA" if name is None else "A")
    query.flags &= ~dns.flags.RD
    try:
        answer = dns.query.udp(query, "127.0.0.1", port=port, timeout=1)
    except Exception as exc:
        return f"error {exc}", []
    return dns.rcode.to_text(answer.rcode()), [r.to_text() for r in answer.answer]


def _wait(predicate: Any, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


ADDED = {
    "zoneName": "added.example", "type": "primary",
    "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
    "soaRecord": {"primaryNs": "ns1.catalog.example.", "adminEmail": "hostmaster@catalog.example"},
    "ttl": 300,
    "records": [{"name": "@", "type": "NS", "data": "ns1.catalog.example."},
                {"name": "www", "type": "A", "data": "192.0.2.99"}],
    "alsoNotify": ["10.8.1.20", "10.8.1.21"],
}


def _edit_primary_stack(project: Path, add: bool) -> None:
    path = project / "Pulumi.catalog.yaml"
    doc = yaml.safe_load(path.read_text())
    zones = [z for z in doc["config"]["bind9-topology:zones"] if z["zoneName"] != "added.example"]
    if add:
        zones.append(ADDED)
    doc["config"]["bind9-topology:zones"] = zones
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.mark.bind
def test_a_zone_added_to_the_primary_stack_only_reaches_the_region_and_leaves_again(
        project: Path) -> None:
    region_file = (project / "Pulumi.catalog-region.yaml").read_bytes()
    first = run(project, "local", "up", "--all", "--timeout", "60")
    assert first.returncode == 0, first.stdout + first.stderr
    ports = [_port_of(project, n) for n in ("catalog-secondary-a", "catalog-secondary-b")]
    for port in ports:
        assert _status(port, "catalog.example")[0] == "NOERROR"
        assert _status(port, "added.example")[0] == "REFUSED"

    # add a zone to the primary stack only, and run the runner for that stack only
    _edit_primary_stack(project, add=True)
    added = run(project, "local", "up", "--stack", PRIMARY, "--timeout", "60")
    assert added.returncode == 0, added.stdout + added.stderr
    assert "not running" not in added.stderr  # the region's servers run: nothing to say
    # the primary stack's gate checked the region secondaries for the new member
    rows = [line for line in added.stdout.splitlines() if " added.example " in line]
    assert {line.split()[0] for line in rows} == {
        "catalog-primary", "catalog-secondary-a", "catalog-secondary-b"}, added.stdout
    assert all(" ready " in line for line in rows), added.stdout
    for port in ports:
        assert _status(port, "added.example", "www.added.example") == (
            "NOERROR", ["www.added.example. 300 IN A 192.0.2.99"])
    assert (project / "Pulumi.catalog-region.yaml").read_bytes() == region_file
    member_files = list((project / ".local-run/catalog-region").glob(
        "*/var/lib/bind/zones/__catz__*added.example.db"))
    assert len(member_files) == 2

    # remove it from the primary stack: the secondaries delete the zone and its file
    _edit_primary_stack(project, add=False)
    removed = run(project, "local", "up", "--stack", PRIMARY, "--timeout", "60")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    for port in ports:
        assert _wait(lambda port=port: _status(port, "added.example")[0] == "REFUSED"), \
            _status(port, "added.example")
        assert _status(port, "catalog.example")[0] == "NOERROR"
    assert _wait(lambda: not any(f.exists() for f in member_files)), member_files
    log = (project / ".local-run/catalog-region/catalog-secondary-a/named.log").read_text()
    assert "catz: deleting zone 'added.example' from catalog 'catalog.invalid'" in log


@pytest.mark.bind
def test_a_catalog_with_a_wrong_key_is_refused(project: Path, tmp_path: Path) -> None:
    """A secondary holding another secret cannot transfer the catalog: it serves no member,
    and the gate names the TSIG failure."""
    from bind9_topology.dns.checks import Endpoint, make_tsig_key
    from bind9_topology.dns.gate import TSIG_REASONS, wait_until_transferred
    from bind9_topology.local.named_process import NamedProcess, free_port
    from bind9_topology.local.runner import tsig_secret

    up = run(project, "local", "up", "--stack", PRIMARY, "--timeout", "10")
    # the primary stack's gate fails for the region (not started), the primary serves
    assert "catalog-primary" in up.stdout, up.stdout + up.stderr
    primary_port = _port_of(project, "catalog-primary")
    assert _status(primary_port, CATALOG)[0] == "NOERROR"

    wrong = new_secret()
    topo = load(raw_of(REGION), REGION, project, secret=wrong)
    inst = next(i for i in topo.spec.instances if i.name == "catalog-secondary-a")
    root, port = tmp_path / "wrong-key", free_port()
    rendered = render_instance(
        topo.spec, inst, topo.contents, {},
        Placement(root=str(root), port=port, listen_v4="127.0.0.1", listen_v6="none",
                  address_map={("10.8.0.10", 53): ("127.0.0.1", primary_port)}), wrong)
    write_tree(rendered, root, include_secrets=True)
    proc = NamedProcess(name="wrong-key")
    proc.start(root / "etc/bind/named.conf", root, root / "named.log")
    try:
        proc.wait_ready(("127.0.0.1", port), timeout=15)
        # the primary refuses the catalog transfer (the request's signature does not verify)
        proc.wait_for_log(r"catalog\.invalid.*(BADSIG|BADKEY|tsig|TSIG|failed)", timeout=20)
        assert _status(port, CATALOG)[0] == "SERVFAIL"
        for member in ("catalog.example", "catalog.test"):
            assert _status(port, member)[0] == "REFUSED"
        assert not list((root / "var/lib/bind/zones").glob("__catz__*"))
        report = wait_until_transferred(
            CATALOG, [Endpoint("127.0.0.1", primary_port, "catalog-primary")],
            [Endpoint("127.0.0.1", port, "catalog-secondary-a")], None, None,
            make_tsig_key("transfer-key", "hmac-sha256", tsig_secret(project)), 10, 0.1)
        assert not report.ok
        assert report.lagging()[0].reason in TSIG_REASONS, report.message
    finally:
        proc.stop()


@pytest.mark.unit
def test_catalogs_take_primaries_from_primary_stack(tmp_path: Path) -> None:
    """With primaryStack, a catalog needs no primaryServers: the primary stack's outputs
    (read from its stack file here) give the catalog zone's primaries and default-primaries."""
    from bind9_topology.config.topology import resolve_offline

    for name in ("Pulumi.yaml", "Pulumi.catalog.yaml"):
        shutil.copy(PROJECT_DIR / name, tmp_path / name)
    shutil.copytree(PROJECT_DIR / "configs", tmp_path / "configs")
    raw = raw_of(REGION)
    raw["primaryStack"] = PRIMARY
    raw["catalogs"] = [{"zoneName": CATALOG}]
    topo = resolve_offline(load(raw, REGION, tmp_path), tmp_path)
    conf = conf_of(topo, "catalog-secondary-b")
    assert "default-primaries { 10.8.0.10 port 53 key transfer-key; }" in conf
    # without primaryStack, primaryServers is required (named by path)
    raw = raw_of(REGION)
    raw["catalogs"] = [{"zoneName": CATALOG}]
    assert any(p.startswith("bind9-topology:catalogs[0].primaryServers: a catalog needs")
               for p in problems(raw, REGION))


@pytest.mark.bind
def test_up_of_the_primary_stack_alone_names_the_absent_secondaries_at_once(
        project: Path) -> None:
    """`local up --stack catalog` alone: the gate checks the catalog's alsoNotify secondaries,
    which belong to catalog-region and do not run. It says so at once (not only when its
    deadline ends), naming those servers and the command that starts them."""
    import os
    import sys
    import threading

    from tests.test_local import PROJECT

    env = {k: v for k, v in os.environ.items() if k != "BIND9_TSIG_SECRET"}
    env["PYTHONPATH"] = str(PROJECT)
    timeout = 20.0
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "components", "--project", str(project), "local", "up",
         "--stack", PRIMARY, "--once", "--timeout", str(timeout)],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            said.append((time.monotonic() - started, line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc.wait(timeout=timeout + 60)
    reader.join(timeout=10)
    ended = time.monotonic() - started
    assert proc.returncode == 1  # the secondaries never answered
    at, message = next(((t, line) for t, line in said if "which the runner is not running"
                        in line), (None, "".join(line for _, line in said)))
    assert at is not None, message
    assert at < 8 and at < ended - 10, (at, ended)  # at once, well before the deadline
    assert "catalog-region/catalog-secondary-a (10.8.1.20)" in message
    assert "catalog-region/catalog-secondary-b (10.8.1.21)" in message
    assert "`python -m components local up --stack catalog-region`" in message
    assert "catalog.verifySecondaries: false" in message
