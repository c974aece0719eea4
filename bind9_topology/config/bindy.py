"""bindy documents in, stack config out: the three dialects of the bindy operator.

- ``dns.firestoned.io/v1alpha1`` (legacy): ``Bind9Instance`` and ``DNSZone`` whose spec is
  already this project's shape (``instanceSelector``, ``secondaryConfig``, records inline
  or in ``recordsFile``); converted as it is.
- ``bindy.firestoned.io/v1alpha1``: ``Bind9Cluster``/``ClusterBind9Provider``,
  ``Bind9Instance`` with ``clusterRef``, ``role`` and ``primaryServers``, ``DNSZone`` with
  ``clusterRef`` and a ``soaRecord``, and record kinds that name their zone by ``zoneRef``.
- ``bindy.firestoned.io/v1beta1``: the same cluster kinds, ``DNSZone`` with ``nameServers``,
  ``recordsFrom`` and ``bind9InstancesFrom`` label selectors, and record kinds
  (``ARecord`` ``ipv4Addresses``, ``AAAARecord`` ``ipv6Addresses``, ``CNAMERecord``
  ``target``, ``MXRecord``, ``TXTRecord``, ``NSRecord``, ``SRVRecord``, ``CAARecord``) that
  zones select by label.

Each document shape is a pydantic model that forbids unknown keys, so a key bindy's CRD
does not have is reported with its file, document index and path. A key bindy has and
this project does not map is reported too, by name: as an error when dropping it would
change what is served, as a warning otherwise. Nothing is dropped silently.

The clusters' model is translated into this project's: every instance of a cluster
carries the label ``bindy.firestoned.io/cluster``; a zone becomes a primary zone on the
primaries that serve it and a secondary zone (transferring from the instance's
``primaryServers``, or from the primaries' fixed addresses) on the secondaries. As bindy
does, a ``Bind9Cluster`` with ``primary.replicas: N`` runs N managed instances named
``<cluster>-primary-<i>``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import dns.name
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bind9_topology.config import safeyaml
from bind9_topology.config.model import PROJECT, ConfigIssue, _friendly, format_loc

PREFIX = f"{PROJECT}:"
LEGACY_API = "dns.firestoned.io/v1alpha1"
ALPHA_API = "bindy.firestoned.io/v1alpha1"
BETA_API = "bindy.firestoned.io/v1beta1"
#: Kept for callers of the former topology.BINDY_API.
BINDY_API = LEGACY_API
DIALECTS = (LEGACY_API, ALPHA_API, BETA_API)

# Labels bindy itself puts on the instances a cluster manages (src/labels.rs).
CLUSTER_LABEL = "bindy.firestoned.io/cluster"
ROLE_LABEL = "bindy.firestoned.io/role"
MANAGED_BY_LABEL = "bindy.firestoned.io/managed-by"
PART_OF_LABEL = "app.kubernetes.io/part-of"
#: Set only when no label selector picks exactly the instances a zone has.
INSTANCE_LABEL = "bindy.firestoned.io/instance"

RECORD_KINDS = ("ARecord", "AAAARecord", "CNAMERecord", "MXRecord", "TXTRecord", "NSRecord",
                "SRVRecord", "CAARecord")

Severity = Literal["error", "warning"]
Unmapped = tuple[Severity, str]


# --------------------------------------------------------------------------- shapes


class _Doc(BaseModel):
    """A part of a bindy document: unknown keys are refused, as the CRD's schema does."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)
    #: Keys bindy has and this project does not map: key -> (severity, why, what to do).
    unmapped: ClassVar[dict[str, Unmapped]] = {}


_NO_RNDC: Unmapped = (
    "warning", "not mapped: bind9-topology does not drive named with rndc; a change "
            "rolls the Deployment, and transfers use the stack's TSIG key (tsigKey)")
_NO_BINDCAR: Unmapped = (
    "warning", "not mapped: bind9-topology runs no bindcar API sidecar; records "
               "come from the stack config")
_NO_VOLUMES: Unmapped = (
    "warning", "not mapped: the pods mount only their ConfigMaps, the TSIG Secret "
               "and emptyDirs; secondaries transfer their zones again after a restart")
_NO_PULL: Unmapped = (
    "warning", "not mapped: the Deployment uses the cluster's default pull policy and "
            "no pull secrets; mirror the image or patch the service account")
_NO_CONFIGMAPS: Unmapped = (
    "error", "cannot be mapped: bind9-topology renders named.conf itself; move "
                  "what the ConfigMap adds into the stack config, then remove the reference")
_NO_LISTEN: Unmapped = (
    "warning", "not mapped: named listens on every address of the pod")
_NO_FORWARDERS: Unmapped = (
    "warning", "not mapped: recursion is off on these authoritative servers, "
                  "so forwarders would never be used")


class Meta(_Doc):
    name: str
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    # What `kubectl get -o yaml` adds; bookkeeping of the API server, nothing to map.
    uid: Any = None
    resourceVersion: Any = None
    generation: Any = None
    creationTimestamp: Any = None
    managedFields: Any = None
    finalizers: Any = None
    ownerReferences: Any = None
    selfLink: Any = None

    unmapped: ClassVar[dict[str, Unmapped]] = {
        "annotations": ("warning", "not mapped: annotations are not copied to the objects "
                        "bind9-topology creates")}


class LabelSelectorRequirement(_Doc):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


class LabelSelector(_Doc):
    matchLabels: dict[str, str] = Field(default_factory=dict)
    matchExpressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.matchLabels.items()) and all(
            e.matches(labels) for e in self.matchExpressions)


class SelectorEntry(_Doc):
    selector: LabelSelector


