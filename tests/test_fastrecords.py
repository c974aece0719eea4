"""The fast record path against dnspython, its oracle: byte for byte on randomized records.

A seeded generator writes thousands of records of the fast types (A, AAAA, CNAME, MX,
NS, TXT, SRV, CAA, PTR) with the edge cases people hit: escapes in TXT (quotes,
backslashes, \\DDD, non-ASCII, several strings, strings over 255 bytes), IDN names,
wildcards, relative and absolute names, '@', upper case, trailing dots, field ranges,
and plain garbage. For each record:

- whatever the fast path accepts, dnspython accepts, with the same text, canonical
  wire form and deduplication key (what it does not take, dnspython judges);
- the zone build (build_zones) reports a record as invalid exactly when dnspython
  refuses its name or data, at the same config path;
- for whole zones, the body and the digest equal dnspython's Zone.to_text and
  Zone.compute_digest, and the digest equals the one dnscheck computes from the text.
"""

from __future__ import annotations

import random
from pathlib import Path

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
import dns.zonetypes
import pytest

from bind9_topology.config import fast_records, zone_records
from bind9_topology.config.digest import zone_digest_from_text
from bind9_topology.config.model import IDNA, Zone
from bind9_topology.config.zone_records import _build_zone

pytestmark = pytest.mark.unit

ORIGIN_TEXT = "example.com"
ORIGIN = dns.name.from_text(ORIGIN_TEXT)
FAST_ORIGIN = fast_records.Origin(ORIGIN_TEXT)
TYPES = list(fast_records.TYPES)


def rand_label(rnd: random.Random) -> str:
    return rnd.choice([
        lambda: rnd.choice(["www", "mail", "ns1", "Host", "WWW", "a-b", "x1", "_sip", "_tcp"]),
        lambda: "".join(rnd.choice("abcXYZ019-_") for _ in range(rnd.randint(1, 12))),
        lambda: "*",
        lambda: rnd.choice(["bücher", "münchen", "ÄÖÜ", "例え", "xn--bcher-kva"]),
        lambda: "a" * rnd.choice([62, 63, 64]),
        lambda: rnd.choice(["a\\.b", "\\065bc", "q\\\"x", "sp ace", "a(b", "a;b", "a@b",
                            "a$b", "a/b", "", "a\tb", "\\999", "é\\046"]),
    ])()


def rand_name(rnd: random.Random) -> str:
    kind = rnd.random()
    if kind < 0.08:
        return "@"
    if kind < 0.1:
        return rnd.choice([".", "..", "", " ", "a..b", ".a", "@.", "example.com.", "EXAMPLE.Com."])
    labels = [rand_label(rnd) for _ in range(rnd.choice([1, 1, 2, 3]))]
    if rnd.random() < 0.03:
        labels = ["abcdefghij" * 6] * 4
    name = ".".join(labels)
    tail = rnd.random()
    if tail < 0.2:
        name += ".example.com."
    elif tail < 0.25:
        name += ".Example.COM."
    elif tail < 0.35:
        name += ".other.org."
    elif tail < 0.4:
        name += "."
    return name


def rand_number(rnd: random.Random, limit: int) -> str:
    return rnd.choice([
        str(rnd.randint(0, limit)), str(limit), str(limit + 1), "0", "00" + str(rnd.randint(0, 9)),
        "-1", "x", "1.5", "99999999", "٣",
    ])


def rand_txt_string(rnd: random.Random) -> str:
    parts = []
    for _ in range(rnd.randint(0, 6)):
        parts.append(rnd.choice([
            "v=spf1 -all", "hello world", 'say \\"hi\\"', "back\\\\slash", "\\065\\066",
            "\\255\\000", "\\256", "\\12", "é", "日本", "tab\there", "semi;colon", "(paren)",
            "x" * rnd.choice([100, 255, 256]), "\\x", "\\", "new\nline", "",
        ]))
    return "".join(parts)


def rand_txt(rnd: random.Random) -> str:
    kind = rnd.random()
    if kind < 0.7:
        strings = [f'"{rand_txt_string(rnd)}"' for _ in range(rnd.choice([1, 1, 2, 3]))]
        return rnd.choice([" ", "  ", ""]).join(strings)
    if kind < 0.85:
        return rnd.choice(["plain", "two words", "v=DKIM1;", "a\"b\"", 'unclosed "x', "x\\065",
                           '"a" b', " lead", "trail ", "é"])
    return '"' + "y" * 255 + '" ' * rnd.randint(1, 3)


