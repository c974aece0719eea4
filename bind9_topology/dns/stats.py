"""BIND's statistics channel (JSON, /json/v1): per-zone serials and transfer counters.

Every named of the project serves it on 127.0.0.1 only (named.conf's
statistics-channels: port 8053 in a pod, where the exporter sidecar reads it; a port
of its own for each local named, where `python -m components local status` reads it).
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from typing import Any

#: Server-wide counters of transfers (BIND's nsstats and zonestats names).
TRANSFERS_OUT = ("XfrReqDone",)  # transfers this server completed for others (AXFR+IXFR)
TRANSFERS_IN = ("XfrSuccess", "XfrFail")  # transfers it requested as a secondary


@dataclass
class ServerStats:
    ok: bool
    error: str = ""
    version: str = ""
    zones: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> serial, type
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def transfers_out(self) -> int:
        return sum(self.counters.get(k, 0) for k in TRANSFERS_OUT)

    @property
    def transfers_in(self) -> int:
        return self.counters.get("XfrSuccess", 0)

    @property
    def transfers_failed(self) -> int:
        return self.counters.get("XfrFail", 0)


def _get(host: str, port: int, path: str, timeout: float) -> Any:
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as resp:
        return json.loads(resp.read(4 * 1024 * 1024))


def read_stats(host: str, port: int, timeout: float = 2.0) -> ServerStats:
    """The zones (class IN of the default view) and transfer counters of one named."""
    try:
        zones_doc = _get(host, port, "/json/v1/zones", timeout)
        server_doc = _get(host, port, "/json/v1/server", timeout)
    except (OSError, ValueError) as exc:
        return ServerStats(ok=False, error=f"statistics channel {host}:{port}: {exc}")
    zones: dict[str, dict[str, Any]] = {}
    for view, body in (zones_doc.get("views") or {}).items():
        if view == "_bind":
            continue
        for zone in body.get("zones") or []:
            if zone.get("class", "IN") == "IN":
                zones[str(zone.get("name"))] = {
                    "serial": zone.get("serial"), "type": zone.get("type"),
                    "loaded": zone.get("loaded")}
    counters: dict[str, int] = {}
    for group in ("nsstats", "zonestats"):
        for key, value in (server_doc.get(group) or {}).items():
            if isinstance(value, int):
                counters[key] = value
    return ServerStats(ok=True, version=str(server_doc.get("version", "")), zones=zones,
                       counters=counters)
