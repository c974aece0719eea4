"""DNS probes for the transfer gate, the local runner and the tests.

Pure dnspython, no Pulumi import, no shared state: every function is safe to
call from many threads at once (the gate polls many zones concurrently with a
thread pool). No probe raises for a network or DNS failure; each returns a
frozen result whose :class:`Reason` says what went wrong and whose ``detail``
is a human sentence for the gate's timeout message.

Cost, cheapest first (design: "digest + serial, pull a whole zone only where
it must"):

* :func:`query_soa` / :func:`verify_secondary` -- one UDP query.
* :func:`ixfr` -- one TCP exchange; when the server is up to date the answer
  is a single SOA.
* :func:`verify_primary` -- one UDP query, and only when the primary already
  serves the expected serial, one TSIG AXFR to prove the content digest.
* :func:`axfr` -- pulls and parses the whole zone (dnspython needs ~11 s for
  a 100k-record zone over loopback where named needs 0.4 s).

Endpoints are IP addresses (dnspython does not resolve host names).

With *sessions* (:class:`~bind9_topology.dns.sessions.Sessions`) the TCP work -- SOA
questions to a ``tcp_only`` endpoint, transfers -- goes over the server's kept
connections instead of a new connection each; what each probe reports stays the same.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.node
import dns.opcode
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rrset
import dns.transaction
import dns.tsig
import dns.xfr
import dns.zone
import dns.zonetypes

from bind9_topology.config.digest import zone_digest
from bind9_topology.dns import fastxfr
from bind9_topology.dns.endpoint import Endpoint
from bind9_topology.dns.serials import serial_at_least, serial_compare_safe
from bind9_topology.dns.sessions import Session, Sessions

__all__ = [
    "Endpoint",
    "Reason",
    "SoaProbe",
    "TransferProbe",
    "XfrKind",
    "axfr",
    "axfr_probe",
    "axfr_probes",
    "ixfr",
    "judge_primary_transfer",
    "make_tsig_key",
    "query_soa",
    "send_notify",
    "soa_answer",
    "soa_over",
    "soa_query",
    "verify_primary",
    "verify_secondary",
]

class Reason(enum.StrEnum):
    """Why a probe failed (or ``OK``)."""

    OK = "ok"
    TIMEOUT = "timeout"
    CONNECTION_REFUSED = "connection refused"
    REFUSED = "refused"
    NOTAUTH = "notauth"
    NOT_AUTHORITATIVE = "not authoritative"  # answered, but without the AA bit
    SERVFAIL = "servfail"
    NXDOMAIN = "nxdomain"
    TSIG_BADKEY = "tsig badkey"
    TSIG_BADSIG = "tsig badsig"
    TSIG_BADTIME = "tsig badtime"
    STALE_SERIAL = "stale serial"
    CONTENT_MISMATCH = "content mismatch"
    UNSIGNED = "not signed"  # a signed zone (dnssec) without valid DNSKEY/RRSIG for its DS
    ERROR = "error"


class XfrKind(enum.StrEnum):
    """How a server answered a transfer request."""

    FULL = "axfr"  # a full zone (an AXFR, or an IXFR that fell back to AXFR style)
    INCREMENTAL = "ixfr"  # difference sequences (RFC 1995)
    UP_TO_DATE = "up-to-date"  # IXFR answered with the lone current SOA


@dataclass(frozen=True)
class SoaProbe:
    endpoint: Endpoint
    zone: str
    reason: Reason
    serial: int | None
    detail: str
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK


@dataclass(frozen=True)
class TransferProbe:
    endpoint: Endpoint
    zone: str
    reason: Reason
    serial: int | None
    digest: str | None
    records: int
    detail: str
    elapsed_s: float
    kind: XfrKind | None = None
    authoritative: bool | None = None  # the AA bit of the answer, where the reader kept it

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK


# --------------------------------------------------------------------------
# TSIG


def make_tsig_key(name: str, algorithm: str, secret_b64: str) -> dns.tsig.Key:
    """A TSIG key from BIND's spelling (``key "name" { algorithm hmac-sha256; secret "..."; }``).

    Raises ValueError for an unknown algorithm or a secret that is not base64.
    """
    alg = dns.name.from_text(algorithm.strip().lower())
    if alg not in dns.tsig.mac_sizes or alg == dns.tsig.GSS_TSIG:
        known = sorted(
            a.to_text(omit_final_dot=True).lower()
            for a in dns.tsig.mac_sizes
            if a != dns.tsig.GSS_TSIG
        )
        raise ValueError(f"unknown TSIG algorithm {algorithm!r}; known: {', '.join(known)}")
    try:
        secret = base64.b64decode(secret_b64.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"TSIG secret for key {name!r} is not valid base64") from exc
    if not secret:
        raise ValueError(f"TSIG secret for key {name!r} is empty")
    return dns.tsig.Key(name, secret, alg)


def _keyring(key: dns.tsig.Key) -> dict[dns.name.Name, dns.tsig.Key]:
    return {key.name: key}


# --------------------------------------------------------------------------
# helpers


def _zone_name(zone: str | dns.name.Name) -> dns.name.Name:
    return zone if isinstance(zone, dns.name.Name) else _name_of(zone)


@functools.lru_cache(maxsize=65536)
def _name_of(text: str) -> dns.name.Name:
    """dns.name.from_text, once per text (names are immutable; the gate asks the same
    zones round after round)."""
    return dns.name.from_text(text)


_RCODE_REASONS: dict[int, Reason] = {
    int(dns.rcode.NOERROR): Reason.OK,
    int(dns.rcode.REFUSED): Reason.REFUSED,
    int(dns.rcode.NOTAUTH): Reason.NOTAUTH,
    int(dns.rcode.SERVFAIL): Reason.SERVFAIL,
    int(dns.rcode.NXDOMAIN): Reason.NXDOMAIN,
    int(dns.rcode.BADSIG): Reason.TSIG_BADSIG,  # 16, shared with BADVERS
    int(dns.rcode.BADKEY): Reason.TSIG_BADKEY,
    int(dns.rcode.BADTIME): Reason.TSIG_BADTIME,
}


def _rcode_reason(rcode: int) -> Reason:
    return _RCODE_REASONS.get(int(rcode), Reason.ERROR)


def _exception_reason(exc: BaseException, *, transfer: bool = False) -> tuple[Reason, str]:
    """Map what dnspython and the socket layer raise to a Reason and a sentence."""
    if isinstance(exc, dns.exception.Timeout):
        return Reason.TIMEOUT, "timed out"
    if isinstance(exc, dns.tsig.PeerBadKey):
        return (
            Reason.TSIG_BADKEY,
            "server does not know the TSIG key (BADKEY: unknown name or algorithm)",
        )
    if isinstance(exc, dns.tsig.PeerBadSignature):
        return Reason.TSIG_BADSIG, "server rejected the TSIG signature (BADSIG: wrong secret)"
    if isinstance(exc, dns.tsig.PeerBadTime):
        return Reason.TSIG_BADTIME, "server rejected the TSIG time (BADTIME: clock skew)"
    if isinstance(exc, dns.tsig.PeerError):
        return Reason.TSIG_BADSIG, f"server rejected the TSIG: {exc}"
    if isinstance(exc, dns.tsig.BadSignature):
        return Reason.TSIG_BADSIG, "the answer's TSIG signature does not verify with our key"
    if isinstance(exc, dns.tsig.BadTime):
        return Reason.TSIG_BADTIME, "the answer's TSIG time is outside the fudge window"
    if isinstance(exc, (dns.tsig.BadKey, dns.tsig.BadAlgorithm, dns.message.UnknownTSIGKey)):
        return Reason.TSIG_BADKEY, f"the answer is signed with a key we did not use: {exc}"
    if isinstance(exc, dns.xfr.TransferError):
        reason = _rcode_reason(exc.rcode)
        return (
            Reason.ERROR if reason is Reason.OK else reason
        ), f"transfer answered {dns.rcode.to_text(exc.rcode)}"
    if isinstance(exc, ConnectionRefusedError):
        return Reason.CONNECTION_REFUSED, "connection refused"
    if transfer and isinstance(exc, (EOFError, ConnectionResetError, BrokenPipeError)):
        # a server that will not transfer may also just close the connection
        return (
            Reason.REFUSED,
            f"server closed the transfer connection without an answer ({type(exc).__name__})",
        )
    if isinstance(exc, dns.message.BadTSIG) or (
        isinstance(exc, dns.exception.FormError) and "TSIG" in str(exc)
    ):
        return Reason.TSIG_BADSIG, f"bad TSIG in the answer: {exc}"
    if isinstance(exc, TimeoutError):
        return Reason.TIMEOUT, "timed out"
    if isinstance(exc, OSError):
        return Reason.ERROR, f"network error: {exc.strerror or exc}"
    return Reason.ERROR, f"{type(exc).__name__}: {exc}"


class _Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self) -> float:
        return round(time.monotonic() - self.start, 6)


# --------------------------------------------------------------------------
# SOA


def query_soa(
    endpoint: Endpoint,
    zone: str | dns.name.Name,
    *,
    timeout: float = 2.0,
    key: dns.tsig.Key | None = None,
    sessions: Sessions | None = None,
) -> SoaProbe:
    """Ask *endpoint* for the SOA of *zone* over UDP (TCP if truncated).

    OK only for NOERROR with the AA bit and the zone's SOA in the answer. With
    *sessions*, what goes over TCP goes over one of the server's sessions.
    """
    clock = _Clock()
    name = _zone_name(zone)
    zname = name.to_text()

    def result(reason: Reason, detail: str, serial: int | None = None) -> SoaProbe:
        return SoaProbe(endpoint, zname, reason, serial, detail, clock())

    def tcp(q: dns.message.Message) -> dns.message.Message:
        if sessions is not None:
            with sessions.session(endpoint) as session:
                return session.query(q, timeout)
        return dns.query.tcp(q, endpoint.host, timeout=timeout, port=endpoint.port)

    try:
        q = soa_query(name, key)
        if endpoint.tcp_only:
            r = tcp(q)
        else:
            r = dns.query.udp(q, endpoint.host, timeout=timeout, port=endpoint.port)
            if r.flags & dns.flags.TC:
                r = tcp(q)
    except Exception as exc:  # every failure becomes a Reason
        reason, detail = _exception_reason(exc)
        return result(reason, detail)

    return soa_answer(endpoint, name, r, clock())


def soa_over(session: Session, endpoint: Endpoint, zone: str | dns.name.Name,
             key: dns.tsig.Key | None, timeout: float) -> SoaProbe:
    """:func:`query_soa` of a ``tcp_only`` *endpoint* over *session* (one of its
    server's, held by the caller): the same probe, over the kept connection."""
    clock = _Clock()
    name = _zone_name(zone)
    try:
        r = session.query(soa_query(name, key), timeout)
    except Exception as exc:  # every failure becomes a Reason
        reason, detail = _exception_reason(exc)
        return SoaProbe(endpoint, name.to_text(), reason, None, detail, clock())
    return soa_answer(endpoint, name, r, clock())


def soa_query(name: dns.name.Name, key: dns.tsig.Key | None) -> dns.message.Message:
    """The SOA query :func:`query_soa` sends: no RD, signed with *key* when given."""
    q = dns.message.make_query(name, dns.rdatatype.SOA)
    q.flags &= ~dns.flags.RD  # we ask the authority, not a resolver
    if key is not None:
        q.use_tsig(_keyring(key), key.name, algorithm=key.algorithm)
    return q


def soa_answer(endpoint: Endpoint, name: dns.name.Name, r: dns.message.Message,
               elapsed_s: float) -> SoaProbe:
    """What an answer to :func:`soa_query` says: OK only for NOERROR with the AA bit
    and the zone's SOA in the answer (shared by :func:`query_soa` and the poller)."""
    zname = name.to_text()
    rcode = r.rcode()
    if rcode != dns.rcode.NOERROR:
        return SoaProbe(endpoint, zname, _rcode_reason(rcode),
                        None, f"answered {dns.rcode.to_text(rcode)}", elapsed_s)
    soa_rrset = r.get_rrset(r.answer, name, dns.rdataclass.IN, dns.rdatatype.SOA)
    serial = cast(dns.rdtypes.ANY.SOA.SOA, soa_rrset[0]).serial if soa_rrset else None
    if not r.flags & dns.flags.AA:
        return SoaProbe(endpoint, zname, Reason.NOT_AUTHORITATIVE,
                        serial, "answered without the AA bit (not loaded as authoritative)",
                        elapsed_s)
    if serial is None:
        return SoaProbe(endpoint, zname, Reason.ERROR, None,
                        "authoritative answer without the zone's SOA", elapsed_s)
    return SoaProbe(endpoint, zname, Reason.OK, serial, f"serial {serial}", elapsed_s)


def send_notify(
    endpoint: Endpoint,
    zone: str | dns.name.Name,
    *,
    key: dns.tsig.Key | None = None,
    serial: int | None = None,
    timeout: float = 1.0,
) -> SoaProbe:
    """Send a NOTIFY for *zone* to *endpoint* (a secondary), signed with *key* if given.

    What a primary sends when a zone changes (RFC 1996); a secondary that accepts it
    (``allow-notify { key ...; }``) checks the primary's SOA and transfers when it is
    newer. OK when the secondary acknowledges with NOERROR.
    """
    clock = _Clock()
    name = _zone_name(zone)
    try:
        q = dns.message.make_query(name, dns.rdatatype.SOA)
        q.flags = dns.flags.AA  # (the opcode lives in the flags word: set it after)
        q.set_opcode(dns.opcode.NOTIFY)
        if serial is not None:
            soa = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA,
                                      f". . {serial} 0 0 0 0")
            q.answer.append(dns.rrset.from_rdata(name, 0, soa))
        if key is not None:
            q.use_tsig(_keyring(key), key.name, algorithm=key.algorithm)
        if endpoint.tcp_only:  # a port-forward: NOTIFY over TCP (RFC 1996 allows it)
            r = dns.query.tcp(q, endpoint.host, timeout=timeout, port=endpoint.port)
        else:
            r = dns.query.udp(q, endpoint.host, timeout=timeout, port=endpoint.port)
    except Exception as exc:
        reason, detail = _exception_reason(exc)
        return SoaProbe(endpoint, name.to_text(), reason, None, f"NOTIFY: {detail}", clock())
    rcode = r.rcode()
    if rcode != dns.rcode.NOERROR:
        return SoaProbe(endpoint, name.to_text(), _rcode_reason(rcode), None,
                        f"NOTIFY answered {dns.rcode.to_text(rcode)}", clock())
    if r.opcode() != dns.opcode.NOTIFY:
        return SoaProbe(endpoint, name.to_text(), Reason.ERROR, None,
                        "NOTIFY answered with another opcode", clock())
    return SoaProbe(endpoint, name.to_text(), Reason.OK, serial, "NOTIFY acknowledged", clock())


