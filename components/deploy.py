"""`python -m components deploy`: every stack of the project through Pulumi's Automation API.

    python -m components deploy --preview [--stacks a,b] [--json] [--no-policy]
    python -m components deploy --up [--stacks a,b] [--json]

The stacks run in the order of bind9_topology.config.fleet (the primary stacks, then the
region stacks that transfer from them). `--preview` previews each one (with the policy
pack in policy/) and prints one summary: per stack the creates, updates, deletes and
replaces, the policy violations and the zones whose serial moves (the stack's
ZoneSerials: its planned serials against those in state). `--up` runs `pulumi up` stack
after stack, prints each resource step as it lands and each zone's verdict of the stack's
transfer gate, and stops at the first stack that fails, printing its report (the gate's
message, never a Python traceback); the stacks after it are not run.

The engine is the `pulumi` CLI on PATH (`source scripts/engine-env.sh` puts the one this
project builds there) with its backend (`PULUMI_BACKEND_URL`, `pulumi login`). Each stack
must exist there (`pulumi stack init <stack>`) with its `tsigSecret` set; the `local`
stack needs its servers started first (`python -m components local up --stack local`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bind9_topology.config.config_size import check_stack
from bind9_topology.config.fleet import DeployOrder, deploy_order
from bind9_topology.config.model import ConfigIssue, TopologyError
from bind9_topology.config.topology import PREFIX, SECRET_KEY

ZONE_SERIALS_TYPE = "pulumi-python:dynamic/bind9:ZoneSerials"
GATE_TYPE = "pulumi-python:dynamic/bind9:TransferGate"
#: the operations counted in the summary, as Pulumi names them
COUNTED = ("create", "update", "delete", "replace")
#: steps shown while `up` runs (the parts of a replacement show as "replace")
SHOWN = {"create", "update", "delete", "replace", "create-replacement", "delete-replaced",
         "import"}


def _name(urn: str) -> str:
    return urn.split("::")[-1]


def _short_type(type_: str) -> str:
    """kubernetes:core/v1:ConfigMap -> ConfigMap; pulumi-python:dynamic/bind9:X -> X."""
    return type_.rsplit(":", 1)[-1]


@dataclass
class StackReport:
    """What one stack's preview or up did, gathered from the engine's events."""

    stack: str
    operation: str
    #: op -> count, over the stack's own resources (not the Stack or provider resources)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED, 0))
    #: (op, type, name) of every resource that changes
    changes: list[tuple[str, str, str]] = field(default_factory=list)
    policy_violations: list[dict[str, str]] = field(default_factory=list)
    #: zone -> (serial in state or None, planned serial or None when not known yet)
    serial_moves: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    #: zone -> the gate's status of it after `up`
    gate: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: error diagnostics: (resource name or "", message)
    errors: list[tuple[str, str]] = field(default_factory=list)
    #: the gate failed (its error names the TransferGate resource)
    gate_failed: bool = False
    #: a failure before the engine ran (no such stack, no CLI) or its last words
    failure: str | None = None
    seconds: float = 0.0
    after: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (self.failure is None and not self.errors and not self.gate_failed
                and not any(v.get("level") == "mandatory" for v in self.policy_violations))

    def report(self) -> str:
        """Why the stack failed, as the user needs it: the engine's error messages."""
        if self.errors:
            parts = []
            for resource, message in self.errors:
                parts.append(f"{resource}: {message}" if resource else message)
            return "\n".join(parts)
        return self.failure or ""

    def as_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack, "operation": self.operation, "ok": self.ok,
            "after": self.after,
            **{f"{op}s": n for op, n in self.counts.items()},
            "changes": [{"op": op, "type": t, "name": n} for op, t, n in self.changes],
            "policyViolations": self.policy_violations,
            "serialMoves": {z: {"from": old, "to": new}
                            for z, (old, new) in sorted(self.serial_moves.items())},
            "gate": dict(sorted(self.gate.items())),
            "gateFailed": self.gate_failed,
            "error": self.report() or None,
            "seconds": round(self.seconds, 1),
        }


def _serial(value: Any) -> int | None:
    if isinstance(value, Mapping):
        value = value.get("serial")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def serial_moves(old: Any, new: Any) -> dict[str, tuple[int | None, int | None]]:
    """zone -> (old, new) for each zone of ZoneSerials' planned *new* serials whose serial
    differs from the *old* outputs' (a zone new to the stack has old None; a zone that
    leaves it is not listed). A plan not known yet (an unknown value in preview) moves
    every zone to None."""
    old_map = old if isinstance(old, Mapping) else {}
    if not isinstance(new, Mapping):
        return {str(z): (_serial(s), None) for z, s in old_map.items()} if new else {}
    moves = {}
    for zone, planned in new.items():
        before, after = _serial(old_map.get(zone)), _serial(planned)
        if before != after:
            moves[str(zone)] = (before, after)
    return moves


