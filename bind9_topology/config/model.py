"""The topology as data: pydantic v2 shapes for stack config and bindy manifests.

Everything a user can get wrong is caught here, before any resource is
registered, and reported all at once with the config path that holds the
mistake and how to fix it. No Pulumi import: the CLI, the local runner and the
tests use this module on its own.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal, Protocol, cast

import dns.name
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

PROJECT = "bind9-topology"



class _IDNAExceptionClass(Protocol):
    def __call__(self, *, idna_exception: Exception) -> dns.name.IDNAException: ...


#: dns.name.IDNAException, called as dnspython calls it. cast: dnspython leaves
#: DNSException.__init__ unannotated (*args, **kwargs, checked against supp_kwargs).
_IDNAException = cast(_IDNAExceptionClass, dns.name.IDNAException)


class _Idna2008(dns.name.IDNACodec):
    """IDNA 2008 with the UTS 46 mapping (as browsers and registries), through the `idna`
    package; ASCII labels (including '_sip') pass as they are, as in dnspython's
    IDNA_2008_Practical. dnspython gates its own codec on a newer `idna` than some
    systems ship, so the package is called directly."""

    def encode(self, label: str) -> bytes:
        import idna

        if label == "" or dns.name.is_all_ascii(label):
            encoded = label.encode("ascii")
            if len(encoded) > 63:
                raise dns.name.LabelTooLong
            return encoded
        try:
            return bytes(idna.alabel(idna.uts46_remap(label, False, False)))
        except idna.IDNAError as exc:
            if exc.args and exc.args[0] == "Label too long":
                raise dns.name.LabelTooLong from None
            raise _IDNAException(idna_exception=exc) from None


def _idna_codec() -> dns.name.IDNACodec:
    try:
        import idna  # noqa: F401
    except ImportError:  # the standard library's IDNA 2003 still gives A-labels
        return dns.name.IDNA_2003_Practical
    # cast: the codec's __init__ is IDNACodec's, which dnspython leaves unannotated.
    return cast(Callable[[], dns.name.IDNACodec], _Idna2008)()


#: The codec for every name a user writes: U-labels in, A-labels everywhere out.
IDNA = _idna_codec()

# BIND versions we support, mapped to the image tag of internetsystemsconsortium/bind9.
SUPPORTED_VERSIONS: dict[str, str] = {"9.18": "9.18", "9.20": "9.20"}

TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1")

# Always used with fullmatch: `$` would also match before a trailing newline.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_RFC1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
# The Kubernetes resource.Quantity grammar: signed number, then a binary-SI,
# decimal-SI or decimal-exponent suffix (https://kubernetes.io/docs/reference/
# kubernetes-api/common-definitions/quantity/).
_QUANTITY = re.compile(
    r"[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?"
)
# A DNS hostname label (RFC 952/1123), what BIND's check-names accepts.
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?")

#: Largest TTL BIND keeps (RFC 2181 section 8); above it, BIND sets the TTL to 0.
MAX_TTL = 2**31 - 1


class ConfigIssue(BaseModel):
    """One thing wrong with the input (or worth a warning), where it is, what to do."""

    model_config = ConfigDict(frozen=True)

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class TopologyError(Exception):
    """All the problems found in a stack's input, raised before anything is registered."""

    def __init__(self, issues: Iterable[ConfigIssue], warnings: Iterable[ConfigIssue] = ()):
        self.issues = sorted(set(issues), key=lambda i: (i.path, i.message))
        self.warnings = sorted(set(warnings), key=lambda i: (i.path, i.message))
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{len(self.issues)} problem(s) in the stack configuration:"]
        lines += [f"  - {issue}" for issue in self.issues]
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines += [f"  - {issue}" for issue in self.warnings]
        return "\n".join(lines)


# --------------------------------------------------------------------------- helpers


def dns1123_name(value: str) -> str:
    if len(value) > 63 or not _DNS1123_LABEL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label; use lower-case letters, digits and '-', "
            "start and end with a letter or digit, at most 63 characters (e.g. 'primary-dns')"
        )
    return value


