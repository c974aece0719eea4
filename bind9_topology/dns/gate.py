"""The transfer gate's logic: poll primaries and secondaries until a zone really transferred.

Pure: no Pulumi import. The dynamic provider (components.transfer_gate), the
local runner (bind9_topology.local.runner), the tests and the benchmark all call
:func:`wait_until_transferred`, so what `pulumi up` waits for is exactly what
is tested and measured.

Semantics (DESIGN.md, "The transfer gate"):

1. every primary answers AA with a serial at or after the expected one
   (RFC 1982) and proves its content: with an expected digest, a TSIG AXFR
   whose digest matches (pulled only once the serial is right); without one,
   a TSIG IXFR from its own serial (one TCP exchange: the key and the
   transfer ACL work). The newest serial the primaries serve is the target;
2. every secondary answers AA with the target serial or a later one; one at
   exactly the target also proves the primaries' content (TSIG AXFR digest)
   when there is a digest and a key (ADR 2).

The fan-out (ADR 2, "Cost"): every SOA question of a round goes out at once
through the process's :class:`~bind9_topology.dns.poller.SoaPoller` (one UDP
socket, one selector loop, shared by every gate of the process); every zone
pull of a round runs at once in the calling thread
(:func:`~bind9_topology.dns.checks.axfr_probes`: one selector, the wire read by
:mod:`~bind9_topology.dns.fastxfr`). Everything that goes over TCP -- the pulls, the
IXFRs, the DNSSEC lookups, and every SOA question to a ``tcp_only`` endpoint (a pod
through a port-forward of the Kubernetes API, where each new connection is a new
stream of the API) -- goes over the servers' kept connections
(:class:`~bind9_topology.dns.sessions.Sessions`: at most ``SESSIONS_PER_SERVER``
per server at a time, each carrying one exchange after another), so a gate run opens
a handful of connections per server, not one per question. A pull is skipped where
:mod:`~bind9_topology.dns.proofs` holds a proof of the same digest by the same server
at the same serial: a server whose serial did not move is not pulled twice. A
secondary of a small zone (``DIRECT_PROOF_MAX_RECORDS``) is pulled without the SOA
question first: the signed AXFR answers AA, serial and content in one exchange, and
only "exactly the target, this digest" passes that way.

The wait between rounds starts at a few milliseconds and backs off, to 25 ms
while a change is fresh (any server's serial moved in the last 10 s) and to
``poll_s`` after that; it goes back to the start on progress, and the gate
returns the moment every server passed. On the deadline it returns a failed
report whose message names every lagging server, the serial it serves and the
last error. A TSIG rejection that persists (``tsig_grace_s``) fails at once:
waiting would not fix a wrong key.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dns.tsig

from bind9_topology.config.model import parse_server
from bind9_topology.dns.checks import (
    Endpoint,
    Reason,
    SoaProbe,
    TransferProbe,
    axfr_pulls,
    ixfr,
    judge_primary_transfer,
    send_notify,
)
from bind9_topology.dns.poller import SoaPoller, SoaRequest, default_poller, soa_probes
from bind9_topology.dns.proofs import ContentProofs, Proof, default_proofs
from bind9_topology.dns.serials import newest_serial, serial_at_least, serial_compare_safe
from bind9_topology.dns.sessions import Sessions, default_sessions

__all__ = [
    "GatePlan",
    "GateProgress",
    "GateReport",
    "ServerStatus",
    "ZoneJob",
    "gate_plans",
    "map_address",
    "wait_many",
    "wait_until_transferred",
]

TSIG_REASONS = frozenset({Reason.TSIG_BADKEY, Reason.TSIG_BADSIG, Reason.TSIG_BADTIME})
MAX_WORKERS = 16  # zones a caller gates at a time (bench, local runner)
POOL_WORKERS = 32  # the shared pool of blocking probes (zone transfers, NOTIFYs)
# A secondary whose content must be proven is pulled without the SOA query first when
# the zone (as the primary's proof counted it) has at most this many records: then
# the transfer costs about what an SOA query costs, and it answers AA, serial and
# content in one exchange.
DIRECT_PROOF_MAX_RECORDS = 2000
FIRST_DELAY_S = 0.005
BACKOFF = 1.5
# Near a change (within FAST_WINDOW_S of the last progress seen) the wait stays short, so
# the gate sees a finished transfer within tens of milliseconds; long waits back off to poll_s.
FAST_CAP_S = 0.025
FAST_WINDOW_S = 10.0
# A secondary behind the target for NUDGE_AFTER_S gets a signed NOTIFY from the gate,
# at most every NUDGE_EVERY_S: NOTIFY sent to a Service address reaches one replica,
# and the others would wait for their SOA refresh. The secondary still transfers from
# its own primaries; the gate only tells it to look now.
NUDGE_AFTER_S = 1.0
NUDGE_EVERY_S = 2.0


@dataclass(frozen=True)
class ServerStatus:
    endpoint: Endpoint
    role: str  # "primary" | "secondary"
    ok: bool
    serial: int | None
    reason: Reason
    detail: str
    attempts: int
    verified_at: str | None  # ISO 8601 UTC, when it passed
    ready_after_s: float | None  # seconds from the gate's start

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.endpoint.label or str(self.endpoint),
            "host": self.endpoint.host,
            "port": self.endpoint.port,
            "role": self.role,
            "ok": self.ok,
            "serial": self.serial,
            "reason": self.reason.name,
            "detail": self.detail,
            "attempts": self.attempts,
            "verifiedAt": self.verified_at,
            "readyAfterSeconds": self.ready_after_s,
        }


@dataclass(frozen=True)
class GateReport:
    zone: str
    ok: bool
    target_serial: int | None
    servers: tuple[ServerStatus, ...]
    elapsed_s: float
    message: str
    ready_monotonic: float | None = None  # time.monotonic() when the last server passed
    pulls: int = 0  # zone transfers this gate made to prove content

    def lagging(self) -> list[ServerStatus]:
        return [s for s in self.servers if not s.ok]


@dataclass(frozen=True)
class GateProgress:
    zone: str
    ready: int
    total: int
    elapsed_s: float
    round: int


class _State:
    def __init__(self, endpoint: Endpoint, role: str) -> None:
        self.endpoint = endpoint
        self.role = role
        self.ok = False
        self.serial: int | None = None
        self.reason = Reason.TIMEOUT
        self.detail = "not probed yet"
        self.attempts = 0
        self.verified_at: str | None = None
        self.ready_after_s: float | None = None
        self.tsig_since: float | None = None
        self.behind_since: float | None = None  # first seen behind the target serial
        self.nudged_at = float("-inf")
        self.pulled_directly = False  # a secondary's content asked for without an SOA first

    def freeze(self) -> ServerStatus:
        return ServerStatus(
            self.endpoint, self.role, self.ok, self.serial, self.reason, self.detail,
            self.attempts, self.verified_at, self.ready_after_s,
        )


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


Result = tuple[bool, int | None, Reason, str]
T = TypeVar("T")


@dataclass(frozen=True)
class _AskSoa:
    """A step's SOA questions (asked together with every other zone's of the round)."""

    requests: list[SoaRequest]
    timeout: float


@dataclass(frozen=True)
class _AskPull:
    """A step's zone pulls, (server, zone) each (pulled with every other zone's)."""

    pulls: list[tuple[Endpoint, str]]
    key: dns.tsig.Key | None
    timeout: float
    #: per pull, the records read at most (a pull made before the zone's size is known)
    limits: tuple[int | None, ...] | None = None


#: one zone's round (or part of it): yields what it asks, is sent the answers
Step = Generator[_AskSoa | _AskPull, Any, T]
#: zones whose rounds :func:`_drive` runs together at most (the rest wait their turn)
BATCH_ZONES = 2048


def _drive(steps: Sequence[Step[T]], poller: SoaPoller, sessions: Sessions,
           done: Callable[[int, T], None] | None = None) -> list[T]:
    """Run many zones' rounds together: each step's questions of every zone go out as one
    batch (every SOA question through the poller at once, every pull from one selector
    over the servers' sessions), so a round of N zones costs a few batches, not N
    threads' worth of hand-offs. One zone's round asks exactly what it asked alone.
    *done* is told each step's result the moment that step ends."""
    out: list[Any] = [None] * len(steps)
    asks: dict[int, _AskSoa | _AskPull] = {}

    def advance(i: int, value: Any) -> None:
        try:
            asks[i] = steps[i].send(value)
        except StopIteration as stop:
            out[i] = stop.value
            if done is not None:
                done(i, stop.value)

    for i in range(len(steps)):
        advance(i, None)
    while asks:
        now, asks = asks, {}
        answers: dict[int, list[Any]] = {}
        by_timeout: dict[float, list[int]] = {}
        by_key: dict[tuple[int, float], list[int]] = {}
        for i, ask in now.items():
            if isinstance(ask, _AskSoa):
                by_timeout.setdefault(ask.timeout, []).append(i)
            else:
                by_key.setdefault((id(ask.key), ask.timeout), []).append(i)
        for timeout, members in by_timeout.items():
            soas = [cast_soa(now[i]) for i in members]
            flat = soa_probes([r for a in soas for r in a.requests], timeout=timeout,
                              poller=poller, sessions=sessions)
            _split(members, [len(a.requests) for a in soas], flat, answers)
        for (_, timeout), members in by_key.items():
            pulls = [cast_pull(now[i]) for i in members]
            limits = [n for a in pulls for n in (a.limits or (None,) * len(a.pulls))]
            flat_p = axfr_pulls([p for a in pulls for p in a.pulls], key=pulls[0].key,
                                timeout=timeout, sessions=sessions,
                                max_records=limits if any(n is not None for n in limits)
                                else None)
            _split(members, [len(a.pulls) for a in pulls], flat_p, answers)
        for i in now:
            advance(i, answers[i])
    return out


def cast_soa(ask: _AskSoa | _AskPull) -> _AskSoa:
    assert isinstance(ask, _AskSoa)
    return ask


def cast_pull(ask: _AskSoa | _AskPull) -> _AskPull:
    assert isinstance(ask, _AskPull)
    return ask


def _split(members: list[int], sizes: list[int], flat: Sequence[Any],
           answers: dict[int, list[Any]]) -> None:
    at = 0
    for i, size in zip(members, sizes, strict=True):
        answers[i] = list(flat[at:at + size])
        at += size


def _pool() -> ThreadPoolExecutor:
    """The process's pool for blocking probes (IXFRs, NOTIFYs), shared by every gate."""
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or os.getpid() != _POOL_PID:
            _POOL = ThreadPoolExecutor(max_workers=POOL_WORKERS, thread_name_prefix="gate")
            _POOL_PID = os.getpid()
        return _POOL


_POOL: ThreadPoolExecutor | None = None
_POOL_PID = 0
_POOL_LOCK = threading.Lock()


def _each(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """fn over items, at once: all but the first in the shared pool, the first here."""
    if not items:
        return []
    futures = [_pool().submit(fn, item) for item in items[1:]]
    first = fn(items[0])
    return [first, *(f.result() for f in futures)]


class _Prober:
    """One gate's probes, a round at a time: every SOA question through the poller at once,
    every zone pull at once from one selector in the gate's thread, a pull skipped where
    a proof of the same digest at the same serial was made before
    (:mod:`bind9_topology.dns.proofs`)."""

    def __init__(self, zone: str, expected_serial: int | None, expected_digest: str | None,
                 key: dns.tsig.Key | None, proofs: ContentProofs, poller: SoaPoller,
                 sessions: Sessions, learn: bool = False) -> None:
        self.zone = zone
        self.sessions = sessions
        self.expected_serial = expected_serial
        self.digest = expected_digest.lower() if expected_digest else None
        self.key = key
        self.proofs = proofs
        self.poller = poller
        self.pulls = 0
        self.zone_records: int | None = None  # as a primary's proof counted them
        #: follow the primaries (a region's zone): no digest is given, each primary's is
        #: learned by a TSIG AXFR at the serial it serves (serial -> digest), and the one at
        #: the target serial is what the secondaries must prove
        self.learn = learn
        self.learned: dict[int, str] = {}
        #: a secondary's answer pulled beside the primaries' (:meth:`primaries`' *also*),
        #: by id(state), until :meth:`secondaries` judges it in the same round
        self.early: dict[int, TransferProbe] = {}

    def soa(self, states: Sequence[_State], key: dns.tsig.Key | None,
            timeout: float) -> Step[list[SoaProbe]]:
        """Every state's SOA (asked with the round's other zones' by :func:`_drive`)."""
        answers: list[SoaProbe] = yield _AskSoa(
            [SoaRequest(s.endpoint, self.zone, key) for s in states], timeout)
        return answers

    def pull(self, eps: Sequence[Endpoint], timeout: float,
             limits: Sequence[int | None] | None = None) -> Step[list[TransferProbe]]:
        """The zone from each server (pulled with the round's other zones' by :func:`_drive`,
        each over one of its server's sessions); *limits*: records read at most, per pull."""
        self.pulls += len(eps)
        probes: list[TransferProbe] = yield _AskPull(
            [(ep, self.zone) for ep in eps], self.key, timeout,
            tuple(limits) if limits is not None else None)
        return probes

    def proven(self, ep: Endpoint, serial: int, probe: TransferProbe) -> None:
        assert probe.digest is not None
        self.proofs.put(ep, self.zone, serial, probe.digest, probe.records)

    # ------------------------------------------------------------------ primaries

    def _earlier_proof(self, endpoint: Endpoint, serial: int) -> Proof | None:
        """A pull at *serial* that proved this primary's content before, else None: in
        follow mode any earlier pull, which also teaches the digest of that serial (a
        second digest at one serial is no proof), else one of the expected digest."""
        if self.learn and self.key is not None:
            known = self.proofs.known(endpoint, self.zone, serial)
            if known is None or self.learned.setdefault(serial, known.digest) != known.digest:
                return None
            return known
        if not self.digest:
            return None
        return self.proofs.get(endpoint, self.zone, serial, self.digest)

    def primaries(self, states: Sequence[_State], timeout: float,
                  also: Sequence[_State] = ()) -> Step[list[Result]]:
        """Every primary answers AA at or past the expected serial and proves its content:
        the digest of a TSIG AXFR at the serial it answered (pulled only when no pull at
        that serial proved it before), or without a digest a TSIG IXFR from its serial.

        *also*: secondaries pulled in the same exchange as the primaries' pulls (read up to
        ``DIRECT_PROOF_MAX_RECORDS`` records, not when the zone is known to be larger),
        their answers kept for :meth:`secondaries` to judge against the target this round:
        a zone whose servers are all ready is proven in two steps (the primaries' SOA,
        then every pull at once) instead of three."""
        out: list[Result | None] = [None] * len(states)
        pulls: list[tuple[int, int]] = []  # (index, serial)
        soas = yield from self.soa(states, None, timeout)
        for i, (st, soa) in enumerate(zip(states, soas, strict=True)):
            if not soa.ok or soa.serial is None:
                out[i] = (False, soa.serial, soa.reason, f"SOA: {soa.detail}")
            elif (self.expected_serial is not None
                  and not serial_at_least(soa.serial, self.expected_serial)):
                out[i] = (False, soa.serial, Reason.STALE_SERIAL,
                          f"serves serial {soa.serial}, behind the {self.expected_serial} it "
                          "served when this stack was checked: its serial went backwards"
                          if self.learn else
                          f"serves serial {soa.serial}, expected at least {self.expected_serial}")
            elif (self.learn and self.key is not None) or self.digest:
                proof = self._earlier_proof(st.endpoint, soa.serial)
                if proof is not None:
                    self.zone_records = proof.records
                    out[i] = (True, soa.serial, Reason.OK,
                              f"AXFR: serial {soa.serial}, {proof.records} records (proven by "
                              "an earlier pull at this serial)")
                else:
                    pulls.append((i, soa.serial))
            elif self.key is None:
                out[i] = (True, soa.serial, Reason.OK, f"serial {soa.serial}")
            else:
                pulls.append((i, soa.serial))

        if self.learn and self.key is not None and pulls:
            probes = yield from self.pull([states[i].endpoint for i, _ in pulls], timeout)
            for (i, serial), pulled in zip(pulls, probes, strict=True):
                out[i] = self._learn(states[i].endpoint, serial, pulled)
        elif self.digest and pulls:
            digest = self.digest
            newest = newest_serial(serial for _, serial in pulls)
            extra = [st for st in also if newest is not None and self.proofs.get(
                st.endpoint, self.zone, newest, digest) is None] if (
                self.key is not None and (self.zone_records is None
                                          or self.zone_records <= DIRECT_PROOF_MAX_RECORDS)
            ) else []
            probes = yield from self.pull(
                [states[i].endpoint for i, _ in pulls] + [st.endpoint for st in extra], timeout,
                [None] * len(pulls) + [DIRECT_PROOF_MAX_RECORDS] * len(extra) if extra else None)
            for st, early in zip(extra, probes[len(pulls):], strict=True):
                self.early[id(st)] = early
            for (i, serial), pulled in zip(pulls, probes[:len(pulls)], strict=True):
                probe = judge_primary_transfer(pulled, serial, digest, pulled.elapsed_s)
                if probe.ok:
                    self.zone_records = probe.records
                    self.proven(states[i].endpoint, serial, probe)
                out[i] = (probe.ok, probe.serial, probe.reason, probe.detail)
        elif pulls:
            def prove(item: tuple[int, int]) -> Result:
                i, serial = item
                assert self.key is not None
                probe_x = ixfr(states[i].endpoint, self.zone, since_serial=serial, key=self.key,
                               timeout=timeout, lifetime=30, sessions=self.sessions)
                if not probe_x.ok:
                    return False, serial, probe_x.reason, probe_x.detail
                return True, probe_x.serial, Reason.OK, f"serial {probe_x.serial}, TSIG transfer ok"

            for (i, _), result in zip(pulls, _each(prove, pulls), strict=True):
                out[i] = result
        return [r for r in out if r is not None]

    def _learn(self, ep: Endpoint, serial: int, pulled: TransferProbe) -> Result:
        """A followed primary's pull at *serial*: its digest is learned, or why not."""
        if not pulled.ok or pulled.digest is None:
            return (False, serial, pulled.reason,
                    f"serial {serial}, but its content could not be pulled: {pulled.detail}")
        if pulled.serial != serial:
            return (False, pulled.serial, Reason.STALE_SERIAL,
                    f"AXFR carried serial {pulled.serial}, its SOA answered {serial} (the "
                    "zone moved while it was pulled)")
        seen = self.learned.setdefault(serial, pulled.digest)
        if seen != pulled.digest:
            return (False, serial, Reason.CONTENT_MISMATCH,
                    f"serves other content at serial {serial} than another primary (digest "
                    f"{pulled.digest[:16]}, the other's {seen[:16]}): the primaries disagree")
        self.zone_records = pulled.records
        self.proven(ep, serial, pulled)
        return True, serial, Reason.OK, pulled.detail

    # ------------------------------------------------------------------ secondaries

    def secondaries(self, states: Sequence[_State], target: int, timeout: float,
                    ahead_is_stale: bool) -> Step[list[Result]]:
        """Every secondary answers AA at or past *target*; one at exactly *target* proves
        the primaries' content (TSIG AXFR digest) when there is a digest and a key.

        A small zone whose content must be proven is pulled at once, without the SOA
        query first: the signed transfer answers with AA, the serial and the content in
        one exchange. Only "exactly the target, this digest, AA" passes that way; any
        other answer is asked again the usual way, which names what is wrong.
        """
        out: list[Result | None] = [None] * len(states)
        key, digest = self.key, self.digest
        direct: list[int] = []
        early: list[tuple[int, TransferProbe]] = []
        for i, st in enumerate(states):
            got = self.early.pop(id(st), None)
            if got is not None and key is not None and digest:
                st.pulled_directly = True
                early.append((i, got))
        if key is not None and digest and self.zone_records is not None \
                and self.zone_records <= DIRECT_PROOF_MAX_RECORDS:
            for i, st in enumerate(states):
                if not st.pulled_directly and self.proofs.get(
                        st.endpoint, self.zone, target, digest) is None:
                    st.pulled_directly = True
                    direct.append(i)

        pulled = ((yield from self.pull([states[i].endpoint for i in direct], timeout))
                  if direct else [])
        for i, probe in [*early, *zip(direct, pulled, strict=True)]:
            if (probe.ok and probe.authoritative and probe.serial == target
                    and probe.digest == digest):
                self.proven(states[i].endpoint, target, probe)
                out[i] = (True, target, Reason.OK, f"serial {target}, content digest verified")
        rest = [i for i in range(len(states)) if out[i] is None]
        soas = (yield from self.soa([states[i] for i in rest], key, timeout)) if rest else []
        pulls: list[tuple[int, int]] = []
        for i, soa in zip(rest, soas, strict=True):
            detail = _secondary_detail(soa)
            if not soa.ok or soa.serial is None:
                out[i] = (False, soa.serial, soa.reason, detail)
            elif not serial_at_least(soa.serial, target):
                out[i] = (False, soa.serial, Reason.STALE_SERIAL,
                          f"serves serial {soa.serial}, expected at least {target}")
            elif ahead_is_stale and soa.serial != target:
                # Ahead of what the primaries serve: the serial went backwards (state lost,
                # zone recreated) and this secondary keeps its old data until the serial
                # passes it.
                out[i] = (False, soa.serial, Reason.STALE_SERIAL,
                          f"serves serial {soa.serial}, ahead of the primaries' {target}: the "
                          "zone's serial went backwards, so this secondary keeps old data")
            elif digest and key is not None and soa.serial == target:
                # The same serial is not the same content: a serial reused after lost state
                # leaves the old data on a secondary that sees nothing newer to transfer.
                # Prove the content the primaries were proven to serve (TSIG AXFR digest).
                if self.proofs.get(states[i].endpoint, self.zone, target, digest) is not None:
                    out[i] = (True, target, Reason.OK,
                              f"serial {target}, content digest verified (by an earlier pull "
                              "at this serial)")
                else:
                    pulls.append((i, soa.serial))
            else:
                out[i] = (True, soa.serial, Reason.OK, f"serial {soa.serial}")

        def prove(i: int, serial: int, probe: TransferProbe) -> Result:
            assert digest is not None
            if not probe.ok:
                return (False, serial, probe.reason,
                        f"serial {serial}, but its content could not be proven: {probe.detail} "
                        "(secondaries must allow TSIG transfers with the project's key)")
            if probe.serial == target and probe.digest != digest:
                return (False, serial, Reason.CONTENT_MISMATCH,
                        f"serves serial {serial} with other content than the primaries "
                        f"(digest {(probe.digest or '-')[:16]}, rendered {digest[:16]}): "
                        "the serial was reused, so this secondary keeps old data")
            if probe.serial == target:
                self.proven(states[i].endpoint, target, probe)
            return True, serial, Reason.OK, f"serial {serial}, content digest verified"

        if pulls:
            probes = yield from self.pull([states[i].endpoint for i, _ in pulls], timeout)
            for (i, serial), probe in zip(pulls, probes, strict=True):
                out[i] = prove(i, serial, probe)
        return [r for r in out if r is not None]


def _secondary_detail(soa: SoaProbe) -> str:
    """What a secondary's signed SOA answer says, a TSIG rejection named as the key's fault.

    A secondary that holds another key (name, algorithm or secret) answers the signed
    query BADKEY or BADSIG: the very key it signs its transfer requests and checks
    NOTIFYs with is wrong, so its transfers are refused. That is named at once instead
    of the SERVFAIL it shows for a zone it never managed to transfer.
    """
    if soa.reason in TSIG_REASONS:
        return (f"the secondary rejects the project's TSIG key ({soa.detail}); it holds "
                "another key, so the primaries refuse its transfers and it ignores their "
                "NOTIFYs")
    return soa.detail


def wait_until_transferred(
    zone: str,
    primaries: Sequence[Endpoint],
    secondaries: Sequence[Endpoint],
    expected_serial: int | None,
    expected_digest: str | None,
    key: dns.tsig.Key | None,
    deadline_s: float,
    poll_s: float = 1.0,
    on_progress: Callable[[GateProgress], None] | None = None,
    *,
    probe_timeout_s: float = 1.0,
    tsig_grace_s: float | None = None,
    expected_ds: Sequence[str] | None = None,
    proofs: ContentProofs | None = None,
    poller: SoaPoller | None = None,
    follow_primaries: bool = False,
    sessions: Sessions | None = None,
) -> GateReport:
    """Poll until every primary and secondary passes, or the deadline; never raises for DNS.

    With *expected_ds* (a signed zone), a server passes only once it also serves DNSKEY
    and a signed SOA whose RRSIG validates against the DNSKEY matching that DS.
    *proofs*: content proofs made before (default: the process's); *poller*: the SOA
    poller (default: the process's); *sessions*: the kept TCP connections every TCP
    exchange goes over (default: the process's; whoever hands out the endpoints closes
    them when its run ends, as ``kube.forward.endpoint_resolver`` does).

    *follow_primaries* (a region's zone, whose primaries another stack moves; ADR 13):
    *expected_digest* is not given but learned, by a TSIG AXFR of each primary at the
    serial it serves (a proof from an earlier pull at that serial counts); *expected_serial*
    is a floor (what the primaries served when the stack was checked: serials never go
    back). The secondaries must serve the newest serial of the primaries or a later one,
    with that content. A secondary ahead of it makes the gate ask the primaries again
    (every round it is ahead): a primary that moved on since is followed, not failed; a
    secondary still ahead of every primary keeps old data and fails as usual.
    """
    job = ZoneJob(zone, tuple(primaries), tuple(secondaries), expected_serial,
                  expected_digest, tuple(expected_ds) if expected_ds else None,
                  follow_primaries)
    return wait_many([job], key, deadline_s, poll_s, on_progress,
                     probe_timeout_s=probe_timeout_s, tsig_grace_s=tsig_grace_s,
                     proofs=proofs, poller=poller, sessions=sessions)[0]


@dataclass(frozen=True)
class ZoneJob:
    """One zone for :func:`wait_many`: its servers and what they must serve (the
    arguments of :func:`wait_until_transferred` that are the zone's own)."""

    zone: str
    primaries: Sequence[Endpoint]
    secondaries: Sequence[Endpoint]
    expected_serial: int | None
    expected_digest: str | None = None
    expected_ds: Sequence[str] | None = None
    follow_primaries: bool = False


def wait_many(
    jobs: Sequence[ZoneJob],
    key: dns.tsig.Key | None,
    deadline_s: float,
    poll_s: float = 1.0,
    on_progress: Callable[[GateProgress], None] | None = None,
    *,
    probe_timeout_s: float = 1.0,
    tsig_grace_s: float | None = None,
    proofs: ContentProofs | None = None,
    poller: SoaPoller | None = None,
    sessions: Sessions | None = None,
    on_report: Callable[[GateReport], None] | None = None,
) -> list[GateReport]:
    """:func:`wait_until_transferred` of every job at once, in this thread: one report per
    job, in order, each exactly what the zone's own gate would report.

    Each zone keeps its own rounds, pacing and deadline; the rounds of the zones that
    are due go together through :func:`_drive` (at most ``BATCH_ZONES`` at a time), so
    10,000 zones cost batches of questions and pulls, not a thread and a selector per
    zone. *on_report* is told each zone's report the moment it is decided.
    """
    groups = min(GATE_THREADS, len(jobs))
    with _fewer_collections(len(jobs)):
        if groups <= 1:
            return _wait_many(jobs, key, deadline_s, poll_s, on_progress, probe_timeout_s,
                              tsig_grace_s, proofs, poller, sessions, on_report)
        # zones dealt round-robin to a few threads, each batching its own: a slow step
        # (a probe waiting out its timeout) holds back one group's rounds, not every zone's
        with ThreadPoolExecutor(max_workers=groups, thread_name_prefix="gate-group") as pool:
            parts = list(pool.map(
                lambda g: _wait_many(jobs[g::groups], key, deadline_s, poll_s, on_progress,
                                     probe_timeout_s, tsig_grace_s, proofs, poller, sessions,
                                     on_report), range(groups)))
        out: list[GateReport] = [None] * len(jobs)  # type: ignore[list-item]
        for g, part in enumerate(parts):
            out[g::groups] = part
        return out


#: threads a large wait_many deals its zones to (each batches the rounds of its share)
GATE_THREADS = 8


#: above this many zones, :func:`wait_many` collects garbage less often
GC_ZONES = 500


@contextlib.contextmanager
def _fewer_collections(zones: int) -> Iterator[None]:
    """Young-generation collections less often while a large gate runs: its objects are
    (almost all) acyclic and freed by reference counting, but tens of thousands of them
    live at once, and each automatic collection walked them (a third of the CPU of 3,000
    zones in one run, measured; at 10,000 zones x 4 servers the older generations' scans
    were still 0.8 of 7.4 s, py-spy and a run with the collector off). Restored on the way
    out; cycles are still collected."""
    if zones < GC_ZONES:
        yield
        return
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], 200_000), max(before[1], 50), max(before[2], 50))
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _wait_many(
    jobs: Sequence[ZoneJob], key: dns.tsig.Key | None, deadline_s: float, poll_s: float,
    on_progress: Callable[[GateProgress], None] | None, probe_timeout_s: float,
    tsig_grace_s: float | None, proofs: ContentProofs | None, poller: SoaPoller | None,
    sessions: Sessions | None, on_report: Callable[[GateReport], None] | None,
) -> list[GateReport]:
    proofs = proofs if proofs is not None else default_proofs()
    poller = poller if poller is not None else default_poller()
    sessions = sessions if sessions is not None else default_sessions()
    grace = tsig_grace_s if tsig_grace_s is not None else min(3.0, deadline_s / 3)
    runs = [_GateRun(
        job.zone, job.primaries, job.secondaries, job.expected_serial, key, deadline_s,
        prober=_Prober(job.zone, job.expected_serial,
                       None if job.follow_primaries else job.expected_digest, key, proofs,
                       poller, sessions, learn=job.follow_primaries),
        probe_timeout_s=probe_timeout_s, grace_s=grace, expected_ds=job.expected_ds,
        follow_primaries=job.follow_primaries) for job in jobs]
    reports: list[GateReport | None] = [None] * len(runs)
    due = [0.0] * len(runs)
    delays = [FIRST_DELAY_S] * len(runs)
    last_progress = [0.0] * len(runs)
    active = list(range(len(runs)))
    while active:
        now = time.monotonic()
        ready = [i for i in active if due[i] <= now][:BATCH_ZONES]
        if not ready:
            time.sleep(max(0.0, min(due[i] for i in active) - now))
            continue
        for i in ready:
            runs[i].begin()
            last_progress[i] = last_progress[i] or runs[i].start

        def settle(k: int, moved: bool, ready: list[int] = ready) -> None:
            """Zone ready[k]'s round ended (the moment it did, whatever the batch's other
            zones still wait for): its report, or when its next round is due."""
            i = ready[k]
            run = runs[i]
            now = time.monotonic()
            if on_progress is not None:
                on_progress(GateProgress(run.zone, sum(s.ok for s in run.states),
                                         len(run.states), round(now - run.start, 3),
                                         run.rounds))
            report = None
            if run.done():
                report = _report(run.zone, True, run.target, run.states, run.start, now,
                                 pulls=run.prober.pulls)
            else:
                fatal = run.fatal(now)
                if fatal is not None or now >= run.end:
                    report = _report(run.zone, False, run.target, run.states, run.start,
                                     None, deadline_s=deadline_s, fatal=fatal,
                                     pulls=run.prober.pulls)
            if report is not None:
                reports[i] = report
                if on_report is not None:
                    on_report(report)
                return
            if moved:
                last_progress[i] = now
            cap = min(poll_s, FAST_CAP_S) if now - last_progress[i] < FAST_WINDOW_S else poll_s
            delays[i] = FIRST_DELAY_S if moved else min(cap, delays[i] * BACKOFF)
            due[i] = now + max(0.0, min(delays[i], run.end - now))

        _drive([runs[i].round() for i in ready], poller, sessions, settle)
        active = [i for i in active if reports[i] is None]
    return [r for r in reports if r is not None]


