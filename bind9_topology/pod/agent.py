#!/usr/bin/env python3
"""bind9-topology's in-pod agent: a change reaches every pod of an instance at once.

secondary  named sends NOTIFY to the agent (127.0.0.1, signed with the transfer key) each
           time it has loaded a new version of a zone; the agent answers it and relays it,
           signed, to every other pod of the instance, which then transfer from their
           primaries at once instead of at their refresh timers. A NOTIFY sent to a
           Service address reaches one pod; this reaches the others. The pods come from
           the Kubernetes API (a Role in the instance's namespace: list pods), or from
           --peers (fixed addresses).
primary    the agent keeps named's zone directory equal to the instance's zone
           ConfigMaps: it watches them through the API (a Role: list and watch
           configmaps), or reads the mounted copy that the kubelet refreshes (--source,
           slower, no API needed), writes each zone file whose bytes changed and runs
           `rndc reload <zone>`. A record change needs no pod restart: named computes the
           difference (ixfr-from-differences) and notifies the secondaries.

Standard library and dnspython only: it runs from the instance's ConfigMap with the
image's python3. Every network wait is bounded; when the API cannot be reached the agent
retries with backoff while named keeps serving (the transfer gate decides readiness).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import http.client
import io
import json
import os
import re
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
KEY_STATEMENT = re.compile(
    r'key\s+"(?P<name>[^"]+)"\s*\{\s*algorithm\s+(?P<alg>[A-Za-z0-9.-]+)\s*;'
    r'\s*secret\s+"(?P<secret>[^"]+)"\s*;\s*\}\s*;')
ZONE_FILE = re.compile(r"^db\.(?P<zone>.+?)(?:\.part\d{4})?$")
#: how long one NOTIFY or SOA query of a relay waits for its answer, and how long a relay
#: keeps after a peer that does not serve the serial yet (NOTIFY again, with backoff)
RELAY_TIMEOUT_S, FOLLOW_S = 1.0, 60.0
#: how long the pod list of the API is reused for relays that come together
PEERS_TTL_S = 1.0
#: a (zone, serial) relayed within this many seconds is not relayed again
SEEN_TTL_S = 300.0
WATCH_TIMEOUT_S = 240
BACKOFF_MAX_S = 30.0


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    print(f"{stamp}Z bind9-agent: {message}", flush=True)


def read_key(path: str) -> dns.tsig.Key:
    """The TSIG key of a named `key` statement file (the Secret's <key>.conf)."""
    with open(path, encoding="utf-8") as fh:
        found = KEY_STATEMENT.search(fh.read())
    if found is None:
        raise SystemExit(f"bind9-agent: {path} holds no key statement")
    return dns.tsig.Key(found["name"], found["secret"], found["alg"])


def zone_of_file(key: str) -> str | None:
    """db.<zone> and its parts db.<zone>.partNNNN -> <zone>; anything else -> None."""
    found = ZONE_FILE.match(key)
    return found["zone"] if found else None


#: a packed zone ConfigMap's binaryData key (render/manifests.py archive_key)
ARCHIVE_SUFFIX = ".tar.gz"
#: the most a packed shard may expand to (ConfigMaps hold 1 MiB; zone files compress
#: less than 16x): a corrupt or hostile archive cannot fill the pod's memory
UNPACKED_MAX = 16 * 2**20


def unpack(blob: bytes) -> dict[str, bytes]:
    """The zone files of a packed shard (a tar.gz of regular files, render/manifests.py
    pack_files): file name -> bytes. Other members and names with '/' are skipped."""
    files: dict[str, bytes] = {}
    with gzip.GzipFile(fileobj=io.BytesIO(blob)) as gz:
        raw = gz.read(UNPACKED_MAX + 1)
    if len(raw) > UNPACKED_MAX:
        raise ValueError(f"packed zone ConfigMap expands past {UNPACKED_MAX} bytes")
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for member in tar:
            body = tar.extractfile(member) if member.isfile() else None
            if body is not None and "/" not in member.name:
                files[member.name] = body.read()
    return files


def configmap_files(obj: dict[str, Any]) -> dict[str, str | bytes]:
    """The files a zone ConfigMap (as the API returns it) holds: its data, and each
    packed shard of its binaryData expanded."""
    files: dict[str, str | bytes] = dict(obj.get("data") or {})
    for key, value in sorted((obj.get("binaryData") or {}).items()):
        if key.endswith(ARCHIVE_SUFFIX):
            files.update(unpack(base64.b64decode(value)))
    return files


# --------------------------------------------------------------------------- the API


class ApiError(Exception):
    pass


class KubeApi:
    """The few calls the agent makes, with the pod's service account (namespaced Role)."""

    def __init__(self, host: str, port: int, sa_dir: str = SA_DIR) -> None:
        self.host, self.port, self.sa_dir = host, port, sa_dir
        self.context = ssl.create_default_context(cafile=os.path.join(sa_dir, "ca.crt"))

    @classmethod
    def in_cluster(cls, sa_dir: str = SA_DIR) -> KubeApi:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        if not host:
            raise SystemExit("bind9-agent: KUBERNETES_SERVICE_HOST is not set (not in a pod?)")
        return cls(host, int(os.environ.get("KUBERNETES_SERVICE_PORT", "443")), sa_dir)

    def namespace(self) -> str:
        with open(os.path.join(self.sa_dir, "namespace"), encoding="utf-8") as fh:
            return fh.read().strip()

    def _open(self, path: str, timeout: float) -> tuple[http.client.HTTPSConnection,
                                                         http.client.HTTPResponse]:
        with open(os.path.join(self.sa_dir, "token"), encoding="utf-8") as fh:
            token = fh.read().strip()  # read each time: the kubelet rotates it
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context,
                                           timeout=timeout)
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}",
                                           "Accept": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            body = response.read(400).decode(errors="replace")
            conn.close()
            raise ApiError(f"GET {path.split('?')[0]}: HTTP {response.status}: {body}")
        return conn, response

    def get(self, path: str, timeout: float = 10.0) -> dict[str, Any]:
        conn, response = self._open(path, timeout)
        try:
            return dict(json.loads(response.read()))
        finally:
            conn.close()

    def watch(self, path: str) -> Iterator[dict[str, Any]]:
        """The events of a watch, one by one, until the server ends it."""
        conn, response = self._open(path, WATCH_TIMEOUT_S + 30.0)
        try:
            while True:
                line = response.readline()
                if not line:
                    return
                if line.strip():
                    yield dict(json.loads(line))
        finally:
            conn.close()