class ServiceTemplate(_Doc):
    annotations: dict[str, str] = Field(default_factory=dict)
    spec: dict[str, Any] = Field(default_factory=dict)

    unmapped: ClassVar[dict[str, Unmapped]] = {
        "annotations": ("warning", "not mapped: the Services bind9-topology creates carry no "
                        "annotations")}


class RoleConfig(_Doc):
    replicas: int | None = Field(default=None, ge=0)
    allowTransfer: list[str] | None = None
    service: ServiceTemplate | None = None
    rndcSecretRef: Any = None

    unmapped = {"rndcSecretRef": _NO_RNDC}


class RoleConfigBeta(RoleConfig):
    labels: dict[str, str] = Field(default_factory=dict)
    rndcKey: Any = None

    unmapped = {**RoleConfig.unmapped, "rndcKey": _NO_RNDC}


class Dnssec(_Doc):
    validation: bool | None = None
    enabled: bool | None = None  # written in bindy's examples; not in the CRD's schema
    signing: dict[str, Any] | None = None

    unmapped: ClassVar[dict[str, Unmapped]] = {
        "validation": ("warning", "not mapped: DNSSEC validation applies to recursion, which "
                       "is off on these authoritative servers"),
        "enabled": ("warning", "not mapped (and not in bindy's CRD schema): zones are served "
                    "unsigned unless signing is set"),
    }


class GlobalConfig(_Doc):
    recursion: bool | None = None
    allowQuery: list[str] | None = None
    allowTransfer: list[str] | None = None
    dnssec: Dnssec | None = None
    forwarders: Any = None
    listenOn: Any = None
    listenOnV6: Any = None
    rndcSecretRef: Any = None
    bindcarConfig: Any = None

    unmapped = {"forwarders": _NO_FORWARDERS, "listenOn": _NO_LISTEN, "listenOnV6": _NO_LISTEN,
                "rndcSecretRef": _NO_RNDC, "bindcarConfig": _NO_BINDCAR}


class ImageConfig(_Doc):
    image: str | None = None
    imagePullPolicy: Any = None
    imagePullSecrets: Any = None

    unmapped = {"imagePullPolicy": _NO_PULL, "imagePullSecrets": _NO_PULL}


class ClusterSpec(_Doc):
    """Bind9Cluster (namespaced) spec, bindy.firestoned.io/v1alpha1."""

    version: str | None = None
    primary: RoleConfig | None = None
    secondary: RoleConfig | None = None
    global_: GlobalConfig | None = Field(default=None, alias="global")
    image: ImageConfig | None = None
    acls: dict[str, Any] | None = None
    configMapRefs: Any = None
    rndcSecretRefs: Any = None
    volumes: Any = None
    volumeMounts: Any = None

    unmapped: ClassVar[dict[str, Unmapped]] = {
        "acls": ("error", "cannot be mapped: bind9-topology has no named ACLs; write the "
                 "CIDRs into allowQuery/allowTransfer instead of the ACL names"),
        "configMapRefs": _NO_CONFIGMAPS,
        "rndcSecretRefs": ("warning", "not mapped: transfers use the stack's one TSIG key "
                           "(tsigKey, tsigSecret set with pulumi config set --secret)"),
        "volumes": _NO_VOLUMES, "volumeMounts": _NO_VOLUMES,
    }


class ClusterSpecBeta(ClusterSpec):
    primary: RoleConfigBeta | None = None
    secondary: RoleConfigBeta | None = None


class ProviderSpec(ClusterSpec):
    """ClusterBind9Provider (cluster-scoped): a Bind9Cluster that names its namespace."""

    namespace: str | None = None


class ProviderSpecBeta(ClusterSpecBeta):
    namespace: str | None = None


class InstanceConfig(GlobalConfig):
    pass


class InstanceSpec(_Doc):
    clusterRef: str
    role: Literal["primary", "secondary"]
    replicas: int | None = Field(default=None, ge=1)
    version: str | None = None
    primaryServers: list[str] = Field(default_factory=list)
    config: InstanceConfig | None = None
    image: ImageConfig | None = None
    bindcarConfig: Any = None
    configMapRefs: Any = None
    rndcSecretRef: Any = None
    storage: Any = None
    volumes: Any = None
    volumeMounts: Any = None

    unmapped = {"bindcarConfig": _NO_BINDCAR, "configMapRefs": _NO_CONFIGMAPS,
                "rndcSecretRef": _NO_RNDC, "storage": _NO_VOLUMES, "volumes": _NO_VOLUMES,
                "volumeMounts": _NO_VOLUMES}


class InstanceSpecBeta(InstanceSpec):
    rndcKey: Any = None

    unmapped = {**InstanceSpec.unmapped, "rndcKey": _NO_RNDC}


class SoaSpec(_Doc):
    primaryNs: str
    adminEmail: str
    serial: int = Field(ge=0, le=2**32 - 1)
    refresh: int
    retry: int
    expire: int
    negativeTtl: int

    unmapped: ClassVar[dict[str, Unmapped]] = {
        "serial": ("warning", "not mapped: bind9-topology keeps serials itself (YYYYMMDDnn, "
                   "moving forward only when the content changes)")}


class NameServer(_Doc):
    hostname: str
    ipv4Address: str | None = None
    ipv6Address: str | None = None


class ZoneSpec(_Doc):
    """DNSZone spec, bindy.firestoned.io/v1alpha1."""

    zoneName: str
    clusterRef: str | None = None
    clusterProviderRef: str | None = None
    soaRecord: SoaSpec
    ttl: int | None = Field(default=None, ge=0)
    nameServerIps: dict[str, str] = Field(default_factory=dict)