# --------------------------------------------------------------------------
# transfers


def _count_records(zone: dns.zone.Zone) -> int:
    return sum(len(rds) for node in zone.nodes.values() for rds in node.rdatasets)


def _zone_serial(zone: dns.zone.Zone) -> int | None:
    try:
        return int(zone.get_soa().serial)
    except dns.zone.NoSOA:
        return None


def axfr(
    endpoint: Endpoint,
    zone: str | dns.name.Name,
    *,
    key: dns.tsig.Key | None = None,
    timeout: float = 5.0,
    lifetime: float | None = 120.0,
    sessions: Sessions | None = None,
) -> tuple[TransferProbe, dns.zone.Zone | None]:
    """Pull *zone* from *endpoint* by AXFR (TSIG-signed with *key* if given).

    *timeout* bounds the wait for each message, *lifetime* the whole transfer.
    Returns the probe and, when OK, the transferred zone. When a key is used,
    dnspython insists that the first and last message of the answer are
    signed, so an unsigned answer is never accepted as the zone. With *sessions*,
    over one of the server's sessions (dnspython's transfer, on the kept connection).
    """
    clock = _Clock()
    name = _zone_name(zone)
    zname = name.to_text()
    zobj = dns.zone.Zone(name, relativize=True)
    try:
        if key is not None:
            q, _ = dns.xfr.make_query(
                zobj,
                serial=None,
                keyring=_keyring(key),
                keyname=key.name,
                keyalgorithm=key.algorithm,
            )
        else:
            q, _ = dns.xfr.make_query(zobj, serial=None)
        if sessions is not None:
            with sessions.session(endpoint) as session:
                for _ in session.xfr(q, zobj, serial=None, timeout=timeout, lifetime=lifetime):
                    pass
        else:
            dns.query.inbound_xfr(
                endpoint.host, zobj, q, port=endpoint.port, timeout=timeout, lifetime=lifetime
            )
    except Exception as exc:
        reason, detail = _exception_reason(exc, transfer=True)
        return TransferProbe(
            endpoint, zname, reason, None, None, 0, f"AXFR: {detail}", clock(), XfrKind.FULL
        ), None
    serial = _zone_serial(zobj)
    if serial is None:
        return (
            TransferProbe(
                endpoint,
                zname,
                Reason.ERROR,
                None,
                None,
                0,
                "AXFR: no SOA in the transfer",
                clock(),
                XfrKind.FULL,
            ),
            None,
        )
    records = _count_records(zobj)
    digest = zone_digest(zobj)
    probe = TransferProbe(
        endpoint,
        zname,
        Reason.OK,
        serial,
        digest,
        records,
        f"AXFR: serial {serial}, {records} records",
        clock(),
        XfrKind.FULL,
    )
    return probe, zobj


