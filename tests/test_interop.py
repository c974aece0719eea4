"""Interop with other authoritative servers, on loopback: Knot DNS and NSD.

- Knot as an external primary (`secondaryConfig.primaryServers`): the product's
  BIND secondary transfers from it with TSIG, follows its NOTIFY, and the gate
  proves both (direct probes: Knot is not an instance of the stack).
- NSD as a secondary of the product's BIND primary (`alsoNotify`): it transfers
  with TSIG, and the gate proves its content by a TSIG AXFR digest, before and
  after a change.

Everything BIND runs is rendered by the product (load_topology -> render_instance
-> write_tree). Each server runs in the foreground in the test's own directory, is
stopped by pid, and every wait is bounded.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
import pytest

from bind9_topology.config.digest import zone_digest_from_text
from bind9_topology.config.topology import Topology, load_topology
from bind9_topology.dns.checks import Endpoint, make_tsig_key
from bind9_topology.dns.gate import wait_until_transferred
from bind9_topology.local.named_process import NamedProcess, free_port
from bind9_topology.render.bind_files import Placement, render_instance, write_tree

pytestmark = pytest.mark.bind

HOST = "127.0.0.1"
PROJECT = Path(__file__).resolve().parent.parent
KEY = "transfer-key"


def _need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists()
                                    else None)
    if path is None:
        pytest.fail(f"{binary} is not installed: bash scripts/install-deps.sh installs it")
    return path


class Server:
    """A foreground process in its own directory, stopped by pid."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                     env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def servers() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for server in reversed(started):
        server.stop()


def _soa_serial(port: int, zone: str) -> int | None:
    query = dns.message.make_query(zone, dns.rdatatype.SOA)
    try:
        answer = dns.query.udp(query, HOST, port=port, timeout=1)
    except Exception:
        return None
    return answer.answer[0][0].serial if answer.answer else None


def _a_records(port: int, name: str) -> set[str]:
    answer = dns.query.udp(dns.message.make_query(name, dns.rdatatype.A), HOST, port=port,
                           timeout=2)
    return {rr.to_text() for rrset in answer.answer for rr in rrset}


def _wait_answering(port: int, zone: str, server: Any, what: str) -> None:
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _soa_serial(port, zone) is not None:
            return
        if server.proc.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail(f"{what} did not answer for {zone}:\n{server.log.read_text()[-3000:]}")


def _bind(tmp: Path, raw: dict[str, Any], name: str, port: int, secret: str,
          serials: dict[str, int], address_map: dict[tuple[str, int], tuple[str, int]],
          servers: list[Any]) -> tuple[Topology, NamedProcess]:
    topo = load_topology(raw, stack="interop", project_dir=PROJECT, tsig_secret=secret)
    inst = next(i for i in topo.spec.instances if i.name == name)
    placement = Placement(root=str(tmp / name), port=port, listen_v4=HOST, listen_v6="none",
                          notify_delay=0, address_map=address_map)
    rendered = render_instance(topo.spec, inst, topo.contents, serials, placement, secret)
    write_tree(rendered, tmp / name, include_secrets=True)
    proc = NamedProcess(name=name)
    proc.start(tmp / name / "etc/bind/named.conf", tmp / name, tmp / name / "named.log")
    servers.append(proc)
    return topo, proc


# --------------------------------------------------------------------------- Knot


KNOT_ZONE = "knot.example"


def _knot_zone(serial: int, www: str) -> str:
    return (f"$ORIGIN {KNOT_ZONE}.\n$TTL 300\n"
            f"@ SOA ns1 hostmaster {serial} 3600 600 1209600 300\n"
            "@ NS ns1\nns1 A 192.0.2.53\n"
            f"www A {www}\n")


def test_knot_primary_to_the_products_bind_secondary(tmp_path: Path, secret: str,
                                                     servers: list[Any]) -> None:
    knotd = _need("knotd")
    knot_port, bind_port = free_port(HOST), free_port(HOST)
    kdir = tmp_path / "knot"
    kdir.mkdir()
    (kdir / f"{KNOT_ZONE}.zone").write_text(_knot_zone(2026010100, "192.0.2.10"))
    (kdir / "knot.conf").write_text(
        f"server:\n    rundir: \"{kdir}\"\n    listen: {HOST}@{knot_port}\n"
        f"database:\n    storage: \"{kdir}\"\n"
        f"key:\n  - id: {KEY}\n    algorithm: hmac-sha256\n    secret: {secret}\n"
        f"remote:\n  - id: bind\n    address: {HOST}@{bind_port}\n    key: {KEY}\n"
        f"acl:\n  - id: xfr\n    address: 127.0.0.0/8\n    key: {KEY}\n    action: transfer\n"
        f"zone:\n  - domain: {KNOT_ZONE}\n    file: \"{kdir}/{KNOT_ZONE}.zone\"\n"
        "    acl: xfr\n    notify: bind\n    zonefile-sync: -1\n    journal-content: none\n")
    knot = Server([knotd, "-c", str(kdir / "knot.conf")], kdir / "knot.log")
    servers.append(knot)
    _wait_answering(knot_port, KNOT_ZONE, knot, "knotd")

    raw = {
        "region": "interop",
        "instances": [{"name": "bind-secondary", "role": "secondary"}],
        "zones": [{"zoneName": KNOT_ZONE, "type": "secondary",
                   "instanceSelector": {"matchLabels": {"dns-role": "secondary"}},
                   "secondaryConfig": {"primaryServers": [f"{HOST}:{knot_port}"]}}],
    }
    _, named = _bind(tmp_path, raw, "bind-secondary", bind_port, secret, {}, {}, servers)
    key = make_tsig_key(KEY, "hmac-sha256", secret)
    knot_ep, bind_ep = Endpoint(HOST, knot_port, "knot"), Endpoint(HOST, bind_port, "bind")

    report = wait_until_transferred(KNOT_ZONE, [knot_ep], [bind_ep], None, None, key, 30, 0.2)
    assert report.ok, report.message + "\n" + named.log_tail()
    assert report.target_serial == 2026010100
    assert _a_records(bind_port, f"www.{KNOT_ZONE}") == {"192.0.2.10"}

    # A change on Knot: its NOTIFY (signed) reaches the BIND secondary, which transfers.
    (kdir / f"{KNOT_ZONE}.zone").write_text(_knot_zone(2026010101, "192.0.2.11"))
    subprocess.run(["knotc", "-c", str(kdir / "knot.conf"), "zone-reload", KNOT_ZONE],
                   check=True, capture_output=True, timeout=30)
    report = wait_until_transferred(KNOT_ZONE, [knot_ep], [bind_ep], 2026010101, None, key,
                                    30, 0.2)
    assert report.ok, report.message + "\n" + named.log_tail()
    assert _a_records(bind_port, f"www.{KNOT_ZONE}") == {"192.0.2.11"}


