"""The main job on real Kubernetes clusters: `pulumi up` of every cluster stack.

The clusters are those of scripts/cluster.sh, one per region, each in its own network
namespace (kube-apiserver, kubelet, containerd, runc, kube-proxy, MetalLB, kube-router's
NetworkPolicy firewall, BIND in pods from the image built from Debian's packages). Each
stack targets its own cluster (`kubernetes:context`). The tests run in order on one
deployment: up of the primary stack and each region stack, answers from every
LoadBalancer address, no drift, the policy enforced both ways, a record change with zero
failed queries, a partition between regions and its heal, destroy. Every network target
is an address this machine made (the bridge between the clusters, their pod and
LoadBalancer ranges) or loopback; every loop is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest
import yaml

from bind9_topology.dns.checks import Endpoint, axfr, make_tsig_key, query_soa
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
    """Instance name -> its fixed address (a LoadBalancer's), from the stack file."""
    return {i["name"]: i["service"].get("loadBalancerIP") or i["service"]["clusterIP"]
            for i in _stack_doc(project, stack)["bind9-topology:instances"]}


def _context(project: Path, stack: str) -> str:
    """The kubeconfig context of the stack's own cluster (`kubernetes:context`)."""
    return str(_stack_doc(project, stack)["kubernetes:context"])


@dataclass
class Cluster:
    env: dict[str, str]
    #: namespace -> the context of the cluster it lives in (each stack its own cluster)
    contexts: dict[str, str] = field(default_factory=dict)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """kubectl against the cluster of the namespace named by `-n`."""
        context: list[str] = []
        if "-n" in args and (ns := args[args.index("-n") + 1]) in self.contexts:
            context = ["--context", self.contexts[ns]]
        proc = subprocess.run(["kubectl", *context, *args], env=self.env, capture_output=True,
                              text=True, timeout=120)
        if check and proc.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)}: {proc.stderr[-3000:]}")
        return proc

    def fresh_namespace(self, name: str) -> None:
        """Create *name*, waiting (bounded) for an earlier one of that name to go."""
        deadline = time.monotonic() + 180
        at = ["--context", self.contexts[name]]
        while time.monotonic() < deadline:
            got = self.kubectl(*at, "get", "namespace", name, "-o", "json", check=False)
            if got.returncode != 0:
                self.kubectl(*at, "create", "namespace", name)
                return
            if json.loads(got.stdout)["status"].get("phase") != "Terminating":
                self.kubectl(*at, "delete", "namespace", name, "--wait=false")
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
        cluster.contexts[namespace] = _context(engine.project, stack)
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
            cluster.kubectl("--context", cluster.contexts[namespace], "delete", "namespace",
                            namespace, "--wait=false", check=False)


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


# --------------------------------------------------------------------------- between clusters


def test_transfers_between_regions_arrive_from_the_regions_nat_addresses(
    deployed: Deployment,
) -> None:
    """Each region is its own cluster: the primaries log every region's TSIG transfers as
    coming from that cluster's node address (its pods leave by source NAT). (NOTIFY the
    other way: test_record_change_reaches_every_pod_by_notify_without_a_restart.)"""
    regions = {"cluster-us-west-2": "10.250.0.129", "cluster-eu-west-1": "10.250.0.193"}
    namespace = deployed.namespaces[PRIMARY_STACK]
    logs = "".join(deployed.cluster.kubectl("logs", "-n", namespace, pod["metadata"]["name"],
                                            "-c", "bind9").stdout
                   for pod in deployed.cluster.pods(namespace, "instance=primary-dns"))
    for stack, nat in regions.items():
        assert f" {nat}#" in logs and "/key transfer-key" in logs, (stack, logs[-3000:])
        transfers = [line for line in logs.splitlines() if f" {nat}#" in line
                     and "transfer of" in line and "XFR started: TSIG transfer-key" in line]
        assert transfers, (stack, nat)


