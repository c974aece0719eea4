"""The ComponentResources under pulumi.runtime.set_mocks: what every stack registers.

Runs the very code `pulumi up` runs (components.preview.run_components) and
checks names, counts, parents, pod labels, image, ports, rollout and security
settings, the config checksum, ConfigMap sharding, NetworkPolicy rules, and
that the TSIG secret only ever travels as a Pulumi secret.

The dynamic resources (zone serials, transfer gates)
are tolerated: counts below are of Kubernetes objects and components only.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bind9_topology.config.topology import Topology, list_stacks, load_topology, read_stack_file
from bind9_topology.render.bind_files import ZONE_DIR, render_instance
from bind9_topology.render.manifests import ANNOTATION_CHECKSUM
from bind9_topology.render.plan import PLACEHOLDER_SERIAL
from components.preview import (
    REDACTED,
    SECRET_SIG,
    CaptureMocks,
    Registered,
    kubernetes_objects,
    redact,
    run_components,
)

pytestmark = pytest.mark.unit

PROJECT_DIR = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024

REGION = "bind9-topology:index:Bind9Region"
INSTANCE = "bind9-topology:index:Bind9Instance"
SERIAL = "pulumi-python:dynamic/bind9:ZoneSerials"
GATE = "pulumi-python:dynamic/bind9:TransferGate"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
SECRET = "kubernetes:core/v1:Secret"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
ACCOUNT = "kubernetes:core/v1:ServiceAccount"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"

#: What each stack must deploy: instance -> (role, replicas, BIND version, zone ConfigMaps),
#: and the primary zones (in the stack's ZoneSerials). Written out by hand so a change
#: shows up here.
EXPECTED: dict[str, dict[str, Any]] = {
    "prod": {
        "instances": {
            "primary-dns": ("primary", 2, "9.18", 1),
            "secondary-dns": ("secondary", 2, "9.18", 0),
        },
        "primary": {"example-com", "example-org", "example-net"},
    },
    "prod-us-west-2": {
        "instances": {
            "secondary-dns-usw2-a": ("secondary", 2, "9.18", 0),
            "secondary-dns-usw2-b": ("secondary", 2, "9.18", 0),
        },
        "primary": set(),
    },
    "prod-eu-west-1": {
        "instances": {"secondary-dns-euw1": ("secondary", 3, "9.20", 0)},
        "primary": set(),
    },
}


class RawCaptureMocks(CaptureMocks):
    """CaptureMocks that also keeps every input as registered, secrets unredacted."""

    raw: list[tuple[str, str, dict[str, Any]]]

    def new_resource(self, args: Any) -> tuple[str, dict]:
        if not hasattr(self, "raw"):
            self.raw = []
        self.raw.append((args.typ, args.name, copy.deepcopy(dict(args.inputs))))
        return super().new_resource(args)


def new_secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def run(topology: Topology) -> RawCaptureMocks:
    mocks = RawCaptureMocks(stack=topology.stack)
    result = run_components(topology, mocks=mocks)
    assert result is mocks
    return mocks


def load(raw: dict[str, Any], stack: str, secret: str) -> Topology:
    return load_topology(raw, stack=stack, project_dir=PROJECT_DIR, tsig_secret=secret)


@pytest.fixture(scope="module")
def stack_secret() -> str:
    return new_secret()


#: Every stack file of the project (others, e.g. `local`, get the generic checks).
STACKS = list_stacks(PROJECT_DIR)
PROVIDER_PREFIX = "pulumi:providers:"


@pytest.fixture(scope="module")
def runs(stack_secret: str) -> dict[str, tuple[Topology, RawCaptureMocks]]:
    out = {}
    for stack in STACKS:
        topo = load(read_stack_file(PROJECT_DIR, stack), stack, stack_secret)
        out[stack] = (topo, run(topo))
    return out


def of_type(mocks: CaptureMocks, typ: str) -> list[Registered]:
    return [r for r in mocks.resources if r.type == typ]


def one(mocks: CaptureMocks, typ: str, name: str) -> Registered:
    found = [r for r in mocks.resources if r.type == typ and r.name == name]
    assert len(found) == 1, f"{typ} {name}: registered {len(found)} times"
    return found[0]


def parent_of(res: Registered) -> tuple[str, str]:
    """(type, name) of the parent, from the parent URN the monitor was given."""
    assert res.parent, f"{res.type} {res.name} has no parent"
    _, _, qualified_type, name = res.parent.split("::", 3)
    return qualified_type.split("$")[-1], name


def deployment_of(mocks: CaptureMocks, instance: str) -> dict[str, Any]:
    return one(mocks, DEPLOYMENT, instance).inputs


def container_of(mocks: CaptureMocks, instance: str) -> dict[str, Any]:
    """The bind9 container (the exporter sidecar, with metrics.enabled, comes after it)."""
    containers = deployment_of(mocks, instance)["spec"]["template"]["spec"]["containers"]
    names = [c["name"] for c in containers if c["name"] != "agent"]
    assert names in (["bind9"], ["bind9", "exporter"])
    return containers[0]


@pytest.mark.parametrize("stack", STACKS)
def test_agent_sidecar_rbac_and_policy(runs, stack: str) -> None:
    """The agent runs beside named with a namespaced Role of its role's needs, the API
    token in its container alone; secondaries admit its NOTIFY relays from their own pods;
    a primary's named reads a writable zone copy made at start."""
    topo, mocks = runs[stack]
    assert topo.spec.agent.enabled  # on by default in every example stack
    for inst in topo.spec.instances:
        pod = deployment_of(mocks, inst.name)["spec"]["template"]["spec"]
        agent = next(c for c in pod["containers"] if c["name"] == "agent")
        assert agent["command"][:3] == ["python3", "/etc/bind/agent.py", inst.role]
        assert agent["securityContext"] == pod["containers"][0]["securityContext"]
        assert pod["serviceAccountName"] == f"{inst.name}-agent"
        assert pod["automountServiceAccountToken"] is False
        api_mounts = [(c["name"], m["mountPath"]) for c in pod["containers"]
                      for m in c.get("volumeMounts", []) if m["name"] == "agent-api"]
        assert api_mounts == [("agent", "/var/run/secrets/kubernetes.io/serviceaccount")]
        role = one(mocks, ROLE, f"{inst.name}-agent-role").inputs
        assert role["metadata"]["namespace"] == topo.spec.namespace
        want = ({"pods": ["get", "list"]} if inst.role == "secondary"
                else {"configmaps": ["get", "list", "watch"]})
        assert {r["resources"][0]: r["verbs"] for r in role["rules"]} == want
        binding = one(mocks, BINDING, f"{inst.name}-agent-binding").inputs
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{inst.name}-agent",
                                        "namespace": topo.spec.namespace}]
        assert binding["roleRef"]["name"] == f"{inst.name}-agent"
        named = pod["containers"][0]
        zones_mount = next(m for m in named["volumeMounts"] if m["name"] == "zones")
        if inst.role == "primary":
            inits = {c["name"]: c for c in pod.get("initContainers", [])}
            assert "cp -L /var/lib/bind/zones-src/*" in inits["zones"]["command"][-1]
            assert zones_mount["readOnly"] is True
            assert "--zone-maps" in agent["command"]
        else:
            relay = {"from": [{"podSelector": {"matchLabels": {"instance": inst.name}}}],
                     "ports": [{"protocol": "UDP", "port": 53}]}
            assert relay in one(mocks, NETPOL, f"{inst.name}-netpol").inputs["spec"]["ingress"]


