"""dnscheck probes against REAL named processes on 127.0.0.1 (random ports).

A primary with a small zone (written with dnspython) and a TSIG key that is
required for transfers, and a secondary that transfers with that key. The
primary NOTIFYs the secondary (``notify explicit; also-notify``) and keeps
IXFR diffs for reloads from a changed file (``ixfr-from-differences yes``).
Every wait is a bounded loop; every named is stopped by pid in teardown.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import dns.name
import dns.rdata
import dns.tsig
import dns.zone
import pytest

from bind9_topology.config.digest import zone_digest, zone_digest_from_text
from bind9_topology.dns.checks import (
    Endpoint,
    Reason,
    SoaProbe,
    TransferProbe,
    XfrKind,
    axfr,
    ixfr,
    make_tsig_key,
    query_soa,
    verify_primary,
    verify_secondary,
)
from bind9_topology.dns.serials import serial_at_least, serial_compare
from bind9_topology.local.named_process import NamedProcess, NamedStartError, free_port

ZONE = "example.test"
SERIAL = 2024051700
KEY_NAME = "xfer-key"
ALG = "hmac-sha256"
HOST = "127.0.0.1"

T = TypeVar("T")


# No skip when named is missing: find_named() fails with the apt-get command to run.
bind = pytest.mark.bind


# ----------------------------------------------------------------------------
# zone and configuration


def zone_text(serial: int, *, extra: bool = False) -> str:
    """The test zone, built and written with dnspython."""
    origin = dns.name.from_text(ZONE)
    z = dns.zone.Zone(origin)
    records = [
        ("@", "SOA", f"ns1.{ZONE}. hostmaster.{ZONE}. {serial} 3600 600 86400 300"),
        ("@", "NS", f"ns1.{ZONE}."),
        ("@", "NS", f"ns2.{ZONE}."),
        ("@", "MX", f"10 mail.{ZONE}."),
        ("@", "TXT", '"v=spf1 -all"'),
        ("ns1", "A", "192.0.2.1"),
        ("ns2", "A", "192.0.2.2"),
        ("www", "A", "192.0.2.10"),
        ("www", "AAAA", "2001:db8::10"),
        ("mail", "A", "192.0.2.25"),
        ("ftp", "CNAME", f"www.{ZONE}."),
    ]
    if extra:
        records += [("api", "A", "192.0.2.30"), ("www", "A", "192.0.2.11")]
    with z.writer() as txn:
        for owner, rdtype, text in records:
            txn.add(dns.name.from_text(owner, None), 300, dns.rdata.from_text("IN", rdtype, text))
    return z.to_text(want_origin=True)


def options_block(d: Path, port: int, extra: str = "") -> str:
    return f"""