def test_the_regions_are_as_far_apart_as_b9t_latency_says(deployed: Deployment) -> None:
    """cluster/netdelay holds what a cluster receives from another region for half the
    round trip: a query from each region's network to the primaries' LoadBalancer takes
    about B9T_LATENCY's round trip (30 ms from us-west-2, 80 ms from eu-west-1), while
    the host, on the bridge itself, is not delayed."""
    if os.environ.get("B9T_LATENCY"):
        pytest.skip("B9T_LATENCY is set: not the default round trips")
    address = _services(deployed.engine.project, PRIMARY_STACK)["primary-dns"]

    def query_ms(netns: str | None) -> int:
        enter = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
        out = subprocess.run([*enter, "dig", "+tries=1", "+time=2", f"@{address}",
                              "example.com", "SOA"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        return int(out.split("Query time: ", 1)[1].split(" ", 1)[0])

    for netns, rtt in (("b9t-us-west-2", 30), ("b9t-eu-west-1", 80)):
        times = sorted(query_ms(netns) for _ in range(5))
        assert rtt * 0.8 <= times[2] <= rtt + 40, (netns, times)
    assert sorted(query_ms(None) for _ in range(5))[2] < 10


def test_the_network_policy_is_enforced_both_ways(deployed: Deployment) -> None:
    """kube-router enforces what the NetworkPolicies say, in the primaries' own cluster:
    a pod of an unrelated namespace may query a primary over UDP (allowQuery) but not
    reach it over TCP 53 (transfers: secondaries and peerCidrs only), not even through
    the LoadBalancer address; the instance's own secondary pods do reach it over TCP."""
    namespace = deployed.namespaces[PRIMARY_STACK]
    context = deployed.cluster.contexts[namespace]
    probe_ns = "b9t-policy-probe"
    deployed.cluster.contexts[probe_ns] = context
    deployed.cluster.fresh_namespace(probe_ns)
    image = next(i["image"] for i in _stack_doc(deployed.engine.project, PRIMARY_STACK)
                 ["bind9-topology:instances"] if i["name"] == "primary-dns")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "probe", "namespace": probe_ns},
           "spec": {"automountServiceAccountToken": False, "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "probe", "image": image,
                                    "imagePullPolicy": "Never",
                                    "command": ["sleep", "600"]}]}}
    try:
        applied = subprocess.run(
            ["kubectl", "--context", context, "apply", "-f", "-"], input=json.dumps(pod),
            env=deployed.cluster.env, capture_output=True, text=True, timeout=60)
        assert applied.returncode == 0, applied.stderr
        deployed.cluster.kubectl("wait", "-n", probe_ns, "--for=condition=Ready", "pod/probe",
                                 "--timeout=120s")
        primary = deployed.cluster.pods(namespace, "instance=primary-dns")[0]["status"]["podIP"]
        address = _services(deployed.engine.project, PRIMARY_STACK)["primary-dns"]
        secondary = next(p["metadata"]["name"]
                         for p in deployed.cluster.pods(namespace, "instance=secondary-dns")
                         if _ready(p))

        def dig(ns: str, pod_name: str, target: str, *flags: str) -> str:
            out = deployed.cluster.kubectl(
                "exec", "-n", ns, pod_name, "-c", "probe" if ns == probe_ns else "bind9", "--",
                "dig", *flags, "+time=2", "+tries=1", "+norec", f"@{target}", "example.com",
                "SOA", check=False)
            return out.stdout + out.stderr

        for target in (primary, address):
            udp = dig(probe_ns, "probe", target)
            assert "status: NOERROR" in udp and "flags: qr aa" in udp, (target, udp)
            tcp = dig(probe_ns, "probe", target, "+tcp")
            assert "status: NOERROR" not in tcp, (target, tcp)
            assert "refused" in tcp or "timed out" in tcp or "no servers" in tcp, (target, tcp)
            allowed = dig(namespace, secondary, target, "+tcp")
            assert "status: NOERROR" in allowed, (target, allowed)
    finally:
        deployed.cluster.kubectl("--context", context, "delete", "namespace", probe_ns,
                                 "--wait=false", check=False)


def test_no_changes_and_no_drift_after_up(deployed: Deployment) -> None:
    for stack in STACKS:
        deployed.pulumi("preview", "--expect-no-changes", stack=stack)
        deployed.pulumi("refresh", "--yes", "--skip-preview", "--expect-no-changes", stack=stack)


# --------------------------------------------------------------------------- the gate, pod by pod


def _gate_outputs(deployed: Deployment, stack: str) -> dict[str, dict[str, Any]]:
    """The stack's TransferGate status by zone, from the stack's state (one gate a stack)."""
    state = json.loads(deployed.pulumi("stack", "export", stack=stack).stdout)
    (gate,) = [r.get("outputs") or {} for r in state["deployment"].get("resources") or []
               if r["type"].endswith(":TransferGate")]
    assert gate["ready"] is True, gate
    return dict(gate["status"])


def test_the_gate_verified_every_pod_through_the_api(deployed: Deployment) -> None:
    from components.transfer_gate import server_status

    for stack in STACKS:
        instances = _stack_doc(deployed.engine.project, stack)["bind9-topology:instances"]
        pods = {p["metadata"]["name"] for p in deployed.cluster.pods(deployed.namespaces[stack])}
        for name, outputs in _gate_outputs(deployed, stack).items():
            # each server is one string in state (ADR 19): read back as the gate's map
            servers = {key: server_status(value) for key, value in outputs["servers"].items()}
            verified = {key.split("/", 1)[1].split(" ", 1)[0] for key in servers
                        if key.startswith("pod ")}
            assert verified == pods, (stack, name, sorted(servers))
            assert len(verified) == sum(i["replicas"] for i in instances) >= 2
            assert all(s["reason"] == "OK" for s in servers.values()), servers
            assert all(s["host"] == "kubernetes-api" for k, s in servers.items()
                       if k.startswith("pod ")), servers
            if stack != PRIMARY_STACK:  # the primaries are another stack's: probed directly
                assert {s["host"] for k, s in servers.items() if not k.startswith("pod ")} == {
                    _services(deployed.engine.project, PRIMARY_STACK)["primary-dns"]}, servers


def _gate_props(deployed: Deployment, zone: str, serial: int, stack: str,
                **endpoints: Any) -> dict[str, Any]:
    return {"zoneName": zone, "expectedSerial": serial, "expectedDigest": None,
            "tsigKeyName": KEY_NAME, "tsigAlgorithm": "hmac-sha256",
            "tsigSecret": deployed.secret, "deadlineSeconds": 15, "pollIntervalSeconds": 0.5,
            "kubeconfig": deployed.cluster.env["KUBECONFIG"],
            "kubeContext": _context(deployed.engine.project, stack),
            "primaries": [], "secondaries": [], **endpoints}


def _api(instance: str, namespace: str, via: str = "kubernetes-api") -> dict[str, str]:
    return {"name": instance, "instance": instance, "namespace": namespace, "via": via}


def _host_pid(deployed: Deployment, pod: dict[str, Any]) -> int:
    # named's container (the statuses come sorted by name: the agent's is first)
    status = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "bind9")
    container = status["containerID"].split("://", 1)[1]
    region = pod["spec"]["nodeName"].removeprefix("b9t-")  # each cluster its own containerd
    tasks = subprocess.run(
        ["ctr", "--address", f"/run/b9t/{region}/containerd.sock", "-n", "k8s.io",
         "tasks", "ls"], capture_output=True, text=True, timeout=30, check=True).stdout
    for line in tasks.splitlines():
        parts = line.split()
        if parts and parts[0] == container:
            return int(parts[1])
    pytest.fail(f"no task for container {container}")