def rand_data(rnd: random.Random, rtype: str) -> str:
    if rtype == "A":
        return rnd.choice([
            ".".join(str(rnd.randint(0, 255)) for _ in range(4)), "256.1.1.1", "01.2.3.4",
            "1.2.3", "1.2.3.4.5", " 1.2.3.4", "1.2.3.4 ", "::1", "a.b.c.d", "0.0.0.0",
            "255.255.255.255", "1.2.3.4\t",
        ])
    if rtype == "AAAA":
        return rnd.choice([
            "2001:db8::1", "2001:DB8:0:0:0:0:0:1", "::", "::1", "::ffff:1.2.3.4", "::1.2.3.4",
            "fe80::1%eth0", "1:2:3:4:5:6:7:8", "1::2::3", "2001:db8:0:1:0:0:0:1",
            ":".join(f"{rnd.randint(0, 0xFFFF):x}" for _ in range(8)), "0:0:0:0:0:ffff:102:304",
            "12345::", "1.2.3.4", "::ffff:0:0", "1:0:0:2:0:0:0:3",
        ])
    if rtype in ("CNAME", "NS", "PTR"):
        return rand_name(rnd)
    if rtype == "MX":
        return f"{rand_number(rnd, 65535)} {rand_name(rnd)}" if rnd.random() < 0.95 else \
            rnd.choice(["10", "mail.example.com.", "10  mail", "10\tmail", "0 ."])
    if rtype == "SRV":
        return (f"{rand_number(rnd, 65535)} {rand_number(rnd, 65535)} "
                f"{rand_number(rnd, 65535)} {rand_name(rnd)}")
    if rtype == "TXT":
        return rand_txt(rnd)
    if rtype == "CAA":
        value = rnd.choice(['"letsencrypt.org"', "letsencrypt.org", '"mailto:a@b.c"', '""',
                            '"é"', '"\\065"', '"a\\"b"', '"; x"', "x;y", '"x" y'])
        tag = rnd.choice(["issue", "issuewild", "iodef", "ISSUE", "is-sue", "", "x" * 256, "t1"])
        return f"{rand_number(rnd, 255)} {tag} {value}".strip()
    raise AssertionError(rtype)


def dnspython(rtype: str, data: str) -> dns.rdata.Rdata | None:
    try:
        return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), data,
                                   origin=ORIGIN, relativize=True, idna_codec=IDNA)
    except Exception:
        return None


def owner_ok(name: str) -> bool:
    if not name or any(c.isspace() for c in name):
        return False
    try:
        owner = dns.name.from_text(name, ORIGIN, idna_codec=IDNA)
    except Exception:
        return False
    return owner.is_subdomain(ORIGIN)


def test_fast_path_agrees_with_dnspython_record_by_record() -> None:
    rnd = random.Random(20240613)
    fast_taken = 0
    for case in range(6000):
        rtype = TYPES[case % len(TYPES)]
        data = rand_data(rnd, rtype)
        fast = fast_records.parse(fast_records.TYPES[rtype], data, FAST_ORIGIN)
        rdata = dnspython(rtype, data)
        if fast is None:
            continue
        fast_taken += 1
        assert rdata is not None, f"fast path accepted {rtype} {data!r}, dnspython refuses"
        text, wire, dedup, _ = fast
        assert text == rdata.to_text(origin=ORIGIN, relativize=True), (rtype, data)
        assert wire == rdata.to_digestable(ORIGIN), (rtype, data)
        assert dedup == zone_records._from_rdata(rdata, ORIGIN)[2], (rtype, data)
        assert (dedup[1] if isinstance(dedup, tuple) else dedup) == rdata.to_digestable(
            dns.name.root), (rtype, data)
    assert fast_taken > 2000  # the generator exercises the fast path, not only dnspython


def test_names_agree_with_dnspython() -> None:
    rnd = random.Random(7)
    for _ in range(4000):
        text = rand_name(rnd)
        fast = fast_records.parse_name(text, FAST_ORIGIN)
        if fast is None:
            continue
        name = dns.name.from_text(text, ORIGIN, idna_codec=IDNA)
        assert fast.inside == name.is_subdomain(ORIGIN), text
        rel = name.relativize(ORIGIN)
        assert fast.text() == rel.to_text(), text
        assert fast.wire(FAST_ORIGIN) == name.to_digestable(), text
        assert fast.key == fast_records.from_dnspython(name, ORIGIN).key, text


