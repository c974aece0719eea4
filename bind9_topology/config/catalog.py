"""Catalog zones (RFC 9432, schema version 2): new zones reach every region's secondaries
without a change to the region stacks.

The primary stack's ``catalog`` becomes one more primary zone of the stack, generated here:
``version TXT "2"``, one ``<label>.zones PTR <member>.`` per member zone (the label is the
SHA-1 of the member's wire-format name, so a re-render changes nothing and a member keeps
its label for life), an ``NS invalid.``, and, with ``advertisePrimaries``, the primaries
and the TSIG key name as ``<instance>.primaries.ext`` A/AAAA + TXT properties (BIND 9.18
and 9.20 read those; the ARM's "Catalog Zone Custom Properties"). Its serial, state,
content hash, DNSZone resource and gate are those of any primary zone.

A region stack's ``catalogs`` entry becomes one more secondary zone (the catalog itself)
on the selected secondaries, and render.py adds the ``catalog-zones`` statement that makes
``named`` create and delete the member zones as the catalog changes, transferring them
from ``primaryServers`` with the project's TSIG key (``default-primaries``).

Pure: no Pulumi import. :func:`expand` is called by topology.load_topology.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
from pathlib import Path

import dns.name
from pydantic import ValidationError

from bind9_topology.config.model import (
    PROJECT,
    CatalogConsumer,
    CatalogSpec,
    ConfigIssue,
    Record,
    SecondaryConfig,
    SoaRecord,
    StackSpec,
    TopologyError,
    Zone,
    issues_from_validation,
)

PREFIX = f"{PROJECT}:"
CATALOG_PATH = f"{PREFIX}catalog"


def member_label(zone_name: str) -> str:
    """The member's unique label: SHA-1 of its wire-format name (stable across renders)."""
    wire = dns.name.from_text(zone_name).canonicalize().to_wire()
    assert wire is not None  # an absolute name always has a wire form
    return hashlib.sha1(wire).hexdigest()


def catalog_records(spec: StackSpec, catalog: CatalogSpec, members: list[str]) -> list[Record]:
    records = [
        Record(name="@", type="NS", data="invalid."),
        Record(name="version", type="TXT", data='"2"'),
    ]
    records += [Record(name=f"{member_label(m)}.zones", type="PTR", data=f"{m}.")
                for m in sorted(members)]
    if catalog.advertisePrimaries:
        for inst in spec.instances:
            address = inst.service.fixed_address
            if inst.role != "primary" or not address or not catalog.instanceSelector.matches(
                    inst.labels):
                continue
            rtype = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
            owner = f"{inst.name}.primaries.ext"
            records.append(Record(name=owner, type=rtype, data=address))
            records.append(Record(name=owner, type="TXT", data=f'"{spec.tsigKey.name}"'))
    return records


def members_of(spec: StackSpec, catalog: CatalogSpec) -> list[str]:
    """The member zone names: `members` (those that are primary zones here) or every
    primary zone of the stack but the catalog itself."""
    primaries = {z.zoneName for z in spec.zones if z.type == "primary"} - {catalog.zoneName}
    if catalog.members is None:
        return sorted(primaries)
    named = {Zone._zone_name(m) for m in catalog.members
             if _valid_zone_name(m)}
    return sorted(named & primaries)