# --------------------------------------------------------------------------- NSD


NSD_NOTIFY_ADDRESS = "10.0.9.53"  # the stack's name for the NSD secondary; mapped to loopback


def _primary_raw(www: str) -> dict[str, Any]:
    return {
        "region": "interop",
        "instances": [{"name": "bind-primary", "role": "primary"}],
        "zones": [{
            "zoneName": "example.com", "type": "primary",
            "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
            "soaRecord": {"primaryNs": "ns1.example.com.", "adminEmail": "hostmaster@example.com"},
            "alsoNotify": [NSD_NOTIFY_ADDRESS],
            "records": [{"name": "@", "type": "NS", "data": "ns1.example.com."},
                        {"name": "ns1", "type": "A", "data": "192.0.2.53"},
                        {"name": "www", "type": "A", "data": www}],
        }],
    }


def test_the_products_bind_primary_to_an_nsd_secondary(tmp_path: Path, secret: str,
                                                       servers: list[Any]) -> None:
    nsd = _need("nsd")
    bind_port, nsd_port = free_port(HOST), free_port(HOST)
    ndir = tmp_path / "nsd"
    ndir.mkdir()
    (ndir / "nsd.conf").write_text(
        f"server:\n    ip-address: {HOST}@{nsd_port}\n    port: {nsd_port}\n"
        f"    zonesdir: \"{ndir}\"\n    pidfile: \"{ndir}/nsd.pid\"\n"
        f"    xfrdfile: \"{ndir}/xfrd.state\"\n    zonelistfile: \"{ndir}/zone.list\"\n"
        f"    xfrdir: \"{ndir}\"\n    database: \"\"\n    username: \"\"\n    chroot: \"\"\n"
        "    server-count: 1\n    verbosity: 2\n"
        "remote-control:\n    control-enable: no\n"
        f"key:\n    name: {KEY}\n    algorithm: hmac-sha256\n    secret: \"{secret}\"\n"
        f"zone:\n    name: example.com\n    zonefile: \"example.com.zone\"\n"
        f"    request-xfr: AXFR {HOST}@{bind_port} {KEY}\n"
        f"    allow-notify: {HOST} {KEY}\n    provide-xfr: {HOST} {KEY}\n")

    amap = {(NSD_NOTIFY_ADDRESS, 53): (HOST, nsd_port)}
    serial = 2026010100
    topo, named = _bind(tmp_path, _primary_raw("192.0.2.10"), "bind-primary", bind_port,
                        secret, {"example.com": serial}, amap, servers)
    named.wait_ready((HOST, bind_port), ["example.com"], timeout=15)
    server = Server([nsd, "-d", "-c", str(ndir / "nsd.conf")], ndir / "nsd.log")
    servers.append(server)

    key = make_tsig_key(KEY, "hmac-sha256", secret)
    primary, secondary = Endpoint(HOST, bind_port, "bind"), Endpoint(HOST, nsd_port, "nsd")
    digest = zone_digest_from_text(topo.contents["example.com"].text(0), "example.com")
    report = wait_until_transferred("example.com", [primary], [secondary], serial, digest, key,
                                    30, 0.2)
    assert report.ok, report.message + "\n" + server.log.read_text()[-3000:]
    assert _a_records(nsd_port, "www.example.com") == {"192.0.2.10"}

    # A change: re-rendered, reloaded; the signed NOTIFY makes NSD transfer it.
    topo2 = load_topology(_primary_raw("192.0.2.11"), stack="interop", project_dir=PROJECT,
                          tsig_secret=secret)
    inst = topo2.spec.instances[0]
    placement = Placement(root=str(tmp_path / "bind-primary"), port=bind_port, listen_v4=HOST,
                          listen_v6="none", notify_delay=0, address_map=amap)
    rendered = render_instance(topo2.spec, inst, topo2.contents, {"example.com": serial + 1},
                               placement, secret)
    write_tree(rendered, tmp_path / "bind-primary", include_secrets=True)
    named.reload()
    digest2 = zone_digest_from_text(topo2.contents["example.com"].text(0), "example.com")
    report = wait_until_transferred("example.com", [primary], [secondary], serial + 1, digest2,
                                    key, 30, 0.2)
    assert report.ok, report.message + "\n" + server.log.read_text()[-3000:]
    assert _a_records(nsd_port, "www.example.com") == {"192.0.2.11"}
