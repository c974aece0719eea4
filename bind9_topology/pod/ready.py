"""Readiness of a named pod at any zone count: one request to named's statistics channel.

The pod's ready.sh runs this (through the image's python3, standard library only) until
every zone the pod must serve has been loaded once: named lists each zone of its views on
/json/v1/zones, with a `serial` only once the zone is loaded (a secondary's after its first
transfer, a primary's after its file parsed). One request and one JSON parse cost about
the same at 10 zones and at 10,000, where asking each zone by DNS (one `dig` batch) grew
past the probe's timeout at 1,000 zones on a busy node. ready.sh then asks the first zone
by DNS (NOERROR with the AA bit) and marks the pod ready; later probes ask that one only.
The request is plain HTTP/1.0 over a socket, run as `python3 -I -S`: no urllib, ssl or
site imports, a quarter of the CPU of a urllib request (about 20 ms), which a pod starved
by its neighbours needs to finish within the probe's timeout.

    python3 ready.py STATS_PORT ZONE...      exit 0: every ZONE loaded; 1: not (why on stdout)
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any

#: views of named's own (CHAOS class builtins), never one of the pod's zones
_BUILTIN_VIEWS = ("_bind",)


def _key(name: str) -> str:
    return name.rstrip(".").lower()


def loaded_zones(doc: dict[str, Any]) -> set[str]:
    """The names of the IN zones named has loaded (a `serial` in the statistics)."""
    loaded: set[str] = set()
    for view, body in (doc.get("views") or {}).items():
        if view in _BUILTIN_VIEWS or not isinstance(body, dict):
            continue
        for zone in body.get("zones") or []:
            if (isinstance(zone, dict) and zone.get("class", "IN") == "IN"
                    and isinstance(zone.get("serial"), int)
                    and not isinstance(zone.get("serial"), bool)):
                loaded.add(_key(str(zone.get("name", ""))))
    return loaded


def not_loaded(doc: dict[str, Any], zones: list[str]) -> list[str]:
    """Of *zones*, those named has not loaded, in the order given."""
    loaded = loaded_zones(doc)
    return [zone for zone in zones if _key(zone) not in loaded]


def fetch(port: int, path: str, timeout: float = 3.0) -> bytes:
    """The body of GET *path* from named's statistics channel on 127.0.0.1:*port*."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise OSError(f"answered {status.decode(errors='replace')!r}")
    return body


def main(argv: list[str]) -> int:
    if not argv or not argv[0].isdigit():
        print("usage: ready.py STATS_PORT ZONE...")
        return 2
    port, zones = int(argv[0]), argv[1:]
    where = f"named's statistics channel 127.0.0.1:{port}/json/v1/zones"
    try:
        doc = json.loads(fetch(port, "/json/v1/zones"))
    except (OSError, ValueError) as exc:
        print(f"not ready: {where}: {exc}")
        return 1
    if not isinstance(doc, dict):
        print(f"not ready: {where} answered {type(doc).__name__}, not an object")
        return 1
    missing = not_loaded(doc, zones)
    if missing:
        print(f"not ready: {len(missing)} of {len(zones)} zones not loaded yet "
              f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
