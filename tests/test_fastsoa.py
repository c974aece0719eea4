"""The SOA fast path (fastxfr.soa_query_wire, read_soa_answer) against dnspython, its oracle.

The poller builds every SOA question from a per-zone template and reads a plain answer in
place; here the query bytes must equal dnspython's (``checks.soa_query``, signed or not),
and for every answer -- random SOA answers with upper case, compression or not, extra
records, no AA, signed by dnspython with our key or another -- the fast reader either
gives exactly what ``checks.soa_answer`` reads from dnspython's parse (serial and AA) or
says NotPlain, and never accepts what dnspython rejects (a flipped byte, another
secret, a stale time, an unsigned answer to a signed query).
"""

from __future__ import annotations

import base64
import random
import time

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import pytest

from bind9_topology.dns import fastxfr
from bind9_topology.dns.checks import (
    Endpoint,
    Reason,
    _keyring,
    make_tsig_key,
    soa_answer,
    soa_query,
)

pytestmark = pytest.mark.unit

KEY = make_tsig_key("transfer-key", "hmac-sha256", base64.b64encode(bytes(range(32))).decode())
OTHER = make_tsig_key("transfer-key", "hmac-sha256", base64.b64encode(bytes(32)).decode())
EP = Endpoint("127.0.0.1", 53, "x")


def make_answer(query: dns.message.Message, zone: dns.name.Name, rnd: random.Random,
                key: dns.tsig.Key | None) -> bytes:
    r = dns.message.make_response(query)
    if rnd.random() < 0.8:
        r.flags |= dns.flags.AA
    owner = zone if rnd.random() < 0.5 else dns.name.from_text(zone.to_text().upper())
    serial = rnd.randrange(1, 2**32)
    soa = dns.rrset.from_text(owner, rnd.randrange(0, 86400), "IN", "SOA",
                              f"ns1.{zone} Host.{zone} {serial} 3600 600 86400 300")
    if rnd.random() < 0.9:
        r.answer.append(soa)
    if rnd.random() < 0.3:
        r.authority.append(dns.rrset.from_text(zone, 300, "IN", "NS", f"ns1.{zone}"))
    if rnd.random() < 0.3:
        r.additional.append(dns.rrset.from_text(f"ns1.{zone}", 300, "IN", "A", "192.0.2.1"))
    if rnd.random() < 0.1:
        r.set_rcode(rnd.choice([dns.rcode.REFUSED, dns.rcode.SERVFAIL, dns.rcode.NOTAUTH]))
    if key is not None:
        r.use_tsig(_keyring(key), key.name, algorithm=key.algorithm)
    return r.to_wire()


def oracle(wire: bytes, query: dns.message.Message, zone: dns.name.Name,
           key: dns.tsig.Key | None) -> tuple[Reason, int | None] | None:
    """What the poller's dnspython path makes of *wire*: (reason, serial), None if rejected."""
    try:
        r = dns.message.from_wire(wire, keyring=_keyring(key) if key else None,
                                  request_mac=query.mac if key else b"")
    except Exception:
        return None
    if not query.is_response(r):
        return None
    probe = soa_answer(EP, zone, r, 0.0)
    return probe.reason, probe.serial


def fast(wire: bytes, query_id: int, zone: dns.name.Name,
         tsig: fastxfr.Tsig | None) -> tuple[Reason, int] | None:
    try:
        serial, aa = fastxfr.read_soa_answer(wire, query_id, zone.canonicalize().to_wire(), tsig)
    except fastxfr.NotPlain:
        return None
    return (Reason.OK if aa else Reason.NOT_AUTHORITATIVE), serial


@pytest.mark.parametrize("signed", [False, True])
def test_query_bytes_are_dnspythons(signed: bool) -> None:
    key = KEY if signed else None
    for text in ("example.com", "Z00001.Bench", "a.b.c.d.example.org."):
        zone = dns.name.from_text(text)
        wire, tsig = fastxfr.soa_query_wire(zone, key, 4321)
        q = soa_query(zone, key)
        q.id = 4321
        if not signed:
            assert wire == q.to_wire()
            continue
        # the same message, and its signature verifies in dnspython with our key
        parsed = dns.message.from_wire(wire, keyring=_keyring(KEY))
        assert parsed.id == 4321 and parsed.question == q.question
        assert parsed.flags == q.flags and parsed.had_tsig and tsig is not None
        with pytest.raises(dns.exception.DNSException):
            dns.message.from_wire(wire, keyring=_keyring(OTHER))


@pytest.mark.parametrize("seed", range(40))
def test_fast_reader_agrees_with_dnspython(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(25):
        zone = dns.name.from_text(rnd.choice(["example.com", "z00042.bench", "Mixed.Case.org"]))
        key = rnd.choice([None, KEY])
        query_id = rnd.randrange(65536)
        wire, tsig = fastxfr.soa_query_wire(zone, key, query_id)
        query = dns.message.from_wire(wire, keyring=_keyring(key) if key else None)
        answer = make_answer(query, zone, rnd, rnd.choice([key, key, OTHER]) if key else None)
        want = oracle(answer, query, zone, key)
        got = fast(answer, query_id, zone, tsig)
        if got is not None:  # whatever the fast reader takes, dnspython reads the same
            assert got == want, (got, want)
        elif want is not None and want[0] is Reason.OK:
            # a plain OK answer the fast reader left to dnspython: only upper-case owner
            # names of another zone could be that; there are none here
            pytest.fail(f"plain answer not read fast: {want}")


def test_a_flipped_byte_or_another_key_is_never_accepted() -> None:
    zone = dns.name.from_text("example.com")
    wire, tsig = fastxfr.soa_query_wire(zone, KEY, 7)
    query = dns.message.from_wire(wire, keyring=_keyring(KEY))
    r = dns.message.make_response(query)
    r.flags |= dns.flags.AA
    r.answer.append(dns.rrset.from_text(zone, 60, "IN", "SOA", "a. b. 5 1 1 1 1"))
    r.use_tsig(_keyring(KEY), KEY.name, algorithm=KEY.algorithm)
    good = r.to_wire()
    assert fast(good, 7, zone, tsig) == (Reason.OK, 5)
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x01
        _, tsig = fastxfr.soa_query_wire(zone, KEY, 7)
        got = fast(bytes(bad), 7, zone, tsig)
        if got is not None:
            assert got == oracle(bytes(bad), query, zone, KEY), i
    r2 = dns.message.make_response(query)
    r2.tsig = None  # unsigned
    r2.keyring = None
    r2.flags |= dns.flags.AA
    r2.answer.append(dns.rrset.from_text(zone, 60, "IN", "SOA", "a. b. 5 1 1 1 1"))
    unsigned = r2.to_wire()
    _, tsig = fastxfr.soa_query_wire(zone, KEY, 7)
    assert fast(unsigned, 7, zone, tsig) is None  # dnspython: a TSIG is required
    assert oracle(unsigned, query, zone, KEY) is None


def test_a_stale_answer_is_not_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    zone = dns.name.from_text("example.com")
    wire, tsig = fastxfr.soa_query_wire(zone, KEY, 9)
    query = dns.message.from_wire(wire, keyring=_keyring(KEY))
    r = dns.message.make_response(query)
    r.answer.append(dns.rrset.from_text(zone, 60, "IN", "SOA", "a. b. 5 1 1 1 1"))
    r.use_tsig(_keyring(KEY), KEY.name, algorithm=KEY.algorithm)
    answer = r.to_wire()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    assert fast(answer, 9, zone, tsig) is None
