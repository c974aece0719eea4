"""From raw stack config (and bindy manifests) to a checked Topology.

`load_topology` is the one gate every entry point passes through: the Pulumi
program, the CLI and the local runner. It either returns a Topology whose
zones are built and whose secret is checked, or raises TopologyError with
every problem at once. Nothing is registered before it returns.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bind9_topology.config import safeyaml
from bind9_topology.config.bindy import BINDY_API, bindy_documents, load_manifests  # noqa: F401 (public here too)
from bind9_topology.config.model import (
    PROJECT,
    ConfigIssue,
    Instance,
    StackSpec,
    TopologyError,
    Zone,
    check_labels,
    issues_from_validation,
)
from bind9_topology.config.stack_files import PREFIX as PREFIX
from bind9_topology.config.stack_files import StackConfig as StackConfig
from bind9_topology.config.stack_files import list_stacks as list_stacks
from bind9_topology.config.stack_files import namespace_typos as namespace_typos
from bind9_topology.config.stack_files import read_stack_file as read_stack_file
from bind9_topology.config.stack_files import strip_prefix as strip_prefix
from bind9_topology.config.zone_files import ZONES_FILES_KEY, load_zone_files
from bind9_topology.config.zone_records import ZoneContent, build_zones

SECRET_KEY = "tsigSecret"
#: A records file may be this many times maxZoneBytes (YAML is wordier than a zone file).
RECORDS_FILE_FACTOR = 4


@dataclass(frozen=True)
class Topology:
    stack: str
    spec: StackSpec
    contents: dict[str, ZoneContent]  # primary zones by zoneName
    tsig_secret: str | None  # None only where the caller allowed it (render without secrets)
    # Things that pass but deserve a look (SOA timers, a typo'd config namespace, ...):
    # `validate` prints them, the Pulumi program logs them with pulumi.log.warn.
    warnings: tuple[ConfigIssue, ...] = ()
    # Signed zones' keys to adopt instead of generating (zone -> material, see
    # components/dnssec.py): the local runner's, for a gate.localRunner stack.
    dnssec_material: dict[str, Any] = field(default_factory=dict)

    @property
    def primary_zone_names(self) -> list[str]:
        return sorted(self.contents)


def project_dir_default() -> Path:
    """The checkout this package sits in (bind9_topology/config/topology.py -> its root)."""
    return Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- checks


def _check_cross(
    spec: StackSpec, instance_paths: list[str], zone_paths: list[str], all_instances_valid: bool,
    primary_stack_given: bool = False,
) -> list[ConfigIssue]:
    prefix = PREFIX
    issues: list[ConfigIssue] = []
    seen: dict[str, int] = {}
    for i, inst in enumerate(spec.instances):
        at = instance_paths[i]
        if inst.name in seen:
            issues.append(ConfigIssue(path=f"{at}.name", message=(
                f"duplicate instance name {inst.name!r} (also {instance_paths[seen[inst.name]]}); "
                "give each instance its own name")))
        seen.setdefault(inst.name, i)
        for key, problem in check_labels(inst.labels):
            issues.append(ConfigIssue(path=f"{at}.labels.{key}", message=problem))
        if inst.labels.get("dns-role") != inst.role:
            issues.append(ConfigIssue(path=f"{at}.labels.dns-role", message=(
                f"dns-role label is {inst.labels.get('dns-role')!r} but role is {inst.role!r}; "
                "make them agree")))
        for j, entry in enumerate(inst.config.allowTransfer or []):
            if entry.startswith("key ") and entry[4:] != spec.tsigKey.name:
                issues.append(ConfigIssue(path=f"{at}.config.allowTransfer[{j}]", message=(
                    f"unknown key {entry[4:]!r}; the stack's key is {spec.tsigKey.name!r}")))
        if inst.role == "secondary" and inst.config.allowTransfer:
            issues.append(ConfigIssue(path=f"{at}.config.allowTransfer", message=(
                "secondaries serve no transfers; leave allowTransfer empty")))
        # The alerting rules are one set per stack (render/alerts.py).
        for key in sorted({"alerts", "lagMinutes", "podLabel"}
                          & (inst.metrics.model_fields_set if inst.metrics else set())):
            issues.append(ConfigIssue(path=f"{at}.metrics.{key}", message=(
                "the alerting rules and the dashboard are one set per stack; set it in "
                f"{prefix}metrics, not on an instance")))

    owners: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, int] = {}
    for i, inst in enumerate(spec.instances):
        address = inst.service.fixed_address
        if address is None:
            continue
        key = "loadBalancerIP" if inst.service.loadBalancerIP else "clusterIP"
        first = owners.setdefault(ipaddress.ip_address(address), i)
        if first != i:
            issues.append(ConfigIssue(path=f"{instance_paths[i]}.service.{key}", message=(
                f"address {address} is also the fixed address of instance "
                f"{spec.instances[first].name!r} ({instance_paths[first]}.service); two "
                "Services cannot share it: give each instance its own address")))

    zone_seen: dict[str, int] = {}
    for z, zone in enumerate(spec.zones):
        at = zone_paths[z]
        name = zone.resource_name
        if name in zone_seen:
            twin = spec.zones[zone_seen[name]]
            same = (twin.zoneName, twin.type) == (zone.zoneName, zone.type)
            issues.append(ConfigIssue(path=f"{at}.name", message=(
                f"duplicate zone resource name {name!r} (also {zone_paths[zone_seen[name]]}); "
                + (f"{zone.type} zone {zone.zoneName} is defined at both: keep one of the two "
                   "entries (or, for two zones of that name on different instances, set a "
                   "distinct name)" if same else "set a distinct name"))))
        zone_seen.setdefault(name, z)
        if zone.name is not None:
            try:
                from bind9_topology.config.model import dns1123_name

                dns1123_name(zone.name)
            except ValueError as exc:
                issues.append(ConfigIssue(path=f"{at}.name", message=str(exc)))
        for key, problem in check_labels(zone.instanceSelector.matchLabels):
            issues.append(ConfigIssue(path=f"{at}.instanceSelector.matchLabels.{key}",
                                      message=problem))
        matched = spec.instances_for(zone)
        if not matched and all_instances_valid:
            issues.append(ConfigIssue(path=f"{at}.instanceSelector", message=(
                f"matchLabels {zone.instanceSelector.matchLabels} selects no instance; "
                "fix the labels or add an instance that carries them")))
        for inst in matched:
            if inst.role != zone.type:
                issues.append(ConfigIssue(path=f"{at}.instanceSelector", message=(
                    f"a {zone.type} zone selects {inst.role} instance {inst.name!r}; "
                    "narrow matchLabels (e.g. dns-role)")))
        if zone.type == "secondary":
            listed = zone.secondaryConfig is not None and bool(zone.secondaryConfig.primaryServers)
            if spec.primaryStack and listed:
                issues.append(ConfigIssue(path=f"{at}.secondaryConfig.primaryServers", message=(
                    f"the primaries come from {prefix}primaryStack ({spec.primaryStack}) and "
                    "this zone lists primaryServers too; use one form: remove primaryServers "
                    f"(the zone then transfers from the primaries of {spec.primaryStack}) or "
                    f"remove {prefix}primaryStack and list every zone's primaries")))
            elif not spec.primaryStack and not listed and not primary_stack_given:
                issues.append(ConfigIssue(path=f"{at}.secondaryConfig.primaryServers", message=(
                    "a secondary zone needs the IPs of its primaries; add "
                    "secondaryConfig.primaryServers: ['10.0.1.10'], or set "
                    f"{prefix}primaryStack (e.g. 'organization/{PROJECT}/prod') to take "
                    "them from the primary stack's outputs")))
            if zone.records or zone.recordsFile:
                issues.append(ConfigIssue(path=f"{at}.records", message=(
                    "a secondary zone takes its records from the primary; remove them")))

    if spec.metrics.alerts and all_instances_valid and not any(
            spec.metrics_for(inst).enabled for inst in spec.instances):
        issues.append(ConfigIssue(path=f"{prefix}metrics.alerts", message=(
            "the alerting rules need an exporter to read; set metrics.enabled: true (the "
            "stack's, or an instance's metrics)")))
    if spec.primaryStack and all_instances_valid and not any(
            z.type == "secondary" for z in spec.zones):
        issues.append(ConfigIssue(path=f"{prefix}primaryStack", message=(
            "is set but the stack has no secondary zone to take primaries for; remove it")))
    per_instance: dict[tuple[str, str], tuple[str, str]] = {}
    for z, zone in enumerate(spec.zones):
        for inst in spec.instances_for(zone):
            other, other_at = per_instance.setdefault((inst.name, zone.zoneName),
                                                      (zone.resource_name, zone_paths[z]))
            if other != zone.resource_name:
                issues.append(ConfigIssue(path=f"{prefix}zones", message=(
                    f"instance {inst.name!r} would serve {zone.zoneName} twice ({other} and "
                    f"{zone.resource_name}), from {other_at} and {zone_paths[z]}; one zone "
                    "per instance")))
    return issues


#: where the CLI and the local runner take a TSIG secret from (never from a stack file)
SECRET_ENV = "BIND9_TSIG_SECRET"


def new_tsig_secret() -> str:
    """A new TSIG secret: base64 of 32 random bytes (the size of an HMAC-SHA256 key)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def clear_secret_issue(stack: str) -> ConfigIssue:
    """The TSIG secret written in clear in Pulumi.<stack>.yaml: the same on every path."""
    return ConfigIssue(path=f"Pulumi.{stack}.yaml:{PREFIX}{SECRET_KEY}", message=(
        "the TSIG secret is stored in clear; remove it and run: pulumi config set "
        f'--secret --stack {stack} {PREFIX}{SECRET_KEY} "$(python -m components keygen)"'))


