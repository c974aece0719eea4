"""The record types users write most, parsed and written without dnspython rdata objects.

A, AAAA, CNAME, MX, NS, TXT, SRV, CAA and PTR data in the shapes people write are
checked and turned, here, into exactly what dnspython would give for them: the
master-file text (`Rdata.to_text(origin=zone, relativize=True)`), the canonical
wire form (`to_digestable(zone)`, what the ZONEMD digest hashes) and the key
dnspython's rdatasets deduplicate on. Any other shape (escapes in names,
non-ASCII names, generic `\\#` data, tabs, parentheses, out-of-range numbers,
anything invalid) returns None and the caller asks dnspython, which stays the
judge of what is valid and the oracle of tests/test_fastrecords.py: the two must
agree byte for byte.
"""

from __future__ import annotations

import functools
import re
import socket
import struct
from collections.abc import Iterator
from typing import Any

import dns.ipv6

#: A name as the fast path takes it: ASCII letters, digits, '-', '_', '*', dots.
_NAME = re.compile(r"(?:[A-Za-z0-9_*-]{1,63}\.)*[A-Za-z0-9_*-]{1,63}\.?")
IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                   r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])")
_MX = re.compile(r"([0-9]{1,5}) +(\S+)")
_SRV = re.compile(r"([0-9]{1,5}) +([0-9]{1,5}) +([0-9]{1,5}) +(\S+)")
_CAA = re.compile(r'([0-9]{1,3}) +([A-Za-z0-9]{1,255}) +(?:"((?:[^"\\\n]|\\[^0-9\n]|\\[0-9]{3})*)"'
                  r'|([^\s"\\();]+))')
# TXT: quoted strings (escapes \X and \DDD) or plain words, separated by spaces.
_TXT_TOKEN = re.compile(r' *(?:"((?:[^"\\\n]|\\[^0-9\n]|\\[0-9]{3})*)"|([^\s"\\();]+))')
_ESCAPE = re.compile(r"\\(?:([0-9]{3})|(.))", re.S)
_IPV6_HEX = re.compile(r"[0-9A-Fa-f:]{2,39}")
_TXT_SIMPLE = re.compile(r'"[ !#-\[\]-~]{0,255}"')
_AF_INET6 = socket.AF_INET6
_inet_aton, _inet_pton, _inet_ntop = socket.inet_aton, socket.inet_pton, socket.inet_ntop

A, NS, CNAME, PTR, MX, TXT, AAAA, SRV, CAA = 1, 2, 5, 12, 15, 16, 28, 33, 257
TYPES = {"A": A, "NS": NS, "CNAME": CNAME, "PTR": PTR, "MX": MX, "TXT": TXT, "AAAA": AAAA,
         "SRV": SRV, "CAA": CAA}
_ROOT = b"\x00"


class Origin:
    """The zone's origin, as the fast path needs it."""

    def __init__(self, zone_name: str):
        labels = [lbl for lbl in zone_name.rstrip(".").split(".") if lbl]
        self.labels = tuple(lbl.lower() for lbl in labels)
        self.count = len(self.labels)
        self.wire = b"".join(bytes((len(lbl),)) + lbl.encode() for lbl in self.labels) + _ROOT
        self.text = ".".join(self.labels) + "."
        self.body = ".".join(self.labels)  # no trailing dot, lower case
        self.dot_body = "." + self.body


class Name:
    """A name as the zone holds it: relative to the origin when under it (`inside`)."""

    __slots__ = ("inside", "labels")

    def __init__(self, labels: tuple[bytes, ...], inside: bool):
        self.labels = labels  # relative labels when inside, else absolute (no root label)
        self.inside = inside

    @property
    def key(self) -> tuple[bytes, ...]:
        """The DNSSEC sort order of names inside the zone (case-insensitive, right to left)."""
        return tuple(lbl.lower() for lbl in reversed(self.labels))

    def text(self) -> str:
        """As dnspython's Name.to_text writes the relativized name."""
        if self.inside:
            return ".".join(map(label_text, self.labels)) if self.labels else "@"
        return ".".join(map(label_text, self.labels)) + "."

    def absolute_text(self, origin: Origin) -> str:
        if not self.inside:
            return self.text()
        if not self.labels:
            return origin.text
        return ".".join(map(label_text, self.labels)) + "." + origin.text

    def wire(self, origin: Origin) -> bytes:
        """Canonical (lower-case) wire form of the absolute name."""
        head = b"".join(bytes((len(lbl),)) + lbl.lower() for lbl in self.labels)
        return head + (origin.wire if self.inside else _ROOT)

    def root_wire(self) -> bytes:
        """What dnspython compares rdata on: relative names made absolute at the root."""
        return b"".join(bytes((len(lbl),)) + lbl.lower() for lbl in self.labels) + _ROOT