def rfc1035_name(value: str) -> str:
    """An instance name: it names a Service, and Service names are RFC 1035 labels."""
    if len(value) > 63 or not _RFC1035_LABEL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label that starts with a letter (RFC 1035, as "
            "Kubernetes Service names must be); use lower-case letters, digits and '-', "
            "start with a letter, end with a letter or digit, at most 63 characters "
            "(e.g. 'primary-dns')"
        )
    return value


def is_hostname(name: Any, *, wildcard: bool = False) -> bool:
    """True when a dnspython name is a hostname as BIND's check-names requires."""
    labels = [lbl.decode("ascii", "replace") for lbl in name.labels if lbl]
    if wildcard and labels and labels[0] == "*":
        labels = labels[1:]
    return all(_HOST_LABEL.fullmatch(lbl) for lbl in labels)


def quantity(value: Any) -> Any:
    """A Kubernetes quantity ('100m', '128Mi', '1.5', 2); numbers become strings."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity; write e.g. '100m' or '128Mi'")
    if isinstance(value, (int, float)):
        value = str(value)
    if isinstance(value, str) and not _QUANTITY.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a Kubernetes quantity; write a number with an optional "
            "suffix: cpu as '500m' or '2', memory as '128Mi', '1Gi' or '512M'"
        )
    if isinstance(value, str) and value.startswith("-"):
        raise ValueError(f"{value!r} is negative; resources must be 0 or more")
    return value


def ttl_value(value: int | None) -> int | None:
    if value is not None and value > MAX_TTL:
        raise ValueError(
            f"TTL {value} is above {MAX_TTL} (2^31-1), the largest BIND keeps (RFC 2181; "
            f"BIND would set it to 0); use at most {MAX_TTL}, e.g. 86400 for a day"
        )
    return value


def check_labels(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    """Return (key, problem) pairs for labels Kubernetes would reject."""
    problems = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (
            (prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)))
            or len(name) > 63
            or not _LABEL_NAME.fullmatch(name)
        ):
            problems.append(
                (
                    key,
                    f"label key {key!r} is not valid; use [prefix/]name with alphanumerics, "
                    "'-', '_' or '.', at most 63 characters in the name",
                )
            )
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            problems.append(
                (
                    key,
                    f"label value {value!r} is not valid; use at most 63 alphanumerics, "
                    "'-', '_' or '.', beginning and ending with an alphanumeric",
                )
            )
    return problems


@functools.lru_cache(maxsize=65536)
def parse_server(value: str, default_port: int = 53) -> tuple[str, int]:
    """Parse 'IP', 'IP:port', '[v6]:port' or 'v6' into (ip, port).

    Cached: 10,000 zones name the same few servers, each asked for several times
    (named.conf, NetworkPolicy, the gate's and the serials' targets)."""
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


_OPEN_TRANSFER_FIX = (
    "lets any address on the Internet copy the whole zone; remove it and let the TSIG key "
    "guard transfers ('key transfer-key', the primary's default when allowTransfer is "
    "absent), adding CIDRs of known secondaries only if they cannot sign"
)


def _transfer_entry(value: str) -> str:
    if value.startswith("key "):
        return "key " + value[4:].strip()
    if value.strip().lower() == "any":
        raise ValueError(f"allowTransfer 'any' {_OPEN_TRANSFER_FIX}")
    network = _cidr(value)
    if ipaddress.ip_network(network).prefixlen == 0:
        raise ValueError(f"allowTransfer {value!r} {_OPEN_TRANSFER_FIX}")
    return network


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
    # Secondaries: the longest a replica waits before asking the primaries for the SOA,
    # whatever the zone's SOA refresh says (BIND's max-refresh-time). NOTIFY sent to a
    # Service address reaches one replica; the others catch up within this bound.
    maxRefreshSeconds: Annotated[int, Field(strict=True, ge=1, le=2419200)] = 60

    @field_validator("recursion")
    @classmethod
    def _no_recursion(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                "recursion must be false on an authoritative server; remove the key or set "
                "it to false (run a separate resolver for recursion)"
            )
        return value


Quantity = Annotated[str, BeforeValidator(quantity)]


class ResourceList(_Strict):
    cpu: Quantity | None = None
    memory: Quantity | None = None


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
    # Where the pinned address goes: spec.loadBalancerIP (deprecated upstream, still read
    # by most controllers) or an annotation of the controller (MetalLB's
    # `metallb.io/loadBalancerIPs`, which refuses both at once).
    loadBalancerIPAnnotation: str | None = None
    # Local keeps the client's source address (ACLs, NetworkPolicy ipBlocks, NOTIFY
    # sources stay meaningful) and spares a second hop; LoadBalancer Services only.
    externalTrafficPolicy: Literal["Local", "Cluster"] | None = None
    annotations: dict[str, str] = Field(default_factory=dict)

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
        if self.loadBalancerIPAnnotation and not self.loadBalancerIP:
            raise ValueError("loadBalancerIPAnnotation is set without loadBalancerIP; set the "
                             "address to pin, or remove loadBalancerIPAnnotation")
        if self.externalTrafficPolicy and self.type != "LoadBalancer":
            raise ValueError("externalTrafficPolicy applies to type LoadBalancer only; "
                             "remove it or set type: LoadBalancer")
        return self

    @property
    def fixed_address(self) -> str | None:
        """The address other instances and the gate use for this instance, if fixed."""
        return self.loadBalancerIP or self.clusterIP


def _pinned_image(value: str) -> str:
    name = value.rsplit("/", 1)[-1]
    if "@sha256:" not in value and (":" not in name or name.endswith(":latest")):
        raise ValueError(
            f"image {value!r} is not pinned to a version; add a tag such as "
            "'prometheuscommunity/bind-exporter:v0.8.0' (or a digest), never ':latest'")
    return value


class MetricsSpec(_Strict):
    """BIND's statistics exported for Prometheus: a bind_exporter sidecar in every pod
    reading named's statistics channel on 127.0.0.1:8053 (off by default)."""

    enabled: bool = False
    exporterImage: Annotated[str, AfterValidator(_pinned_image)] = (
        "prometheuscommunity/bind-exporter:v0.8.0")
    port: int = Field(default=9119, ge=1024, le=65535)
    # A ServiceMonitor (Prometheus Operator) instead of the prometheus.io/* annotations.
    serviceMonitor: bool = False
    # Who may scrape the port (NetworkPolicy); empty: any source.
    allowFrom: list[Cidr] = Field(default_factory=list)
    # Alerts and a dashboard (bind9_topology/render/alerts.py): one set per stack, so
    # only the stack's `metrics` sets these (an instance's `metrics` may not).
    alerts: bool = Field(default=False, description=(
        "Prometheus alerting rules (a PrometheusRule with serviceMonitor, else a ConfigMap "
        "of rules) and a Grafana dashboard ConfigMap for the stack's exporters."))
    lagMinutes: int = Field(default=10, ge=1, le=1440, description=(
        "Minutes a secondary may serve a zone below the newest serial, and the window in "
        "which a failed transfer alerts, before the alert fires."))
    podLabel: str = Field(default="pod", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", description=(
        "The scrape's label holding the pod name (the Prometheus Operator and the "
        "prometheus-community chart's kubernetes-pods job: pod); the rules select the "
        "stack's pods by it."))

    @field_validator("port")
    @classmethod
    def _not_dns_or_stats(cls, value: int) -> int:
        if value == 8053:
            raise ValueError("port 8053 is named's statistics channel; pick another (9119)")
        return value


