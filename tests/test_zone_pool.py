"""Cold zone builds across processes (bind9_topology.config.zone_pool): the same result as
one process, whatever happens to the workers, and no secret in a worker's environment."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from bind9_topology.config import zone_pool
from bind9_topology.config.model import TopologyError
from bind9_topology.config.topology import SECRET_ENV, load_topology
from tests.conftest import doc_ipv6

pytestmark = pytest.mark.unit


def many_zones_raw(minimal: dict[str, Any], project: Path, count: int) -> dict[str, Any]:
    """*count* primary zones, half inline, half in records files, one with a warning."""
    raw = copy.deepcopy(minimal)
    (project / "configs" / "zones").mkdir(parents=True)
    for n in range(count):
        records = [{"name": "@", "type": "NS", "data": "ns1.example.com."},
                   *({"name": f"h{i}", "type": "AAAA", "data": doc_ipv6(n * 100 + i)}
                     for i in range(20)),
                   {"name": "txt", "type": "TXT", "data": f'"zone {n}" "with \\"quotes\\""'}]
        if n == 3:
            records.append({"name": "@", "type": "MX", "data": "10 mail"})  # no address
        zone: dict[str, Any] = {
            "zoneName": f"z{n:03d}.example", "type": "primary",
            "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
            "soaRecord": {"primaryNs": "ns1.example.com.",
                          "adminEmail": "hostmaster@example.com"}}
        if n % 2:
            path = project / "configs" / "zones" / f"z{n:03d}.yaml"
            path.write_text(yaml.safe_dump({"records": records}))
            zone["recordsFile"] = f"configs/zones/z{n:03d}.yaml"
        else:
            zone["records"] = records
        raw["zones"].append(zone)
    return raw


def contents(raw: dict[str, Any], project: Path, tsig_secret: str) -> dict[str, Any]:
    topo = load_topology(raw, stack="test", project_dir=project, tsig_secret=tsig_secret)
    return {name: (c.text(0), c.record_count, c.digest, c.warnings)
            for name, c in topo.contents.items()} | {"warnings": topo.warnings}


@pytest.fixture
def no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIND9_TOPOLOGY_CACHE_DIR", "off")


def test_workers_build_what_one_process_builds(
        no_cache: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        minimal_raw: dict[str, Any], tsig_secret: str) -> None:
    raw = many_zones_raw(minimal_raw, tmp_path, 24)
    monkeypatch.setattr(zone_pool, "workers_for", lambda count: 1)
    alone = contents(raw, tmp_path, tsig_secret)
    handed: list[list[int]] = []
    real_hand = zone_pool._Workers.hand

    def hand(self: Any, worker: Any, chunk: list[int], zones: Any) -> None:
        handed.append(chunk)
        real_hand(self, worker, chunk, zones)

    monkeypatch.setattr(zone_pool, "workers_for", lambda count: 3)
    monkeypatch.setattr(zone_pool._Workers, "hand", hand)
    monkeypatch.setattr(zone_pool, "CHUNK", 2)
    assert contents(raw, tmp_path, tsig_secret) == alone
    # two workers took chunks from the back while this process built from the front
    assert len(handed) >= 2 and all(len(c) <= 2 for c in handed)
    assert handed[0] == [23, 24] or max(handed[0]) == max(i for c in handed for i in c)
    assert any("z003.example" in w.path or "MX" in w.message for w in alone["warnings"])


def test_a_failing_worker_costs_time_not_a_different_result(
        no_cache: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        minimal_raw: dict[str, Any], tsig_secret: str) -> None:
    raw = many_zones_raw(minimal_raw, tmp_path, 12)
    monkeypatch.setattr(zone_pool, "workers_for", lambda count: 1)
    alone = contents(raw, tmp_path, tsig_secret)
    monkeypatch.setattr(zone_pool, "workers_for", lambda count: 2)
    monkeypatch.setattr(zone_pool.sys, "executable", "/bin/false")  # exits 1 at once
    assert contents(raw, tmp_path, tsig_secret) == alone
    monkeypatch.setattr(zone_pool.sys, "executable", "")  # an embedded Python: no workers
    assert contents(raw, tmp_path, tsig_secret) == alone
    monkeypatch.setattr(zone_pool.sys, "executable", str(tmp_path / "missing"))
    assert contents(raw, tmp_path, tsig_secret) == alone


def test_bad_records_in_a_worker_are_the_same_errors(
        no_cache: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        minimal_raw: dict[str, Any], tsig_secret: str) -> None:
    raw = many_zones_raw(minimal_raw, tmp_path, 10)
    raw["zones"][-2]["records"][1]["data"] = "not-an-address"  # z008, inline
    broken = tmp_path / "configs" / "zones" / "z007.yaml"
    broken.write_text("records: [{name: x, type: A, data: 300.1.1.1}]\n")

    def errors(workers: int) -> list[tuple[str, str]]:
        monkeypatch.setattr(zone_pool, "workers_for", lambda count: workers)
        with pytest.raises(TopologyError) as caught:
            load_topology(raw, stack="test", project_dir=tmp_path, tsig_secret=tsig_secret)
        return [(i.path, i.message) for i in caught.value.issues]

    alone = errors(1)
    assert any("z007.yaml" in p or "records" in p for p, _ in alone), alone
    assert errors(2) == alone


def test_a_worker_gets_no_secret_and_no_stack_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "c2VjcmV0")
    monkeypatch.setenv("PULUMI_CONFIG", '{"bind9-topology:tsigSecret": "c2VjcmV0"}')
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "passphrase")
    env = zone_pool.worker_env()
    assert SECRET_ENV not in env and not any(k.startswith("PULUMI") for k in env)
    assert "c2VjcmV0" not in repr(env) and "passphrase" not in repr(env)
    assert env["PYTHONPATH"]


def test_few_zones_stay_in_this_process() -> None:
    assert zone_pool.workers_for(zone_pool.MIN_ZONES_PER_WORKER - 1) == 1
    assert 1 <= zone_pool.workers_for(100_000) <= zone_pool.MAX_WORKERS


FAKE_WORKER = """#!{python}
import struct, sys, time
head = sys.stdin.buffer.read(8)
sys.stdin.buffer.read(struct.unpack(">Q", head)[0])
{then}
"""


@pytest.mark.parametrize("then", [
    # dies in the middle of its answer
    'sys.stdout.buffer.write(struct.pack(">Q", 1000) + b"partial"); sys.stdout.flush()',
    # answers with something that is not a list of results
    'import pickle; d = pickle.dumps("no"); '
    'sys.stdout.buffer.write(struct.pack(">Q", len(d)) + d); sys.stdout.flush(); time.sleep(60)',
    # never answers (stopped after WORKER_SILENCE_S)
    'time.sleep(60)',
])
def test_a_worker_that_breaks_mid_chunk_hands_it_back(
        no_cache: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        minimal_raw: dict[str, Any], tsig_secret: str, then: str) -> None:
    import sys

    raw = many_zones_raw(minimal_raw, tmp_path, 16)
    monkeypatch.setattr(zone_pool, "workers_for", lambda count: 1)
    alone = contents(raw, tmp_path, tsig_secret)
    fake = tmp_path / "fake-worker"
    fake.write_text(FAKE_WORKER.format(python=sys.executable, then=then))
    fake.chmod(0o755)
    monkeypatch.setattr(zone_pool, "workers_for", lambda count: 2)
    monkeypatch.setattr(zone_pool, "WORKER_SILENCE_S", 0.5)
    monkeypatch.setattr(zone_pool.sys, "executable", str(fake))
    assert contents(raw, tmp_path, tsig_secret) == alone


def test_a_worker_that_never_reads_does_not_hold_this_process(
        no_cache: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        minimal_raw: dict[str, Any], tsig_secret: str) -> None:
    """Its whole chunk (60 zones, well over a pipe's 64 KiB) is handed to a worker that
    never reads stdin: this process is not stuck writing it; after WORKER_SILENCE_S it
    builds the chunk itself."""
    import sys

    raw = many_zones_raw(minimal_raw, tmp_path, 60)
    monkeypatch.setattr(zone_pool, "workers_for", lambda count: 1)
    alone = contents(raw, tmp_path, tsig_secret)
    deaf = tmp_path / "deaf-worker"
    deaf.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    deaf.chmod(0o755)
    monkeypatch.setattr(zone_pool, "workers_for", lambda count: 2)
    monkeypatch.setattr(zone_pool, "CHUNK", 1000)
    monkeypatch.setattr(zone_pool, "WORKER_SILENCE_S", 0.5)
    monkeypatch.setattr(zone_pool.sys, "executable", str(deaf))
    got: list[Any] = []
    build = threading.Thread(target=lambda: got.append(contents(raw, tmp_path, tsig_secret)),
                             daemon=True)
    build.start()
    build.join(timeout=30)  # bounded: a process stuck writing would hang here, not CI
    assert not build.is_alive(), "stuck handing a chunk to a worker that does not read"
    assert got == [alone]
