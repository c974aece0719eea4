"""Kubernetes objects for one BIND instance, as plain dicts (camelCase, as the API has them).

Pure: no Pulumi import. The ComponentResources hand these dicts to
pulumi-kubernetes; the CLI's `render` dumps what the components register.
Secret data never passes through here: the Secret's body is built by the
component from a pulumi.secret Output.
"""

from __future__ import annotations

import base64
import copy
import functools
import gzip
import hashlib
import io
import ipaddress
import tarfile
from collections.abc import Mapping
from typing import Any

from bind9_topology.config.model import Instance, StackSpec
from bind9_topology.render.bind_files import (
    CONFIG_DIR,
    TSIG_DIR,
    ZONE_CONF_DIR,
    ZONE_DIR,
    RenderedInstance,
    stable_shards,
)

ANNOTATION_CHECKSUM = "bind9-topology.io/config-checksum"
BIND_UID = 101  # the bind user of the internetsystemsconsortium/bind9 image
DNS_PORT = 53
STATS_PORT = 8053  # named's statistics channel, on the pod's 127.0.0.1 (named.conf)

Obj = dict[str, Any]


def common_labels(spec: StackSpec, instance: Instance) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "bind9",
        "app.kubernetes.io/instance": instance.name,
        "app.kubernetes.io/component": f"dns-{instance.role}",
        "app.kubernetes.io/managed-by": "pulumi",
        "instance": instance.name,
    }
    labels.update(instance.labels)
    return labels


def metadata(spec: StackSpec, instance: Instance, name: str) -> Obj:
    return {"name": name, "namespace": spec.namespace, "labels": common_labels(spec, instance)}


def config_map_name(instance: Instance) -> str:
    return f"{instance.name}-config"


def zone_map_name(instance: Instance, index: int, first_file: str = "") -> str:
    """The first zone ConfigMap is `<instance>-zones-0`; every later one is named after its
    first file (a hash of its path), so a shard opened or closed renames no other one."""
    if index == 0 or not first_file:
        return f"{instance.name}-zones-{index}"
    return f"{instance.name}-zones-{hashlib.sha256(first_file.encode()).hexdigest()[:10]}"


def secret_name(instance: Instance) -> str:
    return f"{instance.name}-tsig"


def config_map_key(path: str) -> str:
    """ConfigMap keys cannot hold '/'; files are keyed by their base name."""
    return path.rsplit("/", 1)[-1]


def zone_conf_map_name(instance: Instance, path: str) -> str:
    """The ConfigMap of one zone statements file (etc/bind/zones.d/zones-N.conf)."""
    return f"{instance.name}-conf-{config_map_key(path).removeprefix('zones-').split('.')[0]}"


def zone_conf_files(rendered: RenderedInstance) -> list[str]:
    """The zone statements files that named.conf includes (many zones; bind_files)."""
    return sorted(p for p in rendered.config_files if p.startswith(ZONE_CONF_DIR + "/"))


#: an instance whose zone files pass this many bytes gets its zone ConfigMaps packed (ADR
#: 20): about 500 zones of 100 records. Smaller stacks keep readable text.
PACK_OVER_BYTES = 2 * 2**20
#: gzip level of a packed shard: 3 is within 10% of 9's size at a tenth of its time
PACK_LEVEL = 3


def packs_zones(rendered: RenderedInstance) -> bool:
    """Whether *rendered*'s zone ConfigMaps are packed (binaryData, one tar.gz each)."""
    return sum(len(d) for d in rendered.zone_files.values()) > PACK_OVER_BYTES


def archive_key(map_name: str) -> str:
    """A packed zone ConfigMap's one binaryData key (unique in the pod's projected volume)."""
    return f"{map_name}.tar.gz"