class _GateRun:
    """One gate's servers and target, and one polling round at a time (the loop and its
    pacing are wait_until_transferred's)."""

    def __init__(self, zone: str, primaries: Sequence[Endpoint],
                 secondaries: Sequence[Endpoint], expected_serial: int | None,
                 key: dns.tsig.Key | None, deadline_s: float, *, prober: _Prober,
                 probe_timeout_s: float, grace_s: float,
                 expected_ds: Sequence[str] | None, follow_primaries: bool) -> None:
        self.zone, self.key, self.prober = zone, key, prober
        self.deadline_s = deadline_s
        self.start = time.monotonic()
        self.end = self.start + deadline_s
        self.begun = False
        self.grace_s, self.expected_ds = grace_s, expected_ds
        self.follow_primaries = follow_primaries
        self.probe_timeout_s = self.timeout = probe_timeout_s
        self.states = [_State(ep, "primary") for ep in primaries] + [
            _State(ep, "secondary") for ep in secondaries]
        self.prim = [s for s in self.states if s.role == "primary"]
        self.sec = [s for s in self.states if s.role == "secondary"]
        #: the serial every secondary must serve (at least): the primaries' once they pass
        self.target: int | None = expected_serial if not self.prim else None
        self.rounds = 0

    def record(self, st: _State, result: Result) -> bool:
        """Take one probe's result for *st*; True when it moved (passed, or a new serial)."""
        ok, serial, reason, detail = result
        if ok and self.expected_ds:
            from bind9_topology.dns.dnssec import check_signed

            signed_ok, signed_detail = check_signed(st.endpoint, self.zone, self.expected_ds,
                                                    timeout=max(self.timeout, 1.0),
                                                    sessions=self.prober.sessions)
            if signed_ok:
                detail = f"{detail}; {signed_detail}"
            else:
                ok, reason, detail = False, Reason.UNSIGNED, f"{detail}, but {signed_detail}"
        progressed = serial != st.serial
        st.attempts += 1
        st.serial, st.reason, st.detail = serial, reason, detail
        now = time.monotonic()
        if ok:
            st.ok = True
            st.verified_at = _now_iso()
            st.ready_after_s = round(now - self.start, 4)
            st.tsig_since = None
            return True
        if reason in TSIG_REASONS or (reason is Reason.CONTENT_MISMATCH
                                      and st.role == "secondary"):
            # neither fixes itself: a wrong key stays wrong, and a secondary with other
            # content at the target serial sees nothing newer to transfer
            st.tsig_since = st.tsig_since or now
        else:
            st.tsig_since = None
        return progressed

    def begin(self) -> None:
        """The zone's clock starts with its first round (in :func:`wait_many`, a zone whose
        turn comes after other zones' first rounds has its whole deadline, as it would
        in a gate of its own)."""
        if not self.begun:
            self.begun = True
            self.start = time.monotonic()
            self.end = self.start + self.deadline_s

    def round(self) -> Step[bool]:
        """Probe every server not passed yet; True when anything moved."""
        self.begin()
        self.rounds += 1
        remaining = max(0.05, self.end - time.monotonic())
        self.timeout = min(self.probe_timeout_s, remaining)
        progressed = False
        pending_p = [s for s in self.prim if not s.ok]
        if pending_p:
            also = ([s for s in self.sec if not s.ok and not s.pulled_directly]
                    if self._pull_at_once() else [])
            results = yield from self.prober.primaries(pending_p, self.timeout, also)
            for s, result in zip(pending_p, results, strict=True):
                progressed |= self.record(s, result)
        if self.prim and all(s.ok for s in self.prim) and self.target is None:
            self.target = newest_serial(s.serial for s in self.prim if s.serial is not None)
            if self.follow_primaries and self.target is not None:
                self.prober.digest = self.prober.learned.get(self.target)
        pending_s = [s for s in self.sec if not s.ok]
        if pending_s and self.target is not None:
            progressed |= yield from self._secondaries(pending_s, self.target)
        elif pending_s and (self.rounds == 1 or self.rounds % 10 == 0):
            yield from self._describe_waiting(pending_s)
        self.prober.early.clear()  # an answer is judged in its own round or not at all
        return progressed

    def _pull_at_once(self) -> bool:
        """Pull the secondaries beside the primaries (:meth:`_Prober.primaries`' *also*): a
        zone of this stack (digest and serial known), not signed (the DNSKEY checks follow
        each pass), with a key."""
        p = self.prober
        return (bool(self.prim) and p.digest is not None and p.key is not None
                and not p.learn and p.expected_serial is not None and not self.expected_ds)

    def _secondaries(self, pending: list[_State], target: int) -> Step[bool]:
        progressed = False
        results = yield from self.prober.secondaries(pending, target, self.timeout,
                                                     bool(self.prim))
        for s, result in zip(pending, results, strict=True):
            progressed |= self.record(s, result)
        if self.follow_primaries and self.prim and any(
                not s.ok and s.serial is not None
                and serial_compare_safe(s.serial, target) > 0 for s in pending):
            progressed |= yield from self._follow_moved_primaries(target)
        if self.key is not None and self.target is not None:
            _nudge_lagging(pending, self.zone, self.target, self.key, self.timeout)
        return progressed

    def _follow_moved_primaries(self, target: int) -> Step[bool]:
        """A secondary ahead of the primaries: they may have moved on since they were
        asked. Ask them again; when every one answers, the newest serial they serve now
        is the target (serials only go forward)."""
        again = yield from self.prober.primaries(self.prim, self.timeout)
        newer = newest_serial(r[1] for r in again if r[1] is not None)
        if not (all(r[0] for r in again) and newer is not None
                and serial_compare_safe(newer, target) > 0):
            return False
        for s, result in zip(self.prim, again, strict=True):
            self.record(s, result)
        self.target, self.prober.digest = newer, self.prober.learned.get(newer)
        return True

    def _describe_waiting(self, pending: list[_State]) -> Step[None]:
        """No target yet: probe now and then so the report says what they serve."""
        soas = yield from self.prober.soa(pending, self.key, self.timeout)
        for s, soa in zip(pending, soas, strict=True):
            detail = _secondary_detail(soa)
            s.serial, s.reason = soa.serial, soa.reason
            s.detail = (detail if soa.reason in TSIG_REASONS
                        else f"waiting for the primaries ({detail})")
            s.attempts += 1
            if soa.reason in TSIG_REASONS:
                s.tsig_since = s.tsig_since or time.monotonic()

    def done(self) -> bool:
        return all(s.ok for s in self.states) and (self.target is not None or not self.prim)

    def fatal(self, now: float) -> _State | None:
        """A server failing for a reason that does not fix itself, for the grace period."""
        return next((s for s in self.states if s.tsig_since is not None
                     and now - s.tsig_since >= self.grace_s and s.attempts >= 3), None)