def axfr_probe(
    endpoint: Endpoint,
    zone: str | dns.name.Name,
    *,
    key: dns.tsig.Key | None = None,
    timeout: float = 5.0,
    lifetime: float | None = 120.0,
    sessions: Sessions | None = None,
) -> TransferProbe:
    """``axfr(...)[0]`` -- the same probe -- read straight from the wire, no zone kept.

    The plain, well-formed transfer is read by :class:`bind9_topology.dns.fastxfr.AxfrDigest`
    (a fraction of dnspython's cost per record); network failures are named as
    :func:`axfr` names them, and an answer that reader does not take as plain (an error
    rcode, a TSIG error, anything out of place) is asked again through :func:`axfr`,
    whose verdict stands.
    """
    return axfr_probes([endpoint], zone, key=key, timeout=timeout, lifetime=lifetime,
                       sessions=sessions)[0]


def axfr_probes(
    endpoints: Sequence[Endpoint],
    zone: str | dns.name.Name,
    *,
    key: dns.tsig.Key | None = None,
    timeout: float = 5.0,
    lifetime: float | None = 120.0,
    slot: Callable[[Endpoint], threading.Semaphore] | None = None,
    sessions: Sessions | None = None,
) -> list[TransferProbe]:
    """:func:`axfr_probe` of *zone* from every endpoint at once (one thread, one selector).

    *slot*: a semaphore per server that a transfer must hold to run; *sessions*: the
    server's sessions instead, whose kept connections the transfers go over
    (:func:`bind9_topology.dns.fastxfr.transfer_many`; an answer asked again through
    :func:`axfr` goes over them too).
    """
    name = _zone_name(zone)
    return axfr_pulls([(ep, name) for ep in endpoints], key=key, timeout=timeout,
                      lifetime=lifetime, slot=slot, sessions=sessions)


