"""Every rendered named.conf passes the real named-checkconf, every zone file the
real named-checkzone: for every stack, every instance, and a zone big enough to
be split with $INCLUDE.

The files are rendered with a root-prefixed Placement into tmp_path, so every
path in named.conf points inside the test's directory.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import BIG_ZONE_NAME, BIG_ZONE_RECORDS, FIXED_SERIAL, PROJECT_DIR, new_secret

from bind9_topology.config.model import TopologyError
from bind9_topology.config.topology import Topology, list_stacks, load_topology, read_stack_file
from bind9_topology.render.bind_files import (
    ZONE_DIR,
    Placement,
    RenderedInstance,
    render_instance,
    write_tree,
)

pytestmark = pytest.mark.config

INSTALL_HINT = "install them with: apt-get install bind9 bind9-utils"


def find_tool(name: str) -> str:
    """The binary's path; FAIL (never skip) when it is missing."""
    found = shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin", "/usr/local/sbin")
         if (p := Path(d) / name).is_file()),
        None,
    )
    if found is None:
        pytest.fail(f"{name} is not installed; the config tests need the real BIND tools: "
                    f"{INSTALL_HINT}", pytrace=False)
    return found


@pytest.fixture(scope="session")
def checkconf() -> str:
    return find_tool("named-checkconf")


@pytest.fixture(scope="session")
def checkzone() -> str:
    return find_tool("named-checkzone")


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def assert_ok(proc: subprocess.CompletedProcess[str], what: str) -> None:
    assert proc.returncode == 0, (
        f"{what} failed (exit {proc.returncode}): {' '.join(proc.args)}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )


def placement(root: Path) -> Placement:
    return Placement(root=str(root), port=5353, listen_v4="127.0.0.1", listen_v6="none")


def render_to(topo: Topology, name: str, root: Path) -> RenderedInstance:
    instance = next(i for i in topo.spec.instances if i.name == name)
    rendered = render_instance(
        topo.spec, instance, topo.contents, dict.fromkeys(topo.contents, FIXED_SERIAL),
        placement(root), topo.tsig_secret,
    )
    write_tree(rendered, root, include_secrets=True)
    return rendered


def check_instance(rendered: RenderedInstance, root: Path, checkconf: str, checkzone: str) -> None:
    conf = root / "etc/bind/named.conf"
    proc = run([checkconf, "-z", str(conf)])
    assert_ok(proc, f"named-checkconf of {rendered.instance.name}")
    # the zones whose data this instance carries (a secondary carries none: it transfers)
    primary_zones = [z for z in rendered.zones if f"{ZONE_DIR}/db.{z}" in rendered.zone_files]
    for zone in primary_zones:
        # -z loads every primary zone: each must say so, with the serial we rendered
        assert f"zone {zone}/IN: loaded serial {FIXED_SERIAL}" in proc.stdout, proc.stdout
        zone_file = root / ZONE_DIR / f"db.{zone}"
        zproc = run([checkzone, zone, str(zone_file)])
        assert_ok(zproc, f"named-checkzone {zone}")
        assert f"loaded serial {FIXED_SERIAL}" in zproc.stdout, zproc.stdout
    if rendered.instance.role == "secondary":
        assert not primary_zones and rendered.zones, rendered.zones


def _cases() -> list[tuple[str, str]]:
    """(stack, instance) for every instance of every stack, read at collection time."""
    cases = []
    for stack in list_stacks(PROJECT_DIR):
        try:
            topo = load_topology(read_stack_file(PROJECT_DIR, stack), stack=stack,
                                 project_dir=PROJECT_DIR, tsig_secret=None,
                                 secret_required=False)
        except TopologyError:
            cases.append((stack, "<invalid stack>"))  # the test shows the issues
            continue
        cases += [(stack, inst.name) for inst in topo.spec.instances]
    return cases


def test_every_stack_has_instances():
    stacks = list_stacks(PROJECT_DIR)
    assert {"prod", "prod-eu-west-1", "prod-us-west-2"} <= set(stacks), stacks
    assert {s for s, _ in _cases()} == set(stacks)


@pytest.mark.parametrize(("stack", "instance"), _cases(), ids=lambda v: str(v))
def test_rendered_config_passes_named_checkconf_and_checkzone(
    stack, instance, tmp_path, checkconf, checkzone
):
    topo = load_topology(read_stack_file(PROJECT_DIR, stack), stack=stack,
                         project_dir=PROJECT_DIR, tsig_secret=new_secret())
    rendered = render_to(topo, instance, tmp_path)
    check_instance(rendered, tmp_path, checkconf, checkzone)


def test_named_checkconf_catches_a_broken_config(tmp_path, checkconf, project_dir, tsig_secret):
    """The check has teeth: a config BIND would refuse fails it."""
    topo = load_topology(read_stack_file(project_dir, "prod"), stack="prod",
                         project_dir=project_dir, tsig_secret=tsig_secret)
    render_to(topo, "primary-dns", tmp_path)
    conf = tmp_path / "etc/bind/named.conf"
    conf.write_text(conf.read_text().replace("recursion no;", "recursion maybe;"))
    assert run([checkconf, "-z", str(conf)]).returncode != 0


def test_named_checkzone_catches_a_broken_zone(tmp_path, checkzone, project_dir, tsig_secret):
    topo = load_topology(read_stack_file(project_dir, "prod"), stack="prod",
                         project_dir=project_dir, tsig_secret=tsig_secret)
    render_to(topo, "primary-dns", tmp_path)
    zone_file = tmp_path / ZONE_DIR / "db.example.com"
    zone_file.write_text(zone_file.read_text().replace("IN NS ns1\n", "IN NS\n"))
    assert run([checkzone, "example.com", str(zone_file)]).returncode != 0


def test_big_split_zone_passes_named_checkzone(big_topology, tmp_path, checkconf, checkzone):
    primary = next(i for i in big_topology.spec.instances if i.role == "primary")
    rendered = render_to(big_topology, primary.name, tmp_path)
    main_file = tmp_path / ZONE_DIR / f"db.{BIG_ZONE_NAME}"
    assert "$INCLUDE" in main_file.read_text(), "the big zone was not split"
    check_instance(rendered, tmp_path, checkconf, checkzone)

    # every record came through the $INCLUDEs: dump the loaded zone and count
    dump = tmp_path / "dump.db"
    proc = run([checkzone, "-D", "-o", str(dump), BIG_ZONE_NAME, str(main_file)])
    assert_ok(proc, "named-checkzone -D of the big zone")
    aaaa = sum(1 for line in dump.read_text().splitlines() if line.split()[3:4] == ["AAAA"])
    assert aaaa == BIG_ZONE_RECORDS, f"{aaaa} AAAA records loaded, {BIG_ZONE_RECORDS} rendered"