def zone_of(records: list[dict]) -> Zone:
    return Zone.model_validate({
        "zoneName": ORIGIN_TEXT, "type": "primary",
        "instanceSelector": {"matchLabels": {"a": "b"}},
        "soaRecord": {"primaryNs": "ns1.example.com.", "adminEmail": "hostmaster@example.com"},
        "records": records,
    })


def oracle(records: list[dict], default_ttl: int = 3600) -> tuple[str, str]:
    """dnspython's own Zone: (to_text sorted relativized, ZONEMD SHA-384 with the SOA)."""
    z = dns.zone.Zone(ORIGIN, relativize=True)
    for r in records:
        owner = dns.name.from_text(r["name"], ORIGIN, idna_codec=IDNA).relativize(ORIGIN)
        rdata = dnspython(r["type"], r["data"])
        assert rdata is not None
        z.find_rdataset(owner, rdata.rdtype, create=True).add(
            rdata, r.get("ttl", default_ttl))
    body = z.to_text(sorted=True, relativize=True)
    soa = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA,
                              "ns1.example.com. hostmaster.example.com. 0 3600 600 1209600 300",
                              origin=ORIGIN, relativize=False)
    z.find_rdataset(dns.name.empty, dns.rdatatype.SOA, create=True).add(soa, default_ttl)
    return body, z.compute_digest(dns.zonetypes.DigestHashAlgorithm.SHA384).digest.hex()


def valid_zone_records(rnd: random.Random, count: int) -> list[dict]:
    """Records that pass BIND's checks: targets outside the zone or at address records."""
    records: list[dict] = [{"name": "@", "type": "NS", "data": "ns.other.org."},
                           {"name": "host", "type": "A", "data": "192.0.2.1"}]
    while len(records) < count:
        rtype = rnd.choice(TYPES)
        data = rand_data(rnd, rtype)
        if rtype in ("NS", "MX", "SRV"):
            target = rnd.choice(["host", "HOST.example.com.", "mx.other.org.", "Mx.Other.Org.",
                                 "@" if rtype != "NS" else "host"])
            data = " ".join([*data.split()[:-1], target]) if rtype != "NS" else target
        name = rnd.choice(["@", "host", "Host", "www", "*.wild", "x.y.example.com.",
                           "bücher", "XN--BCHER-KVA", f"n{rnd.randint(0, 30)}"])
        if rtype in ("A", "AAAA", "MX") and name in ("bücher", "XN--BCHER-KVA"):
            name = "www"
        if rtype == "CNAME":
            name = f"c{len(records)}"
        if rtype == "NS" and name not in ("@",):
            name = "@"
        if dnspython(rtype, data) is None or not owner_ok(name):
            continue
        record = {"name": name, "type": rtype, "data": data}
        if rnd.random() < 0.3:
            record["ttl"] = rnd.choice([0, 60, 300, 3600, 2**31 - 1])
        records.append(record)
        if rnd.random() < 0.1:  # the same data again, maybe with another TTL or case
            records.append({**record, "ttl": rnd.choice([30, 7200])})
    return records


def test_zone_body_and_digest_equal_dnspython() -> None:
    rnd = random.Random(99)
    for _ in range(40):
        records = valid_zone_records(rnd, rnd.randint(5, 120))
        content, issues = _build_zone(zone_of(records), "zones[0]", Path("."))
        assert content is not None, "\n".join(map(str, issues))
        body, digest = oracle(records)
        assert content.body == body
        assert content.zonemd == digest
        assert zone_digest_from_text(content.text(0), ORIGIN_TEXT) == digest