class AgentSpec(_Strict):
    """The in-pod agent (bind9_topology/pod/agent.py), a sidecar in every pod: on a
    secondary it relays NOTIFY to the instance's other pods, on a primary it applies a
    changed zone ConfigMap with `rndc reload` instead of restarting the pods."""

    enabled: bool = True
    # None: the instance's own image; it needs python3 with dnspython, and rndc (the
    # image of cluster/image has them; internetsystemsconsortium/bind9 has no python3).
    image: Annotated[str | None, AfterValidator(
        lambda v: None if v is None else _pinned_image(v))] = None
    # The loopback port of the agent's NOTIFY listener (secondaries) and named's rndc
    # channel (primaries), both inside the pod only.
    notifyPort: int = Field(default=5354, ge=1024, le=65535)
    controlPort: int = Field(default=953, ge=1, le=65535)

    @model_validator(mode="after")
    def _ports_apart(self) -> AgentSpec:
        taken = {53: "DNS", 8053: "named's statistics channel"}
        for name in ("notifyPort", "controlPort"):
            port = getattr(self, name)
            if port in taken:
                raise ValueError(f"agent.{name} {port} is {taken[port]}'s port; pick another")
        if self.notifyPort == self.controlPort:
            raise ValueError("agent.notifyPort and agent.controlPort must differ")
        return self


