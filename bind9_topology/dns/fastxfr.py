"""A zone's content digest straight from the AXFR wire, without dnspython objects per record.

What :func:`bind9_topology.dns.checks.axfr` proves -- the TSIG-signed AXFR of a zone
and the content digest of what came (``spec.digest.zone_digest``: ZONEMD SIMPLE,
SHA-384, the SOA serial as 0, no apex ZONEMD, nothing a DNSSEC signer adds) -- for
the transfer gate's hot path: the gate pulls every primary and every secondary at the
target serial, so a 1,000-zone stack pulls thousands of zones per run, and dnspython
spends about 2 ms building a query, messages, a transaction and a zone for ten records.

Here a message is walked once, in place: names are decompressed and lowercased into
their canonical wire form, and the record types users write most (A, AAAA, NS,
CNAME, PTR, MX, SRV, TXT and the SOA) are put in canonical form from their wire
bytes. Every other type is parsed by dnspython (``Rdata.to_digestable``), so it
needs no code here. The query is dnspython's (``make_query(zone, AXFR)``, kept per
zone) with a new id; TSIG (:class:`Tsig`) is the HMAC of RFC 8945 over exactly what
``dns.tsig`` hashes, the first and the last message of an answer signed, unsigned
messages in the middle covered by the next signature (5.3.1). Transfers run many at
once from one selector (:func:`transfer_many`) over kept connections
(:data:`CONNECTIONS`, or the gate's :class:`~bind9_topology.dns.sessions.Sessions`).

Anything this reader does not take as the plain, well-formed case (an rcode other
than NOERROR, a TSIG that does not verify or carries an error, a question or an SOA
out of place, a record of another class, a bad pointer, differing TTLs in one RRset,
a singleton type with two values) raises :class:`NotPlain`; ``checks.axfr_probes``
then asks dnspython's full transfer (``checks.axfr``), which stays the judge of every
odd case and the oracle of tests/test_fastxfr.py (the two must agree on serial,
digest and record count, and on what TSIG accepts).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import hashlib
import hmac
import os
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig

from bind9_topology.config.digest import _SIGNER_TYPES
from bind9_topology.dns.endpoint import Endpoint
from bind9_topology.dns.sessions import Session, Sessions

__all__ = ["ANSWERS", "CONNECTIONS", "AxfrDigest", "NotPlain", "TooLarge", "Tsig", "axfr_query",
           "read_soa_answer", "soa_query_wire", "transfer", "transfer_many"]

_IN = 1
_ANY = 255
_SOA, _TSIG, _OPT, _ZONEMD, _AXFR = 6, 250, 41, 63, 252
#: dnspython keeps one rdata of these per name (a second replaces the first).
_SINGLETONS = frozenset({5, 6, 39, 47, 30})
#: types whose rdata ends with one (compressible) name: the bytes before it
_ONE_NAME: dict[int, int] = {2: 0, 5: 0, 12: 0, 15: 2, 33: 6}
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_TYPE_CLASS_TTL = struct.Struct("!HHI")
_LENGTH = struct.Struct("!H")
_FLAG_QR = 0x8000
_FLAG_AA = 0x0400
_FLAG_TC = 0x0200
_OPCODE_MASK = 0x7800


class NotPlain(Exception):
    """The transfer is not the plain case this reader takes; dnspython decides."""


class TooLarge(Exception):
    """The answer carries more records than the transfer was asked to read (a pull made
    before knowing the zone's size); it is dropped, not read to its end."""


def _name(wire: bytes, at: int,
          memo: dict[int, tuple[bytes, tuple[bytes, ...]]] | None = None,
          ) -> tuple[bytes, tuple[bytes, ...], int]:
    """The name at *at*: (canonical wire form, lowercase labels, offset after it).

    Pointers must point backwards (each before the last one followed), as dnspython's
    reader requires; anything else is NotPlain. *memo* (per message) keeps the names
    already read by the offset they start at, so a pointer to one costs a lookup.
    """
    labels: list[bytes] = []
    starts: list[int] = []
    end = -1
    biggest = at
    n = len(wire)
    tail: tuple[bytes, tuple[bytes, ...]] | None = None
    while True:
        if memo is not None:
            tail = memo.get(at)
            if tail is not None:
                if end < 0:
                    end = _skip_name(wire, at)
                break
        if at >= n:
            raise NotPlain("name runs past the message")
        length = wire[at]
        if length == 0:
            at += 1
            break
        if length < 64:
            label = wire[at + 1:at + 1 + length]
            if len(label) != length:
                raise NotPlain("label runs past the message")
            labels.append(label.lower())
            starts.append(at)
            at += length + 1
        elif length >= 192:
            if at + 1 >= n:
                raise NotPlain("pointer runs past the message")
            target = ((length & 0x3F) << 8) | wire[at + 1]
            if target >= biggest:
                raise NotPlain("bad compression pointer")
            biggest = target
            if end < 0:
                end = at + 2
            at = target
        else:
            raise NotPlain("unknown label type")
    if end < 0:
        end = at
    tail_wire, tail_labels = tail if tail is not None else (b"\x00", ())
    all_labels = tuple(labels) + tail_labels
    pieces = [bytes((len(lb),)) + lb for lb in labels]
    canonical = b"".join(pieces) + tail_wire
    if len(canonical) > 255:
        raise NotPlain("name too long")
    if memo is not None:
        # every suffix that starts at a label of this name is a name too
        for i, start in enumerate(starts):
            if start not in memo:
                memo[start] = (b"".join(pieces[i:]) + tail_wire, all_labels[i:])
    return canonical, all_labels, end


def _skip_name(wire: bytes, at: int) -> int:
    n = len(wire)
    while True:
        if at >= n:
            raise NotPlain("name runs past the message")
        length = wire[at]
        if length == 0:
            return at + 1
        if length < 64:
            at += length + 1
        elif length >= 192:
            return at + 2
        else:
            raise NotPlain("unknown label type")


@functools.lru_cache(maxsize=16)
def _digest_size(digestmod: Any) -> int:
    return hmac.new(b"", digestmod=digestmod).digest_size


class Tsig:
    """TSIG (RFC 8945) for one AXFR exchange: sign the query, verify every answer.

    HMAC over exactly what ``dns.tsig`` hashes (``_digest``): the prior MAC, the
    message with its original id and without the TSIG record, the TSIG variables
    (in full for the query and the first answer, only the timers after it), unsigned
    messages in the middle of a transfer included in the next signed one. Only the
    full-length HMAC algorithms are done here (:meth:`for_key` returns None for the
    others, and dnspython's transfer is used); any answer that does not verify, or
    that carries a TSIG error, is NotPlain (dnspython then names the error). Signed
    and verified against dnspython both ways in tests/test_fastxfr.py.
    """

    def __init__(self, key: dns.tsig.Key, digestmod: Any) -> None:
        self.secret = key.secret if isinstance(key.secret, bytes) else bytes(key.secret)
        self.digestmod = digestmod
        self.size = _digest_size(digestmod)
        self.name_wire = key.name.to_digestable()
        self.alg_wire = key.algorithm.to_digestable()
        self.prior_mac = b""  # the query's MAC, then each signed answer's
        self.unsigned: list[bytes] = []  # answers since the last signed one
        self.first = True

    @classmethod
    def for_key(cls, key: dns.tsig.Key) -> Tsig | None:
        template = _tsig_template(key)
        if template is None:
            return None  # truncated MACs, GSS-TSIG: dnspython's
        tsig = cls.__new__(cls)
        tsig.secret, tsig.digestmod, tsig.size, tsig.name_wire, tsig.alg_wire = template
        tsig.prior_mac, tsig.unsigned, tsig.first = b"", [], True
        return tsig

    @property
    def record_size(self) -> int:
        """Bytes of the TSIG record an answer ends with (uncompressed owner, no other data)."""
        return len(self.name_wire) + 10 + len(self.alg_wire) + 16 + self.size

    def sign(self, wire: bytes, now: int, fudge: int = 300) -> bytes:
        """*wire* (an unsigned query) with a TSIG record appended; its MAC is kept."""
        timers = struct.pack("!HIH", (now >> 32) & 0xFFFF, now & 0xFFFFFFFF, fudge)
        variables = (self.name_wire + b"\x00\xff\x00\x00\x00\x00" + self.alg_wire + timers
                     + b"\x00\x00\x00\x00")
        mac = hmac.digest(self.secret, wire + variables, self.digestmod)
        rdata = (self.alg_wire + timers + struct.pack("!H", len(mac)) + mac + wire[:2]
                 + b"\x00\x00\x00\x00")
        record = self.name_wire + struct.pack("!HHIH", _TSIG, _ANY, 0, len(rdata)) + rdata
        (arcount,) = struct.unpack_from("!H", wire, 10)
        self.prior_mac = mac
        return wire[:10] + struct.pack("!H", arcount + 1) + wire[12:] + record

    def unsigned_answer(self, wire: bytes) -> None:
        self.unsigned.append(wire)

    def verify(self, wire: bytes, rr_start: int, rdata_at: int, rdlen: int, now: int) -> None:
        """Verify the TSIG record at *rr_start* (the message's last) of an answer."""
        # the names as the key has them (lowercase, uncompressed: what servers send) are
        # the same names without reading them label by label
        name_wire, alg_wire = self.name_wire, self.alg_wire
        if wire[rr_start:rr_start + len(name_wire)] != name_wire \
                and _name(wire, rr_start)[0] != name_wire:
            raise NotPlain("answer signed with another key")
        end = rdata_at + rdlen
        if wire[rdata_at:rdata_at + len(alg_wire)] == alg_wire:
            pos = rdata_at + len(alg_wire)
        else:
            alg, _, pos = _name(wire, rdata_at)
            if alg != alg_wire:
                raise NotPlain("answer signed with another algorithm")
        if pos + 10 > end:
            raise NotPlain("short TSIG")
        timers = wire[pos:pos + 8]
        high, low, fudge, mac_size = struct.unpack_from("!HIHH", wire, pos)
        pos += 10
        mac = wire[pos:pos + mac_size]
        pos += mac_size
        if pos + 6 > end or mac_size != self.size:
            raise NotPlain("TSIG MAC of another size")
        original_id, error, other_len = struct.unpack_from("!HHH", wire, pos)
        other = wire[pos + 6:pos + 6 + other_len]
        if pos + 6 + other_len != end or error != 0:
            raise NotPlain("TSIG error or malformed TSIG")
        (arcount,) = struct.unpack_from("!H", wire, 10)
        signed = [struct.pack("!H", len(self.prior_mac)), self.prior_mac, *self.unsigned,
                  struct.pack("!H", original_id), wire[2:10], struct.pack("!H", arcount - 1),
                  wire[12:rr_start]]
        if self.first:
            signed.append(self.name_wire + b"\x00\xff\x00\x00\x00\x00" + self.alg_wire
                          + timers + struct.pack("!HH", error, other_len) + other)
        else:
            signed.append(timers)
        # one call into OpenSSL over exactly what the updates hashed one by one
        if not hmac.compare_digest(hmac.digest(self.secret, b"".join(signed), self.digestmod),
                                   mac):
            raise NotPlain("TSIG does not verify")
        if abs(((high << 32) | low) - now) > fudge:
            raise NotPlain("TSIG time outside the fudge")
        self.prior_mac = mac
        self.unsigned = []
        self.first = False


_TEMPLATES: dict[int, tuple[dns.tsig.Key, tuple[bytes, Any, int, bytes, bytes] | None]] = {}


def _tsig_template(key: dns.tsig.Key) -> tuple[bytes, Any, int, bytes, bytes] | None:
    """(secret, digestmod, MAC size, key name wire, algorithm wire) of *key*, worked out
    once per key object (a Tsig is made per exchange, and the names' wire forms cost more
    than the HMAC of a small answer). None for what :class:`Tsig` leaves to dnspython."""
    kept = _TEMPLATES.get(id(key))
    if kept is not None and kept[0] is key:
        return kept[1]
    hashinfo = dns.tsig.HMACTSig._hashes.get(key.algorithm)
    template = None
    if hashinfo is not None and not isinstance(hashinfo, tuple):
        secret = key.secret if isinstance(key.secret, bytes) else bytes(key.secret)
        template = (secret, hashinfo, _digest_size(hashinfo), key.name.to_digestable(),
                    key.algorithm.to_digestable())
    if len(_TEMPLATES) >= 256:
        _TEMPLATES.clear()
    _TEMPLATES[id(key)] = (key, template)  # the key is held, so its id is not reused
    return template


class _Answer:
    """A single-message AXFR answer this reader took in full, by its bytes after the id
    and before the TSIG record: what it made of them."""

    __slots__ = ("authoritative", "body", "digest", "records", "serial")

    def __init__(self, body: bytes, serial: int, digest: str, records: int,
                 authoritative: bool) -> None:
        self.body, self.serial, self.digest = body, serial, digest
        self.records, self.authoritative = records, authoritative


class _Answers:
    """The last few plain single-message answers read in full, per zone (bounded by bytes).

    The gate pulls one zone from every server at the same serial, and servers that hold
    the same zone answer with the same bytes but for the id and the TSIG record. Reading
    is a pure function of those bytes (and the zone), so an answer whose bytes equal one
    read before has its serial, digest, record count and AA without being read again;
    its TSIG is still verified against this exchange (:meth:`AxfrDigest.feed`). Any other
    byte anywhere, and the answer is read in full.
    """

    def __init__(self, max_bytes: int = 64 << 20, per_zone: int = 2,
                 max_body: int = 16384) -> None:
        self.max_bytes, self.per_zone, self.max_body = max_bytes, per_zone, max_body
        self._zones: collections.OrderedDict[bytes, list[_Answer]] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0

    def candidates(self, origin_wire: bytes) -> list[_Answer]:
        with self._lock:
            return list(self._zones.get(origin_wire, ()))

    def put(self, origin_wire: bytes, answer: _Answer) -> None:
        if len(answer.body) > self.max_body:
            return
        with self._lock:
            kept = self._zones.pop(origin_wire, [])
            kept = [a for a in kept if a.body != answer.body]
            kept.insert(0, answer)
            for gone in kept[self.per_zone:]:
                self._bytes -= len(gone.body)
            kept = kept[:self.per_zone]
            self._bytes += len(answer.body)
            self._zones[origin_wire] = kept
            while self._bytes > self.max_bytes and self._zones:
                _, old = self._zones.popitem(last=False)
                self._bytes -= sum(len(a.body) for a in old)

    def clear(self) -> None:
        with self._lock:
            self._zones.clear()
            self._bytes = 0


ANSWERS = _Answers()


@functools.lru_cache(maxsize=32768)
def _origin(origin: dns.name.Name) -> tuple[dns.name.Name, bytes, tuple[bytes, ...]]:
    """(canonical name, its wire form, its labels without the root), once per zone."""
    canonical = origin.canonicalize()
    return canonical, canonical.to_digestable(), tuple(lb for lb in canonical.labels if lb)


class AxfrDigest:
    """Fed the messages of one AXFR answer in order; tells when the transfer is complete.

    *query_id* is the id of the query that was sent, *tsig* its TSIG session when it was
    signed. After :meth:`feed` returned True, ``serial``, ``digest`` and ``records``
    hold what ``checks.axfr`` would report for the same answer.
    """

    def __init__(self, origin: dns.name.Name, query_id: int, tsig: Tsig | None,
                 max_records: int | None = None) -> None:
        self.origin, self.origin_wire, self.origin_labels = _origin(origin)
        #: more records in the answer than this (both SOAs not counted): TooLarge
        self.max_records = max_records
        self.seen = 0
        self.query_id = query_id
        self.tsig = tsig
        self.signed = tsig is not None
        self.first = True
        self.done = False
        self.soa: bytes | None = None  # canonical rdata of the first SOA
        self.soa_ttl = 0
        self.serial: int | None = None
        self.digest: str | None = None
        self.records = 0
        self.authoritative = False  # the AA bit of the first message
        # (owner labels, rdtype, covers) -> [ttl, {canonical rdata: None}]
        self._sets: dict[tuple[tuple[bytes, ...], int, int], tuple[list[int], dict[bytes, None]]]
        self._sets = {}
        self._owners: dict[tuple[bytes, ...], bytes] = {}
        self._memo: dict[int, tuple[bytes, tuple[bytes, ...]]] = {}

    # ------------------------------------------------------------------ messages

    def feed(self, wire: bytes) -> bool:
        if self.done:
            raise NotPlain("message after the final SOA")
        if len(wire) < 12:
            raise NotPlain("short header")
        if self.first and self.tsig is not None and self._seen_before(wire):
            if self.max_records is not None and self.records > self.max_records:
                raise TooLarge(f"more than {self.max_records} records")
            return True
        qid, flags, qd, an, ns, ar = _HEADER.unpack_from(wire)
        self.seen += an
        if self.max_records is not None and self.seen > self.max_records + 2:
            raise TooLarge(f"more than {self.max_records} records")
        rcode = flags & 0x000F
        at = 12
        questions: list[tuple[bytes, int, int]] = []
        memo: dict[int, tuple[bytes, tuple[bytes, ...]]] = {}
        self._memo = memo
        for _ in range(qd):
            qname, _labels, at = _name(wire, at, memo)
            if at + 4 > len(wire):
                raise NotPlain("question runs past the message")
            qtype, qclass = struct.unpack_from("!HH", wire, at)
            at += 4
            questions.append((qname, qtype, qclass))
        # (owner, its labels, where its type is): read before the TSIG is checked,
        # taken only after
        answers: list[tuple[bytes, tuple[bytes, ...], int]] = []
        for _ in range(an):
            owner, labels, at = _name(wire, at, memo)
            if at + 10 > len(wire):
                raise NotPlain("record runs past the message")
            answers.append((owner, labels, at))
            at += 10 + (wire[at + 8] << 8 | wire[at + 9])
        for _ in range(ns):
            at = _skip_name(wire, at)
            if at + 10 > len(wire):
                raise NotPlain("record runs past the message")
            at += 10 + struct.unpack_from("!H", wire, at + 8)[0]
        had_tsig = False
        tsig_at = -1
        for i in range(ar):
            start = at
            at = _skip_name(wire, at)
            if at + 10 > len(wire):
                raise NotPlain("record runs past the message")
            rdtype, rdclass, ttl, rdlen = _RR.unpack_from(wire, at)
            if rdtype == _OPT:
                rcode |= (ttl >> 20) & 0xFF0  # the extended rcode's upper 8 bits
            elif rdtype == _TSIG:
                if i != ar - 1 or rdclass != _ANY:
                    raise NotPlain("TSIG not the last additional record")
                if self.tsig is None:
                    raise NotPlain("signed answer to an unsigned query")
                self.tsig.verify(wire, start, at + 10, rdlen, int(time.time()))
                had_tsig = True
                tsig_at = start
            at += 10 + rdlen
        if at != len(wire):
            raise NotPlain("trailing bytes")
        if (flags & _FLAG_QR) == 0 or qid != self.query_id or flags & _OPCODE_MASK:
            raise NotPlain("not an answer to the query")
        if rcode != 0:
            raise NotPlain(f"rcode {rcode}")
        if (questions or self.first) and questions != [(self.origin_wire, _AXFR, _IN)]:
            raise NotPlain("another question")
        if self.tsig is not None and not had_tsig:
            if self.first:
                raise NotPlain("first message without TSIG")
            self.tsig.unsigned_answer(wire)
        first = self.first
        if first:
            self.authoritative = bool(flags & _FLAG_AA)
        self.first = False
        for index, (owner, labels, rr) in enumerate(answers):
            if self._record(wire, owner, labels, rr, first and index == 0):
                if index != len(answers) - 1:
                    raise NotPlain("records after the final SOA")
                if self.signed and not had_tsig:
                    raise NotPlain("last message without TSIG")
                self._finish()
                if first and tsig_at > 0:
                    assert self.serial is not None and self.digest is not None
                    ANSWERS.put(self.origin_wire, _Answer(
                        wire[2:tsig_at], self.serial, self.digest, self.records,
                        self.authoritative))
                return True
        if first and self.soa is None:
            raise NotPlain("no SOA first")
        return False

    def _seen_before(self, wire: bytes) -> bool:
        """*wire* is a whole answer whose bytes, but for the id and its TSIG record, are
        those of an answer read in full before (:data:`ANSWERS`): take what that one
        gave. The id must be the query's and the TSIG record must end the message and
        verify for this exchange, or NotPlain as in the full reading."""
        cut = len(wire) - self.tsig.record_size if self.tsig is not None else -1
        if cut <= 12:
            return False
        body = wire[2:cut]
        seen = next((a for a in ANSWERS.candidates(self.origin_wire) if a.body == body), None)
        if seen is None:
            return False
        if struct.unpack_from("!H", wire)[0] != self.query_id:
            raise NotPlain("not an answer to the query")
        assert self.tsig is not None
        at = _skip_name(wire, cut)
        if at + 10 > len(wire):
            raise NotPlain("record runs past the message")
        rdtype, rdclass, _ttl, rdlen = _RR.unpack_from(wire, at)
        if rdtype != _TSIG or rdclass != _ANY or at + 10 + rdlen != len(wire):
            raise NotPlain("TSIG not the last additional record")
        self.tsig.verify(wire, cut, at + 10, rdlen, int(time.time()))
        self.first = False
        self.authoritative = seen.authoritative
        self.serial, self.digest, self.records = seen.serial, seen.digest, seen.records
        self.done = True
        ANSWERS.hits += 1
        return True

    # ------------------------------------------------------------------ records

    def _record(self, wire: bytes, owner: bytes, labels: tuple[bytes, ...], at: int,
                first_rr: bool) -> bool:
        """Take one answer record; True when it is the final SOA."""
        rdtype, rdclass, ttl, rdlen = _RR.unpack_from(wire, at)
        rd = at + 10
        if rdclass != _IN:
            raise NotPlain("record of another class")
        if ttl > 0x7FFFFFFF:
            raise NotPlain("TTL out of range")
        origin = self.origin_labels
        inside = len(labels) >= len(origin) and labels[len(labels) - len(origin):] == origin
        if rdtype == _SOA:
            if labels != origin:
                raise NotPlain("SOA not at the origin")
            canonical = self._canonical(wire, rdtype, rd, rdlen)
            if first_rr:
                self.soa, self.soa_ttl = canonical, ttl
                return False
            if canonical != self.soa:
                raise NotPlain("another SOA inside the transfer")
            if ttl != self.soa_ttl:
                raise NotPlain("SOA TTLs differ")
            self._add(owner, labels, rdtype, 0, ttl, canonical)
            return True
        if first_rr:
            raise NotPlain("no SOA first")
        if not inside:
            return False  # dnspython leaves out what is not in the zone
        canonical = self._canonical(wire, rdtype, rd, rdlen)
        covers = 0
        if rdtype == 46:  # RRSIG: its set is per covered type
            covers = struct.unpack_from("!H", canonical)[0]
        self._add(owner, labels, rdtype, covers, ttl, canonical)
        return False

    def _add(self, owner: bytes, labels: tuple[bytes, ...], rdtype: int, covers: int, ttl: int,
             canonical: bytes) -> None:
        key = (labels, rdtype, covers)
        entry = self._sets.get(key)
        if entry is None:
            self._sets[key] = ([ttl], {canonical: None})
            self._owners[labels] = owner
            return
        ttls, rdatas = entry
        if ttls[0] != ttl:
            raise NotPlain("TTLs differ in one RRset")
        if rdtype in _SINGLETONS and canonical not in rdatas:
            raise NotPlain("two values of a singleton type")
        rdatas[canonical] = None

    def _canonical(self, wire: bytes, rdtype: int, at: int, rdlen: int) -> bytes:
        end = at + rdlen
        if end > len(wire):
            raise NotPlain("rdata runs past the message")
        if rdtype == 1:
            if rdlen != 4:
                raise NotPlain("A of another length")
            return wire[at:end]
        if rdtype == 28:
            if rdlen != 16:
                raise NotPlain("AAAA of another length")
            return wire[at:end]
        if rdtype == 16:
            pos = at
            while pos < end:
                pos += wire[pos] + 1
            if pos != end or rdlen == 0:
                raise NotPlain("TXT strings do not fill the rdata")
            return wire[at:end]
        before = _ONE_NAME.get(rdtype)
        if before is not None:
            name, _, after = _name(wire, at + before, self._memo)
            if after != end:
                raise NotPlain("name does not end the rdata")
            return wire[at:at + before] + name
        if rdtype == _SOA:
            mname, _, pos = _name(wire, at, self._memo)
            rname, _, pos = _name(wire, pos, self._memo)
            if pos + 20 != end:
                raise NotPlain("SOA of another length")
            return mname + rname + wire[pos:end]
        try:
            rdata = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.RdataType.make(rdtype),
                                        wire, at, rdlen)
            return rdata.to_digestable(self.origin)
        except Exception as exc:
            raise NotPlain(f"type {rdtype}: {exc}") from exc

    def _finish(self) -> None:
        assert self.soa is not None
        soa = self.soa
        mlen = len(_name(soa, 0)[0])
        rlen = len(_name(soa, mlen)[0])
        self.serial = struct.unpack_from("!I", soa, mlen + rlen)[0]
        soa_zero = soa[:mlen + rlen] + b"\x00\x00\x00\x00" + soa[mlen + rlen + 4:]
        records = 0
        apex = self.origin_labels
        # reversed owner labels (canonical order) -> [(rdtype, covers, ttl, rdatas)]: the
        # (rdtype, covers) pairs of one owner differ, so the tuples sort without a key
        by_owner: dict[tuple[bytes, ...], list[tuple[int, int, int, dict[bytes, None]]]] = {}
        for (labels, rdtype, covers), (ttls, rdatas) in self._sets.items():
            records += len(rdatas)
            sets = by_owner.get(labels)
            if sets is None:
                by_owner[labels] = sets = []
            sets.append((rdtype, covers, ttls[0], rdatas))
        chunks: list[bytes] = []
        fixed_of = _TYPE_CLASS_TTL.pack
        length_of = _LENGTH.pack
        for _, labels in sorted([(lb[::-1], lb) for lb in by_owner]):
            owner = self._owners[labels]
            sets = by_owner[labels]
            if len(sets) > 1:
                sets.sort()
            for rdtype, covers, ttl, rdatas in sets:
                if rdtype in _SIGNER_TYPES:
                    continue
                if labels == apex and _ZONEMD in (rdtype, covers):
                    continue
                fixed = owner + fixed_of(rdtype, _IN, ttl)
                values = [soa_zero] if rdtype == _SOA else sorted(rdatas)
                for value in values:
                    chunks.append(fixed + length_of(len(value)) + value)
        hasher = hashlib.sha384(b"".join(chunks))
        self.records = records
        self.digest = hasher.hexdigest()
        self.done = True


