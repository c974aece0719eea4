"""The gate's full verification of N zones through port-forward-like listeners: one
connection per question (before) against kept sessions (after), side by side.

On the cluster the gate reaches every pod through a local listener whose every TCP
connection opens a new port-forward stream of the Kubernetes API (50-100 ms each,
bench/gate_api.py). Here real `named` on loopback (one primary, three secondaries,
bench/verify_fanout.py's topology: N zones of R records, the secondaries seeded with the
zones) stands behind one proxy per server on 127.0.0.1 that waits ``--connect-delay-ms``
(50) before it connects each new connection upstream, then forwards both ways, and counts
the connections it accepted. The endpoints are ``tcp_only`` (every question over TCP), as
the gate's are through the API.

Timed, each in a fresh process, modes alternating round by round:
``bind9_topology.dns.gate.wait_until_transferred`` for every zone (primary: SOA with AA,
exact serial, TSIG AXFR and content digest; each secondary: TSIG AXFR digest, or SOA
first), gate.MAX_WORKERS zones at a time, as the provider gates a stack.

* ``before``: the product as it was before sessions (``--before-rev``, default the parent
  of the commit that added bind9_topology/dns/sessions.py), its ``bind9_topology``
  extracted by ``git archive`` into a temporary directory: a new connection per SOA
  question and per transfer through a listener;
* ``after``: this checkout, kept sessions (``SESSIONS_PER_SERVER`` per server);
* ``nokeep`` (``--modes``): this checkout with ``Sessions(keep=False)``, a new connection
  per exchange through the same code.

    python bench/gate_sessions.py [--zones 200] [--records 10] [--rounds 3]
        [--connect-delay-ms 50] [--modes before,after] [--per-server N] [--json]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("BENCH_REPO") or HERE.parent)
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

HOST = "127.0.0.1"


# --------------------------------------------------------------------------- the proxy


class DelayingProxy:
    """127.0.0.1:<port> -> *upstream*: each accepted connection waits *delay_s*, then is
    connected upstream and piped both ways (a thread per connection); ``accepted`` counts."""

    def __init__(self, upstream: tuple[str, int], delay_s: float) -> None:
        self.upstream = upstream
        self.delay_s = delay_s
        self.listener = socket.create_server((HOST, 0), backlog=256)
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.accepted = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self.pipe, args=(conn,), daemon=True).start()

    def pipe(self, conn: socket.socket) -> None:
        time.sleep(self.delay_s)  # what opening a port-forward stream costs
        try:
            up = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            conn.close()
            return
        up.settimeout(None)
        conn.settimeout(None)

        def one_way(src: socket.socket, dst: socket.socket) -> None:
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        back = threading.Thread(target=one_way, args=(up, conn), daemon=True)
        back.start()
        one_way(conn, up)
        back.join()
        conn.close()
        up.close()

    def take_count(self) -> int:
        with self.lock:
            n, self.accepted = self.accepted, 0
            return n

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(timeout=5)


# --------------------------------------------------------------------------- the child


def child(spec_path: str) -> int:
    """One mode's run in this process (product code from ROOT): prints one JSON line."""
    import bind9_topology
    from bind9_topology.dns import gate
    from bind9_topology.dns.checks import Endpoint, make_tsig_key

    spec = json.loads(Path(spec_path).read_text())
    key = make_tsig_key("transfer-key", "hmac-sha256", spec["secret"])
    prims = [Endpoint(HOST, p, label, tcp_only=True) for label, p in spec["primaries"]]
    secs = [Endpoint(HOST, p, label, tcp_only=True) for label, p in spec["secondaries"]]
    extra: dict[str, Any] = {}
    sessions = None
    if spec["mode"] in ("after", "nokeep"):
        from bind9_topology.dns.sessions import Sessions

        per_server = spec.get("per_server")
        sessions = (Sessions(per_server, keep=spec["mode"] == "after") if per_server
                    else Sessions(keep=spec["mode"] == "after"))
        extra["sessions"] = sessions

    def one(zone: str) -> Any:
        return gate.wait_until_transferred(zone, prims, secs, spec["serial"],
                                           spec["digests"][zone], key, 120, 1.0, **extra)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=gate.MAX_WORKERS) as pool:
        reports = list(pool.map(one, spec["zones"]))
    seconds = time.perf_counter() - started
    if sessions is not None:
        sessions.close()
    bad = [r.message for r in reports if not r.ok]
    print(json.dumps({"mode": spec["mode"], "seconds": round(seconds, 3),
                      "failed": len(bad), "first_failure": bad[0] if bad else None,
                      "pulls": sum(getattr(r, "pulls", 0) or 0 for r in reports),
                      "stats": sessions.stats() if sessions is not None else None,
                      "product": str(Path(bind9_topology.__file__).parent)}))
    return 0


# --------------------------------------------------------------------------- the parent


def before_revision(explicit: str | None) -> str:
    if explicit:
        return explicit
    added = subprocess.run(
        ["git", "-C", str(ROOT), "log", "--diff-filter=A", "--format=%H", "--",
         "bind9_topology/dns/sessions.py"], capture_output=True, text=True, check=True
    ).stdout.split()
    if not added:
        raise SystemExit("no commit adds bind9_topology/dns/sessions.py here: pass --before-rev")
    return f"{added[-1]}^"