def axfr_pulls(
    pulls: Sequence[tuple[Endpoint, str | dns.name.Name]],
    *,
    key: dns.tsig.Key | None = None,
    timeout: float = 5.0,
    lifetime: float | None = 120.0,
    slot: Callable[[Endpoint], threading.Semaphore] | None = None,
    sessions: Sessions | None = None,
    max_records: int | Sequence[int | None] | None = None,
) -> list[TransferProbe]:
    """:func:`axfr_probe` of every (endpoint, zone) at once, in this thread (one selector):
    many zones' pulls in one loop, as :func:`axfr_probes` does one zone's. *max_records* (one
    for all or one per pull): an answer with more records is not read to its end
    (Reason.ERROR, "more than")."""
    clock = _Clock()
    names = [_zone_name(z) for _, z in pulls]
    endpoints = [ep for ep, _ in pulls]
    outcomes = fastxfr.transfer_many(endpoints, names, key, timeout, lifetime, slot, sessions,
                                     max_records)
    probes: list[TransferProbe] = []
    for endpoint, name, outcome in zip(endpoints, names, outcomes, strict=True):
        if isinstance(outcome, fastxfr.TooLarge):
            probes.append(TransferProbe(endpoint, name.to_text(), Reason.ERROR, None, None, 0,
                                        f"AXFR: {outcome}, not read", clock(), XfrKind.FULL))
        elif isinstance(outcome, fastxfr.NotPlain):
            probes.append(axfr(endpoint, name, key=key, timeout=timeout, lifetime=lifetime,
                               sessions=sessions)[0])
        elif isinstance(outcome, BaseException):
            reason, detail = _exception_reason(outcome, transfer=True)
            probes.append(TransferProbe(endpoint, name.to_text(), reason, None, None, 0,
                                        f"AXFR: {detail}", clock(), XfrKind.FULL))
        else:
            probes.append(TransferProbe(
                endpoint, name.to_text(), Reason.OK, outcome.serial, outcome.digest,
                outcome.records, f"AXFR: serial {outcome.serial}, {outcome.records} records",
                clock(), XfrKind.FULL, outcome.authoritative))
    return probes


