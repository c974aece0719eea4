"""Alerts and a dashboard (metrics.alerts): the rules' objects under mocks, the metric names
they read against a real scrape of the exporter, and promtool's verdict on every alert with
series that fire it and series that do not."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bind9_topology.config.model import TopologyError
from bind9_topology.config.topology import load_topology
from bind9_topology.render import alerts, manifests
from components.preview import kubernetes_objects, run_components
from tests.conftest import PROJECT_DIR, new_secret
from tests.test_components import parent_of

PROMETHEUS_RULE = "kubernetes:monitoring.coreos.com/v1:PrometheusRule"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
SCRAPE = Path(__file__).parent / "fixtures" / "bind-exporter" / "0.6.1-deb12.metrics"
NS = "dns-system"
P = "primary-dns-7f9c6d5b8-x2x4z"
S = "secondary-dns-6b8d9f7c5-q8w7e"
S2 = "secondary-dns-6b8d9f7c5-h5j6k"


def _topo(raw: dict[str, Any], **metrics: Any) -> Any:
    raw = {**copy.deepcopy(raw), "gate": {"enabled": False},
           "metrics": {"enabled": True, "alerts": True, **metrics}}
    return load_topology(raw, stack="prod", project_dir=PROJECT_DIR, tsig_secret=new_secret())


# --------------------------------------------------------------------------- objects


@pytest.mark.unit
def test_off_by_default_registers_nothing(minimal_raw) -> None:
    raw = {**minimal_raw, "gate": {"enabled": False}, "metrics": {"enabled": True}}
    topo = load_topology(raw, stack="prod", project_dir=PROJECT_DIR, tsig_secret=new_secret())
    assert alerts.stack_objects(topo.spec) == []
    kinds = {(o["kind"], o["metadata"]["name"]) for o in kubernetes_objects(run_components(topo))}
    assert not [k for k in kinds if "alerts" in k[1] or "dashboard" in k[1]]


@pytest.mark.unit
def test_rules_configmap_and_dashboard_once_per_stack_under_the_region(minimal_raw) -> None:
    topo = _topo(minimal_raw)
    mocks = run_components(topo)
    maps = {r.name: r for r in mocks.resources if r.type == CONFIG_MAP}
    rules_map, dash_map = maps["bind9-us-east-1-alerts"], maps["bind9-us-east-1-dashboard"]
    for res in (rules_map, dash_map):
        assert parent_of(res)[0] == "bind9-topology:index:Bind9Region"
        assert res.inputs["metadata"]["namespace"] == NS
    assert not [r for r in mocks.resources if r.type == PROMETHEUS_RULE]
    groups = yaml.safe_load(rules_map.inputs["data"][alerts.RULES_KEY])["groups"]
    assert [r["alert"] for r in groups[0]["rules"]] == [
        "Bind9ExporterDown", "Bind9StatisticsUnreadable", "Bind9ZoneNotLoaded",
        "Bind9SecondarySerialBehind", "Bind9ZoneTransfersFailing"]
    assert dash_map.inputs["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(dash_map.inputs["data"]["bind9-us-east-1-dashboard.json"])
    assert board["title"] == "BIND9 topology: us-east-1 (dns-system)"
    assert [p["title"] for p in board["panels"]][:2] == [
        "Statistics read (bind_up)", "Serial behind the newest (secondaries)"]


@pytest.mark.unit
def test_service_monitor_stacks_get_a_prometheus_rule(minimal_raw) -> None:
    mocks = run_components(_topo(minimal_raw, serviceMonitor=True, lagMinutes=3))
    [rule] = [r for r in mocks.resources if r.type == PROMETHEUS_RULE]
    assert parent_of(rule)[0] == "bind9-topology:index:Bind9Region"
    assert rule.inputs["apiVersion"] == "monitoring.coreos.com/v1"
    behind = next(r for r in rule.inputs["spec"]["groups"][0]["rules"]
                  if r["alert"] == "Bind9SecondarySerialBehind")
    assert behind["for"] == "3m"
    assert not any(r.name == "bind9-us-east-1-alerts" for r in mocks.resources
                   if r.type == CONFIG_MAP)


@pytest.mark.unit
def test_alerts_on_an_instance_or_without_an_exporter_are_refused(minimal_raw) -> None:
    raw = copy.deepcopy(minimal_raw)
    raw["instances"][1]["metrics"] = {"enabled": True, "alerts": True}
    with pytest.raises(TopologyError) as err:
        load_topology(raw, stack="prod", project_dir=PROJECT_DIR, tsig_secret=new_secret())
    assert "bind9-topology:instances[1].metrics.alerts" in str(err.value)
    assert "one set per stack" in str(err.value)
    raw = {**copy.deepcopy(minimal_raw), "metrics": {"alerts": True}}
    with pytest.raises(TopologyError) as err:
        load_topology(raw, stack="prod", project_dir=PROJECT_DIR, tsig_secret=new_secret())
    assert "bind9-topology:metrics.alerts" in str(err.value)
    assert "metrics.enabled" in str(err.value)


@pytest.mark.unit
def test_an_instance_with_its_own_metrics_is_covered(minimal_raw) -> None:
    """Only the secondary exports: the rules select its pods only."""
    raw = {**copy.deepcopy(minimal_raw), "gate": {"enabled": False},
           "metrics": {"alerts": True}}
    raw["instances"][1]["metrics"] = {"enabled": True}
    topo = load_topology(raw, stack="prod", project_dir=PROJECT_DIR, tsig_secret=new_secret())
    text = alerts.rules_yaml(topo.spec)
    assert "secondary-dns" in text and "primary-dns" not in text


@pytest.mark.unit
def test_every_metric_the_rules_and_dashboard_read_is_in_a_real_scrape(minimal_raw) -> None:
    """A scrape of Debian 12's bind exporter 0.6.1 as the sidecar runs it (server,view)."""
    topo = _topo(minimal_raw)
    exprs = [r["expr"] for r in alerts.rules(topo.spec)["groups"][0]["rules"]]
    exprs += [t["expr"] for p in alerts.dashboard(topo.spec)["panels"] for t in p["targets"]]
    used = set().union(*(alerts.metric_names(e) for e in exprs))
    assert used == set(alerts.EXPORTER_METRICS)
    served = {line.split("{")[0].split(" ")[0] for line in SCRAPE.read_text().splitlines()
              if line and not line.startswith("#")}
    assert used <= served, used - served
    # the groups the metrics need are the ones the sidecar asks for
    inst = topo.spec.instances[0]
    [sidecar] = manifests.metrics_sidecars(topo.spec, inst, {})
    groups = next(a for a in sidecar["args"] if a.startswith("--bind.stats-groups="))
    assert {g for g in alerts.EXPORTER_METRICS.values() if g} <= set(
        groups.split("=", 1)[1].split(","))