@pytest.mark.parametrize("via", ["kubernetes-api", "pod-network"])
def test_a_held_back_replica_keeps_the_gate_waiting_and_is_named(
    deployed: Deployment, via: str,
) -> None:
    """Either route to the pods (a port-forward of the API, or each pod's IP, which the
    host routes to: gate.via pod-network) verifies every pod and names the one held."""
    from components.transfer_gate import GateFailed, TransferGateProvider

    namespace = deployed.namespaces["cluster-us-west-2"]
    instance = "secondary-dns-usw2-a"
    held, other = deployed.cluster.pods(namespace, f"instance={instance}")[:2]
    serial = deployed.serials()["example.org"]
    props = _gate_props(deployed, "example.org", serial, "cluster-us-west-2",
                        secondaries=[_api(instance, namespace, via)])
    ready = TransferGateProvider()._wait(props)
    assert ready["ready"] is True and len(ready["servers"]) == 2, ready["servers"]
    from components.transfer_gate import server_status

    hosts = {server_status(s)["host"] for s in ready["servers"].values()}
    if via == "pod-network":  # asked at the pods' own addresses, no port-forward
        assert hosts == {p["status"]["podIP"] for p in (held, other)}, ready["servers"]
    else:
        assert hosts == {"kubernetes-api"}, ready["servers"]

    pid = _host_pid(deployed, held)
    os.kill(pid, signal.SIGSTOP)  # named stops answering: the replica is held back
    try:
        with pytest.raises(GateFailed) as failed:
            TransferGateProvider()._wait(props)
    finally:
        os.kill(pid, signal.SIGCONT)
    message = str(failed.value)
    lagging = message.split("lagging:", 1)[1]
    assert held["metadata"]["name"] in lagging, message
    assert other["metadata"]["name"] not in lagging, message
    assert f"on {held['spec']['nodeName']}" in lagging and "fix:" in lagging, message