def check_secret(secret: str | None, *, stack: str, required: bool) -> list[ConfigIssue]:
    path = f"{PREFIX}{SECRET_KEY}"
    if secret is None:
        if not required:
            return []
        return [ConfigIssue(path=path, message=(
            "the TSIG secret is not set; set it with: pulumi config set --secret --stack "
            f'{stack} {PREFIX}{SECRET_KEY} "$(python -m components keygen)"'))]
    try:
        raw = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) < 16:
        return [ConfigIssue(path=path, message=(
            "the TSIG secret is not valid base64 of at least 16 bytes; replace it with: "
            f"pulumi config set --secret --stack {stack} {PREFIX}{SECRET_KEY} "
            '"$(python -m components keygen)"'))]
    return []


def _with_default_labels(raw: dict[str, Any], region: Any, environment: Any) -> dict[str, Any]:
    """Fill dns-role/region/environment labels from role and stack config when absent."""
    out = dict(raw)
    if not isinstance(out.get("labels") or {}, dict):
        return out  # validation names the shape error at .labels
    labels = dict(out.get("labels") or {})
    if isinstance(out.get("role"), str):
        labels.setdefault("dns-role", out["role"])
    if isinstance(region, str):
        labels.setdefault("region", region)
    if isinstance(environment, str):
        labels.setdefault("environment", environment)
    out["labels"] = labels
    return out


