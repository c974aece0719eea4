"""The topology as data: pydantic v2 shapes for stack config and bindy manifests.

Everything a user can get wrong is caught here, before any resource is
registered, and reported all at once with the config path that holds the
mistake and how to fix it. No Pulumi import: the CLI, the local runner and the
tests use this module on its own.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

PROJECT = "bind9-topology"

# BIND versions we support, mapped to the image tag of internetsystemsconsortium/bind9.
SUPPORTED_VERSIONS: dict[str, str] = {"9.18": "9.18", "9.20": "9.20"}

TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1")

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


class ConfigIssue(BaseModel):
    """One thing wrong with the input, where it is, and what to do about it."""

    model_config = ConfigDict(frozen=True)

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class TopologyError(Exception):
    """All the problems found in a stack's input, raised before anything is registered."""

    def __init__(self, issues: Iterable[ConfigIssue]):
        self.issues = sorted(set(issues), key=lambda i: (i.path, i.message))
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{len(self.issues)} problem(s) in the stack configuration:"]
        lines += [f"  - {issue}" for issue in self.issues]
        return "\n".join(lines)


# --------------------------------------------------------------------------- helpers


def dns1123_name(value: str) -> str:
    if len(value) > 63 or not _DNS1123_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label; use lower-case letters, digits and '-', "
            "start and end with a letter or digit, at most 63 characters (e.g. 'primary-dns')"
        )
    return value


def check_labels(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    """Return (key, problem) pairs for labels Kubernetes would reject."""
    problems = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (
            (prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)))
            or len(name) > 63
            or not _LABEL_NAME.match(name)
        ):
            problems.append(
                (
                    key,
                    f"label key {key!r} is not valid; use [prefix/]name with alphanumerics, "
                    "'-', '_' or '.', at most 63 characters in the name",
                )
            )
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            problems.append(
                (
                    key,
                    f"label value {value!r} is not valid; use at most 63 alphanumerics, "
                    "'-', '_' or '.', beginning and ending with an alphanumeric",
                )
            )
    return problems


def parse_server(value: str, default_port: int = 53) -> tuple[str, int]:
    """Parse 'IP', 'IP:port', '[v6]:port' or 'v6' into (ip, port)."""
    text = value.strip()
    host, port = text, default_port
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{value!r} is not an address; write [IPv6]:port")
        if rest:
            port = _port(rest[1:], value)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, value)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP address; write an IPv4/IPv6 address, optionally with "
            "a port as '10.0.1.10:5353' or '[2001:db8::1]:5353'"
        ) from None
    return host, port


