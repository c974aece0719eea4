"""Run the very component code `pulumi up` runs, under Pulumi's mocks, and collect the objects.

This is how `python -m components render` writes manifests without the engine:
the Kubernetes objects are the inputs the components registered. Serials come
from a local SerialStore in place of Pulumi state. Secret values are redacted.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pulumi
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from bind9_topology.config.topology import Topology
from bind9_topology.dns.serials import SerialStore, next_serial

from .args import SECRET_SIG

REDACTED = "<redacted: pulumi secret>"


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict[str, Any]
    parent: str | None = None  # the parent's URN ("" for the stack itself)
    custom: bool | None = None


class _ParentRecordingMonitor(MockMonitor):
    """MockResourceArgs carries no parent or dependencies: note them from the request."""

    def __init__(self, mocks: CaptureMocks) -> None:
        super().__init__(mocks)
        self.capture = mocks

    def RegisterResource(  # the gRPC method's name
        self, request: resource_pb2.RegisterResourceRequest
    ) -> resource_pb2.RegisterResourceResponse:
        self.capture.parents[(request.type, request.name)] = request.parent
        self.capture.dependencies[(request.type, request.name)] = list(request.dependencies)
        # cast: Pulumi leaves MockMonitor.RegisterResource unannotated
        register = cast(
            Callable[[resource_pb2.RegisterResourceRequest], resource_pb2.RegisterResourceResponse],
            super().RegisterResource,
        )
        return register(request)


@dataclass
class CaptureMocks(pulumi.runtime.Mocks):
    stack: str
    serial_store: SerialStore | None = None
    today: datetime.date = field(default_factory=lambda: datetime.datetime.now(datetime.UTC).date())
    resources: list[Registered] = field(default_factory=list)
    serials: dict[str, int] = field(default_factory=dict)
    parents: dict[tuple[str, str], str] = field(default_factory=dict)
    dependencies: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def new_resource(
        self, args: pulumi.runtime.MockResourceArgs
    ) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        if args.typ.endswith("bind9:ZoneSerials"):
            # The ZoneSerials provider's part, with a SerialStore standing in for state
            # (no store: every zone is new).
            serials: dict[str, dict[str, Any]] = {}
            for zone, entry in dict(args.inputs.get("zones") or {}).items():
                if self.serial_store is not None:
                    state = self.serial_store.advance(
                        self.stack, zone, entry["contentHash"], self.today)
                else:
                    state = next_serial(None, entry["contentHash"], self.today)
                serials[zone] = {"serial": state.serial, "contentHash": state.content_hash}
                self.serials[zone] = state.serial
            outputs["serials"] = serials
        if args.typ.endswith("bind9:TransferGate"):
            # The gate provider's check: the stack's serials folded into each zone.
            from .transfer_gate import with_expected_serials

            outputs = with_expected_serials(outputs)
        if args.typ.endswith("bind9:DnssecKeys"):
            # The DnssecKeys provider's part: fresh keys (render shows the Secret redacted).
            from .dnssec_keys import DnssecKeysProvider

            outputs = DnssecKeysProvider().create(dict(args.inputs)).outs or outputs
        self.resources.append(
            Registered(
                args.typ, args.name, redact(args.inputs),
                parent=self.parents.get((args.typ, args.name)), custom=args.custom,
            )
        )
        return f"{args.name}-id", outputs

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        if SECRET_SIG in value:
            # Keep the shape (a Secret's stringData stays a map of keys), hide the values.
            inner = value.get("value")
            if isinstance(inner, dict):
                return {k: REDACTED for k in inner}
            return REDACTED
        return {k: redact(v) for k, v in value.items() if k != "__provider"}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def run_components(
    topology: Topology,
    serial_store: SerialStore | None = None,
    mocks: CaptureMocks | None = None,
) -> CaptureMocks:
    """Register the stack's components under mocks; return what was registered."""
    from .program import build, export

    if mocks is None:
        mocks = CaptureMocks(stack=topology.stack, serial_store=serial_store)
    pulumi.runtime.set_mocks(
        mocks, project="bind9-topology", stack=topology.stack, preview=False,
        monitor=_ParentRecordingMonitor(mocks),
    )

    def program() -> None:
        export(build(topology), topology)

    _sync_await(run_pulumi_func(program))
    return mocks


def kubernetes_objects(mocks: CaptureMocks) -> list[dict[str, Any]]:
    return [_restore_ints(r.inputs) for r in mocks.resources if r.type.startswith("kubernetes:")
            and "kind" in r.inputs]


def _restore_ints(value: Any) -> Any:
    """The mock monitor's protobuf Struct turns every number into a float (53 -> 53.0);
    the API server rejects 53.0 for an int32 field, and every number in our objects is whole."""
    if isinstance(value, dict):
        return {k: _restore_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_ints(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