def test_agent_off_leaves_the_pod_as_before(minimal_raw, tsig_secret) -> None:
    minimal_raw["agent"] = {"enabled": False}
    mocks = run(load(minimal_raw, "minimal", tsig_secret))
    assert not of_type(mocks, ROLE) and not of_type(mocks, ACCOUNT)
    for name in ("primary-dns", "secondary-dns"):
        pod = deployment_of(mocks, name)["spec"]["template"]["spec"]
        assert [c["name"] for c in pod["containers"]] == ["bind9"]
        assert "serviceAccountName" not in pod
        # A secondary still waits for a path to its primaries; nothing else runs first.
        assert [c["name"] for c in pod.get("initContainers", [])] == (
            ["wait-primaries"] if name == "secondary-dns" else [])


# --------------------------------------------------------------------------- names, counts


def test_the_region_stacks_exist() -> None:
    assert set(EXPECTED) <= set(STACKS)


@pytest.mark.parametrize("stack", STACKS)
def test_counts_follow_the_spec(runs, stack: str) -> None:
    """For every stack, the objects per instance follow from its spec."""
    topo, mocks = runs[stack]
    want: Counter[str] = Counter({REGION: 1})
    for inst in topo.spec.instances:
        zone_maps = [r for r in of_type(mocks, CONFIG_MAP)
                     if r.name.startswith(f"{inst.name}-zones-")]
        if inst.role == "primary":
            assert zone_maps, f"{inst.name}: a primary without zone ConfigMaps"
        else:
            assert not zone_maps, f"{inst.name}: a secondary with zone ConfigMaps"
        agent = int(topo.spec.agent.enabled)
        want.update({INSTANCE: 1, CONFIG_MAP: 1 + len(zone_maps), SECRET: 1, DEPLOYMENT: 1,
                     SERVICE: 1, NETPOL: 1, PDB: int(inst.replicas > 1),
                     ACCOUNT: agent, ROLE: agent, BINDING: agent})
    # one ZoneSerials per stack with primary zones, however many zones
    want[SERIAL] = int(any(z.type == "primary" for z in topo.spec.zones))
    # one gate per stack, whatever the number of zones
    want[GATE] = int(topo.spec.gate.enabled and bool(topo.spec.zones))
    got = Counter(r.type for r in mocks.resources if not r.type.startswith(PROVIDER_PREFIX))
    assert got == +want