class Instance(_Strict):
    name: str
    role: Literal["primary", "secondary"]
    labels: dict[str, str] = Field(default_factory=dict)
    replicas: Annotated[int, Field(strict=True)] = 1
    version: str = "9.18"
    config: InstanceConfig = InstanceConfig()
    resources: Resources = Resources()
    service: ServiceSpec = ServiceSpec()

    _name = field_validator("name")(classmethod(lambda cls, v: rfc1035_name(v)))

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
    # The stack's `metrics`, replaced for this instance.
    metrics: MetricsSpec | None = None

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
    refresh: int = Field(default=3600, ge=1, le=MAX_TTL)
    retry: int = Field(default=600, ge=1, le=MAX_TTL)
    expire: int = Field(default=1209600, ge=1, le=MAX_TTL)
    negativeTtl: int = Field(default=300, ge=0, le=86400)

    @field_validator("adminEmail")
    @classmethod
    def _admin_email(cls, value: str) -> str:
        local, at, domain = value.strip().partition("@")
        hint = "write it as 'hostmaster@example.com'"
        if value != value.strip() or any(c.isspace() for c in value):
            raise ValueError(f"adminEmail {value!r} contains whitespace; {hint}")
        if at:
            if not local or not domain.rstrip(".") or "@" in domain:
                raise ValueError(f"adminEmail {value!r} needs a mailbox and a domain; {hint}")
            if "." not in domain.rstrip("."):
                raise ValueError(
                    f"adminEmail {value!r} has no domain ({domain!r} is a single label); {hint}"
                )
        elif len([part for part in value.rstrip(".").split(".") if part]) < 3:
            # SOA RNAME form (hostmaster.example.com): the first label is the mailbox.
            raise ValueError(f"adminEmail {value!r} has no domain; {hint}")
        return value

    def timer_warnings(self) -> list[tuple[str, str]]:
        """(field, message) for SOA timers that contradict each other (RFC 1912 2.2)."""
        out = []
        if self.retry >= self.refresh:
            out.append(("retry", (
                f"retry ({self.retry}) is not below refresh ({self.refresh}): secondaries "
                "retry a failed refresh no sooner than the next refresh; make retry a "
                "fraction of refresh (e.g. refresh 3600, retry 600)")))
        if self.expire < self.refresh + self.retry:
            out.append(("expire", (
                f"expire ({self.expire}) is below refresh + retry ({self.refresh + self.retry}): "
                "secondaries stop answering for the zone before they have even retried; make "
                "expire much larger (e.g. 1209600, two weeks)")))
        elif self.expire < 7 * self.refresh:
            out.append(("expire", (
                f"expire ({self.expire}) is less than 7 refresh intervals ({7 * self.refresh}): "
                "a short primary outage would take the zone off the secondaries; RFC 1912 "
                "suggests 2-4 weeks (e.g. 1209600)")))
        return out

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

    _ttl = field_validator("ttl")(classmethod(lambda cls, v: ttl_value(v)))

    @field_validator("type")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


class InstanceSelector(_Strict):
    matchLabels: dict[str, str] = Field(default_factory=dict)

    def matches(self, labels: Mapping[str, str]) -> bool:
        # every (key, value) of matchLabels among the labels' (one C-level subset test)
        return self.matchLabels.items() <= labels.items()