class ZoneSpecBeta(ZoneSpec):
    recordsFrom: list[SelectorEntry] = Field(default_factory=list)
    nameServers: list[NameServer] = Field(default_factory=list)
    bind9InstancesFrom: list[SelectorEntry] = Field(default_factory=list)
    dnssecPolicy: str | None = None


class _RecordBase(_Doc):
    name: str
    ttl: int | None = Field(default=None, ge=0, le=2**31 - 1)

    def rdata(self) -> list[tuple[str, str]]:
        raise NotImplementedError


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _A(_RecordBase):
    def rdata(self) -> list[tuple[str, str]]:
        return [("A", a) for a in getattr(self, "ipv4Addresses", None) or [self.ipv4Address]]  # type: ignore[attr-defined]


class _AAAA(_RecordBase):
    def rdata(self) -> list[tuple[str, str]]:
        return [("AAAA", a) for a in getattr(self, "ipv6Addresses", None) or [self.ipv6Address]]  # type: ignore[attr-defined]


class _CNAME(_RecordBase):
    target: str

    def rdata(self) -> list[tuple[str, str]]:
        return [("CNAME", self.target)]


class _MX(_RecordBase):
    priority: int = Field(ge=0, le=65535)
    mailServer: str

    def rdata(self) -> list[tuple[str, str]]:
        return [("MX", f"{self.priority} {self.mailServer}")]


class _TXT(_RecordBase):
    text: list[str] = Field(min_length=1)

    def rdata(self) -> list[tuple[str, str]]:
        # One record of several strings, as bindy writes it (resolvers concatenate them).
        return [("TXT", " ".join(_quote(t) for t in self.text))]


class _NS(_RecordBase):
    nameserver: str

    def rdata(self) -> list[tuple[str, str]]:
        return [("NS", self.nameserver)]


class _SRV(_RecordBase):
    priority: int = Field(ge=0, le=65535)
    weight: int = Field(ge=0, le=65535)
    port: int = Field(ge=0, le=65535)
    target: str

    def rdata(self) -> list[tuple[str, str]]:
        return [("SRV", f"{self.priority} {self.weight} {self.port} {self.target}")]


class _CAA(_RecordBase):
    flags: int = Field(ge=0, le=255)
    tag: str
    value: str

    def rdata(self) -> list[tuple[str, str]]:
        return [("CAA", f"{self.flags} {self.tag} {_quote(self.value)}")]


class _ZoneRef(_Doc):
    zoneRef: str  # v1alpha1: the DNSZone's metadata.name


class ARecordAlpha(_A, _ZoneRef):
    ipv4Address: str


class AAAARecordAlpha(_AAAA, _ZoneRef):
    ipv6Address: str


class ARecordBeta(_A):
    ipv4Addresses: list[str] = Field(min_length=1)


class AAAARecordBeta(_AAAA):
    ipv6Addresses: list[str] = Field(min_length=1)


class CNAMERecordAlpha(_CNAME, _ZoneRef):
    pass


class MXRecordAlpha(_MX, _ZoneRef):
    pass


class TXTRecordAlpha(_TXT, _ZoneRef):
    pass


class NSRecordAlpha(_NS, _ZoneRef):
    pass


class SRVRecordAlpha(_SRV, _ZoneRef):
    pass


class CAARecordAlpha(_CAA, _ZoneRef):
    pass


SPEC_MODELS: dict[str, dict[str, type[_Doc]]] = {
    ALPHA_API: {
        "Bind9Cluster": ClusterSpec, "ClusterBind9Provider": ProviderSpec,
        "Bind9Instance": InstanceSpec, "DNSZone": ZoneSpec,
        "ARecord": ARecordAlpha, "AAAARecord": AAAARecordAlpha, "CNAMERecord": CNAMERecordAlpha,
        "MXRecord": MXRecordAlpha, "TXTRecord": TXTRecordAlpha, "NSRecord": NSRecordAlpha,
        "SRVRecord": SRVRecordAlpha, "CAARecord": CAARecordAlpha,
    },
    BETA_API: {
        "Bind9Cluster": ClusterSpecBeta, "ClusterBind9Provider": ProviderSpecBeta,
        "Bind9Instance": InstanceSpecBeta, "DNSZone": ZoneSpecBeta,
        "ARecord": ARecordBeta, "AAAARecord": AAAARecordBeta, "CNAMERecord": _CNAME,
        "MXRecord": _MX, "TXTRecord": _TXT, "NSRecord": _NS, "SRVRecord": _SRV,
        "CAARecord": _CAA,
    },
}

#: Hints for keys that bindy's guides write but its CRDs do not have (or another dialect has).
KEY_HINTS: dict[tuple[str, str], str] = {
    ("SRVRecord", "service"): "bindy's SRVRecord CRD has no 'service'; write name: "
                              "_<service>._<proto>, e.g. name: _xmpp-client._tcp",
    ("SRVRecord", "proto"): "bindy's SRVRecord CRD has no 'proto'; write name: "
                            "_<service>._<proto>, e.g. name: _xmpp-client._tcp",
    ("ARecord", "ipv4Address"): "v1beta1 takes a list: ipv4Addresses: ['192.0.2.1']",
    ("AAAARecord", "ipv6Address"): "v1beta1 takes a list: ipv6Addresses: ['2001:db8::1']",
    ("ARecord", "ipv4Addresses"): "bindy.firestoned.io/v1alpha1 takes one address: "
                                  "ipv4Address: 192.0.2.1 (or use v1beta1)",
    ("AAAARecord", "ipv6Addresses"): "bindy.firestoned.io/v1alpha1 takes one address: "
                                     "ipv6Address: 2001:db8::1 (or use v1beta1)",
}