def pack_files(files: Mapping[str, str | bytes]) -> bytes:
    """*files* (key -> body) as a tar.gz whose bytes depend on the files alone (name order,
    mtime 0, no owner, mode 0444): the same zones give the same ConfigMap on every run.
    GNU tar (the pod's init step) and Python's tarfile (the agent) read it."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for key in sorted(files):
            body = files[key]
            data = body.encode() if isinstance(body, str) else body
            info = tarfile.TarInfo(key)
            info.size, info.mode, info.mtime = len(data), 0o444, 0
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=PACK_LEVEL,
                       mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def packed_content(map_name: str, files: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """A zone ConfigMap's content, packed: {"binaryData": {<map>.tar.gz: base64}}; or
    {"data": files} where packing would not make it smaller (incompressible zones)."""
    encoded = base64.b64encode(pack_files(files)).decode()
    if len(encoded) >= sum(len(v) for v in files.values()):
        return {"data": dict(files)}
    return {"binaryData": {archive_key(map_name): encoded}}


def config_maps(spec: StackSpec, rendered: RenderedInstance,
                pack: bool | None = None) -> list[Obj]:
    """The config ConfigMap, one ConfigMap per zone statements file (thousands of zones),
    then as many zone ConfigMaps as the zone files need: their files as `data`, or packed
    (*pack*; by default `packs_zones`) into one tar.gz each as `binaryData`."""
    inst = rendered.instance
    if pack is None:
        pack = packs_zones(rendered)
    confs = zone_conf_files(rendered)
    maps = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(spec, inst, config_map_name(inst)),
            "data": {config_map_key(p): d.decode()
                     for p, d in sorted(rendered.config_files.items()) if p not in confs},
        }
    ]
    for path in confs:
        maps.append({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(spec, inst, zone_conf_map_name(inst, path)),
            "data": {config_map_key(path): rendered.config_files[path].decode()},
        })
    shards = stable_shards(rendered.zone_files, rendered.zone_of_file)
    for index, shard in enumerate(shards):
        name = zone_map_name(inst, index, min(shard))
        files = {config_map_key(p): d.decode() for p, d in sorted(shard.items())}
        maps.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": metadata(spec, inst, name),
                     **(packed_content(name, files) if pack else {"data": files})})
    return maps


def secret_shell(spec: StackSpec, instance: Instance) -> Obj:
    """The Secret without its data (the component adds stringData as a pulumi secret)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(spec, instance, secret_name(instance)),
        "type": "Opaque",
    }


def dnssec_secret_name(instance: Instance) -> str:
    """The Secret with a primary's DNSSEC key files (only when it signs a zone)."""
    return f"{instance.name}-dnssec"


DNSSEC_KEYS_MOUNT = "/var/lib/bind/dnssec-keys"
#: The signing keys' tags per zone: replaced keys roll the pods, which copy them at start.
ANNOTATION_DNSSEC_KEYS = "bind9-topology/dnssec-key-tags"


def dnssec_init_container(rendered: RenderedInstance, container: Obj) -> Obj:
    """Copies the key files from the read-only Secret into the writable key-directory
    (named writes .state files there; the Secret's keys name K<zone>._013_<tag>.*, as
    '+' is not allowed in a Secret key) and links each signed zone's file into a writable
    directory (named writes <file>.signed beside it). Same image and security context."""
    from bind9_topology.dns.dnssec import KEY_DIR, SIGNED_DIR

    lines = [
        "set -eu",
        f"mkdir -p /{KEY_DIR} /{SIGNED_DIR}",
        f"for f in {DNSSEC_KEYS_MOUNT}/K*; do",
        "  [ -e \"$f\" ] || continue",
        "  n=$(basename \"$f\" | sed -E 's/_([0-9]{3})_([0-9]{5})\\.(key|private)$/+\\1+\\2.\\3/')",
        f"  [ -e /{KEY_DIR}/$n ] || cp \"$f\" /{KEY_DIR}/$n",
        "done",
        f"chmod 600 /{KEY_DIR}/*.private 2>/dev/null || true",
    ]
    for link, zone_file in sorted(rendered.signed_links.items()):
        lines.append(f"ln -sf /{zone_file} /{link}")
    return {
        "name": "dnssec-keys",
        "image": container["image"],
        "imagePullPolicy": container["imagePullPolicy"],
        "command": ["/bin/sh", "-c", "\n".join(lines) + "\n"],
        "securityContext": container["securityContext"],
        "volumeMounts": [
            {"name": "cache", "mountPath": "/var/cache/bind"},
            {"name": "dnssec-keys", "mountPath": DNSSEC_KEYS_MOUNT, "readOnly": True},
        ],
    }