def extract(rev: str, into: Path) -> str:
    """The product package at *rev* (``git archive``: nothing in the checkout changes)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev],
                         capture_output=True, text=True, check=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev,
                              "bind9_topology"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return sha


def run(zones: int, records: int, rounds: int, delay_ms: float, modes: list[str],
        before_rev: str | None, per_server: int | None = None) -> dict[str, Any]:
    import verify_fanout as vf

    from bind9_topology.local.named_process import NamedProcess, free_port

    secret = base64.b64encode(os.urandom(32)).decode()
    names = ["primary", *vf.SECONDARIES]
    ports = {n: free_port(HOST) for n in names}
    ips = {"primary": "10.0.1.10", **vf.SECONDARIES}
    amap = {(ips[n], 53): (HOST, ports[n]) for n in names}
    procs: dict[str, NamedProcess] = {}
    proxies: dict[str, DelayingProxy] = {}
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="gate-sessions-") as tmp:
        root = Path(tmp)
        before_sha = None
        if "before" in modes:
            (root / "before").mkdir()
            before_sha = extract(before_revision(before_rev), root / "before")
        topo = vf.write_fanout(root, zones, records, secret, ports, amap)
        zone_names = sorted(topo.contents)
        try:
            for n in names:
                d = root / n
                procs[n] = NamedProcess(name=n)
                procs[n].start(d / "etc/bind/named.conf", d, d / "named.log")
            for n in names:
                procs[n].wait_ready((HOST, ports[n]), zone_names[-1:], 120)
                proxies[n] = DelayingProxy((HOST, ports[n]), delay_ms / 1000)
            spec = {"zones": zone_names, "serial": vf.SERIAL, "secret": secret,
                    "digests": {z: topo.contents[z].digest for z in zone_names},
                    "primaries": [["primary", proxies["primary"].port]],
                    "secondaries": [[n, proxies[n].port] for n in vf.SECONDARIES],
                    "per_server": per_server}
            for rnd in range(rounds):
                order = modes if rnd % 2 == 0 else list(reversed(modes))
                for mode in order:
                    spec_path = root / f"spec-{mode}.json"
                    spec_path.write_text(json.dumps({**spec, "mode": mode}))
                    for p in proxies.values():
                        p.take_count()
                    env = {**os.environ,
                           "BENCH_REPO": str(root / "before") if mode == "before" else str(ROOT)}
                    out = subprocess.run([sys.executable, str(Path(__file__).resolve()),
                                          "--child", str(spec_path)], capture_output=True,
                                         text=True, env=env, timeout=900)
                    if out.returncode != 0:
                        raise RuntimeError(f"{mode}: exited {out.returncode}: {out.stderr[-2000:]}")
                    doc = json.loads(out.stdout.strip().splitlines()[-1])
                    time.sleep(0.3)  # the proxies see the last connections close
                    doc["connections"] = {n: p.take_count() for n, p in proxies.items()}
                    if doc["failed"]:
                        raise RuntimeError(f"{mode}: {doc['failed']} zones failed: "
                                           f"{doc['first_failure']}")
                    results[mode].append(doc)
        finally:
            for p in proxies.values():
                p.close()
            for proc in procs.values():
                proc.stop()
    summary: dict[str, Any] = {
        "zones": zones, "records_per_zone": records, "servers": len(names),
        "connect_delay_ms": delay_ms, "rounds": rounds, "before_rev": before_sha,
        "sessions_per_server": per_server or "default",
        "function": "bind9_topology.dns.gate.wait_until_transferred, tcp_only endpoints",
    }
    for mode, runs in results.items():
        summary[f"{mode}_s"] = round(statistics.median(r["seconds"] for r in runs), 3)
        summary[f"{mode}_runs_s"] = [r["seconds"] for r in runs]
        summary[f"{mode}_connections"] = round(statistics.median(
            sum(r["connections"].values()) for r in runs))
        summary[f"{mode}_pulls"] = runs[0]["pulls"]
        summary[f"{mode}_product"] = runs[0]["product"]
        if runs[0].get("stats"):
            summary[f"{mode}_stats"] = runs[0]["stats"]
    if "before" in results and "after" in results:
        summary["ratio_before_over_after"] = round(summary["before_s"] / summary["after_s"], 1)
        summary["connections_ratio"] = round(
            summary["before_connections"] / max(1, summary["after_connections"]), 1)
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zones", type=int, default=200)
    ap.add_argument("--records", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connect-delay-ms", type=float, default=50.0)
    ap.add_argument("--modes", default="before,after",
                    help="comma list of before, after, nokeep")
    ap.add_argument("--before-rev", default=None)
    ap.add_argument("--per-server", type=int, default=None,
                    help="sessions per server for after/nokeep (default: SESSIONS_PER_SERVER)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child)
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - {"before", "after", "nokeep"}
    if unknown:
        ap.error(f"unknown modes: {', '.join(sorted(unknown))}")
    result = run(args.zones, args.records, args.rounds, args.connect_delay_ms, modes,
                 args.before_rev, args.per_server)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"gate, {result['zones']} zones x {result['records_per_zone']} records, "
          f"{result['servers']} servers behind listeners adding {result['connect_delay_ms']:g} "
          f"ms per new connection, median of {result['rounds']} round(s):")
    for mode in modes:
        print(f"  {mode:<7} {result[f'{mode}_s']:>8.3f} s  {result[f'{mode}_connections']:>6} "
              f"connections  (runs {result[f'{mode}_runs_s']})")
    if "ratio_before_over_after" in result:
        print(f"  before/after: {result['ratio_before_over_after']}x the time, "
              f"{result['connections_ratio']}x the connections (before = {result['before_rev']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
