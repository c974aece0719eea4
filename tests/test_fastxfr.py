"""The AXFR wire reader (bind9_topology.dns.fastxfr) against dnspython, its oracle.

Seeded random zones of many types (the fast ones and the rest: DNAME, NAPTR, SSHFP,
TLSA, HINFO, DS, what a signer adds, an apex ZONEMD), with upper case, wildcards,
escaped and IDN labels, names in rdata inside and outside the zone, are rendered by
dnspython as AXFR answers (several messages, name compression, TSIG over the whole
sequence, sometimes an unsigned message in the middle). The same bytes go to
:class:`AxfrDigest` and to dnspython's own transfer reader (``dns.xfr.Inbound`` into a
zone, then ``spec.digest.zone_digest``): serial, digest and record count must agree.
TSIG: our signed query verifies in dnspython, dnspython's signed answers verify in
ours, and a flipped byte, another secret, another key name or a stale time does not.
Whatever the reader does not take as plain is NotPlain (and ``checks.axfr_probe`` asks
dnspython instead).
"""

from __future__ import annotations

import base64
import copy
import random
import socket
import time
from collections.abc import Callable

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.xfr
import dns.zone
import pytest

from bind9_topology.config.digest import zone_digest
from bind9_topology.dns import fastxfr
from bind9_topology.dns.checks import make_tsig_key

pytestmark = pytest.mark.unit

ORIGIN = dns.name.from_text("Example.COM")
SECRET = base64.b64encode(bytes(range(32))).decode()
KEY = make_tsig_key("transfer-key", "hmac-sha256", SECRET)


# ----------------------------------------------------------------------------- zones


def rand_label(rnd: random.Random) -> str:
    kinds: list[Callable[[], str]] = [
        lambda: rnd.choice(["www", "Mail", "NS1", "a-b", "_sip", "_tcp", "xn--bcher-kva"]),
        lambda: "".join(rnd.choice("abcXYZ019-_") for _ in range(rnd.randint(1, 10))),
        lambda: "*",
        lambda: rnd.choice(["a\\.b", "\\065bc", "q\\\"x", "\\255\\000z", "sp\\032ace"]),
    ]
    return rnd.choice(kinds)()


def rand_name(rnd: random.Random, *, inside: float = 0.8) -> str:
    labels = [rand_label(rnd) for _ in range(rnd.randint(0, 3))]
    if rnd.random() < inside:
        return ".".join([*labels, "example.com."]) if labels else "EXAMPLE.com."
    return ".".join([*labels, rnd.choice(["example.net.", "Other.ORG.", "com."])])


def rand_txt(rnd: random.Random) -> str:
    chunks = []
    for _ in range(rnd.randint(1, 3)):
        chars = "".join(rnd.choice(['a', 'Z', ' ', ';', '\\"', '\\\\', '\\010', '\\255', 'é'])
                        for _ in range(rnd.randint(0, 40)))
        chunks.append(f'"{chars}"')
    return " ".join(chunks)


def rand_rdata(rnd: random.Random, rdtype: str) -> str:
    hexs = "".join(rnd.choice("0123456789abcdef") for _ in range(64))
    b64 = base64.b64encode(rnd.randbytes(64)).decode()
    table: dict[str, Callable[[], str]] = {
        "A": lambda: ".".join(str(rnd.randint(0, 255)) for _ in range(4)),
        "AAAA": lambda: ":".join(f"{rnd.randint(0, 0xFFFF):x}" for _ in range(8)),
        "NS": lambda: rand_name(rnd),
        "CNAME": lambda: rand_name(rnd),
        "PTR": lambda: rand_name(rnd),
        "DNAME": lambda: rand_name(rnd),
        "MX": lambda: f"{rnd.randint(0, 65535)} {rand_name(rnd)}",
        "SRV": lambda: (f"{rnd.randint(0, 65535)} {rnd.randint(0, 65535)} "
                        f"{rnd.randint(0, 65535)} {rand_name(rnd)}"),
        "TXT": lambda: rand_txt(rnd),
        "CAA": lambda: f'{rnd.choice([0, 128])} {rnd.choice(["issue", "iodef"])} "ca.example.net"',
        "NAPTR": lambda: f'100 10 "u" "E2U+sip" "!^.*$!sip:a@example.com!" {rand_name(rnd)}',
        "SSHFP": lambda: f"1 2 {hexs}",
        "TLSA": lambda: f"3 1 1 {hexs}",
        "HINFO": lambda: '"CPU x" "OS y"',
        "DS": lambda: f"12345 13 2 {hexs}",
        "DNSKEY": lambda: f"257 3 13 {b64}",
        "RRSIG": lambda: (f"{rnd.choice(['A', 'TXT', 'ZONEMD'])} 13 2 3600 20300101000000 "
                          f"20200101000000 12345 example.com. {b64}"),
        "NSEC": lambda: f"{rand_name(rnd)} A RRSIG NSEC",
    }
    return table[rdtype]()


