"""The local runner under faults, through its command line on a copy of the project:
a serial store that fell behind its servers recovers the
way `pulumi up` does, and `local up --timeout N` bounds the whole run.

Real named on 127.0.0.1 (tests/test_local's project fixture: its own tmp dir,
`local down` in teardown, no recorded pid left running).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import yaml

from bind9_topology.dns.serials import SerialState, SerialStore, past_served
from bind9_topology.local.runner import Budget, RunTimeout, load_state, pid_alive, serial_on_disk
from tests import test_local
from tests.conftest import doc_ipv6
from tests.test_local import run

project = test_local.project  # the same fixture: a copy of the project, `local down` after

pytestmark = [pytest.mark.bind]


def zone_serials(data: dict) -> dict[str, int]:
    return {z["zone"]: z["serial"] for z in data["zones"]}


def lower_store(project: Path, by: int) -> dict[str, int]:
    path = project / ".local-run/serials.json"
    raw = json.loads(path.read_text())
    for entry in raw["serials"].values():
        entry["serial"] -= by
    path.write_text(json.dumps(raw))
    return {k: v["serial"] for k, v in raw["serials"].items()}


# ----------------------------------------------------------------------------- item 9


def test_store_behind_running_secondaries_recovers(project: Path) -> None:
    first = run(project, "local", "up", "--stack", "prod", "--json", "--timeout", "60")
    assert first.returncode == 0, first.stdout + first.stderr
    before = zone_serials(json.loads(first.stdout))

    # The store falls behind what every server serves (restored from an old copy, ...).
    lower_store(project, by=5)
    again = run(project, "local", "up", "--stack", "prod", "--json", "--timeout", "60")
    assert again.returncode == 0, again.stdout + again.stderr
    data = json.loads(again.stdout)
    assert "went backwards" not in again.stdout + again.stderr
    after = zone_serials(data)
    for zone, serial in after.items():
        assert serial == before[zone] + 1, (zone, serial, before[zone])
    assert all(r["result"] == "ready" and r["serial"] == after[r["zone"]] for r in data["rows"])

    # Recovered for good: the next run keeps the serials (nothing changed).
    third = run(project, "local", "up", "--stack", "prod", "--json", "--timeout", "60")
    assert third.returncode == 0, third.stdout + third.stderr
    assert zone_serials(json.loads(third.stdout)) == after


def test_store_lost_and_content_changed_while_stopped(project: Path) -> None:
    """The store is deleted and a record changes while no server runs: the secondaries'
    zone files on disk still hold the old serial (often today's YYYYMMDD00, the very
    serial a fresh store hands out): the new serial moves past it and the gate passes
    with the new content everywhere."""
    first = run(project, "local", "up", "--once", "--stack", "prod", "--json", "--timeout", "60")
    assert first.returncode == 0, first.stdout + first.stderr
    before = zone_serials(json.loads(first.stdout))
    secondary_file = project / ".local-run/prod/secondary-dns/var/lib/bind/zones/db.example.com"
    assert serial_on_disk(secondary_file) == before["example.com"]

    (project / ".local-run/serials.json").unlink()
    records = project / "configs/zones/example.com.yaml"
    records.write_text(records.read_text() + "  - {name: changed, type: A, data: 192.0.2.98}\n")
    again = run(project, "local", "up", "--once", "--stack", "prod", "--json", "--timeout", "60")
    assert again.returncode == 0, again.stdout + again.stderr
    after = zone_serials(json.loads(again.stdout))
    assert after["example.com"] == before["example.com"] + 1
    assert serial_on_disk(secondary_file) == after["example.com"]
    assert "changed" in secondary_file.read_text()


# ----------------------------------------------------------------------------- item 11


def big_stack(project: Path, records: int) -> None:
    lines = ["- {name: '@', type: NS, data: ns1.big.example.}",
             "- {name: ns1, type: A, data: 192.0.2.1}"]
    lines += [f"- {{name: h{n}, type: AAAA, data: '{doc_ipv6(n)}'}}"
              for n in range(records)]
    (project / "configs/zones/big.yaml").write_text("\n".join(lines) + "\n")
    doc = {"config": {
        "bind9-topology:region": "big",
        "bind9-topology:instances": [
            {"name": "big-primary", "role": "primary",
             "service": {"type": "LoadBalancer", "loadBalancerIP": "10.77.0.10"}},
            {"name": "big-secondary", "role": "secondary",
             "service": {"type": "LoadBalancer", "loadBalancerIP": "10.77.0.20"}},
        ],
        "bind9-topology:zones": [
            {"zoneName": "big.example", "type": "primary",
             "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
             "soaRecord": {"primaryNs": "ns1.big.example.", "adminEmail": "hostmaster@big.example"},
             "recordsFile": "configs/zones/big.yaml", "alsoNotify": ["10.77.0.20"]},
            {"zoneName": "big.example", "type": "secondary",
             "instanceSelector": {"matchLabels": {"dns-role": "secondary"}},
             "secondaryConfig": {"primaryServers": ["10.77.0.10"]}},
        ],
    }}
    (project / "Pulumi.big.yaml").write_text(yaml.safe_dump(doc))


@pytest.mark.parametrize("timeout", [1.0, 2.0])
def test_timeout_bounds_a_large_zone_run(project: Path, timeout: float) -> None:
    """Loading and digesting a 200k-record zone alone takes far longer than the bound."""
    big_stack(project, 200_000)
    t0 = time.monotonic()
    result = run(project, "local", "up", "--once", "--stack", "big", "--timeout", str(timeout),
                 timeout=120)
    elapsed = time.monotonic() - t0
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"--timeout {timeout:g}s reached" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert "while loading the stacks" in result.stderr or "digest" in result.stderr, result.stderr
    # interpreter start and imports (before the clock starts) plus stopping what it started
    assert elapsed < timeout + 4, (elapsed, result.stderr)
    state = load_state(project)
    assert not any(pid_alive(i.get("pid"), i.get("conf")) for i in state["servers"].values())


def test_timeout_bounds_the_gate_and_the_waits(project: Path) -> None:
    """A run that gets past loading: the gate gets what is left, not its own deadline."""
    t0 = time.monotonic()
    result = run(project, "local", "up", "--stack", "prod", "--json", "--timeout", "8")
    elapsed = time.monotonic() - t0
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 8 + 4, elapsed


# ----------------------------------------------------------------------------- units


def test_budget_alarm_interrupts_work_that_does_not_wait() -> None:
    budget = Budget(0.3)
    t0 = time.monotonic()
    with (pytest.raises(RunTimeout, match=r"--timeout 0.3s reached .* while digesting"),
          budget.hard_limit()):
        budget.check("digesting")
        while time.monotonic() - t0 < 10:
            sum(range(10_000))
    assert time.monotonic() - t0 < 2
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_budget_critical_section_is_never_cut() -> None:
    budget = Budget(0.2)
    done = False
    with pytest.raises(RunTimeout), budget.hard_limit(), budget.critical():
        time.sleep(0.5)  # the alarm fires here and is held
        done = True
    assert done


def test_budget_without_timeout_is_unbounded() -> None:
    budget = Budget(None)
    with budget.hard_limit():
        budget.check("anything")
    assert budget.left(15) == 15


def test_past_served_rules() -> None:
    s = SerialState(2024051700, "h1")
    assert past_served(None, s, None) == s
    assert past_served(None, s, 2024051699) == s                      # servers behind: keep
    assert past_served(s, s, 2024051700) == s                         # same content, same serial
    assert past_served(None, s, 2024051700).serial == 2024051701      # store lost: never reuse
    assert past_served(SerialState(2024051700, "h0"), s, 2024051700).serial == 2024051701
    assert past_served(s, s, 2024051799).serial == 2024051800         # servers ahead: past them
    assert past_served(None, SerialState(2**32 - 5, "h"), 2**32 - 1).serial == 1  # wraps past 0


def test_store_advance_moves_past_served(tmp_path: Path) -> None:
    import datetime

    store = SerialStore(tmp_path / "serials.json")
    day = datetime.date(2024, 5, 17)
    assert store.advance("prod", "z.test", "h1", day).serial == 2024051700
    assert store.advance("prod", "z.test", "h1", day, served=2024051700).serial == 2024051700
    assert store.advance("prod", "z.test", "h1", day, served=2024051710).serial == 2024051711
    assert store.get("prod", "z.test") == SerialState(2024051711, "h1")


def test_serial_on_disk_reads_named_and_rendered_files(tmp_path: Path) -> None:
    named = tmp_path / "db.a"
    named.write_text("$ORIGIN .\n$TTL 300\t; 5 minutes\nexample.com\t\tIN SOA\tns1.example.com. "
                     "hostmaster.example.com. (\n\t\t\t\t2024051703 ; serial\n\t\t\t\t3600 )\n")
    assert serial_on_disk(named) == 2024051703
    rendered = tmp_path / "db.b"
    rendered.write_text("$TTL 300\n@ 300 IN SOA ns1.example.com. h.example.com. 7 3600 600 "
                        "1209600 300\n")
    assert serial_on_disk(rendered) == 7
    assert serial_on_disk(tmp_path / "missing") is None