def test_the_gate_works_from_a_network_that_reaches_only_the_api(
    deployed: Deployment, tmp_path: Path,
) -> None:
    """A network namespace with one route, to the API server's address: no pod, no Service.

    Made with `unshare --net` and entered by pid, not `ip netns add`: that one
    bind-mounts /run/netns over itself, which doubles the CNI plugins' netns mounts
    and leaves every later pod stuck Terminating ("remove netns: device busy").
    """
    host_if, ns_if = "b9tg0", "b9tg1"
    api_ip = "10.250.0.65"  # the primary region's API server, in its cluster's namespace
    forward = [["FORWARD", "-i", host_if, "-d", f"{api_ip}/32", "-p", "tcp", "--dport",
                "6443", "-j", "ACCEPT"],
               ["FORWARD", "-o", host_if, "-s", f"{api_ip}/32", "-p", "tcp", "--sport",
                "6443", "-j", "ACCEPT"]]

    def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=check)

    sh("ip", "link", "del", host_if, check=False)
    holder = subprocess.Popen(["unshare", "--net", "--", "sleep", "600"])
    pid = str(holder.pid)
    inside = ("nsenter", "-t", pid, "-n")
    try:
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "unshare did not enter a new namespace"
            time.sleep(0.05)
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", pid)
        sh("ip", "addr", "add", "10.245.0.1/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh(*inside, "ip", "addr", "add", "10.245.0.2/30", "dev", ns_if)
        sh(*inside, "ip", "link", "set", ns_if, "up")
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh(*inside, "ip", "route", "add", f"{api_ip}/32", "via", "10.245.0.1")
        for rule in forward:  # the host forwards this one flow onto the clusters' bridge
            sh("iptables", "-I", *rule)
        serial = deployed.serials()["example.com"]
        namespace = deployed.namespaces[PRIMARY_STACK]
        props = _gate_props(deployed, "example.com", serial, PRIMARY_STACK,
                            primaries=[_api("primary-dns", namespace)],
                            secondaries=[_api("secondary-dns", namespace)])
        props_file = tmp_path / "props.json"
        props_file.write_text(json.dumps(props))
        props_file.chmod(0o600)
        pod_ip = deployed.cluster.pods(namespace, "instance=primary-dns")[0]["status"]["podIP"]
        service_ip = _services(deployed.engine.project, PRIMARY_STACK)["primary-dns"]
        script = (
            "import json, sys\n"
            "from bind9_topology.dns.checks import Endpoint, query_soa\n"
            "from components.transfer_gate import TransferGateProvider\n"
            "props = json.load(open(sys.argv[1]))\n"
            "blocked = {ip: query_soa(Endpoint(ip, 53), 'example.com', timeout=1).reason.name\n"
            "           for ip in sys.argv[2:]}\n"
            "out = TransferGateProvider()._wait(props)\n"
            "print(json.dumps({'blocked': blocked, 'ready': out['ready'],\n"
            "                  'servers': sorted(out['servers'])}))\n"
        )
        run = subprocess.run(
            [*inside, sys.executable, "-c", script, str(props_file), pod_ip, service_ip],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert run.returncode == 0, run.stderr[-3000:]
        result = json.loads(run.stdout.strip().splitlines()[-1])
        assert result["blocked"] and all(r != "OK" for r in result["blocked"].values()), result
        assert result["ready"] is True, result
        assert len(result["servers"]) == 4 and all(k.startswith("pod ")
                                                   for k in result["servers"]), result
    finally:
        for rule in forward:
            sh("iptables", "-D", *rule, check=False)
        holder.kill()
        holder.wait(timeout=10)
        sh("ip", "link", "del", host_if, check=False)


def test_lost_state_serial_moves_past_what_the_pods_serve_through_the_api(
    deployed: Deployment,
) -> None:
    """ZoneSerials with no state asks every pod (through the API, as the gate does):
    other content at the served serial moves past it; proven content keeps it."""
    from bind9_topology.config.topology import load_topology, read_stack_file
    from tests.namedkit import fresh_serial

    project = deployed.engine.project
    namespace = deployed.namespaces[PRIMARY_STACK]
    served = deployed.serials()["example.net"]
    topo = load_topology(read_stack_file(project, PRIMARY_STACK), stack=PRIMARY_STACK,
                         project_dir=project, tsig_secret=deployed.secret)
    content = topo.contents["example.net"]
    base = {"zoneName": "example.net", "contentHash": "state-lost",
            "probe": [_api("primary-dns", namespace), _api("secondary-dns", namespace)],
            "kubeconfig": deployed.cluster.env["KUBECONFIG"],
            "kubeContext": _context(project, PRIMARY_STACK), "tsigKeyName": KEY_NAME,
            "tsigAlgorithm": "hmac-sha256", "tsigSecret": deployed.secret}
    other = fresh_serial({**base, "digest": "0" * 64})
    assert other == served + 1, (served, other)
    same = fresh_serial({**base, "digest": content.digest})
    assert same == served, (served, same)


# --------------------------------------------------------------------------- a change


@dataclass
class QueryLoop:
    """A bounded query loop: `count` SOA queries per target at a fixed rate."""

    targets: list[str]
    zone: str
    count: int = 1500
    rate_per_second: float = 20.0
    #: tries per query, each waiting `timeout` (a stub resolver's retry; 1: none)
    tries: int = 1
    timeout: float = 2.0
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
                for attempt in range(1, self.tries + 1):
                    try:
                        answer = dns.query.udp(query, target, port=53, timeout=self.timeout)
                    except Exception as exc:  # a timeout: a failed query after the last try
                        if attempt == self.tries:
                            self.failures.append(f"{target}: {type(exc).__name__}")
                        continue
                    if answer.rcode() != dns.rcode.NOERROR or not answer.flags & dns.flags.AA:
                        self.failures.append(f"{target}: {dns.rcode.to_text(answer.rcode())}")
                    break
            time.sleep(max(0.0, period - (time.monotonic() - started)))


def _steps(preview_json: str) -> list[tuple[str, str]]:
    changed = []
    for step in json.loads(preview_json).get("steps", []):
        if step["op"] != "same":
            parts = step["urn"].split("::")
            changed.append((parts[-2].split("$")[-1], parts[-1]))
    return sorted(changed)


def _secondary_pods(deployed: Deployment) -> dict[str, str]:
    """Every pod of every secondary instance of every stack: name -> pod IP."""
    return {p["metadata"]["name"]: p["status"]["podIP"]
            for stack in STACKS
            for p in deployed.cluster.pods(deployed.namespaces[stack], "dns-role=secondary")
            if not p["metadata"].get("deletionTimestamp") and p["status"].get("podIP")}


def _pod_names(deployed: Deployment) -> set[str]:
    return {p["metadata"]["name"] for stack in STACKS
            for p in deployed.cluster.pods(deployed.namespaces[stack])}


def test_record_change_reaches_every_pod_by_notify_without_a_restart(
    deployed: Deployment,
) -> None:
    """One record: the preview changes one ConfigMap (no Deployment), `up` rolls no pod,
    the primaries' agents reload the zone, and every pod of every secondary instance in
    every region serves it within seconds: by NOTIFY and the agents' relay, since the
    cluster stacks leave refresh timers at 300-3600 s. No query fails meanwhile."""
    project = deployed.engine.project
    before = deployed.serials()
    records = project / "configs" / "zones" / "example.com.yaml"
    records.write_text(records.read_text().replace("192.0.2.30", "192.0.2.31"))

    changed = _steps(deployed.pulumi("preview", "--json", stack=PRIMARY_STACK).stdout)
    assert changed == sorted([
        ("pulumi-python:dynamic/bind9:ZoneSerials", "cluster-zone-serials"),
        ("pulumi-python:dynamic/bind9:TransferGate", "cluster-transfer-gate"),
        ("kubernetes:core/v1:ConfigMap", "primary-dns-zones-0"),
    ]), changed

    addresses = [a for s in STACKS for a in _services(project, s).values()]
    loop = QueryLoop(targets=addresses, zone="example.com")
    thread = threading.Thread(target=loop.run, daemon=True)
    pods_before = _pod_names(deployed)
    secondaries = _secondary_pods(deployed)
    assert len(secondaries) == 9, secondaries
    primaries = [p["status"]["podIP"] for p in deployed.cluster.pods(
        deployed.namespaces[PRIMARY_STACK], "instance=primary-dns")]
    seen: dict[str, float] = {}
    watching = threading.Event()
    target: list[int] = []

    def watch() -> None:  # when each pod first serves a serial past the old one
        deadline = time.monotonic() + 300
        while not watching.is_set() and time.monotonic() < deadline:
            for name, ip in [*(("primary " + ip, ip) for ip in primaries),
                             *secondaries.items()]:
                if name not in seen:
                    probe = query_soa(Endpoint(ip, 53), "example.com", timeout=0.5)
                    if probe.serial is not None and probe.serial > before["example.com"]:
                        seen[name] = time.monotonic()
                        target.append(probe.serial)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    thread.start()
    watcher.start()
    try:
        deployed.pulumi("up", "--yes", "--skip-preview", stack=PRIMARY_STACK)
        deadline = time.monotonic() + 60
        while len(seen) < len(secondaries) + len(primaries) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        watching.set()
        loop.stop.set()
        thread.join(timeout=30)
        watcher.join(timeout=30)
    print(f"queries during the change: {loop.sent}, failed: {len(loop.failures)}")
    assert loop.sent > 0
    assert not loop.failures, loop.failures[:20]
    assert _pod_names(deployed) == pods_before  # nothing restarted

    after = deployed.serials()
    assert after["example.com"] > before["example.com"] and set(target) == {after["example.com"]}
    assert {z: s for z, s in after.items() if z != "example.com"} == {
        z: s for z, s in before.items() if z != "example.com"}
    assert all(z["ready"] is True for z in deployed.outputs(PRIMARY_STACK)["zones"].values())
    assert sorted(n for n in seen if not n.startswith("primary ")) == sorted(secondaries), seen
    first = min(t for n, t in seen.items() if n.startswith("primary "))
    delays = {n: round(t - first, 3) for n, t in seen.items() if not n.startswith("primary ")}
    print(f"secondary pods serving after the first primary pod (s): {delays}")
    assert max(delays.values()) < 10, delays  # refresh timers: 300 s at the least
    relayed = "".join(deployed.cluster.kubectl(
        "logs", "-n", deployed.namespaces[stack], pod, "-c", "agent", check=False).stdout
        for stack in STACKS
        for pod in {p["metadata"]["name"] for p in deployed.cluster.pods(
            deployed.namespaces[stack], "dns-role=secondary")})
    assert f"serial {after['example.com']} -> " in relayed and "serving it" in relayed, relayed
    # The primaries' NOTIFY reached each region's cluster from the primary cluster's node
    # address (its pods leave by NAT), at the LoadBalancer address of each instance.
    for stack in REGION_STACKS:
        namespace = deployed.namespaces[stack]
        for instance in _services(project, stack):
            logs = "".join(deployed.cluster.kubectl(
                "logs", "-n", namespace, p["metadata"]["name"], "-c", "bind9").stdout
                for p in deployed.cluster.pods(namespace, f"instance={instance}"))
            assert any("10.250.0.65#" in line and "received notify for zone 'example.com'"
                       in line for line in logs.splitlines()), (stack, instance, logs[-2000:])
    deployed.pulumi("preview", "--expect-no-changes", stack=PRIMARY_STACK)


@pytest.mark.parametrize(("stack", "instance"), [(PRIMARY_STACK, "primary-dns"),
                                                 ("cluster-us-west-2", "secondary-dns-usw2-a")])
def test_a_roll_under_query_load_loses_no_query(deployed: Deployment, stack: str,
                                                instance: str) -> None:
    """`kubectl rollout restart` of a primary and of a secondary instance while every
    Service takes queries: every query is answered (the stopping pod turns unready at
    once and answers until kube-proxy has moved its flows). Each query is asked as a stub
    resolver does, once more after 1 s without an answer: what fails here fails a client.
    The raw loss without that retry is what bench/cluster.py measures with dnsperf."""
    project = deployed.engine.project
    namespace = deployed.namespaces[stack]
    old = {p["metadata"]["name"] for p in deployed.cluster.pods(namespace, f"instance={instance}")}
    addresses = [a for s in STACKS for a in _services(project, s).values()]
    loop = QueryLoop(targets=addresses, zone="example.org", count=100_000, tries=2,
                     timeout=1.0)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        time.sleep(1)
        deployed.cluster.kubectl("rollout", "restart", "-n", namespace, f"deployment/{instance}")
        deployed.cluster.kubectl("rollout", "status", "-n", namespace,
                                 f"deployment/{instance}", "--timeout=180s")
        deadline = time.monotonic() + 60  # the old pods drain and stop
        while time.monotonic() < deadline and old & {
                p["metadata"]["name"] for p in deployed.cluster.pods(namespace,
                                                                     f"instance={instance}")}:
            time.sleep(0.5)
        time.sleep(2)
    finally:
        loop.stop.set()
        thread.join(timeout=30)
    new = {p["metadata"]["name"] for p in deployed.cluster.pods(namespace, f"instance={instance}")}
    print(f"{instance}: queries during the roll: {loop.sent}, failed: {len(loop.failures)}")
    assert new and not (new & old), (old, new)
    assert loop.sent > 1000
    assert not loop.failures, loop.failures[:20]
    # the gate's view: every new pod serves every zone, verified through the API
    deployed.pulumi("up", "--yes", "--skip-preview", stack=stack)
    assert all(z["ready"] is True for z in deployed.outputs(stack)["zones"].values())


def _add_record_and_up(deployed: Deployment, zone: str, name: str, address: str) -> int:
    """One A record added to *zone*, `pulumi up` of the primary stack: the zone's new serial."""
    records = deployed.engine.project / "configs" / "zones" / f"{zone}.yaml"
    records.write_text(records.read_text()
                       + f"  - {{name: {name}, type: A, data: {address}}}\n")
    deployed.pulumi("up", "--yes", "--skip-preview", stack=PRIMARY_STACK)
    return deployed.serials()[zone]


def test_a_region_follows_the_primary_and_names_a_pod_that_cannot_transfer(
    deployed: Deployment,
) -> None:
    """After the primary stack moves a zone, the region's preview names its gate (the
    zone's primarySerial moved); with one region pod unable to reach the primaries over
    TCP (a firewall rule in that pod's network namespace: NOTIFY and SOA still pass, the
    transfer does not), `pulumi up` of the region fails naming that pod and no other;
    once the rule is gone, `pulumi up` ends ready."""
    project = deployed.engine.project
    region = "cluster-us-west-2"
    namespace = deployed.namespaces[region]
    primary_ip = _services(project, PRIMARY_STACK)["primary-dns"]
    stack_file = project / f"Pulumi.{region}.yaml"
    original = stack_file.read_text()
    doc = yaml.safe_load(original)
    doc["config"]["bind9-topology:gate"]["deadlineSeconds"] = 20  # the failing up's bound
    stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    deployed.pulumi("up", "--yes", "--skip-preview", stack=region)  # the new deadline

    blocked = next(p for p in deployed.cluster.pods(namespace, "instance=secondary-dns-usw2-a")
                   if _ready(p))
    others = [p["metadata"]["name"] for p in deployed.cluster.pods(namespace)
              if p["metadata"]["name"] != blocked["metadata"]["name"]]
    inside = ["nsenter", "-t", str(_host_pid(deployed, blocked)), "-n", "iptables"]
    rule = ["OUTPUT", "-p", "tcp", "-d", primary_ip, "--dport", "53", "-j", "REJECT"]
    subprocess.run([*inside, "-I", *rule], check=True, capture_output=True, timeout=30)
    try:
        moved = _add_record_and_up(deployed, "example.org", "region-follow", "192.0.2.78")

        preview = json.loads(deployed.pulumi("preview", "--json", stack=region).stdout)
        gate = next(s for s in preview["steps"] if s["urn"].endswith("-transfer-gate"))
        assert gate["op"] == "update", gate["op"]
        new_zones = gate["newState"]["inputs"]["zones"]
        assert new_zones["example.org"]["primarySerial"] == moved, new_zones["example.org"]
        assert gate["oldState"]["inputs"]["zones"]["example.org"]["primarySerial"] != moved

        failed = deployed.pulumi("up", "--yes", "--skip-preview", stack=region, check=False)
        output = failed.stdout + failed.stderr
        assert failed.returncode != 0, output[-3000:]
        assert blocked["metadata"]["name"] in output, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        lagging = output.split("lagging:", 1)[1] if "lagging:" in output else output
        assert not [name for name in others if name in lagging], output[-3000:]
    finally:
        subprocess.run([*inside, "-D", *rule], check=False, capture_output=True, timeout=30)
        # The pod goes too: a fresh one transfers every zone before it is Ready.
        deployed.cluster.kubectl("delete", "pod", "-n", namespace, blocked["metadata"]["name"],
                                 "--wait=true", "--timeout=120s", check=False)
    deployed.cluster.kubectl("rollout", "status", "-n", namespace,
                             "deployment/secondary-dns-usw2-a", "--timeout=180s")
    deployed.pulumi("up", "--yes", "--skip-preview", stack=region)
    status = _gate_outputs(deployed, region)["example.org"]
    assert status["ready"] is True and status["servedSerial"] == moved, status
    stack_file.write_text(original)
    deployed.pulumi("up", "--yes", "--skip-preview", stack=region)
    deployed.pulumi("preview", "--expect-no-changes", stack=region)


def _partition(block_a: str, veth_a: str, block_b: str, veth_b: str) -> list[list[str]]:
    """Host-bridge rules that drop every frame between two regions' networks (both ways)."""
    return [["FORWARD", "-m", "physdev", "--physdev-in", veth_a, "-d", block_b, "-j", "DROP"],
            ["FORWARD", "-m", "physdev", "--physdev-in", veth_b, "-d", block_a, "-j", "DROP"]]


def test_a_partitioned_region_fails_naming_its_pods_and_heals(deployed: Deployment) -> None:
    """The network between us-west-2 and the primaries' region drops everything (rules on
    the host bridge that joins the clusters). A record change: the primary stack's `up`
    ends ready, us-west-2's `up` fails within its deadline naming each of its pods and
    why, eu-west-1's `up` ends ready at the new serial (no other region affected). Once
    the link heals, `pulumi up` of us-west-2 ends ready at that serial."""
    project = deployed.engine.project
    region, other = "cluster-us-west-2", "cluster-eu-west-1"
    stack_file = project / f"Pulumi.{region}.yaml"
    original = stack_file.read_text()
    doc = yaml.safe_load(original)
    deadline_s = 20
    doc["config"]["bind9-topology:gate"]["deadlineSeconds"] = deadline_s
    stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    deployed.pulumi("up", "--yes", "--skip-preview", stack=region)  # the new deadline
    pods = [p["metadata"]["name"] for p in deployed.cluster.pods(deployed.namespaces[region])]
    rules = _partition("10.250.0.64/26", "b9tv1", "10.250.0.128/26", "b9tv2")
    for rule in rules:
        subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True, timeout=30)
    try:
        moved = _add_record_and_up(deployed, "example.com", "partition", "192.0.2.79")

        started = time.monotonic()
        failed = deployed.pulumi("up", "--yes", "--skip-preview", stack=region, check=False)
        took = time.monotonic() - started
        output = failed.stdout + failed.stderr
        assert failed.returncode != 0, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        assert all(name in output for name in pods), (pods, output[-4000:])
        assert "fix:" in output, output[-3000:]
        print(f"pulumi up of the partitioned region failed after {took:.1f}s")
        assert took < deadline_s + 120, took  # the deadline, plus the engine's own work

        deployed.pulumi("up", "--yes", "--skip-preview", stack=other)
        status = _gate_outputs(deployed, other)["example.com"]
        assert status["ready"] is True and status["servedSerial"] == moved, status
    finally:
        for rule in rules:
            subprocess.run(["iptables", "-D", *rule], check=False, capture_output=True,
                           timeout=30)
    deployed.pulumi("up", "--yes", "--skip-preview", stack=region)
    status = _gate_outputs(deployed, region)["example.com"]
    assert status["ready"] is True and status["servedSerial"] == moved, status
    stack_file.write_text(original)
    deployed.pulumi("up", "--yes", "--skip-preview", stack=region)


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


def test_the_exporter_sidecar_serves_named_statistics(deployed: Deployment) -> None:
    """metrics.enabled on cluster-eu-west-1: every pod's exporter sidecar (Debian's
    bind_exporter) reads named's statistics channel on the pod's loopback and serves them
    on :9119, reachable through the NetworkPolicy; named's own channel stays private."""
    import urllib.request

    namespace = deployed.namespaces["cluster-eu-west-1"]
    pods = deployed.cluster.pods(namespace, "instance=secondary-dns-euw1")
    assert len(pods) == 3
    for pod in pods:
        names = [c["name"] for c in pod["spec"]["containers"]]
        assert names == ["bind9", "exporter", "agent"], names
        assert all(s["ready"] for s in pod["status"]["containerStatuses"]), pod["status"]
        ip = pod["status"]["podIP"]
        with urllib.request.urlopen(f"http://{ip}:9119/metrics", timeout=10) as reply:
            text = reply.read().decode()
        assert "\nbind_up 1" in text, text[:2000]
        for zone in ZONES:
            assert f'zone_name="{zone}"' in text, (zone, text[:3000])
        # named's statistics channel listens on the pod's 127.0.0.1 only
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://{ip}:8053/json", timeout=3)


def _dnskey_tags(ip: str, zone: str) -> set[int]:
    """The key tags of the DNSKEYs a pod serves for *zone* (over TCP, straight to the pod)."""
    import dns.dnssec

    answer = dns.query.tcp(dns.message.make_query(zone, dns.rdatatype.DNSKEY, want_dnssec=True),
                           ip, port=53, timeout=3)
    rrset = answer.find_rrset(answer.answer, dns.name.from_text(zone), dns.rdataclass.IN,
                              dns.rdatatype.DNSKEY)
    return {dns.dnssec.key_id(k) for k in rrset}


def test_signed_zone_keeps_its_keys_across_a_primary_pod_restart(deployed: Deployment) -> None:
    """dnssec on example.net: `pulumi up` signs it in the primary's pods with keys from the
    Secret, and the gate validates DNSKEY and RRSIG on every pod and every secondary against
    the DS output. A deleted primary pod comes back with the same keys (never regenerated),
    and a later change is gated against the same DS."""
    project = deployed.engine.project
    stack_file = project / f"Pulumi.{PRIMARY_STACK}.yaml"
    doc = yaml.safe_load(stack_file.read_text())
    zone = next(z for z in doc["config"]["bind9-topology:zones"]
                if z["zoneName"] == "example.net" and z["type"] == "primary")
    zone["dnssec"] = {"policy": "signed"}
    stack_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    deployed.pulumi("up", "--yes", "--skip-preview", stack=PRIMARY_STACK)
    signed = deployed.outputs(PRIMARY_STACK)["dnssec"]["example.net"]
    assert signed["ds"], signed
    tags = {int(signed["keyTags"]["ksk"]), int(signed["keyTags"]["zsk"])}
    assert deployed.outputs(PRIMARY_STACK)["zones"]["example-net"]["ready"] is True

    namespace = deployed.namespaces[PRIMARY_STACK]

    def serving() -> list[dict[str, Any]]:  # Ready pods not on their way out (the old
        return [p for p in deployed.cluster.pods(namespace, "instance=primary-dns")  # RS)
                if _ready(p) and not p["metadata"].get("deletionTimestamp")]

    pods = serving()
    assert pods and all(_dnskey_tags(p["status"]["podIP"], "example.net") == tags for p in pods)

    victim = pods[0]["metadata"]["name"]
    deployed.cluster.kubectl("delete", "pod", "-n", namespace, victim, "--wait=false")
    deadline = time.monotonic() + 180
    fresh: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not fresh:
        fresh = [p for p in serving()
                 if p["metadata"]["name"] not in {q["metadata"]["name"] for q in pods}]
        time.sleep(0.5)
    assert fresh, "no replacement primary pod became Ready within 180 s"
    assert _dnskey_tags(fresh[0]["status"]["podIP"], "example.net") == tags

    # A record change re-runs the zone's gate against the DS in state: it passes only if
    # every pod (the replacement too) and every secondary serves signatures of these keys.
    records = project / "configs" / "zones" / "example.net.yaml"
    records.write_text(records.read_text()
                       + "  - {name: signed-check, type: A, data: 192.0.2.77}\n")
    deployed.pulumi("up", "--yes", "--skip-preview", stack=PRIMARY_STACK)
    after = deployed.outputs(PRIMARY_STACK)
    assert after["dnssec"]["example.net"]["ds"] == signed["ds"]
    assert after["zones"]["example-net"]["ready"] is True


def test_deploy_brings_the_fleet_up_to_date_and_previews_no_change(
    deployed: Deployment,
) -> None:
    """`python -m components deploy` (Automation API) on the three cluster stacks: `--up`
    in order (the primary stack, then the regions that transfer from it; the regions' gates
    follow what the primaries serve after the record changes above), then `--preview
    --json`: nothing to create, update or delete, no serial moves, no policy violation."""
    stacks = "cluster,cluster-us-west-2,cluster-eu-west-1"

    def deploy(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "components", "deploy", *args],
                              cwd=deployed.engine.project, env=deployed.engine.env,
                              capture_output=True, text=True, timeout=900)

    up = deploy("--up", "--stacks", stacks)
    assert up.returncode == 0, up.stdout[-6000:] + up.stderr[-4000:]
    assert "deploy --up: cluster -> cluster-eu-west-1 -> cluster-us-west-2" in up.stdout
    for stack in STACKS:
        assert f"{stack}: done in " in up.stdout, up.stdout[-6000:]
    assert "Traceback" not in up.stdout + up.stderr

    preview = deploy("--preview", "--stacks", stacks, "--json")
    assert preview.returncode == 0, preview.stdout[-6000:] + preview.stderr[-4000:]
    doc = json.loads(preview.stdout)
    assert doc["ok"] is True, doc
    assert doc["order"] == ["cluster", "cluster-eu-west-1", "cluster-us-west-2"], doc
    for stack in doc["stacks"]:
        counts = (stack["creates"], stack["updates"], stack["deletes"], stack["replaces"])
        assert counts == (0, 0, 0, 0), stack
        assert stack["changes"] == [] and stack["serialMoves"] == {}, stack
        assert stack["policyViolations"] == [] and stack["error"] is None, stack


