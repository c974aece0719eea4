"""The dynamic providers' Check and Diff at N zones, as the engine's provider host runs them.

For the transfer gate (components.transfer_gate) and the zone serials
(components.zone_serial): inputs holding N zones (3 secondaries and a primary each,
serials and digests) and the same inputs with one zone edited, turned into the protobuf
Structs the engine sends (``pulumi.runtime.rpc.serialize_properties``). Timed, as the
host (``pulumi/dynamic/__main__.py``) does it: ``deserialize_properties`` of olds and news,
the provider's ``check`` (and ``serialize_properties`` of what it returns), and its
``diff``. No server is asked: the zone serials' edited zone has no probe targets, the
gate's zones are not followed (primaries with a serial). Each figure is the median of
--repeat runs, in this process.

Both shapes, side by side in one run: ``old`` (before the compact shape: each zone its own server
lists, each server's status a map of seven values) and ``new`` (each server once, a
zone's servers as refs, a server's status one string); ``migrate`` is the first preview
after the upgrade (olds of the old shape, news of the new). ``state_bytes_gate`` is the
gate's stored state (inputs and status of every zone, 4 servers each) as a Struct,
``status_json_bytes`` its ``status`` output as JSON.

    python bench/provider_checks.py [--zones 10000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("BENCH_REPO") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))

from pulumi.dynamic.dynamic import PROVIDER_KEY  # noqa: E402
from pulumi.runtime import rpc  # noqa: E402

from components.transfer_gate import TransferGateProvider, changed_zones  # noqa: E402
from components.zone_serial import ZoneSerialsProvider  # noqa: E402


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


SERVERS = [("primary", "10.0.1.10"), *((f"sec-{c}", f"10.0.{c + 2}.20") for c in range(3))]


def _server(name: str, host: str) -> dict[str, Any]:
    return {"name": name, "host": host, "port": 53}


def gate_inputs(zones: int, edited: int | None = None, shape: str = "new") -> dict[str, Any]:
    """The gate's inputs at *zones* zones; *shape* "old": server lists per zone."""
    targets = {name: _server(name, host) for name, host in SERVERS}
    out: dict[str, Any] = {}
    for n in range(zones):
        zone = f"z{n:05d}.bench"
        version = "v2" if n == edited else "v1"
        if shape == "old":
            servers: dict[str, Any] = {
                "primaries": [targets["primary"]],
                "secondaries": [targets[f"sec-{c}"] for c in range(3)]}
        else:
            servers = {"primaries": "primary", "secondaries": "sec-0 sec-1 sec-2"}
        out[zone] = {
            **servers,
            "expectedDigest": hashlib.sha384(f"{zone}{version}".encode()).hexdigest(),
            "triggers": [_hash(f"{zone}{version}")],
        }
    serials = {f"z{n:05d}.bench": 2026120300 + (1 if n == edited else 0) for n in range(zones)}
    return {**({"servers": targets} if shape != "old" else {}),
            "zones": out, "expectedSerials": serials, "tsigKeyName": "transfer-key",
            "tsigAlgorithm": "hmac-sha256", "tsigSecret": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
            "deadlineSeconds": 300, "pollIntervalSeconds": 1, "kubeconfig": None,
            "kubeContext": None, PROVIDER_KEY: "provider-blob"}


def gate_status(zones: Any, shape: str) -> dict[str, Any]:
    """Every zone verified at its serial on its 4 servers, as the gate's status holds it."""
    def server(name: str, host: str) -> Any:
        s = {"host": host, "port": 53, "role": "primary" if name == "primary" else "secondary",
             "serial": 2026120300, "verifiedAt": "2026-12-03T17:00:00.123456+00:00",
             "attempts": 1, "reason": "OK"}
        return s if shape == "old" else " ".join(str(s[k]) for k in (
            "role", "serial", "reason", "attempts", "verifiedAt", "host", "port"))

    return {z: {"ready": True, "servedSerial": 2026120300,
                "servers": {name: server(name, host) for name, host in SERVERS},
                "readyAfterSeconds": 0.25, "checkedAt": "2026-12-03T17:00:00.123456+00:00"}
            for z in zones}


def serial_inputs(zones: int, edited: int | None = None, shape: str = "new") -> dict[str, Any]:
    out = {}
    primary = {"name": "primary", "host": "10.0.1.10", "port": 53}
    for n in range(zones):
        zone = f"z{n:05d}.bench"
        version = "v2" if n == edited else "v1"
        probe: Any = [] if n == edited else [primary]
        if shape != "old":
            probe = " ".join(t["name"] for t in probe)
        out[zone] = {"contentHash": _hash(f"{zone}{version}"), "probe": probe,
                     "digest": hashlib.sha384(f"{zone}{version}".encode()).hexdigest()}
    return {**({"servers": {"primary": primary}} if shape != "old" else {}),
            "zones": out, "tsigKeyName": "transfer-key", "tsigAlgorithm": "hmac-sha256",
            "tsigSecret": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "serials": None,
            PROVIDER_KEY: "provider-blob"}