def followed_moves(old: Any, new: Any) -> dict[str, tuple[int | None, int | None]]:
    """zone -> (old, new) primarySerial of the gate's followed zones (a region's secondary
    zones: what their primaries serve) whose primary serial moved."""
    if not isinstance(new, Mapping):
        return {}
    old_zones = old if isinstance(old, Mapping) else {}
    moves: dict[str, tuple[int | None, int | None]] = {}
    for zone, entry in new.items():
        if not isinstance(entry, Mapping) or "primarySerial" not in entry:
            continue
        was = old_zones.get(zone)
        before = _serial(was.get("primarySerial")) if isinstance(was, Mapping) else None
        after = _serial(entry.get("primarySerial"))
        if after is not None and before != after:
            moves[str(zone)] = (before, after)
    return moves


class EventCollector:
    """The Automation API's on_event: fills a StackReport and, for `up`, writes each
    landed step and gate verdict to *echo* as it arrives (events come from the engine's
    event stream, on another thread)."""

    def __init__(self, report: StackReport, echo: Callable[[str], None] | None = None):
        self.report = report
        self.echo = echo
        self._lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        with self._lock:
            if event.resource_pre_event is not None:
                self._pre(event.resource_pre_event.metadata)
            elif event.res_outputs_event is not None:
                self._outputs(event.res_outputs_event.metadata)
            elif event.policy_event is not None:
                self._policy(event.policy_event)
            elif event.diagnostic_event is not None:
                self._diagnostic(event.diagnostic_event)
            elif event.res_op_failed_event is not None:
                meta = event.res_op_failed_event.metadata
                if meta.type == GATE_TYPE:
                    self.report.gate_failed = True

    def _say(self, line: str) -> None:
        if self.echo is not None:
            self.echo(line)

    def _pre(self, meta: Any) -> None:
        op = str(getattr(meta.op, "value", meta.op))
        if meta.type.startswith("pulumi:"):
            return
        if op in COUNTED:
            self.report.counts[op] += 1
            self.report.changes.append((op, meta.type, _name(meta.urn)))
        if meta.type == ZONE_SERIALS_TYPE and op != "same":
            old = (meta.old.outputs or {}).get("serials") if meta.old else None
            new = (meta.new.inputs or {}).get("serials") if meta.new else None
            if op != "delete":  # zones that leave the stack move no serial
                self.report.serial_moves.update(serial_moves(old, new))
        if meta.type == GATE_TYPE and op in ("create", "update", "replace"):
            zones = (meta.new.inputs or {}).get("zones") if meta.new else None
            # A region's zones follow their primaries (ADR 13): the serial it will
            # transfer moves with the primary's.
            before = (meta.old.inputs or {}).get("zones") if meta.old else None
            for zone, (was, now) in followed_moves(before, zones).items():
                self.report.serial_moves.setdefault(zone, (was, now))
            count = f"{len(zones)} zone(s)" if isinstance(zones, Mapping) else "its zones"
            self._say(f"  gate     checking {count}: every server of each zone at its serial")

    def _outputs(self, meta: Any) -> None:
        op = str(getattr(meta.op, "value", meta.op))
        if meta.type.startswith("pulumi:") or op not in SHOWN:
            return
        self._say(f"  {op:<8} {_short_type(meta.type)} {_name(meta.urn)}")
        if meta.type == GATE_TYPE and meta.new is not None:
            status = (meta.new.outputs or {}).get("status")
            if isinstance(status, Mapping):
                for zone, verdict in sorted(status.items()):
                    if isinstance(verdict, Mapping):
                        self.report.gate[str(zone)] = dict(verdict)
                        self._say(f"  gate     {zone}: {verdict_text(verdict)}")

    def _policy(self, event: Any) -> None:
        self.report.policy_violations.append({
            "pack": event.policy_pack_name, "policy": event.policy_name,
            "level": event.enforcement_level, "message": event.message.strip(),
            "resource": _name(event.resource_urn) if event.resource_urn else "",
        })

    def _diagnostic(self, event: Any) -> None:
        if event.severity != "error":
            return
        message = event.message.strip()
        resource = _name(event.urn) if event.urn else ""
        if event.urn and "::" in event.urn and event.urn.split("::")[-2].endswith(
                ":TransferGate"):
            self.report.gate_failed = True
        if not event.urn and self.report.errors:
            return  # the engine's closing "update failed": the cause is already here
        if event.urn and event.urn.split("::")[-2] == "pulumi:pulumi:Stack" and message \
                .startswith("update failed") and self.report.errors:
            return
        self.report.errors.append((resource, message))
        first = message.splitlines()[0] if message else ""
        self._say(f"  error    {resource + ': ' if resource else ''}{first}")