_LABEL_PLAIN = re.compile(rb"[!#%&'*+,/0-9:<=>?A-Z\[\]^_`a-z{|}~-]*")
_STRING_PLAIN = re.compile(rb"[ !#-\[\]-~]*")


def label_text(label: bytes) -> str:
    """dnspython's escaping of a label (dns.name._escapify)."""
    if _LABEL_PLAIN.fullmatch(label):
        return label.decode("ascii")
    out = []
    for c in label:
        if c in b'"().;\\@$':
            out.append("\\" + chr(c))
        elif 0x20 < c < 0x7F:
            out.append(chr(c))
        else:
            out.append(f"\\{c:03d}")
    return "".join(out)


def from_dnspython(name: object, origin: object) -> Name:
    """A dnspython Name (absolute, or relative to the origin) as a fast-path Name."""
    import dns.name

    assert isinstance(name, dns.name.Name) and isinstance(origin, dns.name.Name)
    if name.is_absolute():
        if name.is_subdomain(origin):
            return Name(tuple(name.relativize(origin).labels), True)
        return Name(tuple(name.labels[:-1]), False)
    return Name(tuple(name.labels), True)


def parse_name(text: str, origin: Origin) -> Name | None:
    """A name in the simple shape, relativized as dnspython does; None: ask dnspython."""
    if text == "@":
        return Name((), True)
    if text == ".":
        return Name((), False)
    if not _NAME.fullmatch(text):
        return None
    if text[-1] == ".":
        parts = text[:-1].split(".")
        size = sum(len(p) + 1 for p in parts) + 1
        if size > 255:
            return None
        n = origin.count
        if len(parts) >= n and tuple(p.lower() for p in parts[len(parts) - n:]) == origin.labels:
            return Name(tuple(p.encode() for p in parts[:len(parts) - n]), True)
        return Name(tuple(p.encode() for p in parts), False)
    parts = text.split(".")
    if sum(len(p) + 1 for p in parts) + len(origin.wire) > 255:
        return None
    return Name(tuple(p.encode() for p in parts), True)


def escapify(data: bytes) -> str:
    """dnspython's escaping of a character string (dns.rdata._escapify)."""
    if _STRING_PLAIN.fullmatch(data):
        return data.decode("ascii")
    out = []
    for c in data:
        if c == 0x22 or c == 0x5C:
            out.append("\\" + chr(c))
        elif 0x20 <= c < 0x7F:
            out.append(chr(c))
        else:
            out.append(f"\\{c:03d}")
    return "".join(out)


def _unescape(text: str) -> bytes | None:
    """The bytes of a string with \\X and \\DDD escapes (Token.unescape_to_bytes)."""
    if "\\" not in text:
        return text.encode()
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        out += text[pos:m.start()].encode()
        if m.group(1) is not None:
            value = int(m.group(1))
            if value > 255:
                return None
            out.append(value)
        else:
            out += m.group(2).encode()
        pos = m.end()
    out += text[pos:].encode()
    return bytes(out)


def _string(quoted: str | None, plain: str | None) -> bytes | None:
    return _unescape(quoted if quoted is not None else plain or "")


# One parsed record: (text, canonical wire, dedup key, the NS/MX/SRV target or None).
Parsed = tuple[str, bytes, "bytes | tuple[bool, bytes]", "Name | None"]


def dedup(relative: bool, root_wire: bytes) -> bytes | tuple[bool, bytes]:
    """What dnspython's rdatasets deduplicate on: the rdata's wire form with names made
    absolute at the root, and whether they were relative (Rdata._cmp), as one value (the
    bytes alone when nothing was relative, as for most: no tuple to keep)."""
    return (True, root_wire) if relative else root_wire


_LENGTH = [bytes((n,)) for n in range(64)]


def _wire_of(lower: str) -> bytes:
    """The length-prefixed labels of a plain dotted name (no root label)."""
    return b"".join([_LENGTH[len(lbl)] + lbl for lbl in lower.encode().split(b".")])


