"""The policy pack's rules as pure functions (no Pulumi, no I/O), each returning the
violations it finds as messages; __main__.py applies them to the resources of a
preview. Unit-tested in tests/test_policy.py.

named.conf is read with a small parser of BIND's configuration grammar (statements,
blocks, quoted strings, the three comment styles), enough for the statements the rules
look at: options, view, zone, acl, allow-transfer, recursion, dnssec-policy.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CONFIGMAP_LIMIT = 1024 * 1024  # Kubernetes refuses a ConfigMap whose data is larger
NAMED_CONF_KEY = "named.conf"

# ----------------------------------------------------------------------- parsing

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>(?://|\#)[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<punct>[{};])
  | (?P<word>[^\s{};"]+)
    """,
    re.VERBOSE | re.DOTALL,
)


class NamedConfError(ValueError):
    """named.conf that the parser cannot read (unbalanced braces, open string)."""


@dataclass
class Statement:
    """One statement: its words (strings unquoted) and blocks, in order."""

    parts: list[str | list[Statement]]

    @property
    def name(self) -> str:
        first = self.parts[0] if self.parts else ""
        return first if isinstance(first, str) else ""

    @property
    def words(self) -> list[str]:
        return [p for p in self.parts if isinstance(p, str)]

    @property
    def block(self) -> list[Statement] | None:
        """The first block, e.g. an ACL's elements or a zone's statements."""
        return next((p for p in self.parts if isinstance(p, list)), None)

    def find(self, name: str) -> Statement | None:
        return next((s for s in self.block or [] if s.name == name), None)


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # an unterminated string or comment
            raise NamedConfError(f"cannot read named.conf at offset {pos}: {text[pos:pos + 30]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind in ("space", "comment"):
            continue
        value = m.group()
        if kind == "string":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        yield kind, value


def parse_named_conf(text: str) -> list[Statement]:
    """The top-level statements of a named.conf."""
    stack: list[list[Statement]] = [[]]
    current: list[list[str | list[Statement]]] = [[]]
    for kind, value in _tokens(text):
        if kind == "punct" and value == "{":
            block: list[Statement] = []
            current[-1].append(block)
            stack.append(block)
            current.append([])
        elif kind == "punct" and value == "}":
            if len(stack) == 1:
                raise NamedConfError("named.conf has a '}' without its '{'")
            if current[-1]:
                stack[-1].append(Statement(current[-1]))
            stack.pop()
            current.pop()
        elif kind == "punct":  # ;
            if current[-1]:
                stack[-1].append(Statement(current[-1]))
            current[-1] = []
        else:
            current[-1].append(value)
    if len(stack) != 1:
        raise NamedConfError("named.conf has a '{' without its '}'")
    if current[-1]:
        stack[0].append(Statement(current[-1]))
    return stack[0]


# ----------------------------------------------------------------------- the model

_HEADER = re.compile(r"Rendered by bind9-topology for instance (\S+) \((primary|secondary)\)")
PRIMARY_TYPES = {"primary", "master"}
SECONDARY_TYPES = {"secondary", "slave"}


@dataclass
class ZoneConf:
    name: str
    type: str
    allow_transfer: Statement | None  # the zone's own allow-transfer statement, if any
    dnssec_policy: str | None
    where: str  # how a message names it


@dataclass
class NamedConf:
    instance: str | None
    role: str | None  # "primary" | "secondary" | None when it cannot be told
    options: Statement | None
    acls: dict[str, Statement] = field(default_factory=dict)
    zones: list[ZoneConf] = field(default_factory=list)
    views: list[Statement] = field(default_factory=list)

    @property
    def label(self) -> str:
        who = f"instance {self.instance}" if self.instance else "named.conf"
        return f"{who} ({self.role})" if self.role else who


def _zones(statements: Iterable[Statement], view: str | None) -> Iterator[ZoneConf]:
    for st in statements:
        if st.name != "zone" or len(st.words) < 2:
            continue
        ztype = st.find("type")
        policy = st.find("dnssec-policy")
        where = f'zone "{st.words[1]}"' + (f' (view "{view}")' if view else "")
        yield ZoneConf(
            name=st.words[1],
            type=(ztype.words[1].lower() if ztype and len(ztype.words) > 1 else ""),
            allow_transfer=st.find("allow-transfer"),
            dnssec_policy=(policy.words[1] if policy and len(policy.words) > 1 else None),
            where=where,
        )


def read_named_conf(text: str) -> NamedConf:
    statements = parse_named_conf(text)
    header = _HEADER.search(text)
    options = next((s for s in statements if s.name == "options"), None)
    conf = NamedConf(instance=header.group(1) if header else None,
                     role=header.group(2) if header else None, options=options)
    conf.acls = {s.words[1]: s for s in statements if s.name == "acl" and len(s.words) > 1}
    conf.zones = list(_zones(statements, None))
    for view in (s for s in statements if s.name == "view"):
        conf.views.append(view)
        name = view.words[1] if len(view.words) > 1 else "?"
        conf.zones += _zones(view.block or [], name)
    if conf.role is None:  # not rendered by this project: tell the role by its zones
        types = {z.type for z in conf.zones}
        if types & PRIMARY_TYPES:
            conf.role = "primary"
        elif types and types <= SECONDARY_TYPES:
            conf.role = "secondary"
    return conf


# ----------------------------------------------------------------------- ACLs

def _acl_text(st: Statement | None) -> str:
    if st is None:
        return "(none given: BIND's default allows any host)"

    def fmt(stmts: Sequence[Statement]) -> str:
        return "{ " + "".join(
            (" ".join(p if isinstance(p, str) else fmt(p) for p in s.parts)) + "; "
            for s in stmts) + "}"

    return fmt(st.block or [])


def _keyless(elements: Sequence[Statement], acls: Mapping[str, Statement],
             seen: frozenset[str] = frozenset()) -> list[str]:
    """The elements of an address match list that match a client without a TSIG key."""
    found: list[str] = []
    for el in elements:
        if not el.parts:
            continue
        first = el.parts[0]
        if isinstance(first, list):  # a nested list
            found += _keyless(first, acls, seen)
            continue
        if first == "key" or first.startswith("!") or first == "none":
            continue  # signed, a negation (never grants), or nothing
        if first in acls and first not in seen:
            found += _keyless(acls[first].block or [], acls, seen | {first})
            continue
        found.append(first)  # any, localhost, localnets, an address or prefix
    return found


def _everyone(entry: str) -> bool:
    if entry == "any":
        return True
    try:
        return ipaddress.ip_network(entry, strict=False).prefixlen == 0
    except ValueError:
        return False


def _transfer_lists(conf: NamedConf) -> Iterator[tuple[str, Statement | None]]:
    """Every allow-transfer in force, with where it applies: options' (None when
    absent: BIND's default), views' and zones' own."""
    yield "options", conf.options.find("allow-transfer") if conf.options else None
    for view in conf.views:
        own = view.find("allow-transfer")
        if own is not None:
            yield f'view "{view.words[1] if len(view.words) > 1 else "?"}"', own
    for zone in conf.zones:
        if zone.allow_transfer is not None:
            yield zone.where, zone.allow_transfer


# ----------------------------------------------------------------------- named.conf rules

def transfer_without_tsig(conf: NamedConf) -> list[str]:
    """A zone transfer allowed to a client that does not sign with a TSIG key."""
    out = []
    for where, acl in _transfer_lists(conf):
        keyless = ["any (no allow-transfer)"] if acl is None else _keyless(acl.block or [],
                                                                         conf.acls)
        if keyless:
            out.append(
                f"{conf.label}: {where} allows zone transfers without a TSIG key to "
                f"{', '.join(keyless)}: allow-transfer {_acl_text(acl)}; allow only "
                "'key <name>' (the stack's tsigKey)")
    return out


def primary_transfer_to_any(conf: NamedConf) -> list[str]:
    """A primary that lets any address transfer its zones (any, 0.0.0.0/0, ::/0, or no
    allow-transfer at all, which is BIND's default of any host)."""
    if conf.role != "primary":
        return []
    out = []
    for where, acl in _transfer_lists(conf):
        if acl is None:
            open_to = ["any (no allow-transfer)"]
        else:
            open_to = [e for e in _keyless(acl.block or [], conf.acls) if _everyone(e)]
        if open_to:
            out.append(
                f"{conf.label}: {where} lets any address transfer the zones "
                f"({', '.join(open_to)}): allow-transfer {_acl_text(acl)}")
    return out


def recursion_on(conf: NamedConf) -> list[str]:
    """Recursion on an authoritative server (`recursion yes`, or no `recursion`
    statement: BIND's default is yes)."""
    out = []
    scopes: list[tuple[str, Statement | None]] = [("options", conf.options)]
    scopes += [(f'view "{v.words[1] if len(v.words) > 1 else "?"}"', v) for v in conf.views]
    for where, scope in scopes:
        st = scope.find("recursion") if scope else None
        if st is None:
            if where == "options":
                out.append(f"{conf.label}: recursion is not turned off in options "
                           "(BIND's default is yes); set `recursion no;`")
            continue
        value = st.words[1].lower() if len(st.words) > 1 else ""
        if value in ("yes", "true", "1"):
            out.append(f"{conf.label}: {where} has `recursion {value};` on an "
                       "authoritative server; set `recursion no;`")
    return out


def secondary_dnssec_policy(conf: NamedConf) -> list[str]:
    """A dnssec-policy where a secondary serves: a secondary instance using one (options,
    views, zones) or a secondary zone with one. Only the primary signs."""
    out = []
    if conf.role == "secondary":
        scopes = [("options", conf.options), *(
            (f'view "{v.words[1] if len(v.words) > 1 else "?"}"', v) for v in conf.views)]
        for where, scope in scopes:
            st = scope.find("dnssec-policy") if scope else None
            if st is not None and len(st.words) > 1 and st.words[1] != "none":
                out.append(f"{conf.label}: {where} has dnssec-policy \"{st.words[1]}\"; "
                           "only the primary signs")
    for zone in conf.zones:
        if zone.dnssec_policy in (None, "none"):
            continue
        if conf.role == "secondary" or zone.type in SECONDARY_TYPES:
            out.append(f"{conf.label}: {zone.where} (type {zone.type or '?'}) has "
                       f"dnssec-policy \"{zone.dnssec_policy}\"; only the primary signs")
    return out


NAMED_CONF_RULES = {
    "transfer-requires-tsig": transfer_without_tsig,
    "no-recursion": recursion_on,
    "no-dnssec-policy-on-secondaries": secondary_dnssec_policy,
    "primary-transfer-not-to-any": primary_transfer_to_any,
}


# ----------------------------------------------------------------------- resources

def named_confs(data: Mapping[str, Any] | None) -> list[str]:
    """The named.conf texts a ConfigMap's data holds."""
    if not data:
        return []
    return [v for k, v in data.items() if k == NAMED_CONF_KEY and isinstance(v, str)]


def configmap_size(data: Mapping[str, Any] | None,
                   binary_data: Mapping[str, Any] | None) -> int:
    """Bytes of a ConfigMap's data as Kubernetes counts them (keys and values;
    binaryData base64-decoded)."""
    size = 0
    for key, value in (data or {}).items():
        size += len(key.encode()) + len(str(value).encode())
    for key, value in (binary_data or {}).items():
        text = str(value).strip()
        size += len(key.encode()) + len(text) * 3 // 4 - text.count("=", -2)
    return size


def configmap_too_large(name: str, data: Mapping[str, Any] | None,
                        binary_data: Mapping[str, Any] | None = None) -> list[str]:
    """A ConfigMap at or above 1 MiB, which the API server refuses."""
    size = configmap_size(data, binary_data)
    if size >= CONFIGMAP_LIMIT:
        return [f"ConfigMap {name} holds {size} bytes, at or above the 1 MiB "
                f"({CONFIGMAP_LIMIT} bytes) Kubernetes accepts; split its files"]
    return []


def image_pinned(image: str) -> bool:
    """Pinned: a digest (name@sha256:...), or a tag other than `latest`. The tag is
    looked for after the last '/', so a registry port (host:5000/name) is no tag."""
    if "@" in image:
        return bool(image.split("@", 1)[1])
    name = image.rsplit("/", 1)[-1]
    if ":" not in name:
        return False
    tag = name.rsplit(":", 1)[1]
    return bool(tag) and tag != "latest"


def unpinned_images(name: str, spec: Mapping[str, Any] | None) -> list[str]:
    """Containers (and init containers) of a Deployment whose image is not pinned."""
    pod = ((spec or {}).get("template") or {}).get("spec") or {}
    out = []
    for kind in ("initContainers", "containers"):
        for container in pod.get(kind) or []:
            image = container.get("image")
            if not isinstance(image, str):
                continue
            if not image_pinned(image):
                out.append(
                    f"Deployment {name}: container {container.get('name', '?')} runs image "
                    f"{image!r}, not pinned to a version; use a tag (not latest) or a digest")
    return out