def _name_wire(zone: dns.name.Name) -> bytes:
    """*zone* in wire form as written (its case kept, uncompressed): a question's name."""
    wire = zone.to_wire()
    assert wire is not None
    return wire


@functools.lru_cache(maxsize=32768)
def _unsigned_soa_query(zone: dns.name.Name) -> bytes:
    """The SOA query ``checks.soa_query`` sends (no RD, no EDNS), id 0: dnspython's bytes
    (tests/test_fastsoa.py), put together without a message object."""
    return _HEADER.pack(0, 0, 1, 0, 0, 0) + _name_wire(zone) + b"\x00\x06\x00\x01"


@functools.lru_cache(maxsize=32768)
def zone_wire(zone: dns.name.Name) -> bytes:
    """*zone*'s canonical (lowercase, uncompressed) wire form, as :func:`_name` gives it."""
    return zone.canonicalize().to_digestable()


def soa_query_wire(zone: dns.name.Name, key: dns.tsig.Key | None,
                   query_id: int) -> tuple[bytes, Tsig | None]:
    """(wire, TSIG session) of ``checks.soa_query(zone, key)`` with id *query_id*: the same
    bytes dnspython sends (signed with *key* when given), built once per zone and then
    only stamped. NotPlain for a key whose algorithm :class:`Tsig` leaves to dnspython."""
    wire = struct.pack("!H", query_id) + _unsigned_soa_query(zone)[2:]
    if key is None:
        return wire, None
    tsig = Tsig.for_key(key)
    if tsig is None:
        raise NotPlain(f"TSIG algorithm {key.algorithm}")
    return tsig.sign(wire, int(time.time())), tsig


