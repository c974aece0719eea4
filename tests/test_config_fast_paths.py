"""The model stage's per-zone shortcuts (issue 21) against what they stand for.

Each shortcut answers for the usual input only and hands anything else to the general
path; these tests hold the two equal (dnspython is the judge of names and SOA text)."""

from __future__ import annotations

import copy
import os
import random
import re
import threading
from pathlib import Path
from typing import Any

import dns.name
import pytest

from bind9_topology.config import model, safeyaml, zone_pool, zone_records
from bind9_topology.config.model import StackSpec, Zone
from bind9_topology.config.topology import load_topology
from tests.test_zone_pool import many_zones_raw

pytestmark = pytest.mark.unit


def _zone_name_both(value: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    def judge() -> str:
        try:
            return model.Zone._zone_name(value)
        except ValueError as exc:
            return f"refused: {exc}"

    fast = judge()
    with monkeypatch.context() as patch:  # no shortcut: dnspython decides every name
        patch.setattr(model, "_PLAIN_ZONE_NAME", re.compile("(?!)"))
        slow = judge()
    return fast, slow


def test_zone_names_the_shortcut_takes_are_what_dnspython_makes_of_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(21)
    names = ["example.com", "Example.COM.", "xn--bcher-kva.example", "a--b.example",
             "_dmarc.example", "-a.example", "a-.example", "1.2.3", "a..b", "bücher.example",
             ".".join(["a" * 63] * 3) + ".b", ".".join(["a" * 63] * 4), "a" * 64 + ".x",
             " spaced.example ", "a_b-c.example", "*.example"]
    names += ["".join(rnd.choice("ab-_.0Z9x") for _ in range(rnd.randint(1, 14)))
              for _ in range(3000)]
    names += [".".join(["q" * rnd.randint(55, 64)] * rnd.randint(1, 5)) for _ in range(200)]
    taken = 0
    for value in names:
        fast, slow = _zone_name_both(value, monkeypatch)
        assert fast == slow, value
        taken += not fast.startswith("refused")
    assert taken > 500  # the comparison saw many accepted names, not only refusals


def test_origin_is_dnspythons_name() -> None:
    for text in ["zone00001.example", "a.b.c", "x_y.example", "a" * 63 + ".b",
                 "xn--bcher-kva.example", "a\\.b.example"]:
        assert zone_records._origin(text) == dns.name.from_text(text), text
        assert zone_records._origin(text).labels == dns.name.from_text(text).labels


def test_soa_text_split_once_is_dnspythons_text(
        minimal_raw: dict[str, Any], tmp_path: Path, tsig_secret: str) -> None:
    raw = copy.deepcopy(minimal_raw)
    raw["zones"][0]["soaRecord"] = {"primaryNs": "ns1", "adminEmail": "host.master@example.com",
                                    "refresh": 7200}
    content = load_topology(raw, stack="test", project_dir=tmp_path,
                            tsig_secret=tsig_secret).contents["example.com"]
    for serial in (0, 1, 2026120301, 4294967295):
        soa = content.soa.replace(serial=serial)
        assert content.soa_line(serial) == f"@ {content.soa_ttl} IN SOA {soa.to_text()}\n"
        assert content.text(serial) == (f"$ORIGIN {content.zone_name}.\n"
                                        + content.soa_line(serial) + content.body)
        before, after = content.serial_split()
        assert before + str(serial) + after == content.text(serial)
    assert content.text_size() == len(content.text(0))
    import pickle

    again = pickle.loads(pickle.dumps(content))  # the split travels or is made again
    assert again == content and again.text(7) == content.text(7)


def test_read_bytes_one_open(tmp_path: Path) -> None:
    good = tmp_path / "r.yaml"
    good.write_bytes(b"records: []\n" * 1000)
    assert safeyaml.read_bytes(good) == good.read_bytes()
    with pytest.raises(safeyaml.YamlLimitError, match="over the 100-byte limit"):
        safeyaml.read_bytes(good, 100)
    with pytest.raises(IsADirectoryError):
        safeyaml.read_bytes(tmp_path)
    with pytest.raises(FileNotFoundError):
        safeyaml.read_bytes(tmp_path / "missing.yaml")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    got: list[BaseException] = []

    def read() -> None:
        try:
            safeyaml.read_bytes(fifo)
        except BaseException as exc:
            got.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "a FIFO with no writer held the read"
    assert got and isinstance(got[0], safeyaml.YamlLimitError)
    assert "not a regular file" in str(got[0])


def test_zones_for_is_kept_per_zone_list(minimal_raw: dict[str, Any], tmp_path: Path,
                                         tsig_secret: str) -> None:
    spec = load_topology(minimal_raw, stack="test", project_dir=tmp_path,
                         tsig_secret=tsig_secret).spec
    plain = {i.name: [z for z in spec.zones
                      if all(i.labels.get(k) == v
                             for k, v in z.instanceSelector.matchLabels.items())]
             for i in spec.instances}
    for _ in range(2):
        assert {i.name: spec.zones_for(i) for i in spec.instances} == plain
    spec.zones_for(spec.instances[0]).clear()  # the caller's copy, not the kept one
    assert spec.zones_for(spec.instances[0]) == plain[spec.instances[0].name]
    extra = Zone.model_validate({**spec.zones[0].model_dump(), "zoneName": "other.example",
                                 "name": None})
    bigger: StackSpec = spec.model_copy(update={"zones": [*spec.zones, extra]})
    for inst in spec.instances:
        want = plain[inst.name] + ([extra] if extra.instanceSelector.matches(inst.labels)
                                   else [])
        assert bigger.zones_for(inst) == want
        assert spec.zones_for(inst) == plain[inst.name]


def test_each_result_is_handed_on_once_as_it_comes(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, minimal_raw: dict[str, Any]) -> None:
    monkeypatch.setenv("BIND9_TOPOLOGY_CACHE_DIR", "off")
    raw = many_zones_raw(minimal_raw, tmp_path, 20)
    zones = [(Zone.model_validate(z), f"zones[{i}]") for i, z in enumerate(raw["zones"])
             if z["type"] == "primary"]
    for parts in (1, 3):
        monkeypatch.setattr(zone_pool, "workers_for", lambda count, parts=parts: parts)
        monkeypatch.setattr(zone_pool, "CHUNK", 2)
        seen: dict[int, Any] = {}

        def on_result(i: int, result: Any, seen: dict[int, Any] = seen) -> None:
            assert i not in seen
            seen[i] = result

        built = zone_pool.build_many(zones, tmp_path, 1 << 20, on_result=on_result)
        assert sorted(seen) == list(range(len(zones)))
        assert [seen[i] for i in range(len(zones))] == built


def test_a_cold_build_caches_every_zone_for_the_next(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, minimal_raw: dict[str, Any],
        tsig_secret: str) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("BIND9_TOPOLOGY_CACHE_DIR", str(cache))
    monkeypatch.setattr(zone_pool, "workers_for", lambda count: 2)
    monkeypatch.setattr(zone_pool, "CHUNK", 3)
    project = tmp_path / "p"
    project.mkdir()
    raw = many_zones_raw(minimal_raw, project, 12)
    cold = load_topology(copy.deepcopy(raw), stack="t", project_dir=project,
                         tsig_secret=tsig_secret)
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == len(cold.contents) and all(e.endswith(".json") for e in entries)

    def no_build(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a warm load built a zone")

    monkeypatch.setattr(zone_pool, "build_many", lambda zones, *a, **kw: [
        no_build() for _ in zones])
    warm = load_topology(copy.deepcopy(raw), stack="t", project_dir=project,
                         tsig_secret=tsig_secret)
    assert {n: (c.text(0), c.digest, c.warnings) for n, c in warm.contents.items()} == {
        n: (c.text(0), c.digest, c.warnings) for n, c in cold.contents.items()}


def test_records_read_at_once_are_the_records_read_a_line_at_a_time() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import synth

    from bind9_topology.config import fast_records

    texts = []
    for index in range(40):
        lines = ["records:"]
        for name, rtype, ttl, data in synth.zone_records(index, 60):
            quoted = '"' + data.replace("\\", "\\\\").replace('"', '\\"') + '"'
            lines.append(f"  - {{name: \"{name}\", type: {rtype}, data: {quoted}"
                         + (f", ttl: {ttl}}}" if ttl is not None else "}"))
            if index % 3 == 0 and len(lines) % 7 == 0:
                lines.append("  # a comment\n")
        texts.append("\n".join(lines) + "\n")
    texts.append("- {name: www, type: a, data: 192.0.2.1}\n- {name: x, type: TXT, data: plain}\n")
    for text in texts:
        at_once = fast_records.PlainRecords(text)
        rows = list(at_once.rows())
        assert at_once.bulk, text[:200]
        by_line = fast_records.PlainRecords(text)
        assert rows == list(by_line._rows())
        for i in (0, len(rows) // 2, len(rows) - 1):
            assert at_once.line_of_entry(i) == by_line.line_of_entry(i)
    # a line of another shape: read a line at a time, which says where (NotPlain)
    odd = texts[0].replace("  - {name:", "  - {type: A, name:", 1)
    records = fast_records.PlainRecords(odd)
    with pytest.raises(fast_records.NotPlain):
        list(records.rows())
    assert not records.bulk
    yes = texts[-1].replace("data: plain", "data: yes")  # YAML's bool: not a string
    with pytest.raises(fast_records.NotPlain, match="not a string"):
        list(fast_records.PlainRecords(yes).rows())


def test_a_bad_record_read_at_once_names_its_line(
        minimal_raw: dict[str, Any], tmp_path: Path, tsig_secret: str) -> None:
    from bind9_topology.config.model import TopologyError

    lines = ["records:", '  - {name: "@", type: NS, data: "ns1.example.com."}']
    lines += [f'  - {{name: "h{i}", type: A, data: "192.0.2.{i}"}}' for i in range(1, 30)]
    lines.insert(12, "  # comment")
    lines.insert(20, "")
    lines[25] = '  - {name: "bad", type: A, data: "192.0.2.300"}'
    (tmp_path / "r.yaml").write_text("\n".join(lines) + "\n")
    raw = copy.deepcopy(minimal_raw)
    raw["zones"][0].pop("records", None)
    raw["zones"][0]["recordsFile"] = "r.yaml"
    with pytest.raises(TopologyError) as caught:
        load_topology(raw, stack="test", project_dir=tmp_path, tsig_secret=tsig_secret)
    assert "(r.yaml line 26)" in str(caught.value), str(caught.value)


def test_soa_wire_is_dnspythons_digestable(minimal_raw: dict[str, Any]) -> None:
    for ns, email in [("ns1.example.com.", "hostmaster@example.com"),
                      ("NS1", "Host.Master@Example.COM"), ("a.b.c.d.", "x@y.z"),
                      ("ns-1.sub", "dns_admin@sub.example.com")]:
        zone = Zone.model_validate({**minimal_raw["zones"][0], "zoneName": "Example.com",
                                    "soaRecord": {"primaryNs": ns, "adminEmail": email,
                                                  "refresh": 7201, "expire": 1209601}})
        origin = zone_records._origin(zone.zoneName)
        soa = zone_records._soa_rdata(zone, origin)
        assert zone_records._soa_digestable(soa) == soa.to_digestable(origin), (ns, email)
        serial = soa.replace(serial=2026120301)
        assert zone_records._soa_digestable(serial) == serial.to_digestable(origin)


def test_soa_text_is_dnspythons(minimal_raw: dict[str, Any]) -> None:
    import dns.rdata

    cases = [("ns1.example.com.", "hostmaster@example.com"), ("NS1", "Host.Master@Example.COM"),
             ("a.b.c.d.", "x@y.z"), ("ns-1.sub", "dns_admin@sub.example.com")]
    for ns, email in cases:
        zone = Zone.model_validate({**minimal_raw["zones"][0], "zoneName": "Example.com",
                                    "soaRecord": {"primaryNs": ns, "adminEmail": email}})
        soa = zone_records._soa_rdata(zone, zone_records._origin(zone.zoneName))
        for serial in (0, 4294967295):
            assert zone_records._soa_text(soa.replace(serial=serial)) == \
                soa.replace(serial=serial).to_text()
    odd = dns.rdata.from_text("IN", "SOA", "n\\032s.example. a\\.b.example. 1 2 3 4 5")
    assert zone_records._soa_text(odd) == odd.to_text()  # escapes: dnspython writes it