def tsig_secret_key(spec: StackSpec) -> str:
    return f"{spec.tsigKey.name}.conf"


# --------------------------------------------------------------------------- the agent

#: where a primary's pods get the zone ConfigMaps as the kubelet mounted them at start
#: (copied into named's writable zone directory by the `zones` init container)
ZONE_SOURCE_MOUNT = "/var/lib/bind/zones-src"
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
#: how long a stopping pod keeps answering after it turned unready (ready.sh sees the
#: draining file): the kubelet's readiness probe (1 s, 2 failures), the EndpointSlice
#: update and kube-proxy's sync (which drops the pod's UDP conntrack entries) all fit.
DRAIN_SECONDS = 8


def agent_name(instance: Instance) -> str:
    """The agent's ServiceAccount, Role and RoleBinding."""
    return f"{instance.name}-agent"


def uses_agent(spec: StackSpec, rendered: RenderedInstance) -> bool:
    return f"{CONFIG_DIR}/agent.py" in rendered.config_files


def agent_rbac(spec: StackSpec, instance: Instance) -> tuple[Obj, Obj, Obj]:
    """ServiceAccount, Role and RoleBinding of the agent, all in the stack's namespace
    (no cluster-wide RBAC): a secondary's agent lists its instance's pods (where to relay
    NOTIFY), a primary's reads and watches ConfigMaps (its zones)."""
    name = agent_name(instance)
    rule = ({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}
            if instance.role == "secondary" else
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]})
    account = {"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": metadata(spec, instance, name),
               "automountServiceAccountToken": False}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": metadata(spec, instance, name), "rules": [rule]}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": metadata(spec, instance, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": spec.namespace}],
    }
    return account, role, binding


def agent_container(spec: StackSpec, rendered: RenderedInstance, zone_maps: list[Obj],
                    bind9: Obj) -> Obj:
    """The agent sidecar: the ConfigMap's agent.py run by the image's python3, as locked
    down as named, with the API token mounted into this container only."""
    inst = rendered.instance
    args = [inst.role, "--instance", inst.name,
            "--key-file", f"/{TSIG_DIR}/{tsig_secret_key(spec)}"]
    mounts: list[Obj] = [
        {"name": "etc-bind", "mountPath": f"/{CONFIG_DIR}", "readOnly": True},
        {"name": "agent-api", "mountPath": SA_MOUNT, "readOnly": True},
    ]
    if inst.role == "secondary":
        args += ["--listen", f"127.0.0.1:{spec.agent.notifyPort}", "--dns-port", str(DNS_PORT)]
    else:
        args += ["--zone-dir", f"/{ZONE_DIR}", "--rndc-port", str(spec.agent.controlPort),
                 "--zone-maps", ",".join(m["metadata"]["name"] for m in zone_maps)]
        mounts.append({"name": "zones", "mountPath": f"/{ZONE_DIR}"})
    return {
        "name": "agent",
        "image": spec.agent.image or bind9["image"],
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", f"/{CONFIG_DIR}/agent.py", *args],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "24Mi"},
                      "limits": {"memory": "128Mi"}},
        "securityContext": copy.deepcopy(bind9["securityContext"]),
        "volumeMounts": mounts,
    }