def retrying(what: str, step: Callable[[], None], stop: threading.Event) -> None:
    """Run *step* again and again; a failure waits 1, 2, 4 ... 30 s before the next."""
    backoff = 1.0
    while not stop.is_set():
        started = time.monotonic()
        try:
            step()
        except Exception as exc:
            log(f"{what}: {exc}; again in {backoff:.0f} s")
            stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            continue
        if time.monotonic() - started > 60:
            backoff = 1.0


# --------------------------------------------------------------------------- secondary


class Relay:
    """Answers named's NOTIFY on the loopback and relays it to the instance's other pods."""

    def __init__(self, key: dns.tsig.Key, listen: tuple[str, int], dns_port: int,
                 peers: Callable[[], list[str]]) -> None:
        self.key, self.listen, self.dns_port, self.peers = key, listen, dns_port, peers
        self.keyring = {key.name: key}
        self.seen: dict[tuple[str, int | None], float] = {}
        self.pool = ThreadPoolExecutor(max_workers=16)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(listen)

    def serve(self, stop: threading.Event) -> None:
        self.sock.settimeout(0.5)
        log(f"relaying NOTIFY from {self.listen[0]}:{self.listen[1]} to the other pods")
        while not stop.is_set():
            try:
                wire, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.handle(wire, source)

    def handle(self, wire: bytes, source: Any) -> None:
        try:
            msg = dns.message.from_wire(wire, keyring=self.keyring)
        except Exception as exc:
            log(f"ignored a message from {source[0]}: {exc}")
            return
        if msg.opcode() != dns.opcode.NOTIFY or not msg.had_tsig or not msg.question:
            log(f"ignored a message from {source[0]}: not a signed NOTIFY")
            return
        response = dns.message.make_response(msg)
        response.flags |= dns.flags.AA
        self.sock.sendto(response.to_wire(), source)
        zone = msg.question[0].name
        soa = next((r for r in msg.answer if r.rdtype == dns.rdatatype.SOA), None)
        serial = int(soa[0].serial) if soa is not None and len(soa) else None
        now = time.monotonic()
        self.seen = {k: t for k, t in self.seen.items() if now - t < SEEN_TTL_S}
        if (zone.to_text(), serial) in self.seen and serial is not None:
            return
        self.seen[(zone.to_text(), serial)] = now
        self.pool.submit(self.relay, zone, soa)

    def relay(self, zone: dns.name.Name, soa: Any) -> None:
        try:
            peers = self.peers()
        except Exception as exc:
            log(f"NOTIFY {zone}: the other pods are unknown ({exc}); they refresh on their timers")
            return
        for peer in peers:
            self.pool.submit(self.notify_one, zone, soa, peer)

    def notify_one(self, zone: dns.name.Name, soa: Any, peer: str) -> None:
        """NOTIFY *peer* until it serves the serial (or a later one), for FOLLOW_S at most.

        One NOTIFY is not always enough: the peer asks its primaries (a Service) for the
        SOA, and a primary pod that has not reloaded yet answers the old serial; the peer
        then waits for its refresh timer. So the peer's serial is checked after each
        NOTIFY and the NOTIFY sent again, with backoff, until the peer has caught up."""
        host, port = split_address(peer, self.dns_port)
        serial = int(soa[0].serial) if soa is not None and len(soa) else None
        started = time.monotonic()
        wait, sent, reason = 0.2, 0, ""
        while time.monotonic() - started < FOLLOW_S:
            if sent and serial is not None:
                served = self.serial_of(zone, host, port)
                if served is not None and serial_at_least(served, serial):
                    took = (time.monotonic() - started) * 1000
                    log(f"NOTIFY {zone} serial {serial} -> {peer}: serving it "
                        f"({took:.0f} ms, {sent} NOTIFY)")
                    return
                reason = f"serves {served}"
            query = dns.message.make_query(zone, dns.rdatatype.SOA)
            query.flags = dns.flags.AA  # (the opcode lives in the flags: set it after)
            query.set_opcode(dns.opcode.NOTIFY)
            if soa is not None:
                query.answer.append(soa)
            query.use_tsig(self.keyring, keyname=self.key.name)
            try:
                answer = dns.query.udp(query, host, port=port, timeout=RELAY_TIMEOUT_S)
                sent += 1
                reason = dns.rcode.to_text(answer.rcode())
                if serial is None:  # nothing to follow
                    log(f"NOTIFY {zone} -> {peer}: {reason}")
                    return
            except (dns.exception.DNSException, OSError) as exc:
                reason = f"{type(exc).__name__} {exc}".strip()
            time.sleep(wait)
            wait = min(wait * 2, 5.0)
        log(f"NOTIFY {zone} serial {serial} -> {peer}: not serving it after {FOLLOW_S:.0f} s "
            f"({sent} NOTIFY, last: {reason}); it refreshes on its timer")

    def serial_of(self, zone: dns.name.Name, host: str, port: int) -> int | None:
        query = dns.message.make_query(zone, dns.rdatatype.SOA)
        query.flags = 0  # no recursion desired: ask the server as an authority
        try:
            answer = dns.query.udp(query, host, port=port, timeout=RELAY_TIMEOUT_S)
        except (dns.exception.DNSException, OSError):
            return None
        soa = next((r for r in answer.answer if r.rdtype == dns.rdatatype.SOA), None)
        return int(soa[0].serial) if soa is not None and len(soa) else None


