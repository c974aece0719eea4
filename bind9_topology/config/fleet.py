"""The order in which the project's stacks are deployed, read from their stack files.

A stack comes after every stack it transfers from: one whose instances own an address
(`service.loadBalancerIP` / `clusterIP`) that this stack's zones or catalogs name in
`primaryServers`, and the stack its `primaryStack` names. Pure: only the stack files
(and the zonesFiles and bindy manifests they list) are read; nothing is built or probed.
`python -m components deploy` runs `pulumi up` in this order.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from bind9_topology.config.bindy import load_manifests
from bind9_topology.config.model import PROJECT, ConfigIssue, TopologyError, parse_server
from bind9_topology.config.topology import PREFIX, list_stacks, read_stack_file
from bind9_topology.config.zone_files import ZONES_FILES_KEY, load_zone_files


@dataclass(frozen=True)
class StackLinks:
    """What one stack file says about its neighbours."""

    stack: str
    #: fixed addresses of the stack's instances
    owns: frozenset[str] = frozenset()
    #: hosts its secondary zones and catalogs transfer from (primaryServers)
    transfers_from: frozenset[str] = frozenset()
    #: the `primaryStack` value as written (org/project/stack or a bare stack name)
    primary_stack: str | None = None


@dataclass(frozen=True)
class DeployOrder:
    """Stacks in deploy order, with the stacks each one must come after (and why)."""

    stacks: list[str]
    #: stack -> {stack it comes after: reason}
    after: dict[str, dict[str, str]] = field(default_factory=dict)

    def primaries(self) -> list[str]:
        """The stacks that come after no other stack."""
        return [s for s in self.stacks if not self.after.get(s)]


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _host(server: Any) -> str | None:
    if not isinstance(server, str):
        return None
    try:
        return parse_server(server)[0]
    except ValueError:
        return None  # `validate` reports it; it links to nothing here


def links_of(stack: str, raw: Mapping[str, Any], project_dir: Path) -> StackLinks:
    """The addresses *stack* owns and transfers from, from its raw config (*raw*:
    read_stack_file's result), its zonesFiles and its bindy manifests."""
    instances = [i for i in _as_list(raw.get("instances")) if isinstance(i, Mapping)]
    zones = [z for z in _as_list(raw.get("zones")) if isinstance(z, Mapping)]
    zones += [z for z in load_zone_files(project_dir, _as_list(raw.get(ZONES_FILES_KEY))).zones
              if isinstance(z, Mapping)]
    manifests = _as_list(raw.get("bindyManifests"))
    if manifests:
        namespace = raw.get("namespace")
        bindy = load_manifests(project_dir, manifests,
                               namespace if isinstance(namespace, str) else None)
        instances += bindy.instances
        zones += bindy.zones
    owns: set[str] = set()
    for inst in instances:
        service = inst.get("service")
        if isinstance(service, Mapping):
            for key in ("loadBalancerIP", "clusterIP"):
                if isinstance(service.get(key), str):
                    owns.add(service[key])
    servers: list[Any] = []
    for zone in zones:
        config = zone.get("secondaryConfig")
        if isinstance(config, Mapping):
            servers += _as_list(config.get("primaryServers"))
    for catalog in _as_list(raw.get("catalogs")):
        if isinstance(catalog, Mapping):
            servers += _as_list(catalog.get("primaryServers"))
    hosts = {h for h in map(_host, servers) if h}
    primary_stack = raw.get("primaryStack")
    return StackLinks(stack=stack, owns=frozenset(owns), transfers_from=frozenset(hosts),
                      primary_stack=primary_stack if isinstance(primary_stack, str)
                      and primary_stack else None)


def _referenced_stack(reference: str) -> str | None:
    """The stack of this project that a `primaryStack` value names; None for another
    project's stack (the engine reads it; it is not deployed from here)."""
    parts = reference.split("/")
    if len(parts) == 3 and parts[1] != PROJECT:
        return None
    return parts[-1]


def dependencies(links: Mapping[str, StackLinks]) -> tuple[dict[str, dict[str, str]],
                                                          list[ConfigIssue]]:
    """stack -> {stack it comes after: reason}; a `primaryStack` naming no stack file of
    the project is an issue."""
    owners: dict[str, set[str]] = {}
    for link in links.values():
        for address in link.owns:
            owners.setdefault(address, set()).add(link.stack)
    after: dict[str, dict[str, str]] = {s: {} for s in links}
    issues: list[ConfigIssue] = []
    for link in links.values():
        for host in sorted(link.transfers_from):
            for owner in sorted(owners.get(host, set()) - {link.stack}):
                after[link.stack].setdefault(owner, f"primaryServers name {host}")
        if link.primary_stack:
            name = _referenced_stack(link.primary_stack)
            if name is None:
                continue
            if name not in links:
                issues.append(ConfigIssue(
                    path=f"Pulumi.{link.stack}.yaml:{PREFIX}primaryStack", message=(
                        f"names stack {name!r} ({link.primary_stack}), which has no stack "
                        f"file here; known stacks: {', '.join(sorted(links))}")))
            elif name != link.stack:
                after[link.stack][name] = f"primaryStack {link.primary_stack}"
    return after, issues


def _cycle(after: Mapping[str, Mapping[str, str]], among: Iterable[str]) -> list[str]:
    """One cycle among the stacks *among* (each waits for the next), as a list."""
    left = set(among)
    start = min(left)
    path: list[str] = []
    seen: dict[str, int] = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = min(d for d in after[node] if d in left)
    return [*path[seen[node]:], node]


def order(links: Mapping[str, StackLinks], selected: Sequence[str] | None = None) -> DeployOrder:
    """*selected* (default: every stack) in deploy order: each after the stacks it
    transfers from, ties by name. A cycle among them or the stacks they depend on is a
    TopologyError naming the stacks."""
    after, issues = dependencies(links)
    wanted = list(dict.fromkeys(selected)) if selected is not None else sorted(links)
    unknown = [s for s in wanted if s not in links]
    if unknown:
        issues.append(ConfigIssue(path="--stacks", message=(
            f"no stack file for {', '.join(unknown)}; known stacks: "
            f"{', '.join(sorted(links))}")))
    if issues:
        raise TopologyError(issues)
    # The selected stacks and everything they wait for, ordered together.
    closure: set[str] = set()
    todo = list(wanted)
    while todo:
        stack = todo.pop()
        if stack not in closure:
            closure.add(stack)
            todo += after[stack]
    waiting = {s: {d for d in after[s] if d in closure} for s in closure}
    # Wave by wave (the primary stacks, then the stacks that wait only for them, ...),
    # by name within a wave.
    wave = {s: 0 for s in closure if not waiting[s]}
    ready = [(0, s) for s in wave]
    heapq.heapify(ready)
    ordered: list[str] = []
    while ready:
        _, stack = heapq.heappop(ready)
        ordered.append(stack)
        for other in sorted(closure):
            if stack in waiting[other]:
                waiting[other].discard(stack)
                if not waiting[other]:
                    wave[other] = 1 + max(wave[d] for d in after[other] if d in closure)
                    heapq.heappush(ready, (wave[other], other))
    if len(ordered) < len(closure):
        stuck = [s for s in closure if s not in ordered]
        cycle = _cycle({s: {d: "" for d in waiting[s]} for s in stuck}, stuck)
        reasons = "; ".join(f"{a} after {b} ({after[a][b]})" for a, b in pairwise(cycle))
        raise TopologyError([ConfigIssue(path=", ".join(f"Pulumi.{s}.yaml" for s in cycle[:-1]),
                                         message=(
            f"the stacks wait for each other in a cycle: {' -> '.join(cycle)} ({reasons}); "
            "no order deploys them; a stack may only transfer from stacks that do not "
            "transfer from it"))])
    keep = set(wanted)
    return DeployOrder(stacks=[s for s in ordered if s in keep],
                       after={s: dict(sorted(after[s].items())) for s in ordered if s in keep})


def deploy_order(project_dir: Path, selected: Sequence[str] | None = None) -> DeployOrder:
    """Every stack file of *project_dir* read, then *selected* (default: all) ordered."""
    links = {s: links_of(s, read_stack_file(project_dir, s), project_dir)
             for s in list_stacks(project_dir)}
    return order(links, selected)