class SecondaryConfig(_Strict):
    primaryServers: list[Server] = Field(default_factory=list)

    @property
    def servers(self) -> list[tuple[str, int]]:
        return [parse_server(v) for v in self.primaryServers]


class DnssecSpec(_Strict):
    """Sign a primary zone (components/dnssec.py): `policy` names the dnssec-policy block."""

    policy: str

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][-a-z0-9_]{0,62}", value):
            raise ValueError(
                f"{value!r} is not a policy name; use lowercase letters, digits, '-' and '_'")
        if value in ("default", "insecure", "none"):
            raise ValueError(
                f"{value!r} is one of BIND's own policies; name your own (e.g. 'signed'): the "
                "project renders it with the keys it generated and keeps")
        return value


#: Zone._zone_name's fast path: labels of 1-63 characters it accepts as they are.
_PLAIN_ZONE_NAME = re.compile(
    r"[a-z0-9_](?:[-a-z0-9_]{0,61}[a-z0-9])?(?:\.[a-z0-9_](?:[-a-z0-9_]{0,61}[a-z0-9])?)*")


class Zone(_Strict):
    name: str | None = None  # the DNSZone's metadata.name; derived from zoneName when absent
    zoneName: str
    type: Literal["primary", "secondary"]
    instanceSelector: InstanceSelector
    secondaryConfig: SecondaryConfig | None = None
    soaRecord: SoaRecord | None = None
    ttl: int = Field(default=3600, ge=0)
    records: list[Record] = Field(default_factory=list)

    _ttl = field_validator("ttl")(classmethod(lambda cls, v: ttl_value(v)))
    recordsFile: str | None = None
    alsoNotify: list[Server] = Field(default_factory=list)
    # Opt-in DNSSEC signing (primary zones only: secondaries transfer the signed zone).
    dnssec: DnssecSpec | None = None

    @model_validator(mode="after")
    def _dnssec_on_primary(self) -> Zone:
        if self.dnssec is not None and self.type != "primary":
            raise ValueError(
                "dnssec is set on a secondary zone; set it on the primary zone only: "
                "secondaries transfer the signed zone and never sign")
        return self

    @field_validator("zoneName")
    @classmethod
    def _zone_name(cls, value: str) -> str:
        text = value.strip().rstrip(".").lower()
        # The usual name (ASCII letters, digits, '-', '_'; no '--', where IDNA has a say)
        # is its own answer: dnspython is asked about the others (tests compare the two).
        if len(text) <= 253 and "--" not in text and _PLAIN_ZONE_NAME.fullmatch(text):
            return text
        try:
            # U-labels (bücher.example) become A-labels (xn--bcher-kva.example), the form
            # written everywhere: named.conf, zone files, ConfigMap keys.
            name = dns.name.from_text(text, idna_codec=IDNA)
        except Exception as exc:
            raise ValueError(
                f"{value!r} is not a valid zone name ({exc}); use letters, digits and '-' "
                "per label, labels separated by single dots, e.g. 'example.com'"
            ) from None
        labels = [lbl.decode() for lbl in name.labels if lbl]
        if not labels or any(not re.fullmatch(r"[a-z0-9_]([-a-z0-9_]*[a-z0-9])?", lbl)
                             for lbl in labels):
            raise ValueError(
                f"{value!r} is not a valid zone name; use letters, digits and '-' per label, "
                "e.g. 'example.com'"
            )
        return ".".join(labels)

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
        if not re.fullmatch(r"[A-Za-z0-9][-A-Za-z0-9._]*", value):
            raise ValueError(f"TSIG key name {value!r} is not valid; use e.g. 'transfer-key'")
        return value


