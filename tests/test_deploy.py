"""`deploy` (components/deploy.py) without the engine: the engine's events, as the
Automation API hands them over, turned into the summary, the streamed lines and JSON."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pulumi.automation import EngineEvent

from bind9_topology.config.fleet import DeployOrder
from components.cli import build_parser
from components.deploy import (
    DeployError,
    EventCollector,
    StackReport,
    _check_stacks,
    followed_moves,
    serial_moves,
    summary_json,
    summary_table,
)

pytestmark = pytest.mark.unit

URN = "urn:pulumi:local::bind9-topology::"
SERIALS = "pulumi-python:dynamic/bind9:ZoneSerials"
GATE = "pulumi-python:dynamic/bind9:TransferGate"


def _step(kind: str, op: str, type_: str, name: str, *, old: Any = None,
          new: Any = None) -> EngineEvent:
    urn = f"{URN}bind9-topology:index:Bind9Region${type_}::{name}"
    meta: dict[str, Any] = {"op": op, "urn": urn, "type": type_, "provider": ""}
    if old is not None:
        meta["old"] = {"type": type_, "urn": urn, **old}
    if new is not None:
        meta["new"] = {"type": type_, "urn": urn, **new}
    return EngineEvent.from_json({"sequence": 1, "timestamp": 0, kind: {"metadata": meta}})


def _diag(message: str, urn: str | None = None, severity: str = "error") -> EngineEvent:
    event: dict[str, Any] = {"message": message, "color": "never", "severity": severity}
    if urn:
        event["urn"] = urn
    return EngineEvent.from_json({"sequence": 2, "timestamp": 0, "diagnosticEvent": event})


def test_serial_moves() -> None:
    old = {"a.example": {"serial": 2026010100, "contentHash": "x"},
           "b.example": {"serial": 2026010100, "contentHash": "y"}}
    new = {"a.example": {"serial": 2026010101, "contentHash": "z"},
           "b.example": {"serial": 2026010100, "contentHash": "y"},
           "c.example": {"serial": 2026010100, "contentHash": "w"}}
    assert serial_moves(old, new) == {"a.example": (2026010100, 2026010101),
                                      "c.example": (None, 2026010100)}
    assert serial_moves(None, new)["b.example"] == (None, 2026010100)
    # An unknown plan (preview before the serials are decided): every zone, to None.
    unknown = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
    assert serial_moves(old, unknown) == {"a.example": (2026010100, None),
                                          "b.example": (2026010100, None)}
    assert serial_moves(old, {}) == {}  # zones that leave the stack: no serial moves


def test_a_regions_zones_move_with_their_primaries_serial() -> None:
    old = {"example.com": {"primarySerial": 5}, "example.org": {"primarySerial": 5},
           "own.example": {"expectedSerial": 3}}
    new = {"example.com": {"primarySerial": 6}, "example.org": {"primarySerial": 5},
           "example.net": {"primarySerial": 1}, "own.example": {"expectedSerial": 4}}
    assert followed_moves(old, new) == {"example.com": (5, 6), "example.net": (None, 1)}
    report = StackReport(stack="prod-us-west-2", operation="preview")
    EventCollector(report)(_step("resourcePreEvent", "update", GATE, "usw2-transfer-gate",
                                 old={"inputs": {"zones": old}}, new={"inputs": {"zones": new}}))
    assert report.serial_moves == {"example.com": (5, 6), "example.net": (None, 1)}


def test_a_preview_counts_steps_and_names_the_zone_whose_serial_moves() -> None:
    report = StackReport(stack="local", operation="preview")
    collect = EventCollector(report)
    old = {"outputs": {"serials": {"local.example": {"serial": 1}, "local.test": {"serial": 1}}}}
    new = {"inputs": {"serials": {"local.example": {"serial": 2}, "local.test": {"serial": 1}}}}
    for event in (
        _step("resourcePreEvent", "same", "pulumi:pulumi:Stack", "bind9-topology-local"),
        _step("resourcePreEvent", "update", SERIALS, "local-zone-serials", old=old, new=new),
        _step("resourcePreEvent", "replace", "kubernetes:core/v1:ConfigMap", "zones-0"),
        _step("resourcePreEvent", "same", "kubernetes:apps/v1:Deployment", "local-primary"),
        _step("resourcePreEvent", "update", GATE, "local-transfer-gate",
              new={"inputs": {"zones": {"local.example": {}}}}),
        _step("resOutputsEvent", "update", GATE, "local-transfer-gate"),
        EngineEvent.from_json({"sequence": 3, "timestamp": 0, "policyEvent": {
            "message": "image is not pinned\n", "color": "never", "policyName": "pinned-images",
            "policyPackName": "bind9-topology", "policyPackVersion": "0.1.0",
            "enforcementLevel": "mandatory",
            "resourceUrn": f"{URN}kubernetes:apps/v1:Deployment::local-primary"}}),
        _diag("a warning", severity="warning"),
    ):
        collect(event)
    assert report.counts == {"create": 0, "update": 2, "delete": 0, "replace": 1}
    assert report.serial_moves == {"local.example": (1, 2)}
    assert [c[2] for c in report.changes] == ["local-zone-serials", "zones-0",
                                               "local-transfer-gate"]
    assert report.policy_violations == [{
        "pack": "bind9-topology", "policy": "pinned-images", "level": "mandatory",
        "message": "image is not pinned", "resource": "local-primary"}]
    assert not report.ok and report.errors == []

    table = summary_table([report, StackReport(stack="prod-us-west-2", operation="preview")])
    lines = table.splitlines()
    assert lines[0].split() == ["stack", "create", "update", "delete", "replace", "policy",
                                "serial", "moves"]
    assert lines[1].split() == ["local", "(FAILED)", "0", "2", "0", "1", "1",
                                "local.example", "(1", "->", "2)"]
    assert lines[2].split() == ["prod-us-west-2", "0", "0", "0", "0", "0", "-"]
    assert lines[3] == ("local: policy bind9-topology/pinned-images [mandatory] "
                        "local-primary: image is not pinned")
    order = DeployOrder(stacks=["local", "prod-us-west-2"])
    doc = summary_json("preview", order, [report], [])
    assert doc["ok"] is False and doc["stoppedAt"] is None
    assert doc["stacks"][0]["serialMoves"] == {"local.example": {"from": 1, "to": 2}}
    assert doc["stacks"][0]["updates"] == 2 and doc["stacks"][0]["replaces"] == 1


def test_up_streams_steps_and_each_zones_verdict_and_keeps_the_gates_report() -> None:
    lines: list[str] = []
    report = StackReport(stack="prod", operation="up")
    collect = EventCollector(report, lines.append)
    status = {"example.com": {"ready": True, "servedSerial": 2026010102,
                              "servers": {"a": {}, "b": {}}, "readyAfterSeconds": 1.25}}
    collect(_step("resourcePreEvent", "create", "kubernetes:core/v1:ConfigMap", "cfg"))
    collect(_step("resOutputsEvent", "create", "kubernetes:core/v1:ConfigMap", "cfg"))
    collect(_step("resOutputsEvent", "same", "kubernetes:core/v1:Secret", "tsig"))
    collect(_step("resOutputsEvent", "update", GATE, "prod-transfer-gate",
                  new={"outputs": {"status": status, "tsigSecret": "[secret]"}}))
    assert lines == [
        "  create   ConfigMap cfg",
        "  update   TransferGate prod-transfer-gate",
        "  gate     example.com: ready at serial 2026010102 on 2 server(s) after 1.2 s",
    ]
    assert report.ok and report.gate["example.com"]["servedSerial"] == 2026010102

    # The gate fails: its message is the report; the engine's closing line is not.
    failed = StackReport(stack="prod-us-west-2", operation="up")
    collect = EventCollector(failed, lines.append)
    gate_urn = f"{URN}bind9-topology:index:Bind9Region${GATE}::usw2-transfer-gate"
    message = ("zone example.com: not ready after 5s (target serial 7); lagging:\n"
               "  - secondary s (127.0.0.1#1): serves serial none")
    collect(_diag(message + "\n", urn=gate_urn))
    collect(_diag("update failed", urn=f"{URN}pulumi:pulumi:Stack::bind9-topology-x"))
    collect(_diag("update failed"))
    assert failed.gate_failed and not failed.ok
    assert failed.report() == f"usw2-transfer-gate: {message}"
    assert lines[-1] == "  error    usw2-transfer-gate: zone example.com: not ready after 5s " \
                        "(target serial 7); lagging:"


def test_a_stack_missing_in_the_backend_is_named_with_its_steps() -> None:
    workspace = SimpleNamespace(list_stacks=lambda: [SimpleNamespace(name="prod")])
    _check_stacks(workspace, ["prod"])
    with pytest.raises(DeployError) as err:
        _check_stacks(workspace, ["prod", "prod-us-west-2"])
    text = str(err.value)
    assert "prod-us-west-2 do not exist in the backend" in text, text
    assert "pulumi stack init prod-us-west-2 && pulumi config set --secret --stack " \
           "prod-us-west-2 bind9-topology:tsigSecret" in text, text


def test_the_cli_takes_deploy() -> None:
    args = build_parser().parse_args(["deploy", "--preview", "--stacks", "a,b", "--json"])
    assert args.preview and not args.up and args.stacks == "a,b" and args.json
    with pytest.raises(SystemExit):
        build_parser().parse_args(["deploy", "--preview", "--up"])
    assert isinstance(args.project, Path)