def _target(text: str, origin: Origin, keep: bool
            ) -> tuple[str, bytes, bytes, bool, Name | None] | None:
    """parse_name's answer in the form rdata needs, without Name objects: (dnspython's
    relativized text, canonical wire, wire made absolute at the root, inside, the Name
    when *keep*); None: ask parse_name."""
    if not _NAME.fullmatch(text) or not origin.count:
        return None
    if text[-1] == ".":
        body = text[:-1]
        low = body.lower()
        if low == origin.body:
            return "@", origin.wire, _ROOT, True, Name((), True) if keep else None
        if not low.endswith(origin.dot_body):
            if len(body) + 2 > 255:
                return None
            wire = _wire_of(low) + _ROOT
            return (text, wire, wire, False,
                    Name(tuple(body.encode().split(b".")), False) if keep else None)
        rel = body[:len(body) - len(origin.dot_body)]
    else:
        rel = text
    if len(rel) + 1 + len(origin.wire) > 255:
        return None
    head = _wire_of(rel.lower())
    return (rel, head + origin.wire, head + _ROOT, True,
            Name(tuple(rel.encode().split(b".")), True) if keep else None)


def parse(rdtype: int, data: str, origin: Origin) -> Parsed | None:
    """The record's text, wire and dedup key; None when dnspython must judge it."""
    if rdtype == A:
        if not IPV4.fullmatch(data):
            return None
        wire = _inet_aton(data)  # exact on the dotted quads the pattern takes
        return data, wire, wire, None
    if rdtype == AAAA:
        # Hex groups only (no embedded IPv4, no zone index): the C library reads them as
        # dnspython does; its text is dnspython's unless it writes an IPv4 tail.
        if not _IPV6_HEX.fullmatch(data):
            return None
        try:
            wire = _inet_pton(_AF_INET6, data)
        except OSError:
            return None
        text = _inet_ntop(_AF_INET6, wire)
        if "." in text:
            text = dns.ipv6.inet_ntoa(wire)
        return text, wire, wire, None
    if rdtype in (CNAME, NS, PTR):
        quick = _target(data, origin, rdtype == NS)
        if quick is not None:
            text, wire, root, inside, target = quick
            return text, wire, (True, root) if inside else root, target
        name = parse_name(data, origin)
        if name is None:
            return None
        return (name.text(), name.wire(origin), dedup(name.inside, name.root_wire()),
                name if rdtype == NS else None)
    if rdtype == MX:
        m = _MX.fullmatch(data)
        if not m:
            return None
        pref = int(m.group(1))
        if pref > 65535:
            return None
        head = struct.pack("!H", pref)
        quick = _target(m.group(2), origin, True)
        if quick is not None:
            text, wire, root, inside, target = quick
            return (f"{pref} {text}", head + wire, (True, head + root) if inside
                    else head + root, target)
        name = parse_name(m.group(2), origin)
        if name is None:
            return None
        return (f"{pref} {name.text()}", head + name.wire(origin),
                dedup(name.inside, head + name.root_wire()), name)
    if rdtype == SRV:
        m = _SRV.fullmatch(data)
        if not m:
            return None
        prio, weight, port = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if max(prio, weight, port) > 65535:
            return None
        head = struct.pack("!HHH", prio, weight, port)
        quick = _target(m.group(4), origin, True)
        if quick is not None:
            text, wire, root, inside, target = quick
            return (f"{prio} {weight} {port} {text}", head + wire,
                    (True, head + root) if inside else head + root, target)
        name = parse_name(m.group(4), origin)
        if name is None:
            return None
        return (f"{prio} {weight} {port} {name.text()}", head + name.wire(origin),
                dedup(name.inside, head + name.root_wire()), name)
    if rdtype == TXT:
        return _txt(data)
    if rdtype == CAA:
        m = _CAA.fullmatch(data)
        if not m:
            return None
        flags = int(m.group(1))
        value = _string(m.group(3), m.group(4))
        if flags > 255 or value is None:
            return None
        tag = m.group(2).encode()
        wire = bytes((flags, len(tag))) + tag + value
        return f'{flags} {m.group(2)} "{escapify(value)}"', wire, wire, None
    return None


