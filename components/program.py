"""The Pulumi program: config -> checked topology -> components -> stack outputs."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime.config import get_config_env, get_config_secret_keys_env, is_config_secret

from bind9_topology.config.config_size import (
    ENV_NAME,
    ConfigSize,
    measure,
    measure_env,
    size_findings,
)
from bind9_topology.config.model import PROJECT, TopologyError, Zone
from bind9_topology.config.topology import (
    PREFIX,
    SECRET_KEY,
    StackConfig,
    Topology,
    clear_secret_issue,
    load_topology,
    namespace_typos,
    project_dir_default,
)

from .region import Bind9Region, Bind9RegionArgs


def config_keys() -> list[str]:
    """Every fully qualified config key this program was given, in every namespace.

    `pulumi.Config` reads a key, it cannot list a namespace; the SDK (3.x) keeps the
    whole map in two places, and both are read: the map `pulumi.runtime.set_all_config`
    fills (the context variable `pulumi.runtime.config.CONFIG`, which `get_config`
    consults first: Automation API inline programs and mocks tests), and the engine's
    PULUMI_CONFIG (`pulumi.runtime.get_config_env()`, what the language host hands over).
    """
    from pulumi.runtime import config as runtime_config

    holder = getattr(runtime_config, "CONFIG", None)
    explicit = holder.get() if holder is not None else {}
    return sorted({str(k) for k in explicit} | {str(k) for k in get_config_env()})


def raw_config() -> StackConfig:
    """All of this project's config keys, read through `pulumi.Config` (objects arrive
    as JSON text), the TSIG secret left out: `tsig_secret` reads it. Keys in a
    namespace that looks like a misspelling of the project's become warnings."""
    keys = config_keys()
    raw = StackConfig(warnings=namespace_typos(keys))
    config = pulumi.Config(PROJECT)
    for full_key in keys:
        if not full_key.startswith(PREFIX) or full_key == f"{PREFIX}{SECRET_KEY}":
            continue
        key = full_key[len(PREFIX):]
        value: Any = config.get(key)
        if isinstance(value, str) and value[:1] in "[{":
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        raw[key] = value
    return raw


#: Kept for callers of the former name (config came from PULUMI_CONFIG directly).
raw_config_from_engine = raw_config


def tsig_secret() -> tuple[str | None, pulumi.Output[str] | None]:
    """The TSIG secret through `pulumi.Config.get_secret`: its text (checked by
    load_topology, rendered nowhere) and the secret Output the resources take."""
    output = pulumi.Config(PROJECT).get_secret(SECRET_KEY)
    if output is None:
        return None, None
    # get_secret wraps a value it has already read; unwrapping it again with
    # Output.apply would make the check asynchronous, so the same key is read as text.
    return pulumi.Config(PROJECT).get(SECRET_KEY), output


def secret_in_clear() -> bool:
    """True when the stack's TSIG secret is set but not as a secret: the engine says which
    keys are secrets in PULUMI_CONFIG_SECRET_KEYS, set_all_config(secret_keys=...) in
    `is_config_secret` (the language host loads the former into the latter too)."""
    key = f"{PREFIX}{SECRET_KEY}"
    return key not in get_config_secret_keys_env() and not is_config_secret(key)


def project_directory() -> Path:
    """Where Pulumi.yaml is: the engine's root directory; under mocks (whose root
    directory is a placeholder) the working directory or this package's project."""
    root = Path(pulumi.get_root_directory() or ".")
    if (root / "Pulumi.yaml").is_file():
        return root
    if (Path.cwd() / "Pulumi.yaml").is_file():
        return Path.cwd()
    return project_dir_default()


def checked_topology(stack: str, raw: dict[str, Any], project_dir: Path,
                     secret: str | None = None) -> Topology:
    """The checked topology, or a RunError listing every problem (secret: the TSIG
    secret's text; raw's own tsigSecret when not given)."""
    if secret is None:
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


def build(topology: Topology, secret: pulumi.Output[str] | None = None) -> Bind9Region:
    """The region's components (secret: the TSIG secret as Config.get_secret gave it)."""
    if secret is None or not topology.tsig_secret:
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
    if region.dnssec_keys:  # signed zones: what the parent zone needs (DS) and the key tags
        pulumi.export("dnssec", {
            zone: {"ds": keys.ds, "dnskeys": keys.dnskeys, "keyTags": keys.keyTags}
            for zone, keys in sorted(region.dnssec_keys.items())
        })


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
        # one Output for every zone (not three per zone): the serials and the gate's status
        "zones": pulumi.Output.all(
            region.serials, region.gate.status if region.gate is not None else None,
        ).apply(lambda both: _zone_outputs(spec.zones, *both)),
    }


