"""Zone content built and checked with dnspython.

A zone's records come inline from stack config, from a YAML records file, or
from an existing master file. They are parsed once with dnspython, which is
the judge of what is valid; problems come back as ConfigIssues naming the
record's config path. The SOA is kept apart from the rest so that the content
hash (which drives the serial) is independent of the serial itself.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import itertools
import json
import os
import queue
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
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

    @functools.cached_property
    def _soa_split(self) -> tuple[str, str]:
        """The SOA's presentation at serial 0 around its serial field, written once: the
        size check, the content hash and each rendering ask for the text again."""
        soa = self.soa if self.soa.serial == 0 else cast(
            dns.rdtypes.ANY.SOA.SOA, self.soa.replace(serial=0))
        fields = _soa_text(soa).split(" ")
        if fields[2] != "0":  # in presentation form names escape spaces: serial is third
            raise AssertionError(f"unexpected SOA presentation: {fields!r}")
        return " ".join(fields[:2]) + " ", " " + " ".join(fields[3:]) + "\n"

    def soa_line(self, serial: int) -> str:
        before, after = self._soa_split
        return f"@ {self.soa_ttl} IN SOA {before}{serial}{after}"

    def text(self, serial: int) -> str:
        return f"$ORIGIN {self.zone_name}.\n" + self.soa_line(serial) + self.body

    def text_size(self) -> int:
        """len(self.text(0)), without joining the text."""
        before, after = self._soa_split
        return (len(self.zone_name) + 10 + len(f"@ {self.soa_ttl} IN SOA ") + len(before)
                + 1 + len(after) + len(self.body))

    def serial_split(self) -> tuple[str, str]:
        """(before, after) with ``text(s) == before + str(s) + after`` for every serial.

        Where a rendering keeps the serial's place open: the text is built once and a
        serial known later (a Pulumi Output) is put in without rendering again. In the
        SOA's presentation form the serial is the third field (names escape spaces).
        """
        before, after = self._soa_split
        head = f"$ORIGIN {self.zone_name}.\n@ {self.soa_ttl} IN SOA "
        return head + before, after + self.body


class RecordsFileError(Exception):
    """The records file cannot be used; `issues` says why, with paths."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        super().__init__("; ".join(map(str, issues)))


def records_file_path(zone: Zone, project_dir: Path) -> tuple[Path | None, str | None]:
    """safeyaml.path_inside's answer for the zone's records file. Thousands of zones keep
    their files in a few directories: a directory's real path is found once (per
    build_zones call, or per chunk in a worker) and only the file's own name is looked at
    for a link; anything else asks path_inside, which says what is wrong."""
    value = zone.recordsFile
    assert value is not None
    quick = _quick_inside(project_dir, value)
    return (quick, None) if quick is not None else safeyaml.path_inside(project_dir, value)


#: (project dir, directory as written) -> (the directory's real path, whether it is inside
#: the project's real path)
_REAL_DIRS: dict[tuple[Path, str], tuple[Path, bool]] = {}


def _quick_inside(project_dir: Path, value: str) -> Path | None:
    head, sep, name = value.rpartition("/")
    if (not name or "\0" in value or os.path.isabs(value) or name in (".", "..")
            or ".." in head.split("/")):
        return None
    dirs = _REAL_DIRS.get((project_dir, head))
    if dirs is None:
        root = project_dir.resolve()
        real_dir = (project_dir / head).resolve() if sep else root
        dirs = _REAL_DIRS[(project_dir, head)] = (real_dir, real_dir.is_relative_to(root))
    real_dir, inside = dirs
    if not inside:
        return None
    target = real_dir / name
    if os.path.islink(target):
        return None
    return target