# --------------------------------------------------------------------------- results


@dataclass
class Parsed:
    """One bindy.firestoned.io document, checked against its kind's shape."""

    at: str  # '<file>#<index>(<Kind>/<name>)', the prefix of every path in it
    api: str
    kind: str
    meta: Meta
    spec: Any


@dataclass
class Converted:
    """Stack-config dicts made from bindy documents, with where each came from."""

    instances: list[dict[str, Any]] = field(default_factory=list)
    zones: list[dict[str, Any]] = field(default_factory=list)
    instance_paths: list[str] = field(default_factory=list)
    zone_paths: list[str] = field(default_factory=list)
    issues: list[ConfigIssue] = field(default_factory=list)
    warnings: list[ConfigIssue] = field(default_factory=list)
    dialects: set[str] = field(default_factory=set)
    namespaces: set[str] = field(default_factory=set)


def _mapping(
    value: Any, at: str, what: str, issues: list[ConfigIssue]
) -> dict[str, Any] | None:
    """value if it is a mapping (None counts as empty); else an issue and None."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    issues.append(ConfigIssue(path=at, message=(
        f"expected {what} as a mapping (key: value lines), got {safeyaml.describe(value)}")))
    return None


def read_documents(path: Path, where: str) -> tuple[list[tuple[str, Any]], list[ConfigIssue]]:
    """The non-empty YAML documents of a file, each with its '<where>#<index>' label."""
    try:
        docs = safeyaml.load_file(path, all_documents=True)
    except FileNotFoundError:
        return [], [ConfigIssue(path=where, message=f"file not found: {path}")]
    except IsADirectoryError:
        return [], [ConfigIssue(path=where, message=(
            "is a directory; list each YAML file in it in bindyManifests"))]
    except yaml.YAMLError as exc:
        return [], [ConfigIssue(path=where, message=f"not valid YAML: {exc}")]
    except (ValueError, OSError) as exc:
        return [], [ConfigIssue(path=where, message=f"cannot read: {exc}")]
    return [(f"{where}#{n}", doc) for n, doc in enumerate(d for d in docs if d)], []


# --------------------------------------------------------------------------- legacy

#: What `kubectl get -o yaml` adds to metadata: the API server's bookkeeping.
_SERVER_METADATA = frozenset({"uid", "resourceVersion", "generation", "creationTimestamp",
                              "managedFields", "finalizers", "ownerReferences", "selfLink"})


def _missing_name(meta: Mapping[str, Any], at: str, kind: Any) -> ConfigIssue | None:
    """A document without metadata.name (or without metadata): the Kubernetes API refuses
    it, so it is refused here too, named `<file>#<index>(<Kind>)`."""
    name = meta.get("name")
    if isinstance(name, str) and name:
        return None
    got = ("is missing" if name is None else "is empty" if name == "" else
           f"is {safeyaml.describe(name)}, not a string")
    return ConfigIssue(path=f"{at}({kind}).metadata.name", message=(
        f"{got}: every Kubernetes object needs a name (the API server refuses the document "
        "without one); add metadata.name, e.g. name: primary-dns"))


def _legacy(
    doc: dict[str, Any], at: str, label: str, namespace: str | None, out: Converted
) -> None:
    """dns.firestoned.io/v1alpha1: the spec is this project's shape already."""
    issues = out.issues
    meta = _mapping(doc.get("metadata"), f"{at}.metadata", "metadata", issues)
    spec_in = _mapping(doc.get("spec"), f"{at}.spec", "spec", issues)
    if meta is None or spec_in is None:
        return
    if (unnamed := _missing_name(meta, at, doc.get("kind"))) is not None:
        issues.append(unnamed)
        return
    spec = dict(spec_in)
    for key in sorted(set(doc) - {"apiVersion", "kind", "metadata", "spec", "status"}):
        issues.append(ConfigIssue(path=f"{at}.{key}", message=(
            f"unknown key {key!r} in a Kubernetes document; valid keys: apiVersion, kind, "
            "metadata, spec (status is read and not used)")))
    for key in sorted(set(meta) - {"name", "namespace", "labels"} - _SERVER_METADATA):
        issues.append(ConfigIssue(path=f"{at}.metadata.{key}", message=(
            f"{key!r} is not mapped: bind9-topology takes name, namespace and labels from "
            "metadata; remove it")))
    if namespace and meta.get("namespace") not in (None, namespace):
        issues.append(ConfigIssue(path=f"{at}.metadata.namespace", message=(
            f"namespace {meta.get('namespace')!r} differs from the stack's namespace "
            f"{namespace!r}; set {PREFIX}namespace or change the document")))
    if isinstance(meta.get("namespace"), str):
        out.namespaces.add(meta["namespace"])
    if doc.get("kind") == "Bind9Instance":
        labels = _mapping(meta.get("labels"), f"{at}.metadata.labels", "labels", issues)
        if labels is None:
            return
        labels = dict(labels)
        spec.setdefault("role", labels.get("dns-role", "secondary"))
        out.instances.append({"name": meta.get("name"), "labels": labels, **spec})
        out.instance_paths.append(f"{label}#Bind9Instance/{meta.get('name')}.spec")
    elif doc.get("kind") == "DNSZone":
        out.zones.append({"name": meta.get("name"), **spec})
        out.zone_paths.append(f"{label}#DNSZone/{meta.get('name')}.spec")
    else:
        issues.append(ConfigIssue(path=f"{at}.kind", message=(
            f"expected Bind9Instance or DNSZone in {LEGACY_API} (for clusters and record "
            f"kinds use {BETA_API})")))