# --------------------------------------------------------------------------- promtool

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool missing (scripts/install-deps.sh)")


def _series(name: str, pod: str, values: str, **labels: str) -> dict[str, str]:
    extra = "".join(f', {k}="{v}"' for k, v in labels.items())
    return {"series": f'{name}{{namespace="{NS}", pod="{pod}", job="bind9"{extra}}}',
            "values": values}


def _healthy(minutes: int = 40, serial: int = 2024010101) -> list[dict[str, str]]:
    """Three pods serving example.com at one serial, nothing failing."""
    out = []
    for pod in (P, S, S2):
        out += [_series("up", pod, f"1x{minutes}"), _series("bind_up", pod, f"1x{minutes}"),
                _series("bind_zone_serial", pod, f"{serial}x{minutes}", view="_default",
                        zone_name="example.com"),
                _series("bind_zone_transfer_failure_total", pod, f"0x{minutes}")]
    return out


def _replace(series: list[dict[str, str]], name: str, pod: str,
             values: str | None) -> list[dict[str, str]]:
    """*series* with the one of *name* and *pod* given other values (None: dropped)."""
    out = []
    for item in series:
        if item["series"].startswith(f"{name}{{") and f'pod="{pod}"' in item["series"]:
            if values is None:
                continue
            item = {**item, "values": values}
        out.append(item)
    return out


def _alert(name: str, at: str, *expected: dict[str, str]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name,
            "exp_alerts": [{"exp_labels": labels} for labels in expected]}


def _labels(pod: str, severity: str, **more: str) -> dict[str, str]:
    return {"severity": severity, "namespace": NS, "pod": pod, "job": "bind9", **more}


