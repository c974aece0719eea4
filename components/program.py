"""The Pulumi program: config -> checked topology -> components -> stack outputs."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime.config import get_config_env, get_config_secret_keys_env, is_config_secret

from .model import TopologyError
from .region import Bind9Region, Bind9RegionArgs
from .topology import (
    PREFIX,
    SECRET_KEY,
    StackConfig,
    Topology,
    clear_secret_issue,
    load_topology,
    namespace_typos,
)


def raw_config_from_engine() -> StackConfig:
    """All of this project's config keys (objects arrive as JSON text)."""
    env = get_config_env()
    raw = StackConfig(warnings=namespace_typos(str(k) for k in env))
    for full_key, value in env.items():
        if not full_key.startswith(PREFIX):
            continue
        key = full_key[len(PREFIX):]
        if isinstance(value, str) and value[:1] in "[{":
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        raw[key] = value
    return raw


def secret_in_clear() -> bool:
    """True when the stack's TSIG secret is set but not as a secret (the engine says which
    keys are secrets in PULUMI_CONFIG_SECRET_KEYS; the language host loads them too)."""
    key = f"{PREFIX}{SECRET_KEY}"
    return key not in get_config_secret_keys_env() and not is_config_secret(key)


def checked_topology(stack: str, raw: dict[str, Any], project_dir: Path) -> Topology:
    secret = raw.get(SECRET_KEY)
    clear = []
    if isinstance(secret, str) and secret and secret_in_clear():
        # Refused exactly as `validate` refuses it, and never used.
        clear, secret = [clear_secret_issue(stack)], None
    try:
        topology = load_topology(
            raw, stack=stack, project_dir=project_dir,
            tsig_secret=secret if isinstance(secret, str) else None,
            secret_required=not clear,
        )
    except TopologyError as exc:
        # RunError: the engine prints the message without a traceback and exits non-zero.
        raise pulumi.RunError(
            TopologyError([*exc.issues, *clear], exc.warnings).render()) from None
    if clear:
        raise pulumi.RunError(TopologyError(clear, topology.warnings).render())
    for warning in topology.warnings:
        pulumi.log.warn(str(warning))
    return topology


def build(topology: Topology) -> Bind9Region:
    secret = pulumi.Output.secret(topology.tsig_secret or "")
    opts = None
    if topology.spec.kubernetesRenderDir:
        # Render manifests to a directory instead of talking to a cluster (the local stack).
        import pulumi_kubernetes as k8s

        provider = k8s.Provider(
            "render-yaml", render_yaml_to_directory=topology.spec.kubernetesRenderDir
        )
        opts = pulumi.ResourceOptions(providers={"kubernetes": provider})
    return Bind9Region(
        topology.stack, Bind9RegionArgs(topology=topology, tsig_secret=secret), opts
    )


def export(region: Bind9Region, topology: Topology) -> None:
    pulumi.export("region", topology.spec.region)
    pulumi.export("namespace", topology.spec.namespace)
    for key, value in outputs(region, topology).items():
        pulumi.export(key, value)


def outputs(region: Bind9Region, topology: Topology) -> dict[str, Any]:
    """The `instances` and `zones` stack outputs (`instances` is what a region stack's
    primaryStack reads: role, address and zones of each instance)."""
    spec = topology.spec
    return {
        "instances":
        {
            name: {
                "role": spec_inst.role,
                "service": inst.service.metadata.name,
                "address": inst.address,
                "replicas": spec_inst.replicas,
                "zones": [z.zoneName for z in spec.zones_for(spec_inst)],
            }
            for name, inst in region.instances.items()
            for spec_inst in spec.instances
            if spec_inst.name == name
        },
        "zones":
        {
            name: {
                "zoneName": z.zone.zoneName,
                "type": z.zone.type,
                "serial": z.serial,
                "ready": region.gates[z.zone.zoneName].ready
                if z.zone.zoneName in region.gates else None,
                "servedSerial": region.gates[z.zone.zoneName].servedSerial
                if z.zone.zoneName in region.gates else None,
            }
            for name, z in region.zones.items()
        },
    }


def with_local_runner(topology: Topology, project_dir: Path) -> Topology:
    """gate.localRunner: the gate and the serials probe only the running local runner's
    loopback servers for this stack (their addresses from .local-run/state.json)."""
    gate = topology.spec.gate
    if not gate.localRunner:
        return topology
    from dataclasses import replace

    from .local import LocalRunnerMissing, runner_address_map

    try:
        amap = runner_address_map(project_dir, topology.stack, topology.spec)
    except LocalRunnerMissing as exc:
        raise pulumi.RunError(str(exc)) from None
    spec = topology.spec.model_copy(update={"gate": gate.model_copy(update={"addressMap": amap})})
    return replace(topology, spec=spec)


def main() -> None:
    stack = pulumi.get_stack()
    # Paths in config (recordsFile, bindyManifests) are relative to the project's
    # Pulumi.yaml, wherever the components package itself is installed.
    project_dir = Path(pulumi.get_root_directory())
    topology = checked_topology(stack, raw_config_from_engine(), project_dir)
    topology = with_local_runner(topology, project_dir)
    deploy(topology)


def deploy(topology: Topology) -> None:
    """Build and export; with primaryStack, once the primary stack's outputs are read."""
    if not topology.spec.primaryStack:
        export(build(topology), topology)
        return
    from .topology import PRIMARY_STACK_OUTPUT

    ref = pulumi.StackReference(f"primary-stack-{topology.spec.primaryStack.replace('/', '-')}",
                                stack_name=topology.spec.primaryStack)
    pulumi.export("region", topology.spec.region)
    pulumi.export("namespace", topology.spec.namespace)
    pulumi.export("primaryStack", topology.spec.primaryStack)

    def deferred(instances: Any) -> pulumi.Output[dict[str, Any]]:
        resolved = resolved_topology(topology, instances)
        return pulumi.Output.from_input(outputs(build(resolved), resolved))

    instances_output: pulumi.Output[Any] = ref.get_output(PRIMARY_STACK_OUTPUT)
    values: pulumi.Output[dict[str, Any]] = instances_output.apply(deferred)
    pulumi.export("instances", values["instances"])
    pulumi.export("zones", values["zones"])


def resolved_topology(topology: Topology, instances: Any) -> Topology:
    """Zones' primaryServers from the primary stack's `instances` output, or a RunError
    naming each zone without a primary there."""
    from .topology import with_primary_stack

    try:
        resolved = with_primary_stack(topology, instances)
    except TopologyError as exc:
        raise pulumi.RunError(exc.render()) from None
    for zone in resolved.spec.zones:
        if zone.type == "secondary" and zone.secondaryConfig:
            pulumi.log.info(f"{zone.zoneName}: primaries from {topology.spec.primaryStack}: "
                            f"{', '.join(zone.secondaryConfig.primaryServers)}")
    return resolved