controls {{ }};
options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    dump-file "{d}/named_dump.db";
    statistics-file "{d}/named.stats";
    listen-on port {port} {{ {HOST}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify-delay 0;
{extra}
}};
"""


def key_clause(name: str, secret: str) -> str:
    return f'key "{name}" {{ algorithm {ALG}; secret "{secret}"; }};\n'


@dataclass
class Server:
    name: str
    dir: Path
    port: int
    proc: NamedProcess

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(HOST, self.port, self.name)


@dataclass
class Topology:
    root: Path
    secret: str
    primary: Server
    secondary: Server
    started: list[NamedProcess] = field(default_factory=list)

    @property
    def key(self) -> dns.tsig.Key:
        return make_tsig_key(KEY_NAME, ALG, self.secret)

    def zone_file(self) -> Path:
        return self.primary.dir / f"{ZONE}.zone"


def start_server(name: str, d: Path, port: int, conf: str, zones: list[str]) -> Server:
    d.mkdir(parents=True, exist_ok=True)
    (d / "named.conf").write_text(conf)
    proc = NamedProcess(name=name)
    proc.start(d / "named.conf", d, d / "named.log")
    srv = Server(name, d, port, proc)
    proc.wait_ready((HOST, port), zones, timeout=15)
    return srv


def build_topology(root: Path, *, secondary_secret: str | None = None) -> Topology:
    """Primary + secondary. *secondary_secret* gives the secondary a wrong key."""
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    p_port, s_port = free_port(HOST), free_port(HOST)
    pdir, sdir = root / "primary", root / "secondary"
    pdir.mkdir(parents=True)
    (pdir / f"{ZONE}.zone").write_text(zone_text(SERIAL))
    p_conf = key_clause(KEY_NAME, secret) + options_block(
        pdir,
        p_port,
        f"""    allow-transfer {{ key {KEY_NAME}; }};
    notify explicit;
    also-notify {{ {HOST} port {s_port} key {KEY_NAME}; }};
    ixfr-from-differences yes;""",
    )
    p_conf += f'zone "{ZONE}" {{ type primary; file "{pdir}/{ZONE}.zone"; }};\n'
    s_conf = key_clause(KEY_NAME, secondary_secret or secret) + options_block(
        sdir, s_port, "    allow-transfer { none; };\n    notify no;"
    )
    s_conf += (
        f'zone "{ZONE}" {{ type secondary; file "{sdir}/{ZONE}.db"; '
        f"primaries port {p_port} {{ {HOST} key {KEY_NAME}; }}; }};\n"
    )
    topo_started: list[NamedProcess] = []
    try:
        primary = start_server("primary", pdir, p_port, p_conf, [ZONE])
        topo_started.append(primary.proc)
        sdir.mkdir(parents=True)
        # a secondary with a wrong key never becomes authoritative: only wait for the port
        secondary = start_server(
            "secondary", sdir, s_port, s_conf, [] if secondary_secret else [ZONE]
        )
        topo_started.append(secondary.proc)
    except BaseException:
        for proc in topo_started:
            proc.stop()
        raise
    return Topology(root, secret, primary, secondary, topo_started)


def stop_all(topo: Topology) -> None:
    for proc in topo.started:
        proc.stop(timeout=5)
    assert not any(p.is_running() for p in topo.started)


def poll(fn: Callable[[], T], done: Callable[[T], bool], timeout: float, step: float = 0.1) -> T:
    """Call *fn* until *done(result)* or *timeout*; return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if done(result) or time.monotonic() >= deadline:
            return result
        time.sleep(step)


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    t = build_topology(tmp_path_factory.mktemp("dns"))
    try:
        yield t
    finally:
        stop_all(t)


@pytest.fixture
def fresh_topo(tmp_path: Path) -> Iterator[Topology]:
    t = build_topology(tmp_path)
    try:
        yield t
    finally:
        stop_all(t)


# ----------------------------------------------------------------------------
# pure parts


@pytest.mark.unit
def test_serial_arithmetic() -> None:
    assert serial_compare(1, 1) == 0
    assert serial_compare(1, 2) == -1
    assert serial_compare(2, 1) == 1
    assert serial_compare(0, 2**32 - 1) == 1  # wrapped
    assert serial_at_least(5, 2**32 - 10)
    assert not serial_at_least(2**32 - 10, 5)
    with pytest.raises(ValueError):
        serial_compare(0, 2**31)
    assert not serial_at_least(0, 2**31)


@pytest.mark.unit
def test_digest_ignores_serial_but_not_content() -> None:
    a = zone_digest_from_text(zone_text(SERIAL), ZONE)
    assert a == zone_digest_from_text(zone_text(SERIAL + 7), ZONE)
    assert a != zone_digest_from_text(zone_text(SERIAL, extra=True), ZONE)
    assert len(a) == 96  # SHA-384 hex
    z = dns.zone.from_text(zone_text(SERIAL), ZONE)
    strict = zone_digest(z, ignore_soa_serial=False)
    assert strict != a
    # the input zone is not modified by the serial-0 copy
    assert z.get_soa().serial == SERIAL
    assert zone_digest(z, ignore_soa_serial=False) == strict
    # matches what dnspython's own ZONEMD computes on a serial-0 zone
    z0 = dns.zone.from_text(zone_text(0), ZONE)
    from dns.zonetypes import DigestHashAlgorithm

    assert z0.compute_digest(DigestHashAlgorithm.SHA384).digest.hex() == a


@pytest.mark.unit
def test_make_tsig_key_validates() -> None:
    k = make_tsig_key("k", "HMAC-SHA512", base64.b64encode(b"x" * 64).decode())
    assert k.algorithm == dns.name.from_text("hmac-sha512")
    with pytest.raises(ValueError, match="unknown TSIG algorithm"):
        make_tsig_key("k", "hmac-foo", "AAAA")
    with pytest.raises(ValueError, match="base64"):
        make_tsig_key("k", "hmac-sha256", "not base64!")


@pytest.mark.unit
def test_endpoint_str() -> None:
    assert str(Endpoint("127.0.0.1", 5300)) == "127.0.0.1#5300"
    assert str(Endpoint("10.0.0.1", 53, "primary-0")) == "primary-0 (10.0.0.1#53)"