# --------------------------------------------------------------------------- parsing


def _alias_keys(model: type[BaseModel]) -> list[str]:
    return sorted(f.alias or name for name, f in model.model_fields.items())


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    from bind9_topology.config.model import _is_model, unwrap_type

    tp: Any = root
    for part in loc:
        tp = unwrap_type(tp)
        if _is_model(tp) and isinstance(part, str):
            fields = {f.alias or n: f for n, f in tp.model_fields.items()}
            if part not in fields:
                return None
            tp = fields[part].annotation
        elif isinstance(part, int) or (hasattr(tp, "__origin__") and tp.__origin__ is dict):
            import typing

            tp = typing.get_args(tp)[-1] if typing.get_args(tp) else None
        else:
            return None
    tp = unwrap_type(tp)
    return tp if _is_model(tp) else None


def _shape_issues(exc: ValidationError, prefix: str, root: type[BaseModel], api: str,
                  kind: str) -> list[ConfigIssue]:
    import difflib

    issues = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        path = format_loc(prefix, loc)
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            hint = KEY_HINTS.get((kind, key)) if len(loc) == 1 else None
            model = _model_at(root, loc[:-1])
            known = _alias_keys(model) if model is not None else []
            close = difflib.get_close_matches(key, known, n=1)
            message = f"unknown key {key!r}: bindy's {kind} ({api}) has no such field"
            if hint:
                message += f"; {hint}"
            elif close:
                message += f"; did you mean {close[0]!r}?"
            if known:
                message += f"; valid keys here: {', '.join(known)}"
            issues.append(ConfigIssue(path=path, message=message))
        else:
            issues.append(ConfigIssue(path=path, message=_friendly(err, loc, root)))
    return issues


def _unmapped(value: Any, path: str, out: Converted) -> None:
    """Report every key bindy has and this project does not map, by its path."""
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _unmapped(item, f"{path}[{i}]", out)
        return
    if not isinstance(value, _Doc):
        return
    for name in sorted(value.model_fields_set):
        info = type(value).model_fields[name]
        key = info.alias or name
        child = getattr(value, name)
        if key in type(value).unmapped and child not in (None, {}, []):
            severity, message = type(value).unmapped[key]
            issue = ConfigIssue(path=f"{path}.{key}", message=f"bindy's {key} is {message}")
            (out.issues if severity == "error" else out.warnings).append(issue)
        else:
            _unmapped(child, f"{path}.{key}", out)


def _parse(
    doc: dict[str, Any], at: str, api: str, namespace: str | None, out: Converted
) -> Parsed | None:
    issues = out.issues
    kind = doc.get("kind")
    models = SPEC_MODELS[api]
    if kind not in models:
        issues.append(ConfigIssue(path=f"{at}.kind", message=(
            f"expected one of {', '.join(models)} in {api}, got {safeyaml.describe(kind)}")))
        return None
    extra = sorted(set(doc) - {"apiVersion", "kind", "metadata", "spec", "status"})
    for key in extra:
        issues.append(ConfigIssue(path=f"{at}.{key}", message=(
            f"unknown key {key!r} in a Kubernetes document; valid keys: apiVersion, kind, "
            "metadata, spec (status is read and not used)")))
    raw_meta = _mapping(doc.get("metadata"), f"{at}.metadata", "metadata", issues)
    raw_spec = _mapping(doc.get("spec"), f"{at}.spec", "spec", issues)
    if raw_meta is None or raw_spec is None:
        return None
    if (unnamed := _missing_name(raw_meta, at, kind)) is not None:
        issues.append(unnamed)
        return None
    name = raw_meta.get("name")
    label = f"{at}({kind}/{name})"
    try:
        meta = Meta.model_validate(raw_meta)
    except ValidationError as exc:
        issues.extend(_shape_issues(exc, f"{label}.metadata", Meta, api, kind))
        return None
    model = models[kind]
    try:
        spec = model.model_validate(raw_spec)
    except ValidationError as exc:
        issues.extend(_shape_issues(exc, f"{label}.spec", model, api, kind))
        return None
    _unmapped(meta, f"{label}.metadata", out)
    _unmapped(spec, f"{label}.spec", out)
    ns = meta.namespace
    if kind == "ClusterBind9Provider":
        ns = getattr(spec, "namespace", None)
    if ns is not None:
        out.namespaces.add(ns)
        if namespace and ns != namespace:
            where = "spec.namespace" if kind == "ClusterBind9Provider" else "metadata.namespace"
            issues.append(ConfigIssue(path=f"{label}.{where}", message=(
                f"namespace {ns!r} differs from the stack's namespace {namespace!r}; set "
                f"{PREFIX}namespace or change the document")))
    return Parsed(at=label, api=api, kind=kind, meta=meta, spec=spec)


# --------------------------------------------------------------------------- the cluster model


@dataclass
class _Inst:
    name: str
    role: str
    labels: dict[str, str]
    body: dict[str, Any]  # the stack-config instance without name/role/labels
    path: str
    primary_servers: list[str]
    primary_servers_path: str
    fixed_address: str | None


def _service(template: ServiceTemplate | None, path: str, out: Converted) -> dict[str, Any]:
    if template is None:
        return {}
    service: dict[str, Any] = {}
    for key, value in template.spec.items():
        if key in ("type", "loadBalancerIP", "clusterIP"):
            service[key] = value
        elif key != "ports":
            out.warnings.append(ConfigIssue(path=f"{path}.spec.{key}", message=(
                f"bindy's service spec {key} is not mapped: the Service takes type and one "
                "fixed address (loadBalancerIP or clusterIP)")))
        else:
            out.warnings.append(ConfigIssue(path=f"{path}.spec.ports", message=(
                "bindy's service ports are not mapped: the Service serves DNS on UDP and "
                "TCP 53")))
    return service


