"""A picture of one gate run: per zone, change -> NOTIFY -> transfer done -> gate ready.

Collects the timestamps itself with real named on loopback (one primary, one
secondary, --zones zones rendered by bind9_topology.render.bind_files, notify-delay 0):
  change         the primary is sent SIGHUP after the zone files are rewritten
  NOTIFY         primary log "zone <z>/IN: sending notifies (serial S)"
  transfer done  secondary log "transfer of '<z>/IN' ... Transfer completed"
  gate ready     bind9_topology.dns.gate.wait_until_transferred: the secondary's verified_at
named prints millisecond times (print-time). The data goes to
bench/results/gate_timeline.json, the picture to bench/results/gate_timeline.png
(matplotlib, Agg; run with the bench virtualenv's python, or this script re-runs
itself there for the plot).

    python bench/plot_timeline.py [--zones 20] [--data FILE to plot existing data]
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("BENCH_REPO") or HERE.parent)
RESULTS = HERE / "results"
HOST = "127.0.0.1"
SERIAL = 2024010100
_TS = r"(\d{2}-\w{3}-\d{4} \d{2}:\d{2}:\d{2}\.\d{3})"
NOTIFY_RX = re.compile(_TS + r" .*zone ([^/]+)/IN: sending notifies \(serial (\d+)\)", re.M)
XFER_RX = re.compile(_TS + r" .*transfer of '([^/]+)/IN' from .*Transfer completed", re.M)


def _epoch(text: str) -> float:
    return datetime.datetime.strptime(text, "%d-%b-%Y %H:%M:%S.%f").astimezone().timestamp()


def _last(rx: re.Pattern[str], text: str, serial: int | None = None) -> dict[str, float]:
    out = {}
    for m in rx.finditer(text):
        if serial is not None and int(m.group(3)) != serial:
            continue
        out[m.group(2)] = _epoch(m.group(1))
    return out


def collect(zones: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    from verify_fanout import raw_config

    from bind9_topology.config.topology import load_topology
    from bind9_topology.dns.checks import Endpoint, make_tsig_key
    from bind9_topology.dns.gate import wait_until_transferred
    from bind9_topology.local.named_process import NamedProcess, free_port
    from bind9_topology.render.bind_files import Placement, render_instance, write_tree

    secret = base64.b64encode(os.urandom(32)).decode()
    key = make_tsig_key("transfer-key", "hmac-sha256", secret)
    ports = {"primary": free_port(HOST), "sec-a": free_port(HOST)}
    amap = {("10.0.1.10", 53): (HOST, ports["primary"]), ("10.0.1.20", 53): (HOST, ports["sec-a"])}
    procs: dict[str, NamedProcess] = {}
    with tempfile.TemporaryDirectory(prefix="gate-timeline-") as tmp:
        root = Path(tmp)

        def render(version: int, serial: int) -> Any:
            raw = raw_config(zones, 5)
            raw["instances"] = raw["instances"][:2]
            for z in raw["zones"]:
                if z["type"] == "primary":
                    z["alsoNotify"] = ["10.0.1.20"]
                    z["records"].append({"name": "version", "type": "TXT", "data": f'"v{version}"'})
            topo = load_topology(raw, stack="bench", project_dir=root, tsig_secret=secret)
            for inst in topo.spec.instances:
                placement = Placement(root=str(root / inst.name), port=ports[inst.name],
                                      listen_v4=HOST, listen_v6="none", notify_delay=0,
                                      address_map=amap)
                write_tree(render_instance(topo.spec, inst, topo.contents,
                                           dict.fromkeys(topo.contents, serial), placement,
                                           secret), root / inst.name, include_secrets=True)
            later = time.time() + 1
            for f in (root / "primary/var/lib/bind/zones").glob("db.*"):
                os.utime(f, (later, later))
            return topo

        def gate_all(topo: Any, serial: int) -> dict[str, Any]:
            def one(z: str) -> Any:
                return z, wait_until_transferred(
                    z, [Endpoint(HOST, ports["primary"], "primary")],
                    [Endpoint(HOST, ports["sec-a"], "sec-a")],
                    serial, topo.contents[z].digest, key, 60, 1.0)
            with ThreadPoolExecutor(max_workers=min(64, zones)) as pool:
                return dict(pool.map(one, sorted(topo.contents)))

        try:
            topo = render(0, SERIAL)
            for n in ("primary", "sec-a"):
                d = root / n
                procs[n] = NamedProcess(name=n)
                procs[n].start(d / "etc/bind/named.conf", d, d / "named.log")
            procs["primary"].wait_ready((HOST, ports["primary"]), sorted(topo.contents), 30)
            first = gate_all(topo, SERIAL)
            assert all(r.ok for r in first.values())
            topo = render(1, SERIAL + 1)
            p_off, s_off = procs["primary"].log_offset(), procs["sec-a"].log_offset()
            change = time.time()
            procs["primary"].reload()
            reports = gate_all(topo, SERIAL + 1)
            time.sleep(0.1)
            notify = _last(NOTIFY_RX, procs["primary"].log_text()[p_off:], SERIAL + 1)
            xfer = _last(XFER_RX, procs["sec-a"].log_text()[s_off:])
        finally:
            for p in procs.values():
                p.stop()
    rows = []
    for z, rep in sorted(reports.items()):
        sec = next(s for s in rep.servers if s.role == "secondary")
        ready = datetime.datetime.fromisoformat(sec.verified_at).timestamp() \
            if sec.verified_at else None
        rows.append({"zone": z, "ok": rep.ok, "change": 0.0,
                     "notify_ms": _ms(notify.get(z), change),
                     "transfer_done_ms": _ms(xfer.get(z), change),
                     "gate_ready_ms": _ms(ready, change)})
    return {"zones": zones, "serial": SERIAL + 1, "change_epoch": change, "rows": rows}


def _ms(t: float | None, base: float) -> float | None:
    return None if t is None else round((t - base) * 1000, 1)


def plot(data: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["rows"]
    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.28 * len(rows) + 1.5)))
    ys = list(range(len(rows)))
    marks = [("change", "change (SIGHUP)", "black", "|"),
             ("notify_ms", "NOTIFY sent (primary log)", "tab:blue", "o"),
             ("transfer_done_ms", "transfer done (secondary log)", "tab:orange", "s"),
             ("gate_ready_ms", "gate ready (verified_at)", "tab:green", "D")]
    for y, r in zip(ys, rows, strict=True):
        pts = [r[k] for k, *_ in marks if r.get(k) is not None]
        ax.plot([min(pts), max(pts)], [y, y], color="lightgray", zorder=1)
    for k, label, color, marker in marks:
        xs = [(r[k], y) for y, r in zip(ys, rows, strict=True) if r.get(k) is not None]
        ax.scatter([x for x, _ in xs], [y for _, y in xs], label=label, color=color,
                   marker=marker, zorder=2, s=28)
    ax.set_yticks(ys, [r["zone"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms after the change (primary SIGHUP)")
    gaps = [r["gate_ready_ms"] - r["transfer_done_ms"] for r in rows
            if r.get("gate_ready_ms") is not None and r.get("transfer_done_ms") is not None]
    med = sorted(gaps)[len(gaps) // 2] if gaps else float("nan")
    ax.set_title(f"Transfer gate timeline, {len(rows)} zones, serial {data['serial']} "
                 f"(transfer done -> gate ready: median {med:.0f} ms)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zones", type=int, default=20)
    ap.add_argument("--data", type=Path, help="plot this JSON instead of collecting")
    ap.add_argument("--out", type=Path, default=RESULTS / "gate_timeline.png")
    args = ap.parse_args()
    data_path = args.data
    if data_path is None:
        data = collect(args.zones)
        data_path = RESULTS / "gate_timeline.json"
        data_path.parent.mkdir(parents=True, exist_ok=True)
        data_path.write_text(json.dumps(data, indent=1))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(HERE))
        from render_vs_octodns import ensure_venv

        py, why = ensure_venv()
        if py is None:
            print(f"no matplotlib: {why}", file=sys.stderr)
            return 1
        return subprocess.run([str(py), __file__, "--data", str(data_path), "--out",
                               str(args.out)]).returncode
    plot(json.loads(data_path.read_text()), args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
