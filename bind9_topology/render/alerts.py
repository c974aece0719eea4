"""Prometheus alerting rules and a Grafana dashboard for a stack's exporters (metrics.alerts).

Pure: no Pulumi import. Bind9Region registers what `stack_objects` returns.

The rules read what the exporter sidecar serves (prometheus-community bind_exporter,
0.6.1 and 0.8.0, run with `--bind.stats-groups=server,view`):

- `bind_up` (always): 1 when the exporter read named's statistics channel;
- `bind_zone_serial{view, zone_name}` (the `view` group): the serial of every zone
  named has loaded (a zone that failed to load or never transferred has none);
- `bind_zone_transfer_failure_total` (the `server` group, server-wide, no zone label):
  incoming transfers that failed (named's zone statistic `XfrFail`);
- `up`: Prometheus's own health of the scrape (not served by the exporter).

They select the stack's pods by namespace and by pod name: a Deployment's pods are named
`<instance>-<template hash>-<suffix>`, so `pod=~"(ns1|ns2)-[a-z0-9]+-[a-z0-9]+"` is
exactly the pods of instances ns1 and ns2 (the label holding the pod name is
`metrics.podLabel`).

A secondary's serial is compared with the newest serial any scraped server serves for the
zone (a join on zone_name): serials only move forward and only a primary makes a new one,
so that is the primary's serial, wherever the primary runs as long as the same Prometheus
scrapes it (a region stack's secondaries and the primary stack's pods).
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from bind9_topology.config.model import Instance, StackSpec

Obj = dict[str, Any]

#: every metric name the rules and the dashboard read from the exporter (not `up`, which
#: Prometheus makes), with the stats group that serves it
EXPORTER_METRICS = {
    "bind_up": None,
    "bind_zone_serial": "view",
    "bind_zone_transfer_failure_total": "server",
    "bind_zone_transfer_success_total": "server",
    "bind_zone_transfer_rejected_total": "server",
    "bind_incoming_queries_total": "server",
    "bind_response_rcodes_total": "server",
}
RULES_KEY = "bind9-topology.rules.yaml"
POD_SUFFIX = "-[a-z0-9]+-[a-z0-9]+"  # a Deployment's pod: <name>-<template hash>-<suffix>


def enabled(spec: StackSpec) -> bool:
    return spec.metrics.alerts and bool(exported(spec))


def exported(spec: StackSpec) -> list[Instance]:
    """The instances whose pods run the exporter."""
    return [i for i in spec.instances if spec.metrics_for(i).enabled]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "stack"


def object_name(spec: StackSpec, what: str) -> str:
    """`bind9-<region>-<what>`: several stacks may share a namespace."""
    return f"bind9-{_slug(spec.region)}-{what}"[:63].rstrip("-")


def selector(spec: StackSpec, instances: list[Instance]) -> str:
    """The PromQL label matchers of *instances*' pods."""
    names = "|".join(i.name for i in instances)
    return (f'namespace="{spec.namespace}", '
            f'{spec.metrics.podLabel}=~"({names}){POD_SUFFIX}"')


def zones_loaded(spec: StackSpec, instance: Instance) -> int:
    """How many zones the instance is configured with (catalog members it learns from a
    catalog come on top: the rule checks for at least these)."""
    return len({z.zoneName for z in spec.zones_for(instance)})


def _by(spec: StackSpec) -> str:
    return f"namespace, {spec.metrics.podLabel}"


def rules(spec: StackSpec) -> Obj:
    """The rule groups (Prometheus's rule file format; also a PrometheusRule's spec)."""
    insts = exported(spec)
    lag = spec.metrics.lagMinutes
    pod = spec.metrics.podLabel
    every = selector(spec, insts)
    by = _by(spec)
    where = f"{{{{ $labels.namespace }}}}/{{{{ $labels.{pod} }}}}"

    absent = " or ".join(
        f'label_replace(absent(up{{{selector(spec, [i])}}}), '
        f'"bind9_instance", "{i.name}", "", "")' for i in insts)
    alerts: list[Obj] = [
        {
            "alert": "Bind9ExporterDown",
            "expr": f"up{{{every}}} == 0 or {absent}",
            "for": "5m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "BIND exporter not scraped",
                "description": (
                    f"Prometheus cannot scrape the bind exporter of {where}"
                    "{{ with $labels.bind9_instance }} (no pod of instance {{ . }} scraped at "
                    "all){{ end }}: the pod is down or its metrics port unreachable."),
            },
        },
        {
            "alert": "Bind9StatisticsUnreadable",
            "expr": f"bind_up{{{every}}} == 0",
            "for": "5m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "BIND statistics channel unreadable",
                "description": (
                    f"The exporter of {where} cannot read named's statistics channel "
                    "(127.0.0.1:8053): named is down or hung in that pod."),
            },
        },
    ]

    missing = []
    for inst in insts:
        count = zones_loaded(spec, inst)
        if not count:
            continue
        sel = selector(spec, [inst])
        missing.append(
            f"(count by ({by}) (bind_zone_serial{{{sel}}})"
            f" or on ({by}) 0 * max by ({by}) (bind_up{{{sel}}} == 1)) < {count}")
    if missing:
        alerts.append({
            "alert": "Bind9ZoneNotLoaded",
            "expr": " or ".join(missing),
            "for": "5m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "BIND serves fewer zones than configured",
                "description": (
                    f"{where} serves {{{{ $value }}}} zone(s), fewer than its instance is "
                    "configured with: a zone failed to load (primary) or never transferred "
                    "(secondary). Compare bind_zone_serial by zone_name with the instance's "
                    "other pods, and read named's log."),
            },
        })

    secondaries = [i for i in insts if i.role == "secondary"]
    if secondaries:
        alerts.append({
            "alert": "Bind9SecondarySerialBehind",
            "expr": (
                "max by (zone_name) (bind_zone_serial) - on (zone_name) group_right () "
                f"bind_zone_serial{{{selector(spec, secondaries)}}} > 0"),
            "for": f"{lag}m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "A secondary is behind its primary",
                "description": (
                    f"{where} has served {{{{ $labels.zone_name }}}} below the newest serial "
                    f"any server has (its primary's) for {lag} minutes (by {{{{ $value }}}}): "
                    "NOTIFY or the transfer from the primary does not get through."),
            },
        })
        alerts.append({
            "alert": "Bind9ZoneTransfersFailing",
            "expr": (f"increase(bind_zone_transfer_failure_total"
                     f"{{{selector(spec, secondaries)}}}[{lag}m]) > 0"),
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "Zone transfers failing",
                "description": (
                    f"{where} had {{{{ $value }}}} failed incoming zone transfer(s) in the last "
                    f"{lag} minutes (server-wide, XfrFail): a primary refuses the TSIG key, is "
                    "unreachable or serves a broken zone. named's log names the zone."),
            },
        })
    return {"groups": [{"name": f"bind9-topology-{_slug(spec.region)}", "rules": alerts}]}