# ----------------------------------------------------------------------------
# real named


@bind
@pytest.mark.bind
def test_soa_from_primary_is_authoritative(topo: Topology) -> None:
    p = query_soa(topo.primary.endpoint, ZONE, timeout=1)
    assert isinstance(p, SoaProbe)
    assert p.ok, p
    assert p.serial == SERIAL
    assert p.zone == f"{ZONE}."
    signed = query_soa(topo.primary.endpoint, ZONE, timeout=1, key=topo.key)
    assert signed.ok and signed.serial == SERIAL


@bind
@pytest.mark.bind
def test_soa_errors_map_to_reasons(topo: Topology) -> None:
    ep = topo.primary.endpoint
    assert query_soa(ep, "not-served.test", timeout=1).reason is Reason.REFUSED
    assert query_soa(ep, f"nope.{ZONE}", timeout=1).reason is Reason.NXDOMAIN
    bad = make_tsig_key(KEY_NAME, ALG, base64.b64encode(secrets.token_bytes(32)).decode())
    assert query_soa(ep, ZONE, timeout=1, key=bad).reason is Reason.TSIG_BADSIG
    unknown = make_tsig_key("who-is-this", ALG, topo.secret)
    assert query_soa(ep, ZONE, timeout=1, key=unknown).reason is Reason.TSIG_BADKEY


@bind
@pytest.mark.bind
def test_axfr_with_key_matches_rendered_digest(topo: Topology) -> None:
    probe, zone = axfr(topo.primary.endpoint, ZONE, key=topo.key, timeout=2)
    assert isinstance(probe, TransferProbe)
    assert probe.ok, probe
    assert zone is not None
    assert probe.serial == SERIAL
    assert probe.kind is XfrKind.FULL
    source = zone_text(SERIAL)
    assert probe.digest == zone_digest_from_text(source, ZONE)
    src_zone = dns.zone.from_text(source, ZONE)
    assert probe.records == sum(len(r) for n in src_zone.nodes.values() for r in n.rdatasets)
    assert "AXFR started: TSIG xfer-key" in topo.primary.proc.log_text()


@bind
@pytest.mark.bind
def test_axfr_without_key_is_refused(topo: Topology) -> None:
    probe, zone = axfr(topo.primary.endpoint, ZONE, key=None, timeout=2)
    assert probe.reason is Reason.REFUSED, probe
    assert zone is None and probe.digest is None
    topo.primary.proc.wait_for_log(rf"zone transfer '{ZONE}/AXFR/IN' denied", timeout=5)


@bind
@pytest.mark.bind
def test_axfr_wrong_secret_is_badsig_and_unknown_key_is_badkey(topo: Topology) -> None:
    wrong = make_tsig_key(KEY_NAME, ALG, base64.b64encode(secrets.token_bytes(32)).decode())
    probe, zone = axfr(topo.primary.endpoint, ZONE, key=wrong, timeout=2)
    assert probe.reason is Reason.TSIG_BADSIG, probe
    assert zone is None
    unknown = make_tsig_key("stranger", ALG, topo.secret)
    probe, _ = axfr(topo.primary.endpoint, ZONE, key=unknown, timeout=2)
    assert probe.reason is Reason.TSIG_BADKEY, probe
    # same name, other algorithm: BIND does not know (name, algorithm) -> BADKEY
    other_alg = make_tsig_key(KEY_NAME, "hmac-sha512", topo.secret)
    probe, _ = axfr(topo.primary.endpoint, ZONE, key=other_alg, timeout=2)
    assert probe.reason is Reason.TSIG_BADKEY, probe


@bind
@pytest.mark.bind
def test_nothing_listening() -> None:
    ep = Endpoint(HOST, free_port(HOST), "nobody")
    t0 = time.monotonic()
    soa = query_soa(ep, ZONE, timeout=0.3)
    assert soa.reason in (Reason.TIMEOUT, Reason.CONNECTION_REFUSED), soa
    probe, _ = axfr(ep, ZONE, key=None, timeout=0.3)
    assert probe.reason in (Reason.TIMEOUT, Reason.CONNECTION_REFUSED), probe
    sec = verify_secondary(ep, ZONE, SERIAL, timeout=0.3)
    assert not sec.ok
    assert time.monotonic() - t0 < 5


