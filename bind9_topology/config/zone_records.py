"""Zone content built and checked with dnspython.

A zone's records come inline from stack config, from a YAML records file, or
from an existing master file. They are parsed once with dnspython, which is
the judge of what is valid; problems come back as ConfigIssues naming the
record's config path. The SOA is kept apart from the rest so that the content
hash (which drives the serial) is independent of the serial itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.SOA
import dns.rdtypes.IN.SRV
import dns.version
import dns.zone
import dns.zonetypes
import yaml
from pydantic import ValidationError

from bind9_topology.config import fast_records, safeyaml
from bind9_topology.config.digest import content_hash
from bind9_topology.config.model import (
    IDNA,
    ConfigIssue,
    Record,
    Zone,
    is_hostname,
    issues_from_validation,
)

IN = dns.rdataclass.IN

# How RDATA is written for the common types, for error messages.
DATA_EXAMPLES = {
    "A": "192.0.2.1",
    "AAAA": "2001:db8::1",
    "CNAME": "target.example.com.",
    "MX": "10 mail.example.com.",
    "NS": "ns1.example.com.",
    "TXT": '\'"v=spf1 -all"\'',
    "SRV": "10 60 5060 sip.example.com.",
    "CAA": '\'0 issue "letsencrypt.org"\'',
    "PTR": "host.example.com.",
}

NAME_HINT = (
    "use a name relative to the zone such as 'www' or '@' (the apex), or a full name "
    "ending in '.'"
)


@dataclass(frozen=True)
class ZoneContent:
    """The records of a primary zone, without its serial."""

    zone_name: str
    soa: dns.rdtypes.ANY.SOA.SOA  # serial 0: the serial is applied at render time
    soa_ttl: int
    body: str  # every record but the SOA, as dnspython writes them, sorted
    record_count: int
    # ZONEMD-style SHA-384 of the zone with serial 0 (dnscheck.zone_digest); None: not known
    zonemd: str | None = None
    # What named would only log (an MX without address, a delegation without glue).
    warnings: tuple[ConfigIssue, ...] = ()

    @property
    def content_hash(self) -> str:
        return content_hash(self.text(0))

    @property
    def digest(self) -> str:
        """Equal to dnscheck.zone_digest_from_text(self.text(0), zone_name), without the parse."""
        if self.zonemd is not None:
            return self.zonemd
        from bind9_topology.config.digest import zone_digest_from_text

        return zone_digest_from_text(self.text(0), self.zone_name)

    def soa_line(self, serial: int) -> str:
        soa = self.soa.replace(serial=serial)
        return f"@ {self.soa_ttl} IN SOA {soa.to_text()}\n"

    def text(self, serial: int) -> str:
        return f"$ORIGIN {self.zone_name}.\n" + self.soa_line(serial) + self.body

    def serial_split(self) -> tuple[str, str]:
        """(before, after) with ``text(s) == before + str(s) + after`` for every serial.

        Where a rendering keeps the serial's place open: the text is built once and a
        serial known later (a Pulumi Output) is put in without rendering again. In the
        SOA's presentation form the serial is the third field (names escape spaces).
        """
        fields = self.soa.replace(serial=0).to_text().split(" ")
        assert fields[2] == "0", fields
        head = f"$ORIGIN {self.zone_name}.\n@ {self.soa_ttl} IN SOA "
        return (head + " ".join(fields[:2]) + " ",
                " " + " ".join(fields[3:]) + "\n" + self.body)


class RecordsFileError(Exception):
    """The records file cannot be used; `issues` says why, with paths."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        super().__init__("; ".join(map(str, issues)))


def records_file_path(zone: Zone, project_dir: Path) -> tuple[Path | None, str | None]:
    assert zone.recordsFile is not None
    return safeyaml.path_inside(project_dir, zone.recordsFile)