def _port(text: str, original: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{original!r} has an invalid port; use 1-65535")
    return int(text)


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(
            f"{value!r} is not a CIDR; write a network such as '10.0.0.0/8' or '2001:db8::/32'"
        ) from None


def _server(value: str) -> str:
    parse_server(value)
    return value


def _transfer_entry(value: str) -> str:
    if value.startswith("key "):
        return "key " + value[4:].strip()
    return _cidr(value)


# List items validated one by one, so that an error names its index (allowQuery[1]).
Cidr = Annotated[str, AfterValidator(_cidr)]
Server = Annotated[str, AfterValidator(_server)]
TransferEntry = Annotated[str, AfterValidator(_transfer_entry)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


# --------------------------------------------------------------------------- instances


class InstanceConfig(_Strict):
    recursion: bool = False
    allowQuery: list[Cidr] = Field(default_factory=lambda: ["0.0.0.0/0", "::/0"])
    # None means: the role's default (the TSIG key on primaries, nothing on secondaries).
    allowTransfer: list[TransferEntry] | None = None
    # Where the other side's transfers and NOTIFY really come from when they cross a
    # NAT (node or egress addresses of other regions), for the NetworkPolicy.
    peerCidrs: list[Cidr] = Field(default_factory=list)

    @field_validator("recursion")
    @classmethod
    def _no_recursion(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                "recursion must be false on an authoritative server; remove the key or set "
                "it to false (run a separate resolver for recursion)"
            )
        return value


class ResourceList(_Strict):
    cpu: str | None = None
    memory: str | None = None


class Resources(_Strict):
    requests: ResourceList = ResourceList(cpu="100m", memory="128Mi")
    limits: ResourceList = ResourceList(memory="512Mi")


class ServiceSpec(_Strict):
    """How clients and other regions reach an instance: one fixed address per instance.

    `loadBalancerIP` suits clouds with a load-balancer controller; `clusterIP` (an
    address in the cluster's Service range) suits clusters without one, such as the
    local cluster of `scripts/cluster.sh`, or peered networks that route Service IPs.
    """

    type: Literal["ClusterIP", "LoadBalancer"] = "ClusterIP"
    loadBalancerIP: str | None = None
    clusterIP: str | None = None

    @field_validator("loadBalancerIP", "clusterIP")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not an IP address; give the fixed IP other regions list "
                    "in primaryServers"
                ) from None
        return value

    @model_validator(mode="after")
    def _lb_ip_needs_lb(self) -> ServiceSpec:
        if self.loadBalancerIP and self.type != "LoadBalancer":
            raise ValueError("loadBalancerIP is set but type is not LoadBalancer; set type")
        if self.clusterIP and self.loadBalancerIP:
            raise ValueError(
                "set either loadBalancerIP or clusterIP: an instance has one fixed address"
            )
        return self

    @property
    def fixed_address(self) -> str | None:
        """The address other instances and the gate use for this instance, if fixed."""
        return self.loadBalancerIP or self.clusterIP


class Instance(_Strict):
    name: str
    role: Literal["primary", "secondary"]
    labels: dict[str, str] = Field(default_factory=dict)
    replicas: Annotated[int, Field(strict=True)] = 1
    version: str = "9.18"
    config: InstanceConfig = InstanceConfig()
    resources: Resources = Resources()
    service: ServiceSpec = ServiceSpec()

    _name = field_validator("name")(classmethod(lambda cls, v: dns1123_name(v)))

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"replicas is {value}; set it to 1 or more")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value not in SUPPORTED_VERSIONS:
            raise ValueError(
                f"BIND version {value!r} is not supported; use one of "
                + ", ".join(repr(v) for v in SUPPORTED_VERSIONS)
            )
        return value

    # A mirror or a derived image; it must provide named and dig (the readiness probe).
    image: str | None = None

    @property
    def container_image(self) -> str:
        if self.image:
            return self.image
        return f"internetsystemsconsortium/bind9:{SUPPORTED_VERSIONS[self.version]}"

    def transfer_acl(self, key_name: str) -> list[str]:
        """allow-transfer entries; the role's default when not given."""
        if self.config.allowTransfer is not None:
            return self.config.allowTransfer
        return [f"key {key_name}"] if self.role == "primary" else []


# --------------------------------------------------------------------------- zones


class SoaRecord(_Strict):
    primaryNs: str
    adminEmail: str
    refresh: int = Field(default=3600, ge=1)
    retry: int = Field(default=600, ge=1)
    expire: int = Field(default=1209600, ge=1)
    negativeTtl: int = Field(default=300, ge=0, le=86400)

    @property
    def rname(self) -> str:
        """adminEmail in SOA RNAME form: the first '@' becomes a dot."""
        local, _, domain = self.adminEmail.partition("@")
        if not domain:
            return self.adminEmail.rstrip(".") + "."
        return local.replace(".", "\\.") + "." + domain.rstrip(".") + "."


class Record(_Strict):
    name: str = "@"
    type: str
    ttl: int | None = Field(default=None, ge=0)
    data: str

    @field_validator("type")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


class InstanceSelector(_Strict):
    matchLabels: dict[str, str] = Field(default_factory=dict)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.matchLabels.items())


class SecondaryConfig(_Strict):
    primaryServers: list[Server] = Field(default_factory=list)

    @property
    def servers(self) -> list[tuple[str, int]]:
        return [parse_server(v) for v in self.primaryServers]