TYPES = ["A", "AAAA", "NS", "CNAME", "PTR", "MX", "SRV", "TXT", "CAA", "DNAME", "NAPTR",
         "SSHFP", "TLSA", "HINFO", "DS", "DNSKEY", "RRSIG", "NSEC"]
FAST = ["A", "AAAA", "NS", "CNAME", "PTR", "MX", "SRV", "TXT"]


def make_zone(rnd: random.Random, *, records: int, types: list[str]) -> dns.zone.Zone:
    serial = rnd.randint(1, 2**32 - 1)
    zone = dns.zone.from_text(
        f"@ 3600 IN SOA ns1.Example.com. Host\\.master.example.com. {serial} 3600 600 86400 300\n"
        "@ 3600 IN NS ns1\nns1 3600 IN A 192.0.2.1\n",
        origin=ORIGIN, relativize=False)
    if rnd.random() < 0.3:  # an apex ZONEMD: left out of the digest (RFC 8976)
        zone.replace_rdataset(ORIGIN, dns.rdataset.from_text(
            "IN", "ZONEMD", 300, f"{serial} 1 1 " + "ab" * 48))
    for _ in range(records):
        rdtype = rnd.choice(types)
        owner = dns.name.from_text(rand_name(rnd, inside=1.0))
        if owner == ORIGIN and rdtype in ("CNAME", "DNAME"):
            continue
        ttl = rnd.choice([60, 300, 3600])
        node = zone.find_node(owner, create=True)
        if rdtype in ("CNAME", "DNAME") and node.rdatasets:
            continue  # keep the zone sane: a CNAME alone at its name
        if any(rds.rdtype == dns.rdatatype.CNAME for rds in node.rdatasets):
            continue
        new = dns.rdataset.from_text("IN", rdtype, ttl, rand_rdata(rnd, rdtype))
        old = node.get_rdataset(dns.rdataclass.IN, new.rdtype, new.covers)
        if old is not None:
            new.ttl = old.ttl  # one TTL per RRset, as named serves them
            for rd in old:
                new.add(rd)
        node.replace_rdataset(new)
    return zone


# ----------------------------------------------------------------------------- messages


def signed_query(query_id: int | None = None) -> tuple[bytes, int, fastxfr.Tsig,
                                                       dns.message.Message]:
    """Our signed AXFR query, and dnspython's reading of it (which verifies its TSIG)."""
    wire, qid, tsig = fastxfr.axfr_query(ORIGIN, KEY)
    assert tsig is not None
    parsed = dns.message.from_wire(wire, keyring={KEY.name: KEY})
    assert parsed.had_tsig and parsed.id == qid
    return wire, qid, tsig, parsed


