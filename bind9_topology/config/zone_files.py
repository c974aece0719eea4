"""`zonesFiles`: the stack's zones, in the very shape of `zones`, from YAML files.

Why a file form: the engine hands the whole stack config to the program in one
environment variable, which Linux caps at 128 KiB (config_size.py), so about 1,000
inline zones stop `pulumi up` before the program starts. Listed in files, the zones stay
out of that variable: the stack config carries only the paths, and every entry point
reads the files here, as it reads `recordsFile` and `bindyManifests`.

Each entry of `zonesFiles` is a path relative to the project directory: a YAML file
holding a list of zones, or a directory whose `*.yaml`/`*.yml` files (not hidden, not in
subdirectories) each hold one, read in name order. The zones join the inline ones and
are validated exactly as they are (load_topology), each named `<file>[<index>]` in
every message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from bind9_topology.config import safeyaml
from bind9_topology.config.model import ConfigIssue
from bind9_topology.config.stack_files import PREFIX, load_yaml

#: the stack config key: `records` -> `recordsFile` per zone, so `zones` -> `zonesFiles`
#: (not "zoneFiles": a zone file is the BIND master file this project renders).
ZONES_FILES_KEY = "zonesFiles"
#: suffixes of the files read from a directory entry
SUFFIXES = (".yaml", ".yml")

_SHAPE = (f"a list of zones, each as an entry of {PREFIX}zones ('- zoneName: ...', type, "
          "instanceSelector, ...)")


@dataclass
class ZoneFileEntries:
    """The raw zone mappings of every file (validated later, beside the inline ones),
    each with its `<file>[<index>]` path, and the problems found reading the files."""

    zones: list[Any] = field(default_factory=list)
    zone_paths: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # read, relative to the project
    issues: list[ConfigIssue] = field(default_factory=list)


def _files_of(project_dir: Path, value: str, target: Path, at: str,
              out: ZoneFileEntries) -> list[tuple[Path, str]]:
    """The (path, label) of each file an entry names: itself, or a directory's YAML files."""
    if not target.exists():
        out.issues.append(ConfigIssue(path=at, message=(
            f"file not found: {target}; create it (a YAML list of zones) or fix the path, "
            f"which is relative to the project directory ({project_dir})")))
        return []
    if not target.is_dir():
        return [(target, value)]
    names = sorted(p.name for p in target.iterdir()
                   if p.suffix in SUFFIXES and not p.name.startswith(".") and p.is_file())
    if not names:
        out.issues.append(ConfigIssue(path=at, message=(
            f"directory {value!r} holds no {' or '.join(SUFFIXES)} file; put the zone lists "
            "there (one YAML list of zones per file) or remove this entry")))
        return []
    files = []
    for name in names:
        label = str(PurePosixPath(value) / name)
        path, refused = safeyaml.path_inside(project_dir, label)
        if path is None:
            out.issues.append(ConfigIssue(path=f"{at}:{name}", message=str(refused)))
            continue
        files.append((path, label))
    return files


def _read_zone_list(path: Path, label: str, out: ZoneFileEntries) -> None:
    """One file's zones, appended with their `<label>[<index>]` paths."""
    doc, problem = load_yaml(path, label)
    if problem is not None:
        out.issues.append(problem)
        return
    if not isinstance(doc, list):
        hint = ""
        if isinstance(doc, dict) and ("zones" in doc or f"{PREFIX}zones" in doc):
            hint = "; write the list at the top level of the file, without the 'zones:' key"
        elif isinstance(doc, dict) and "config" in doc:
            hint = "; this looks like a stack file: list zone files here, not stack files"
        got = "an empty file" if doc is None else safeyaml.describe(doc)
        out.issues.append(ConfigIssue(path=label, message=(
            f"expected {_SHAPE}, got {got}{hint}")))
        return
    out.files.append(label)
    for i, zone in enumerate(doc):
        out.zones.append(zone)
        out.zone_paths.append(f"{label}[{i}]")


def load_zone_files(project_dir: Path, entries: Sequence[Any]) -> ZoneFileEntries:
    """The zones of every file `zonesFiles` names (entries: the key's list; its shape as
    a list is the caller's to check), each file confined to the project directory and
    read once."""
    out = ZoneFileEntries()
    seen: dict[Path, str] = {}
    for n, value in enumerate(entries):
        if not isinstance(value, str):
            out.issues.append(ConfigIssue(path=f"{PREFIX}{ZONES_FILES_KEY}[{n}]", message=(
                f"expected a path (a string) relative to the project directory, got "
                f"{safeyaml.describe(value)}")))
            continue
        at = f"{PREFIX}{ZONES_FILES_KEY}[{n}]({value})"
        target, refused = safeyaml.path_inside(project_dir, value)
        if target is None:
            out.issues.append(ConfigIssue(path=at, message=str(refused)))
            continue
        for path, label in _files_of(project_dir, value, target, at, out):
            first = seen.setdefault(path, at)
            if first != at:
                out.issues.append(ConfigIssue(path=at, message=(
                    f"{label} is read already through {first}; list each file once (its "
                    "zones would be defined twice)")))
                continue
            _read_zone_list(path, label, out)
    return out
