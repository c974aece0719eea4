"""Stack files: Pulumi.<stack>.yaml read into the project's keys, and the stacks there are.

The lowest step from disk to config: the topology, the catalogs (which look at other
stacks' files) and the fleet order all read stack files through here.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from bind9_topology.config import safeyaml
from bind9_topology.config.model import PROJECT, ConfigIssue, TopologyError

PREFIX = f"{PROJECT}:"


class StackConfig(dict[str, Any]):
    """A stack's raw config (unprefixed keys), with warnings found while reading it.

    A plain dict to every caller; load_topology passes `warnings` on to the Topology.
    """

    warnings: list[ConfigIssue]

    def __init__(self, *args: Any, warnings: Iterable[ConfigIssue] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.warnings = list(warnings)


def read_stack_file(project_dir: Path, stack: str) -> StackConfig:
    """The project's keys from Pulumi.<stack>.yaml, without the project prefix."""
    config = read_stack_config(project_dir, stack)
    keys = [str(k) for k in config]
    return StackConfig(
        strip_prefix({str(k): v for k, v in config.items()}),
        warnings=namespace_typos(keys, f"Pulumi.{stack}.yaml:"),
    )


def read_stack_config(project_dir: Path, stack: str) -> dict[str, Any]:
    """Pulumi.<stack>.yaml's whole `config:` mapping, every namespace, keys as written
    (what the engine hands the program; config_size measures it)."""
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.exists():
        stacks = sorted(p.name[len("Pulumi."):-len(".yaml")]
                        for p in project_dir.glob("Pulumi.*.yaml"))
        raise TopologyError(
            [ConfigIssue(path=str(path.name),
                         message=f"no such stack file; known stacks: {', '.join(stacks)}")]
        )
    doc, problem = load_yaml(path, path.name)
    if problem is not None:
        raise TopologyError([problem])
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise TopologyError([ConfigIssue(path=path.name, message=(
            f"expected a mapping with a 'config:' key, got {safeyaml.describe(doc)}"))])
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise TopologyError([ConfigIssue(path=f"{path.name}:config", message=(
            f"expected a mapping of '{PREFIX}<key>: value' entries, got "
            f"{safeyaml.describe(config)}"))])
    return {str(k): v for k, v in config.items()}


def load_yaml(path: Path, label: str) -> tuple[Any, ConfigIssue | None]:
    """One YAML document of a file the user names, through safeyaml's bounds; or the issue
    that stops it, at `<label>:<line>:<column>` for a syntax error (what the editor shows).

    Stack files and zonesFiles share it, so both say the same about the same mistake."""
    try:
        return safeyaml.load_file(path), None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{label}:{mark.line + 1}:{mark.column + 1}" if mark else label
        return None, ConfigIssue(path=where, message=(
            f"not valid YAML ({exc.problem or exc}); fix the syntax there (indentation, "
            "a missing ':' or an unclosed quote or bracket)"))
    except (yaml.YAMLError, ValueError, OSError) as exc:
        return None, ConfigIssue(path=label, message=f"cannot read: {exc}")


def strip_prefix(config: dict[str, Any]) -> dict[str, Any]:
    return {k[len(PREFIX):]: v for k, v in config.items() if k.startswith(PREFIX)}


def namespace_typos(keys: Iterable[str], where: str = "") -> list[ConfigIssue]:
    """Warnings for keys whose namespace looks like a misspelling of the project's.

    Pulumi hands such a key to nobody: `bind9-topolgy:zones` silently drops every zone.
    """
    out = []
    for key in keys:
        namespace, sep, name = key.partition(":")
        if not sep or namespace == PROJECT:
            continue
        if difflib.get_close_matches(namespace, [PROJECT], n=1, cutoff=0.8):
            out.append(ConfigIssue(path=f"{where}{key}", message=(
                f"namespace {namespace!r} looks like a typo of {PROJECT!r}; this key is "
                f"ignored: did you mean '{PREFIX}{name}'?")))
    return out


def list_stacks(project_dir: Path) -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in project_dir.glob("Pulumi.*.yaml"))
