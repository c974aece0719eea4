"""TransferGate: a dynamic resource per zone that is ready only once the zone really transferred.

The provider runs in the engine's provider host (``python -m pulumi.dynamic``)
from a dill-serialized copy, so this module imports only Pulumi and the standard
library at the top; the DNS work (dnspython, bind9_topology.dns.gate) is imported
inside the methods.
The provider object carries no state: its serialized form never changes, so
it never shows up as a diff.

Inputs: zoneName, primaries/secondaries ([{name, host, port}] probed directly, or
[{name, instance, namespace, via: "kubernetes-api"}]: every pod of the instance's
current ReplicaSet through a port-forward of the API), kubeconfig (secret) and
kubeContext (those of the stack's Kubernetes provider), expectedSerial
(None: whatever the primaries serve), expectedDigest (None: no content proof),
tsigKeyName, tsigAlgorithm, tsigSecret (secret), deadlineSeconds,
pollIntervalSeconds, triggers (e.g. the instances' config checksums).
Outputs: ready, servedSerial, servers {name: {host, port, role, serial,
verifiedAt, attempts, reason}}, readyAfterSeconds, checkedAt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
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

from components.args import SECRET_SIG, KubeAccess, TsigArgs

if TYPE_CHECKING:  # the provider host loads this module with Pulumi and the stdlib only
    from bind9_topology.dns.targets import Target

INPUT_KEYS = (
    "zoneName", "primaries", "secondaries", "expectedSerial", "expectedDigest",
    "tsigKeyName", "tsigAlgorithm", "tsigSecret", "deadlineSeconds", "pollIntervalSeconds",
    "triggers", "kubeconfig", "kubeContext",
)
OUTPUT_KEYS = ("ready", "servedSerial", "servers", "readyAfterSeconds", "checkedAt")


def _plain(value: Any) -> Any:
    """A value with Pulumi's secret wrapper (if any) removed."""
    if isinstance(value, dict) and SECRET_SIG in value:
        return value.get("value")
    return value


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
        from bind9_topology.dns.checks import make_tsig_key

        secret = _plain(props.get("tsigSecret"))
        if not secret:
            return None
        try:
            return make_tsig_key(str(props.get("tsigKeyName") or "transfer-key"),
                                 str(props.get("tsigAlgorithm") or "hmac-sha256"), str(secret))
        except ValueError as exc:  # the message names the key, never the secret
            raise GateFailed(str(exc)) from None

    @staticmethod
    @contextlib.contextmanager
    def _targets(props: dict[str, Any]) -> Iterator[tuple[list[Any], list[Any]]]:
        """Endpoints to probe: direct addresses as given, owned instances pod by pod
        through the Kubernetes API (bind9_topology.kube.forward). An API that cannot be
        asked is a GateFailed with the fix."""
        from bind9_topology.kube.forward import KubeApiError, gate_endpoints

        try:
            with gate_endpoints(list(props.get("primaries") or []),
                                list(props.get("secondaries") or []),
                                _plain(props.get("kubeconfig")) or None,
                                props.get("kubeContext") or None) as endpoints:
                yield endpoints
        except KubeApiError as exc:
            raise GateFailed(f"zone {props.get('zoneName')}: {exc}") from None

    def _wait(self, props: dict[str, Any]) -> dict[str, Any]:
        from bind9_topology.dns.gate import wait_until_transferred

        report_cleanly()

        expected = props.get("expectedSerial")
        with self._targets(props) as (primaries, secondaries):
            report = wait_until_transferred(
                str(props["zoneName"]),
                primaries,
                secondaries,
                int(expected) if expected is not None else None,
                props.get("expectedDigest") or None,
                self._key(props),
                float(props.get("deadlineSeconds") or 300),
                float(props.get("pollIntervalSeconds") or 1.0),
                expected_ds=props.get("expectedDs") or None,
            )
        if not report.ok:
            raise GateFailed(report.message)
        return {
            **{k: props.get(k) for k in INPUT_KEYS},
            **({"expectedDs": props["expectedDs"]} if props.get("expectedDs") else {}),
            "ready": True,
            "servedSerial": report.target_serial,
            "servers": {s.endpoint.label or str(s.endpoint): _server_out(s.as_dict(), s.endpoint)
                        for s in report.servers},
            "readyAfterSeconds": report.elapsed_s,
            "checkedAt": max((s.verified_at or "" for s in report.servers), default=None),
        }

    # -- CRUD ---------------------------------------------------------------

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = []
        if not news.get("zoneName"):
            failures.append(CheckFailure("zoneName", "zoneName is required"))
        for prop in ("primaries", "secondaries"):
            value = news.get(prop)
            if value is not None and not isinstance(value, list):
                failures.append(
                    CheckFailure(prop, f"{prop} must be a list of {{name, host, port}}"))
        deadline = news.get("deadlineSeconds")
        if deadline is not None and not isinstance(deadline, str) and float(deadline) <= 0:
            failures.append(CheckFailure("deadlineSeconds", "deadlineSeconds must be positive"))
        return CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"gate-{props['zoneName']}", outs=self._wait(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in (*INPUT_KEYS, "expectedDs")
                   if _plain(olds.get(k)) != _plain(news.get(k))]
        return DiffResult(changes=bool(changed), replaces=[], stables=["zoneName"],
                          delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._wait(news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Probe every server once: the serials they serve now (drift shows on refresh)."""
        from bind9_topology.dns.checks import query_soa
        from bind9_topology.dns.serials import serial_at_least

        zone = str(props.get("zoneName"))
        served = props.get("servedSerial")
        servers: dict[str, Any] = {}
        ready = True
        try:
            with self._targets(props) as (primaries, secondaries):
                for role, eps in (("primary", primaries), ("secondary", secondaries)):
                    for ep in eps:
                        soa = query_soa(ep, zone, timeout=2.0)
                        old = (props.get("servers") or {}).get(ep.label or str(ep)) or {}
                        ok = soa.ok and (served is None or (
                            soa.serial is not None
                            and serial_at_least(soa.serial, int(served))))
                        ready = ready and ok
                        servers[ep.label or str(ep)] = {
                            **_where(ep), "role": role, "serial": soa.serial,
                            "reason": soa.reason.name, "verifiedAt": old.get("verifiedAt"),
                            "attempts": old.get("attempts"),
                        }
        except GateFailed:  # the API cannot be asked: nothing is known to be ready
            return ReadResult(id_=id_, outs={**props, "ready": False})
        outs = {**props, "servers": servers, "ready": ready}
        return ReadResult(id_=id_, outs=outs)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


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


def _server_out(d: dict[str, Any], ep: Any = None) -> ServerStatus:
    where = _where(ep) if ep is not None else {"host": d["host"], "port": d["port"]}
    return ServerStatus(host=str(where["host"]), port=int(where["port"]), role=str(d["role"]),
                        serial=d["serial"], verifiedAt=d["verifiedAt"],
                        attempts=d["attempts"], reason=str(d["reason"]))


@dataclass
class TransferGateArgs:
    """One zone's gate: whom to ask, what they must serve, how long to wait."""

    zone_name: str
    primaries: Sequence[pulumi.Input[Target]]
    secondaries: Sequence[pulumi.Input[Target]]
    #: the serial every primary must serve exactly (None: whatever the primaries serve)
    expected_serial: pulumi.Input[int] | None
    #: the content digest the primaries' AXFR must prove (None: no content proof)
    expected_digest: str | None
    tsig: TsigArgs
    deadline_seconds: float
    poll_interval_seconds: float
    #: the cluster to reach pods through (gate.via kubernetes-api), else None
    kube: KubeAccess | None = None
    #: a signed zone's DS records: DNSKEY and signatures are checked against them
    expected_ds: pulumi.Input[list[str]] | None = None
    triggers: pulumi.Input[dict[str, Any]] | None = None


class TransferGate(Resource, module="bind9", name="TransferGate"):
    """Ready only when every server of the zone serves the transferred, verified serial."""

    ready: pulumi.Output[bool]
    servedSerial: pulumi.Output[int]
    #: server label -> its ServerStatus (typed as plain dicts: Pulumi's output
    #: translation takes no TypedDict)
    servers: pulumi.Output[dict[str, dict[str, Any]]]
    readyAfterSeconds: pulumi.Output[float]
    checkedAt: pulumi.Output[str]

    def __init__(
        self, name: str, args: TransferGateArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        kube = args.kube or KubeAccess()
        props: dict[str, Any] = {
            "zoneName": args.zone_name,
            "primaries": list(args.primaries),
            "secondaries": list(args.secondaries),
            "expectedSerial": args.expected_serial,
            "expectedDigest": args.expected_digest,
            "tsigKeyName": args.tsig.key_name,
            "tsigAlgorithm": args.tsig.algorithm,
            "tsigSecret": pulumi.Output.secret(args.tsig.secret),
            "deadlineSeconds": args.deadline_seconds,
            "pollIntervalSeconds": args.poll_interval_seconds,
            "triggers": args.triggers or {},
            "kubeconfig": pulumi.Output.secret(kube.kubeconfig) if kube.kubeconfig else None,
            "kubeContext": kube.context,
            **dict.fromkeys(OUTPUT_KEYS),
        }
        if args.expected_ds is not None:  # a signed zone: DNSKEY and signatures checked too
            props["expectedDs"] = args.expected_ds
        secret_opts = pulumi.ResourceOptions(
            additional_secret_outputs=["tsigSecret", "kubeconfig"])
        super().__init__(
            TransferGateProvider(), name, props, pulumi.ResourceOptions.merge(opts, secret_opts)
        )
