"""A zone's SOA serial, kept in Pulumi state and keyed on the zone's content hash.

The serial moves only when the content hash moves, and only forwards
(bind9_topology.dns.serials.next_serial), so `pulumi preview` with no change shows no
diff. When it moves (or is first created, e.g. after the state was lost or the
stack recreated), it also moves past the highest serial the zone's servers
answer with right now (`probe`: primaries, secondaries, NOTIFY targets), so a
secondary holding older data at a higher serial is never left behind. The
highest serial served (equal to or ahead of its own: a DNSSEC inline signer serves
the rendered serial plus its bumps) is kept only when every server serving it
proves, by a TSIG AXFR digest, that it serves this very content (e.g. the
local runner's servers for the local stack); otherwise (state lost on a day
whose first serial, YYYYMMDD00, was already served with other content) it
moves past it too. The provider runs in the engine's provider host, so it
imports little.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pulumi
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from components.args import KubeAccess, TsigArgs, plain

if TYPE_CHECKING:  # the provider host loads this module with Pulumi and the stdlib only
    from bind9_topology.dns.targets import Target


class ZoneSerialProvider(ResourceProvider):
    def _advance(self, olds: dict[str, Any] | None, news: dict[str, Any]) -> dict[str, Any]:
        from bind9_topology.dns.serials import (
            SERIAL_MODULUS,
            SerialState,
            next_serial,
            serial_is_newer,
        )

        previous = None
        if olds and olds.get("serial") is not None:
            previous = SerialState(int(olds["serial"]), str(olds.get("contentHash", "")))
        today = datetime.datetime.now(datetime.UTC).date()
        serial = next_serial(previous, news["contentHash"], today).serial
        zone = str(news["zoneName"])
        with _probe_targets(news) as endpoints:
            answers = _served_by(zone, endpoints)
            served = _highest(list(answers.values()))
            if served is not None and not serial_is_newer(serial, served):
                # The served serial is kept only when every server at that serial proves
                # this content (TSIG AXFR digest; what a DNSSEC signer adds is left out); a
                # reused serial would leave other content on secondaries. A signed zone is
                # served ahead of its rendered serial (inline signing bumps it), so a
                # proven serial ahead is adopted too, or the serial would chase the signer.
                same = _serve_this_content(
                    zone, [ep for ep, s in answers.items() if s == served],
                    news.get("digest"), _key(news))
                serial = served if same else (served + 1) % SERIAL_MODULUS or 1
        return {**news, "serial": serial}

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=props["zoneName"], outs=self._advance(None, props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = olds.get("contentHash") != news.get("contentHash")
        replaces = ["zoneName"] if olds.get("zoneName") != news.get("zoneName") else []
        return DiffResult(
            changes=changed or bool(replaces),
            replaces=replaces,
            stables=["zoneName"],
            delete_before_replace=False,
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._advance(olds, news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)


@contextlib.contextmanager
def _probe_targets(props: dict[str, Any]) -> Iterator[list[Any]]:
    """Every server to ask: addresses as given, and each pod of the stack's instances
    through the Kubernetes API (gate.via kubernetes-api). An instance with no pods yet
    (first deploy: its Deployment comes after the serial) serves nothing and is skipped."""
    from bind9_topology.dns.checks import Endpoint
    from bind9_topology.kube.forward import KubeApiError, gate_endpoints

    probe = list(props.get("probe") or [])
    endpoints = list(dict.fromkeys(
        Endpoint(str(p["host"]), int(p.get("port") or 53)) for p in probe
        if p.get("via") != "kubernetes-api"))
    kubeconfig = plain(props.get("kubeconfig")) or None
    with contextlib.ExitStack() as stack:
        for item in (p for p in probe if p.get("via") == "kubernetes-api"):
            try:
                pods, _ = stack.enter_context(gate_endpoints(
                    [item], [], kubeconfig, props.get("kubeContext") or None))
            except KubeApiError:
                continue
            endpoints += pods
        yield endpoints


def _served(zone: str, probe: list[dict[str, Any]]) -> dict[Any, int]:
    """Endpoint -> the serial it answers authoritatively with (servers that answer only)."""
    from bind9_topology.dns.checks import Endpoint

    return _served_by(zone, list(dict.fromkeys(
        Endpoint(str(p["host"]), int(p.get("port") or 53)) for p in probe)))


def _served_by(zone: str, endpoints: list[Any]) -> dict[Any, int]:
    from concurrent.futures import ThreadPoolExecutor

    from bind9_topology.dns.checks import query_soa

    if not endpoints:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(endpoints))) as pool:
        answers = list(pool.map(lambda ep: query_soa(ep, zone, timeout=1.0), endpoints))
    return {a.endpoint: a.serial for a in answers if a.ok and a.serial is not None}


def _highest(serials: list[int]) -> int | None:
    """The newest of *serials* in RFC 1982 arithmetic."""
    from bind9_topology.dns.serials import serial_compare_safe

    highest: int | None = None
    for serial in serials:
        if highest is None or serial_compare_safe(serial, highest) > 0:
            highest = serial
    return highest


def _highest_served(zone: str, probe: list[dict[str, Any]]) -> int | None:
    """The newest serial (RFC 1982) any reachable server answers authoritatively with."""
    return _highest(list(_served(zone, probe).values()))


def _key(props: dict[str, Any]) -> Any:
    from bind9_topology.dns.checks import make_tsig_key

    secret = plain(props.get("tsigSecret"))
    if not secret:
        return None
    try:
        return make_tsig_key(str(props.get("tsigKeyName") or "transfer-key"),
                             str(props.get("tsigAlgorithm") or "hmac-sha256"), str(secret))
    except ValueError:
        return None


def _serve_this_content(zone: str, endpoints: list[Any], digest: str | None, key: Any) -> bool:
    """True when every endpoint transfers (TSIG AXFR) content whose digest is *digest*."""
    from concurrent.futures import ThreadPoolExecutor

    from bind9_topology.dns.checks import axfr

    if not digest or key is None or not endpoints:
        return False
    with ThreadPoolExecutor(max_workers=min(16, len(endpoints))) as pool:
        probes = list(pool.map(lambda ep: axfr(ep, zone, key=key, timeout=2.0,
                                               lifetime=120.0)[0], endpoints))
    return all(p.ok and p.digest == digest.lower() for p in probes)


@dataclass
class ZoneSerialArgs:
    """A primary zone's serial: its content, and whom to ask what they already serve."""

    zone_name: str
    #: sha256 of the zone's text without its serial: the serial moves only with it
    content_hash: str
    #: every server that may hold the zone (bind9_topology.dns.targets.probe_targets)
    probe: Sequence[Target] = ()
    #: the content digest and key that prove a served serial holds this very content
    digest: str | None = None
    tsig: TsigArgs | None = None
    kube: KubeAccess | None = None