@pytest.mark.parametrize("stack", sorted(EXPECTED))
def test_names_and_counts(runs, stack: str) -> None:
    _, mocks = runs[stack]
    expected = EXPECTED[stack]
    want: Counter[tuple[str, str]] = Counter({(REGION, stack): 1})
    if expected["primary"]:
        want[(SERIAL, f"{stack}-zone-serials")] = 1
    want[(GATE, f"{stack}-transfer-gate")] = 1
    for name, (role, replicas, _, zone_maps) in expected["instances"].items():
        want[(INSTANCE, name)] += 1
        want[(CONFIG_MAP, f"{name}-config")] += 1
        want.update((CONFIG_MAP, f"{name}-zones-{i}") for i in range(zone_maps))
        want[(SECRET, f"{name}-tsig")] += 1
        want[(DEPLOYMENT, name)] += 1
        want[(SERVICE, f"{name}-svc")] += 1
        want[(NETPOL, f"{name}-netpol")] += 1
        if replicas > 1:
            want[(PDB, f"{name}-pdb")] += 1
        want[(ACCOUNT, f"{name}-agent-sa")] += 1
        want[(ROLE, f"{name}-agent-role")] += 1
        want[(BINDING, f"{name}-agent-binding")] += 1
        assert (role == "primary") == (zone_maps > 0)
    got = Counter((r.type, r.name) for r in mocks.resources
                  if not r.type.startswith(PROVIDER_PREFIX))
    assert got == want
    serial_zones = {z.replace(".", "-") for r in of_type(mocks, SERIAL) for z in r.inputs["zones"]}
    assert serial_zones == expected["primary"]

    # Kubernetes names: the Deployment is named after the instance; one object per kind/name.
    objects = kubernetes_objects(mocks)
    keys = [(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), "two objects of one kind share a name"
    for name in expected["instances"]:
        assert deployment_of(mocks, name)["metadata"]["name"] == name


def test_pdb_only_with_more_than_one_replica(minimal_raw, tsig_secret) -> None:
    minimal_raw["instances"][1]["replicas"] = 3  # primary keeps replicas 1
    mocks = run(load(minimal_raw, "minimal", tsig_secret))
    assert [r.name for r in of_type(mocks, PDB)] == ["secondary-dns-pdb"]
    pdb = one(mocks, PDB, "secondary-dns-pdb").inputs["spec"]
    assert pdb["selector"] == {"matchLabels": {"instance": "secondary-dns"}}


# --------------------------------------------------------------------------- parents


@pytest.mark.parametrize("stack", STACKS)
def test_parents(runs, stack: str) -> None:
    _, mocks = runs[stack]
    region = one(mocks, REGION, stack)
    assert parent_of(region)[0] == "pulumi:pulumi:Stack"
    for r in mocks.resources:
        if r.type == INSTANCE:
            assert parent_of(r) == (REGION, stack), r.name
            assert r.custom is False
    instance_children = {CONFIG_MAP, SECRET, DEPLOYMENT, SERVICE, NETPOL, PDB,
                         ACCOUNT, ROLE, BINDING}
    k8s = [r for r in mocks.resources if r.type.startswith("kubernetes:")]
    assert k8s and {r.type for r in k8s} <= instance_children
    for r in k8s:
        assert r.custom is True
        ptype, pname = parent_of(r)
        assert ptype == INSTANCE, f"{r.type} {r.name} is parented by {ptype}"
        assert r.name == pname or r.name.startswith(pname + "-"), (r.name, pname)
        assert r.inputs["metadata"]["labels"]["instance"] == pname
    # serials, the gate: under the region
    for r in [*of_type(mocks, SERIAL), *of_type(mocks, GATE)]:
        assert parent_of(r) == (REGION, stack), r.name


# --------------------------------------------------------------------------- pods


@pytest.mark.parametrize("stack", STACKS)
def test_pod_template(runs, stack: str) -> None:
    topo, mocks = runs[stack]
    for inst in topo.spec.instances:
        name, role, replicas, version = inst.name, inst.role, inst.replicas, inst.version
        if stack in EXPECTED:
            assert EXPECTED[stack]["instances"][name][:3] == (role, replicas, version)
        dep = deployment_of(mocks, name)
        spec = dep["spec"]
        assert spec["replicas"] == replicas
        assert spec["selector"] == {"matchLabels": {"instance": name}}
        labels = spec["template"]["metadata"]["labels"]
        assert labels["instance"] == name
        assert labels["dns-role"] == role
        assert labels["region"] == topo.spec.region
        assert labels["environment"] == topo.spec.environment
        if stack in EXPECTED:
            assert labels["environment"] == "production"
        assert spec["strategy"]["type"] == "RollingUpdate"
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

        c = container_of(mocks, name)
        inst = next(i for i in topo.spec.instances if i.name == name)
        assert c["image"] == (inst.image or f"internetsystemsconsortium/bind9:{version}")
        ports = {(int(p["containerPort"]), p["protocol"]) for p in c["ports"]}
        assert ports == {(53, "UDP"), (53, "TCP")}
        assert c["readinessProbe"] and c["livenessProbe"]
        assert c["lifecycle"]["preStop"]

        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]  # no capability: port 53 through the sysctl
        pod_sc = spec["template"]["spec"]["securityContext"]
        assert pod_sc["runAsNonRoot"] is True
        assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"} in pod_sc["sysctls"]

        annotations = spec["template"]["metadata"]["annotations"]
        assert len(annotations[ANNOTATION_CHECKSUM]) == 64

        svc = one(mocks, SERVICE, f"{name}-svc").inputs["spec"]
        metrics = topo.spec.metrics_for(inst)
        extra = {(metrics.port, "TCP")} if metrics.enabled else set()
        assert {(int(p["port"]), p["protocol"]) for p in svc["ports"]} == ports | extra
        assert svc["selector"] == {"instance": name}