def _txt(data: str) -> Parsed | None:
    if _TXT_SIMPLE.fullmatch(data):  # one quoted string of plain characters: as written
        wire = bytes((len(data) - 2,)) + data[1:-1].encode("ascii")
        return data, wire, wire, None
    strings: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        m = _TXT_TOKEN.match(data, pos)
        if not m or m.end() == pos:
            break
        value = _string(m.group(1), m.group(2))
        if value is None or len(value) > 255:
            return None
        strings.append(value)
        pos = m.end()
    while pos < end and data[pos] == " ":
        pos += 1
    if pos != end or not strings:
        return None
    wire = b"".join(bytes((len(s),)) + s for s in strings)
    if len(wire) > 65535:
        return None
    text = " ".join(f'"{escapify(s)}"' for s in strings)
    return text, wire, wire, None


# --------------------------------------------------------------------------- records files
#
# A records file of a million records is a million YAML flow mappings, about eight parser
# events each: reading it through the YAML parser and a pydantic Record per entry costs
# more than checking the records. Files written one flow mapping a line (as the bench, the
# bindy import and most people write them) are read here with one regular expression a
# line, straight into (name, type, ttl, data); the first line of any other shape, and any
# value YAML or Record would read otherwise than plainly, ends the fast reading
# (NotPlain) and the caller reads the file the general way. tests/test_fastrecords.py
# holds the two readers equal on the shapes taken and on many that are not.

#: A value in a flow mapping: a double-quoted string of printable ASCII whose only
#: escapes are \" and \\, or a plain scalar of name-like characters (no ':', '#', quotes).
_QUOTED = r'"[ !#-\[\]-~]*(?:\\["\\][ !#-\[\]-~]*)*"'
_PLAIN = r"[A-Za-z0-9_.][A-Za-z0-9_.+=/-]*(?: +[A-Za-z0-9_.+=/-]+)*"
_PAIR = rf"([a-z]+) *: +({_QUOTED}|{_PLAIN}) *"
#: the end of an entry's line, and the blank and comment lines after it
_TAIL = r" *(?: #[^\n]*)?\n(?: *(?:#[^\n]*)?\n)*"
_ENTRY = re.compile(rf"( *)- +\{{ *{_PAIR}(?:, *{_PAIR})?(?:, *{_PAIR})?(?:, *{_PAIR})?\}}"
                    + _TAIL)
_COMMON = re.compile(rf"( *)- \{{name: ({_QUOTED}|{_PLAIN}), type: ([A-Za-z0-9]+), "
                     rf"data: ({_QUOTED}|{_PLAIN})(?:, ttl: ([0-9]+))?\}}" + _TAIL)
_SKIP = re.compile(r"(?: *(?:#[^\n]*)?\n)*")  # blank and comment lines
_HEADER = re.compile(r"records: *(?: #[^\n]*)?\n")
_UNESCAPE = re.compile(r"\\(.)")
_FIELDS = frozenset(("name", "type", "ttl", "data"))
_MAX_TTL = 2**31 - 1

Row = tuple[str, str, "int | None", str]


class NotPlain(Exception):
    """The records file is not in the one-mapping-a-line shape: read it the general way."""