class Zone(_Strict):
    name: str | None = None  # the DNSZone's metadata.name; derived from zoneName when absent
    zoneName: str
    type: Literal["primary", "secondary"]
    instanceSelector: InstanceSelector
    secondaryConfig: SecondaryConfig | None = None
    soaRecord: SoaRecord | None = None
    ttl: int = Field(default=3600, ge=0)
    records: list[Record] = Field(default_factory=list)
    recordsFile: str | None = None
    alsoNotify: list[Server] = Field(default_factory=list)

    @field_validator("zoneName")
    @classmethod
    def _zone_name(cls, value: str) -> str:
        import dns.name

        text = value.strip().rstrip(".").lower()
        try:
            name = dns.name.from_text(text)
        except Exception as exc:
            raise ValueError(
                f"{value!r} is not a valid zone name ({exc}); use letters, digits and '-' "
                "per label, labels separated by single dots, e.g. 'example.com'"
            ) from None
        labels = [lbl.decode() for lbl in name.labels if lbl]
        if not labels or any(not re.match(r"^[a-z0-9_]([-a-z0-9_]*[a-z0-9])?$", lbl)
                             for lbl in labels):
            raise ValueError(
                f"{value!r} is not a valid zone name; use letters, digits and '-' per label, "
                "e.g. 'example.com'"
            )
        return text

    @property
    def resource_name(self) -> str:
        if self.name:
            return self.name
        suffix = "" if self.type == "primary" else "-secondary"
        return self.zoneName.replace(".", "-").replace("_", "") + suffix

    @property
    def notify_servers(self) -> list[tuple[str, int]]:
        return [parse_server(v) for v in self.alsoNotify]


# --------------------------------------------------------------------------- stack


class TsigKeySpec(_Strict):
    name: str = "transfer-key"
    algorithm: str = "hmac-sha256"

    @field_validator("algorithm")
    @classmethod
    def _alg(cls, value: str) -> str:
        if value not in TSIG_ALGORITHMS:
            raise ValueError(
                f"TSIG algorithm {value!r} is not supported; "
                f"use one of {', '.join(TSIG_ALGORITHMS)}"
            )
        return value

    @field_validator("name")
    @classmethod
    def _key_name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9][-A-Za-z0-9._]*$", value):
            raise ValueError(f"TSIG key name {value!r} is not valid; use e.g. 'transfer-key'")
        return value


class GateSpec(_Strict):
    enabled: bool = True
    deadlineSeconds: int = Field(default=300, ge=1)
    pollIntervalSeconds: float = Field(default=1.0, gt=0)
    # Where the gate reaches an address of the config ('ip' or 'ip:port' -> 'ip:port'),
    # e.g. {"10.0.1.10": "127.0.0.1:15301"} when the servers run locally.
    addressMap: dict[str, Server] = Field(default_factory=dict)


class StackSpec(_Strict):
    """One region stack, as written in Pulumi.<stack>.yaml (without the project prefix)."""

    region: str
    environment: str = "production"
    namespace: str = "dns-system"
    instances: list[Instance] = Field(default_factory=list)
    zones: list[Zone] = Field(default_factory=list)
    bindyManifests: list[str] = Field(default_factory=list)
    tsigKey: TsigKeySpec = TsigKeySpec()
    gate: GateSpec = GateSpec()
    maxZoneBytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    kubernetesRenderDir: str | None = None

    _ns = field_validator("namespace")(classmethod(lambda cls, v: dns1123_name(v)))

    def instances_for(self, zone: Zone) -> list[Instance]:
        return [i for i in self.instances if zone.instanceSelector.matches(i.labels)]

    def zones_for(self, instance: Instance) -> list[Zone]:
        return [z for z in self.zones if z.instanceSelector.matches(instance.labels)]


def format_loc(prefix: str, loc: Iterable[int | str]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path and not path.endswith(":") else "") + str(part)
    return path


def _unwrap(tp: Any) -> Any:
    """Strip Annotated[...] and `| None` from a type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _model_at(root: type[BaseModel], loc: Iterable[int | str]) -> type[BaseModel] | None:
    """The model class found by following loc from root (None when it cannot be told)."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if _is_model(tp) and isinstance(part, str) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if _is_model(tp) else None


def _unknown_key(loc: list[int | str], root: type[BaseModel]) -> str:
    key = str(loc[-1]) if loc else "?"
    model = _model_at(root, loc[:-1])
    if model is None:
        return f"unknown key {key!r}; check its spelling"
    known = sorted(model.model_fields)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key {key!r}; {hint}valid keys here: {', '.join(known)}"


def _friendly(
    error: Mapping[str, Any],
    loc: list[int | str] | None = None,
    root: type[BaseModel] | None = None,
) -> str:
    kind = error["type"]
    msg = str(error["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return _unknown_key(loc or [], root or StackSpec)
    if kind == "missing":
        return "is required; add it"
    return msg


def issues_from_validation(
    exc: ValidationError, prefix: str, root: type[BaseModel] | None = None
) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        issues.append(
            ConfigIssue(path=format_loc(prefix, loc), message=_friendly(err, loc, root))
        )
    return issues