@pytest.mark.parametrize("stack", STACKS)
def test_checksum_and_config_maps_match_the_rendering(runs, stack: str) -> None:
    """The ConfigMaps hold the rendering with the serials from state; the annotation is the
    checksum of the content (the rendering with the placeholder serial), known before them."""
    topo, mocks = runs[stack]
    for inst in topo.spec.instances:
        rendered = render_instance(topo.spec, inst, topo.contents, mocks.serials)
        content = render_instance(
            topo.spec, inst, topo.contents, dict.fromkeys(mocks.serials, PLACEHOLDER_SERIAL)
        )
        annotations = deployment_of(mocks, inst.name)["spec"]["template"]["metadata"]
        assert annotations["annotations"][ANNOTATION_CHECKSUM] == content.checksum
        # The agent applies zone content live: then only the config rolls the pods.
        assert rendered.live_zones == (topo.spec.agent.enabled and inst.role == "primary")
        assert (not rendered.zone_files or rendered.live_zones
                or rendered.checksum != content.checksum)
        data: dict[str, str] = {}
        for cm in of_type(mocks, CONFIG_MAP):
            if parent_of(cm)[1] == inst.name:
                data.update(cm.inputs["data"])
        files = {p.rsplit("/", 1)[-1]: d.decode()
                 for p, d in {**rendered.config_files, **rendered.zone_files}.items()}
        assert data == files