def rules_yaml(spec: StackSpec) -> str:
    return yaml.safe_dump(rules(spec), sort_keys=False, width=1000)


def _labels(spec: StackSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": "bind9", "app.kubernetes.io/managed-by": "pulumi",
            "app.kubernetes.io/component": "monitoring"}


def rule_object(spec: StackSpec) -> Obj:
    """A PrometheusRule where the stack says the Prometheus Operator runs (its
    metrics.serviceMonitor), else a ConfigMap holding the rule file."""
    name = object_name(spec, "alerts")
    meta = {"name": name, "namespace": spec.namespace, "labels": _labels(spec)}
    if spec.metrics.serviceMonitor:
        return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                "metadata": meta, "spec": rules(spec)}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "data": {RULES_KEY: rules_yaml(spec)}}


def _panel(pid: int, title: str, kind: str, exprs: list[tuple[str, str]], x: int, y: int,
           unit: str = "short") -> Obj:
    return {
        "id": pid, "title": title, "type": kind,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(ord("A") + n), "expr": expr, "legendFormat": legend,
                     "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                    for n, (expr, legend) in enumerate(exprs)],
    }


def dashboard(spec: StackSpec) -> Obj:
    """The Grafana dashboard of the stack's exporters."""
    insts = exported(spec)
    sel = selector(spec, insts)
    pod = spec.metrics.podLabel
    secondaries = [i for i in insts if i.role == "secondary"]
    lag_sel = selector(spec, secondaries or insts)
    panels = [
        _panel(1, "Statistics read (bind_up)", "timeseries",
               [(f"bind_up{{{sel}}}", f"{{{{{pod}}}}}")], 0, 0),
        _panel(2, "Serial behind the newest (secondaries)", "timeseries",
               [("max by (zone_name) (bind_zone_serial) - on (zone_name) group_right () "
                 f"bind_zone_serial{{{lag_sel}}}", f"{{{{{pod}}}}} {{{{zone_name}}}}")], 12, 0),
        _panel(3, "Zones loaded", "timeseries",
               [(f"count by ({pod}) (bind_zone_serial{{{sel}}})", f"{{{{{pod}}}}}")], 0, 8),
        _panel(4, "Zone transfers (per second)", "timeseries",
               [(f"sum by ({pod}) (rate(bind_zone_transfer_success_total{{{sel}}}[5m]))",
                 f"{{{{{pod}}}}} success"),
                (f"sum by ({pod}) (rate(bind_zone_transfer_failure_total{{{sel}}}[5m]))",
                 f"{{{{{pod}}}}} failure"),
                (f"sum by ({pod}) (rate(bind_zone_transfer_rejected_total{{{sel}}}[5m]))",
                 f"{{{{{pod}}}}} rejected")], 12, 8, "ops"),
        _panel(5, "Queries by type (per second)", "timeseries",
               [(f"sum by (type) (rate(bind_incoming_queries_total{{{sel}}}[5m]))",
                 "{{type}}")], 0, 16, "qps"),
        _panel(6, "Responses by rcode (per second)", "timeseries",
               [(f"sum by (rcode) (rate(bind_response_rcodes_total{{{sel}}}[5m]))",
                 "{{rcode}}")], 12, 16, "ops"),
    ]
    return {
        "uid": object_name(spec, "dns")[:40],
        "title": f"BIND9 topology: {spec.region} ({spec.namespace})",
        "tags": ["bind9", "dns"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource",
                                 "query": "prometheus", "label": "Data source"}]},
        "panels": panels,
    }


def dashboard_object(spec: StackSpec) -> Obj:
    """A ConfigMap labelled grafana_dashboard: "1" (Grafana's dashboard sidecar)."""
    name = object_name(spec, "dashboard")
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": spec.namespace,
                         "labels": {**_labels(spec), "grafana_dashboard": "1"}},
            "data": {f"{name}.json": json.dumps(dashboard(spec), indent=2, sort_keys=True)}}


def stack_objects(spec: StackSpec) -> list[Obj]:
    """What metrics.alerts adds to the stack: the rules and the dashboard (none when off)."""
    if not enabled(spec):
        return []
    return [rule_object(spec), dashboard_object(spec)]


def metric_names(text: str) -> set[str]:
    """The exporter metric names a rule or panel expression reads."""
    return set(re.findall(r"\bbind_[a-z_]+\b", text))