def _fixed(service: Mapping[str, Any]) -> str | None:
    value = service.get("loadBalancerIP") or service.get("clusterIP")
    return value if isinstance(value, str) and value not in ("None", "") else None


def _query_acl(values: list[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        if value.strip().lower() == "any":
            out += ["0.0.0.0/0", "::/0"]
        elif value.strip().lower() != "none":
            out.append(value)
    return out


def _instance(
    name: str, role: str, labels: dict[str, str], path: str, cluster: Parsed | None,
    spec: InstanceSpec | None, out: Converted,
) -> _Inst:
    cspec: ClusterSpec | None = cluster.spec if cluster is not None else None
    role_cfg = (getattr(cspec, role) if cspec is not None else None)
    glob = cspec.global_ if cspec is not None else None
    own = spec.config if spec is not None else None
    body: dict[str, Any] = {}
    if spec is not None and spec.replicas is not None:
        body["replicas"] = spec.replicas
    version = (spec.version if spec is not None else None) or (cspec.version if cspec else None)
    if version is not None:
        body["version"] = version
    image = (spec.image.image if spec is not None and spec.image else None) or (
        cspec.image.image if cspec is not None and cspec.image else None)
    if image:
        body["image"] = image
    config: dict[str, Any] = {}
    for key in ("recursion", "allowQuery"):
        value = getattr(own, key, None)
        if value is None and glob is not None:
            value = getattr(glob, key)
        if value is not None:
            config[key] = _query_acl(value) if key == "allowQuery" else value
    transfer = own.allowTransfer if own is not None else None
    if transfer is None and role_cfg is not None:
        transfer = role_cfg.allowTransfer
    inherited = transfer is None
    if transfer is None and glob is not None:
        transfer = glob.allowTransfer
    if transfer is not None:
        if role == "secondary" and inherited and transfer:
            out.warnings.append(ConfigIssue(
                path=f"{cluster.at if cluster else path}.spec.global.allowTransfer",
                message=(f"bindy's global.allowTransfer is not applied to secondary {name!r}: "
                         "bind9-topology's secondaries serve no transfers")))
        else:
            config["allowTransfer"] = transfer
    if own is not None and own.dnssec is not None and own.dnssec.signing and \
            own.dnssec.signing.get("enabled"):
        out.issues.append(ConfigIssue(path=f"{path}.config.dnssec.signing", message=(
            "bindy's DNSSEC signing cannot be mapped: bind9-topology serves zones unsigned; "
            "remove signing (and the DS records at the parent) before moving")))
    if config:
        body["config"] = config
    service = _service(role_cfg.service if role_cfg is not None else None,
                       f"{cluster.at}.spec.{role}.service" if cluster else path, out)
    if service:
        body["service"] = service
    servers = spec.primaryServers if spec is not None else []
    return _Inst(name=name, role=role, labels=labels, body=body, path=path,
                 primary_servers=list(servers), primary_servers_path=f"{path}.primaryServers",
                 fixed_address=_fixed(service))


def _cluster_issues(parsed: Parsed, out: Converted) -> None:
    glob = parsed.spec.global_
    if glob is not None and glob.dnssec is not None and glob.dnssec.signing and \
            glob.dnssec.signing.get("enabled"):
        out.issues.append(ConfigIssue(path=f"{parsed.at}.spec.global.dnssec.signing", message=(
            "bindy's DNSSEC signing cannot be mapped: bind9-topology serves zones unsigned; "
            "remove signing (and the DS records at the parent) before moving")))


def _selector_for(members: list[_Inst], everyone: list[_Inst], clusters: Iterable[str]
                  ) -> dict[str, str] | None:
    """matchLabels that pick exactly `members` among `everyone`, or None."""
    want = {m.name for m in members}
    role = members[0].role
    candidates = [{CLUSTER_LABEL: c, "dns-role": role} for c in sorted(set(clusters))]
    # Not region/environment: the stack fills them in on instances without them.
    common = {k: v for k, v in members[0].labels.items() if k not in ("region", "environment")}
    for m in members[1:]:
        common = {k: v for k, v in common.items() if m.labels.get(k) == v}
    candidates.append(common)
    for candidate in candidates:
        picked = {i.name for i in everyone
                  if all(i.labels.get(k) == v for k, v in candidate.items())}
        if picked == want:
            return candidate
    return None


def _resolve(parsed: list[Parsed], out: Converted) -> None:
    clusters: dict[str, Parsed] = {}
    for p in parsed:
        if p.kind in ("Bind9Cluster", "ClusterBind9Provider"):
            if p.meta.name in clusters:
                out.issues.append(ConfigIssue(path=f"{p.at}.metadata.name", message=(
                    f"a second cluster named {p.meta.name!r} (also {clusters[p.meta.name].at}); "
                    "give each its own name")))
                continue
            clusters[p.meta.name] = p
            _cluster_issues(p, out)

    instances: list[_Inst] = []
    for c in clusters.values():
        for role in ("primary", "secondary"):
            cfg = getattr(c.spec, role)
            count = cfg.replicas if cfg is not None and cfg.replicas is not None else 0
            for i in range(count):
                labels = {MANAGED_BY_LABEL: "Bind9Cluster", CLUSTER_LABEL: c.meta.name,
                          ROLE_LABEL: role, PART_OF_LABEL: "bindy"}
                labels.update(getattr(cfg, "labels", {}) or {})
                labels.setdefault("dns-role", role)
                inst = _instance(f"{c.meta.name}-{role}-{i}", role, labels,
                                 f"{c.at}.spec.{role}.replicas", c, None, out)
                inst.body["replicas"] = 1
                instances.append(inst)
    for p in parsed:
        if p.kind != "Bind9Instance":
            continue
        spec: InstanceSpec = p.spec
        cluster = clusters.get(spec.clusterRef)
        if cluster is None:
            out.issues.append(ConfigIssue(path=f"{p.at}.spec.clusterRef", message=(
                f"no Bind9Cluster or ClusterBind9Provider named {spec.clusterRef!r} among the "
                "documents; add it (its version, global config and services apply here)")))
        labels = {CLUSTER_LABEL: spec.clusterRef, **p.meta.labels}
        labels.setdefault("dns-role", spec.role)
        instances.append(_instance(p.meta.name, spec.role, labels, f"{p.at}.spec", cluster,
                                   spec, out))

    zones_by_name: dict[str, Parsed] = {}
    records = [p for p in parsed if p.kind in RECORD_KINDS]
    for p in parsed:
        if p.kind == "DNSZone":
            zones_by_name.setdefault(p.meta.name, p)
    used: set[int] = set()
    for p in parsed:
        if p.kind != "DNSZone":
            continue
        zone_records: list[dict[str, Any]] = []
        for r, rec in enumerate(records):
            if p.api == ALPHA_API or rec.api == ALPHA_API:
                ref = getattr(rec.spec, "zoneRef", None)
                hit = ref == p.meta.name and rec.api == p.api
            else:
                hit = any(s.selector.matches(rec.meta.labels) for s in p.spec.recordsFrom)
            if hit and (rec.meta.namespace or None) in (p.meta.namespace or None, None):
                used.add(r)
                for rtype, data in rec.spec.rdata():
                    entry: dict[str, Any] = {"name": rec.spec.name, "type": rtype, "data": data}
                    if rec.spec.ttl is not None:
                        entry["ttl"] = rec.spec.ttl
                    zone_records.append(entry)
        _zone(p, zone_records, instances, out)
    for r, rec in enumerate(records):
        if r not in used:
            how = (f"no DNSZone named {rec.spec.zoneRef!r}" if rec.api == ALPHA_API
                   else "no DNSZone's recordsFrom selects its labels")
            out.warnings.append(ConfigIssue(path=rec.at, message=(
                f"not imported: {how}, so bindy does not serve it either")))

    for inst in instances:
        out.instances.append({"name": inst.name, "role": inst.role, "labels": inst.labels,
                              **inst.body})
        out.instance_paths.append(inst.path)


def _zone(p: Parsed, records: list[dict[str, Any]], instances: list[_Inst],
          out: Converted) -> None:
    spec: ZoneSpec = p.spec
    refs = [r for r in (spec.clusterRef, spec.clusterProviderRef) if r]
    targets = [i for i in instances if i.labels.get(CLUSTER_LABEL) in refs]
    beta = isinstance(spec, ZoneSpecBeta)
    if isinstance(spec, ZoneSpecBeta):
        for entry in spec.bind9InstancesFrom:
            targets += [i for i in instances
                        if entry.selector.matches(i.labels) and i not in targets]
        if spec.dnssecPolicy not in (None, "none"):
            out.issues.append(ConfigIssue(path=f"{p.at}.spec.dnssecPolicy", message=(
                f"bindy's dnssecPolicy {spec.dnssecPolicy!r} cannot be mapped: bind9-topology "
                "serves zones unsigned; remove it (and the DS records at the parent)")))
    if not targets:
        out.issues.append(ConfigIssue(path=f"{p.at}.spec", message=(
            "selects no instance: clusterRef names no cluster with instances among the "
            "documents" + (" and bind9InstancesFrom matches none" if beta else "")
            + "; add the Bind9Cluster/Bind9Instance documents")))
        return
    primaries = [i for i in targets if i.role == "primary"]
    secondaries = [i for i in targets if i.role == "secondary"]
    soa = spec.soaRecord
    origin = spec.zoneName.strip().rstrip(".").lower()
    head: list[dict[str, Any]] = [{"name": "@", "type": "NS", "data": soa.primaryNs}]
    servers = [(ns.hostname, ns.ipv4Address, ns.ipv6Address, f"nameServers[{n}]")
               for n, ns in enumerate(getattr(spec, "nameServers", []))]
    for host, ip in sorted(spec.nameServerIps.items()):
        v6 = ":" in ip
        servers.append((host, None if v6 else ip, ip if v6 else None, f"nameServerIps.{host}"))
    for host, v4, v6, where in servers:
        if host.rstrip(".").lower() != soa.primaryNs.rstrip(".").lower():
            head.append({"name": "@", "type": "NS", "data": host})
        absolute = host if host.endswith(".") else f"{host}.{origin}."
        in_zone = _in_zone(absolute, origin)
        for rtype, ip in (("A", v4), ("AAAA", v6)):
            if ip is None:
                continue
            if in_zone:
                head.append({"name": absolute, "type": rtype, "data": ip})
            else:
                out.warnings.append(ConfigIssue(path=f"{p.at}.spec.{where}", message=(
                    f"{host} is outside {origin}: its address is not glue in this zone and is "
                    "not written (named would ignore it)")))
    soa_out = {"primaryNs": soa.primaryNs, "adminEmail": soa.adminEmail, "refresh": soa.refresh,
               "retry": soa.retry, "expire": soa.expire, "negativeTtl": soa.negativeTtl}
    everyone = instances
    cluster_names = [i.labels.get(CLUSTER_LABEL, "") for i in targets]
    notify = sorted({i.fixed_address for i in secondaries if i.fixed_address},
                    key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)))
    if primaries:
        for selector, suffix in _groups(primaries, everyone, cluster_names, out):
            zone: dict[str, Any] = {
                "name": p.meta.name + suffix, "zoneName": spec.zoneName, "type": "primary",
                "instanceSelector": {"matchLabels": selector}, "soaRecord": soa_out,
            }
            if spec.ttl is not None:
                zone["ttl"] = spec.ttl
            zone["records"] = head + records
            if notify:
                zone["alsoNotify"] = notify
            out.zones.append(zone)
            out.zone_paths.append(f"{p.at}.spec")
    fixed_primaries = [i.fixed_address for i in primaries if i.fixed_address]
    by_servers: dict[tuple[str, ...], list[_Inst]] = {}
    for inst in secondaries:
        chosen = inst.primary_servers or fixed_primaries
        if not chosen:
            out.issues.append(ConfigIssue(path=inst.primary_servers_path, message=(
                f"secondary {inst.name!r} has no primaryServers and the primaries of "
                f"{spec.zoneName} have no fixed address (service loadBalancerIP or clusterIP); "
                "list the primaries' IPs in primaryServers")))
            continue
        bad = [s for s in chosen if not _is_ip(s)]
        if bad:
            out.issues.append(ConfigIssue(path=inst.primary_servers_path, message=(
                f"{', '.join(bad)}: bind9-topology transfers from IP addresses (optionally "
                "with :port), not hostnames; write the primaries' IPs")))
            continue
        by_servers.setdefault(tuple(chosen), []).append(inst)
    for chosen_servers, group in by_servers.items():
        for selector, suffix in _groups(group, everyone, cluster_names, out):
            if len(by_servers) > 1 and not suffix:  # another group has other primaries
                suffix = f"-{group[0].name}"
            out.zones.append({
                "name": f"{p.meta.name}-secondary{suffix}", "zoneName": spec.zoneName,
                "type": "secondary", "instanceSelector": {"matchLabels": selector},
                "secondaryConfig": {"primaryServers": list(chosen_servers)},
            })
            out.zone_paths.append(f"{p.at}.spec")