def _checksums(topo: Topology) -> dict[str, str]:
    mocks = run(topo)
    return {
        i.name: deployment_of(mocks, i.name)["spec"]["template"]["metadata"]["annotations"][
            ANNOTATION_CHECKSUM
        ]
        for i in topo.spec.instances
    }


def test_checksum_moves_with_a_record_and_only_then(minimal_raw) -> None:
    base = _checksums(load(minimal_raw, "minimal", new_secret()))
    # Same config, another run and another TSIG secret: nothing rolls.
    assert _checksums(load(copy.deepcopy(minimal_raw), "minimal", new_secret())) == base

    changed = copy.deepcopy(minimal_raw)
    changed["zones"][0]["records"][1]["data"] = "10.0.1.11"
    # With the agent (the default) the primary's pods take the record live: nothing rolls.
    assert _checksums(load(changed, "minimal", new_secret())) == base
    without_agent = copy.deepcopy(minimal_raw)
    without_agent["agent"] = {"enabled": False}
    changed["agent"] = {"enabled": False}
    base = _checksums(load(without_agent, "minimal", new_secret()))
    after = _checksums(load(changed, "minimal", new_secret()))
    assert after["primary-dns"] != base["primary-dns"]
    # The secondary's mounted files (named.conf, ready.sh) did not change: it does not roll.
    assert after["secondary-dns"] == base["secondary-dns"]
    # A change of named.conf rolls the pods, agent or not.
    added = copy.deepcopy(minimal_raw)
    added["zones"][0]["alsoNotify"] = ["10.0.9.9"]
    assert _checksums(load(added, "minimal", new_secret()))["primary-dns"] != (
        _checksums(load(minimal_raw, "minimal", new_secret()))["primary-dns"])


# --------------------------------------------------------------------------- secrets


def _strip_secrets(value: Any) -> tuple[Any, list[Any]]:
    """The value with every secret-marked part removed, and those parts."""
    found: list[Any] = []

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            if SECRET_SIG in v:
                found.append(v.get("value"))
                return None
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(value), found


@pytest.mark.parametrize("stack", STACKS)
def test_tsig_secret_travels_only_as_a_pulumi_secret(runs, stack_secret: str, stack: str) -> None:
    topo, mocks = runs[stack]
    assert topo.tsig_secret == stack_secret
    raw = mocks.raw
    assert len(raw) == len(mocks.resources)

    # Nowhere in clear: not in any input of any resource, ConfigMaps included.
    clear, secret_parts = _strip_secrets([inputs for _, _, inputs in raw])
    assert stack_secret not in json.dumps(clear)
    for typ, name, inputs in raw:
        if typ == CONFIG_MAP:
            assert stack_secret not in json.dumps(inputs), name
        # A dynamic provider travels pickled (base64) in `__provider`: no secret in there either.
        blob = inputs.get("__provider")
        if isinstance(blob, str):
            assert stack_secret.encode() not in base64.b64decode(blob), f"{name}: __provider"
    # It does reach the Secrets, marked secret.
    assert any(stack_secret in json.dumps(part) for part in secret_parts)
    # What preview records (and `render` writes) is redacted, the shape kept.
    assert stack_secret not in json.dumps([r.inputs for r in mocks.resources])
    assert stack_secret not in json.dumps(kubernetes_objects(mocks))
    for typ, name, inputs in raw:
        if typ != SECRET:
            continue
        marked = inputs["stringData"]
        assert isinstance(marked, dict) and SECRET_SIG in marked, f"{name}: stringData in clear"
        assert stack_secret in json.dumps(marked["value"])
        redacted = redact(inputs)["stringData"]
        assert redacted == {k: REDACTED for k in marked["value"]}
        assert "data" not in inputs


# --------------------------------------------------------------------------- sharding