def answer_messages(zone: dns.zone.Zone, query: dns.message.Message, rnd: random.Random, *,
                    per_message: int = 7, unsigned_middle: bool = False,
                    sign_with: dns.tsig.Key | None = None) -> list[bytes]:
    """The zone as an AXFR answer to *query*, rendered by dnspython (TSIG when the query
    was signed: the first and last message signed, one in the middle maybe not)."""
    rrsets = []
    soa = None
    for name, node in zone.nodes.items():
        for rds in node.rdatasets:
            rrset = dns.rrset.RRset(name.derelativize(ORIGIN), rds.rdclass, rds.rdtype,
                                    rds.covers)
            for rd in rds:
                rrset.add(rd, rds.ttl)
            if rds.rdtype == dns.rdatatype.SOA:
                soa = rrset
            else:
                # one RR per RRset or all at once, as servers do either
                if rnd.random() < 0.5:
                    rrsets.append(rrset)
                else:
                    for rd in rds:
                        one = dns.rrset.RRset(rrset.name, rds.rdclass, rds.rdtype, rds.covers)
                        one.add(rd, rds.ttl)
                        rrsets.append(one)
    assert soa is not None
    rnd.shuffle(rrsets)
    body = [soa, *rrsets, soa]
    chunks = [body[i:i + per_message] for i in range(0, len(body), per_message)]
    wires: list[bytes] = []
    ctx = None
    for i, chunk in enumerate(chunks):
        r = dns.message.make_response(query)
        if sign_with is not None:  # a forger's or another server's key
            r.use_tsig({sign_with.name: sign_with}, sign_with.name, original_id=r.id,
                       algorithm=sign_with.algorithm)
            r.request_mac = query.mac or b""
        r.flags |= dns.flags.AA
        if i > 0 and rnd.random() < 0.5:
            r.question = []  # RFC 5936 2.2.1: later messages may leave the question out
        r.answer = chunk
        middle = 0 < i < len(chunks) - 1
        if query.had_tsig and unsigned_middle and middle and ctx is not None:
            r.tsig = None
            wire = r.to_wire()
            ctx.update(wire)
        elif query.had_tsig:
            wire = r.to_wire(multi=True, tsig_ctx=ctx)
            ctx = r.tsig_ctx
        else:
            wire = r.to_wire()
        wires.append(wire)
    return wires


def dnspython_reads(wires: list[bytes], query: dns.message.Message) -> tuple[int, str, int]:
    """What dnspython's transfer reader makes of the same bytes (checks.axfr's path)."""
    zone = dns.zone.Zone(ORIGIN, relativize=True)
    ctx = None
    with dns.xfr.Inbound(zone, dns.rdatatype.AXFR) as inbound:
        for wire in wires:
            msg = dns.message.from_wire(wire, keyring={KEY.name: KEY} if query.had_tsig else None,
                                        request_mac=query.mac, xfr=True,
                                        origin=zone.origin, tsig_ctx=ctx, multi=True)
            done = inbound.process_message(msg)
            ctx = msg.tsig_ctx
    assert done
    records = sum(len(rds) for node in zone.nodes.values() for rds in node.rdatasets)
    return int(zone.get_soa().serial), zone_digest(zone), records


def fast_reads(wires: list[bytes], query_id: int, tsig: fastxfr.Tsig | None) -> tuple[int, str,
                                                                                     int]:
    reader = fastxfr.AxfrDigest(ORIGIN, query_id, tsig)
    done = [reader.feed(w) for w in wires]
    assert done[-1] and not any(done[:-1])
    assert reader.serial is not None and reader.digest is not None
    return reader.serial, reader.digest, reader.records


# ----------------------------------------------------------------------------- oracle


@pytest.mark.parametrize("seed", range(60))
def test_digest_serial_and_count_equal_dnspython_on_random_zones(seed: int) -> None:
    rnd = random.Random(seed)
    zone = make_zone(rnd, records=rnd.randint(1, 80), types=FAST if seed % 3 == 0 else TYPES)
    signed = seed % 2 == 0
    if signed:
        _, qid, tsig, query = signed_query()
    else:
        wire, qid, none_tsig = fastxfr.axfr_query(ORIGIN, None)
        assert none_tsig is None
        tsig, query = None, dns.message.from_wire(wire)
    wires = answer_messages(zone, query, rnd, per_message=rnd.choice([3, 7, 50]),
                            unsigned_middle=seed % 4 == 0)
    oracle = dnspython_reads(wires, query)
    assert fast_reads(wires, qid, tsig) == oracle
    assert oracle[1] == zone_digest(zone)  # and both are the zone's own digest


def test_uppercase_and_compression_change_nothing() -> None:
    rnd = random.Random(7)
    zone = make_zone(rnd, records=40, types=FAST)
    _, qid, tsig, query = signed_query()
    wires = answer_messages(zone, query, rnd, per_message=100)
    assert len(wires) == 1
    assert fast_reads(wires, qid, tsig)[1] == zone_digest(zone)


# ----------------------------------------------------------------------------- TSIG