def load_records(
    zone: Zone, project_dir: Path, path: str = "recordsFile",
    max_bytes: int = safeyaml.DEFAULT_MAX_BYTES,
) -> list[Record]:
    """Inline records, then the records file's; RecordsFileError names every bad entry."""
    records = list(zone.records)
    if not zone.recordsFile:
        return records
    at = f"{path}.recordsFile"
    file_path, refused = records_file_path(zone, project_dir)
    if file_path is None:
        raise RecordsFileError([ConfigIssue(path=at, message=str(refused))])
    try:
        data = safeyaml.load_file(file_path, max_bytes)
    except FileNotFoundError:
        raise RecordsFileError([ConfigIssue(path=at, message=(
            f"file not found: {file_path}"))]) from None
    except IsADirectoryError:
        raise RecordsFileError([ConfigIssue(path=at, message=(
            f"{zone.recordsFile!r} is a directory; name one YAML file of records"))]) from None
    except (yaml.YAMLError, ValueError, OSError) as exc:
        raise RecordsFileError([ConfigIssue(path=at, message=f"cannot read: {exc}")]) from None
    items = data.get("records", data) if isinstance(data, dict) else data
    if items is None:
        items = []
    if not isinstance(items, list):
        raise RecordsFileError([ConfigIssue(path=at, message=(
            f"expected a list of records ({{name, type, ttl, data}}) or a mapping with a "
            f"'records:' list, got {safeyaml.describe(items)}"))])
    issues: list[ConfigIssue] = []
    for index, item in enumerate(items):
        try:
            records.append(Record.model_validate(item))
        except ValidationError as exc:
            issues += issues_from_validation(exc, f"{at}[{index}]", Record)
    if issues:
        raise RecordsFileError(issues)
    return records

_CNAME_COMPANIONS = {dns.rdatatype.CNAME, dns.rdatatype.RRSIG, dns.rdatatype.NSEC}


# --------------------------------------------------------------------------- content cache
#
# Parsing every record with dnspython costs about 100 us a record (parse, zone build,
# sorted text); a 1,000-zone stack would pay it on every `pulumi preview`. A zone that
# built cleanly is stored under a key that hashes everything its content depends on
# (the zone's name, TTL, SOA fields and inline records, the bytes of its records file,
# dnspython's version and this module's cache format), so unchanged input is validated
# once per content. Zones with problems are never stored: their issues are recomputed.

CACHE_FORMAT = 2
CACHE_ENV = "BIND9_TOPOLOGY_CACHE_DIR"  # where entries live; "off" disables the cache
_CACHE_SUBDIR = Path(".cache") / "zones"


def _cache_dir(project_dir: Path) -> Path | None:
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return None if configured.strip().lower() in ("", "0", "off", "none") else Path(
            configured)
    return project_dir / _CACHE_SUBDIR


def _cache_key(zone: Zone, project_dir: Path) -> str | None:
    """sha256 of everything a zone's build depends on; None if it cannot be told."""
    digest = hashlib.sha256()
    head = {
        "format": CACHE_FORMAT,
        "dnspython": dns.version.version,
        "zone": zone.model_dump(
            mode="json", include={"zoneName", "ttl", "soaRecord", "records", "recordsFile"}
        ),
    }
    digest.update(json.dumps(head, sort_keys=True, separators=(",", ":")).encode())
    if zone.recordsFile:
        file_path, _ = records_file_path(zone, project_dir)
        if file_path is None or not file_path.is_file():
            return None  # the slow path reports it
        try:
            digest.update(b"\0file\0" + safeyaml.read_bytes(file_path))
        except (OSError, ValueError):
            return None  # the slow path reports it
    return digest.hexdigest()