def test_invalid_records_are_refused_exactly_where_dnspython_refuses() -> None:
    rnd = random.Random(4242)
    for _ in range(60):
        records: list[dict] = [{"name": "@", "type": "NS", "data": "ns.other.org."}]
        expected: set[str] = set()
        for _ in range(rnd.randint(5, 60)):
            rtype = rnd.choice(TYPES)
            name = rand_name(rnd) if rnd.random() < 0.3 else f"r{len(records)}"
            data = rand_data(rnd, rtype)
            index = len(records)
            records.append({"name": name, "type": rtype, "data": data})
            if not owner_ok(name):
                expected.add(f"zones[0].records[{index}].name")
            elif dnspython(rtype, data) is None:
                expected.add(f"zones[0].records[{index}].data")
        _, issues = _build_zone(zone_of(records), "zones[0]", Path("."))
        refused = {i.path for i in issues if i.path.endswith((".name", ".data"))
                   and any(m in i.message for m in ("not valid", "not a valid record name",
                                                    "outside the zone"))}
        assert refused == expected


# --------------------------------------------------------------------------- YAML in one pass

YAML_CASES = [
    "records:\n  - {name: www, type: A, data: 192.0.2.1, ttl: 300}\n",
    "a: 0x1F\nb: 0o17\nc: 1_000\nd: 1:30\ne: .inf\nf: -.Inf\ng: 1e3\nh: 3.25\n",
    "a: yes\nb: No\nc: on\nd: OFF\ne: ~\nf: null\ng: ''\nh: \"\"\ni:\n",
    "t: 2024-01-02\nu: 2024-01-02T03:04:05Z\nv: '2024-01-02'\n",
    "s: |\n  line one\n  line two\nf: >\n  folded\n  text\n",
    "- 1\n- [2, 3]\n- {a: {b: [c, {d: e}]}}\n- - nested\n  - list\n",
    "k: v\nk: w\n",
    "---\na: 1\n---\nb: 2\n",
    "",
    "--- \n...\n",
    "just a scalar\n",
    "'quoted key': 1\n\"x\\ty\": 2\n? complex\n: value\n",
    "base: &b {x: 1}\nother: *b\n",
    "base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n",
    "tagged: !!str 123\nbin: !!binary aGVsbG8=\n",
    "? [a, b]\n: c\n",
    "=: x\n",
    "a: 1\n---\n",
]


@pytest.mark.parametrize("text", YAML_CASES)
def test_one_pass_yaml_equals_the_safe_loader(text: str) -> None:
    import yaml

    from bind9_topology.config import safeyaml
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        expected_all: object = list(yaml.load_all(text, Loader=loader))
    except yaml.YAMLError as exc:
        expected_all = type(exc)
    try:
        got_all: object = safeyaml.load_all(text)
    except yaml.YAMLError as exc:
        got_all = type(exc)
    assert repr(got_all) == repr(expected_all)
    try:
        expected: object = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        expected = type(exc)
    try:
        got: object = safeyaml.load(text)
    except yaml.YAMLError as exc:
        got = type(exc)
    assert repr(got) == repr(expected)


def test_escaping_equals_dnspython_for_every_byte() -> None:
    for c in range(256):
        for data in (bytes([c]), bytes([0x61, c, 0x62])):
            assert fast_records.label_text(data) == dns.name._escapify(data)
            assert fast_records.escapify(data) == dns.rdata._escapify(data)


# --------------------------------------------------------------------------- records files, by line


def general_rows(text: str) -> list[tuple]:
    """What the general reader gives: the safe loader, then a pydantic Record per entry."""
    from bind9_topology.config import safeyaml
    from bind9_topology.config.model import Record

    data = safeyaml.load(text)
    items = (data.get("records", data) if isinstance(data, dict) else data) or []
    return [(r.name, r.type, r.ttl, r.data) for r in map(Record.model_validate, items)]


def rand_value(rnd: random.Random) -> str:
    """A YAML value as people (and JSON) write them: quoted, plain, or (rarely) odd."""
    if rnd.random() < 0.9:
        return rnd.choice(['"www"', '"@"', "www", "host-1", '"10 mx.example.com."',
                           '"v=spf1 -all"', '"say \\"hi\\""', "192.0.2.1", "_sip._tcp",
                           "ns1.example.com.", "10 mx.example.com.", '""', '"back\\\\s"'])
    return rnd.choice([
        lambda: '"' + rnd.choice(["www", "@", "10 mx.example.com.", "v=spf1 -all",
                                  'say \\"hi\\"', "back\\\\slash", "tab\\there", "uni\\u00e9",
                                  "slash\\/", "é", "", "#not a comment", "a: b"]) + '"',
        lambda: "'" + rnd.choice(["www", "it''s", "@"]) + "'",
        lambda: rnd.choice(["www", "host-1", "_sip._tcp", "A", "aaaa", "NS", "ns1.example.com.",
                            "10 mx.example.com.", "192.0.2.1", "1.5", "1e3", "0x1F", "0o17",
                            "300", "0300", "1_000", "1:30", "yes", "No", "on", "null", "~",
                            "true", "2024-01-02", ".inf", "-1", "v=DKIM1", "a b  c", "a #b",
                            "2001:db8::1", "*.wild", "=", "<<", "x/y+z"]),
    ])()


