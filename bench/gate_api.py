"""Gate overhead per pod: through the Kubernetes API (port-forward) vs direct, side by side.

Needs the cluster stacks deployed and left running:

    bash scripts/run-cluster.sh --keep
    python bench/gate_api.py --runs 100
    bash scripts/run-cluster.sh --destroy

Each run is one full gate verification of a zone of the primary stack (SOA and a
TSIG AXFR with the content digest on every primary and secondary pod), as
`pulumi up` runs it after a change; the two modes alternate run by run so that
machine noise falls on both alike. `api` includes finding the pods and opening
the port-forward listeners; `direct` probes the pod addresses from this host
(which only works where this host routes to the pods: here it does, to every local
cluster's pod range). The pods are looked up in the stack's own cluster, its
`kubernetes:context`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bind9_topology.config.stack_files import read_stack_config  # noqa: E402
from bind9_topology.config.topology import load_topology, read_stack_file  # noqa: E402
from bind9_topology.dns.checks import Endpoint, make_tsig_key, query_soa  # noqa: E402
from bind9_topology.dns.gate import wait_until_transferred  # noqa: E402
from bind9_topology.kube.forward import gate_endpoints  # noqa: E402


def _pods(namespace: str, instance: str, env: dict[str, str],
          context: str | None) -> list[tuple[str, str]]:
    """(name, pod IP) of the instance's live pods, from the stack's own cluster."""
    at = ["--context", context] if context else []
    out = subprocess.run(["kubectl", *at, "get", "pods", "-n", namespace, "-l",
                          f"instance={instance}", "-o", "json"], env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return [(p["metadata"]["name"], p["status"]["podIP"]) for p in json.loads(out)["items"]
            if not p["metadata"].get("deletionTimestamp")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--zone", default="example.com")
    parser.add_argument("--stack", default="cluster")
    args = parser.parse_args()

    exports = subprocess.run(["bash", str(ROOT / "scripts" / "cluster.sh"), "env"],
                             capture_output=True, text=True, check=True).stdout
    env = dict(os.environ)
    for item in exports.strip().removeprefix("export ").split():
        name, value = item.split("=", 1)
        env[name] = value.replace("$PATH", env.get("PATH", ""))
    secret = (ROOT / ".cache" / "cluster" / "tsig-secret").read_text().strip()
    topo = load_topology(read_stack_file(ROOT, args.stack), stack=args.stack,
                         project_dir=ROOT, tsig_secret=secret)
    namespace = topo.spec.namespace
    context = read_stack_config(ROOT, args.stack).get("kubernetes:context") or None
    key = make_tsig_key(topo.spec.tsigKey.name, topo.spec.tsigKey.algorithm, secret)
    digest = topo.contents[args.zone].digest
    roles = {"primary": [i.name for i in topo.spec.instances if i.role == "primary"],
             "secondary": [i.name for i in topo.spec.instances if i.role == "secondary"]}
    api_items = {role: [{"name": n, "instance": n, "namespace": namespace,
                         "via": "kubernetes-api"} for n in names]
                 for role, names in roles.items()}
    direct = {role: [Endpoint(ip, 53, name) for n in names for name, ip in
                     _pods(namespace, n, env, context)] for role, names in roles.items()}
    pods = len(direct["primary"]) + len(direct["secondary"])
    serial = query_soa(direct["primary"][0], args.zone).serial
    assert serial is not None, "the primary does not answer: deploy with run-cluster.sh --keep"

    times: dict[str, list[float]] = {"api": [], "direct": []}
    for run in range(args.runs):
        for mode in (("api", "direct") if run % 2 == 0 else ("direct", "api")):
            started = time.perf_counter()
            if mode == "api":
                with gate_endpoints(api_items["primary"], api_items["secondary"],
                                    env["KUBECONFIG"], context) as (prim, sec):
                    report = wait_until_transferred(args.zone, prim, sec, serial, digest, key,
                                                    30.0, 0.2)
            else:
                report = wait_until_transferred(args.zone, direct["primary"],
                                                direct["secondary"], serial, digest, key,
                                                30.0, 0.2)
            elapsed = time.perf_counter() - started
            assert report.ok, report.message
            times[mode].append(elapsed / pods)

    def ms(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    result = {
        "zone": args.zone, "context": context, "pods": pods, "runs": args.runs,
        **{f"{mode}_per_pod_p50_ms": round(1000 * statistics.median(v), 1)
           for mode, v in times.items()},
        **{f"{mode}_per_pod_p95_ms": ms(v, 0.95) for mode, v in times.items()},
        "api_over_direct": round(statistics.median(times["api"])
                                 / statistics.median(times["direct"]), 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
