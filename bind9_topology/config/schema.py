"""The stack config schema, written from the pydantic model (bind9_topology.config.model.StackSpec).

One source: each key's type, default and description live on StackSpec's fields
(`Field(description=...)`); this module writes them into the `config:` block of
Pulumi.yaml (everything above that block stays as it is) and into the README's
"Stack config reference" table (between the BEGIN/END comments below).

    python -m components schema --check   # exit 1 and name what drifted
    python -m components schema --write   # rewrite both from the model

No Pulumi import: tests and the CLI use it on its own.
"""

from __future__ import annotations

import textwrap
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from bind9_topology.config.model import PROJECT, StackSpec, unwrap_type
from bind9_topology.config.topology import (
    SECRET_KEY,  # read beside StackSpec: load_topology takes it apart
)

SECRET_DESCRIPTION = (
    "The TSIG key's base64 secret. Always set it as a secret: `pulumi config set --secret "
    f'{PROJECT}:{SECRET_KEY} "$(python -m components keygen)"`.')
#: StackSpec's field after which the secret is listed.
SECRET_AFTER = "tsigKey"

README_BEGIN = ("<!-- BEGIN stack-config-reference: generated from bind9_topology/config/model.py "
                "by `python -m components schema --write`; do not edit by hand -->")
README_END = "<!-- END stack-config-reference -->"
CONFIG_HEADER = "config:\n"
WIDTH = 88


@dataclass(frozen=True)
class Key:
    """One config key: its Pulumi type (and item type), default and description."""

    name: str
    type: str  # string | integer | boolean | array | object
    items: str | None  # an array's item type
    required: bool
    default: Any  # the model's default (None: none)
    description: str
    secret: bool = False

    @property
    def pulumi_default(self) -> Any:
        """What Pulumi.yaml declares: "" for an unset string, [] and {} for empty
        collections; an object's nested defaults are the model's, so {} stands for them
        (the engine passes {} and the model fills it in)."""
        if self.type == "object":
            return {}
        if self.type == "array":
            return []
        if self.default is None:
            return ""
        return self.default


def _pulumi_type(tp: Any) -> tuple[str, str | None]:
    tp = unwrap_type(tp)  # a union of several types falls through to "string" below
    origin = typing.get_origin(tp)
    if origin is list:
        item, _ = _pulumi_type(typing.get_args(tp)[0])
        return "array", item
    if origin is dict or (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return "object", None
    if tp is bool:
        return "boolean", None
    if tp is int:
        return "integer", None
    if tp is float:
        return "number", None
    return "string", None


def config_keys(model: type[BaseModel] = StackSpec) -> list[Key]:
    """Every stack config key, in the model's order (the secret after SECRET_AFTER)."""
    out: list[Key] = []
    for name, field in model.model_fields.items():
        if not field.description:
            raise ValueError(f"{model.__name__}.{name} has no description; add "
                             "Field(description=...)")
        kind, items = _pulumi_type(field.annotation)
        default = field.get_default(call_default_factory=True)
        out.append(Key(name=name, type=kind, items=items, required=field.is_required(),
                       default=None if default is PydanticUndefined else default,
                       description=" ".join(field.description.split())))
        if name == SECRET_AFTER:
            out.append(Key(name=SECRET_KEY, type="string", items=None, required=False,
                           default="", description=SECRET_DESCRIPTION, secret=True))
    return out


# --------------------------------------------------------------------------- Pulumi.yaml


def _scalar(value: Any) -> str:
    if value == "":
        return '""'
    if value == []:
        return "[]"
    if value == {}:
        return "{}"
    return yaml.safe_dump(value, default_flow_style=True).splitlines()[0]


def config_block(model: type[BaseModel] = StackSpec) -> str:
    """Pulumi.yaml's `config:` block, as text."""
    lines = [CONFIG_HEADER.rstrip("\n")]
    for key in config_keys(model):
        lines += [f"  {key.name}:", f"    type: {key.type}"]
        if key.items:
            lines += ["    items:", f"      type: {key.items}"]
        if not key.required:
            lines.append(f"    default: {_scalar(key.pulumi_default)}")
        one_line = f"    description: {key.description}"
        if len(one_line) <= WIDTH and not any(c in key.description for c in ":#`\"'{}[]|>"):
            lines.append(one_line)
        else:
            lines.append("    description: >-")
            lines += textwrap.wrap(key.description, WIDTH, initial_indent="      ",
                                   subsequent_indent="      ", break_long_words=False,
                                   break_on_hyphens=False)
    return "\n".join(lines) + "\n"


def pulumi_yaml(current: str, model: type[BaseModel] = StackSpec) -> str:
    """Pulumi.yaml's text with its `config:` block (the file's last block) written anew."""
    start = current.find(f"\n{CONFIG_HEADER}")
    head = current if start < 0 else current[:start + 1]
    if start < 0 and not head.endswith("\n"):
        head += "\n"
    return head + config_block(model)


# --------------------------------------------------------------------------- README


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _readme_type(key: Key) -> str:
    if key.secret:
        return "secret string"
    if key.type == "array":
        return f"list of {key.items}s" if key.items else "list"
    return key.type


def _readme_default(key: Key) -> str:
    if key.required:
        return "required"
    value = key.default
    if isinstance(value, BaseModel):
        shown = {name: getattr(value, name) for name, field in type(value).model_fields.items()
                 if isinstance(getattr(value, name), (str, int, float, bool))}
        return ", ".join(f"`{k}` {_cell(_plain(v))}" for k, v in shown.items())
    if value == [] or value == {}:
        return "empty"
    if value is None or value == "":
        return "unset"
    return _cell(_plain(value))


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int) and value >= 1024 * 1024 and value % (1024 * 1024) == 0:
        return f"`{value}` ({value // (1024 * 1024)} MiB)"
    return f"`{value}`"


def readme_table(model: type[BaseModel] = StackSpec) -> str:
    lines = [README_BEGIN, "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for key in config_keys(model):
        lines.append(f"| `{key.name}` | {_readme_type(key)} | {_readme_default(key)} | "
                     f"{_cell(key.description)} |")
    lines += ["", README_END]
    return "\n".join(lines)


def readme(current: str, model: type[BaseModel] = StackSpec) -> str:
    """README's text with the generated table between its BEGIN and END comments."""
    begin, end = current.find(README_BEGIN), current.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f"README.md has no {README_BEGIN!r} ... {README_END!r} block; "
                         "put both where the table belongs")
    return current[:begin] + readme_table(model) + current[end + len(README_END):]


# --------------------------------------------------------------------------- check / write


def drift(project_dir: Path) -> list[str]:
    """The files whose generated parts differ from the model."""
    out = []
    for name, make in (("Pulumi.yaml", pulumi_yaml), ("README.md", readme)):
        text = (project_dir / name).read_text()
        if make(text) != text:
            out.append(name)
    return out


def write(project_dir: Path) -> list[str]:
    """Rewrite the generated parts; the files that changed."""
    changed = []
    for name, make in (("Pulumi.yaml", pulumi_yaml), ("README.md", readme)):
        path = project_dir / name
        text = path.read_text()
        new = make(text)
        if new != text:
            path.write_text(new)
            changed.append(name)
    return changed