class GateSpec(_Strict):
    enabled: bool = True
    deadlineSeconds: int = Field(default=300, ge=1)
    pollIntervalSeconds: float = Field(default=1.0, gt=0)
    # Where the gate reaches an address of the config ('ip' or 'ip:port' -> 'ip:port'),
    # e.g. {"10.0.1.10": "127.0.0.1:15301"} when the servers run locally.
    addressMap: dict[str, Server] = Field(default_factory=dict)
    # The servers are those `python -m components local up --stack <stack>` runs: the
    # program reads their loopback addresses from .local-run/state.json (the local stack).
    localRunner: bool = False
    # How the gate reaches the instances this stack deploys: every pod of each one
    # through a port-forward of the Kubernetes API (works wherever `pulumi up` reaches
    # the API), or their fixed service addresses directly (needs a network path to
    # them: the local runner, or a runner inside the VPC), or every pod at its own
    # address (pod-network: the pods listed through the API, asked at their pod IPs, for
    # a runner the pod network routes to: no API streams). Addresses the project does
    # not own (external primaries) are always probed directly.
    via: Literal["kubernetes-api", "pod-network", "direct"] = "kubernetes-api"


# --------------------------------------------------------------------------- catalog zones
# (RFC 9432, schema version 2; the logic is in components/catalog.py)


def _default_selector(role: str) -> Any:
    return lambda: InstanceSelector(matchLabels={"dns-role": role})


class CatalogSpec(_Strict):
    """The primary stack's catalog: a zone the primaries serve listing the member zones."""

    zoneName: str
    # The primary instances that serve the catalog zone (default: every primary).
    instanceSelector: InstanceSelector = Field(default_factory=_default_selector("primary"))
    # Member zone names (primary zones of this stack); default: every primary zone.
    members: list[str] | None = None
    # Where NOTIFY for the catalog goes; default: every member zone's alsoNotify.
    alsoNotify: list[Server] | None = None
    soaRecord: SoaRecord | None = None
    ttl: int = Field(default=3600, ge=0, le=MAX_TTL)
    # Write the primaries (fixed addresses, port 53) and the TSIG key name into the
    # catalog as primaries.ext properties; they override the secondaries' default-primaries.
    advertisePrimaries: bool = False
    # The gate checks that every alsoNotify address serves each member zone.
    verifySecondaries: bool = True

    _zone = field_validator("zoneName")(classmethod(lambda cls, v: Zone._zone_name(v)))


def _no_catalog(value: Any) -> Any:
    """Pulumi.yaml's default for `catalog` is {}: no catalog."""
    return None if value == {} else value


class CatalogConsumer(_Strict):
    """A region stack's catalog: its secondaries serve every member the catalog lists."""

    zoneName: str
    # The primaries' IPs; with primaryStack, taken from the primary stack's outputs instead.
    primaryServers: list[Server] = Field(default_factory=list)
    instanceSelector: InstanceSelector = Field(default_factory=_default_selector("secondary"))

    _zone = field_validator("zoneName")(classmethod(lambda cls, v: Zone._zone_name(v)))

    @property
    def servers(self) -> list[tuple[str, int]]:
        return [parse_server(v) for v in self.primaryServers]