@dataclass
class _Findings:
    """Problems (each one stops the load, all reported at once) and warnings so far."""

    issues: list[ConfigIssue] = field(default_factory=list)
    warnings: list[ConfigIssue] = field(default_factory=list)


@dataclass
class _Entries:
    """The stack's instances and zones, inline, from zonesFiles and from bindyManifests,
    with their paths."""

    raw: dict[str, Any]
    zones: list[Any]
    instance_paths: list[str]
    zone_paths: list[str]
    shape_errors: set[str]


def _gather(raw: dict[str, Any], project_dir: Path, found: _Findings) -> _Entries:
    """The lists of the config, each checked to be a list before it is walked (a mapping
    or a string would otherwise be walked key by key or character by character), with
    the zones of zonesFiles and bindy's documents appended and every instance given its
    default labels."""
    shape_errors: set[str] = set()
    for key in ("instances", "zones", ZONES_FILES_KEY, "bindyManifests"):
        if raw.get(key) is not None and not isinstance(raw[key], list):
            found.issues.append(ConfigIssue(path=f"{PREFIX}{key}", message=(
                f"expected a list, got {safeyaml.describe(raw[key])}; write each entry on "
                "its own '- ' line")))
            raw[key] = []
            shape_errors.add(key)
    instances = list(raw.get("instances") or [])
    zones = list(raw.get("zones") or [])
    instance_paths = [f"{PREFIX}instances[{i}]" for i in range(len(instances))]
    zone_paths = [f"{PREFIX}zones[{i}]" for i in range(len(zones))]
    from_files = load_zone_files(project_dir, raw.get(ZONES_FILES_KEY) or [])
    found.issues += from_files.issues
    zones += from_files.zones
    zone_paths += from_files.zone_paths
    # load_zone_files named every entry that is not a path; StackSpec sees the others only.
    raw[ZONES_FILES_KEY] = [f for f in raw.get(ZONES_FILES_KEY) or [] if isinstance(f, str)]
    namespace = raw.get("namespace", "dns-system")
    bindy = load_manifests(project_dir, raw.get("bindyManifests") or [],
                           namespace if isinstance(namespace, str) else None)
    found.issues += bindy.issues
    found.warnings += bindy.warnings
    raw["instances"] = [
        _with_default_labels(i, raw.get("region"), raw.get("environment", "production"))
        if isinstance(i, dict) else i
        for i in [*instances, *bindy.instances]
    ]
    raw["zones"] = [*zones, *bindy.zones]
    return _Entries(raw=raw, zones=raw["zones"],
                    instance_paths=[*instance_paths, *bindy.instance_paths],
                    zone_paths=[*zone_paths, *bindy.zone_paths], shape_errors=shape_errors)