def read_soa_answer(wire: bytes, query_id: int, zone_wire: bytes,
                    tsig: Tsig | None) -> tuple[int, bool]:
    """(serial, AA bit) of a plain answer to :func:`soa_query_wire`: what
    ``checks.soa_answer`` reads from dnspython's parse of the same bytes.

    Plain: an answer (QR, opcode QUERY, the query's id) with NOERROR, not truncated, the
    question exactly (*zone_wire*, SOA, IN), one SOA of the zone in the answer section,
    every record whole, and, for a signed query, a TSIG that verifies as the last
    record. Anything else is NotPlain and dnspython judges it (an error rcode, a TSIG
    error, no SOA, a truncated answer).
    """
    n = len(wire)
    if n < 12:
        raise NotPlain("short header")
    qid, flags, qd, an, ns, ar = _HEADER.unpack_from(wire)
    if (flags & _FLAG_QR) == 0 or qid != query_id or flags & (_OPCODE_MASK | _FLAG_TC | 0x000F):
        raise NotPlain("not a plain answer to the query")
    if qd != 1:
        raise NotPlain("another question")
    qname, _, at = _name(wire, 12)
    if qname != zone_wire or wire[at:at + 4] != b"\x00\x06\x00\x01":
        raise NotPlain("another question")
    at += 4
    serial = -1
    for _ in range(an):
        owner, _, at = _name(wire, at)
        if at + 10 > n:
            raise NotPlain("record runs past the message")
        rdtype, rdclass, _ttl, rdlen = _RR.unpack_from(wire, at)
        at += 10
        if rdtype == _SOA and rdclass == _IN and owner == zone_wire:
            if serial >= 0:
                raise NotPlain("two SOA records")
            pos = _skip_name(wire, _skip_name(wire, at))
            if pos + 20 != at + rdlen:
                raise NotPlain("SOA of another length")
            (serial,) = struct.unpack_from("!I", wire, pos)
        at += rdlen
    if serial < 0:
        raise NotPlain("no SOA of the zone")
    for _ in range(ns):
        at = _skip_name(wire, at)
        if at + 10 > n:
            raise NotPlain("record runs past the message")
        at += 10 + (wire[at + 8] << 8 | wire[at + 9])
    signed = False
    for i in range(ar):
        start = at
        at = _skip_name(wire, at)
        if at + 10 > n:
            raise NotPlain("record runs past the message")
        rdtype, rdclass, ttl, rdlen = _RR.unpack_from(wire, at)
        if rdtype == _OPT and ttl & 0xFF000000:
            raise NotPlain("extended rcode")
        if rdtype == _TSIG:
            if i != ar - 1 or rdclass != _ANY or tsig is None:
                raise NotPlain("TSIG out of place")
            tsig.verify(wire, start, at + 10, rdlen, int(time.time()))
            signed = True
        at += 10 + rdlen
    if at != n:
        raise NotPlain("trailing bytes")
    if tsig is not None and not signed:
        raise NotPlain("unsigned answer to a signed query")
    return serial, bool(flags & _FLAG_AA)


