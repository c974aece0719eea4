"""BIND's statistics channel on real named, through the local runner.

`local up` starts the prod stack's named servers, each with its statistics channel on
its own loopback port; the test reads their JSON (per-zone serial, transfer counters)
with bind9_topology.dns.stats and through `local status` (table and --json).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bind9_topology.dns.stats import read_stats
from bind9_topology.local.runner import load_state
from tests.test_local import project as _project  # noqa: F401 (fixture)
from tests.test_local import run

pytestmark = [pytest.mark.bind]


@pytest.fixture
def running(_project: Path) -> Iterator[tuple[Path, dict]]:  # noqa: F811
    result = run(_project, "local", "up", "--stack", "prod", "--json", "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    yield _project, json.loads(result.stdout)


def test_every_named_serves_json_statistics_on_its_own_loopback_port(running) -> None:
    project, up = running
    state = load_state(project)["servers"]
    served = {(r["instance"], r["zone"]): r["serial"] for r in up["rows"]}
    ports = set()
    for info in state.values():
        port = info["statsPort"]
        ports.add(port)
        st = read_stats("127.0.0.1", port)
        assert st.ok, st.error
        assert st.version.startswith("9.")
        for (instance, zone), serial in served.items():
            if instance == info["instance"]:
                assert st.zones[zone]["serial"] == serial, (instance, zone, st.zones)
                assert st.zones[zone]["type"] == info["role"]
        if info["role"] == "secondary":
            assert st.transfers_in >= len(st.zones) and st.transfers_failed == 0, st.counters
        else:
            assert st.transfers_out >= 1, st.counters  # the secondaries and the gate's AXFRs
    assert len(ports) == len(state)  # one port each
    with pytest.raises(urllib.error.URLError):  # only 127.0.0.1: not on another address
        urllib.request.urlopen(f"http://127.0.0.2:{min(ports)}/json/v1/zones", timeout=1)


def test_local_status_shows_serials_and_transfer_counts(running) -> None:
    project, up = running
    table = run(project, "local", "status")
    assert table.returncode == 0, table.stderr
    assert "SERIAL (named)" in table.stdout and "XFR IN (server)" in table.stdout
    data = json.loads(run(project, "local", "status", "--json").stdout)
    for server in data["servers"]:
        stats = server["stats"]
        assert stats["ok"], stats
        for zone, z in stats["zones"].items():
            serial = next(r["serial"] for r in up["rows"]
                          if r["instance"] == server["instance"] and r["zone"] == zone)
            assert z["serial"] == serial
            line = next(line for line in table.stdout.splitlines()
                        if f" {server['instance']} " in line and f" {zone} " in line)
            assert str(serial) in line
        if server["role"] == "secondary":
            assert stats["transfersIn"] >= 3 and stats["transfersFailed"] == 0