def verdict_text(verdict: Mapping[str, Any]) -> str:
    """One zone of the gate's status, as a line."""
    if verdict.get("ready") is not True:
        return f"NOT ready ({verdict.get('reason') or 'see the gate report'})"
    serial = verdict.get("servedSerial")
    servers = verdict.get("servers")
    count = f" on {len(servers)} server(s)" if isinstance(servers, Mapping) else ""
    after = verdict.get("readyAfterSeconds")
    took = f" after {float(after):.1f} s" if isinstance(after, int | float) else ""
    return f"ready at serial {serial}{count}{took}"


# --------------------------------------------------------------------------- output


def _moves_text(moves: Mapping[str, tuple[int | None, int | None]]) -> str:
    if not moves:
        return "-"
    parts = []
    for zone, (old, new) in sorted(moves.items()):
        if new is None:
            parts.append(f"{zone} (serial not known yet)")
        elif old is None:
            parts.append(f"{zone} (new: {new})")
        else:
            parts.append(f"{zone} ({old} -> {new})")
    return ", ".join(parts)


def summary_table(reports: Iterable[StackReport]) -> str:
    """The readable summary: one row per stack, then each stack's violations and errors."""
    reports = list(reports)
    head = ("stack", "create", "update", "delete", "replace", "policy", "serial moves")
    rows: list[tuple[str, ...]] = [head]
    for r in reports:
        rows.append((r.stack + ("" if r.ok else " (FAILED)"),
                     *(str(r.counts[op]) for op in COUNTED),
                     str(len(r.policy_violations)), _moves_text(r.serial_moves)))
    width = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(width[0]), *(c.rjust(width[i + 1])
                                            for i, c in enumerate(row[1:-1]))]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    for r in reports:
        for v in r.policy_violations:
            lines.append(f"{r.stack}: policy {v['pack']}/{v['policy']} [{v['level']}] "
                         f"{v['resource'] + ': ' if v['resource'] else ''}{v['message']}")
        if r.report():
            text = r.report().replace("\n", "\n    ")
            lines.append(f"{r.stack}: {text}")
    return "\n".join(lines)


def summary_json(operation: str, order: DeployOrder, reports: list[StackReport],
                 not_run: list[str]) -> dict[str, Any]:
    return {
        "operation": operation,
        "order": order.stacks,
        "ok": all(r.ok for r in reports) and not not_run,
        "stacks": [r.as_json() for r in reports],
        "stoppedAt": next((r.stack for r in reports if not r.ok), None)
        if operation == "up" else None,
        "notRun": not_run,
    }


# --------------------------------------------------------------------------- the engine


class DeployError(Exception):
    """A problem found before any stack ran (no CLI, a stack missing in the backend)."""


def _workspace(project: Path) -> Any:
    from pulumi.automation import LocalWorkspace, PulumiCommand

    cli = shutil.which("pulumi")
    if cli is None:
        raise DeployError(
            "no `pulumi` on PATH: `source scripts/engine-env.sh` (builds this project's "
            "engine from Go modules and puts it on PATH, offline) or install the Pulumi CLI")
    root = Path(cli).resolve().parent.parent  # PulumiCommand runs <root>/bin/pulumi
    command = PulumiCommand(root=str(root)) if (root / "bin" / "pulumi").exists() \
        else PulumiCommand()
    return LocalWorkspace(work_dir=str(project), pulumi_command=command)


def _check_stacks(workspace: Any, stacks: list[str]) -> None:
    try:
        known = {s.name.split("/")[-1] for s in workspace.list_stacks()}
    except Exception as exc:  # the backend cannot be read: say which
        first = str(exc).strip().splitlines()
        raise DeployError(f"cannot list the backend's stacks ({first[-1] if first else exc}); "
                          "`pulumi login` (or set PULUMI_BACKEND_URL)") from None
    missing = [s for s in stacks if s not in known]
    if missing:
        steps = "; ".join(
            f"pulumi stack init {s} && pulumi config set --secret --stack {s} "
            f'{PREFIX}{SECRET_KEY} "$(python -m components keygen)"' for s in missing)
        raise DeployError(
            f"stack(s) {', '.join(missing)} do not exist in the backend yet; create each "
            f"with its TSIG secret first: {steps} (the `local` stack takes the local runner's "
            "secret, .local-run/tsig.secret)")