class PlainRecords:
    """The records of a file in the one-mapping-a-line shape, read lazily; `rows()` raises
    NotPlain at the first line of another shape (before any row when the header is)."""

    def __init__(self, text: str):
        if not text.endswith("\n"):
            text += "\n"
        self.text = text
        pos = _SKIP.match(text).end()  # type: ignore[union-attr]
        header = _HEADER.match(text, pos)
        self.start = _SKIP.match(text, header.end()).end() if header else pos  # type: ignore[union-attr]
        first = _ENTRY.match(text, self.start)
        if first is None:
            raise NotPlain("no record on the first line")
        self.indent = first.group(1)
        if not header and self.indent:
            raise NotPlain("an indented list without 'records:'")
        #: (position, line) of every 4096th entry, as rows() passes it: where line_of_entry
        #: starts counting
        self.marks: list[tuple[int, int]] = []
        self.bulk = False  # rows() read every entry at once (marks are made when asked)
        #: about how many records (the progress line's total): entry lines at this indent
        self.estimate = text.count("\n" + self.indent + "- {", max(self.start - 1, 0)) + (
            self.start == 0)

    def rows(self) -> Iterator[Row]:
        """(name, type, ttl, data) of each record; NotPlain at the first line (or value)
        of another shape."""
        if len(self.text) - self.start <= _BULK_MAX_CHARS:
            bulk = self._bulk()
            if bulk is not None:
                return iter(bulk)
        return self._rows()

    def _bulk(self) -> list[Row] | None:
        """Every row at once when every entry line has the common shape (the file the
        bench, the bindy import and records_text write): one C-level check that the lines
        tile the text, one findall for their fields, then each value as _rows takes it
        (the same regular expression, so the same matches). None: not every line does."""
        check, fields = _bulk_patterns(self.indent)
        if check.fullmatch(self.text, self.start) is None:
            return None
        plain: dict[str, Any] = {}
        kinds: dict[str, str] = {}
        out: list[Row] = []
        append = out.append
        resolved, unescape = _RESOLVED, _UNESCAPE.sub
        for name, rtype, data, ttl in fields.findall(self.text, self.start):
            if name[0] == '"':
                name = name[1:-1]
                if "\\" in name:
                    name = unescape(r"\1", name)
            elif name[0] in resolved:
                name = _plain_string(name, "name", plain)
            if data[0] == '"':
                data = data[1:-1]
                if "\\" in data:
                    data = unescape(r"\1", data)
            elif data[0] in resolved:
                data = _plain_string(data, "data", plain)
            kind = kinds.get(rtype)
            if kind is None:
                kind = kinds[rtype] = (_plain_string(rtype, "type", plain)
                                       if rtype[0] in resolved else rtype).upper()
            append((name, kind, _plain_number(ttl, plain) if ttl else None, data))
        self.marks.clear()
        self.bulk = True
        return out

    def _rows(self) -> Iterator[Row]:
        self.bulk = False
        text, indent, pos, end = self.text, self.indent, self.start, len(self.text)
        common, entry = _COMMON.match, _ENTRY.match
        plain: dict[str, Any] = {}

        def string(value: str, key: str) -> str:
            if value[0] == '"':
                value = value[1:-1]
                return _UNESCAPE.sub(r"\1", value) if "\\" in value else value
            if value[0] not in _RESOLVED:
                return value
            return _plain_string(value, key, plain)

        def number(value: str) -> int:
            return _plain_number(value, plain)

        kinds: dict[str, str] = {}
        marks = self.marks
        marks.clear()
        line, count = line_of(text, pos), 0
        while pos < end:
            if not count & 0xFFF:
                if marks:
                    line += text.count("\n", marks[-1][0], pos)
                marks.append((pos, line))
            count += 1
            m = common(text, pos)  # name, type, data[, ttl] in that order: most files
            if m is not None:
                at, name, rtype, data, ttl = m.groups()
                if at != indent:
                    raise NotPlain(f"line {line_of(text, pos)} is indented otherwise")
                if name[0] == '"':
                    name = name[1:-1]
                    if "\\" in name:
                        name = _UNESCAPE.sub(r"\1", name)
                elif name[0] in _RESOLVED:
                    name = string(name, "name")
                if data[0] == '"':
                    data = data[1:-1]
                    if "\\" in data:
                        data = _UNESCAPE.sub(r"\1", data)
                elif data[0] in _RESOLVED:
                    data = string(data, "data")
                kind = kinds.get(rtype)
                if kind is None:
                    kind = kinds[rtype] = string(rtype, "type").upper()
                yield name, kind, None if ttl is None else number(ttl), data
                pos = m.end()
                continue
            m = entry(text, pos)
            if m is None:
                raise NotPlain(f"line {line_of(text, pos)} is not one flow mapping")
            groups = m.groups()
            if groups[0] != indent:
                raise NotPlain(f"line {line_of(text, pos)} is indented otherwise")
            fields: dict[str, Any] = {}
            for i in range(1, 9, 2):
                key = groups[i]
                if key is None:
                    break
                if key not in _FIELDS or key in fields:
                    raise NotPlain(f"line {line_of(text, pos)}: key {key!r}")
                value = groups[i + 1]
                if key == "ttl":
                    if value[0] == '"':
                        raise NotPlain("a quoted ttl")
                    fields[key] = number(value)
                else:
                    fields[key] = string(value, key)
            rtype, data = fields.get("type"), fields.get("data")
            if rtype is None or data is None:
                raise NotPlain("a record without type or data")
            yield fields.get("name", "@"), rtype.upper(), fields.get("ttl"), data
            pos = m.end()

    def line_of_entry(self, index: int) -> int | None:
        """The line of the index-th record (0-based), once rows() has passed it."""
        if self.bulk and not self.marks:  # read at once: count the lines now (on errors)
            for _ in self._rows():
                pass
        if index >> 12 >= len(self.marks):
            return None
        pos, line = self.marks[index >> 12]
        for _ in range(index & 0xFFF):
            m = _COMMON.match(self.text, pos) or _ENTRY.match(self.text, pos)
            if m is None:
                return None
            pos = m.end()
        return line + self.text.count("\n", self.marks[index >> 12][0], pos)