def _validate(entries: _Entries, found: _Findings) -> tuple[StackSpec, list[str], list[str],
                                                             bool]:
    """The StackSpec of every valid entry. Each entry is validated on its own, so one bad
    entry hides nothing else: cross-checks and record checks still run on every entry
    that is valid. Returns the spec, the valid instances' and zones' paths, and whether
    every instance was valid (cross-checks that need all of them run only then)."""
    raw = entries.raw
    try:
        spec = StackSpec.model_validate({**raw, "instances": [], "zones": []})
    except ValidationError as exc:
        found.issues += issues_from_validation(exc, PREFIX)
        spec = StackSpec(region=str(raw.get("region") or "unknown"))
    valid_instances: list[Instance] = []
    instance_paths: list[str] = []
    for item, at in zip(raw["instances"], entries.instance_paths, strict=True):
        try:
            valid_instances.append(Instance.model_validate(item))
            instance_paths.append(at)
        except ValidationError as exc:
            found.issues += issues_from_validation(exc, at, Instance)
    valid_zones: list[Zone] = []
    zone_paths: list[str] = []
    for item, at in zip(entries.zones, entries.zone_paths, strict=True):
        try:
            valid_zones.append(Zone.model_validate(item))
            zone_paths.append(at)
        except ValidationError as exc:
            found.issues += issues_from_validation(exc, at, Zone)
    all_instances_valid = len(valid_instances) == len(raw["instances"]) and not (
        entries.shape_errors & {"instances", "bindyManifests"})
    spec = spec.model_copy(update={"instances": valid_instances, "zones": valid_zones})
    return spec, instance_paths, zone_paths, all_instances_valid