@functools.lru_cache(maxsize=32768)
def _unsigned_query(zone: dns.name.Name) -> bytes:
    """The AXFR query ``checks.axfr`` sends (dns.xfr.make_query's: RD, no EDNS), id 0:
    dnspython's bytes (tests/test_fastxfr.py), put together without a message object."""
    return _HEADER.pack(0, 0x0100, 1, 0, 0, 0) + _name_wire(zone) + b"\x00\xfc\x00\x01"


def axfr_query(zone: dns.name.Name, key: dns.tsig.Key | None) -> tuple[bytes, int, Tsig | None]:
    """(wire, id, TSIG session) of an AXFR query for *zone*, signed with *key* if given.

    NotPlain for a key whose algorithm :class:`Tsig` leaves to dnspython.
    """
    tsig = None
    if key is not None:
        tsig = Tsig.for_key(key)
        if tsig is None:
            raise NotPlain(f"TSIG algorithm {key.algorithm}")
    query_id = secrets.randbits(16)
    wire = struct.pack("!H", query_id) + _unsigned_query(zone)[2:]
    if tsig is not None:
        wire = tsig.sign(wire, int(time.time()))
    return wire, query_id, tsig


class _Connections:
    """Idle TCP connections to servers, kept for the next transfer (RFC 5936 4.1: a
    connection may carry one query after another).

    Opening and closing a connection costs about as much as reading a small zone, on
    both ends. A connection goes back here only after a transfer read to its end with
    nothing left over; one idle for longer than ``max_idle_s`` (named closes its idle
    connections after ``tcp-idle-timeout``, 30 s) or that the server closed or wrote to
    meanwhile is dropped when it is taken. Port-forward endpoints (``tcp_only``) are
    never kept: their listeners last one gate.
    """

    def __init__(self, per_server: int = 4, max_idle_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_server = per_server
        self.max_idle_s = max_idle_s
        self.clock = clock
        self._idle: dict[tuple[str, int], list[tuple[float, socket.socket]]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def take(self, endpoint: Endpoint) -> socket.socket | None:
        if endpoint.tcp_only:
            return None
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's connections are the parent's
                self._idle, self._pid = {}, os.getpid()
            idle = self._idle.get((endpoint.host, endpoint.port))
            now = self.clock()
            while idle:
                since, sock = idle.pop()
                if now - since <= self.max_idle_s and _still_open(sock):
                    return sock
                sock.close()
        return None

    def give(self, endpoint: Endpoint, sock: socket.socket) -> None:
        if endpoint.tcp_only:
            sock.close()
            return
        now = self.clock()
        with self._lock:
            self._sweep(now)
            idle = self._idle.setdefault((endpoint.host, endpoint.port), [])
            if len(idle) >= self.per_server or self._pid != os.getpid():
                sock.close()
                return
            idle.append((now, sock))

    def _sweep(self, now: float) -> None:
        """Close what idled too long, whichever server it goes to (under the lock)."""
        for server, idle in list(self._idle.items()):
            keep = [(since, sock) for since, sock in idle if now - since <= self.max_idle_s]
            for since, sock in idle:
                if now - since > self.max_idle_s:
                    sock.close()
            if keep:
                self._idle[server] = keep
            else:
                del self._idle[server]

    def close(self) -> None:
        with self._lock:
            for idle in self._idle.values():
                for _, sock in idle:
                    sock.close()
            self._idle.clear()


def _still_open(sock: socket.socket) -> bool:
    """An idle connection with nothing to read (the server neither closed nor wrote)."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False
    return False  # it reads: closed by the server (nothing) or something unasked for


CONNECTIONS = _Connections()


class _Transfer:
    """One AXFR in :func:`transfer_many`'s loop."""

    __slots__ = ("buffer", "deadline", "end", "endpoint", "limit", "outcome", "query", "reader",
                 "reused", "session", "slot", "sock", "timeout", "wire", "zone")

    def __init__(self, endpoint: Endpoint, zone: dns.name.Name) -> None:
        self.endpoint = endpoint
        self.zone = zone
        self.sock: socket.socket | None = None
        self.reused = False  # the connection carried a transfer before
        self.buffer = b""
        self.query = b""  # the framed query
        self.wire = b""  # what is still to send of it
        self.deadline = 0.0  # of the next message
        self.end = 0.0  # of the whole transfer
        self.reader: AxfrDigest | None = None
        self.timeout = 0.0
        self.outcome: AxfrDigest | BaseException | None = None
        self.slot: threading.Semaphore | None = None  # held while it runs
        self.session: Session | None = None  # held while it runs (with sessions)
        self.limit: int | None = None  # records read at most (TooLarge past it)


def _timeout() -> BaseException:
    return dns.exception.Timeout()  # type: ignore[no-untyped-call]


def transfer_many(
    endpoints: Sequence[Endpoint],
    zone: dns.name.Name | Sequence[dns.name.Name],
    key: dns.tsig.Key | None,
    timeout: float,
    lifetime: float | None,
    slot: Callable[[Endpoint], threading.Semaphore] | None = None,
    sessions: Sessions | None = None,
    max_records: int | Sequence[int | None] | None = None,
) -> list[AxfrDigest | BaseException]:
    """An AXFR of *zone* from each endpoint, all at once, in this thread (one selector).

    *zone*: one zone for every endpoint, or one per endpoint (many zones' pulls in one
    loop: the gate's rounds of many zones). Each comes back complete (an
    :class:`AxfrDigest`) or as the exception dnspython's transfer raises for the
    network (``dns.exception.Timeout``, ``ConnectionRefusedError``, ``EOFError``,
    ``OSError``), or NotPlain for the rest. *timeout* bounds the wait for each message,
    *lifetime* each whole transfer, both from when it starts. *slot*, when given, names
    a semaphore per server: a transfer starts only once it holds one of its server's
    (taken without blocking, so transfers from other servers go on meanwhile).
    Connections are taken from and given back to :data:`CONNECTIONS`; a kept connection
    that fails before any answer is replaced by a new one, once.

    *sessions*, when given, replaces both: a transfer starts once it holds one of its
    server's sessions (taken without blocking, like a slot) and goes over that session's
    connection (kept, or a new one it then keeps), which goes back open only after a
    transfer read to its end with nothing left over. Waiting transfers queue per server
    and the next starts when one of ours on that server ends, so thousands of pulls cost
    what their exchanges cost, not a scan of the queue per event.

    *max_records* (one for all, or one per endpoint): an answer with more records than
    this ends as :class:`TooLarge`, its connection dropped (a pull asked before the zone's
    size is known).
    """
    zones = ([zone] * len(endpoints) if isinstance(zone, dns.name.Name) else list(zone))
    if len(zones) != len(endpoints):
        raise ValueError("one zone per endpoint")
    xfers = [_Transfer(ep, z) for ep, z in zip(endpoints, zones, strict=True)]
    if max_records is None or isinstance(max_records, int):
        limits: list[int | None] = [max_records] * len(xfers)
    else:
        limits = list(max_records)
    for x, limit in zip(xfers, limits, strict=True):
        x.limit = limit
    queues: dict[tuple[str, int], collections.deque[_Transfer]] = {}
    for x in xfers:
        queues.setdefault((x.endpoint.host, x.endpoint.port), collections.deque()).append(x)
    running: dict[tuple[str, int], int] = dict.fromkeys(queues, 0)
    live: set[_Transfer] = set()
    sel = selectors.DefaultSelector()

    def fill(server: tuple[str, int]) -> None:
        queue = queues[server]
        now = time.monotonic()
        while queue:
            x = queue[0]
            if sessions is not None:
                x.session = sessions.take(x.endpoint, blocking=False)
                if x.session is None:
                    return
            elif slot is not None:
                held = slot(x.endpoint)
                if not held.acquire(blocking=False):
                    return
                x.slot = held
            queue.popleft()
            if _start(x, x.zone, key, timeout, lifetime, now, sel, x.limit):
                live.add(x)
                running[server] += 1

    def ended(x: _Transfer) -> None:
        live.discard(x)
        server = (x.endpoint.host, x.endpoint.port)
        running[server] -= 1
        if queues[server]:
            fill(server)

    try:
        for server in queues:
            fill(server)
        while live or any(queues.values()):
            # a server whose queue waits with none of ours running waits for another
            # caller's session or slot: look again soon
            blocked = any(q and not running[s] for s, q in queues.items())
            if live:
                nearest = min(x.deadline for x in live)
                wait = max(0.0, nearest - time.monotonic())
                if blocked:
                    wait = min(wait, 0.002)
                for sel_key, _ in sel.select(wait):
                    x = sel_key.data
                    if x in live and _step(x, sel):
                        _end(x, sel)
                        ended(x)
                now = time.monotonic()
                for x in [x for x in live if now >= x.deadline]:
                    x.outcome = _timeout()
                    _end(x, sel)
                    ended(x)
            else:
                time.sleep(0.002)
            if blocked:
                for server, queue in queues.items():
                    if queue and not running[server]:
                        fill(server)
    finally:
        for x in xfers:
            if x.sock is not None or x.session is not None:
                _end(x, sel, keep=False)
        sel.close()
    return [x.outcome if x.outcome is not None else _timeout() for x in xfers]


def _start(x: _Transfer, zone: dns.name.Name, key: dns.tsig.Key | None, timeout: float,
           lifetime: float | None, now: float, sel: selectors.BaseSelector,
           max_records: int | None = None) -> bool:
    """Queue *x*'s query on a kept or a new connection; False when it ended already."""
    try:
        wire, query_id, tsig = axfr_query(zone, key)
        x.reader = AxfrDigest(zone, query_id, tsig, max_records)
    except BaseException as exc:
        x.outcome = exc
        _end(x, sel)
        return False
    x.query = struct.pack("!H", len(wire)) + wire
    x.end = now + lifetime if lifetime is not None else float("inf")
    x.deadline = min(now + timeout, x.end)
    x.timeout = timeout
    if x.session is not None:
        x.session.clean = False  # until the transfer is read to its end
        kept = x.session.kept()
        if kept is not None:
            kept.setblocking(False)
    else:
        kept = CONNECTIONS.take(x.endpoint)
    if kept is not None:
        x.sock, x.reused, x.wire = kept, True, x.query
        sel.register(kept, selectors.EVENT_WRITE, x)
        return True
    return _connect(x, sel)


def _connect(x: _Transfer, sel: selectors.BaseSelector) -> bool:
    try:
        sock = socket.socket(dns.inet.af_for_address(x.endpoint.host), socket.SOCK_STREAM)
    except OSError as exc:
        x.outcome = exc
        _end(x, sel)
        return False
    sock.setblocking(False)
    x.sock, x.reused, x.wire = sock, False, x.query
    if x.session is not None:
        x.session.attach(sock)
    err = sock.connect_ex((x.endpoint.host, x.endpoint.port))
    if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
        x.outcome = OSError(err, os.strerror(err))
        _end(x, sel)
        return False
    sel.register(sock, selectors.EVENT_WRITE, x)
    return True


def _step(x: _Transfer, sel: selectors.BaseSelector) -> bool:
    """Move *x* on after its socket is ready; True when it ended (``outcome`` set)."""
    sock = x.sock
    assert sock is not None and x.reader is not None
    try:
        if x.wire:  # connecting, or sending the query
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
            sent = sock.send(x.wire)
            x.wire = x.wire[sent:]
            if not x.wire:
                sel.modify(sock, selectors.EVENT_READ, x)
            return False
        data = sock.recv(65536)
        if not data:
            raise EOFError("EOF")
        x.buffer += data
        while len(x.buffer) >= 2:
            (length,) = struct.unpack_from("!H", x.buffer)
            if len(x.buffer) < 2 + length:
                break
            message, x.buffer = x.buffer[2:2 + length], x.buffer[2 + length:]
            if x.reader.feed(message):
                x.outcome = x.reader
                return True
            x.deadline = min(time.monotonic() + x.timeout, x.end)
        return False
    except (BlockingIOError, InterruptedError):
        return False
    except (EOFError, ConnectionError) as exc:
        if x.reused and not x.buffer and x.reader.first:
            # the kept connection was closed under us (idle timeout, restart): a new one
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(sock)
            sock.close()
            x.sock = None
            if x.session is not None:
                x.session.drop()
                x.session.owner._count("reconnected", x.session.server)
            return not _connect(x, sel)
        x.outcome = exc
        return True
    except BaseException as exc:
        x.outcome = exc
        return True


def _end(x: _Transfer, sel: selectors.BaseSelector, *, keep: bool = True) -> None:
    """Close or keep *x*'s connection (kept: a complete transfer, nothing left over), and
    give back its slot or its session."""
    sock, x.sock = x.sock, None
    complete = keep and isinstance(x.outcome, AxfrDigest) and not x.buffer
    if sock is not None:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(sock)
        if x.session is not None:
            if complete:
                x.session.done()
            else:
                x.session.drop()
        elif complete:
            CONNECTIONS.give(x.endpoint, sock)
        else:
            sock.close()
    session, x.session = x.session, None
    if session is not None:
        session.owner.give(session)
    held, x.slot = x.slot, None
    if held is not None:
        held.release()


def transfer(endpoint: Endpoint, zone: dns.name.Name, key: dns.tsig.Key | None, timeout: float,
             lifetime: float | None) -> AxfrDigest:
    """One AXFR over TCP, read by :class:`AxfrDigest`; returns it complete.

    *timeout* bounds the wait for each message, *lifetime* the whole transfer. Raises
    what dnspython's transfer raises for the network (``dns.exception.Timeout``,
    ``ConnectionRefusedError``, ``EOFError``, ``OSError``) and NotPlain for the rest.
    """
    (outcome,) = transfer_many([endpoint], zone, key, timeout, lifetime)
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