def test_a_big_zone_is_sharded_across_config_maps(big_topology: Topology) -> None:
    mocks = run(big_topology)
    zone_maps = sorted(
        (r for r in of_type(mocks, CONFIG_MAP) if r.name.startswith("primary-dns-zones-")),
        key=lambda r: r.name,
    )
    assert len(zone_maps) >= 2, [r.name for r in zone_maps]
    for cm in zone_maps:
        assert len(json.dumps(cm.inputs).encode()) < MIB, cm.name
        data_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in cm.inputs["data"].items())
        assert data_bytes < MIB, cm.name

    inst = next(i for i in big_topology.spec.instances if i.name == "primary-dns")
    rendered = render_instance(big_topology.spec, inst, big_topology.contents, mocks.serials)
    keys = [k for cm in zone_maps for k in cm.inputs["data"]]
    assert len(keys) == len(set(keys)), "a zone file in two ConfigMaps"
    assert sorted(keys) == sorted(p.rsplit("/", 1)[-1] for p in rendered.zone_files)
    main = next(cm.inputs["data"]["db.big.example"] for cm in zone_maps
                if "db.big.example" in cm.inputs["data"])
    includes = [line.split()[1] for line in main.splitlines() if line.startswith("$INCLUDE")]
    assert len(includes) >= 2
    assert {p.rsplit("/", 1)[-1] for p in includes} <= set(keys)
    assert all(p.startswith(f"/{ZONE_DIR}/") for p in includes)

    volumes = deployment_of(mocks, "primary-dns")["spec"]["template"]["spec"]["volumes"]
    zones_volume = next(v for v in volumes if v["name"] == "zone-source")
    listed = [s["configMap"]["name"] for s in zones_volume["projected"]["sources"]]
    assert sorted(listed) == sorted(cm.inputs["metadata"]["name"] for cm in zone_maps)


# --------------------------------------------------------------------------- network policy


def _rules(mocks: CaptureMocks, name: str) -> list[dict[str, Any]]:
    pol = one(mocks, NETPOL, f"{name}-netpol").inputs
    assert pol["spec"]["podSelector"] == {"matchLabels": {"instance": name}}
    assert pol["spec"]["policyTypes"] == ["Ingress"]
    rules = pol["spec"]["ingress"]
    for rule in rules:
        assert rule.get("from"), "a rule without `from` admits every peer"
        assert rule.get("ports"), "a rule without `ports` admits every port"
    return rules


def _peers(rules: list[dict[str, Any]], protocol: str) -> list[dict[str, Any]]:
    return [
        peer
        for rule in rules
        if any(p["protocol"] == protocol and int(p["port"]) == 53 for p in rule["ports"])
        for peer in rule["from"]
    ]


def _key(peer: dict[str, Any]) -> str:
    return json.dumps(peer, sort_keys=True)


@pytest.mark.parametrize("stack", STACKS)
def test_network_policies(runs, stack: str) -> None:
    topo, mocks = runs[stack]
    for inst in topo.spec.instances:
        rules = _rules(mocks, inst.name)
        zones = topo.spec.zones_for(inst)
        if inst.role == "primary":
            notify = {h for z in zones for h, _ in z.notify_servers}
            assert notify, "a primary of the example stacks notifies someone"
            want = [{"podSelector": {"matchLabels": {"dns-role": "secondary"}}}] + [
                {"ipBlock": {"cidr": cidr}}
                for cidr in sorted({f"{ip}/32" for ip in notify} | set(inst.config.peerCidrs))
            ]
            # TCP 53 (transfers) only from secondaries, NOTIFY targets and peerCidrs (the
            # other regions' NAT addresses).
            assert sorted(map(_key, _peers(rules, "TCP"))) == sorted(map(_key, want))
            # Queries (UDP) from allowQuery.
            udp = {_key(p) for p in _peers(rules, "UDP")}
            for cidr in inst.config.allowQuery:
                assert _key({"ipBlock": {"cidr": cidr}}) in udp
        else:
            primaries = {
                h for z in zones if z.secondaryConfig for h, _ in z.secondaryConfig.servers
            }
            assert primaries
            # NOTIFY (UDP 53) from primaryServers, in a rule of its own.
            notify_rules = [
                r for r in rules
                if [p["protocol"] for p in r["ports"]] == ["UDP"]
                and any("ipBlock" in peer for peer in r["from"])
            ]
            assert len(notify_rules) == 1
            cidrs = {p["ipBlock"]["cidr"] for p in notify_rules[0]["from"] if "ipBlock" in p}
            assert cidrs == {f"{ip}/32" for ip in primaries} | set(inst.config.peerCidrs)
            # Queries over UDP and TCP from allowQuery.
            for proto in ("UDP", "TCP"):
                peers = {_key(p) for p in _peers(rules, proto)}
                for cidr in inst.config.allowQuery:
                    assert _key({"ipBlock": {"cidr": cidr}}) in peers