def _scrape_series(text: str, namespace: str, pod: str, names: set[str]) -> list[dict[str, str]]:
    """The samples of *names* in a /metrics text, as promtool input series of one pod (the
    labels Prometheus adds: namespace, pod, job), each held for 30 minutes."""
    import re

    out = [{"series": f'up{{namespace="{namespace}", pod="{pod}", job="bind9"}}',
            "values": "1x30"}]
    for line in text.splitlines():
        found = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if not found or found[1] not in names:
            continue
        labels = f"{found[2]}, " if found[2] else ""
        value = float(found[3])
        out.append({"series": f'{found[1]}{{{labels}namespace="{namespace}", pod="{pod}", '
                              f'job="bind9"}}', "values": f"{value:.0f}x30"})
    return out


def test_the_alert_rules_read_what_the_exporter_serves(deployed: Deployment,
                                                       tmp_path: Path) -> None:
    """metrics.alerts on cluster-eu-west-1 (turned on here, in memory): every metric name the
    rules and the dashboard read is in every pod's real scrape of :9119, and promtool, fed
    those very samples, fires nothing; with one zone's serial gone from one pod, it fires
    Bind9ZoneNotLoaded for that pod alone."""
    import shutil
    import urllib.request

    from bind9_topology.config.topology import load_topology, read_stack_file
    from bind9_topology.render import alerts

    stack = "cluster-eu-west-1"
    raw = dict(read_stack_file(deployed.engine.project, stack))
    raw["metrics"] = {**raw["metrics"], "alerts": True}
    topo = load_topology(raw, stack=stack, project_dir=deployed.engine.project,
                         tsig_secret=deployed.secret)
    rules = alerts.rules(topo.spec)
    exprs = [r["expr"] for r in rules["groups"][0]["rules"]]
    exprs += [t["expr"] for p in alerts.dashboard(topo.spec)["panels"] for t in p["targets"]]
    used = set().union(*(alerts.metric_names(e) for e in exprs))
    assert used == set(alerts.EXPORTER_METRICS)

    namespace = deployed.namespaces[stack]
    pods = deployed.cluster.pods(namespace, "app.kubernetes.io/name=bind9")
    assert pods
    series: list[dict[str, str]] = []
    for pod in pods:
        ip = pod["status"]["podIP"]
        with urllib.request.urlopen(f"http://{ip}:9119/metrics", timeout=10) as reply:
            text = reply.read().decode()
        served = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
                  if line and not line.startswith("#")}
        assert used <= served, (pod["metadata"]["name"], sorted(used - served))
        series += _scrape_series(text, namespace, pod["metadata"]["name"], used)

    if shutil.which("promtool") is None:
        pytest.skip("promtool missing (scripts/install-deps.sh): names checked, rules not run")
    for rule in rules["groups"][0]["rules"]:
        rule.pop("annotations")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    names = [r["alert"] for r in rules["groups"][0]["rules"]]
    victim = pods[0]["metadata"]["name"]
    gone = next(s for s in series if s["series"].startswith("bind_zone_serial{")
                and f'pod="{victim}"' in s["series"])
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": series,
         "alert_rule_test": [{"eval_time": "25m", "alertname": n, "exp_alerts": []}
                             for n in names]},
        {"interval": "1m", "input_series": [dict(s) for s in series if s is not gone],
         "alert_rule_test": [{"eval_time": "25m", "alertname": "Bind9ZoneNotLoaded",
                              "exp_alerts": [{"exp_labels": {
                                  "severity": "critical", "namespace": namespace,
                                  "pod": victim}}]}]},
    ]}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = subprocess.run(["promtool", "test", "rules", "tests.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_destroy_leaves_no_object_in_the_namespaces(deployed: Deployment) -> None:
    for stack in reversed(STACKS):
        deployed.pulumi("destroy", "--yes", "--skip-preview", stack=stack)
    deployed.destroyed = True
    kinds = ("deployments,replicasets,pods,services,configmaps,secrets,networkpolicies,"
             "poddisruptionbudgets,serviceaccounts,roles,rolebindings")
    deadline = time.monotonic() + 120
    left: list[str] = []
    while time.monotonic() < deadline:
        left = []
        for namespace in deployed.namespaces.values():
            out = deployed.cluster.kubectl("get", kinds, "-n", namespace, "-o", "json")
            for item in json.loads(out.stdout)["items"]:
                name = item["metadata"]["name"]
                if (item["kind"], name) in {("ConfigMap", "kube-root-ca.crt"),
                                            ("ServiceAccount", "default")}:
                    continue  # every namespace gets them from the cluster
                left.append(f"{namespace}/{item['kind']}/{name}")
        if not left:
            break
        time.sleep(1)
    assert not left, left