def _groups(members: list[_Inst], everyone: list[_Inst], clusters: list[str],
            out: Converted) -> list[tuple[dict[str, str], str]]:
    selector = _selector_for(members, everyone, clusters)
    if selector is not None:
        return [(selector, "")]
    result = []
    for inst in members:
        inst.labels[INSTANCE_LABEL] = inst.name
        result.append(({INSTANCE_LABEL: inst.name}, f"-{inst.name}"))
    return result


def _in_zone(absolute: str, origin: str) -> bool:
    try:
        return dns.name.from_text(absolute).is_subdomain(dns.name.from_text(origin + "."))
    except Exception:
        return False


def _is_ip(value: str) -> bool:
    from bind9_topology.config.model import parse_server

    try:
        parse_server(value)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- entry points


def convert(
    files: Iterable[tuple[Path, str, str]], namespace: str | None = None
) -> Converted:
    """Every bindy document of `files` ((path, where, label) each) in stack-config shape.

    `where` prefixes document-level problems ('<where>#<index>'); `label` prefixes the
    legacy documents' spec paths ('<label>#<Kind>/<name>.spec'). The bindy.firestoned.io
    documents of all files are resolved together (clusters, zones and records may sit
    in different files).
    """
    out = Converted()
    parsed: list[Parsed] = []
    for path, where, label in files:
        docs, issues = read_documents(path, where)
        out.issues += issues
        for at, doc in docs:
            if not isinstance(doc, dict):
                out.issues.append(ConfigIssue(path=at, message=(
                    "expected a Kubernetes document (apiVersion, kind, metadata, spec), got "
                    f"{safeyaml.describe(doc)}")))
                continue
            api = doc.get("apiVersion")
            if api == LEGACY_API:
                out.dialects.add(api)
                _legacy(doc, at, label, namespace, out)
            elif api in (ALPHA_API, BETA_API):
                out.dialects.add(api)
                one = _parse(doc, at.replace(where, label, 1), api, namespace, out)
                if one is not None:
                    parsed.append(one)
            else:
                out.issues.append(ConfigIssue(path=f"{at}.apiVersion", message=(
                    f"expected one of {', '.join(repr(d) for d in DIALECTS)}, got "
                    f"{safeyaml.describe(api)}")))
    if parsed:
        _resolve(parsed, out)
    return out


def bindy_documents(
    path: Path, where: str, namespace: str | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[ConfigIssue]]:
    """One file's bindy documents converted to the stack's shapes (instances, zones, issues)."""
    out = convert([(path, where, where)], namespace)
    return out.instances, out.zones, out.issues


def load_manifests(
    project_dir: Path, manifests: Sequence[Any], namespace: str | None
) -> Converted:
    """The stack's `bindyManifests`, each confined to the project directory."""
    out = Converted()
    files: list[tuple[Path, str, str]] = []
    for m, manifest in enumerate(manifests):
        if not isinstance(manifest, str):
            out.issues.append(ConfigIssue(path=f"{PREFIX}bindyManifests[{m}]", message=(
                f"expected a path (a string), got {safeyaml.describe(manifest)}")))
            continue
        where = f"{PREFIX}bindyManifests[{m}]({manifest})"
        manifest_path, refused = safeyaml.path_inside(project_dir, manifest)
        if manifest_path is None:
            out.issues.append(ConfigIssue(path=where, message=str(refused)))
            continue
        files.append((manifest_path, where, manifest))
    converted = convert(files, namespace)
    converted.issues = out.issues + converted.issues
    return converted