def _nudge_lagging(states: Sequence[_State], zone: str, target: int, key: dns.tsig.Key,
                   timeout: float) -> None:
    """Send a signed NOTIFY to each secondary still behind *target* (fire and forget)."""
    now = time.monotonic()
    for st in states:
        behind = (not st.ok and st.serial is not None
                  and not serial_at_least(st.serial, target))
        if not behind:
            st.behind_since = None
            continue
        st.behind_since = st.behind_since or now
        if now - st.behind_since >= NUDGE_AFTER_S and now - st.nudged_at >= NUDGE_EVERY_S:
            st.nudged_at = now
            _pool().submit(send_notify, st.endpoint, zone, key=key, serial=target,
                           timeout=timeout)


def _report(
    zone: str, ok: bool, target: int | None, states: list[_State], start: float,
    ready_at: float | None, *, deadline_s: float = 0.0, fatal: _State | None = None,
    pulls: int = 0,
) -> GateReport:
    elapsed = round(time.monotonic() - start, 4)
    servers = tuple(s.freeze() for s in states)
    if ok:
        message = (f"zone {zone}: ready at serial {target} on {len(servers)} server(s) "
                   f"in {elapsed:.3f}s")
    else:
        lag = [s for s in servers if not s.ok]
        if fatal is not None and fatal.reason is Reason.CONTENT_MISMATCH:
            why = (f"{fatal.endpoint} serves other content at serial {fatal.serial} "
                   f"({fatal.reason.name}), giving up after {elapsed:.1f}s")
        elif fatal is not None:
            why = (f"TSIG rejected by {fatal.endpoint} ({fatal.reason.name}), giving up after "
                   f"{elapsed:.1f}s")
        else:
            why = f"not ready after {deadline_s:g}s"
        parts = [
            f"  - {s.role} {s.endpoint}: serves serial "
            f"{s.serial if s.serial is not None else 'none'}, last error {s.reason.name} "
            f"({s.detail}), {s.attempts} attempt(s)\n      fix: {fix_for(s)}"
            for s in lag
        ]
        target_text = f"target serial {target}" if target is not None else "target serial unknown"
        message = f"zone {zone}: {why} ({target_text}); lagging:\n" + "\n".join(parts)
    return GateReport(zone, ok, target, servers, elapsed, message, ready_at, pulls)


