"""`import-bindy`: bindy's documents written out as a stack of this project.

Pulumi.<stack>.yaml and one records file per primary zone, checked first (the documents,
then the stack they make, as `validate` does); nothing is written on a problem. Apart
from bindy.py because it checks the stack with load_topology, which itself reads bindy's
documents (bindyManifests) through bindy.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bind9_topology.config import fast_records
from bind9_topology.config.bindy import convert
from bind9_topology.config.model import ConfigIssue, TopologyError
from bind9_topology.config.stack_files import PREFIX
from bind9_topology.config.topology import load_topology


@dataclass
class ImportResult:
    written: list[Path]
    warnings: list[ConfigIssue]
    dialects: set[str]
    instances: int
    zones: int


def _region_of(instances: list[dict[str, Any]]) -> str | None:
    regions = {(i.get("labels") or {}).get("region") for i in instances}
    regions.discard(None)
    return regions.pop() if len(regions) == 1 else None


def records_file_for(zone_name: str) -> str:
    return f"configs/zones/{zone_name}.yaml"


def import_stack(
    files: Sequence[Path], *, stack: str, project_dir: Path, region: str | None = None,
    environment: str | None = None, namespace: str | None = None, force: bool = False,
) -> ImportResult:
    """Write Pulumi.<stack>.yaml and configs/zones/<zone>.yaml equivalent to bindy `files`.

    Everything is checked (the documents, then the stack they make, as `validate` would)
    before anything is written; existing files are kept unless `force`.
    """
    converted = convert([(p, str(p), str(p)) for p in files], namespace)
    issues = list(converted.issues)
    if namespace is None:
        if len(converted.namespaces) > 1:
            issues.append(ConfigIssue(path="--namespace", message=(
                f"the documents use several namespaces ({', '.join(sorted(converted.namespaces))})"
                "; a stack deploys to one: import each namespace as its own stack with "
                "--namespace")))
        namespace = next(iter(converted.namespaces), "dns-system")
    region = region or _region_of(converted.instances)
    if region is None:
        issues.append(ConfigIssue(path="--region", message=(
            "bindy documents name no region (no single 'region' label on the instances); "
            "pass --region, e.g. --region us-east-1")))
    if issues:
        raise TopologyError(issues, converted.warnings)
    assert region is not None

    config: dict[str, Any] = {"region": region}
    if environment is not None:
        config["environment"] = environment
    config["namespace"] = namespace
    config["instances"] = converted.instances
    inline = dict(config, zones=converted.zones)
    try:
        topology = load_topology(inline, stack=stack, project_dir=project_dir,
                                 tsig_secret=None, secret_required=False)
    except TopologyError as exc:
        raise TopologyError(exc.issues, [*converted.warnings, *exc.warnings]) from None

    zone_files: dict[str, list[dict[str, Any]]] = {}
    zones_out: list[dict[str, Any]] = []
    for zone in converted.zones:
        zone = dict(zone)
        if zone.get("type") == "primary" and zone.get("records") and not zone.get("recordsFile"):
            rel = records_file_for(str(zone["zoneName"]).strip().rstrip(".").lower())
            zone_files.setdefault(rel, zone.pop("records"))
            zone.pop("records", None)
            zone["recordsFile"] = rel
        zones_out.append(zone)
    config["zones"] = zones_out

    stack_path = project_dir / f"Pulumi.{stack}.yaml"
    targets = [stack_path, *(project_dir / rel for rel in zone_files)]
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        raise TopologyError([ConfigIssue(path=str(t.relative_to(project_dir)), message=(
            "exists; nothing was written: remove it, pick another --stack, or pass --force "
            "to overwrite")) for t in existing], converted.warnings)

    sources = ", ".join(str(p) for p in files)
    written: list[Path] = []
    for rel, records in zone_files.items():
        path = project_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"# Records of {Path(rel).stem}, imported from bindy documents ({sources}).\n"
            "# Names are relative to the zone unless they end in a dot; data is RDATA as in "
            "a master file.\n"
            # one mapping a line where it can be: the form the zone build reads fastest
            + (fast_records.records_text(records)
               or yaml.safe_dump({"records": records}, sort_keys=False, allow_unicode=True)))
        written.append(path)
    dialects = ", ".join(sorted(converted.dialects))
    header = (
        f"# Imported from bindy documents ({dialects}): {sources}\n"
        "# by `python -m components import-bindy`. Set the TSIG secret once (never in clear "
        "here):\n"
        f"#   pulumi config set --secret --stack {stack} {PREFIX}tsigSecret "
        '"$(python -m components keygen)"\n')
    stack_path.write_text(header + yaml.safe_dump(
        {"config": {f"{PREFIX}{k}": v for k, v in config.items()}},
        sort_keys=False, allow_unicode=True))
    written.insert(0, stack_path)
    return ImportResult(written=written, warnings=[*converted.warnings, *topology.warnings],
                        dialects=converted.dialects, instances=len(converted.instances),
                        zones=len(converted.zones))