@pytest.mark.parametrize("stack", ["prod-us-west-2"])
def test_instances_of_a_region_roll_one_at_a_time(runs, stack: str) -> None:
    """Each instance after the first in a region waits for the previous one's Deployment."""
    topo, mocks = runs[stack]
    names = [i.name for i in topo.spec.instances]
    assert len(names) >= 2
    for before, after in itertools.pairwise(names):
        deps = mocks.dependencies[(INSTANCE, after)]
        assert any(d.endswith(f"{DEPLOYMENT}::{before}") for d in deps), (after, deps)
    assert not any(d.endswith(DEPLOYMENT) or f"{DEPLOYMENT}::" in d
                   for d in mocks.dependencies[(INSTANCE, names[0])])


def test_an_instance_not_running_yet_is_created_beside_the_previous_one() -> None:
    """The stagger holds where the instance's Deployment exists (or nobody can tell);
    an instance that does not run yet is created at once (ADR 21)."""
    import pulumi

    from components.region import _staggered

    class Previous:
        deployment = object()

    def resolved(names: frozenset[str] | None) -> Any:
        out = _staggered(pulumi.Output.from_input(names), "b", Previous())  # type: ignore[arg-type]
        future = out.future()
        assert future is not None
        return asyncio.get_event_loop().run_until_complete(future)

    assert resolved(None) == [Previous.deployment]
    assert resolved(frozenset({"a", "b"})) == [Previous.deployment]
    assert resolved(frozenset({"a"})) == []
    assert resolved(frozenset()) == []


def test_a_secondary_always_starts_after_its_stacks_primaries() -> None:
    """Whatever runs: a secondary started before its primary serves is refused and then
    skips that primary for 10 minutes (BIND's unreachable cache), so it waits for every
    primary of its stack; the stagger behind another secondary still follows ADR 21."""
    import pulumi

    from components.region import _rolls_after

    class Instance:
        def __init__(self) -> None:
            self.deployment = object()

    primary, other = Instance(), Instance()

    def resolved(deps: Any) -> Any:
        if not isinstance(deps, pulumi.Output):
            return deps
        future = deps.future()
        assert future is not None
        return asyncio.get_event_loop().run_until_complete(future)

    nothing = pulumi.Output.from_input(frozenset())
    assert resolved(_rolls_after(nothing, "s", primary, [primary])) == [  # type: ignore[list-item,arg-type]
        primary.deployment]
    assert resolved(_rolls_after(nothing, "s", other, [primary])) == [  # type: ignore[list-item,arg-type]
        primary.deployment]
    both = pulumi.Output.from_input(frozenset({"s"}))
    assert resolved(_rolls_after(both, "s", other, [primary])) == [  # type: ignore[list-item,arg-type]
        primary.deployment, other.deployment]
    assert _rolls_after(nothing, "p", None, []) is None


def test_secondaries_depend_on_the_stacks_primaries(runs: Any) -> None:
    """Under the mocks (nothing known to run): the prod stack's secondary instances wait
    for its primary instances' Deployments."""
    topo, mocks = runs["prod"]
    primaries = [i.name for i in topo.spec.instances if i.role == "primary"]
    secondaries = [i.name for i in topo.spec.instances if i.role == "secondary"]
    assert primaries and secondaries
    for name in secondaries:
        deps = mocks.dependencies[(INSTANCE, name)]
        for p in primaries:
            assert any(d.endswith(f"{DEPLOYMENT}::{p}") for d in deps), (name, deps)


def test_existing_deployments_is_none_when_the_api_cannot_be_asked(tmp_path: Path) -> None:
    """A kubeconfig naming a server nobody listens on: None (keep the stagger), bounded."""
    import time

    from bind9_topology.kube.forward import existing_deployments

    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "c", "user": "u"}}]}))
    started = time.monotonic()
    assert existing_deployments("dns", str(config), "nowhere", timeout=2.0) is None
    assert existing_deployments("dns", str(config), "no-such-context") is None
    assert time.monotonic() - started < 10