def fix_for(status: ServerStatus) -> str:
    """What to do about one lagging server, by the reason it failed."""
    reason, role = status.reason, status.role
    if reason in TSIG_REASONS:
        return ("this server holds another TSIG key than the gate (name, algorithm or secret): "
                "every instance and region stack must use the same bind9-topology:tsigKey and "
                "tsigSecret (pulumi config set --secret bind9-topology:tsigSecret ...), "
                "then roll the server so it reads the key again")
    if reason in (Reason.TIMEOUT, Reason.CONNECTION_REFUSED, Reason.ERROR):
        return ("the gate cannot reach it: check that the server runs (its pod's logs) and that "
                "this machine reaches that address and port (gate.addressMap, the Service, the "
                "NetworkPolicy's allowQuery)")
    if reason is Reason.CONTENT_MISMATCH:
        return ("it serves other content at this serial: a serial was reused (state lost or "
                "edited); change the zone again or run `pulumi up` again so the serial moves "
                "past every serial served")
    if reason is Reason.STALE_SERIAL and role == "primary" and "went backwards" in status.detail:
        return ("the primaries serve an older serial than when this region stack was checked "
                "(the primary stack's state was lost or restored): run `pulumi up` of the "
                "primary stack, whose serials move past every serial served, then of this "
                "region stack again")
    if reason is Reason.STALE_SERIAL and role == "primary":
        return ("the primary has not loaded the rendered zone: check its pod rolled and its "
                "log for zone load errors")
    if reason is Reason.STALE_SERIAL:
        if status.detail and "ahead of the primaries" in status.detail:
            return ("the zone's serial went backwards: run `pulumi up` again (the serial moves "
                    "past the highest one served)")
        return ("the secondary has not transferred yet: check that it reaches the primaries "
                "(secondaryConfig.primaryServers, TCP 53 through the NetworkPolicy) and its "
                "log for transfer errors, or raise gate.deadlineSeconds")
    if reason is Reason.REFUSED:
        return ("the server refused the gate: check allowQuery (queries) and, for transfers, "
                "that the TSIG key is allowed")
    if role == "secondary":
        return ("the secondary does not serve the zone (no transfer yet): check its log for "
                "transfer errors (unreachable primaries, TSIG) and that it lists the zone")
    return "the primary does not serve the zone: check its log for zone load errors"


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class GatePlan:
    """Which servers one zone's gate checks, as the stack config names them."""

    zone: str
    resource_name: str  # the DNSZone resource the gate belongs to
    primaries: tuple[tuple[str, str], ...]  # (label, address as in config: 'ip' or 'ip:port')
    secondaries: tuple[tuple[str, str | None], ...]  # (instance, its fixed service address or None)
    primary_zone: bool  # the zone's content is rendered by this stack (digest known)
    instances: tuple[str, ...] = field(default=())  # instances whose Deployments it waits for