def _build_contents(spec: StackSpec, zone_paths: list[str], project_dir: Path,
                    found: _Findings) -> dict[str, ZoneContent]:
    """Every primary zone built from its records, each checked against maxZoneBytes."""
    contents: dict[str, ZoneContent] = {}
    primary = [(zone, zone_paths[z]) for z, zone in enumerate(spec.zones)
               if zone.type == "primary"]
    built = build_zones(primary, project_dir,
                        max_file_bytes=RECORDS_FILE_FACTOR * spec.maxZoneBytes)
    for (zone, at), (content, zone_issues) in zip(primary, built, strict=True):
        found.issues += zone_issues
        if content is None:
            continue
        found.warnings += content.warnings
        size = content.text_size()
        if size > spec.maxZoneBytes:
            found.issues.append(ConfigIssue(path=at, message=(
                f"zone {zone.zoneName} renders to {size} bytes, over maxZoneBytes "
                f"({spec.maxZoneBytes}); split it into delegated child zones or raise "
                f"{PREFIX}maxZoneBytes")))
        contents[zone.zoneName] = content
    return contents


def load_topology(
    raw: dict[str, Any],
    *,
    stack: str,
    project_dir: Path,
    tsig_secret: str | None,
    secret_required: bool = True,
) -> Topology:
    """Validate everything and build every primary zone; raise TopologyError on any problem."""
    found = _Findings(warnings=list(getattr(raw, "warnings", [])))
    if not isinstance(raw, Mapping):
        raise TopologyError([ConfigIssue(path=PREFIX.rstrip(":"), message=(
            f"expected the stack config as a mapping, got {safeyaml.describe(raw)}"))])
    raw = {k: v for k, v in raw.items() if v != "" and k != SECRET_KEY}
    if tsig_secret == "":
        tsig_secret = None
    entries = _gather(raw, project_dir, found)
    spec, instance_paths, zone_paths, all_instances_valid = _validate(entries, found)
    # Catalog zones (components/catalog.py): the zones they add are checked as any other.
    from bind9_topology.config.catalog import expand as expand_catalogs

    extra, extra_paths, catalog_issues = expand_catalogs(spec, zone_paths, project_dir, stack)
    found.issues += catalog_issues
    spec = spec.model_copy(update={"zones": [*spec.zones, *extra]})
    zone_paths = [*zone_paths, *extra_paths]

    found.issues += _check_cross(spec, instance_paths, zone_paths, all_instances_valid,
                                 primary_stack_given=bool(raw.get("primaryStack")))
    if spec.primaryStack and spec.primaryStack.split("/")[-1] == stack and (
            spec.primaryStack.count("/") == 0 or spec.primaryStack.split("/")[1] == PROJECT):
        found.issues.append(ConfigIssue(path=f"{PREFIX}primaryStack", message=(
            f"names this very stack ({stack}); name the stack that holds the primaries")))
    found.issues += check_secret(tsig_secret, stack=stack, required=secret_required)
    for z, zone in enumerate(spec.zones):
        if zone.soaRecord is not None:
            found.warnings += [
                ConfigIssue(path=f"{zone_paths[z]}.soaRecord.{field}", message=text)
                for field, text in zone.soaRecord.timer_warnings()]
    contents = _build_contents(spec, zone_paths, project_dir, found)
    if found.issues:
        raise TopologyError(found.issues, found.warnings)
    return Topology(stack=stack, spec=spec, contents=contents, tsig_secret=tsig_secret,
                    warnings=tuple(sorted(set(found.warnings),
                                          key=lambda i: (i.path, i.message))))


# --------------------------------------------------------------------------- primaryStack

#: The output of the primary stack that carries the primaries: `instances.<name>` with
#: `role`, `address` (the Service's fixed address) and `zones` (the zone names it serves).
PRIMARY_STACK_OUTPUT = "instances"