def rand_entry(rnd: random.Random) -> str:
    fields = {"name": rand_value(rnd), "type": rnd.choice(["A", "TXT", "mx", "NS", "AAAA"])
              if rnd.random() < 0.97 else rnd.choice(['"CNAME"', "yes", "1"]),
              "data": rand_value(rnd)}
    if rnd.random() < 0.4:
        fields["ttl"] = rnd.choice(["300", "0", "2147483647"]) if rnd.random() < 0.9 else \
            rnd.choice(["2147483648", "-5", "0300", '"60"', "1_0", "null", "3.5"])
    if rnd.random() < 0.01:
        fields[rnd.choice(["tll", "name", "class"])] = "x"
    keys = list(fields)
    if rnd.random() < 0.1:
        rnd.shuffle(keys)
    elif rnd.random() < 0.01:
        keys.remove(rnd.choice(keys))
    sep = rnd.choice([", ", ", ", ",  ", " , "])
    body = sep.join(f"{k}{rnd.choice([': ', ': ', ':  ', ' : '])}{fields[k]}" for k in keys)
    entry = rnd.choice(["- {"] * 8 + ["-  { "]) + body + rnd.choice(["}"] * 8 + [" }"])
    return entry + rnd.choice([""] * 8 + ["  # comment", " #c"])


def rand_records_file(rnd: random.Random) -> str:
    indent = rnd.choice(["", "  ", "    "])
    lines = [rnd.choice(["records:"] * 6 + ["records:  # the zone", "---", "other: 1"])]
    if not indent and rnd.random() < 0.2:
        lines = []
    for _ in range(rnd.randint(0, 6)):
        lines.append(indent + rand_entry(rnd))
        if rnd.random() < 0.1:
            lines.append(rnd.choice(["", "  # note", "#", indent + "  "] * 3
                                    + ["\t", "more: 2"]))
    return "\n".join(lines) + rnd.choice(["\n", "", "\n\n"])


def test_records_read_a_line_at_a_time_equal_the_yaml_reader() -> None:
    """Whatever PlainRecords takes, the safe loader and Record read the same; what it
    does not take, it says so (NotPlain) instead of reading otherwise."""
    rnd = random.Random(31337)
    taken = refused = 0
    for _ in range(3000):
        text = rand_records_file(rnd)
        try:
            rows = list(fast_records.PlainRecords(text).rows())
        except fast_records.NotPlain:
            refused += 1
            continue
        taken += 1
        assert rows == general_rows(text), text
    assert taken > 300 and refused > 300, (taken, refused)


def test_a_line_reader_record_problem_names_its_line() -> None:
    text = ("records:\n  # hosts\n  - {name: www, type: A, data: 192.0.2.1}\n\n"
            "  - {name: \"bad name\", type: A, data: 192.0.2.2}\n"
            "  - {name: mail, type: A, data: \"192.0.2.300\"}\n")
    zone = zone_of([{"name": "@", "type": "NS", "data": "ns.other.org."}]).model_copy(
        update={"recordsFile": "zone.yaml"})
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "zone.yaml").write_text(text)
        content, issues = _build_zone(zone, "zones[0]", Path(tmp))
    assert content is None
    by_path = {i.path: i.message for i in issues}
    assert "(zone.yaml line 5)" in by_path["zones[0].recordsFile[1].name"]
    assert "(zone.yaml line 6)" in by_path["zones[0].recordsFile[2].data"]
    assert "192.0.2.300" in by_path["zones[0].recordsFile[2].data"]


def test_many_bad_records_are_summed_up_past_a_bound() -> None:
    records = [{"name": "@", "type": "NS", "data": "ns.other.org."}] + [
        {"name": f"h{i}", "type": "A", "data": "300.1.1.1"} for i in range(500)]
    _, issues = _build_zone(zone_of(records), "zones[0]", Path("."))
    data_issues = [i for i in issues if i.path.endswith(".data")]
    assert len(data_issues) == zone_records.MAX_RECORD_ISSUES
    assert any("300 more record(s)" in i.message for i in issues)


