"""Every primary zone's SOA serial of a stack, in one resource, decided in ``check``.

A zone's serial moves only when its content hash moves, and only forwards
(bind9_topology.dns.serials.next_serial), so `pulumi preview` with no change shows no
diff. When it moves (or is first seen: a new zone, a lost state, a stack recreated), it
also moves past the highest serial the zone's servers answer with right now (primaries,
secondaries, NOTIFY targets), so a secondary holding older data at a higher serial is
never left behind. The highest serial served (equal to or ahead of the new one: a
DNSSEC inline signer serves the rendered serial plus its bumps) is kept only when every
server serving it proves, by a TSIG AXFR digest, that it serves this very content (e.g.
the local runner's servers for the local stack); otherwise it moves past it too.

Why ``check``: it runs in `pulumi preview` as well, and a dynamic resource's outputs
during preview are its checked inputs, so the serials (and the ConfigMaps made from
them) are known at preview and only the changed zones' ConfigMaps show a change, with
one serial resource per stack instead of one per zone (ADR 11). A zone whose content
hash did not change keeps its serial without asking anyone, so a preview with no change
touches no network. The provider runs in the engine's provider host, so it imports
little.

Inputs: ``servers`` {ref: target} (each server of the stack once) and ``zones``
{zoneName: {contentHash, probe, digest}}, probe the refs of the zone's servers in one
string (ADR 19; a list of targets, as a state before it holds, is read too).
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pulumi
from pulumi.dynamic import (
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from bind9_topology.dns.targets import through_api
from components.args import KubeAccess, TsigArgs, plain, tsig_key

if TYPE_CHECKING:  # the provider host loads this module with Pulumi and the stdlib only
    from bind9_topology.dns.targets import Target

#: how long a server may take to say which serial it serves before it counts as silent
PROBE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class ZoneToSerial:
    """One zone whose serial must be decided: what it had, what it holds now."""

    zone: str
    content_hash: str
    previous: tuple[int, str] | None  # (serial, content hash) from state, if any
    probe: Sequence[Mapping[str, Any]] = ()
    digest: str | None = None


def decide_serials(
    zones: Sequence[ZoneToSerial], *, key: Any = None,
    resolver: Callable[[Sequence[Mapping[str, Any]]], Any] | None = None,
    today: datetime.date | None = None,
) -> dict[str, int]:
    """Each zone's new serial: forward from its previous one, past what its servers serve.

    *resolver*: a context manager factory taking every probe item and yielding
    ``expand(items) -> endpoints`` (default: direct addresses only). All zones' SOA
    questions go out at once (one socket, bind9_topology.dns.poller); only a zone whose
    servers already serve its serial or a later one is pulled (TSIG AXFR) for the proof.
    """
    from bind9_topology.dns.serials import (
        SERIAL_MODULUS,
        SerialState,
        newest_serial,
        next_serial,
        serial_is_newer,
    )

    day = today or datetime.datetime.now(datetime.UTC).date()
    decided = {
        z.zone: next_serial(SerialState(*z.previous) if z.previous else None,
                            z.content_hash, day).serial
        for z in zones
    }
    items = [p for z in zones for p in z.probe]
    with (resolver or _direct_resolver)(items) as expand:
        pairs = [(z.zone, ep) for z in zones for ep in dict.fromkeys(expand(list(z.probe)))]
        served: dict[str, dict[Any, int]] = {}
        for (zone, ep), answer in _ask_live_servers(pairs).items():
            if answer.ok and answer.serial is not None:
                served.setdefault(zone, {})[ep] = answer.serial
        for z in zones:
            by_server = served.get(z.zone, {})
            highest = newest_serial(by_server.values())
            if highest is None or serial_is_newer(decided[z.zone], highest):
                continue
            # The served serial is kept only when every server at that serial proves this
            # content (TSIG AXFR digest; what a DNSSEC signer adds is left out); a reused
            # serial would leave other content on secondaries. A signed zone is served
            # ahead of its rendered serial (inline signing bumps it), so a proven serial
            # ahead is adopted too, or the serial would chase the signer.
            same = _serve_this_content(
                z.zone, [ep for ep, s in by_server.items() if s == highest], z.digest, key)
            decided[z.zone] = highest if same else (highest + 1) % SERIAL_MODULUS or 1
    return decided


def _ask_live_servers(pairs: Sequence[tuple[str, Any]]) -> dict[tuple[str, Any], Any]:
    """(zone, endpoint) -> SoaProbe, for the servers that answer at all.

    Each server is asked about one zone first. One that stays silent or unreachable (not
    deployed yet, or far from here), or answers like a resolver rather than an
    authoritative server (NXDOMAIN or no AA for a zone apex it is listed for, e.g. a DNS
    proxy in front of an address that is not deployed yet), is asked nothing more: a
    thousand zones on such servers cost one round, not one question each (the poller keeps
    at most 64 in flight per server). A server that answers as a BIND of the topology
    does, the zone's SOA, or REFUSED/NOTAUTH/SERVFAIL for a zone it does not hold (yet),
    is asked about every zone.
    """
    from bind9_topology.dns.checks import Reason
    from bind9_topology.dns.poller import SoaRequest, poll_soa

    if not pairs:
        return {}
    first: dict[Any, str] = {}
    for zone, ep in pairs:
        first.setdefault(ep, zone)
    opening = list(first.items())
    answers = dict(zip(((z, ep) for ep, z in opening), poll_soa(
        [SoaRequest(ep, z) for ep, z in opening], timeout=PROBE_TIMEOUT_S), strict=True))
    silent = {ep for (_, ep), a in answers.items() if a.reason in (
        Reason.TIMEOUT, Reason.CONNECTION_REFUSED, Reason.ERROR, Reason.NXDOMAIN,
        Reason.NOT_AUTHORITATIVE)}
    rest = [(z, ep) for z, ep in pairs if ep not in silent and (z, ep) not in answers]
    if rest:
        answers.update(zip(rest, poll_soa([SoaRequest(ep, z) for z, ep in rest],
                                          timeout=PROBE_TIMEOUT_S), strict=True))
    return answers


@contextlib.contextmanager
def _direct_resolver(_items: Sequence[Mapping[str, Any]]) -> Iterator[Callable[..., list[Any]]]:
    from bind9_topology.kube.forward import endpoint_resolver

    with endpoint_resolver([]) as expand:
        yield expand


def _serve_this_content(zone: str, endpoints: list[Any], digest: str | None, key: Any) -> bool:
    """True when every endpoint transfers (TSIG AXFR) content whose digest is *digest*."""
    from bind9_topology.dns.checks import axfr_probes
    from bind9_topology.dns.sessions import default_sessions

    if not digest or key is None or not endpoints:
        return False
    probes = axfr_probes(endpoints, zone, key=key, timeout=2.0, lifetime=120.0,
                         sessions=default_sessions())
    return all(p.ok and p.digest == digest.lower() for p in probes)


def _key(props: Mapping[str, Any]) -> Any:
    """The key that proves content, or None (then a served serial is never reused)."""
    try:
        return tsig_key(props)
    except ValueError:
        return None


def _unknown(value: Any) -> bool:
    """True when a (nested) input is not known yet (a preview before its source exists)."""
    from pulumi.runtime import rpc

    if isinstance(value, str):
        return value == rpc.UNKNOWN
    if isinstance(value, dict):
        return any(_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(_unknown(v) for v in value)
    return False


class ZoneSerialsProvider(ResourceProvider):
    """Decides every zone's serial in ``check``; create and update store what it decided."""

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        zones = dict(news.get("zones") or {})
        servers = news.get("servers")
        if _unknown(zones) or _unknown(servers):  # a preview whose inputs are not known yet
            from pulumi.runtime import rpc

            return CheckResult({**news, "serials": rpc.UNKNOWN}, [])
        before = olds.get("serials")
        before = before if isinstance(before, dict) else {}
        serials: dict[str, dict[str, Any]] = {}
        todo: list[ZoneToSerial] = []
        for zone, entry in zones.items():
            kept = before.get(zone)
            if isinstance(kept, dict) and kept.get("contentHash") == entry["contentHash"]:
                serials[zone] = {"serial": int(kept["serial"]),
                                 "contentHash": kept["contentHash"]}
                continue
            previous = ((int(kept["serial"]), str(kept.get("contentHash", "")))
                        if isinstance(kept, dict) and kept.get("serial") is not None else None)
            todo.append(ZoneToSerial(zone, str(entry["contentHash"]), previous,
                                     probe_of(entry, servers), entry.get("digest")))
        if todo:
            decided = decide_serials(todo, key=_key(news), resolver=self._resolver(news))
            for z in todo:
                serials[z.zone] = {"serial": decided[z.zone], "contentHash": z.content_hash}
        return CheckResult({**news, "serials": dict(sorted(serials.items()))}, [])

    @staticmethod
    def _resolver(props: Mapping[str, Any]) -> Callable[[Sequence[Mapping[str, Any]]], Any]:
        """Direct addresses as given; the stack's instances pod by pod through the
        Kubernetes API (gate.via kubernetes-api), looked up and forwarded once for all
        zones. An instance with no pods yet (first deploy: its Deployment comes after the
        serials) serves nothing and is skipped; so is an API that cannot be asked (a
        preview far from the cluster), as a lost state was before (ADR 11)."""
        from bind9_topology.kube.forward import KubeApiError, endpoint_resolver

        @contextlib.contextmanager
        def resolve(items: Sequence[Mapping[str, Any]]) -> Iterator[Callable[..., list[Any]]]:
            kube = [dict(i) for i in items if through_api(i)]
            with contextlib.ExitStack() as stack:
                try:
                    expand = stack.enter_context(endpoint_resolver(
                        list({(i["namespace"], i["instance"]): i for i in kube}.values()),
                        plain(props.get("kubeconfig")) or None,
                        props.get("kubeContext") or None, skip_without_pods=True))
                except KubeApiError:
                    expand = stack.enter_context(endpoint_resolver([]))
                yield expand

        return resolve

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=olds.get("serials") != news.get("serials"), replaces=[],
                          stables=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_="zone-serials", outs=props)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=news)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)


