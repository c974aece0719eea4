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

import re
import struct

import dns.ipv6

#: A name as the fast path takes it: ASCII letters, digits, '-', '_', '*', dots.
_NAME = re.compile(r"(?:[A-Za-z0-9_*-]{1,63}\.)*[A-Za-z0-9_*-]{1,63}\.?")
_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                   r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_MX = re.compile(r"([0-9]{1,5}) +(\S+)")
_SRV = re.compile(r"([0-9]{1,5}) +([0-9]{1,5}) +([0-9]{1,5}) +(\S+)")
_CAA = re.compile(r'([0-9]{1,3}) +([A-Za-z0-9]{1,255}) +(?:"((?:[^"\\\n]|\\[^0-9\n]|\\[0-9]{3})*)"'
                  r'|([^\s"\\();]+))')
# TXT: quoted strings (escapes \X and \DDD) or plain words, separated by spaces.
_TXT_TOKEN = re.compile(r' *(?:"((?:[^"\\\n]|\\[^0-9\n]|\\[0-9]{3})*)"|([^\s"\\();]+))')
_ESCAPE = re.compile(r"\\(?:([0-9]{3})|(.))", re.S)

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
Parsed = tuple[str, bytes, tuple[bool, bytes], "Name | None"]


def parse(rdtype: int, data: str, origin: Origin) -> Parsed | None:
    """The record's text, wire and dedup key; None when dnspython must judge it."""
    if rdtype == A:
        if not _IPV4.fullmatch(data):
            return None
        wire = bytes(int(p) for p in data.split("."))
        return data, wire, (False, wire), None
    if rdtype == AAAA:
        if not _IPV6.fullmatch(data):
            return None
        try:
            wire = dns.ipv6.inet_aton(data)
        except Exception:
            return None
        return dns.ipv6.inet_ntoa(wire), wire, (False, wire), None
    if rdtype in (CNAME, NS, PTR):
        name = parse_name(data, origin)
        if name is None:
            return None
        return (name.text(), name.wire(origin), (name.inside, name.root_wire()),
                name if rdtype == NS else None)
    if rdtype == MX:
        m = _MX.fullmatch(data)
        if not m:
            return None
        pref = int(m.group(1))
        name = parse_name(m.group(2), origin) if pref <= 65535 else None
        if name is None:
            return None
        head = struct.pack("!H", pref)
        return (f"{pref} {name.text()}", head + name.wire(origin),
                (name.inside, head + name.root_wire()), name)
    if rdtype == SRV:
        m = _SRV.fullmatch(data)
        if not m:
            return None
        prio, weight, port = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if max(prio, weight, port) > 65535:
            return None
        name = parse_name(m.group(4), origin)
        if name is None:
            return None
        head = struct.pack("!HHH", prio, weight, port)
        return (f"{prio} {weight} {port} {name.text()}", head + name.wire(origin),
                (name.inside, head + name.root_wire()), name)
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
        return f'{flags} {m.group(2)} "{escapify(value)}"', wire, (False, wire), None
    return None


def _txt(data: str) -> Parsed | None:
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
    return text, wire, (False, wire), None