class StackSpec(_Strict):
    """One region stack, as written in Pulumi.<stack>.yaml (without the project prefix)."""

    # The descriptions are the stack config reference: `python -m components schema
    # --write` writes them, the types and the defaults into Pulumi.yaml's `config:` block
    # and the README's table (components/schema.py; a test fails when those drift).
    region: str = Field(description=(
        "Region of this stack; the default `region` label of every instance."))
    environment: str = Field(default="production", description=(
        "`environment` label of every instance (e.g. production, staging)."))
    namespace: str = Field(default="dns-system", description=(
        "Kubernetes namespace the instances are deployed to."))
    instances: list[Instance] = Field(default_factory=list, description=(
        "Bind9Instance specs (below): name, role (primary|secondary), labels (dns-role, "
        'region, environment), replicas, version ("9.18"|"9.20"), config {recursion, '
        "allowQuery, allowTransfer, peerCidrs, maxRefreshSeconds}, resources, service "
        "{type, loadBalancerIP | clusterIP, loadBalancerIPAnnotation, externalTrafficPolicy, "
        "annotations}, image, metrics."))
    zones: list[Zone] = Field(default_factory=list, description=(
        "DNSZone specs (below): zoneName, type (primary|secondary), "
        "instanceSelector.matchLabels, secondaryConfig.primaryServers, soaRecord, ttl, "
        "records or recordsFile, alsoNotify."))
    zonesFiles: list[str] = Field(default_factory=list, description=(
        "Paths (relative to the project directory) of YAML files, or directories of them, "
        "each file a list of zones in the very shape of `zones`; they join the inline "
        "zones. For many zones: the engine passes the whole stack config in one environment "
        "variable, capped at 128 KiB (see \"Many zones: zonesFiles\")."))
    bindyManifests: list[str] = Field(default_factory=list, description=(
        "Paths of bindy YAML documents to load as well, of any of its three dialects "
        "(see \"Moving off bindy\"): dns.firestoned.io/v1alpha1 (Bind9Instance, DNSZone), "
        "bindy.firestoned.io/v1alpha1 or v1beta1 (clusters, instances, zones, record kinds)."))
    tsigKey: TsigKeySpec = Field(default=TsigKeySpec(), description=(
        "Name and algorithm of the TSIG key that signs transfers and NOTIFY."))
    gate: GateSpec = Field(default=GateSpec(), description=(
        "Transfer gate: enabled, deadlineSeconds, pollIntervalSeconds, via "
        "(kubernetes-api: every pod through a port-forward of the API, the default; "
        "pod-network: every pod listed through the API and asked at its pod IP, where "
        "the pod network is routed to the runner; direct: the fixed service addresses, "
        "the default where no cluster is asked: "
        "kubernetesRenderDir or localRunner), addressMap (stack-config address -> "
        "host:port the gate probes instead) and localRunner (probe only the servers of "
        "`local up --stack <this stack>`)."))
    maxZoneBytes: int = Field(default=64 * 1024 * 1024, ge=1024, description=(
        "Largest rendered zone accepted (64 MiB); bigger zones are an error before deploy."))
    kubernetesRenderDir: str | None = Field(default=None, description=(
        "When set, the Kubernetes provider writes manifests to this directory instead of "
        "applying them to a cluster (used by the `local` stack)."))
    # Catalog zones (components/catalog.py): produced here, or consumed here.
    catalog: Annotated[CatalogSpec | None, BeforeValidator(_no_catalog)] = Field(
        default=None, description=(
            "Catalog zone (RFC 9432) the primaries serve, listing this stack's primary "
            "zones (see \"Catalog zones\"): zoneName, members, alsoNotify, "
            "advertisePrimaries, verifySecondaries, instanceSelector, soaRecord, ttl."))
    catalogs: list[CatalogConsumer] = Field(default_factory=list, description=(
        "Catalogs this stack's secondaries consume (their member zones come and go with "
        "the catalog): zoneName, primaryServers, instanceSelector."))
    primaryStack: str | None = Field(default=None, description=(
        "Region stacks: take the primaries' addresses from this stack's `instances` output "
        "(pulumi.StackReference, e.g. organization/bind9-topology/prod) instead of each "
        "secondary zone's secondaryConfig.primaryServers; the two forms are exclusive."))
    metrics: MetricsSpec = Field(default=MetricsSpec(), description=(
        "Prometheus metrics (see \"Metrics\"): enabled (an exporter sidecar reading named's "
        "statistics channel on 127.0.0.1:8053), exporterImage (pinned), port (9119), "
        "serviceMonitor (a ServiceMonitor instead of prometheus.io annotations), allowFrom "
        "(CIDRs that may scrape), alerts (false; true: alerting rules and a Grafana "
        "dashboard, see \"Alerts and dashboard\"), lagMinutes (10), podLabel (pod). An "
        "instance's own `metrics` replaces it (but for alerts, lagMinutes, podLabel: the "
        "stack's only)."))

    agent: AgentSpec = Field(default=AgentSpec(), description=(
        "The in-pod agent (see \"Every pod, at once\"): enabled (true), image (default: "
        "the instance's; needs python3 with dnspython and rndc), notifyPort (5354), "
        "controlPort (953). It relays NOTIFY to every pod of a secondary instance and "
        "applies a changed zone to the primaries' pods with rndc instead of a restart."))

    _ns = field_validator("namespace")(classmethod(lambda cls, v: dns1123_name(v)))
    _primary_stack = field_validator("primaryStack")(
        classmethod(lambda cls, v: stack_reference_name(v)))

    @model_validator(mode="before")
    @classmethod
    def _gate_via_default(cls, data: Any) -> Any:
        """No cluster to ask when manifests go to a directory or the local runner serves:
        there the gate probes directly unless gate.via says otherwise."""
        if isinstance(data, dict):
            gate = data.get("gate")
            no_cluster = bool(data.get("kubernetesRenderDir")) or (
                isinstance(gate, dict) and gate.get("localRunner") is True)
            if no_cluster and (gate is None or (isinstance(gate, dict) and "via" not in gate)):
                data = {**data, "gate": {**(gate or {}), "via": "direct"}}
        return data

    @model_validator(mode="after")
    def _gate_via(self) -> StackSpec:
        if (self.kubernetesRenderDir or self.gate.localRunner) and (
                self.gate.via != "direct"):
            raise ValueError(
                f"gate.via is {self.gate.via} but this stack deploys to no cluster "
                "(kubernetesRenderDir or gate.localRunner is set); set gate.via to direct")
        return self

    def instances_for(self, zone: Zone) -> list[Instance]:
        return [i for i in self.instances if zone.instanceSelector.matches(i.labels)]

    def metrics_for(self, instance: Instance) -> MetricsSpec:
        return instance.metrics or self.metrics

    def zones_for(self, instance: Instance) -> list[Zone]:
        # Asked a dozen times per instance (render, manifests, plan, alerts): at 10,000
        # zones each answer is a pass over 20,000 selectors, so it is kept per (zone list,
        # instance), both frozen; a copy of the spec with other zones has another list.
        key = (id(self.zones), id(instance))
        got = _ZONES_FOR.get(key)
        if got is not None and got[0] is self.zones and got[1] is instance \
                and got[2] == len(self.zones):
            return list(got[3])
        found = [z for z in self.zones if z.instanceSelector.matches(instance.labels)]
        if len(_ZONES_FOR) >= 1024:
            _ZONES_FOR.clear()
        _ZONES_FOR[key] = (self.zones, instance, len(self.zones), found)
        return list(found)