def ixfr(
    endpoint: Endpoint,
    zone: str | dns.name.Name,
    *,
    since_serial: int,
    key: dns.tsig.Key | None = None,
    timeout: float = 5.0,
    lifetime: float | None = 120.0,
    sessions: Sessions | None = None,
) -> TransferProbe:
    """Ask *endpoint* for the changes to *zone* since *since_serial* (IXFR over TCP).

    ``kind`` says how the server answered: INCREMENTAL (difference
    sequences), FULL (it fell back to an AXFR-style answer, e.g. no journal
    for that serial) or UP_TO_DATE (only the current SOA: nothing newer).
    ``records`` counts the resource records in the answer. A server whose
    serial is behind *since_serial* comes back as STALE_SERIAL. No zone is
    kept: the answer is checked (sequence, TSIG) and counted, not applied. With
    *sessions*, over one of the server's sessions (the same dnspython reading).
    """
    clock = _Clock()
    name = _zone_name(zone)
    zname = name.to_text()
    kind: XfrKind | None = None
    serial: int | None = None
    records = 0
    first_rr: list[tuple[dns.name.Name, int]] = []
    try:
        with contextlib.ExitStack() as stack:
            messages: Iterator[dns.message.Message]
            if sessions is not None:
                session = stack.enter_context(sessions.session(endpoint))
                messages = session.xfr(
                    _ixfr_query(name, since_serial, key), _Discard(name),
                    serial=since_serial, timeout=timeout, lifetime=lifetime,
                    raise_on_serial_went_backwards=False)
            else:
                messages = dns.query.xfr(
                    endpoint.host,
                    name,
                    rdtype=dns.rdatatype.IXFR,
                    port=endpoint.port,
                    timeout=timeout,
                    lifetime=lifetime,
                    serial=since_serial,
                    relativize=False,
                    raise_on_serial_went_backwards=False,
                    keyring=_keyring(key) if key is not None else None,
                    keyname=key.name if key is not None else None,
                    keyalgorithm=key.algorithm if key is not None else dns.tsig.default_algorithm,
                )
            for msg in messages:
                for rrset in msg.answer:
                    records += len(rrset)
                    if len(first_rr) < 2:
                        first_rr.append((rrset.name, rrset.rdtype))
                        if len(first_rr) == 1 and rrset.rdtype == dns.rdatatype.SOA:
                            serial = int(cast(dns.rdtypes.ANY.SOA.SOA, rrset[0]).serial)
    except Exception as exc:
        reason, detail = _exception_reason(exc, transfer=True)
        return TransferProbe(
            endpoint, zname, reason, serial, None, records, f"IXFR: {detail}", clock(), None
        )

    if serial is None:
        return TransferProbe(
            endpoint,
            zname,
            Reason.ERROR,
            None,
            None,
            records,
            "IXFR: answer without SOA",
            clock(),
            None,
        )
    if serial_compare_safe(serial, since_serial) < 0:
        return TransferProbe(
            endpoint,
            zname,
            Reason.STALE_SERIAL,
            serial,
            None,
            records,
            f"IXFR: server serial {serial} is behind {since_serial}",
            clock(),
            None,
        )
    if serial == since_serial or len(first_rr) < 2:
        kind = XfrKind.UP_TO_DATE
        detail = f"IXFR: up to date at serial {serial}"
    elif first_rr[1] == (name, dns.rdatatype.SOA):
        kind = XfrKind.INCREMENTAL
        detail = f"IXFR: incremental {since_serial} -> {serial}, {records} records"
    else:
        kind = XfrKind.FULL
        detail = f"IXFR: server fell back to a full transfer at serial {serial}, {records} records"
    return TransferProbe(endpoint, zname, Reason.OK, serial, None, records, detail, clock(), kind)


