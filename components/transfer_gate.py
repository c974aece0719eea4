"""TransferGate: one dynamic resource per stack, ready only once its zones really transferred.

The provider runs in the engine's provider host (``python -m pulumi.dynamic``)
from a dill-serialized copy, so this module imports only Pulumi and the standard
library at the top; the DNS work (dnspython, bind9_topology.dns.gate) is imported
inside the methods. The provider object carries no state: its serialized form never
changes, so it never shows up as a diff.

Inputs: ``servers`` {ref: {name, host, port}} (probed directly) or {ref: {name, instance,
namespace, via: "kubernetes-api"}} (every pod of the instance's current ReplicaSet through
a port-forward of the API), each stack's servers once; ``zones`` {zoneName: {primaries,
secondaries, expectedSerial, expectedDigest, expectedDs, triggers}} where primaries and
secondaries are refs into ``servers``, space-separated in one string (ADR 19's compact
shape; a state from before it, or a caller, may hold each zone's servers as lists of
targets: both are read, :func:`zone_props`), and for all zones: tsigKeyName,
tsigAlgorithm, tsigSecret (secret), deadlineSeconds, pollIntervalSeconds, kubeconfig
(secret) and kubeContext (those of the stack's Kubernetes provider); ``expectedSerials``
{zoneName: serial} (the stack's ZoneSerials, one Output) is folded into each zone's
expectedSerial by ``check``, so the stored inputs keep one shape.

Region stacks follow the primary (ADR 13): a zone with no serial and no digest of its own
whose primaries are direct addresses (another stack's primaries, an external primary) is
*followed*. ``check`` (preview and up) asks its primaries what they serve now (one SOA
question per server bounded to 1 s, then every zone from one socket; a TSIG AXFR digest
only where the serial moved) and adds primarySerial, primaryDigest and primaryErrors (the
primaries that could not be asked, and why) to the zone's inputs, so `pulumi preview
--diff` names the zones whose primary moved and ``update`` re-verifies exactly those: every
secondary pod at that serial or a later one, with the primaries' content.
Outputs: ready (every zone), status {zoneName: {ready, servedSerial, servers {name:
"role serial reason attempts verifiedAt host port"}, readyAfterSeconds, checkedAt}} (a
server as one string, :func:`server_status` reads it back; an older state's dicts too).

One resource per stack instead of one per zone keeps a 1,000-zone stack to a few
resources; an update re-checks only the zones whose inputs changed (and any zone not
yet ready), concurrently, and keeps the others' status. `pulumi preview --diff` shows
which zones' inputs change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from components.args import KubeAccess, TsigArgs, plain, tsig_key

if TYPE_CHECKING:  # the provider host loads this module with Pulumi and the stdlib only
    from bind9_topology.dns.targets import Target

#: inputs shared by every zone of the gate
SHARED_KEYS = (
    "tsigKeyName", "tsigAlgorithm", "tsigSecret", "deadlineSeconds", "pollIntervalSeconds",
    "kubeconfig", "kubeContext",
)
#: one zone's inputs, under zones[zoneName]
#: what a followed zone's primaries served when the gate was checked (ADR 13)
FOLLOW_KEYS = ("primarySerial", "primaryDigest", "primaryErrors")
ZONE_KEYS = ("primaries", "secondaries", "expectedSerial", "expectedDigest", "expectedDs",
             "triggers", *FOLLOW_KEYS)
#: how long a primary may take to answer the check's SOA question (ZoneSerials' bound too)
FOLLOW_PROBE_TIMEOUT_S = 1.0
#: bounds of the check's pull of a followed zone whose primary serial moved
FOLLOW_PULL_TIMEOUT_S = 2.0
FOLLOW_PULL_LIFETIME_S = 60.0
#: kept connections per primary while observing what the primaries serve
FOLLOW_SESSIONS = 16
INPUT_KEYS = (*SHARED_KEYS, "servers", "zones")
#: the per-zone keys that name servers (refs into ``servers``, or an older state's lists)
SERVER_KEYS = ("primaries", "secondaries")
OUTPUT_KEYS = ("ready", "status")


class GateFailed(Exception):
    """The zone did not transfer in time; the message names each lagging server.

    Its str is everything the user needs (server, serial, reason, fix), so the engine's
    provider host reports it without a Python traceback (:func:`report_cleanly`).
    """

    report_without_traceback = True


class _CleanTraceback:
    """Stands in for the ``traceback`` module inside the provider host's ``__main__``.

    The host (pulumi/dynamic/__main__.py) wraps Create, Update, Read, Diff, Check and
    Delete in ``_abort_with_traceback``, which aborts the gRPC call with
    ``traceback.format_exc()`` as the error the engine prints. For an exception that
    says ``report_without_traceback``, this returns its message alone; anything else
    (a bug) keeps its full traceback.
    """

    _bind9_clean = True

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def format_exc(self, *args: Any, **kwargs: Any) -> str:
        import sys

        exc = sys.exc_info()[1]
        if exc is not None and getattr(exc, "report_without_traceback", False):
            return str(exc)
        return str(self._real.format_exc(*args, **kwargs))


def report_cleanly() -> None:
    """In the engine's provider host, report GateFailed as its message alone (idempotent).

    Does nothing anywhere else (tests, the program): only a ``__main__`` that is the
    dynamic provider host (it defines ``_abort_with_traceback``) is touched.
    """
    import sys

    main = sys.modules.get("__main__")
    real = getattr(main, "traceback", None)
    if main is None or real is None or not hasattr(main, "_abort_with_traceback"):
        return
    if not getattr(real, "_bind9_clean", False):
        main.traceback = _CleanTraceback(real)  # type: ignore[attr-defined]


class TransferGateProvider(ResourceProvider):
    serialize_as_secret_always = True

    def configure(self, req: Any) -> None:  # called by the host when it loads the provider
        report_cleanly()

    # -- helpers (imports are local: the provider host loads this from dill) --

    @staticmethod
    def _key(props: dict[str, Any]) -> Any:
        try:
            return tsig_key(props)
        except ValueError as exc:  # the message names the key, never the secret
            raise GateFailed(str(exc)) from None

    @staticmethod
    @contextlib.contextmanager
    def _resolver(props: dict[str, Any], items: list[Any],
                  what: str) -> Iterator[Callable[[Any], list[Any]]]:
        """``expand(servers)`` -> endpoints for any of *items*: direct addresses as given,
        owned instances pod by pod through the Kubernetes API (bind9_topology.kube.forward),
        the pods looked up and forwarded once for all of them. An API that cannot be asked
        is a GateFailed with the fix."""
        from bind9_topology.kube.forward import KubeApiError, endpoint_resolver

        try:
            with endpoint_resolver(items, plain(props.get("kubeconfig")) or None,
                                   props.get("kubeContext") or None) as expand:
                yield expand
        except KubeApiError as exc:
            raise GateFailed(f"{what}: {exc}") from None

    @classmethod
    @contextlib.contextmanager
    def _targets(cls, props: dict[str, Any]) -> Iterator[tuple[list[Any], list[Any]]]:
        """One zone's primaries and secondaries as endpoints."""
        primaries = list(props.get("primaries") or [])
        secondaries = list(props.get("secondaries") or [])
        with cls._resolver(props, [*primaries, *secondaries],
                           f"zone {props.get('zoneName')}") as expand:
            yield expand(primaries), expand(secondaries)

    def _wait(self, props: dict[str, Any],
              expand: Callable[[Any], list[Any]] | None = None) -> dict[str, Any]:
        """Gate one zone (*props*: zone_props); *expand*: a resolver shared with the gate's
        other zones, else the zone opens its own."""
        if expand is None:
            with self._targets(props) as (primaries, secondaries):
                return self._verify(props, primaries, secondaries)
        return self._verify(props, expand(props.get("primaries") or []),
                            expand(props.get("secondaries") or []))

    def _verify(self, props: dict[str, Any], primaries: list[Any],
                secondaries: list[Any]) -> dict[str, Any]:
        """Gate one zone (*props*: zone_props) against the given endpoints."""
        report = self._gate_many([(props, primaries, secondaries)])[0]
        if not report.ok:
            raise GateFailed(report.message + _unasked(props))
        return _zone_status(report)

    def _gate_many(self, zones: list[tuple[dict[str, Any], list[Any], list[Any]]]) -> list[Any]:
        """One gate report per (zone_props, primaries, secondaries): every zone in one
        ``wait_many`` (their rounds batched: ADR 19), the shared inputs from the first."""
        from bind9_topology.dns.gate import ZoneJob, wait_many

        report_cleanly()
        first = zones[0][0]
        jobs = []
        for props, primaries, secondaries in zones:
            follow = follows(props)
            expected = props.get("primarySerial" if follow else "expectedSerial")
            jobs.append(ZoneJob(
                str(props["zoneName"]), primaries, secondaries,
                int(expected) if expected is not None else None,
                props.get("expectedDigest") or None,
                props.get("expectedDs") or None, follow))
        return wait_many(jobs, self._key(first), float(first.get("deadlineSeconds") or 300),
                         float(first.get("pollIntervalSeconds") or 1.0))

    def _check_zones(self, props: dict[str, Any], zones: list[str],
                     previous: dict[str, Any]) -> dict[str, Any]:
        """Gate *zones* together (one wait_many); keep *previous* status for the others."""
        report_cleanly()
        every = dict(props.get("zones") or {})
        status = {z: previous[z] for z in every if z in previous and z not in zones}
        failures: dict[str, str] = {}
        if zones:
            own = {z: zone_props(props, z) for z in zones}
            what = f"zone {zones[0]}" if len(zones) == 1 else f"{len(zones)} zones"
            with self._resolver(props, _servers(own.values()), what) as expand:
                reports = self._gate_many([
                    (own[z], expand(own[z].get("primaries") or []),
                     expand(own[z].get("secondaries") or [])) for z in zones])
            for zone, report in zip(zones, reports, strict=True):
                if report.ok:
                    status[zone] = _zone_status(report)
                else:
                    failures[zone] = report.message + _unasked(own[zone])
        if failures:
            head = (f"{len(failures)} of {len(every)} zone(s) not ready"
                    if len(every) > 1 else "")
            raise GateFailed("\n".join([*([head] if head else []),
                                        *(failures[z] for z in sorted(failures))]))
        return {**{k: props.get(k) for k in INPUT_KEYS}, "ready": True,
                "status": dict(sorted(status.items()))}

    # -- CRUD ---------------------------------------------------------------

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        news = with_expected_serials(news)
        zones = news.get("zones")
        if not isinstance(zones, dict):
            failures.append(CheckFailure("zones", "zones must be a map of zone name -> inputs"))
            zones = {}
        else:
            news = with_primaries_observed(olds, news)
        known = news.get("servers")
        known = known if isinstance(known, dict) else {}
        for zone, value in zones.items():
            for prop in SERVER_KEYS:
                servers = (value or {}).get(prop) if isinstance(value, dict) else None
                if isinstance(servers, str):
                    missing = [r for r in servers.split() if r not in known]
                    if missing:
                        failures.append(CheckFailure("zones", (
                            f"zones.{zone}.{prop} names {', '.join(missing)}, not in servers "
                            f"(servers: {', '.join(sorted(known)) or 'none'})")))
                elif servers is not None and not isinstance(servers, list):
                    failures.append(CheckFailure("zones", (
                        f"zones.{zone}.{prop} must be refs into servers (one string) or a "
                        "list of {name, host, port}")))
        deadline = news.get("deadlineSeconds")
        if deadline is not None and not isinstance(deadline, str) and float(deadline) <= 0:
            failures.append(CheckFailure("deadlineSeconds", "deadlineSeconds must be positive"))
        return CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        zones = sorted(props.get("zones") or {})
        return CreateResult(id_="transfer-gate", outs=self._check_zones(props, zones, {}))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """A change: a zone's inputs changed, a zone went, or the last look at a zone (a
        refresh that found its servers lagging) saw it not ready: update re-verifies it."""
        changed = changed_zones(olds, news)
        removed = set(olds.get("zones") or {}) - set(news.get("zones") or {})
        status = olds.get("status")
        lagging = [z for z in news.get("zones") or {} if isinstance(status, dict)
                   and isinstance(status.get(z), dict) and status[z].get("ready") is False]
        # olds from before the compact shape (each zone its own server lists, a server's
        # status a map): compared zone by zone as resolved above, so an unchanged stack
        # shows no change; the next update writes the new shape.
        return DiffResult(changes=bool(changed or removed or lagging), replaces=[], stables=[],
                          delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        previous = {z: compact_status(s) for z, s in (olds.get("status") or {}).items()
                    if isinstance(s, dict) and s.get("ready") is True}
        zones = sorted(set(changed_zones(olds, news))
                       | {z for z in news.get("zones") or {} if z not in previous})
        return UpdateResult(outs=self._check_zones(news, zones, previous))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Probe every server of every zone once: what they serve now (drift on refresh)."""
        own = {z: zone_props(props, z) for z in sorted(props.get("zones") or {})}
        old = props.get("status") or {}
        try:
            with self._resolver(props, _servers(own.values()), f"{len(own)} zone(s)") as expand:
                status = {z: self._probe(p, old.get(z) or {}, expand) for z, p in own.items()}
        except GateFailed:  # the API cannot be asked: nothing is known to be ready
            status = {z: {**compact_status(old.get(z) or {}), "ready": False} for z in own}
        ready = all(s.get("ready") is True for s in status.values())
        return ReadResult(id_=id_, outs={**props, "status": status, "ready": ready})

    def _probe(self, props: dict[str, Any], old: dict[str, Any],
               expand: Callable[[Any], list[Any]]) -> dict[str, Any]:
        """One zone as its servers answer now. A followed zone (ADR 13) is compared with
        what its primaries serve now: a secondary behind them is drift (ready false, and
        ``primarySerial`` says what they serve); any other zone with the serial the gate
        last verified."""
        from bind9_topology.dns.poller import SoaRequest, poll_soa
        from bind9_topology.dns.serials import newest_serial, serial_at_least

        zone = str(props.get("zoneName"))
        served = old.get("servedSerial")
        asked = [(role, ep) for role, key in (("primary", "primaries"),
                                               ("secondary", "secondaries"))
                 for ep in expand(props.get(key) or [])]
        answers = poll_soa([SoaRequest(ep, zone) for _, ep in asked], timeout=2.0)
        follow = follows(props)
        now_primary = newest_serial(a.serial for (role, _), a in zip(asked, answers, strict=True)
                                    if role == "primary" and a.ok and a.serial is not None)
        floor = now_primary if follow and now_primary is not None else served
        servers: dict[str, Any] = {}
        ready = True
        for (role, ep), soa in zip(asked, answers, strict=True):
            kept = (old.get("servers") or {}).get(ep.label or str(ep))
            before: Mapping[str, Any] = server_status(kept) if kept else {}
            behind = (soa.ok and floor is not None and not (role == "primary" and follow)
                      and not (soa.serial is not None
                               and serial_at_least(soa.serial, int(floor))))
            ready = ready and soa.ok and not behind
            where = _where(ep)
            servers[ep.label or str(ep)] = _server_text(ServerStatus(
                host=str(where["host"]), port=int(where["port"]), role=role,
                serial=soa.serial, reason="STALE_SERIAL" if behind else soa.reason.name,
                verifiedAt=before.get("verifiedAt"), attempts=before.get("attempts")))
        extra = {"primarySerial": now_primary} if follow else {}
        return {**compact_status(old), **extra, "servers": servers, "ready": ready}

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


def zone_props(props: dict[str, Any], zone: str) -> dict[str, Any]:
    """One zone's inputs with the shared ones and its servers resolved: what the per-zone
    checks read."""
    own = (props.get("zones") or {}).get(zone) or {}
    return {**{k: props.get(k) for k in SHARED_KEYS}, "zoneName": zone,
            **_zone_entry(own, props.get("servers"))}


def _zone_entry(own: Any, servers: Any) -> dict[str, Any]:
    """A zone's own inputs, its primaries and secondaries as lists of targets whether they
    are refs into *servers* (one string) or, as an older state holds them, lists."""
    if not isinstance(own, dict):
        return {}
    out = {k: own.get(k) for k in ZONE_KEYS if k in own}
    for key in SERVER_KEYS:
        refs = out.get(key)
        if isinstance(refs, str):
            from pulumi.runtime import rpc

            if refs == rpc.UNKNOWN:
                continue
            known = servers if isinstance(servers, dict) else {}
            out[key] = [known.get(r, rpc.UNKNOWN) for r in refs.split()]
    return out


def changed_zones(olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
    """Zones whose inputs differ, their servers resolved (all of them when a shared input
    differs): a zone whose server moved is changed; olds in either shape."""
    new_zones = dict(news.get("zones") or {})
    if any(plain(olds.get(k)) != plain(news.get(k)) for k in SHARED_KEYS):
        return sorted(new_zones)
    old_zones = dict(olds.get("zones") or {})
    old_servers, new_servers = olds.get("servers"), news.get("servers")
    if old_servers == new_servers:  # the same servers: the same refs are the same targets
        return sorted(z for z, v in new_zones.items() if old_zones.get(z) != v)
    return sorted(z for z, v in new_zones.items()
                  if _zone_entry(old_zones.get(z), old_servers) != _zone_entry(v, new_servers))


def follows(entry: Any) -> bool:
    """A zone the gate follows (ADR 13): no serial and no digest of its own (a region's
    secondary zone: whatever its primaries serve), and primaries at direct addresses, all
    known (another stack's primaries, an external primary; never this stack's pods)."""
    from pulumi.runtime import rpc

    if not isinstance(entry, dict) or entry.get("expectedSerial") is not None \
            or entry.get("expectedDigest"):
        return False
    primaries = entry.get("primaries")
    return isinstance(primaries, list) and bool(primaries) and all(
        isinstance(p, dict) and not p.get("via") and isinstance(p.get("host"), str)
        and p["host"] != rpc.UNKNOWN and isinstance(p.get("port", 53), int | float)
        for p in primaries)


def with_primaries_observed(olds: dict[str, Any], news: dict[str, Any]) -> dict[str, Any]:
    """*news* with each followed zone's primarySerial, primaryDigest and primaryErrors:
    what its primaries serve now (:func:`observe_primaries`), against *olds*' (the inputs
    in state: an unchanged serial is not pulled again)."""
    zones = news.get("zones")
    if not isinstance(zones, dict):
        return news
    servers = news.get("servers")
    followed = {z: own for z, e in zones.items()
                if follows(own := _zone_entry(e, servers))}
    if not followed:
        return news
    try:
        key = tsig_key(news)
    except ValueError:  # the gate names it at up; without a key nothing is pulled
        key = None
    kept = olds.get("zones")
    before: dict[str, Any] = kept if isinstance(kept, dict) else {}
    seen = observe_primaries(
        {z: [_endpoint(p) for p in e["primaries"]] for z, e in followed.items()},
        {z: before[z] for z in followed if isinstance(before.get(z), dict)}, key)
    return {**news, "zones": {z: {**e, **seen[z]} if z in seen else e
                              for z, e in zones.items()}}


def observe_primaries(primaries: Mapping[str, Sequence[Any]], olds: Mapping[str, Any],
                      key: Any) -> dict[str, dict[str, Any]]:
    """zone -> {primarySerial, primaryDigest, primaryErrors}: what the zone's primaries
    (endpoints) serve now.

    Bounded, whatever the primaries do: each server is asked one SOA question first (1 s),
    and only those that answer are asked about every other zone, from one socket
    (components.zone_serial's ``_ask_live_servers``, as ZoneSerials asks). The serial is
    the newest any primary answers; the digest is that of a TSIG AXFR of the primaries at
    that serial, pulled only when the serial differs from *olds*' (the inputs in state),
    all zones at once (one selector loop, FOLLOW_SESSIONS connections per server). A
    primary that does not answer or transfer is named in primaryErrors with its reason;
    when none answers, the serial and digest in state are kept, so the zone differs from
    state only by primaryErrors: the same, honest diff on every preview until the primary
    answers again, and an `up` that re-verifies the zone and fails naming the primary.
    """
    from bind9_topology.dns.checks import axfr_pulls
    from bind9_topology.dns.proofs import default_proofs
    from bind9_topology.dns.serials import newest_serial, serial_compare_safe
    from bind9_topology.dns.sessions import Sessions
    from components.zone_serial import _ask_live_servers

    pairs = [(zone, ep) for zone, eps in primaries.items() for ep in dict.fromkeys(eps)]
    answers = _ask_live_servers(pairs)
    silent = {ep: a.reason.name for (_, ep), a in answers.items() if not a.ok}
    out: dict[str, dict[str, Any]] = {}
    pulls: dict[str, list[Any]] = {}
    for zone, eps in primaries.items():
        old = olds.get(zone) or {}
        errors: list[str] = []
        serials: dict[Any, int] = {}
        for ep in dict.fromkeys(eps):
            answer = answers.get((zone, ep))
            if answer is not None and answer.ok and answer.serial is not None:
                serials[ep] = answer.serial
            else:
                why = answer.reason.name if answer is not None else silent.get(ep, "TIMEOUT")
                errors.append(f"{ep}: {why}")
        newest = newest_serial(serials.values())
        if newest is None:  # nobody answered: keep what state says, name who is silent
            out[zone] = {"primarySerial": old.get("primarySerial"),
                         "primaryDigest": old.get("primaryDigest"), "primaryErrors": errors}
            continue
        if old.get("primarySerial") == newest and old.get("primaryDigest"):
            out[zone] = {"primarySerial": newest, "primaryDigest": old["primaryDigest"],
                         "primaryErrors": errors}
            continue
        out[zone] = {"primarySerial": newest, "primaryDigest": None, "primaryErrors": errors}
        if key is not None:
            pulls[zone] = [ep for ep, s in serials.items() if s == newest]

    proofs = default_proofs()  # the gate of this same `pulumi up` does not pull them again
    if pulls:
        # every zone's pulls in one selector loop, over FOLLOW_SESSIONS kept connections
        # per primary (closed when done): the pulls wait on the network, not the CPU
        # (1,000 zones from one primary: 33 s over 4 connections, 13 s over 16, a few
        # seconds of CPU either way, measured under load)
        wanted = [(ep, zone) for zone in sorted(pulls) for ep in pulls[zone]]
        with Sessions(per_server=FOLLOW_SESSIONS) as sessions:
            probed = axfr_pulls(wanted, key=key, timeout=FOLLOW_PULL_TIMEOUT_S,
                                lifetime=FOLLOW_PULL_LIFETIME_S, sessions=sessions)
        by_zone: dict[str, list[Any]] = {}
        for (_, zone), probe in zip(wanted, probed, strict=True):
            by_zone.setdefault(zone, []).append(probe)
        for zone, probes in by_zone.items():
            entry = out[zone]
            for probe in probes:
                if not probe.ok or probe.digest is None or probe.serial is None:
                    entry["primaryErrors"].append(f"{probe.endpoint}: AXFR {probe.reason.name}")
                    continue
                proofs.put(probe.endpoint, zone, probe.serial, probe.digest, probe.records)
                if entry["primaryDigest"] is None and serial_compare_safe(
                        probe.serial, int(entry["primarySerial"])) >= 0:
                    # the pair the transfer carried (the zone may have moved since its SOA)
                    entry["primarySerial"], entry["primaryDigest"] = probe.serial, probe.digest
    for entry in out.values():
        entry["primaryErrors"] = sorted(entry["primaryErrors"])
    return out


def _endpoint(target: Mapping[str, Any]) -> Any:
    from bind9_topology.dns.checks import Endpoint

    return Endpoint(str(target["host"]), int(target.get("port") or 53),
                    str(target.get("name") or ""))


def _zone_status(report: Any) -> dict[str, Any]:
    """One zone's status in the outputs, from its passed gate report."""
    return {
        "ready": True,
        "servedSerial": report.target_serial,
        "servers": {s.endpoint.label or str(s.endpoint):
                    _server_text(_server_out(s.as_dict(), s.endpoint)) for s in report.servers},
        "readyAfterSeconds": report.elapsed_s,
        "checkedAt": max((s.verified_at or "" for s in report.servers), default=None),
    }


def _unasked(props: Mapping[str, Any]) -> str:
    """For a followed zone's failure: the primaries its check could not ask, and the fix."""
    errors = props.get("primaryErrors") or []
    if not errors:
        return ""
    return ("\n  primaries that `pulumi preview`/`up` could not ask for the zone's serial: "
            + "; ".join(map(str, errors)) + "\n      fix: check that they run and that this "
            "machine reaches them (secondaryConfig.primaryServers or the primary stack's "
            "addresses, gate.addressMap, their NetworkPolicy's peerCidrs)")


class ServerStatus(TypedDict):
    """One server as the gate last saw it (a pod through the API: host kubernetes-api)."""

    host: str
    port: int
    role: str
    serial: int | None
    verifiedAt: str | None
    attempts: int | None
    reason: str


def _where(ep: Any) -> dict[str, Any]:
    """host and port of a server for the outputs; a pod reached through the API has no
    address of its own here (its local forward port changes on every run)."""
    if getattr(ep, "tcp_only", False):
        return {"host": "kubernetes-api", "port": 53}
    return {"host": ep.host, "port": ep.port}


def _server_out(d: dict[str, Any], ep: Any) -> ServerStatus:
    """One server of a gate report (``ServerReport.as_dict()``) as the outputs hold it."""
    where = _where(ep)
    return ServerStatus(host=str(where["host"]), port=int(where["port"]), role=str(d["role"]),
                        serial=d["serial"], verifiedAt=d["verifiedAt"],
                        attempts=d["attempts"], reason=str(d["reason"]))


def _server_text(s: ServerStatus) -> str:
    """One server's status as one string (one value in state, not seven):
    ``role serial reason attempts verifiedAt host port``, "-" for none."""
    def field(v: Any) -> str:
        if isinstance(v, float) and v.is_integer():  # numbers come back from state as floats
            v = int(v)
        return "-" if v is None or v == "" else str(v)

    return " ".join(field(s[k]) for k in _SERVER_FIELDS)  # type: ignore[literal-required]


_SERVER_FIELDS = ("role", "serial", "reason", "attempts", "verifiedAt", "host", "port")


def server_status(value: Any) -> ServerStatus:
    """A server of the gate's status, as a map: from its string (:func:`_server_text`) or
    from a map (a state from before the compact shape)."""
    if isinstance(value, Mapping):
        return ServerStatus(
            host=str(value.get("host")), port=int(value.get("port") or 53),
            role=str(value.get("role")), serial=value.get("serial"),
            verifiedAt=value.get("verifiedAt"), attempts=value.get("attempts"),
            reason=str(value.get("reason")))
    parts = str(value).split(" ")
    if len(parts) != len(_SERVER_FIELDS):
        raise ValueError(f"not a server status: {value!r}")
    got = dict(zip(_SERVER_FIELDS, (None if p == "-" else p for p in parts), strict=True))

    def number(v: str | None) -> int | None:
        return int(float(v)) if v is not None else None

    return ServerStatus(host=str(got["host"]), port=int(got["port"] or 53),
                        role=str(got["role"]), serial=number(got["serial"]),
                        verifiedAt=got["verifiedAt"], attempts=number(got["attempts"]),
                        reason=str(got["reason"]))


def compact_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """One zone's status with each server as one string (an older state's maps
    converted; strings kept)."""
    servers = status.get("servers")
    if not isinstance(servers, Mapping):
        return dict(status)
    return {**status, "servers": {
        label: s if isinstance(s, str) else _server_text(server_status(s))
        for label, s in servers.items()}}


@dataclass
class ZoneGateArgs:
    """One zone of the gate: whom to ask and what they must serve."""

    zone_name: str
    #: targets, or refs into TransferGateArgs.servers
    primaries: Sequence[pulumi.Input[Target] | str]
    secondaries: Sequence[pulumi.Input[Target] | str]
    #: the serial every primary must serve exactly (None: whatever the primaries serve)
    expected_serial: pulumi.Input[int] | None = None
    #: the content digest the primaries' AXFR must prove (None: no content proof)
    expected_digest: str | None = None
    #: a signed zone's DS records: DNSKEY and signatures are checked against them
    expected_ds: pulumi.Input[list[str]] | None = None


class ServerRefs:
    """Each server of a stack once, under a ref the zones name (ADR 19): a ref of
    *named* ({ref: target}, targets that may be Outputs) as given; a plain target by its
    name (``name@host:port`` when two differ by name only); any other Output by its
    place (``#n``, in the order the zones name it)."""

    def __init__(self, named: Mapping[str, pulumi.Input[Target]] | None = None) -> None:
        self.named = dict(named or {})
        self.used: dict[str, Any] = {}
        self._outputs: dict[int, str] = {}

    def refs(self, targets: Sequence[Any]) -> str:
        return " ".join(self.ref(t) for t in targets)

    def ref(self, target: Any) -> str:
        if isinstance(target, str):
            if target not in self.named:
                raise ValueError(f"server {target!r} is not one of {sorted(self.named)}")
            self.used[target] = self.named[target]
            return target
        if isinstance(target, Mapping):
            t = dict(target)
            ref = str(t.get("name") or t.get("host") or "server")
            if (ref in self.used and self.used[ref] != t) or ref in self.named:
                ref = f"{ref}@{t.get('host') or t.get('instance')}:{t.get('port') or 53}"
            self.used.setdefault(ref, t)
            return ref
        ref = self._outputs.setdefault(id(target), f"#{len(self._outputs)}")
        self.used[ref] = target
        return ref


@dataclass
class TransferGateArgs:
    """A stack's gate: its zones, the key, how long to wait, the cluster to reach pods in."""

    zones: Sequence[ZoneGateArgs]
    tsig: TsigArgs
    deadline_seconds: float
    poll_interval_seconds: float
    #: the cluster to reach pods through (gate.via kubernetes-api), else None
    kube: KubeAccess | None = None
    #: zone -> the serial its primaries must serve, for every zone at once (ZoneSerials'
    #: map, one Output); a zone's own expected_serial, when set, takes precedence
    expected_serials: pulumi.Input[Mapping[str, int]] | None = None
    #: ref -> target: the servers the zones name by ref (a zone's primaries and
    #: secondaries may be refs into this, or targets)
    servers: Mapping[str, pulumi.Input[Target]] | None = None


class TransferGate(Resource, module="bind9", name="TransferGate"):
    """Ready only when every server of every zone serves the transferred, verified serial."""

    ready: pulumi.Output[bool]
    #: zone -> {ready, servedSerial, servers {label: ServerStatus}, readyAfterSeconds,
    #: checkedAt} (plain dicts: Pulumi's output translation takes no TypedDict)
    status: pulumi.Output[dict[str, dict[str, Any]]]

    def __init__(
        self, name: str, args: TransferGateArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        kube = args.kube or KubeAccess()
        servers = ServerRefs(args.servers)
        zones: dict[str, Any] = {}
        for zone in args.zones:
            entry: dict[str, Any] = {
                "primaries": servers.refs(zone.primaries),
                "secondaries": servers.refs(zone.secondaries),
                "expectedSerial": zone.expected_serial,
                "expectedDigest": zone.expected_digest,
            }
            if zone.expected_ds is not None:  # a signed zone: DNSKEY and signatures too
                entry["expectedDs"] = zone.expected_ds
            zones[zone.zone_name] = entry
        props: dict[str, Any] = {
            "servers": servers.used,
            "zones": zones,
            # folded into each zone's expectedSerial by check (so state keeps one shape)
            "expectedSerials": args.expected_serials,
            "tsigKeyName": args.tsig.key_name,
            "tsigAlgorithm": args.tsig.algorithm,
            "tsigSecret": pulumi.Output.secret(args.tsig.secret),
            "deadlineSeconds": args.deadline_seconds,
            "pollIntervalSeconds": args.poll_interval_seconds,
            "kubeconfig": pulumi.Output.secret(kube.kubeconfig) if kube.kubeconfig else None,
            "kubeContext": kube.context,
            **dict.fromkeys(OUTPUT_KEYS),
        }
        secret_opts = pulumi.ResourceOptions(
            additional_secret_outputs=["tsigSecret", "kubeconfig"])
        super().__init__(
            TransferGateProvider(), name, props, pulumi.ResourceOptions.merge(opts, secret_opts)
        )


def with_expected_serials(news: dict[str, Any]) -> dict[str, Any]:
    """*news* with ``expectedSerials`` (zone -> serial, one input for every zone) folded
    into each zone's ``expectedSerial``, where the zone has none of its own; unknown at
    preview, each such zone's expected serial is unknown."""
    from pulumi.runtime import rpc

    props = {k: v for k, v in news.items() if k != "expectedSerials"}
    serials = news.get("expectedSerials")
    zones = props.get("zones")
    if serials is None or not isinstance(zones, dict):
        return props
    props["zones"] = {
        zone: entry if not isinstance(entry, dict) or entry.get("expectedSerial") is not None
        else {**entry, "expectedSerial": rpc.UNKNOWN if not isinstance(serials, dict)
              else serials.get(zone)}
        for zone, entry in zones.items()}
    return props


def _servers(zones: Any) -> list[Any]:
    """Every server of the given zones' inputs (zone_props), primaries and secondaries."""
    return [t for z in zones for key in ("primaries", "secondaries") for t in z.get(key) or []]