def serial_at_least(served: int, wanted: int) -> bool:
    """RFC 1982: *served* is *wanted* or later."""
    return served == wanted or 0 < (served - wanted) % 2**32 < 2**31


def split_address(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if sep and host and "]" not in port and host.count(":") == 0:
        return host, int(port)
    return text.strip("[]"), default_port


def api_peers(api: KubeApi, namespace: str, instance: str, own_ip: str) -> Callable[[], list[str]]:
    """The addresses of the instance's other running pods, asked at most once a second."""
    selector = urllib.parse.quote(f"instance={instance}")
    path = f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}"
    cache: list[Any] = [0.0, []]
    lock = threading.Lock()

    def peers() -> list[str]:
        with lock:
            if time.monotonic() - cache[0] < PEERS_TTL_S:
                return list(cache[1])
            items = api.get(path).get("items") or []
            found = sorted({
                str(p["status"]["podIP"]) for p in items
                if (p.get("status") or {}).get("podIP")
                and not (p.get("metadata") or {}).get("deletionTimestamp")
                and p["status"].get("phase") == "Running"} - {own_ip})
            cache[:] = [time.monotonic(), found]
            return list(found)

    return peers


# --------------------------------------------------------------------------- primary


class ZoneSync:
    """Keeps named's zone directory equal to the zone ConfigMaps' data and reloads named."""

    def __init__(self, zone_dir: str, rndc: list[str]) -> None:
        self.zone_dir, self.rndc = zone_dir, rndc

    def apply(self, data: dict[str, str | bytes]) -> list[str]:
        """Write the files of *data* whose bytes differ; reload their zones; return them."""
        changed: set[str] = set()
        for key, text in sorted(data.items()):
            zone = zone_of_file(key)
            if zone is None or "/" in key:
                continue
            path = os.path.join(self.zone_dir, key)
            body = text.encode() if isinstance(text, str) else text
            with contextlib.suppress(FileNotFoundError), open(path, "rb") as fh:
                if fh.read() == body:
                    continue
            tmp = f"{path}.agent-{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            changed.add(zone)
        for zone in sorted(changed):
            self.reload(zone)
        return sorted(changed)

    def reload(self, zone: str, tries: int = 30) -> None:
        """`rndc reload <zone>`, retried while named is not answering yet (at start)."""
        out = ""
        for _ in range(tries):
            try:
                done = subprocess.run([*self.rndc, "reload", zone], capture_output=True,
                                      text=True, timeout=30, check=False)
            except subprocess.TimeoutExpired:
                out = "rndc timed out"
                continue
            out = (done.stdout + done.stderr).strip()
            if done.returncode == 0:
                log(f"reloaded {zone}: {out}")
                return
            time.sleep(1.0)
        log(f"could not reload {zone}: {out}")

    def follow_api(self, api: KubeApi, namespace: str, instance: str, maps: set[str],
                   stop: threading.Event) -> None:
        """List the zone ConfigMaps, apply them, then apply every change the watch sends."""
        selector = urllib.parse.quote(f"instance={instance}")
        base = f"/api/v1/namespaces/{namespace}/configmaps?labelSelector={selector}"

        def step() -> None:
            listing = api.get(base, timeout=60.0)
            for item in listing.get("items") or []:
                if item["metadata"]["name"] in maps:
                    self.apply(configmap_files(item))
            version = listing["metadata"]["resourceVersion"]
            log(f"zone ConfigMaps in sync at version {version}; watching")
            while not stop.is_set():
                query = (f"&watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_TIMEOUT_S}"
                         f"&resourceVersion={version}")
                for event in api.watch(base + query):
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":  # e.g. 410 Gone: list again
                        raise ApiError(f"watch ended: {obj.get('message', obj)}")
                    version = (obj.get("metadata") or {}).get("resourceVersion", version)
                    if (event.get("type") in ("ADDED", "MODIFIED")
                            and obj["metadata"].get("name") in maps):
                        self.apply(configmap_files(obj))

        retrying("zone ConfigMaps", step, stop)

    def follow_directory(self, source: str, stop: threading.Event, every_s: float) -> None:
        """Apply the mounted ConfigMaps (the kubelet swaps their ..data link on a change)."""
        marker = ""

        def step() -> None:
            nonlocal marker
            while not stop.is_set():
                now = ",".join(os.path.realpath(os.path.join(source, d, "..data"))
                               for d in sorted(os.listdir(source)))
                if now != marker:
                    data: dict[str, str | bytes] = {}
                    for shard in sorted(os.listdir(source)):
                        folder = os.path.join(source, shard)
                        for key in sorted(os.listdir(folder)):
                            if key.startswith(".."):
                                continue
                            with open(os.path.join(folder, key), "rb") as fh:
                                body = fh.read()
                            if key.endswith(ARCHIVE_SUFFIX):  # a packed shard, as mounted
                                data.update(unpack(body))
                            else:
                                data[key] = body
                    self.apply(data)
                    marker = now
                stop.wait(every_s)

        retrying(f"mounted zone ConfigMaps in {source}", step, stop)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=("primary", "secondary"))
    parser.add_argument("--instance", required=True)
    parser.add_argument("--key-file", required=True, help="the transfer key's named.conf file")
    parser.add_argument("--listen", default="127.0.0.1:5354", help="secondary: NOTIFY in")
    parser.add_argument("--dns-port", type=int, default=53, help="the pods' DNS port")
    parser.add_argument("--peers", default=None,
                        help="secondary: fixed addresses (host[:port],...) instead of the API")
    parser.add_argument("--zone-dir", default="/var/lib/bind/zones", help="primary: named's")
    parser.add_argument("--zone-maps", default="", help="primary: the zone ConfigMaps' names")
    parser.add_argument("--source", default=None,
                        help="primary: the mounted zone ConfigMaps (one folder each), read "
                             "instead of the API")
    parser.add_argument("--poll", type=float, default=2.0, help="--source: seconds per look")
    parser.add_argument("--rndc-port", type=int, default=953)
    parser.add_argument("--rndc-host", default="127.0.0.1")
    parser.add_argument("--sa-dir", default=SA_DIR)
    args = parser.parse_args(argv)
    key = read_key(args.key_file)
    stop = threading.Event()
    use_api = args.peers is None if args.role == "secondary" else args.source is None
    api = KubeApi.in_cluster(args.sa_dir) if use_api else None
    if args.role == "secondary":
        host, port = split_address(args.listen, 5354)
        if api is not None:
            peers = api_peers(api, api.namespace(), args.instance, os.environ.get("POD_IP", ""))
        else:
            fixed = [p for p in (args.peers or "").split(",") if p]
            peers = lambda: list(fixed)  # noqa: E731
        Relay(key, (host, port), args.dns_port, peers).serve(stop)
        return 0
    rndc = ["rndc", "-k", args.key_file, "-s", args.rndc_host, "-p", str(args.rndc_port)]
    sync = ZoneSync(args.zone_dir, rndc)
    if api is not None:
        maps = {m for m in args.zone_maps.split(",") if m}
        sync.follow_api(api, api.namespace(), args.instance, maps, stop)
    else:
        sync.follow_directory(str(args.source), stop, args.poll)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