def _ixfr_query(name: dns.name.Name, since_serial: int,
                key: dns.tsig.Key | None) -> dns.message.Message:
    """The IXFR query ``dns.query.xfr`` sends: *since_serial* in an SOA in the authority
    section, signed with *key* when given."""
    q = dns.message.make_query(name, dns.rdatatype.IXFR, dns.rdataclass.IN)
    rrset = q.find_rrset(q.authority, name, dns.rdataclass.IN, dns.rdatatype.SOA, create=True)
    rrset.add(dns.rdata.from_text("IN", "SOA", f". . {since_serial} 0 0 0 0"), 0)
    if key is not None:
        q.use_tsig(_keyring(key), key.name, algorithm=key.algorithm)
    return q


class _Discard(dns.transaction.TransactionManager):
    """A transfer checked and counted, applied nowhere (``dns.query.xfr``'s own manager):
    absolute names, every change a no-op."""

    def __init__(self, origin: dns.name.Name) -> None:
        self.origin = origin

    def origin_information(self) -> tuple[dns.name.Name | None, bool, dns.name.Name | None]:
        return self.origin, False, self.origin

    def get_class(self) -> dns.rdataclass.RdataClass:
        return dns.rdataclass.IN

    def reader(self) -> dns.transaction.Transaction:
        raise NotImplementedError

    def writer(self, replacement: bool = False) -> dns.transaction.Transaction:
        return cast(dns.transaction.Transaction, _NoChange())


