"""Metrics: named's statistics channel in every pod, the exporter sidecar (off by default),
Prometheus scrape annotations or an opt-in ServiceMonitor, under pulumi mocks."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bind9_topology.config.model import TopologyError
from bind9_topology.config.topology import PREFIX, load_topology
from bind9_topology.render.bind_files import render_instance
from components.preview import kubernetes_objects, run_components
from tests.conftest import PROJECT_DIR, new_secret

pytestmark = pytest.mark.unit

SERVICE_MONITOR = "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"


def objects(raw: dict[str, Any]) -> tuple[dict[tuple[str, str], dict[str, Any]], Any]:
    raw = {**copy.deepcopy(raw), "gate": {"enabled": False}}
    topo = load_topology(raw, stack="prod", project_dir=PROJECT_DIR, tsig_secret=new_secret())
    mocks = run_components(topo)
    return {(o["kind"], o["metadata"]["name"]): o for o in kubernetes_objects(mocks)}, mocks


def pod(objs: dict, name: str) -> dict[str, Any]:
    return objs[("Deployment", name)]["spec"]["template"]


def test_every_named_conf_has_the_statistics_channel_on_loopback(minimal_raw) -> None:
    topo = load_topology(minimal_raw, stack="prod", project_dir=PROJECT_DIR,
                         tsig_secret=new_secret())
    for inst in topo.spec.instances:
        conf = render_instance(topo.spec, inst, topo.contents,
                               dict.fromkeys(topo.contents, 2024051701)).config_files[
            "etc/bind/named.conf"].decode()
        assert ("statistics-channels {\n    inet 127.0.0.1 port 8053 allow { 127.0.0.1; };\n};"
                in conf)


def test_off_by_default(minimal_raw) -> None:
    objs, mocks = objects(minimal_raw)
    for name in ("primary-dns", "secondary-dns"):
        template = pod(objs, name)
        assert [c["name"] for c in template["spec"]["containers"]] == ["bind9", "agent"]
        assert not any(k.startswith("prometheus.io/") for k in template["metadata"]["annotations"])
        assert [p["name"] for p in objs[("Service", name)]["spec"]["ports"]] == [
            "dns-udp", "dns-tcp"]
    assert not [r for r in mocks.resources if r.type == SERVICE_MONITOR]


def test_sidecar_annotations_service_port_and_policy(minimal_raw) -> None:
    raw = {**minimal_raw, "metrics": {"enabled": True, "allowFrom": ["10.50.0.0/16"],
                                      "exporterImage": "mirror.example/bind-exporter:v0.8.0"}}
    objs, mocks = objects(raw)
    for name in ("primary-dns", "secondary-dns"):
        template = pod(objs, name)
        bind9, exporter, agent = template["spec"]["containers"]
        assert agent["name"] == "agent"
        assert exporter["name"] == "exporter"
        assert exporter["image"] == "mirror.example/bind-exporter:v0.8.0"
        assert "--bind.stats-url=http://127.0.0.1:8053" in exporter["args"]
        assert "--web.listen-address=:9119" in exporter["args"]
        assert exporter["ports"] == [{"name": "metrics", "containerPort": 9119,
                                      "protocol": "TCP"}]
        # as strict as the bind9 container: same security context, no capability, read-only
        assert exporter["securityContext"] == bind9["securityContext"]
        assert exporter["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert exporter["securityContext"]["readOnlyRootFilesystem"] is True
        assert exporter["securityContext"]["allowPrivilegeEscalation"] is False
        assert "volumeMounts" not in exporter
        annotations = template["metadata"]["annotations"]
        assert {k: v for k, v in annotations.items() if k.startswith("prometheus.io/")} == {
            "prometheus.io/scrape": "true", "prometheus.io/port": "9119",
            "prometheus.io/path": "/metrics"}
        ports = objs[("Service", name)]["spec"]["ports"]
        assert ports[-1] == {"name": "metrics", "port": 9119, "targetPort": 9119,
                             "protocol": "TCP"}
        rules = objs[("NetworkPolicy", name)]["spec"]["ingress"]
        assert rules[-1] == {"from": [{"ipBlock": {"cidr": "10.50.0.0/16"}}],
                             "ports": [{"protocol": "TCP", "port": 9119}]}
    assert not [r for r in mocks.resources if r.type == SERVICE_MONITOR]


def test_service_monitor_instead_of_annotations_and_per_instance_override(minimal_raw) -> None:
    raw = copy.deepcopy(minimal_raw)
    raw["metrics"] = {"enabled": True, "serviceMonitor": True, "port": 9200}
    raw["instances"][1]["metrics"] = {"enabled": False}
    objs, mocks = objects(raw)
    monitors = [r for r in mocks.resources if r.type == SERVICE_MONITOR]
    assert [r.name for r in monitors] == ["primary-dns-servicemonitor"]
    monitor = monitors[0].inputs
    assert monitor["spec"]["selector"] == {"matchLabels": {"instance": "primary-dns"}}
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["namespace"] == "dns-system"
    primary = pod(objs, "primary-dns")
    assert not any(k.startswith("prometheus.io/") for k in primary["metadata"]["annotations"])
    assert "--web.listen-address=:9200" in primary["spec"]["containers"][1]["args"]
    assert [c["name"] for c in pod(objs, "secondary-dns")["spec"]["containers"]] == [
        "bind9", "agent"]


@pytest.mark.parametrize(("metrics", "path", "fragment"), [
    ({"enabled": True, "exporterImage": "prometheuscommunity/bind-exporter"},
     f"{PREFIX}metrics.exporterImage", "is not pinned to a version"),
    ({"enabled": True, "exporterImage": "bind-exporter:latest"},
     f"{PREFIX}metrics.exporterImage", "is not pinned to a version"),
    ({"enabled": True, "port": 8053}, f"{PREFIX}metrics.port", "statistics channel"),
    ({"enabld": True}, f"{PREFIX}metrics.enabld", "did you mean 'enabled'"),
])
def test_bad_metrics_config_is_named_by_path(minimal_raw, metrics, path, fragment) -> None:
    with pytest.raises(TopologyError) as info:
        load_topology({**minimal_raw, "metrics": metrics}, stack="prod",
                      project_dir=PROJECT_DIR, tsig_secret=new_secret())
    assert any(i.path == path and fragment in i.message for i in info.value.issues), \
        info.value.render()