def test_one_zone_edit_changes_only_its_own_zone_config_map(
        tmp_path: Path, minimal_raw: dict[str, Any], tsig_secret: str) -> None:
    """Six zones of about 450 KB: several zone ConfigMaps. One record of one zone is
    edited (same length, so no file moves between ConfigMaps): that zone's serial moves,
    and the one ConfigMap that holds its file is the only one whose data changes (each
    ConfigMap takes its zones' serials from the stack's one serial map)."""
    from bind9_topology.dns.serials import SerialStore

    raw = copy.deepcopy(minimal_raw)
    for n in range(6):
        raw["zones"].append({
            "zoneName": f"big{n}.example", "type": "primary",
            "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
            "soaRecord": {"primaryNs": "ns1.example.com.", "adminEmail": "hostmaster@example.com"},
            "records": [{"name": "@", "type": "NS", "data": "ns1.example.com."},
                        *({"name": f"host-{i:05d}", "type": "TXT", "data": f'"{"x" * 40} {i:05d}"'}
                          for i in range(6000))]})
    store = SerialStore(tmp_path / "serials.json")

    from bind9_topology.pod.agent import configmap_files

    def zone_maps(raw: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
        topo = load_topology(raw, stack="test", project_dir=tmp_path, tsig_secret=tsig_secret)
        mocks = run_components(topo, serial_store=store)
        # the files each ConfigMap holds, as text or packed (2.7 MB of zones: ADR 20)
        return ({r.name: configmap_files(r.inputs) for r in of_type(mocks, CONFIG_MAP)
                 if r.name.startswith("primary-dns-zones-")}, dict(mocks.serials))

    before, serials_before = zone_maps(raw)
    assert len(before) >= 3, sorted(before)
    big2 = next(z for z in raw["zones"] if z["zoneName"] == "big2.example")
    big2["records"][7]["data"] = f'"{"y" * 40} 00006"'  # same length
    after, serials_after = zone_maps(raw)
    assert {z for z in serials_after if serials_after[z] != serials_before[z]} == {"big2.example"}
    assert sorted(after) == sorted(before)
    changed = sorted(name for name in before if before[name] != after[name])
    assert len(changed) == 1, changed
    assert "db.big2.example" in before[changed[0]]


def test_a_secondary_waits_for_a_tcp_path_to_its_primaries(runs) -> None:
    """The init step asks every primary address of the instance's zones over TCP, bounded,
    and never fails the pod (named starts after the bound regardless)."""
    topo, mocks = runs["prod-us-west-2"]
    for inst in topo.spec.instances:
        pod = deployment_of(mocks, inst.name)["spec"]["template"]["spec"]
        (wait,) = [c for c in pod["initContainers"] if c["name"] == "wait-primaries"]
        script = wait["command"][-1]
        for zone in topo.spec.zones_for(inst):
            assert zone.secondaryConfig
            for host, port in zone.secondaryConfig.servers:
                assert f"-p {port} @{host} " in script
        assert "+tcp" in script and "while [ $i -lt 60 ]" in script
        assert "exit 1" not in script and wait["securityContext"] == pod["containers"][0][
            "securityContext"]


def test_the_instance_address_is_the_load_balancers_when_it_has_one() -> None:
    """The engine hands the Service's outputs over as dicts (camelCase) or typed objects:
    the address is the LoadBalancer ingress IP when assigned, else the fixed spec one."""
    from types import SimpleNamespace

    from components.bind9_instance import _service_address

    status = {"loadBalancer": {"ingress": [{"ip": "10.250.0.80", "ipMode": "VIP"}]}}
    assert _service_address({"clusterIP": "10.96.0.5"}, status) == "10.250.0.80"
    assert _service_address({"clusterIP": "10.96.0.5"}, {"loadBalancer": {}}) == "10.96.0.5"
    typed = SimpleNamespace(
        load_balancer=SimpleNamespace(ingress=[SimpleNamespace(ip="10.0.1.10")]))
    assert _service_address(SimpleNamespace(load_balancer_ip=None, cluster_ip="10.96.0.9"),
                            typed) == "10.0.1.10"
    assert _service_address(SimpleNamespace(load_balancer_ip="10.0.1.10", cluster_ip=None),
                            None) == "10.0.1.10"
    assert _service_address(None, None) is None