ALL = ["Bind9ExporterDown", "Bind9StatisticsUnreadable", "Bind9ZoneNotLoaded",
       "Bind9SecondarySerialBehind", "Bind9ZoneTransfersFailing"]


def _quiet(at: str, *but: str) -> list[dict[str, Any]]:
    return [_alert(name, at) for name in ALL if name not in but]


def _cases() -> list[dict[str, Any]]:
    healthy = _healthy()
    behind = _replace(healthy, "bind_zone_serial", P, "2024010101x5 2024010102x35")
    behind = _replace(behind, "bind_zone_serial", S2, "2024010101x6 2024010102x34")
    zone = {"view": "_default", "zone_name": "example.com"}
    return [
        # all well: nothing fires, at any time
        {"interval": "1m", "input_series": healthy,
         "alert_rule_test": [*_quiet("10m"), *_quiet("39m")]},
        # a pod not scraped (up 0), and an instance with no pod scraped at all
        {"interval": "1m",
         "input_series": _replace(_replace(healthy, "up", S, "1x5 0x35"), "up", P, None),
         "alert_rule_test": [
             _alert("Bind9ExporterDown", "8m",
                    {"severity": "critical", "namespace": NS, "bind9_instance": "primary-dns"}),
             _alert("Bind9ExporterDown", "20m", _labels(S, "critical"),
                    {"severity": "critical", "namespace": NS,
                     "bind9_instance": "primary-dns"}),
             *_quiet("20m", "Bind9ExporterDown")]},
        # the exporter answers but cannot read named (bind_up 0, no statistics)
        {"interval": "1m",
         "input_series": _replace(_replace(healthy, "bind_up", S2, "1x5 0x35"),
                                  "bind_zone_serial", S2, "2024010101x5"),
         "alert_rule_test": [
             _alert("Bind9StatisticsUnreadable", "8m"),  # 'for: 5m' not yet over
             _alert("Bind9StatisticsUnreadable", "20m", _labels(S2, "critical")),
             *_quiet("20m", "Bind9StatisticsUnreadable")]},
        # named runs but one secondary pod never loaded the zone
        {"interval": "1m",
         "input_series": _replace(healthy, "bind_zone_serial", S, None),
         "alert_rule_test": [
             _alert("Bind9ZoneNotLoaded", "20m",
                    {"severity": "critical", "namespace": NS, "pod": S}),
             *_quiet("20m", "Bind9ZoneNotLoaded")]},
        # the primary moves to a new serial; S2 follows a minute later, S never does
        {"interval": "1m", "input_series": behind,
         "alert_rule_test": [
             _alert("Bind9SecondarySerialBehind", "12m"),  # behind for 7 minutes only
             _alert("Bind9SecondarySerialBehind", "20m",
                    _labels(S, "warning", **zone)),
             *_quiet("20m", "Bind9SecondarySerialBehind")]},
        # failed transfers rising on S; they stop, and the alert clears after lagMinutes
        {"interval": "1m",
         "input_series": _replace(healthy, "bind_zone_transfer_failure_total", S,
                                  "0x5 1 2 3 4 5x30"),
         "alert_rule_test": [
             _alert("Bind9ZoneTransfersFailing", "9m", _labels(S, "warning")),
             _alert("Bind9ZoneTransfersFailing", "25m"),
             *_quiet("9m", "Bind9ZoneTransfersFailing")]},
    ]


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.config
@needs_promtool
def test_promtool_checks_the_rules_of_every_form(minimal_raw, tmp_path: Path) -> None:
    for monitor in (False, True):
        obj = alerts.rule_object(_topo(minimal_raw, serviceMonitor=monitor).spec)
        text = (yaml.safe_dump(obj["spec"]) if monitor else obj["data"][alerts.RULES_KEY])
        (tmp_path / "rules.yaml").write_text(text)
        proc = _promtool("check", "rules", "rules.yaml", cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "SUCCESS: 5 rules found" in proc.stdout


@pytest.mark.config
@needs_promtool
def test_promtool_every_alert_fires_on_its_fault_and_on_nothing_else(
        minimal_raw, tmp_path: Path) -> None:
    rules = alerts.rules(_topo(minimal_raw).spec)
    for rule in rules["groups"][0]["rules"]:
        rule.pop("annotations")  # their templates are checked by `check rules` above
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": _cases()}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = _promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"SUCCESS", proc.stdout), proc.stdout