def primaries_by_zone(spec: StackSpec, instances: Any) -> tuple[dict[str, list[str]],
                                                                  list[ConfigIssue]]:
    """zoneName -> addresses of the referenced stack's primaries that serve it.

    *instances* is the value of the primary stack's `instances` output. Every secondary
    zone of *spec* must find at least one primary with an address there.
    """
    at = f"{PREFIX}primaryStack"
    ref = spec.primaryStack
    if not isinstance(instances, Mapping) or not instances:
        return {}, [ConfigIssue(path=at, message=(
            f"stack {ref} has no '{PRIMARY_STACK_OUTPUT}' output (or it is empty); run "
            f"`pulumi up --stack {str(ref).split('/')[-1]}` first, and check the name "
            f"(organization/{PROJECT}/<stack> on a self-managed backend)"))]
    found: dict[str, list[str]] = {}
    for _name, info in sorted(instances.items()):
        if not isinstance(info, Mapping) or info.get("role") != "primary":
            continue
        address = info.get("address")
        if not isinstance(address, str) or not address:
            continue
        for zone in info.get("zones") or []:
            if isinstance(zone, str):
                found.setdefault(zone, []).append(address)
    issues = []
    out: dict[str, list[str]] = {}
    for zone in spec.zones:
        if zone.type != "secondary":
            continue
        addresses = found.get(zone.zoneName, [])
        if not addresses:
            issues.append(ConfigIssue(path=f"{at}", message=(
                f"zone {zone.zoneName} ({zone.resource_name}): no instance with role primary "
                f"and an address in stack {ref}'s '{PRIMARY_STACK_OUTPUT}' output serves it; "
                f"add the zone to a primary of {ref} (and `pulumi up` it) or remove the zone "
                "here")))
            continue
        for address in addresses:
            try:
                from bind9_topology.config.model import parse_server

                parse_server(address)
            except ValueError as exc:
                issues.append(ConfigIssue(path=at, message=(
                    f"zone {zone.zoneName}: stack {ref} gives address {address!r}: {exc}")))
        out[zone.zoneName] = sorted(set(addresses))
    return out, issues


def with_primary_stack(topology: Topology, instances: Any) -> Topology:
    """The topology with every secondary zone's primaryServers taken from the primary
    stack's `instances` output; TopologyError when a zone finds no primary there."""
    spec = topology.spec
    if not spec.primaryStack:
        return topology
    found, issues = primaries_by_zone(spec, instances)
    if issues:
        raise TopologyError(issues, topology.warnings)
    from dataclasses import replace

    from bind9_topology.config.model import SecondaryConfig

    zones = [
        z.model_copy(update={"secondaryConfig": SecondaryConfig(
            primaryServers=found[z.zoneName])}) if z.type == "secondary" else z
        for z in spec.zones
    ]
    return replace(topology, spec=spec.model_copy(update={"zones": zones}))


def offline_instances_output(project_dir: Path, reference: str) -> dict[str, Any]:
    """What the `instances` output of *reference* will be, read from this project's stack
    file (for validate, render and the local runner, which run without the engine)."""
    parts = reference.split("/")
    at = f"{PREFIX}primaryStack"
    if len(parts) == 3 and parts[1] != PROJECT:
        raise TopologyError([ConfigIssue(path=at, message=(
            f"{reference} is a stack of project {parts[1]!r}; without the engine only stacks "
            f"of this project ({PROJECT}) can be read (run pulumi preview instead)"))])
    name = parts[-1]
    if name not in list_stacks(project_dir):
        raise TopologyError([ConfigIssue(path=at, message=(
            f"no stack file Pulumi.{name}.yaml for {reference}; known stacks: "
            f"{', '.join(list_stacks(project_dir))}"))])
    primary = load_topology(read_stack_file(project_dir, name), stack=name,
                            project_dir=project_dir, tsig_secret=None, secret_required=False)
    return {
        inst.name: {"role": inst.role, "address": inst.service.fixed_address,
                    "zones": [z.zoneName for z in primary.spec.zones_for(inst)]}
        for inst in primary.spec.instances
    }


def resolve_offline(topology: Topology, project_dir: Path) -> Topology:
    """with_primary_stack from the referenced stack's file (no engine)."""
    if not topology.spec.primaryStack:
        return topology
    return with_primary_stack(
        topology, offline_instances_output(project_dir, topology.spec.primaryStack))