def forget_real_paths() -> None:
    """Start a build afresh: links may have changed since the last one."""
    _REAL_DIRS.clear()


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
        entry = json.loads((directory / f"{key}.json").read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    return entry


_MADE: set[Path] = set()  # cache directories this process made (or found)
_PUT_COUNTER = itertools.count()


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
    # One encoding and one write: json.dump to a text file writes each small piece.
    data = json.dumps(entry).encode("utf-8")
    try:
        if directory not in _MADE:
            directory.mkdir(parents=True, exist_ok=True)
            _MADE.add(directory)
        # A name of its own (this process, a counter), not mkstemp's random tries.
        tmp = str(directory / f".{key[:16]}.{os.getpid()}.{next(_PUT_COUNTER)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o600)
        try:
            with open(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, directory / f"{key}.json")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        pass  # a read-only checkout still works, only slower


class _CacheWriter:
    """Cache entries written by a thread while the zones are built: a cold build writes
    one file per zone, and creating a file costs 0.2-1 ms of waiting on the file system
    (more while a cluster's etcd syncs beside it), which the builds need not wait for.
    close() returns once every entry handed over is written (or failed quietly)."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[tuple[Path, str, ZoneContent] | None] = \
            queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="zone-cache-writer",
                                       daemon=True)
        self.thread.start()

    def put(self, directory: Path, key: str, content: ZoneContent) -> None:
        self.queue.put((directory, key, content))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            with contextlib.suppress(Exception):  # a cache entry is never worth a failure
                _cache_put(*item)


_SOA_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?")


def _plain_name(text: str, origin: dns.name.Name) -> dns.name.Name:
    """dns.name.from_text(text, origin) for a name of plain ASCII labels (_SOA_NAME),
    without its character-by-character reading."""
    if text.endswith("."):
        return dns.name.Name([lbl.encode() for lbl in text[:-1].split(".")] + [b""])
    return dns.name.Name([lbl.encode() for lbl in text.split(".")] + list(origin.labels))


def _origin(zone_name: str) -> dns.name.Name:
    """dns.name.from_text(zone_name): made from its labels when they are plain ASCII."""
    if _SOA_NAME.fullmatch(zone_name) and not zone_name.endswith(".") \
            and len(zone_name) <= 253:
        return dns.name.Name([lbl.encode() for lbl in zone_name.split(".")] + [b""])
    return dns.name.from_text(zone_name)


_PLAIN_LABEL = re.compile(rb"[A-Za-z0-9_-]{1,63}")


def _soa_text(soa: dns.rdtypes.ANY.SOA.SOA) -> str:
    """soa.to_text(): written from the names' labels when every label is plain ASCII
    (nothing to escape) and both names are absolute, else by dnspython."""
    labels = soa.mname.labels + soa.rname.labels
    if not (soa.mname.is_absolute() and soa.rname.is_absolute()) or not all(
            _PLAIN_LABEL.fullmatch(lbl) for lbl in labels if lbl):
        return str(soa.to_text())
    mname = ".".join(lbl.decode() for lbl in soa.mname.labels[:-1]) + "."
    rname = ".".join(lbl.decode() for lbl in soa.rname.labels[:-1]) + "."
    return (f"{mname} {rname} {soa.serial} {soa.refresh} {soa.retry} {soa.expire} "
            f"{soa.minimum}")


def _soa_digestable(soa: dns.rdtypes.ANY.SOA.SOA) -> bytes:
    """soa.to_digestable(origin) for an SOA whose names are absolute (as _soa_rdata makes
    them): each name's labels in lower case, then the five numbers."""
    mname, rname = soa.mname, soa.rname
    if not (mname.is_absolute() and rname.is_absolute()):
        return soa.to_digestable()
    return b"".join([bytes((len(lbl),)) + lbl.lower() for lbl in mname.labels]
                    + [bytes((len(lbl),)) + lbl.lower() for lbl in rname.labels]) + struct.pack(
        "!IIIII", soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum)


def _soa_rdata(zone: Zone, origin: dns.name.Name) -> dns.rdata.Rdata:
    """The zone's SOA with serial 0 (dns.rdata.from_text's, built without its tokenizer:
    about a tenth of the cost, paid per zone on every build and cache hit)."""
    soa = zone.soaRecord
    assert soa is not None
    with contextlib.suppress(Exception):  # anything odd: dnspython's text path says what
        if _SOA_NAME.fullmatch(soa.primaryNs) and _SOA_NAME.fullmatch(soa.rname):
            # cast: dnspython leaves the rdata constructors unannotated
            make = cast(Callable[..., dns.rdata.Rdata], dns.rdtypes.ANY.SOA.SOA)
            return make(
                IN, dns.rdatatype.SOA,
                _plain_name(soa.primaryNs, origin), _plain_name(soa.rname, origin),
                0, soa.refresh, soa.retry, soa.expire, soa.negativeTtl)
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

    forget_real_paths()
    results: list[tuple[ZoneContent | None, list[ConfigIssue]] | None] = []
    missing: list[int] = []
    keys: list[tuple[Path, str] | None] = []
    cache_dir = _cache_dir(project_dir)
    for index, (zone, _) in enumerate(zones):
        directory = cache_dir if zone.soaRecord is not None else None
        key = _cache_key(zone, project_dir) if directory is not None else None
        keys.append((directory, key) if directory is not None and key is not None else None)
        hit = _cached_content(zone, *keys[-1]) if keys[-1] is not None else None
        results.append((hit, []) if hit is not None else None)
        if hit is None:
            missing.append(index)

    writer = _CacheWriter() if missing else None

    def cache(i: int, result: tuple[ZoneContent | None, list[ConfigIssue]]) -> None:
        where = keys[missing[i]]
        if result[0] is not None and where is not None and writer is not None:
            writer.put(where[0], where[1], result[0])

    try:
        built = zone_pool.build_many([zones[i] for i in missing], project_dir,
                                     max_file_bytes, on_result=cache)
    finally:
        if writer is not None:
            writer.close()
    for index, result in zip(missing, built, strict=True):
        results[index] = result
    return [r for r in results if r is not None]


def _cached_content(zone: Zone, directory: Path, key: str) -> ZoneContent | None:
    entry = _cache_get(directory, key)
    if entry is None:
        return None
    try:
        soa_rdata = _soa_rdata(zone, _origin(zone.zoneName))
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


#: Record-level problems reported per zone; past this many, one line says how many more.
MAX_RECORD_ISSUES = 200


class _Source:
    """Where a zone's records come from: its inline records, then its records file's.

    `rows()` gives (name, type, ttl, data) for each, in order (again on each call);
    `where(index)` is a record's config path and `line(index)` its line in the records
    file, when the file was read by the one-mapping-a-line reader.
    """

    def __init__(self, zone: Zone, path: str, inline: list[Record],
                 plain: fast_records.PlainRecords | None = None,
                 records: list[Record] | None = None):
        self.zone, self.path, self.inline = zone, path, inline
        self.plain, self.records = plain, records
        self.total = len(inline) + (plain.estimate if plain is not None else 0)

    def rows(self) -> Iterator[fast_records.Row]:
        inline = ((r.name, r.type, r.ttl, r.data) for r in self.inline)
        if self.plain is not None:
            return itertools.chain(inline, self.plain.rows()) if self.inline else \
                self.plain.rows()
        return itertools.chain(inline, ((r.name, r.type, r.ttl, r.data)
                                        for r in self.records or ()))

    def where(self, index: int) -> str:
        if index < len(self.inline):
            return f"{self.path}.records[{index}]"
        return f"{self.path}.recordsFile[{index - len(self.inline)}]"

    def at(self, index: int) -> str:
        """' (file line N)' for a record of a file read line by line, else ''."""
        if self.plain is None or index < len(self.inline):
            return ""
        line = self.plain.line_of_entry(index - len(self.inline))
        return f" ({self.zone.recordsFile} line {line})" if line else ""


def _sources(zone: Zone, project_dir: Path, path: str,
             max_file_bytes: int) -> tuple[_Source | None, _Source]:
    """(the fast source, or None when the file is not one mapping a line; the general
    source, read only when asked for). RecordsFileError: the file cannot be used."""
    inline = list(zone.records)
    if not zone.recordsFile:
        return _Source(zone, path, inline), _Source(zone, path, inline)
    file_path, _ = records_file_path(zone, project_dir)
    fast: _Source | None = None
    if file_path is not None:
        try:
            text = safeyaml.read_bytes(file_path, max_file_bytes).decode("utf-8")
            fast = _Source(zone, path, inline, plain=fast_records.PlainRecords(text))
        except (OSError, ValueError, fast_records.NotPlain):
            fast = None  # the general reader says what is wrong, if anything

    return fast, _General(zone, path, inline, project_dir, max_file_bytes)


class _General(_Source):
    """A zone's records read the general way (YAML events, a pydantic Record each): any
    records file, with every problem named; read when first asked for."""

    def __init__(self, zone: Zone, path: str, inline: list[Record], project_dir: Path,
                 max_file_bytes: int):
        super().__init__(zone, path, inline)
        self.project_dir, self.max_file_bytes = project_dir, max_file_bytes

    def rows(self) -> Iterator[fast_records.Row]:
        if self.records is None:
            self.records = load_records(self.zone, self.project_dir, self.path,
                                        self.max_file_bytes)[len(self.inline):]
            self.total = len(self.inline) + len(self.records)
        return super().rows()


def _build_zone(
    zone: Zone, path: str, project_dir: Path, max_file_bytes: int = safeyaml.DEFAULT_MAX_BYTES
) -> tuple[ZoneContent | None, list[ConfigIssue]]:
    if zone.soaRecord is None:
        return None, [
            ConfigIssue(
                path=f"{path}.soaRecord",
                message="a primary zone needs soaRecord (primaryNs, adminEmail); add it",
            )
        ]
    fast, general = _sources(zone, project_dir, path, max_file_bytes)
    # The build makes millions of lists and tuples, none in a cycle: the collector's
    # passes over them (and over everything else alive) would cost a third of the time.
    collecting = gc.isenabled()
    gc.disable()
    try:
        if fast is not None:
            try:
                return _ZoneBuild(zone, path, fast).run()
            except fast_records.NotPlain:
                pass  # a line of another shape: the whole file the general way
        if zone.recordsFile:
            general.rows()  # read (and check) the file before the progress line starts
        return _ZoneBuild(zone, path, general).run()
    except RecordsFileError as exc:
        return None, exc.issues
    finally:
        if collecting:
            gc.enable()


_CNAME = int(dns.rdatatype.CNAME)
_NS = int(dns.rdatatype.NS)
_A_TYPES = (int(dns.rdatatype.A), int(dns.rdatatype.AAAA))
_COMPANIONS = frozenset(int(t) for t in _CNAME_COMPANIONS)
_TYPE_NUMBERS = fast_records.TYPES
#: A relative name of plain labels: its text is what dnspython writes, its lower case the key.
_PLAIN_RELATIVE = re.compile(r"(?:[A-Za-z0-9_*-]{1,63}\.)*[A-Za-z0-9_*-]{1,63}")
#: model.is_hostname for the owner of an A/AAAA/MX (a leading '*' label allowed).
_HOST_OWNER_TEXT = re.compile(r"(?:\*(?:\.|$))?(?:[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?"
                              r"(?:\.|$))*")
#: parsed data kept per zone for the name-pointing types (targets repeat)
_MEMO_TYPES = frozenset((fast_records.CNAME, fast_records.NS, fast_records.PTR,
                         fast_records.MX, fast_records.SRV))
_MEMO_MAX = 65536


def _name_key(name: fast_records.Name) -> str:
    """The node key of a name inside the zone: its relative text in lower case ('@': apex).
    dnspython's text is one spelling per label sequence, so equal keys are equal names."""
    return name.text().lower()


def _key_labels(key: str) -> list[str]:
    """The labels of a node key, as text (a key's '\\.' is not a label boundary)."""
    if key == "@":
        return []
    if "\\" not in key:
        return key.split(".")
    return re.findall(r"(?:[^.\\]|\\[0-9]{3}|\\.)+", key)


def _key_wire_labels(key: str) -> list[bytes]:
    """A node key's labels as bytes (lower case, as the canonical form has them)."""
    if "\\" not in key:
        return [lbl.encode() for lbl in _key_labels(key)]
    return [dns.name.from_text(lbl, None).labels[0].lower() for lbl in _key_labels(key)]


class _ZoneBuild:
    """One zone's records checked, deduplicated as dnspython's Zone does, and written.

    Nodes are kept as ``key -> [owner text, rdtype, rdataset, rdtype, rdataset, ...]``
    in first-seen order, an rdataset as ``[ttl, parsed, parsed, ...]`` (the lowest TTL
    given; a singleton type keeps the last rdata) or None for a type refused beside a
    CNAME. Lists, not objects: a million-record zone is a million nodes.
    """

    def __init__(self, zone: Zone, path: str, source: _Source):
        self.zone, self.path, self.source = zone, path, source
        self.origin = _origin(zone.zoneName)
        self.fast_origin = fast_records.Origin(zone.zoneName)
        self.progress = _Progress(0, zone.zoneName)  # add_all starts the real one
        self.nodes: dict[str, list[Any]] = {}
        self.issues: list[ConfigIssue] = []
        self.more = 0  # record-level issues past MAX_RECORD_ISSUES
        self.bad: set[int] = set()  # records refused (name or data)
        self.clash: set[str] = set()  # nodes with a CNAME beside other data
        # (index, owner text, owner key, rdtype, target or None, owner is a hostname)
        self.checks: list[tuple[int, str, str, int, fast_records.Name | None, bool]] = []
        self.count = 0
        self.ns_keys: set[str] = set()  # names below the apex given NS records

    def issue(self, index: int, field: str, message: str) -> None:
        self.bad.add(index)
        if len(self.issues) >= MAX_RECORD_ISSUES:
            self.more += 1
            return
        self.issues.append(ConfigIssue(path=f"{self.source.where(index)}.{field}",
                                       message=message + self.source.at(index)))

    def run(self) -> tuple[ZoneContent | None, list[ConfigIssue]]:
        try:
            self.add_all()
        except BaseException:
            self.progress.done()
            raise
        if self.more:
            self.issues.append(ConfigIssue(path=f"{self.path}.records", message=(
                f"... and {self.more} more record(s) with problems (the first "
                f"{MAX_RECORD_ISSUES} are listed); fix those and validate again")))
        soa_rdata, whole = self.whole_zone_issues()
        issues = self.issues + whole
        warnings: list[ConfigIssue] = []
        if not issues:  # judged on the whole zone: a record refused above would mislead
            issues, warnings = self.bind_checks()
        if issues:
            self.progress.done()
            return None, issues
        assert isinstance(soa_rdata, dns.rdtypes.ANY.SOA.SOA)
        body, zonemd = self.write(_soa_digestable(soa_rdata))
        return (
            ZoneContent(zone_name=self.zone.zoneName, soa=soa_rdata, soa_ttl=self.zone.ttl,
                        body=body, record_count=self.count + 1, zonemd=zonemd,
                        warnings=tuple(warnings)),
            [],
        )

    def owner(self, index: int, name: str) -> tuple[str, str, fast_records.Name | None] | None:
        """(owner text, node key, the Name when not plain) of a record; None: refused."""
        if name == "@":
            return "@", "@", None
        fo = self.fast_origin
        if _PLAIN_RELATIVE.fullmatch(name) and len(name) + 1 + len(fo.wire) <= 255:
            return name, name.lower(), None
        owner = fast_records.parse_name(name, fo)
        if owner is None:  # what the fast parser does not take: dnspython decides
            try:
                owner = _slow_owner(name, self.origin)
            except _Refused as refused:
                self.issue(index, refused.field, refused.message)
                return None
        if not owner.inside:
            self.issue(index, "name", (
                f"{name!r} is outside the zone {self.zone.zoneName}; "
                "use a relative name or one ending in the zone name"))
            return None
        text = owner.text()
        return text, text.lower(), owner

    def add_all(self) -> None:
        nodes = self.nodes
        checks = self.checks
        fo = self.fast_origin
        default_ttl = self.zone.ttl
        parse = fast_records.parse
        memo: dict[tuple[int, str], fast_records.Parsed] = {}
        progress = self.progress = _Progress(self.source.total, self.zone.zoneName)
        singletons, companions, host_owner = _SINGLETONS, _COMPANIONS, _HOST_OWNER_INT
        host_text = _HOST_OWNER_TEXT.fullmatch
        plain_relative = _PLAIN_RELATIVE.fullmatch
        a_type, ipv4, inet_aton = fast_records.A, fast_records.IPV4.fullmatch, socket.inet_aton
        room = 255 - 1 - len(fo.wire)  # the longest relative name (text) that fits
        index = -1
        for index, (name, rtype, ttl, data) in enumerate(self.source.rows()):
            if not index & 0x3FFF:
                progress.tick(index)
            if plain_relative(name) and len(name) <= room:
                text, key, owner_name = name, name.lower(), None
            else:
                owner = self.owner(index, name)
                if owner is None:
                    continue
                text, key, owner_name = owner
            rdtype = _TYPE_NUMBERS.get(rtype)
            parsed: fast_records.Parsed | None
            if rdtype is None:
                parsed = None
            elif rdtype == a_type:
                if ipv4(data):
                    wire = inet_aton(data)
                    parsed = (data, wire, wire, None)
                else:
                    parsed = None
            elif rdtype in _MEMO_TYPES:
                parsed = memo.get((rdtype, data))
                if parsed is None:
                    parsed = parse(rdtype, data, fo)
                    if parsed is not None and len(memo) < _MEMO_MAX:
                        memo[(rdtype, data)] = parsed
            else:
                parsed = parse(rdtype, data, fo)
            if parsed is None:  # what the fast parser does not take: dnspython decides
                try:
                    rdtype, parsed = _slow_rdata(rtype, data, self.origin)
                except _Refused as refused:
                    self.issue(index, refused.field, refused.message)
                    continue
            assert rdtype is not None
            if ttl is None:
                ttl = default_ttl
            node = nodes.get(key)
            if node is None:
                if key == "@" and rdtype not in companions:  # beside the SOA
                    node = nodes[key] = [text]
                else:
                    nodes[key] = [text, rdtype, [ttl, parsed]]
                    node = None
            if node is not None:
                # Checked here, not on the zone: dnspython silently drops a CNAME when
                # other data is added at its name (and the other data when a CNAME is).
                rds = None
                cname = False
                other = key == "@"  # the SOA
                found = False
                for j in range(1, len(node), 2):
                    t = node[j]
                    if t == rdtype:
                        found = True
                        rds = node[j + 1]
                    if t == _CNAME:
                        cname = True
                    elif t not in companions:
                        other = True
                if (cname and rdtype not in companions) or (rdtype == _CNAME and other):
                    self.clash.add(key)
                    if not found:
                        node += (rdtype, None)
                    continue
                if not found:
                    node += (rdtype, [ttl, parsed])
                elif rds is not None:
                    if ttl < rds[0]:
                        rds[0] = ttl
                    if rdtype in singletons:
                        del rds[1:]
                        rds.append(parsed)
                    else:
                        dedup = parsed[2]
                        for kept in rds[1:]:
                            if kept[2] == dedup:
                                break
                        else:
                            rds.append(parsed)
            target = parsed[3]
            if rdtype == _NS and key != "@":
                self.ns_keys.add(key)
            if rdtype in host_owner:
                if owner_name is not None:
                    hostname = _hostname(owner_name.labels, wildcard=True)
                else:  # a plain name: only '_', '*' and '-' can make it no hostname
                    hostname = not ("_" in text or "*" in text or "-" in text) or (
                        host_text(text) is not None)
                if not hostname or target is not None:
                    checks.append((index, text, key, rdtype, target, hostname))
            elif target is not None:
                checks.append((index, text, key, rdtype, target, True))
        self.count = index + 1

    def has(self, key: str, rdtype: int) -> bool:
        node = self.nodes.get(key)
        if node is None:
            return False
        return any(node[j] == rdtype and node[j + 1] is not None
                   for j in range(1, len(node), 2))

    def clash_paths(self) -> dict[str, tuple[str, set[int]]]:
        """For each node with a CNAME beside other data: (the config path of its first
        CNAME, every type given there), as the records come (read again: only on error)."""
        seen: dict[str, dict[int, str]] = {
            key: ({int(dns.rdatatype.SOA): f"{self.path}.soaRecord"} if key == "@" else {})
            for key in self.clash}
        for index, (name, rtype, _, _) in enumerate(self.source.rows()):
            if index in self.bad:
                continue
            owner = self.owner(index, name)
            if owner is None or owner[1] not in seen:
                continue
            rdtype = _TYPE_NUMBERS.get(rtype)
            if rdtype is None:
                rdtype = int(dns.rdatatype.from_text(rtype))
            seen[owner[1]].setdefault(rdtype, self.source.where(index))
        return {key: (types[_CNAME], set(types)) for key, types in seen.items()}

    def whole_zone_issues(self) -> tuple[Any, list[ConfigIssue]]:
        """What only the whole zone tells: a CNAME beside other data, no NS at the apex, an
        SOA that is not valid. Returns the SOA rdata (None when it is not valid) too."""
        zone, path = self.zone, self.path
        issues: list[ConfigIssue] = []
        for key, (where, types) in (self.clash_paths() if self.clash else {}).items():
            others = sorted(_type_text(t) for t in types if t != _CNAME)
            owner_text = "the apex (@)" if key == "@" else self.nodes[key][0]
            issues.append(ConfigIssue(path=where, message=(
                f"{owner_text} has a CNAME beside other data ({', '.join(others)}); a CNAME "
                "must be the only record at its name: remove the CNAME or the other records")))
        if not self.has("@", _NS):
            issues.append(ConfigIssue(path=f"{path}.records", message=(
                f"zone {zone.zoneName} has no NS record at its apex; add "
                "{name: '@', type: NS, data: ns1." + zone.zoneName + ".}")))
        try:
            soa_rdata = _soa_rdata(zone, self.origin)
        except Exception as exc:
            issues.append(ConfigIssue(path=f"{path}.soaRecord",
                                      message=f"SOA is not valid: {exc}"))
            return None, issues
        assert isinstance(soa_rdata, dns.rdtypes.ANY.SOA.SOA) and zone.soaRecord is not None
        if not is_hostname(soa_rdata.mname):
            issues.append(ConfigIssue(path=f"{path}.soaRecord.primaryNs", message=(
                f"{zone.soaRecord.primaryNs!r} is not a hostname (BIND's check-names refuses "
                "the zone); use letters, digits and '-' per label, e.g. 'ns1.example.com.'")))
        return soa_rdata, issues

    def bind_checks(self) -> tuple[list[ConfigIssue], list[ConfigIssue]]:
        """(errors, warnings) for the records as named would judge them on load."""
        errors: list[ConfigIssue] = []
        warnings: list[ConfigIssue] = []
        origin, where, at = self.fast_origin, self.source.where, self.source.at
        delegations = {key for key in self.ns_keys if self.has(key, _NS)}

        def under_delegation(labels: list[str]) -> bool:
            return bool(delegations) and any(
                ".".join(labels[-n:]) in delegations for n in range(1, len(labels) + 1))

        for index, owner_text, owner_key, rdtype, target, hostname in self.checks:
            if not hostname:
                errors.append(ConfigIssue(path=f"{where(index)}.name", message=(
                    f"{owner_text} is not a hostname, and {_type_text(rdtype)} records need "
                    "one (BIND's check-names refuses the zone); use letters, digits and '-' "
                    "per label, no '_' (or use a TXT/SRV record for underscore names)"
                    + at(index))))
            if target is None or (not target.inside and not target.labels):
                continue  # not a name-pointing type, or the null MX / SRV "."
            kind = _type_text(rdtype)
            if not _hostname(target.labels):
                errors.append(ConfigIssue(path=f"{where(index)}.data", message=(
                    f"{kind} target {target.text()} is not a hostname (BIND's check-names "
                    "refuses the zone); use letters, digits and '-' per label, no '_'"
                    + at(index))))
                continue
            absolute = target.absolute_text(origin)
            if rdtype == _NS and _looks_like_address(absolute):
                errors.append(ConfigIssue(path=f"{where(index)}.data", message=(
                    f"NS target {target.text()} is an address; an NS record names a server: "
                    "write its name (e.g. 'ns1.example.com.') and give the name an A/AAAA "
                    "record" + at(index))))
                continue
            if not target.inside:
                continue  # out of zone: not ours to check
            inside = _name_key(target)
            if self.has(inside, _CNAME):
                errors.append(ConfigIssue(path=f"{where(index)}.data", message=(
                    f"{kind} target {absolute} is a CNAME, which named calls illegal ("
                    + ("it refuses the zone" if rdtype == _NS else "RFC 2181 10.3")
                    + f"); point the {kind} at the name the CNAME leads to, or replace the "
                    "CNAME with A/AAAA records" + at(index))))
                continue
            if self.has(inside, _A_TYPES[0]) or self.has(inside, _A_TYPES[1]):
                continue
            inside_text = target.text()
            inside_labels = _key_labels(inside)
            owner_labels = _key_labels(owner_key)
            if rdtype == _NS and not owner_labels and not under_delegation(inside_labels):
                errors.append(ConfigIssue(path=f"{where(index)}.data", message=(
                    f"NS {absolute} is inside the zone but has no address record (BIND "
                    f"refuses the zone); add {{name: '{inside_text}', type: A, data: <its IP>}}"
                    + at(index))))
            elif rdtype == _NS and inside_labels[len(inside_labels) - len(owner_labels):] \
                    == owner_labels:
                warnings.append(ConfigIssue(path=f"{where(index)}.data", message=(
                    f"delegation {owner_text} has no glue for {absolute} (BIND warns: "
                    f"required glue); add {{name: '{inside_text}', type: A, data: <its IP>}}")))
            elif rdtype != _NS and not under_delegation(inside_labels):
                warnings.append(ConfigIssue(path=f"{where(index)}.data", message=(
                    f"{kind} target {absolute} has no A/AAAA record in the zone (BIND warns); "
                    f"add {{name: '{inside_text}', type: A, data: <its IP>}} or fix the name")))
        return errors, warnings

    def write(self, soa_wire: bytes) -> tuple[str, str]:
        """(the body: Zone.to_text(sorted=True, relativize=True) without the SOA; the
        digest of text(0): Zone.compute_digest(SHA384) with the SOA at serial 0).

        One pass over the nodes in DNSSEC order, each dropped once written: the body
        grows as the nodes go, so a big zone is not held twice."""
        nodes = self.nodes
        keys = list(nodes)
        if any("\\" in k for k in keys):
            def sort_key(k: str) -> Any:
                return tuple(lbl.decode("latin-1") for lbl in reversed(_key_wire_labels(k)))
            keys.sort(key=sort_key)
        else:  # labels of [a-z0-9_*-]: joined by a character below all of them
            # (each key's sort text is its own: no two keys share one, so no ties)
            by_text = {("\0".join(reversed(k.split("."))) if "." in k else k)
                       if k != "@" else "": k for k in keys}
            keys = [by_text[t] for t in sorted(by_text)]
        progress = self.progress
        origin_wire = self.fast_origin.wire
        soa_ttl = self.zone.ttl
        soa_type = int(dns.rdatatype.SOA)
        type_text = _TYPE_TEXT
        pack = struct.pack
        hasher = hashlib.sha384()
        chunks: list[str] = []
        lines: list[str] = []
        digestable: list[bytes] = []
        for n, key in enumerate(keys):
            node = nodes.pop(key)
            if key == "@":
                name_wire = origin_wire
            elif "." not in key and "\\" not in key:  # one label: most names
                name_wire = bytes((len(key),)) + key.encode() + origin_wire
            elif "\\" not in key:
                name_wire = b"".join([bytes((len(lbl),)) + lbl
                                      for lbl in key.encode().split(b".")]) + origin_wire
            else:
                name_wire = b"".join(bytes((len(lbl),)) + lbl
                                     for lbl in _key_wire_labels(key)) + origin_wire
            rds = node[2] if len(node) == 3 else None
            if rds is not None and len(rds) == 2 and key != "@":  # one record: most nodes
                rdtype, parsed = node[1], rds[1]
                kind = type_text.get(rdtype) or _type_text(rdtype)
                lines.append(f"{node[0]} {rds[0]} IN {kind} {parsed[0]}")
                wire = parsed[1]
                digestable.append(name_wire + pack("!HHIH", rdtype, IN, rds[0], len(wire))
                                  + wire)
            else:
                owner = node[0]
                sets: list[tuple[int, int, list[bytes]]] = []
                for j in range(1, len(node), 2):
                    rdtype, rds = node[j], node[j + 1]
                    if rds is None:
                        continue
                    kind = type_text.get(rdtype) or _type_text(rdtype)
                    head = f"{owner} {rds[0]} IN {kind} "
                    for parsed in rds[1:]:
                        lines.append(head + parsed[0])
                    sets.append((rdtype, rds[0], [p[1] for p in rds[1:]]))
                if key == "@":
                    sets.append((soa_type, soa_ttl, [soa_wire]))
                sets.sort()
                for rdtype, ttl, wires in sets:
                    fixed = name_wire + pack("!HHI", rdtype, IN, ttl)
                    wires.sort()
                    for wire in wires:
                        digestable.append(fixed + pack("!H", len(wire)) + wire)
            if not n & 0x3FFF:
                progress.tick(n, "names written", len(keys))
                hasher.update(b"".join(digestable))
                digestable.clear()
                if lines:
                    chunks.append("\n".join(lines) + "\n")
                    lines.clear()
        hasher.update(b"".join(digestable))
        if lines:
            chunks.append("\n".join(lines) + "\n")
        progress.done()
        return "".join(chunks), hasher.hexdigest()


_HOST_OWNER_INT = frozenset(int(t) for t in (dns.rdatatype.A, dns.rdatatype.AAAA,
                                             dns.rdatatype.MX))


class _Refused(Exception):
    """A record's field that dnspython refuses: (field, message)."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(message)


def _slow_owner(name: str, origin: dns.name.Name) -> fast_records.Name:
    """A record's owner name through dnspython (IDNA, escapes); _Refused says why not."""
    owner: dns.name.Name | None = None
    if not name or any(c.isspace() for c in name):
        problem = "it is empty or contains whitespace"
    else:
        try:
            owner = dns.name.from_text(name, origin, idna_codec=IDNA)
        except dns.exception.DNSException as exc:
            problem = str(exc)
    if owner is None:
        raise _Refused("name", f"{name!r} is not a valid record name ({problem}); {NAME_HINT}")
    return fast_records.from_dnspython(owner, origin)


def _slow_rdata(rtype: str, data: str, origin: dns.name.Name) -> tuple[int, fast_records.Parsed]:
    """A record's type and data through dnspython; _Refused says why not."""
    try:
        rdtype = dns.rdatatype.from_text(rtype)
        rdata = dns.rdata.from_text(IN, rdtype, data, origin=origin,
                                    relativize=True, idna_codec=IDNA)
    except Exception as exc:
        example = DATA_EXAMPLES.get(rtype)
        hint = (f"write it as in a master file, e.g. {rtype} {example}" if example
                else "write it as in a master file")
        raise _Refused("data", f"{rtype} data {data!r} is not valid ({exc}); {hint}") from None
    if rdtype == dns.rdatatype.SOA:
        raise _Refused("type", "put the SOA in soaRecord, not records")
    return int(rdtype), _from_rdata(rdata, origin)


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
        fast_records.dedup(relative, rdata.to_digestable(dns.name.root)),
        fast_records.from_dnspython(target, origin) if target is not None else None,
    )


class _Progress:
    """A line on stderr that says how far a big zone's build is, only when stderr is a
    terminal (logs and CI see nothing): records checked of about how many, and the rate."""

    AFTER_S = 1.0
    MIN_RECORDS = 50_000

    def __init__(self, total: int, zone_name: str):
        import sys
        import time

        self.total = total
        self.zone_name = zone_name
        self.start = time.monotonic()
        self.stream = sys.stderr
        self.enabled = total >= self.MIN_RECORDS and _isatty(self.stream)
        self.shown = False
        self.what, self.phase_start = "records checked", self.start

    def tick(self, done: int, what: str = "records checked", total: int | None = None) -> None:
        if not self.enabled:
            return
        import time

        elapsed = time.monotonic() - self.start
        if elapsed < self.AFTER_S:
            return
        self.shown = True
        total = max(self.total if total is None else total, done)
        if what != self.what:  # a new phase: its rate from now
            self.what, self.phase_start = what, time.monotonic()
        took = time.monotonic() - self.phase_start
        rate = done / took if took > 0 else 0.0
        self.stream.write(f"\r\033[K{self.zone_name}: {done:,}/{total:,} {what} "
                          f"({rate:,.0f}/s, {elapsed:.0f} s)")
        self.stream.flush()

    def done(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


_SINGLETONS = frozenset(int(t) for t in dns.rdatatype.RdataType if dns.rdatatype.is_singleton(t))


def _type_text(rdtype: int) -> str:
    text = _TYPE_TEXT.get(rdtype)
    if text is None:
        text = _TYPE_TEXT[rdtype] = dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))
    return text


_TYPE_TEXT: dict[int, str] = {}


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
_ADDRESS_CHARS = frozenset("0123456789abcdefABCDEF.:")


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


def _looks_like_address(text: str) -> bool:
    import ipaddress

    if not _ADDRESS_CHARS.issuperset(text):
        return False

    try:
        ipaddress.ip_address(text.removesuffix("."))
    except ValueError:
        return False
    return True
