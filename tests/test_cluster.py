"""The main job on a real Kubernetes cluster: `pulumi up` of every cluster stack.

The cluster is the one of scripts/cluster.sh (kube-apiserver, kubelet, containerd,
runc, BIND in pods from the image built from Debian's packages). The tests run in
order on one deployment: up of the primary stack and each region stack, answers
from every Service, no drift, a record change rolled with zero failed queries, a
secondary pod deleted by hand, destroy. Every network target is a pod or Service
address of this cluster (on its bridge) or loopback; every loop is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import yaml

from components.dnscheck import Endpoint, axfr, make_tsig_key, query_soa
from tests.enginekit import ROOT, Engine, make_engine

pytestmark = pytest.mark.cluster

PRIMARY_STACK = "cluster"
REGION_STACKS = ["cluster-us-west-2", "cluster-eu-west-1"]
STACKS = [PRIMARY_STACK, *REGION_STACKS]
ZONES = ["example.com", "example.org", "example.net"]
KEY_NAME = "transfer-key"


def _stack_doc(project: Path, stack: str) -> dict[str, Any]:
    return yaml.safe_load((project / f"Pulumi.{stack}.yaml").read_text())["config"]


def _services(project: Path, stack: str) -> dict[str, str]:
    """Instance name -> its fixed ClusterIP, from the stack file."""
    return {i["name"]: i["service"]["clusterIP"]
            for i in _stack_doc(project, stack)["bind9-topology:instances"]}


@dataclass
class Cluster:
    env: dict[str, str]

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["kubectl", *args], env=self.env, capture_output=True,
                              text=True, timeout=120)
        if check and proc.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)}: {proc.stderr[-3000:]}")
        return proc

    def fresh_namespace(self, name: str) -> None:
        """Create *name*, waiting (bounded) for an earlier one of that name to go."""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            got = self.kubectl("get", "namespace", name, "-o", "json", check=False)
            if got.returncode != 0:
                self.kubectl("create", "namespace", name)
                return
            if json.loads(got.stdout)["status"].get("phase") != "Terminating":
                self.kubectl("delete", "namespace", name, "--wait=false")
            time.sleep(1)
        pytest.fail(f"namespace {name} still terminating after 180 s")

    def pods(self, namespace: str, selector: str = "app.kubernetes.io/name=bind9") -> list[Any]:
        out = self.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
        return list(json.loads(out.stdout)["items"])


def _ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@dataclass
class Deployment:
    engine: Engine
    cluster: Cluster
    secret: str
    namespaces: dict[str, str] = field(default_factory=dict)
    destroyed: bool = False

    def pulumi(self, *args: str, stack: str,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.engine.run(*args, stack=stack, check=check)

    def outputs(self, stack: str) -> dict[str, Any]:
        return dict(json.loads(self.pulumi("stack", "output", "--json", stack=stack).stdout))

    def serials(self) -> dict[str, int]:
        zones = self.outputs(PRIMARY_STACK)["zones"]
        return {z["zoneName"]: z["serial"] for z in zones.values() if z["type"] == "primary"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if os.environ.get("SKIP_CLUSTER"):
        pytest.skip("SKIP_CLUSTER is set")
    if os.geteuid() != 0:
        pytest.skip("the local cluster needs root (containerd, kubelet, a bridge)")
    up = subprocess.run(["bash", str(ROOT / "scripts" / "cluster.sh"), "up"],
                        capture_output=True, text=True, timeout=3600)
    if up.returncode != 0:
        pytest.fail(f"scripts/cluster.sh up failed:\n{up.stderr[-5000:]}")
    exports = up.stdout.strip().splitlines()[-1].removeprefix("export ").split()
    env = dict(os.environ)
    for item in exports:
        key, value = item.split("=", 1)
        env[key] = value.replace("$PATH", env.get("PATH", ""))
    yield Cluster(env=env)
    if not os.environ.get("KEEP_CLUSTER"):
        subprocess.run(["bash", str(ROOT / "scripts" / "cluster.sh"), "down"],
                       capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def deployed(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    engine = make_engine(tmp_path_factory.mktemp("cluster"))
    kube_bin = cluster.env["PATH"].split(":", 1)[0]  # cluster.sh env puts its bin dir first
    engine.env.update({"KUBECONFIG": cluster.env["KUBECONFIG"],
                       "PATH": f"{kube_bin}:{engine.env['PATH']}"})
    cluster.env.update({k: engine.env[k] for k in ("PULUMI_BACKEND_URL", "PULUMI_HOME",
                                                     "PULUMI_CONFIG_PASSPHRASE")})
    import base64
    secret = base64.b64encode(os.urandom(32)).decode()
    dep = Deployment(engine=engine, cluster=cluster, secret=secret)
    for stack in STACKS:
        namespace = _stack_doc(engine.project, stack)["bind9-topology:namespace"]
        dep.namespaces[stack] = namespace
        cluster.fresh_namespace(namespace)
        engine.init(stack, secret)
    try:
        for stack in STACKS:
            started = time.monotonic()
            dep.pulumi("up", "--yes", "--skip-preview", stack=stack)
            print(f"pulumi up --stack {stack}: {time.monotonic() - started:.1f}s")
        yield dep
    finally:
        if not dep.destroyed:
            for stack in reversed(STACKS):
                dep.pulumi("destroy", "--yes", "--skip-preview", stack=stack, check=False)
        for namespace in dep.namespaces.values():
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# --------------------------------------------------------------------------- after up


def test_every_pod_ready_and_every_gate_ready(deployed: Deployment) -> None:
    for stack in STACKS:
        gates = {name: z["ready"] for name, z in deployed.outputs(stack)["zones"].items()}
        assert gates and all(ready is True for ready in gates.values()), (stack, gates)
        expected = sum(i["replicas"] for i in _stack_doc(deployed.engine.project, stack)
                       ["bind9-topology:instances"])
        pods = [p for p in deployed.cluster.pods(deployed.namespaces[stack])
                if not p["metadata"].get("deletionTimestamp")]
        assert len(pods) == expected, [p["metadata"]["name"] for p in pods]
        assert all(_ready(p) for p in pods), [
            (p["metadata"]["name"], p["status"].get("conditions")) for p in pods]


def test_every_service_answers_authoritatively_with_the_serial(deployed: Deployment) -> None:
    serials = deployed.serials()
    assert set(serials) == set(ZONES)
    for stack in STACKS:
        for instance, address in _services(deployed.engine.project, stack).items():
            for zone in ZONES:
                probe = query_soa(Endpoint(address, 53, instance), zone, timeout=2)
                assert probe.ok, (stack, instance, zone, probe)
                assert probe.serial == serials[zone], (stack, instance, zone, probe)


def test_tsig_axfr_succeeds_and_keyless_axfr_is_refused(deployed: Deployment) -> None:
    primary = Endpoint(_services(deployed.engine.project, PRIMARY_STACK)["primary-dns"], 53)
    key = make_tsig_key(KEY_NAME, "hmac-sha256", deployed.secret)
    for zone in ZONES:
        signed, transferred = axfr(primary, zone, key=key, timeout=5, lifetime=30)
        assert signed.ok and transferred is not None, signed
        keyless, nothing = axfr(primary, zone, timeout=5, lifetime=30)
        assert not keyless.ok and nothing is None, keyless
        assert keyless.reason.name in {"REFUSED", "NOTAUTH"}, keyless


def test_no_changes_and_no_drift_after_up(deployed: Deployment) -> None:
    for stack in STACKS:
        deployed.pulumi("preview", "--expect-no-changes", stack=stack)
        deployed.pulumi("refresh", "--yes", "--skip-preview", "--expect-no-changes", stack=stack)


# --------------------------------------------------------------------------- a change


@dataclass
class QueryLoop:
    """A bounded query loop: `count` SOA queries per target at a fixed rate."""

    targets: list[str]
    zone: str
    count: int = 1500
    rate_per_second: float = 20.0
    failures: list[str] = field(default_factory=list)
    sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        query = dns.message.make_query(self.zone, dns.rdatatype.SOA)
        query.flags &= ~dns.flags.RD
        period = 1.0 / self.rate_per_second
        for _ in range(self.count):
            if self.stop.is_set():
                return
            started = time.monotonic()
            for target in self.targets:
                self.sent += 1
                try:
                    answer = dns.query.udp(query, target, port=53, timeout=2.0)
                    if answer.rcode() != dns.rcode.NOERROR or not answer.flags & dns.flags.AA:
                        self.failures.append(f"{target}: {dns.rcode.to_text(answer.rcode())}")
                except Exception as exc:  # a timeout is a failed query
                    self.failures.append(f"{target}: {type(exc).__name__}")
            time.sleep(max(0.0, period - (time.monotonic() - started)))


def _steps(preview_json: str) -> list[tuple[str, str]]:
    changed = []
    for step in json.loads(preview_json).get("steps", []):
        if step["op"] != "same":
            parts = step["urn"].split("::")
            changed.append((parts[-2].split("$")[-1], parts[-1]))
    return sorted(changed)


def test_record_change_rolls_the_primary_with_zero_failed_queries(deployed: Deployment) -> None:
    project = deployed.engine.project
    before = deployed.serials()
    records = project / "configs" / "zones" / "example.com.yaml"
    records.write_text(records.read_text().replace("192.0.2.30", "192.0.2.31"))

    changed = _steps(deployed.pulumi("preview", "--json", stack=PRIMARY_STACK).stdout)
    assert changed == sorted([
        ("pulumi-python:dynamic/bind9:ZoneSerial", "example-com-serial"),
        ("pulumi-python:dynamic/bind9:TransferGate", "example-com-gate"),
        ("kubernetes:core/v1:ConfigMap", "primary-dns-zones-0"),
        ("kubernetes:apps/v1:Deployment", "primary-dns"),
    ]), changed
    for stack in REGION_STACKS:  # the regions' own config did not change
        deployed.pulumi("preview", "--expect-no-changes", stack=stack)

    addresses = [a for s in STACKS for a in _services(project, s).values()]
    loop = QueryLoop(targets=addresses, zone="example.com")
    thread = threading.Thread(target=loop.run, daemon=True)
    old_pods = {p["metadata"]["name"] for p in deployed.cluster.pods(
        deployed.namespaces[PRIMARY_STACK], "instance=primary-dns")}
    thread.start()
    try:
        deployed.pulumi("up", "--yes", "--skip-preview", stack=PRIMARY_STACK)
    finally:
        loop.stop.set()
        thread.join(timeout=30)
    new_pods = {p["metadata"]["name"] for p in deployed.cluster.pods(
        deployed.namespaces[PRIMARY_STACK], "instance=primary-dns") if _ready(p)}
    print(f"queries during the roll: {loop.sent}, failed: {len(loop.failures)}")
    assert loop.sent > 0
    assert not loop.failures, loop.failures[:20]
    assert new_pods and not (new_pods & old_pods), (old_pods, new_pods)

    after = deployed.serials()
    assert after["example.com"] > before["example.com"]
    assert {z: s for z, s in after.items() if z != "example.com"} == {
        z: s for z, s in before.items() if z != "example.com"}
    assert all(z["ready"] is True for z in deployed.outputs(PRIMARY_STACK)["zones"].values())
    # Every pod of every secondary instance serves the new serial (NOTIFY reaches one
    # replica behind a Service address; the others refresh within max-refresh-time).
    deadline = time.monotonic() + 120
    lagging: list[str] = []
    while time.monotonic() < deadline:
        lagging = []
        for stack in STACKS:
            for pod in deployed.cluster.pods(deployed.namespaces[stack], "dns-role=secondary"):
                ip = pod["status"].get("podIP")
                probe = query_soa(Endpoint(ip, 53), "example.com", timeout=1)
                if probe.serial != after["example.com"]:
                    lagging.append(f"{pod['metadata']['name']}: {probe.serial}")
        if not lagging:
            break
        time.sleep(1)
    assert not lagging, lagging
    deployed.pulumi("preview", "--expect-no-changes", stack=PRIMARY_STACK)


def test_deleted_secondary_pod_is_ready_only_once_it_serves_its_zones(
    deployed: Deployment,
) -> None:
    namespace = deployed.namespaces["cluster-us-west-2"]
    selector = "instance=secondary-dns-usw2-a"
    victim = deployed.cluster.pods(namespace, selector)[0]["metadata"]["name"]
    deployed.cluster.kubectl("delete", "pod", "-n", namespace, victim, "--wait=false")
    serials = deployed.serials()
    deadline = time.monotonic() + 180
    checked: dict[str, str] = {}
    while time.monotonic() < deadline:
        for pod in deployed.cluster.pods(namespace, selector):
            name = pod["metadata"]["name"]
            if name == victim or name in checked or not _ready(pod):
                continue
            # The first moment it is Ready, it already serves every zone at the serial.
            for zone in ZONES:
                probe = query_soa(Endpoint(pod["status"]["podIP"], 53), zone, timeout=1)
                assert probe.ok and probe.serial == serials[zone], (name, zone, probe)
            checked[name] = "ok"
        replacements = [n for n in checked if n != victim]
        if replacements:
            break
        time.sleep(0.2)
    assert checked, "no replacement pod became Ready within 180 s"


def test_destroy_leaves_no_object_in_the_namespaces(deployed: Deployment) -> None:
    for stack in reversed(STACKS):
        deployed.pulumi("destroy", "--yes", "--skip-preview", stack=stack)
    deployed.destroyed = True
    kinds = ("deployments,replicasets,pods,services,configmaps,secrets,networkpolicies,"
             "poddisruptionbudgets")
    deadline = time.monotonic() + 120
    left: list[str] = []
    while time.monotonic() < deadline:
        left = []
        for namespace in deployed.namespaces.values():
            out = deployed.cluster.kubectl("get", kinds, "-n", namespace, "-o", "json")
            for item in json.loads(out.stdout)["items"]:
                name = item["metadata"]["name"]
                if item["kind"] == "ConfigMap" and name == "kube-root-ca.crt":
                    continue  # every namespace gets it from the cluster
                left.append(f"{namespace}/{item['kind']}/{name}")
        if not left:
            break
        time.sleep(1)
    assert not left, left