def one_answer(query: dns.message.Message,
               sign_with: dns.tsig.Key | None = None) -> list[bytes]:
    zone = make_zone(random.Random(1), records=5, types=FAST)
    return answer_messages(zone, query, random.Random(1), per_message=100,
                           sign_with=sign_with)


def test_our_query_signature_verifies_in_dnspython_and_a_wrong_secret_does_not() -> None:
    wire, _, _, _ = signed_query()
    other = make_tsig_key("transfer-key", "hmac-sha256", base64.b64encode(b"x" * 32).decode())
    with pytest.raises(dns.tsig.BadSignature):
        dns.message.from_wire(wire, keyring={other.name: other})


def tampered(wire: bytes, at: int) -> bytes:
    return wire[:at] + bytes([wire[at] ^ 0x01]) + wire[at + 1:]


def test_a_flipped_byte_anywhere_signed_is_not_accepted() -> None:
    _, qid, tsig, query = signed_query()
    (wire,) = one_answer(query)
    fast_reads([wire], qid, copy.deepcopy(tsig))  # as sent: accepted
    tsig_start = wire.rfind(KEY.name.to_digestable())
    for at in [2, 3, 13, 20, len(wire) // 2, tsig_start - 1, len(wire) - 12]:
        with pytest.raises(fastxfr.NotPlain):
            fastxfr.AxfrDigest(ORIGIN, qid, copy.deepcopy(tsig)).feed(tampered(wire, at))


def test_answers_signed_with_another_secret_or_key_name_are_not_accepted() -> None:
    _, qid, tsig, query = signed_query()
    for other in (make_tsig_key("transfer-key", "hmac-sha256",
                                base64.b64encode(b"y" * 32).decode()),
                  make_tsig_key("other-key", "hmac-sha256", SECRET)):
        (wire,) = one_answer(query, sign_with=other)
        with pytest.raises(fastxfr.NotPlain, match=r"TSIG|another key"):
            fastxfr.AxfrDigest(ORIGIN, qid, copy.deepcopy(tsig)).feed(wire)


def test_an_answer_outside_the_time_fudge_is_not_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    _, qid, tsig, query = signed_query()
    (wire,) = one_answer(query)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    with pytest.raises(fastxfr.NotPlain, match="fudge"):
        fastxfr.AxfrDigest(ORIGIN, qid, copy.deepcopy(tsig)).feed(wire)


def test_unsigned_answers_to_a_signed_query_and_signed_to_unsigned_are_not_accepted() -> None:
    _, qid, tsig, query = signed_query()
    plain = copy.copy(query)
    plain.keyring = None
    plain.tsig = None
    (wire,) = one_answer(plain)
    with pytest.raises(fastxfr.NotPlain, match="without TSIG"):
        fastxfr.AxfrDigest(ORIGIN, qid, copy.deepcopy(tsig)).feed(wire)
    (signed,) = one_answer(query)
    with pytest.raises(fastxfr.NotPlain, match="unsigned query"):
        fastxfr.AxfrDigest(ORIGIN, qid, None).feed(signed)


def test_a_truncated_mac_algorithm_is_left_to_dnspython() -> None:
    key = make_tsig_key("k", "hmac-sha256-128", SECRET)
    assert fastxfr.Tsig.for_key(key) is None
    with pytest.raises(fastxfr.NotPlain):
        fastxfr.axfr_query(ORIGIN, key)


# ----------------------------------------------------------------------------- not plain


def unsigned_answer(mutate: Callable[[dns.message.Message], None]) -> tuple[list[bytes], int]:
    """A plain unsigned answer to our unsigned query, changed by *mutate*."""
    wire, qid, _ = fastxfr.axfr_query(ORIGIN, None)
    r = dns.message.make_response(dns.message.from_wire(wire))
    r.flags |= dns.flags.AA
    soa = dns.rrset.from_text(ORIGIN, 3600, "IN", "SOA",
                              "ns1.example.com. h.example.com. 5 1 1 1 1")
    r.answer = [soa, dns.rrset.from_text("www.example.com.", 60, "IN", "A", "192.0.2.9"), soa]
    mutate(r)
    return [r.to_wire()], qid


@pytest.mark.parametrize("case", ["refused", "no soa first", "after final", "other question",
                                  "other id", "ttl differs", "other class"])
def test_what_is_not_plain_is_left_to_dnspython(case: str) -> None:
    soa = dns.rrset.from_text(ORIGIN, 3600, "IN", "SOA",
                              "ns1.example.com. h.example.com. 5 1 1 1 1")
    a60 = dns.rrset.from_text("www.example.com.", 60, "IN", "A", "192.0.2.9")
    a61 = dns.rrset.from_text("www.example.com.", 61, "IN", "A", "192.0.2.10")
    ch = dns.rrset.from_text("www.example.com.", 60, "CH", "TXT", '"x"')

    def mutate(r: dns.message.Message) -> None:
        if case == "refused":
            r.set_rcode(dns.rcode.REFUSED)
            r.answer = []
        elif case == "no soa first":
            r.answer = [a60, soa]
        elif case == "after final":
            r.answer = [soa, soa, a60]
        elif case == "other question":
            r.question = [dns.rrset.RRset(dns.name.from_text("other.com."), dns.rdataclass.IN,
                                          dns.rdatatype.AXFR)]
        elif case == "other id":
            r.id ^= 1
        elif case == "ttl differs":
            r.answer = [soa, a60, a61, soa]
        elif case == "other class":
            r.answer = [soa, ch, soa]

    wires, qid = unsigned_answer(mutate)
    with pytest.raises(fastxfr.NotPlain):
        reader = fastxfr.AxfrDigest(ORIGIN, qid, None)
        for wire in wires:
            reader.feed(wire)


def test_a_name_with_a_forward_pointer_is_not_plain() -> None:
    wires, qid = unsigned_answer(lambda r: None)
    wire = wires[0]
    # the question name starts at 12; point it at itself (a loop), as a hostile server might
    looped = wire[:12] + b"\xc0\x0c" + wire[12 + len(ORIGIN.to_digestable()):]
    with pytest.raises(fastxfr.NotPlain):
        fastxfr.AxfrDigest(ORIGIN, qid, None).feed(looped)


# ----------------------------------------------------------------------------- connections


def test_kept_connections_idle_out_and_closed_ones_are_dropped() -> None:
    from bind9_topology.dns.checks import Endpoint

    now = [100.0]
    pool = fastxfr._Connections(per_server=2, max_idle_s=10.0, clock=lambda: now[0])
    ep = Endpoint("127.0.0.1", 53000, "x")
    a, a_peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    c, c_peer = socket.socketpair()
    try:
        for sock in (a, b, c):
            sock.setblocking(False)
            pool.give(ep, sock)
        assert c.fileno() == -1  # two per server: the third is closed, not kept
        b_peer.close()  # the server closed this one meanwhile
        assert pool.take(ep) is a  # b (last in) is dropped on the way
        assert b.fileno() == -1
        assert pool.take(ep) is None
        pool.give(ep, a)
        assert pool.take(Endpoint("127.0.0.1", 53000, "x", tcp_only=True)) is None  # never
        now[0] += 11
        assert pool.take(ep) is None  # idled out
        assert a.fileno() == -1
    finally:
        for sock in (a, a_peer, b, b_peer, c, c_peer):
            sock.close()


# ----------------------------------------------------------------------------- answers seen


def _same_answer_twice(seed: int) -> tuple[list[bytes], list[bytes], dns.message.Message,
                                           dns.message.Message, int, int,
                                           fastxfr.Tsig, fastxfr.Tsig]:
    """One zone as two servers answer two signed queries: the same records in the same
    order, each answer with its own id and TSIG."""
    zone = single_rdata_zone(random.Random(seed), 30)
    _, qid1, tsig1, q1 = signed_query()
    _, qid2, tsig2, q2 = signed_query()
    first = answer_messages(zone, q1, random.Random(seed), per_message=100)
    second = answer_messages(zone, q2, random.Random(seed), per_message=100)
    return first, second, q1, q2, qid1, qid2, tsig1, tsig2


def single_rdata_zone(rnd: random.Random, records: int) -> dns.zone.Zone:
    """A zone whose RRsets hold one value each (dnspython shuffles the values of an RRset
    as it renders them, and two servers' answers are to carry the same bytes here)."""
    lines = ["@ 3600 IN SOA ns1 hostmaster 7 3600 600 86400 300", "@ 3600 IN NS ns1",
             "ns1 3600 IN A 192.0.2.1"]
    for i in range(records):
        rdtype = rnd.choice(FAST)
        lines.append(f"n{i}.{rand_label(rnd)} {rnd.choice([60, 300])} IN {rdtype} "
                     f"{rand_rdata(rnd, rdtype)}")
    return dns.zone.from_text("\n".join(lines) + "\n", origin=ORIGIN, relativize=False)


@pytest.mark.parametrize("seed", range(10))
def test_an_answer_with_the_bytes_of_one_read_before_gives_what_dnspython_reads(
        seed: int) -> None:
    fastxfr.ANSWERS.clear()
    first, second, q1, q2, qid1, qid2, tsig1, tsig2 = _same_answer_twice(seed)
    body = len(first[0]) - tsig1.record_size
    assert first[0][2:body] == second[0][2:body] and first != second
    assert fast_reads(first, qid1, tsig1) == dnspython_reads(first, q1)
    hits = fastxfr.ANSWERS.hits
    assert fast_reads(second, qid2, tsig2) == dnspython_reads(second, q2)
    assert fastxfr.ANSWERS.hits == hits + 1  # taken without reading it again


def test_a_seen_answer_is_still_held_to_its_own_id_and_tsig() -> None:
    fastxfr.ANSWERS.clear()
    first, second, _, _, qid1, qid2, tsig1, tsig2 = _same_answer_twice(3)
    fast_reads(first, qid1, tsig1)
    (wire,) = second
    tsig_start = len(wire) - tsig2.record_size
    for at in [tsig_start + 1, len(wire) - 40, len(wire) - 1]:  # owner, MAC, other-len
        with pytest.raises(fastxfr.NotPlain):
            fastxfr.AxfrDigest(ORIGIN, qid2, copy.deepcopy(tsig2)).feed(tampered(wire, at))
    with pytest.raises(fastxfr.NotPlain):  # another exchange's id
        fastxfr.AxfrDigest(ORIGIN, qid2 ^ 1, copy.deepcopy(tsig2)).feed(wire)
    with pytest.raises(fastxfr.NotPlain):  # verified against the first query's MAC
        fastxfr.AxfrDigest(ORIGIN, qid2, copy.deepcopy(tsig1)).feed(
            wire[:0] + struct_id(qid2) + wire[2:])
    # and another order of the same records is read in full, to the same digest
    zone = single_rdata_zone(random.Random(3), 30)
    _, qid3, tsig3, q3 = signed_query()
    other = answer_messages(zone, q3, random.Random(99), per_message=100)
    hits = fastxfr.ANSWERS.hits
    assert fast_reads(other, qid3, tsig3) == dnspython_reads(other, q3)
    assert fastxfr.ANSWERS.hits == hits


def struct_id(qid: int) -> bytes:
    return qid.to_bytes(2, "big")


def test_an_answer_past_max_records_is_too_large_and_one_within_is_read() -> None:
    zone = make_zone(random.Random(5), records=60, types=FAST)
    records = sum(len(rds) for node in zone.nodes.values() for rds in node.rdatasets)
    _, qid, tsig, query = signed_query()
    wires = answer_messages(zone, query, random.Random(5), per_message=7)
    reader = fastxfr.AxfrDigest(ORIGIN, qid, copy.deepcopy(tsig), max_records=10)
    with pytest.raises(fastxfr.TooLarge):
        for w in wires:
            reader.feed(w)
    reader = fastxfr.AxfrDigest(ORIGIN, qid, copy.deepcopy(tsig), max_records=records)
    assert [reader.feed(w) for w in wires][-1] and reader.records == records


@pytest.mark.parametrize("seed", range(20))
def test_axfr_query_bytes_are_dnspythons(seed: int) -> None:
    rnd = random.Random(seed)
    zone = dns.name.from_text(rand_name(rnd, inside=0.5))
    q = dns.message.make_query(zone, dns.rdatatype.AXFR, dns.rdataclass.IN)
    q.id = 0
    assert fastxfr._unsigned_query.__wrapped__(zone) == q.to_wire()
