"""The stack config's size as the engine hands it to the program, against Linux's cap.

The engine gives the language host every config key of the stack (every namespace,
secrets decrypted, Pulumi.yaml's defaults filled in for keys the stack leaves out), and
the host puts them all in ONE environment variable of the program, PULUMI_CONFIG: a
JSON object of "<namespace>:<key>" -> the value's text (a string as it is; a list or a
mapping as JSON), written by Go's encoding/json (compact, keys sorted, '<', '>' and '&'
escaped; engine/cli/langhost/main.go `configEnv`, as the upstream host does). Linux
refuses a single "NAME=value" string longer than MAX_ARG_STRLEN (32 pages: 131,072
bytes with its NUL) with E2BIG, so a stack past it stops before the program runs with
only the engine's "argument list too long" - about 1,000 inline zones.

`validate`, `render`, `local up` and `deploy` measure the stack file offline and refuse
a stack over the cap (warning from WARN_FRACTION of it), naming the largest keys and the
fix; the program measures the variable it was given, and only warns (the engine fails
first on a bigger one). Offline the figure is exact for this project's stack files; it
can be a few bytes off where YAML 1.1 and the engine's YAML read a scalar differently,
for floats Go spells otherwise, for secrets of a provider other than the passphrase's
(counted at their ciphertext's length) and for ESC environments (not counted).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bind9_topology.config.model import PROJECT, ConfigIssue
from bind9_topology.config.stack_files import PREFIX, load_yaml, read_stack_config
from bind9_topology.config.zone_files import ZONES_FILES_KEY

#: Linux's limit on one argument or environment string, its NUL included (32 pages)
MAX_ARG_STRLEN = 131_072
#: the variable the language host sets
ENV_NAME = "PULUMI_CONFIG"
#: warn from this share of the cap
WARN_FRACTION = 0.75
#: keys named in a message
LARGEST = 3
#: AES-GCM's tag: a passphrase secret's ciphertext is its plaintext plus these bytes
_GCM_TAG = 16

#: what Go's encoding/json escapes beyond what Python's json does (HTML-safe output)
_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                             "\u2028": "\\u2028", "\u2029": "\\u2029"})


@dataclass(frozen=True)
class ConfigSize:
    """Bytes of "PULUMI_CONFIG=<json>\\0" and what each key adds to it, largest first."""

    total: int
    keys: tuple[tuple[str, int], ...]

    @property
    def over(self) -> bool:
        return self.total > MAX_ARG_STRLEN

    @property
    def near(self) -> bool:
        return self.total > WARN_FRACTION * MAX_ARG_STRLEN


def go_json(value: Any) -> str:
    """*value* as Go's json.Marshal writes it (for sizes: the bytes match)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                      sort_keys=True).translate(_GO_ESCAPES)