class _NoChange:
    """A transaction whose every operation does nothing."""

    def __getattr__(self, _name: str) -> Callable[..., None]:
        return _nothing


def _nothing(*_args: object, **_kwargs: object) -> None:
    return None


# --------------------------------------------------------------------------
# the gate's two checks


def verify_primary(
    endpoint: Endpoint,
    zone: str | dns.name.Name,
    expected_serial: int,
    expected_digest: str,
    key: dns.tsig.Key | None,
    timeout: float = 2.0,
) -> TransferProbe:
    """The primary serves exactly *expected_serial* with AA, and its content matches.

    The SOA query comes first and is cheap; the TSIG AXFR (the expensive
    part) only runs once the serial is right. A primary that restarted with an
    empty or old zone still answers AA -- the serial and the digest catch it.
    """
    clock = _Clock()
    soa = query_soa(endpoint, zone, timeout=timeout)
    if not soa.ok:
        return TransferProbe(
            endpoint, soa.zone, soa.reason, soa.serial, None, 0, f"SOA: {soa.detail}", clock()
        )
    assert soa.serial is not None
    if soa.serial != expected_serial:
        where = "ahead of" if serial_compare_safe(soa.serial, expected_serial) > 0 else "behind"
        return TransferProbe(
            endpoint,
            soa.zone,
            Reason.STALE_SERIAL,
            soa.serial,
            None,
            0,
            f"serves serial {soa.serial}, {where} the expected {expected_serial}",
            clock(),
        )
    probe = axfr_probe(endpoint, zone, key=key, timeout=timeout)
    return judge_primary_transfer(probe, expected_serial, expected_digest, clock())