def expand(spec: StackSpec, zone_paths: list[str], project_dir: Path,
           stack: str) -> tuple[list[Zone], list[str], list[ConfigIssue]]:
    """The zones the catalogs add to the stack (with their config paths), and the problems."""
    zones: list[Zone] = []
    paths: list[str] = []
    issues: list[ConfigIssue] = []
    by_name: dict[str, list[int]] = {}
    for z, zone in enumerate(spec.zones):
        by_name.setdefault(zone.zoneName, []).append(z)

    catalog = spec.catalog
    if catalog is not None:
        at = CATALOG_PATH
        for z in by_name.get(catalog.zoneName, []):
            issues.append(ConfigIssue(path=f"{at}.zoneName", message=(
                f"{catalog.zoneName} is also a zone of this stack ({zone_paths[z]}); the "
                "catalog zone is generated: give it a name of its own, e.g. "
                "'catalog.invalid'")))
        primaries = {z.zoneName for z in spec.zones if z.type == "primary"}
        for m, name in enumerate(catalog.members or []):
            try:
                name = Zone._zone_name(name)
            except ValueError as exc:
                issues.append(ConfigIssue(path=f"{at}.members[{m}]", message=str(exc)))
                continue
            if name not in primaries:
                issues.append(ConfigIssue(path=f"{at}.members[{m}]", message=(
                    f"{name} is not a primary zone of this stack; a catalog lists the zones "
                    "its primaries serve: add the zone or remove it from members")))
        members = members_of(spec, catalog)
        if not members and not issues:
            issues.append(ConfigIssue(path=at, message=(
                "the catalog has no member zone: this stack serves no primary zone; add "
                "primary zones or remove the catalog")))
        if catalog.advertisePrimaries and not any(
                i.role == "primary" and i.service.fixed_address
                and catalog.instanceSelector.matches(i.labels) for i in spec.instances):
            issues.append(ConfigIssue(path=f"{at}.advertisePrimaries", message=(
                "no primary instance the catalog selects has a fixed service address "
                "(loadBalancerIP or clusterIP) to advertise; give one or set "
                "advertisePrimaries to false")))
        also_notify = catalog.alsoNotify
        if also_notify is None:
            also_notify = list(dict.fromkeys(
                a for z in spec.zones if z.type == "primary" and z.zoneName in members
                for a in z.alsoNotify))
        soa = catalog.soaRecord or SoaRecord(primaryNs="invalid.",
                                             adminEmail=f"hostmaster@{catalog.zoneName}")
        try:
            zones.append(Zone(zoneName=catalog.zoneName, type="primary",
                              instanceSelector=catalog.instanceSelector, soaRecord=soa,
                              ttl=catalog.ttl, alsoNotify=also_notify,
                              records=catalog_records(spec, catalog, members)))
            paths.append(at)
        except ValidationError as exc:
            issues += issues_from_validation(exc, at)

    consumed: dict[str, int] = {}
    for c, consumer in enumerate(spec.catalogs):
        at = f"{PREFIX}catalogs[{c}]"
        if consumer.zoneName in consumed:
            issues.append(ConfigIssue(path=f"{at}.zoneName", message=(
                f"{consumer.zoneName} is listed twice (also {PREFIX}catalogs"
                f"[{consumed[consumer.zoneName]}]); list each catalog once")))
            continue
        consumed[consumer.zoneName] = c
        for z in by_name.get(consumer.zoneName, []):
            issues.append(ConfigIssue(path=f"{at}.zoneName", message=(
                f"{consumer.zoneName} is also a zone of this stack ({zone_paths[z]}); a "
                "catalog is configured by catalogs only: remove that zone entry")))
        if not consumer.primaryServers and not getattr(spec, "primaryStack", None):
            issues.append(ConfigIssue(path=f"{at}.primaryServers", message=(
                "a catalog needs the IPs of the primaries that serve it (and its members); "
                "add primaryServers: ['10.0.1.10']")))
        consumers = [i for i in spec.instances if consumer.instanceSelector.matches(i.labels)]
        for inst in consumers:
            if inst.role != "secondary":
                issues.append(ConfigIssue(path=f"{at}.instanceSelector", message=(
                    f"selects {inst.role} instance {inst.name!r}; catalogs are consumed by "
                    "secondaries: narrow matchLabels (e.g. dns-role: secondary)")))
        names = {i.name for i in consumers}
        known, source = _known_members(spec, consumer.zoneName, project_dir, stack)
        for z, zone in enumerate(spec.zones):
            if zone.type != "secondary" or zone.zoneName not in known:
                continue
            both = sorted(names & {i.name for i in spec.instances_for(zone)})
            if both:
                issues.append(ConfigIssue(path=f"{zone_paths[z]}", message=(
                    f"{zone.zoneName} is a member of catalog {consumer.zoneName} ({source}), "
                    f"which {at} configures on {', '.join(both)}; the catalog brings the zone "
                    "there already: remove this secondary entry")))
        zones.append(Zone(zoneName=consumer.zoneName, type="secondary",
                          instanceSelector=consumer.instanceSelector,
                          secondaryConfig=SecondaryConfig(
                              primaryServers=list(consumer.primaryServers))))
        paths.append(at)
    return zones, paths, issues


def _valid_zone_name(name: str) -> bool:
    try:
        Zone._zone_name(name)
    except ValueError:
        return False
    return True


def _known_members(spec: StackSpec, catalog_name: str, project_dir: Path,
                   stack: str) -> tuple[set[str], str]:
    """The member names of the catalog *catalog_name*, where this project can tell them:
    this stack's own catalog, or another stack file of the project whose ``catalog`` has
    that name (its inline zones and those of its zonesFiles; zones from bindyManifests
    are not read here)."""
    if spec.catalog is not None and spec.catalog.zoneName == catalog_name:
        return set(members_of(spec, spec.catalog)), f"{CATALOG_PATH} of this stack"
    from bind9_topology.config.stack_files import list_stacks, read_stack_file

    for other in list_stacks(project_dir):
        if other == stack:
            continue
        with contextlib.suppress(TopologyError, ValueError, TypeError, AttributeError):
            raw = read_stack_file(project_dir, other)
            cat = raw.get("catalog")
            if not isinstance(cat, dict):
                continue
            try:
                producer = CatalogSpec.model_validate(cat)
            except ValidationError:
                continue
            if producer.zoneName != catalog_name:
                continue
            from bind9_topology.config.zone_files import ZONES_FILES_KEY, load_zone_files

            files = raw.get(ZONES_FILES_KEY)
            zones = [z for z in [*(raw.get("zones") or []), *load_zone_files(
                project_dir, files if isinstance(files, list) else []).zones]
                if isinstance(z, dict)]
            primaries = set()
            for z in zones:
                if z.get("type") == "primary" and isinstance(z.get("zoneName"), str) \
                        and _valid_zone_name(z["zoneName"]):
                    primaries.add(Zone._zone_name(z["zoneName"]))
            if producer.members is not None:
                primaries = {Zone._zone_name(m) for m in producer.members
                             if _valid_zone_name(m)}
            return primaries, f"Pulumi.{other}.yaml"
    return set(), ""


def consumer_for(spec: StackSpec, zone: Zone) -> CatalogConsumer | None:
    """The catalogs entry a secondary zone stands for (the catalog zone itself), if any."""
    if zone.type != "secondary":
        return None
    return next((c for c in spec.catalogs if c.zoneName == zone.zoneName), None)


def catalog_members(spec: StackSpec) -> set[str]:
    """The member zone names of this stack's own catalog (empty without one)."""
    if spec.catalog is None:
        return set()
    return set(members_of(spec, spec.catalog)) | {spec.catalog.zoneName}