#: PlainRecords._bulk reads files up to this size (the check's work grows with the text).
_BULK_MAX_CHARS = 1 << 20


@functools.lru_cache(maxsize=16)
def _bulk_patterns(indent: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(every entry line of the common shape at this indent, to the end of the text;
    one such line with its fields as groups): _COMMON with the indent written in."""
    value = f"(?:{_QUOTED}|{_PLAIN})"
    line = (re.escape(indent) + "- \\{name: (" + value + "), type: ([A-Za-z0-9]+), data: ("
            + value + ")(?:, ttl: ([0-9]+))?\\}" + _TAIL)
    bare = re.sub(r"\((?!\?)", "(?:", line)
    return re.compile(f"(?:{bare})*+"), re.compile(line)


def _plain_string(value: str, key: str, plain: dict[str, Any]) -> str:
    """A plain scalar that YAML might read as other than a string: the string, or
    NotPlain (*plain*: the values resolved so far, at most 4,096 kept)."""
    got = plain.get(value)
    if got is None:
        got = _plain_value(value)
        if len(plain) < 4096:
            plain[value] = got
    if type(got) is not str:
        raise NotPlain(f"{key} {value!r} is not a string in YAML")
    return got


def _plain_number(value: str, plain: dict[str, Any]) -> int:
    got = plain.get(value)
    if got is None:
        got = _plain_value(value)
        if len(plain) < 4096:
            plain[value] = got
    if type(got) is not int:
        raise NotPlain(f"ttl {value!r} is not a plain number")
    return got


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _plain_value(token: str) -> object:
    """What YAML makes of a plain scalar (the safe loader's resolver): str, or an int for
    a decimal number in a TTL's range; anything else (a float, a bool, a date, an octal
    or sexagesimal number) is `None`, which the reader does not take."""
    import yaml

    tag = _resolver.resolve(yaml.ScalarNode, token, (True, False))
    if tag == "tag:yaml.org,2002:str":
        return token
    if tag == "tag:yaml.org,2002:int" and _DECIMAL.fullmatch(token) and int(token) <= _MAX_TTL:
        return int(token)
    return None


_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def _make_resolver() -> Any:
    import yaml

    return yaml.resolver.Resolver()


_resolver = _make_resolver()
#: first characters of a plain scalar that YAML may read as other than a string
_RESOLVED = frozenset(_resolver.yaml_implicit_resolvers)


def records_text(records: list[Any]) -> str | None:
    """A records file's `records:` list written one flow mapping a line (the shape
    PlainRecords reads), or None when a record is not a mapping of name/type/data/ttl
    that this shape writes back exactly (the caller writes YAML's block style)."""
    import json

    from bind9_topology.config import safeyaml

    lines = ["records:"]
    for record in records:
        if not isinstance(record, dict) or not set(record) <= _FIELDS:
            return None
        name, rtype, data, ttl = (record.get(k) for k in ("name", "type", "data", "ttl"))
        if ("name" in record and not isinstance(name, str)) or not isinstance(rtype, str) \
                or not isinstance(data, str) \
                or not (ttl is None or (type(ttl) is int and 0 <= ttl <= _MAX_TTL)):
            return None
        kind = rtype if re.fullmatch(r"[A-Za-z0-9]+", rtype) and _plain_value(rtype) == rtype \
            else json.dumps(rtype, ensure_ascii=False)
        fields = [f"name: {json.dumps(name, ensure_ascii=False)}"] if name is not None else []
        fields += [f"type: {kind}", f"data: {json.dumps(data, ensure_ascii=False)}"]
        if ttl is not None:
            fields.append(f"ttl: {ttl}")
        lines.append("  - {" + ", ".join(fields) + "}")
    text = "\n".join(lines) + "\n" if records else "records: []\n"
    try:  # YAML must read back what was given (JSON allows characters YAML refuses)
        back = safeyaml.load(text)
    except Exception:
        return None
    want = [{k: v for k, v in r.items() if v is not None} for r in records]
    got = [{k: v for k, v in r.items() if v is not None} for r in back["records"]]
    return text if got == want else None