def _utf8(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def _secret_length(ciphertext: str) -> int:
    """The plaintext length of a stack file's `secure:` value: exact for the passphrase
    provider's `v1:<nonce>:<ciphertext+tag>`, else the ciphertext's (an upper bound)."""
    parts = ciphertext.split(":")
    if len(parts) == 3 and parts[0] == "v1":
        try:
            return max(0, len(base64.b64decode(parts[2], validate=True)) - _GCM_TAG)
        except (binascii.Error, ValueError):
            pass
    return len(ciphertext)


def _is_secure(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("secure"), str)


def _plain(value: Any) -> Any:
    """The value as the engine holds it: `secure:` leaves as (placeholder) plaintext of
    their length, mapping keys as strings."""
    if _is_secure(value):
        return "x" * _secret_length(value["secure"])
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _scalar_text(value: Any) -> str:
    """A top-level scalar's text (the engine keeps the YAML scalar's own text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def value_text(value: Any) -> str:
    """The text the engine passes for one config value of a stack file."""
    value = _plain(value)
    if isinstance(value, (dict, list)):
        return go_json(value)
    return _scalar_text(value)


def engine_config(stack_config: Mapping[str, Any], project_doc: Any = None) -> dict[str, str]:
    """ "<namespace>:<key>" -> text, as PULUMI_CONFIG will hold it: the stack file's
    `config:` plus Pulumi.yaml's `config:` defaults (or values) for keys it leaves out."""
    out = {str(k): value_text(v) for k, v in stack_config.items()}
    project = PROJECT
    declared: Any = {}
    if isinstance(project_doc, dict):
        project = str(project_doc.get("name") or PROJECT)
        declared = project_doc.get("config") or {}
    if not isinstance(declared, dict):
        return out
    for key, spec in declared.items():
        full = str(key) if ":" in str(key) else f"{project}:{key}"
        if full in out:
            continue
        if isinstance(spec, dict) and ("default" in spec or "value" in spec):
            value = spec["default"] if "default" in spec else spec["value"]
        elif isinstance(spec, dict):
            continue  # a type without a default: the engine passes nothing
        else:
            value = spec
        out[full] = value_text(value)
    return out


def measure(config: Mapping[str, str]) -> ConfigSize:
    """The size of PULUMI_CONFIG holding *config* (key -> text)."""
    if not config:
        return ConfigSize(0, ())  # the host sets no variable at all
    keys = {k: _utf8(go_json(k)) + 1 + _utf8(go_json(v)) + 1 for k, v in config.items()}
    # "PULUMI_CONFIG=" "{" entries joined by "," (one comma fewer than entries) "}" NUL
    total = len(ENV_NAME) + 1 + 1 + sum(keys.values()) - 1 + 1 + 1
    return ConfigSize(total, tuple(sorted(keys.items(), key=lambda kv: (-kv[1], kv[0]))))


def measure_env(text: str) -> ConfigSize:
    """The size of the PULUMI_CONFIG the program was given (exact), with each key's part."""
    total = _utf8(f"{ENV_NAME}={text}") + 1
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return ConfigSize(total, ())
    if not isinstance(parsed, dict):
        return ConfigSize(total, ())
    keys = measure({str(k): str(v) for k, v in parsed.items()}).keys
    return ConfigSize(total, keys)


def stack_config_size(project_dir: Path, stack: str) -> ConfigSize:
    """The size PULUMI_CONFIG will have for Pulumi.<stack>.yaml (TopologyError when the
    stack file cannot be read, as read_stack_file)."""
    config = read_stack_config(project_dir, stack)
    project_doc, _ = load_yaml(project_dir / "Pulumi.yaml", "Pulumi.yaml") \
        if (project_dir / "Pulumi.yaml").is_file() else (None, None)
    return measure(engine_config(config, project_doc))


def _fix(key: str) -> str:
    if key == f"{PREFIX}zones":
        return (f"move the zones into YAML files listed in {PREFIX}{ZONES_FILES_KEY} (each "
                f"file a list of zones in the shape of {PREFIX}zones; README: \"Many zones: "
                f"{ZONES_FILES_KEY}\"), and long inline `records` into the zone's recordsFile")
    if key.startswith(PREFIX):
        return (f"make {key} smaller (it has no file form), or make room by moving zones "
                f"into {PREFIX}{ZONES_FILES_KEY}")
    return ("make it smaller: the engine passes every key of every namespace in that one "
            f"variable (or make room by moving zones into {PREFIX}{ZONES_FILES_KEY})")


def size_findings(size: ConfigSize, where: str = "") -> tuple[list[ConfigIssue],
                                                                list[ConfigIssue]]:
    """(problems, warnings): one problem over the cap, one warning near it, at
    `<where><largest key>`, naming the largest keys and the fix."""
    if not size.near or not size.keys:
        return [], []
    largest = ", ".join(f"{k} {n:,} bytes" for k, n in size.keys[:LARGEST])
    top = size.keys[0][0]
    if size.over:
        text = (f"the stack config is {size.total:,} bytes as the engine hands it to the "
                f"program (the one environment variable {ENV_NAME}), over Linux's limit of "
                f"{MAX_ARG_STRLEN:,} bytes for one environment string: `pulumi preview` and "
                "`pulumi up` would stop before the program starts, with only 'argument list "
                f"too long'. Largest keys: {largest}; {_fix(top)}")
        return [ConfigIssue(path=f"{where}{top}", message=text)], []
    text = (f"the stack config is {size.total:,} bytes as the engine hands it to the program "
            f"({ENV_NAME}), {100 * size.total // MAX_ARG_STRLEN}% of Linux's limit of "
            f"{MAX_ARG_STRLEN:,} bytes for one environment string; past it `pulumi up` stops "
            f"before the program starts with only 'argument list too long'. Largest keys: "
            f"{largest}; {_fix(top)}")
    return [], [ConfigIssue(path=f"{where}{top}", message=text)]


def check_stack(project_dir: Path, stack: str) -> tuple[list[ConfigIssue], list[ConfigIssue]]:
    """size_findings for Pulumi.<stack>.yaml, named by the stack file's keys."""
    return size_findings(stack_config_size(project_dir, stack), f"Pulumi.{stack}.yaml:")