def _cache_get(directory: Path, key: str) -> dict[str, Any] | None:
    """The cache entry for *key* as read (a JSON object); the caller converts each field."""
    try:
        entry = json.loads((directory / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    return entry


def _cache_put(directory: Path, key: str, content: ZoneContent) -> None:
    entry = {
        "key": key,
        "zone_name": content.zone_name,
        "soa_ttl": content.soa_ttl,
        "body": content.body,
        "record_count": content.record_count,
        "zonemd": content.zonemd,
        "warnings": [[w.path, w.message] for w in content.warnings],
    }
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(entry, fh)
            os.replace(tmp, directory / f"{key}.json")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        pass  # a read-only checkout still works, only slower


def _soa_rdata(zone: Zone, origin: dns.name.Name) -> dns.rdata.Rdata:
    soa = zone.soaRecord
    assert soa is not None
    return dns.rdata.from_text(
        IN,
        dns.rdatatype.SOA,
        f"{soa.primaryNs} {soa.rname} 0 {soa.refresh} {soa.retry} {soa.expire} "
        f"{soa.negativeTtl}",
        origin=origin,
        relativize=False,
        idna_codec=IDNA,
    )


def build_zones(
    zones: Sequence[tuple[Zone, str]], project_dir: Path, *,
    max_file_bytes: int = safeyaml.DEFAULT_MAX_BYTES,
) -> list[tuple[ZoneContent | None, list[ConfigIssue]]]:
    """Each primary zone's content, or the issues found, for each (zone, config path) in
    order.

    Zones the content cache holds come from it; the others are built, across the
    machine's cores when there are many (bind9_topology.config.zone_pool), and cached.
    """
    from bind9_topology.config import zone_pool

    results: list[tuple[ZoneContent | None, list[ConfigIssue]] | None] = []
    missing: list[int] = []
    keys: list[tuple[Path, str] | None] = []
    for index, (zone, _) in enumerate(zones):
        directory = _cache_dir(project_dir) if zone.soaRecord is not None else None
        key = _cache_key(zone, project_dir) if directory is not None else None
        keys.append((directory, key) if directory is not None and key is not None else None)
        hit = _cached_content(zone, *keys[-1]) if keys[-1] is not None else None
        results.append((hit, []) if hit is not None else None)
        if hit is None:
            missing.append(index)
    built = zone_pool.build_many([zones[i] for i in missing], project_dir, max_file_bytes)
    for index, (content, issues) in zip(missing, built, strict=True):
        results[index] = (content, issues)
        where = keys[index]
        if content is not None and where is not None:
            _cache_put(where[0], where[1], content)
    return [r for r in results if r is not None]


def _cached_content(zone: Zone, directory: Path, key: str) -> ZoneContent | None:
    entry = _cache_get(directory, key)
    if entry is None:
        return None
    try:
        soa_rdata = _soa_rdata(zone, dns.name.from_text(zone.zoneName))
        assert isinstance(soa_rdata, dns.rdtypes.ANY.SOA.SOA)
        return ZoneContent(
            zone_name=str(entry["zone_name"]),
            soa=soa_rdata,
            soa_ttl=int(entry["soa_ttl"]),
            body=str(entry["body"]),
            record_count=int(entry["record_count"]),
            zonemd=entry.get("zonemd"),
            warnings=tuple(
                ConfigIssue(path=str(p), message=str(m))
                for p, m in entry.get("warnings") or []
            ),
        )
    except Exception:
        return None  # a damaged entry: build it again


def _build_zone(
    zone: Zone, path: str, project_dir: Path, max_file_bytes: int = safeyaml.DEFAULT_MAX_BYTES
) -> tuple[ZoneContent | None, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []
    origin = dns.name.from_text(zone.zoneName)
    if zone.soaRecord is None:
        return None, [
            ConfigIssue(
                path=f"{path}.soaRecord",
                message="a primary zone needs soaRecord (primaryNs, adminEmail); add it",
            )
        ]
    try:
        records = load_records(zone, project_dir, path, max_file_bytes)
    except RecordsFileError as exc:
        return None, exc.issues

    fast_origin = fast_records.Origin(zone.zoneName)
    z = _Zone()
    types_at: dict[tuple[bytes, ...], dict[int, str]] = {}
    placed: list[tuple[str, fast_records.Name, int, fast_records.Name | None]] = []
    progress = _Progress(len(records), zone.zoneName)
    for index, record in enumerate(records):
        if index & 0x3FFF == 0:
            progress.tick(index)
        where = f"{path}.records[{index}]" if index < len(zone.records) else (
            f"{path}.recordsFile[{index - len(zone.records)}]"
        )
        owner_name = fast_records.parse_name(record.name, fast_origin)
        if owner_name is None:  # what the fast parser does not take: dnspython decides
            slow_owner = _slow_owner(record, origin, where)
            if isinstance(slow_owner, ConfigIssue):
                issues.append(slow_owner)
                continue
            owner_name = slow_owner
        if not owner_name.inside:
            issues.append(
                ConfigIssue(
                    path=f"{where}.name",
                    message=f"{record.name!r} is outside the zone {zone.zoneName}; "
                    "use a relative name or one ending in the zone name",
                )
            )
            continue
        rdtype = fast_records.TYPES.get(record.type)
        parsed = (fast_records.parse(rdtype, record.data, fast_origin)
                  if rdtype is not None else None)
        if parsed is None:  # what the fast parser does not take: dnspython decides
            slow = _slow_rdata(record, origin, where)
            if isinstance(slow, ConfigIssue):
                issues.append(slow)
                continue
            rdtype, parsed = slow
        assert rdtype is not None
        key = owner_name.key
        # Checked here, not on the zone: dnspython silently drops a CNAME when other
        # data is added at its name (and the other data when a CNAME is added).
        seen = types_at.setdefault(key, {})
        if not key:
            seen.setdefault(dns.rdatatype.SOA, f"{path}.soaRecord")
        conflict = (
            dns.rdatatype.CNAME in seen and rdtype not in _CNAME_COMPANIONS
        ) or (rdtype == dns.rdatatype.CNAME and bool(set(seen) - _CNAME_COMPANIONS))
        seen.setdefault(rdtype, where)
        if conflict:
            continue  # reported below; adding it would make dnspython drop the other
        z.add(key, owner_name, rdtype, record.ttl if record.ttl is not None else zone.ttl,
              parsed)
        placed.append((where, owner_name, rdtype, parsed[3]))
    progress.done()

    soa_rdata, whole = _whole_zone_issues(zone, path, z, types_at, origin)
    issues += whole
    warnings: list[ConfigIssue] = []
    if not issues:  # judged on the whole zone: a record refused above would mislead
        issues, warnings = bind_checks(z, fast_origin, placed)
    if issues:
        return None, issues
    assert isinstance(soa_rdata, dns.rdtypes.ANY.SOA.SOA)
    body = z.to_text()
    # The digest of text(0) (dnscheck.zone_digest): the same records plus the SOA with
    # serial 0, as parsing text(0) back would give (dnspython's Zone.compute_digest).
    zonemd = z.digest(fast_origin, soa_rdata.to_digestable(origin), zone.ttl)
    return (
        ZoneContent(
            zone_name=zone.zoneName,
            soa=soa_rdata,
            soa_ttl=zone.ttl,
            body=body,
            record_count=len(records) + 1,
            zonemd=zonemd,
            warnings=tuple(warnings),
        ),
        [],
    )


def _slow_owner(record: Any, origin: dns.name.Name,
                where: str) -> fast_records.Name | ConfigIssue:
    """A record's owner name through dnspython (IDNA, escapes), or the problem with it."""
    owner: dns.name.Name | None = None
    if not record.name or any(c.isspace() for c in record.name):
        problem = "it is empty or contains whitespace"
    else:
        try:
            owner = dns.name.from_text(record.name, origin, idna_codec=IDNA)
        except dns.exception.DNSException as exc:
            problem = str(exc)
    if owner is None:
        return ConfigIssue(path=f"{where}.name", message=(
            f"{record.name!r} is not a valid record name ({problem}); {NAME_HINT}"))
    return fast_records.from_dnspython(owner, origin)


def _slow_rdata(record: Any, origin: dns.name.Name,
                where: str) -> tuple[int, fast_records.Parsed] | ConfigIssue:
    """A record's type and data through dnspython, or the problem with them."""
    try:
        rdtype = dns.rdatatype.from_text(record.type)
        rdata = dns.rdata.from_text(IN, rdtype, record.data, origin=origin,
                                    relativize=True, idna_codec=IDNA)
    except Exception as exc:
        example = DATA_EXAMPLES.get(record.type)
        hint = (f"write it as in a master file, e.g. {record.type} {example}" if example
                else "write it as in a master file")
        return ConfigIssue(path=f"{where}.data", message=(
            f"{record.type} data {record.data!r} is not valid ({exc}); {hint}"))
    if rdtype == dns.rdatatype.SOA:
        return ConfigIssue(path=f"{where}.type", message="put the SOA in soaRecord, not records")
    return rdtype, _from_rdata(rdata, origin)


def _whole_zone_issues(zone: Zone, path: str, z: _Zone,
                       types_at: dict[tuple[bytes, ...], dict[int, str]],
                       origin: dns.name.Name) -> tuple[Any, list[ConfigIssue]]:
    """What only the whole zone tells: a CNAME beside other data, no NS at the apex, an
    SOA that is not valid. Returns the SOA rdata (None when it is not valid) too."""
    issues: list[ConfigIssue] = []
    for key, seen in types_at.items():
        if dns.rdatatype.CNAME in seen and set(seen) - _CNAME_COMPANIONS:
            others = sorted(_type_text(t) for t in seen if t != dns.rdatatype.CNAME)
            owner_text = "the apex (@)" if not key else z.owner_text(key)
            issues.append(ConfigIssue(path=seen[dns.rdatatype.CNAME], message=(
                f"{owner_text} has a CNAME beside other data ({', '.join(others)}); a CNAME "
                "must be the only record at its name: remove the CNAME or the other records")))
    if not z.has((), dns.rdatatype.NS):
        issues.append(ConfigIssue(path=f"{path}.records", message=(
            f"zone {zone.zoneName} has no NS record at its apex; add "
            "{name: '@', type: NS, data: ns1." + zone.zoneName + ".}")))
    try:
        soa_rdata = _soa_rdata(zone, origin)
    except Exception as exc:
        issues.append(ConfigIssue(path=f"{path}.soaRecord", message=f"SOA is not valid: {exc}"))
        return None, issues
    assert isinstance(soa_rdata, dns.rdtypes.ANY.SOA.SOA) and zone.soaRecord is not None
    if not is_hostname(soa_rdata.mname):
        issues.append(ConfigIssue(path=f"{path}.soaRecord.primaryNs", message=(
            f"{zone.soaRecord.primaryNs!r} is not a hostname (BIND's check-names refuses "
            "the zone); use letters, digits and '-' per label, e.g. 'ns1.example.com.'")))
    return soa_rdata, issues


def _from_rdata(rdata: dns.rdata.Rdata, origin: dns.name.Name) -> fast_records.Parsed:
    """What fast_records.parse gives, for an rdata dnspython parsed."""
    try:
        rdata.to_digestable()
        relative = False
    except dns.name.NeedAbsoluteNameOrOrigin:
        relative = True
    target = _target(rdata)
    return (
        rdata.to_text(origin=origin, relativize=True),
        rdata.to_digestable(origin),
        (relative, rdata.to_digestable(dns.name.root)),
        fast_records.from_dnspython(target, origin) if target is not None else None,
    )


class _Progress:
    """A progress line on stderr for long builds, only when stderr is a terminal."""

    AFTER_S = 2.0

    def __init__(self, total: int, zone_name: str):
        import sys
        import time

        self.total = total
        self.zone_name = zone_name
        self.start = time.monotonic()
        self.stream = sys.stderr
        self.enabled = total >= 50_000 and self.stream.isatty()
        self.shown = False

    def tick(self, done: int) -> None:
        if not self.enabled:
            return
        import time

        elapsed = time.monotonic() - self.start
        if elapsed < self.AFTER_S:
            return
        self.shown = True
        self.stream.write(f"\r{self.zone_name}: {done:,}/{self.total:,} records checked "
                          f"({elapsed:.0f} s)")
        self.stream.flush()

    def done(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


_SINGLETONS = frozenset(int(t) for t in dns.rdatatype.RdataType if dns.rdatatype.is_singleton(t))


def _type_text(rdtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))


#: An rdataset's rdata: dedup key (fast_records.Parsed[2]) -> (text, canonical wire).
_Rdatas = dict[tuple[bool, bytes], tuple[str, bytes]]


class _Rdataset:
    """One type's records at one owner: the lowest TTL given and the rdata, deduplicated."""

    __slots__ = ("rdatas", "ttl")

    def __init__(self, ttl: int, rdatas: _Rdatas) -> None:
        self.ttl = ttl
        self.rdatas = rdatas


class _Zone:
    """The records as dnspython's Zone holds them (relativized), without rdata objects.

    Nodes keep their first owner spelling, rdatasets their first-seen order, the
    lowest TTL given and their rdata deduplicated as dnspython does (a CNAME, a
    singleton type, keeps the last); `to_text` and `digest` write what
    Zone.to_text(sorted=True, relativize=True) and Zone.compute_digest(SHA384) give.
    """

    def __init__(self) -> None:
        # key -> (owner, {rdtype: rdataset}), rdatasets in first-seen order
        self.nodes: dict[tuple[bytes, ...], tuple[fast_records.Name, dict[int, _Rdataset]]] = {}

    def add(self, key: tuple[bytes, ...], owner: fast_records.Name, rdtype: int, ttl: int,
            parsed: fast_records.Parsed) -> None:
        node = self.nodes.get(key)
        if node is None:
            node = self.nodes[key] = (owner, {})
        rdataset = node[1].get(rdtype)
        if rdataset is None:
            node[1][rdtype] = _Rdataset(ttl, {parsed[2]: (parsed[0], parsed[1])})
            return
        if ttl < rdataset.ttl:
            rdataset.ttl = ttl
        if rdtype in _SINGLETONS:
            rdataset.rdatas = {parsed[2]: (parsed[0], parsed[1])}
        else:
            rdataset.rdatas.setdefault(parsed[2], (parsed[0], parsed[1]))

    def has(self, key: tuple[bytes, ...], rdtype: int) -> bool:
        node = self.nodes.get(key)
        return node is not None and rdtype in node[1]

    def owner_text(self, key: tuple[bytes, ...]) -> str:
        return self.nodes[key][0].text() if key in self.nodes else ".".join(
            fast_records.label_text(lbl) for lbl in reversed(key))

    def to_text(self) -> str:
        lines: list[str] = []
        type_text: dict[int, str] = {}
        for key in sorted(self.nodes):
            owner, rdatasets = self.nodes[key]
            name = owner.text()
            for rdtype, rdataset in rdatasets.items():
                kind = type_text.get(rdtype)
                if kind is None:
                    kind = type_text[rdtype] = _type_text(rdtype)
                head = f"{name} {rdataset.ttl} IN {kind} "
                lines.extend(head + text for text, _ in rdataset.rdatas.values())
        return "".join(line + "\n" for line in lines)

    def digest(self, origin: fast_records.Origin, soa_wire: bytes, soa_ttl: int) -> str:
        hasher = hashlib.sha384()
        update = hasher.update
        for key in sorted(self.nodes):
            owner, rdatasets = self.nodes[key]
            name = owner.wire(origin)
            # (rdtype, ttl, wires), one per type: sorted by type alone
            sets = sorted((rdtype, rds.ttl, [w for _, w in rds.rdatas.values()])
                          for rdtype, rds in rdatasets.items())
            if not key:
                sets = sorted([*sets, (dns.rdatatype.SOA, soa_ttl, [soa_wire])])
            for rdtype, ttl, wires in sets:
                fixed = name + struct.pack("!HHI", rdtype, IN, ttl)
                for wire in sorted(wires):
                    update(fixed + struct.pack("!H", len(wire)) + wire)
        return hasher.hexdigest()


# --------------------------------------------------------------------------- BIND's load checks
#
# What named checks when it loads a primary zone with its default options
# (check-names primary fail, check-integrity yes, check-mx-cname/check-srv-cname),
# and named-checkzone reports: the failures come back as errors, what named only
# logs as warnings. MX and SRV targets that are CNAMEs are refused too (RFC 2181
# 10.3; named logs "is a CNAME (illegal)"): mail and service lookups break on them.

_ADDRESS = (dns.rdatatype.A, dns.rdatatype.AAAA)
_HOST_OWNER = (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.MX)
_HOST_LABEL = re.compile(rb"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?")


def _target(rdata: dns.rdata.Rdata) -> dns.name.Name | None:
    """The name an NS, MX or SRV record points to (None for other types)."""
    if isinstance(rdata, dns.rdtypes.ANY.NS.NS):
        return rdata.target
    if isinstance(rdata, dns.rdtypes.ANY.MX.MX):
        return rdata.exchange
    if isinstance(rdata, dns.rdtypes.IN.SRV.SRV):
        # cast: dnspython leaves SRV.target unannotated (NS's and MX's are dns.name.Name)
        return cast(dns.name.Name, rdata.target)
    return None


def _hostname(labels: tuple[bytes, ...], *, wildcard: bool = False) -> bool:
    """model.is_hostname, on a fast-path name's labels."""
    if wildcard and labels and labels[0] == b"*":
        labels = labels[1:]
    return all(_HOST_LABEL.fullmatch(lbl) for lbl in labels if lbl)


def bind_checks(
    z: _Zone,
    origin: fast_records.Origin,
    placed: list[tuple[str, fast_records.Name, int, fast_records.Name | None]],
) -> tuple[list[ConfigIssue], list[ConfigIssue]]:
    """(errors, warnings) for the records as named would judge them on load."""
    errors: list[ConfigIssue] = []
    warnings: list[ConfigIssue] = []
    delegations = {key for key, node in z.nodes.items() if key and dns.rdatatype.NS in node[1]}

    def under_delegation(key: tuple[bytes, ...]) -> bool:
        return bool(delegations) and any(key[:n] in delegations for n in range(1, len(key) + 1))

    for where, owner, rdtype, target in placed:
        if rdtype in _HOST_OWNER and not _hostname(owner.labels, wildcard=True):
            kind = _type_text(rdtype)
            errors.append(ConfigIssue(path=f"{where}.name", message=(
                f"{owner.text()} is not a hostname, and {kind} records need one (BIND's "
                "check-names refuses the zone); use letters, digits and '-' per label, "
                "no '_' (or use a TXT/SRV record for underscore names)")))
        if target is None or (not target.inside and not target.labels):
            continue  # not a name-pointing type, or the null MX / SRV "."
        kind = _type_text(rdtype)
        if not _hostname(target.labels):
            errors.append(ConfigIssue(path=f"{where}.data", message=(
                f"{kind} target {target.text()} is not a hostname (BIND's check-names "
                "refuses the zone); use letters, digits and '-' per label, no '_'")))
            continue
        absolute = target.absolute_text(origin)
        if rdtype == dns.rdatatype.NS and _looks_like_address(absolute):
            errors.append(ConfigIssue(path=f"{where}.data", message=(
                f"NS target {target.text()} is an address; an NS record names a server: write "
                "its name (e.g. 'ns1.example.com.') and give the name an A/AAAA record")))
            continue
        if not target.inside:
            continue  # out of zone: not ours to check
        inside = target.key
        if z.has(inside, dns.rdatatype.CNAME):
            errors.append(ConfigIssue(path=f"{where}.data", message=(
                f"{kind} target {absolute} is a CNAME, which named calls illegal ("
                + ("it refuses the zone" if rdtype == dns.rdatatype.NS else "RFC 2181 10.3")
                + f"); point the {kind} at the name the CNAME leads to, or replace the "
                "CNAME with A/AAAA records")))
            continue
        if z.has(inside, dns.rdatatype.A) or z.has(inside, dns.rdatatype.AAAA):
            continue
        inside_text = target.text()
        owner_key = owner.key
        if rdtype == dns.rdatatype.NS and not owner_key and not under_delegation(inside):
            errors.append(ConfigIssue(path=f"{where}.data", message=(
                f"NS {absolute} is inside the zone but has no address record (BIND refuses "
                f"the zone); add {{name: '{inside_text}', type: A, data: <its IP>}}")))
        elif rdtype == dns.rdatatype.NS and inside[:len(owner_key)] == owner_key:
            warnings.append(ConfigIssue(path=f"{where}.data", message=(
                f"delegation {owner.text()} has no glue for {absolute} (BIND warns: required "
                f"glue); add {{name: '{inside_text}', type: A, data: <its IP>}}")))
        elif rdtype != dns.rdatatype.NS and not under_delegation(inside):
            warnings.append(ConfigIssue(path=f"{where}.data", message=(
                f"{kind} target {absolute} has no A/AAAA record in the zone (BIND warns); "
                f"add {{name: '{inside_text}', type: A, data: <its IP>}} or fix the name")))
    return errors, warnings


def _looks_like_address(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text.removesuffix("."))
    except ValueError:
        return False
    return True