def _check_config_sizes(project: Path, stacks: list[str], echo: Callable[[str], None]) -> None:
    """Every stack's config against the cap on the engine's PULUMI_CONFIG, before any
    stack runs: past it the engine says only 'argument list too long', and stacks earlier
    in the order would already have been changed."""
    problems: list[ConfigIssue] = []
    for stack in stacks:
        too_big, near = check_stack(project, stack)
        problems += too_big
        for warning in near:
            echo(f"warning: {warning}")
    if problems:
        raise DeployError("no stack was run: " + TopologyError(problems).render())


def _failure_text(exc: Exception) -> str:
    """The last meaningful lines of a failed command (when no event said why)."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    stderr = [ln for ln in lines if ln.lstrip().startswith("error:")]
    return "\n".join((stderr or lines)[-6:])


def run_stack(workspace: Any, stack: str, operation: str, *, policy_pack: Path | None,
              echo: Callable[[str], None] | None, after: dict[str, str]) -> StackReport:
    from pulumi.automation import Stack
    from pulumi.automation.errors import CommandError

    report = StackReport(stack=stack, operation=operation, after=after)
    collector = EventCollector(report, echo if operation == "up" else None)
    started = time.monotonic()
    try:
        selected = Stack.select(stack, workspace)
        packs = [str(policy_pack)] if policy_pack is not None else None
        if operation == "preview":
            selected.preview(on_event=collector, policy_packs=packs, color="never")
        else:
            selected.up(on_event=collector, policy_packs=packs, color="never",
                        show_secrets=False, suppress_outputs=True, suppress_progress=True)
    except CommandError as exc:
        if not report.errors and not report.policy_violations:
            report.failure = _failure_text(exc) or f"pulumi {operation} failed"
    finally:
        report.seconds = time.monotonic() - started
    return report


def cmd_deploy(args: argparse.Namespace) -> int:
    project: Path = args.project
    selected = [s.strip() for s in args.stacks.split(",") if s.strip()] if args.stacks else None
    order = deploy_order(project, selected)
    operation = "up" if args.up else "preview"
    out: IO[str] = sys.stderr if args.json else sys.stdout

    def echo(line: str) -> None:
        print(line, file=out, flush=True)

    try:
        _check_config_sizes(project, order.stacks, echo)
        workspace = _workspace(project)
        _check_stacks(workspace, order.stacks)
    except DeployError as exc:
        if args.json:
            print(json.dumps({"operation": operation, "order": order.stacks, "ok": False,
                              "error": str(exc), "stacks": []}, indent=2))
        print(f"deploy: {exc}", file=sys.stderr)
        return 1
    pack = None if args.no_policy else project / "policy"
    echo(f"deploy --{operation}: {' -> '.join(order.stacks)}")
    reports: list[StackReport] = []
    not_run: list[str] = []
    for n, stack in enumerate(order.stacks, 1):
        after = order.after.get(stack, {})
        waits = f" (after {', '.join(after)})" if after else ""
        echo(f"== {stack} ({n}/{len(order.stacks)}): pulumi {operation}{waits}")
        report = run_stack(workspace, stack, operation, policy_pack=pack, echo=echo,
                           after=after)
        reports.append(report)
        if operation == "up":
            counts = ", ".join(f"{report.counts[op]} {op}d" if op != "replace"
                               else f"{report.counts[op]} replaced" for op in COUNTED)
            if not report.ok:
                what = "the transfer gate failed" if report.gate_failed else "pulumi up failed"
                not_run = order.stacks[n:]
                echo(f"{stack}: {what} after {report.seconds:.0f} s; its report:")
                for line in (report.report() or "(no message)").splitlines():
                    echo(f"    {line}")
                if not_run:
                    echo(f"stopped: not run: {', '.join(not_run)}")
                break
            echo(f"{stack}: done in {report.seconds:.0f} s ({counts})")
    if args.json:
        print(json.dumps(summary_json(operation, order, reports, not_run), indent=2))
    elif operation == "preview":
        print(summary_table(reports))
    return 0 if all(r.ok for r in reports) and not not_run else 1


def add_deploy_parser(sub: Any) -> None:
    p = sub.add_parser(
        "deploy", help="preview or `pulumi up` every stack in order (Automation API)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--preview", action="store_true",
                      help="preview every stack; print one summary")
    mode.add_argument("--up", action="store_true",
                      help="pulumi up stack after stack; stop at the first that fails")
    p.add_argument("--stacks", help="comma-separated stacks (default: every stack file)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout (CI)")
    p.add_argument("--no-policy", action="store_true",
                   help="without the policy pack in policy/")
    p.set_defaults(func=cmd_deploy)