def probe_of(entry: Mapping[str, Any], servers: Any) -> list[Any]:
    """A zone's probe targets: its refs into *servers* (one string), or its list."""
    probe = entry.get("probe") or []
    if isinstance(probe, str):
        known = servers if isinstance(servers, dict) else {}
        missing = [r for r in probe.split() if r not in known]
        if missing:
            raise ValueError(f"probe names {', '.join(missing)}, not in servers")
        return [known[r] for r in probe.split()]
    return list(probe)


class ZoneSerialProvider(ResourceProvider):
    """Retired: one serial per zone (before ADR 11). Kept, with nothing in it, so that the
    engine can unpickle it from an older state and delete those per-zone serials (a
    delete of a serial has nothing to undo)."""


@dataclass(frozen=True)
class ZoneSerialArgs:
    """A primary zone: its content, and whom to ask what they already serve."""

    zone_name: str
    #: sha256 of the zone's text without its serial: the serial moves only with it
    content_hash: str
    #: every server that may hold the zone (bind9_topology.dns.targets.probe_targets)
    probe: Sequence[Target] = ()
    #: the content digest that proves a served serial holds this very content
    digest: str | None = None


@dataclass(frozen=True)
class ZoneSerialsArgs:
    """A stack's primary zones, the key that proves what a server serves, the cluster."""

    zones: Sequence[ZoneSerialArgs]
    tsig: TsigArgs
    kube: KubeAccess | None = None