def to_struct(props: dict[str, Any]) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(rpc.serialize_properties(props, {}))
    finally:
        loop.close()


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 1), result


def host_check(provider: Any, olds_pb: Any, news_pb: Any) -> Any:
    """What the host's Check does: deserialize, check, serialize the checked inputs."""
    olds = rpc.deserialize_properties(olds_pb, True)
    news = rpc.deserialize_properties(news_pb, True)
    result = provider.check(olds, news)
    inputs = dict(result.inputs)
    inputs[PROVIDER_KEY] = news[PROVIDER_KEY]
    return result, to_struct(inputs)


def host_diff(provider: Any, olds_pb: Any, news_pb: Any) -> Any:
    olds = rpc.deserialize_properties(olds_pb, True)
    news = rpc.deserialize_properties(news_pb, True)
    return provider.diff("id", olds, news)


def measure(zones: int, repeat: int, old: str = "new", new: str = "new") -> dict[str, Any]:
    """Check and Diff with olds of shape *old* (in state) and news of shape *new*."""
    out: dict[str, Any] = {"zones": zones}
    # the gate: olds are the stored inputs (checked before: expectedSerials folded in)
    gate = TransferGateProvider()
    g_old = gate.check({}, gate_inputs(zones, shape=old)).inputs
    g_old_state = {**g_old, "ready": True, "status": gate_status(g_old["zones"], old)}
    g_new = gate_inputs(zones, edited=zones // 2, shape=new)
    g_old_pb, g_new_pb = to_struct(g_old_state), to_struct(g_new)
    out["gate_check_ms"], (checked, _) = timed(lambda: host_check(gate, g_old_pb, g_new_pb),
                                               repeat)
    g_checked_pb = to_struct(checked.inputs)
    out["gate_diff_ms"], diff = timed(lambda: host_diff(gate, g_old_pb, g_checked_pb), repeat)
    out["gate_diff_changes"] = diff.changes
    out["gate_changed_zones"] = changed_zones(g_old_state, checked.inputs)
    out["gate_provider_check_ms"], _ = timed(
        lambda: gate.check(copy.deepcopy(g_old_state), copy.deepcopy(g_new)), repeat)
    # the serials: one zone's content hash moved
    serials = ZoneSerialsProvider()
    first = serial_inputs(zones, shape=old)
    s_first = serials.check({}, {**first, "zones": {
        z: {**e, "probe": [] if old == "old" else ""}
        for z, e in first["zones"].items()}}).inputs
    s_new = serial_inputs(zones, edited=zones // 2, shape=new)
    s_old_pb, s_new_pb = to_struct(s_first), to_struct(s_new)
    out["serials_check_ms"], (s_checked, _) = timed(
        lambda: host_check(serials, s_old_pb, s_new_pb), repeat)
    moved = [z for z in s_new["zones"]
             if s_checked.inputs["serials"][z] != s_first["serials"][z]]
    out["serials_moved"] = moved
    s_checked_pb = to_struct(s_checked.inputs)
    out["serials_diff_ms"], _ = timed(lambda: host_diff(serials, s_old_pb, s_checked_pb), repeat)
    out["struct_bytes_gate_news"] = len(g_new_pb.SerializeToString())
    out["state_bytes_gate"] = len(g_old_pb.SerializeToString())
    out["status_json_bytes"] = len(json.dumps(g_old_state["status"]))
    out["struct_bytes_serials_news"] = len(s_new_pb.SerializeToString())
    return out


SHAPES = {"old": ("old", "old"), "new": ("new", "new"), "migrate": ("old", "new")}


def measure_shapes(zones: int, repeat: int, shapes: list[str]) -> dict[str, Any]:
    return {name: measure(zones, repeat, *SHAPES[name]) for name in shapes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zones", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--shapes", default="old,new,migrate",
                    help="which of old, new, migrate (olds old, news new) to measure")
    args = ap.parse_args()
    shapes = [s for s in args.shapes.split(",") if s]
    small = measure_shapes(min(1000, args.zones), args.repeat, shapes)
    big = (measure_shapes(args.zones, args.repeat, shapes) if args.zones != 1000 else small)
    result = {"zones": args.zones, **big, "at_1000": small}
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