def _zone_outputs(zones: Sequence[Zone], serials: dict[str, int],
                  status: dict[str, Any] | None) -> dict[str, Any]:
    """The `zones` stack output: each zone's name, type, serial and the gate's verdict
    (ready, servedSerial; None without a gate)."""
    def gate(zone: str, key: str) -> Any:
        return None if status is None else (status.get(zone) or {}).get(key)

    return {
        zone.resource_name: {
            "zoneName": zone.zoneName,
            "type": zone.type,
            "serial": serials.get(zone.zoneName) if zone.type == "primary" else None,
            "ready": gate(zone.zoneName, "ready"),
            "servedSerial": gate(zone.zoneName, "servedSerial"),
        }
        for zone in zones
    }


def with_local_runner(topology: Topology, project_dir: Path) -> Topology:
    """gate.localRunner: the gate and the serials probe only the running local runner's
    loopback servers for this stack (their addresses from .local-run/state.json)."""
    gate = topology.spec.gate
    if not gate.localRunner:
        return topology
    from dataclasses import replace

    from bind9_topology.local.runner import LocalRunnerMissing, runner_address_map

    try:
        amap = runner_address_map(project_dir, topology.stack, topology.spec)
    except LocalRunnerMissing as exc:
        raise pulumi.RunError(str(exc)) from None
    spec = topology.spec.model_copy(update={"gate": gate.model_copy(update={"addressMap": amap})})
    from bind9_topology.local.runner import (
        dnssec_material,  # signed zones: the runner's servers sign with these
    )

    return replace(topology, spec=spec, dnssec_material=dnssec_material(project_dir, topology))


def config_size() -> ConfigSize:
    """The size of the config this program was given, as PULUMI_CONFIG: the variable
    itself when the language host set it, else (mocks, inline programs) the map
    set_all_config filled, measured as the host would write it."""
    env = os.environ.get(ENV_NAME)
    if env is not None:
        return measure_env(env)
    from pulumi.runtime import config as runtime_config

    holder = getattr(runtime_config, "CONFIG", None)
    explicit = holder.get() if holder is not None else {}
    return measure({str(k): str(v) for k, v in explicit.items()})


def check_config_size() -> None:
    """Near the cap on PULUMI_CONFIG, a warning naming the largest keys and the fix (the
    engine fails before the program over it, so only mocks can get here with more)."""
    too_big, near = size_findings(config_size())
    if too_big:
        raise pulumi.RunError(TopologyError(too_big).render())
    for warning in near:
        pulumi.log.warn(str(warning))


def main() -> None:
    stack = pulumi.get_stack()
    check_config_size()
    # Paths in config (recordsFile, zonesFiles, bindyManifests) are relative to the
    # project's Pulumi.yaml, wherever the components package itself is installed.
    project_dir = project_directory()
    text, secret = tsig_secret()
    topology = checked_topology(stack, raw_config(), project_dir, text)
    topology = with_local_runner(topology, project_dir)
    deploy(topology, secret)


def deploy(topology: Topology, secret: pulumi.Output[str] | None = None) -> None:
    """Build and export; with primaryStack, once the primary stack's outputs are read."""
    if not topology.spec.primaryStack:
        export(build(topology, secret), topology)
        return
    from bind9_topology.config.topology import PRIMARY_STACK_OUTPUT

    ref = pulumi.StackReference(f"primary-stack-{topology.spec.primaryStack.replace('/', '-')}",
                                stack_name=topology.spec.primaryStack)
    pulumi.export("region", topology.spec.region)
    pulumi.export("namespace", topology.spec.namespace)
    pulumi.export("primaryStack", topology.spec.primaryStack)

    def deferred(instances: Any) -> pulumi.Output[dict[str, Any]]:
        resolved = resolved_topology(topology, instances)
        return pulumi.Output.from_input(outputs(build(resolved, secret), resolved))

    instances_output: pulumi.Output[Any] = ref.get_output(PRIMARY_STACK_OUTPUT)
    values: pulumi.Output[dict[str, Any]] = instances_output.apply(deferred)
    pulumi.export("instances", values["instances"])
    pulumi.export("zones", values["zones"])


def resolved_topology(topology: Topology, instances: Any) -> Topology:
    """Zones' primaryServers from the primary stack's `instances` output, or a RunError
    naming each zone without a primary there."""
    from bind9_topology.config.topology import with_primary_stack

    try:
        resolved = with_primary_stack(topology, instances)
    except TopologyError as exc:
        raise pulumi.RunError(exc.render()) from None
    for zone in resolved.spec.zones:
        if zone.type == "secondary" and zone.secondaryConfig:
            pulumi.log.info(f"{zone.zoneName}: primaries from {topology.spec.primaryStack}: "
                            f"{', '.join(zone.secondaryConfig.primaryServers)}")
    return resolved