#: StackSpec.zones_for's answers: (id of the zone list, id of the instance) -> (the list,
#: the instance, its length then, the zones); the objects are kept so that ids stay theirs.
_ZONES_FOR: dict[tuple[int, int], tuple[list[Zone], Instance, int, list[Zone]]] = {}

_STACK_PART = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_.]*")


def stack_reference_name(value: str | None) -> str | None:
    """`organization/<project>/<stack>` (the self-managed backend's naming; `<org>/...` on
    Pulumi Cloud) or a bare `<stack>` of this project."""
    if value is None:
        return None
    parts = value.split("/")
    if len(parts) not in (1, 3) or not all(_STACK_PART.fullmatch(p) for p in parts):
        raise ValueError(
            f"{value!r} is not a stack name; write 'organization/{PROJECT}/prod' (the "
            "self-managed backend's naming) or the bare stack name 'prod'")
    return value


def format_loc(prefix: str, loc: Iterable[int | str]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path and not path.endswith(":") else "") + str(part)
    return path


def unwrap_type(tp: Any) -> Any:
    """Strip Annotated[...] and `| None` from a type (a union of several is returned as is)."""
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
        tp = unwrap_type(tp)
        if _is_model(tp) and isinstance(part, str) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]
        else:
            return None
    tp = unwrap_type(tp)
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
    got = _describe(error.get("input"))
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return (f"expected a mapping (key: value lines), got {got}; write it as a "
                "mapping, e.g. 'key: value' under this key instead of '- ' items")
    if kind == "list_type":
        return f"expected a list, got {got}; write each entry on its own '- ' line"
    if kind == "string_type":
        return f"expected a string, got {got}; quote it if it is meant as text"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {got}"
    return msg


def _describe(value: Any) -> str:
    from bind9_topology.config.safeyaml import describe

    return describe(value)


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
