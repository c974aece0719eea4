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

from components.transfer_gate import TransferGateProvider  # noqa: E402
from components.zone_serial import ZoneSerialsProvider  # noqa: E402


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def gate_inputs(zones: int, edited: int | None = None) -> dict[str, Any]:
    def server(name: str, host: str) -> dict[str, Any]:
        return {"name": name, "host": host, "port": 53}

    out: dict[str, Any] = {}
    for n in range(zones):
        zone = f"z{n:05d}.bench"
        version = "v2" if n == edited else "v1"
        out[zone] = {
            "primaries": [server("primary", "10.0.1.10")],
            "secondaries": [server(f"sec-{c}", f"10.0.{c + 2}.20") for c in range(3)],
            "expectedDigest": hashlib.sha384(f"{zone}{version}".encode()).hexdigest(),
            "triggers": [_hash(f"{zone}{version}")],
        }
    serials = {f"z{n:05d}.bench": 2026120300 + (1 if n == edited else 0) for n in range(zones)}
    return {"zones": out, "expectedSerials": serials, "tsigKeyName": "transfer-key",
            "tsigAlgorithm": "hmac-sha256", "tsigSecret": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
            "deadlineSeconds": 300, "pollIntervalSeconds": 1, "kubeconfig": None,
            "kubeContext": None, PROVIDER_KEY: "provider-blob"}


def serial_inputs(zones: int, edited: int | None = None) -> dict[str, Any]:
    out = {}
    for n in range(zones):
        zone = f"z{n:05d}.bench"
        version = "v2" if n == edited else "v1"
        probe = [] if n == edited else [{"name": "primary", "host": "10.0.1.10", "port": 53}]
        out[zone] = {"contentHash": _hash(f"{zone}{version}"), "probe": probe,
                     "digest": hashlib.sha384(f"{zone}{version}".encode()).hexdigest()}
    return {"zones": out, "tsigKeyName": "transfer-key", "tsigAlgorithm": "hmac-sha256",
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


def measure(zones: int, repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {"zones": zones}
    # the gate: olds are the stored inputs (checked before: expectedSerials folded in)
    gate = TransferGateProvider()
    g_old = gate.check({}, gate_inputs(zones)).inputs
    g_old_state = {**g_old, "ready": True, "status": {
        z: {"ready": True, "servedSerial": 2026120300, "servers": {}} for z in g_old["zones"]}}
    g_new = gate_inputs(zones, edited=zones // 2)
    g_old_pb, g_new_pb = to_struct(g_old_state), to_struct(g_new)
    out["gate_check_ms"], (checked, _) = timed(lambda: host_check(gate, g_old_pb, g_new_pb),
                                               repeat)
    g_checked_pb = to_struct(checked.inputs)
    out["gate_diff_ms"], diff = timed(lambda: host_diff(gate, g_old_pb, g_checked_pb), repeat)
    out["gate_diff_changes"] = diff.changes
    out["gate_provider_check_ms"], _ = timed(
        lambda: gate.check(copy.deepcopy(g_old_state), copy.deepcopy(g_new)), repeat)
    # the serials: one zone's content hash moved
    serials = ZoneSerialsProvider()
    s_first = serials.check({}, {**serial_inputs(zones), "zones": {
        z: {**e, "probe": []} for z, e in serial_inputs(zones)["zones"].items()}}).inputs
    s_new = serial_inputs(zones, edited=zones // 2)
    s_old_pb, s_new_pb = to_struct(s_first), to_struct(s_new)
    out["serials_check_ms"], (s_checked, _) = timed(
        lambda: host_check(serials, s_old_pb, s_new_pb), repeat)
    moved = [z for z in s_new["zones"]
             if s_checked.inputs["serials"][z] != s_first["serials"][z]]
    out["serials_moved"] = moved
    s_checked_pb = to_struct(s_checked.inputs)
    out["serials_diff_ms"], _ = timed(lambda: host_diff(serials, s_old_pb, s_checked_pb), repeat)
    out["struct_bytes_gate"] = len(g_new_pb.SerializeToString())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zones", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    small = measure(min(1000, args.zones), args.repeat)
    big = measure(args.zones, args.repeat) if args.zones != small["zones"] else small
    result = {"zones": args.zones, **{k: v for k, v in big.items() if k != "zones"},
              "at_1000": small}
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