class ZoneSerials(Resource, module="bind9", name="ZoneSerials"):
    """``serials[zone]["serial"]`` only grows; it changes only when the zone's content does."""

    #: zone -> {serial, contentHash}
    serials: pulumi.Output[dict[str, dict[str, Any]]]

    def __init__(
        self, name: str, args: ZoneSerialsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        from components.transfer_gate import ServerRefs

        kube = args.kube or KubeAccess()
        servers = ServerRefs()  # each server once; a zone names its probe targets by ref
        zones = {z.zone_name: {"contentHash": z.content_hash,
                               "probe": servers.refs(list(z.probe)),
                               "digest": z.digest} for z in args.zones}
        props: dict[str, Any] = {
            "servers": servers.used,
            "zones": zones,
            "tsigKeyName": args.tsig.key_name,
            "tsigAlgorithm": args.tsig.algorithm,
            "tsigSecret": pulumi.Output.secret(args.tsig.secret),
            "serials": None,
        }
        secret_outputs = ["tsigSecret"]
        if any(through_api(p) for z in args.zones for p in z.probe):
            props["kubeconfig"] = (pulumi.Output.secret(kube.kubeconfig)
                                   if kube.kubeconfig else None)
            props["kubeContext"] = kube.context
            secret_outputs.append("kubeconfig")
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=secret_outputs))
        super().__init__(ZoneSerialsProvider(), name, props, opts)