@bind
@pytest.mark.bind
def test_secondary_transferred_with_tsig(topo: Topology) -> None:
    sec = verify_secondary(topo.secondary.endpoint, ZONE, SERIAL, timeout=1)
    assert sec.ok, sec
    assert sec.serial == SERIAL
    log = topo.secondary.proc.log_text()
    assert f"transfer of '{ZONE}/IN' from {HOST}#{topo.primary.port}" in log
    assert "Transfer status: success" in log
    assert f"TSIG '{KEY_NAME}'" in log
    # the secondary is behind any later serial
    stale = verify_secondary(topo.secondary.endpoint, ZONE, SERIAL + 1, timeout=1)
    assert stale.reason is Reason.STALE_SERIAL and stale.serial == SERIAL
    # serial arithmetic: a serial "before" the wrap point is still at least
    assert verify_secondary(topo.secondary.endpoint, ZONE, SERIAL - 5, timeout=1).ok
    # the secondary itself does not hand out the zone
    probe, _ = axfr(topo.secondary.endpoint, ZONE, key=topo.key, timeout=2)
    assert probe.reason is Reason.REFUSED, probe


@bind
@pytest.mark.bind
def test_verify_primary(topo: Topology) -> None:
    ep = topo.primary.endpoint
    digest = zone_digest_from_text(zone_text(SERIAL), ZONE)
    ok = verify_primary(ep, ZONE, SERIAL, digest, topo.key, timeout=2)
    assert ok.ok, ok
    assert ok.digest == digest and ok.serial == SERIAL
    stale = verify_primary(ep, ZONE, SERIAL + 1, digest, topo.key, timeout=2)
    assert stale.reason is Reason.STALE_SERIAL and stale.serial == SERIAL
    assert stale.records == 0  # no transfer was needed to know
    other = zone_digest_from_text(zone_text(SERIAL, extra=True), ZONE)
    mismatch = verify_primary(ep, ZONE, SERIAL, other, topo.key, timeout=2)
    assert mismatch.reason is Reason.CONTENT_MISMATCH, mismatch
    no_key = verify_primary(ep, ZONE, SERIAL, digest, None, timeout=2)
    assert no_key.reason is Reason.REFUSED


@bind
@pytest.mark.bind
def test_ixfr_probe_up_to_date_and_ahead(topo: Topology) -> None:
    ep = topo.primary.endpoint
    same = ixfr(ep, ZONE, since_serial=SERIAL, key=topo.key, timeout=2)
    assert same.ok and same.kind is XfrKind.UP_TO_DATE and same.records == 1, same
    ahead = ixfr(ep, ZONE, since_serial=SERIAL + 10, key=topo.key, timeout=2)
    assert ahead.reason is Reason.STALE_SERIAL and ahead.serial == SERIAL, ahead
    # no journal entry for an unknown older serial: BIND falls back to a full answer
    old = ixfr(ep, ZONE, since_serial=SERIAL - 1, key=topo.key, timeout=2)
    assert old.ok and old.kind is XfrKind.FULL, old
    refused = ixfr(ep, ZONE, since_serial=SERIAL - 1, key=None, timeout=2)
    assert refused.reason is Reason.REFUSED, refused