def agent_api_volume() -> Obj:
    """The service account token, CA and namespace, as the kubelet would automount them
    (a bound, rotated token), but for the agent container alone."""
    return {"name": "agent-api", "projected": {"defaultMode": 0o444, "sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
        {"configMap": {"name": "kube-root-ca.crt",
                       "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [
            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
    ]}}


def zone_copy_script(packed: bool, source: str = ZONE_SOURCE_MOUNT,
                     target: str = f"/{ZONE_DIR}") -> str:
    """The zone copy step: the mounted files into named's writable zone directory, and
    (*packed*) each shard's tar.gz expanded there (gzip and tar: in every Debian image)."""
    script = f"set -eu\ncp -L {source}/* {target}/\n"
    if packed:
        script += (f'for f in {target}/*.tar.gz; do\n  [ -e "$f" ] || continue\n'
                   f'  tar -xzf "$f" -C {target} --no-same-owner\n  rm -f "$f"\ndone\n')
    return script


def zone_copy_init_container(bind9: Obj, packed: bool = False) -> Obj:
    """Copies the zone files as mounted at start into named's writable zone directory
    (expanding packed shards), which the agent then keeps equal to the ConfigMaps."""
    return {
        "name": "zones",
        "image": bind9["image"],
        "imagePullPolicy": bind9["imagePullPolicy"],
        "command": ["/bin/sh", "-c", zone_copy_script(packed)],
        "securityContext": copy.deepcopy(bind9["securityContext"]),
        "volumeMounts": [
            {"name": "zone-source", "mountPath": ZONE_SOURCE_MOUNT, "readOnly": True},
            {"name": "zones", "mountPath": f"/{ZONE_DIR}"},
        ],
    }


# How long a secondary's pod waits for a path to its primaries before named starts anyway.
PRIMARY_WAIT_SECONDS = 60


def primaries_wait_init_container(spec: StackSpec, instance: Instance, bind9: Obj) -> Obj | None:
    """Holds named back until one primary answers an SOA query over TCP from this pod.

    A new pod's first packets can be refused while the network plugin adds its address
    to the NetworkPolicy sets, or while a LoadBalancer address is not yet announced; named
    marks a primary that refused it twice unreachable for up to ten minutes, so the pod
    would stay unready that long. After PRIMARY_WAIT_SECONDS named starts regardless and
    retries on its own."""
    probes: dict[tuple[str, int], str] = {}
    for zone in spec.zones_for(instance):
        if zone.secondaryConfig:
            for server in zone.secondaryConfig.servers:
                probes.setdefault(server, zone.zoneName)
    if not probes:
        return None
    asks = " || ".join(
        f"dig +tcp +norec +time=1 +tries=1 -p {port} @{host} {name} SOA >/dev/null 2>&1"
        for (host, port), name in sorted(probes.items()))
    script = (
        "i=0\n"
        f"while [ $i -lt {PRIMARY_WAIT_SECONDS} ]; do\n"
        f"  if {asks}; then echo \"a primary answers over TCP after $i s\"; exit 0; fi\n"
        "  i=$((i + 1)); sleep 1\n"
        "done\n"
        f"echo \"no primary answered over TCP in {PRIMARY_WAIT_SECONDS} s;"
        " starting named anyway\"\n"
    )
    return {
        "name": "wait-primaries",
        "image": bind9["image"],
        "imagePullPolicy": bind9["imagePullPolicy"],
        "command": ["/bin/sh", "-c", script],
        "securityContext": copy.deepcopy(bind9["securityContext"]),
    }


def named_volumes(spec: StackSpec, rendered: RenderedInstance,
                  zone_maps: list[Obj]) -> tuple[list[Obj], list[Obj]]:
    """The pod's volumes and named's mounts: config and key (read-only), its writable
    directories, and the zones: a primary's from the ConfigMaps (or the writable copy the
    agent keeps), a secondary's transferred into an emptyDir."""
    inst = rendered.instance
    tsig_dir = TSIG_DIR.removeprefix(CONFIG_DIR + "/")  # relative to the /etc/bind mount
    etc_items: list[Obj] = [
        {"key": "named.conf", "path": "named.conf"},
        {"key": "ready.sh", "path": "ready.sh", "mode": 0o555},
    ]
    if uses_agent(spec, rendered):
        etc_items.append({"key": "agent.py", "path": "agent.py"})
    key_item = {"key": tsig_secret_key(spec), "path": f"{tsig_dir}/{tsig_secret_key(spec)}",
                "mode": 0o440}
    etc_sources: list[Obj] = [
        {"configMap": {"name": config_map_name(inst), "items": etc_items}},
        *({"configMap": {"name": zone_conf_map_name(inst, path), "items": [
            {"key": config_map_key(path), "path": path.removeprefix(CONFIG_DIR + "/")}]}}
          for path in zone_conf_files(rendered)),
        {"secret": {"name": secret_name(inst), "items": [key_item]}},
    ]
    volumes: list[Obj] = [
        {"name": "etc-bind", "projected": {"defaultMode": 0o444, "sources": etc_sources}},
        {"name": "cache", "emptyDir": {}},
        {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    mounts: list[Obj] = [
        {"name": "etc-bind", "mountPath": f"/{CONFIG_DIR}", "readOnly": True},
        {"name": "cache", "mountPath": "/var/cache/bind"},
        {"name": "run", "mountPath": "/run/named"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    zone_source: Obj = {"projected": {
        "defaultMode": 0o444,
        "sources": [{"configMap": {"name": m["metadata"]["name"]}} for m in zone_maps],
    }}
    if inst.role == "primary" and (rendered.live_zones or packs_zones(rendered)):
        # named reads a writable copy that the agent keeps equal to the ConfigMaps (or,
        # without the agent, that the init step expanded from packed shards).
        volumes += [{"name": "zone-source", **zone_source}, {"name": "zones", "emptyDir": {}}]
        mounts.append({"name": "zones", "mountPath": f"/{ZONE_DIR}", "readOnly": True})
    elif inst.role == "primary":
        volumes.append({"name": "zones", **zone_source})
        mounts.append({"name": "zones", "mountPath": f"/{ZONE_DIR}", "readOnly": True})
    else:
        # Secondaries write transferred zones here (readable with `kubectl exec ... ls`).
        volumes.append({"name": "zones", "emptyDir": {}})
        mounts.append({"name": "zones", "mountPath": f"/{ZONE_DIR}"})
    return volumes, mounts


def named_container(instance: Instance, mounts: list[Obj]) -> Obj:
    """named in the foreground, with its probes, drain on stop, and no privilege at all."""
    resources = {
        part: {k: v for k, v in getattr(instance.resources, part).model_dump().items() if v}
        for part in ("requests", "limits")
    }
    return {
        "name": "bind9",
        "image": instance.container_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/usr/sbin/named", "-g", "-c", f"/{CONFIG_DIR}/named.conf"],
        "ports": [
            {"name": "dns-udp", "containerPort": DNS_PORT, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": DNS_PORT, "protocol": "TCP"},
        ],
        # Ready only when every zone answers authoritatively (secondaries: transferred).
        # Every second: a stopping pod must turn unready well within DRAIN_SECONDS.
        "readinessProbe": {
            "exec": {"command": ["/bin/sh", f"/{CONFIG_DIR}/ready.sh"]},
            "periodSeconds": 1,
            "timeoutSeconds": 5,
            "failureThreshold": 2,
            "successThreshold": 1,
        },
        "startupProbe": {"tcpSocket": {"port": DNS_PORT}, "periodSeconds": 2,
                         "failureThreshold": 150},
        "livenessProbe": {"tcpSocket": {"port": DNS_PORT}, "periodSeconds": 10,
                          "timeoutSeconds": 3, "failureThreshold": 3},
        # Leave the Service before named stops answering: ready.sh fails at once on the
        # draining file, so the pod stops being a serving endpoint (kube-proxy then drops
        # its UDP flows) while named still answers every query that reaches it.
        "lifecycle": {"preStop": {"exec": {"command": [
            "/bin/sh", "-c", f"touch /run/named/draining; sleep {DRAIN_SECONDS}"]}}},
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": BIND_UID,
            "runAsGroup": BIND_UID,
            # No capability at all: port 53 is opened through the pod's
            # ip_unprivileged_port_start sysctl (a non-root process gets no effective
            # capabilities from `add` without ambient capabilities).
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }


POD_SECURITY: Obj = {
    "runAsNonRoot": True,
    "runAsUser": BIND_UID,
    "runAsGroup": BIND_UID,
    "fsGroup": BIND_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
    # A namespaced, "safe" sysctl: lets uid 101 bind port 53.
    "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}],
}


def deployment(spec: StackSpec, rendered: RenderedInstance, zone_maps: list[Obj]) -> Obj:
    """The instance's pods: named, the sidecars (exporter, agent), the init steps (the
    zone copy, the DNSSEC keys), rolled one surge pod at a time with none unavailable."""
    inst = rendered.instance
    selector = {"instance": inst.name}
    agent = uses_agent(spec, rendered)
    volumes, mounts = named_volumes(spec, rendered, zone_maps)
    container = named_container(inst, mounts)
    containers = [container, *metrics_sidecars(spec, inst, container["securityContext"])]
    init_containers: list[Obj] = []
    if agent:
        containers.append(agent_container(spec, rendered, zone_maps, container))
        volumes.append(agent_api_volume())
    if inst.role == "primary" and (rendered.live_zones or packs_zones(rendered)):
        init_containers.append(zone_copy_init_container(container, packs_zones(rendered)))
    if inst.role == "secondary" and (wait := primaries_wait_init_container(spec, inst, container)):
        init_containers.append(wait)
    if rendered.signed_links:
        # Every replica signs with the same keys: the stack's, from the Secret.
        volumes.append({"name": "dnssec-keys", "secret": {
            "secretName": dnssec_secret_name(inst), "defaultMode": 0o440}})
        init_containers.append(dnssec_init_container(rendered, container))
    annotations = {ANNOTATION_CHECKSUM: rendered.checksum, **scrape_annotations(spec, inst)}
    spread = [
        {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": selector}}
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]
    pod: Obj = {
        **({"serviceAccountName": agent_name(inst)} if agent else {}),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": copy.deepcopy(POD_SECURITY),
        "topologySpreadConstraints": spread,
        **({"initContainers": init_containers} if init_containers else {}),
        "containers": containers,
        "volumes": volumes,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(spec, inst, inst.name),
        "spec": {
            "replicas": inst.replicas,
            "revisionHistoryLimit": 5,
            "minReadySeconds": 5,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": common_labels(spec, inst), "annotations": annotations},
                "spec": pod,
            },
        },
    }


# --------------------------------------------------------------------------- metrics


def metrics_sidecars(spec: StackSpec, instance: Instance, security: Obj) -> list[Obj]:
    """The bind_exporter sidecar (metrics.enabled): it reads named's statistics channel
    on 127.0.0.1 and serves /metrics; as locked down as the bind9 container."""
    metrics = spec.metrics_for(instance)
    if not metrics.enabled:
        return []
    return [{
        "name": "exporter",
        "image": metrics.exporterImage,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            f"--bind.stats-url=http://127.0.0.1:{STATS_PORT}",
            f"--web.listen-address=:{metrics.port}",
            "--bind.stats-groups=server,view",
        ],
        "ports": [{"name": "metrics", "containerPort": metrics.port, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                      "limits": {"memory": "64Mi"}},
        "securityContext": copy.deepcopy(security),
    }]


def scrape_annotations(spec: StackSpec, instance: Instance) -> dict[str, str]:
    metrics = spec.metrics_for(instance)
    if not metrics.enabled or metrics.serviceMonitor:
        return {}
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(metrics.port),
            "prometheus.io/path": "/metrics"}


def service_monitor(spec: StackSpec, instance: Instance) -> Obj | None:
    """A Prometheus Operator ServiceMonitor for the instance's Service (metrics.serviceMonitor)."""
    metrics = spec.metrics_for(instance)
    if not (metrics.enabled and metrics.serviceMonitor):
        return None
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(spec, instance, instance.name),
        "spec": {
            "selector": {"matchLabels": {"instance": instance.name}},
            "namespaceSelector": {"matchNames": [spec.namespace]},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
        },
    }


def service(spec: StackSpec, instance: Instance) -> Obj:
    body: Obj = {
        "type": instance.service.type,
        "selector": {"instance": instance.name},
        "ports": [
            {"name": "dns-udp", "port": DNS_PORT, "targetPort": DNS_PORT, "protocol": "UDP"},
            {"name": "dns-tcp", "port": DNS_PORT, "targetPort": DNS_PORT, "protocol": "TCP"},
        ],
    }
    metrics = spec.metrics_for(instance)
    if metrics.enabled:
        body["ports"].append({"name": "metrics", "port": metrics.port,
                              "targetPort": metrics.port, "protocol": "TCP"})
    svc = instance.service
    meta = metadata(spec, instance, instance.name)
    annotations = dict(svc.annotations)
    if svc.loadBalancerIP and svc.loadBalancerIPAnnotation:
        annotations[svc.loadBalancerIPAnnotation] = svc.loadBalancerIP
    elif svc.loadBalancerIP:
        body["loadBalancerIP"] = svc.loadBalancerIP
    if annotations:
        meta["annotations"] = annotations
    if svc.type == "LoadBalancer":
        body["externalTrafficPolicy"] = svc.externalTrafficPolicy or "Local"
    if svc.clusterIP:
        body["clusterIP"] = svc.clusterIP
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": body}


def _ip_blocks(cidrs: list[str]) -> list[Obj]:
    return [{"ipBlock": {"cidr": c}} for c in sorted(set(cidrs))]


@functools.lru_cache(maxsize=65536)
def _host_cidr(ip: str) -> str:
    return str(ipaddress.ip_network(ip))  # /32 or /128


def network_policy(spec: StackSpec, instance: Instance) -> Obj:
    """Queries from allowQuery; TCP 53 to primaries only from secondaries; NOTIFY from primaries."""
    udp = {"protocol": "UDP", "port": DNS_PORT}
    tcp = {"protocol": "TCP", "port": DNS_PORT}
    query_from = _ip_blocks(instance.config.allowQuery)
    rules: list[Obj]
    if instance.role == "primary":
        notify_targets = sorted(
            {_host_cidr(h) for z in spec.zones_for(instance) for h, _ in z.notify_servers}
        )
        rules = [
            {"from": query_from, "ports": [udp]},
            {
                "from": [
                    {"podSelector": {"matchLabels": {"dns-role": "secondary"}}},
                    *_ip_blocks([*notify_targets, *instance.config.peerCidrs]),
                ],
                "ports": [tcp, udp],
            },
        ]
    else:
        primaries = sorted(
            {
                _host_cidr(h)
                for z in spec.zones_for(instance)
                if z.secondaryConfig
                for h, _ in z.secondaryConfig.servers
            }
        )
        rules = [
            {"from": query_from, "ports": [udp, tcp]},
            {
                "from": [
                    {"podSelector": {"matchLabels": {"dns-role": "primary"}}},
                    *_ip_blocks([*primaries, *instance.config.peerCidrs]),
                ],
                "ports": [udp],
            },
        ]
        if spec.agent.enabled:  # the agent relays NOTIFY between the instance's pods
            rules.append({"from": [{"podSelector": {"matchLabels": {"instance": instance.name}}}],
                          "ports": [udp]})
    metrics = spec.metrics_for(instance)
    if metrics.enabled:  # Prometheus scrapes the exporter (allowFrom; empty: any source)
        scrape: Obj = {"ports": [{"protocol": "TCP", "port": metrics.port}]}
        if metrics.allowFrom:
            scrape = {"from": _ip_blocks(metrics.allowFrom), **scrape}
        rules.append(scrape)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(spec, instance, instance.name),
        "spec": {
            "podSelector": {"matchLabels": {"instance": instance.name}},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


def pod_disruption_budget(spec: StackSpec, instance: Instance) -> Obj | None:
    if instance.replicas < 2:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(spec, instance, instance.name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"instance": instance.name}}},
    }