def gate_plans(spec: Any) -> list[GatePlan]:
    """One plan per zone name of the stack (spec: a model.StackSpec).

    A primary zone gates its primaries and this stack's secondaries of the
    same zone name; a zone that is only secondary here gates this stack's
    secondaries against ``secondaryConfig.primaryServers``.
    """
    plans: list[GatePlan] = []
    seen: set[str] = set()
    members = _catalog_members(spec)
    by_name: dict[str, list[Any]] = {}
    for zone in spec.zones:
        by_name.setdefault(zone.zoneName, []).append(zone)
    for zone in spec.zones:
        if zone.zoneName in seen:
            continue
        seen.add(zone.zoneName)
        entries = by_name[zone.zoneName]
        primary = next((z for z in entries if z.type == "primary"), None)
        secondary_insts: list[Any] = []
        for z in entries:
            if z.type == "secondary":
                for inst in spec.instances_for(z):
                    if inst not in secondary_insts:
                        secondary_insts.append(inst)
        secs = tuple((i.name, i.service.fixed_address) for i in secondary_insts)
        if primary is not None:
            if zone.zoneName in members:  # other stacks' secondaries, through the catalog
                own = {a for _, a in secs if a}
                secs += tuple((a, a) for a in primary.alsoNotify if a not in own)
            prim_insts = spec.instances_for(primary)
            prims = tuple((i.name, i.service.fixed_address or "") for i in prim_insts)
            plans.append(GatePlan(zone.zoneName, primary.resource_name, prims, secs, True,
                                  tuple(i.name for i in [*prim_insts, *secondary_insts])))
        else:
            servers: list[str] = []
            for z in entries:
                for s in (z.secondaryConfig.primaryServers if z.secondaryConfig else []):
                    if s not in servers:
                        servers.append(s)
            plans.append(GatePlan(zone.zoneName, zone.resource_name,
                                  tuple((s, s) for s in servers), secs, False,
                                  tuple(i.name for i in secondary_insts)))
    return plans


def _catalog_members(spec: Any) -> set[str]:
    """Zones of the stack's catalog (and the catalog) whose gate also checks every
    alsoNotify address: secondaries of other stacks create them from the catalog."""
    catalog = getattr(spec, "catalog", None)
    if catalog is None or not catalog.verifySecondaries:
        return set()
    from bind9_topology.config.catalog import catalog_members

    return catalog_members(spec)


def map_address(address: str, address_map: Mapping[str, str]) -> tuple[str, int]:
    """'ip' or 'ip:port' from config, through ``gate.addressMap`` (keys 'ip' or 'ip:port')."""
    host, port = parse_server(address)  # endpoints are IPs; fails loudly otherwise
    for key in (address, f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"):
        if key in address_map:
            return parse_server(address_map[key])
    if port == 53 and host in address_map:
        return parse_server(address_map[host])
    return host, port