@bind
@pytest.mark.bind
def test_zone_change_notify_ixfr_to_secondary(fresh_topo: Topology) -> None:
    t = fresh_topo
    new_serial = SERIAL + 1
    new_text = zone_text(new_serial, extra=True)
    zf = t.zone_file()
    zf.write_text(new_text)
    # named skips a reload when the file's mtime has not moved past the last load
    future = time.time() + 2
    os.utime(zf, (future, future))
    s_mark = t.secondary.proc.log_offset()
    t.primary.proc.reload()  # SIGHUP to our named's pid

    prim = poll(
        lambda: query_soa(t.primary.endpoint, ZONE, timeout=0.5),
        lambda r: r.serial == new_serial,
        timeout=10,
    )
    assert prim.ok and prim.serial == new_serial, (prim, t.primary.proc.log_tail())

    sec = poll(
        lambda: verify_secondary(t.secondary.endpoint, ZONE, new_serial, timeout=0.5),
        lambda r: r.ok,
        timeout=15,
    )
    assert sec.ok, (sec, t.secondary.proc.log_tail())
    # it came by NOTIFY (the refresh timer is an hour) and as an incremental transfer
    t.secondary.proc.wait_for_log(rf"notify from {HOST}#\d+: serial {new_serial}", 5, since=s_mark)
    t.secondary.proc.wait_for_log(
        rf"transfer of '{ZONE}/IN' from {HOST}#{t.primary.port}: Transfer status: success",
        5,
        since=s_mark,
    )
    # BIND 9.18 does not log "incremental" on the secondary at default severity; the
    # primary says which kind it sent, and the secondary's record count shows a diff
    t.primary.proc.wait_for_log(
        rf"transfer of '{ZONE}/IN': IXFR started: TSIG {KEY_NAME} "
        rf"\(serial {SERIAL} -> {new_serial}\)",
        5,
    )
    assert "falling back to AXFR" not in t.primary.proc.log_text()
    done = t.secondary.proc.wait_for_log(
        rf"Transfer completed: \d+ messages, (\d+) records.*\(serial {new_serial}\)",
        5,
        since=s_mark,
    )
    full_records = len(dns.zone.from_text(new_text, ZONE).to_text().splitlines())
    assert int(done.group(1)) < full_records  # SOA new, SOA old, SOA new, 2 adds, SOA new

    # the same answer, seen by our own IXFR probe
    inc = ixfr(t.primary.endpoint, ZONE, since_serial=SERIAL, key=t.key, timeout=2)
    assert inc.ok and inc.kind is XfrKind.INCREMENTAL and inc.serial == new_serial, inc
    # and the gate's primary check against the new rendering
    new_digest = zone_digest_from_text(new_text, ZONE)
    assert verify_primary(t.primary.endpoint, ZONE, new_serial, new_digest, t.key, 2).ok
    old_digest = zone_digest_from_text(zone_text(SERIAL), ZONE)
    assert (
        verify_primary(t.primary.endpoint, ZONE, new_serial, old_digest, t.key, 2).reason
        is Reason.CONTENT_MISMATCH
    )


@bind
@pytest.mark.bind
def test_primary_down_and_secondary_stale(fresh_topo: Topology) -> None:
    t = fresh_topo
    t.primary.proc.kill()  # crash, not a clean stop
    down = verify_primary(
        t.primary.endpoint, ZONE, SERIAL, zone_digest_from_text(zone_text(SERIAL), ZONE), t.key, 0.3
    )
    assert down.reason in (Reason.TIMEOUT, Reason.CONNECTION_REFUSED), down
    # the secondary keeps serving what it has, authoritatively, but it is stale for a new serial
    assert verify_secondary(t.secondary.endpoint, ZONE, SERIAL, timeout=1).ok
    stale = verify_secondary(t.secondary.endpoint, ZONE, SERIAL + 1, timeout=1)
    assert stale.reason is Reason.STALE_SERIAL


@bind
@pytest.mark.bind
def test_secondary_with_wrong_key_never_serves(tmp_path: Path) -> None:
    wrong = base64.b64encode(secrets.token_bytes(32)).decode()
    t = build_topology(tmp_path, secondary_secret=wrong)
    try:
        mark = t.primary.proc.wait_for_log(r"request has invalid signature.*BADSIG", 10)
        assert mark
        res = poll(
            lambda: verify_secondary(t.secondary.endpoint, ZONE, SERIAL, timeout=0.5),
            lambda r: r.reason is Reason.SERVFAIL,
            timeout=5,
        )
        assert res.reason is Reason.SERVFAIL, res
    finally:
        stop_all(t)


@bind
@pytest.mark.bind
def test_named_process_reports_bad_config(tmp_path: Path) -> None:
    port = free_port(HOST)
    (tmp_path / "named.conf").write_text(options_block(tmp_path, port) + "zone {{ broken")
    proc = NamedProcess(name="broken")
    proc.start(tmp_path / "named.conf", tmp_path, tmp_path / "named.log")
    try:
        with pytest.raises(NamedStartError) as err:
            proc.wait_ready((HOST, port), [ZONE], timeout=10)
        assert "exited" in str(err.value)
        assert "named.conf" in str(err.value)  # the log tail names the bad file
    finally:
        proc.stop()
    assert not proc.is_running()
    assert not (tmp_path / "named-process.pid").exists()


@bind
@pytest.mark.bind
def test_probes_run_concurrently(topo: Topology) -> None:
    """The gate polls many zones at once from a thread pool: probes share no state."""
    from concurrent.futures import ThreadPoolExecutor

    eps = [topo.primary.endpoint, topo.secondary.endpoint] * 20
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda ep: verify_secondary(ep, ZONE, SERIAL, 1.0), eps))
        xfrs = list(
            pool.map(lambda _: axfr(topo.primary.endpoint, ZONE, key=topo.key)[0], range(8))
        )
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    assert {x.digest for x in xfrs} == {zone_digest_from_text(zone_text(SERIAL), ZONE)}