def judge_primary_transfer(probe: TransferProbe, expected_serial: int, expected_digest: str,
                           elapsed_s: float) -> TransferProbe:
    """What a primary's AXFR proves: OK only at exactly *expected_serial* (the serial its
    SOA answered) with the content digest *expected_digest* (shared by
    :func:`verify_primary` and the transfer gate)."""
    if not probe.ok:
        return _replace_elapsed(probe, elapsed_s)
    if probe.serial != expected_serial:
        return TransferProbe(
            probe.endpoint,
            probe.zone,
            Reason.STALE_SERIAL,
            probe.serial,
            probe.digest,
            probe.records,
            f"AXFR carried serial {probe.serial}, expected {expected_serial}",
            elapsed_s,
            XfrKind.FULL,
            probe.authoritative,
        )
    if probe.digest != expected_digest.lower():
        return TransferProbe(
            probe.endpoint,
            probe.zone,
            Reason.CONTENT_MISMATCH,
            probe.serial,
            probe.digest,
            probe.records,
            f"content digest {_short(probe.digest)} differs from the rendered "
            f"{_short(expected_digest)} at serial {probe.serial} ({probe.records} records served)",
            elapsed_s,
            XfrKind.FULL,
            probe.authoritative,
        )
    return _replace_elapsed(probe, elapsed_s)


def verify_secondary(
    endpoint: Endpoint,
    zone: str | dns.name.Name,
    expected_serial: int,
    timeout: float = 2.0,
) -> SoaProbe:
    """The secondary answers AA with a serial at or past *expected_serial* (RFC 1982)."""
    soa = query_soa(endpoint, zone, timeout=timeout)
    if not soa.ok:
        return soa
    assert soa.serial is not None
    if not serial_at_least(soa.serial, expected_serial):
        return SoaProbe(
            endpoint,
            soa.zone,
            Reason.STALE_SERIAL,
            soa.serial,
            f"serves serial {soa.serial}, expected at least {expected_serial}",
            soa.elapsed_s,
        )
    return soa


def _short(digest: str | None) -> str:
    return (digest or "-")[:16]


def _replace_elapsed(probe: TransferProbe, elapsed: float) -> TransferProbe:
    return TransferProbe(
        probe.endpoint,
        probe.zone,
        probe.reason,
        probe.serial,
        probe.digest,
        probe.records,
        probe.detail,
        elapsed,
        probe.kind,
        probe.authoritative,
    )