def test_name_targets_equal_parse_name() -> None:
    """The NS/MX/SRV target the checks see is parse_name's, whichever way it was read."""
    rnd = random.Random(5)
    for _ in range(3000):
        text = rand_name(rnd)
        quick = fast_records._target(text, FAST_ORIGIN, True)
        if quick is None:
            continue
        name = fast_records.parse_name(text, FAST_ORIGIN)
        assert name is not None and quick[4] is not None, text
        assert (quick[4].labels, quick[4].inside) == (name.labels, name.inside), text
        assert quick[0] == name.text() and quick[1] == name.wire(FAST_ORIGIN), text


def test_progress_line_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, shown in ((Tty(), True), (io.StringIO(), False)):
        monkeypatch.setattr("sys.stderr", stream)
        monkeypatch.setattr(zone_records._Progress, "AFTER_S", 0.0)
        records = [{"name": "@", "type": "NS", "data": "ns.other.org."}] + [
            {"name": f"h{i}", "type": "A", "data": f"10.0.{i >> 8 & 255}.{i & 255}"}
            for i in range(zone_records._Progress.MIN_RECORDS)]
        content, _ = _build_zone(zone_of(records), "zones[0]", Path("."))
        assert content is not None
        out = stream.getvalue()
        if shown:
            assert "example.com: 16,384/50,001 records checked (" in out and "/s, " in out
            assert out.endswith("\r\033[K")  # the line is cleared when the zone is done
        else:
            assert out == ""


def test_soa_built_from_its_names_equals_dnspythons_text_path() -> None:
    import dns.rdtypes.ANY.SOA

    rnd = random.Random(11)
    for _ in range(300):
        ns = rnd.choice(["ns1", "NS1.Example.COM.", "ns.other.org.", "a-b.c_d", "ns1.example.com",
                         "x" * 63 + ".", "é.example.com.", "ns\\.1", "a" * 64])
        email = rnd.choice(["hostmaster@example.com", "Host.Master@Example.org",
                            "h@sub.example.com", "x_y@example.com"])
        try:
            zone = zone_of([]).model_copy(update={"soaRecord": zone_of([]).soaRecord.model_copy(
                update={"primaryNs": ns, "adminEmail": email})})
            soa = zone.soaRecord
            expected = dns.rdata.from_text(
                dns.rdataclass.IN, dns.rdatatype.SOA,
                f"{soa.primaryNs} {soa.rname} 0 {soa.refresh} {soa.retry} {soa.expire} "
                f"{soa.negativeTtl}", origin=ORIGIN, relativize=False, idna_codec=IDNA)
        except Exception:
            continue
        got = zone_records._soa_rdata(zone, ORIGIN)
        assert isinstance(got, dns.rdtypes.ANY.SOA.SOA)
        assert got.to_text() == expected.to_text() and got == expected, (ns, email)
        assert got.mname.labels == expected.mname.labels, (ns, email)


def test_records_written_a_line_at_a_time_read_back_the_same() -> None:
    """What the bindy import writes: both readers give back the records it was given."""
    rnd = random.Random(8)
    written = 0
    for _ in range(300):
        records = []
        for _ in range(rnd.randint(0, 8)):
            record: dict = {"type": rnd.choice(["A", "TXT", "mx", "NO", "TYPE65280"]),
                            "data": rnd.choice(["192.0.2.1", '"v=spf1 -all"', "a\\b", "é",
                                                "tab\there", "x\x7fy", "1.5", ""])}
            if rnd.random() < 0.8:
                record["name"] = rnd.choice(["www", "@", "*.w", "yes", "1e3", "ü", "a b"])
            if rnd.random() < 0.4:
                record["ttl"] = rnd.choice([0, 300, 2**31 - 1])
            records.append(record)
        text = fast_records.records_text(records)
        if text is None:
            continue
        written += 1
        expected = [(r.get("name", "@"), r["type"].upper(), r.get("ttl"), r["data"])
                    for r in records]
        assert general_rows(text) == expected, text
        try:
            assert list(fast_records.PlainRecords(text).rows()) == expected, text
        except fast_records.NotPlain:
            assert not text.isascii() or "\\" in text or not records, text
    assert written > 150