class ZoneSerial(Resource, module="bind9", name="ZoneSerial"):
    """`serial` only grows; it changes only when `contentHash` changes."""

    serial: pulumi.Output[int]
    contentHash: pulumi.Output[str]

    def __init__(
        self, name: str, args: ZoneSerialArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        probe = list(args.probe)
        props: dict[str, Any] = {
            "zoneName": args.zone_name,
            "contentHash": args.content_hash,
            "probe": probe,
            "serial": None,
        }
        if any(p.get("via") == "kubernetes-api" for p in probe):
            kube = args.kube or KubeAccess()
            props["kubeconfig"] = (pulumi.Output.secret(kube.kubeconfig)
                                   if kube.kubeconfig else None)
            props["kubeContext"] = kube.context
            opts = pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(additional_secret_outputs=["kubeconfig"]))
        if args.digest is not None and args.tsig is not None:
            # the content proof for a serial the servers already serve
            props.update({
                "digest": args.digest,
                "tsigKeyName": args.tsig.key_name,
                "tsigAlgorithm": args.tsig.algorithm,
                "tsigSecret": pulumi.Output.secret(args.tsig.secret or ""),
            })
            opts = pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(additional_secret_outputs=["tsigSecret"]))
        super().__init__(ZoneSerialProvider(), name, props, opts)
