"""The local runner: a stack's topology in real `named` processes on this machine.

    python -m components local up --stack prod [--once] [--json]
    python -m components local up --all
    python -m components local status [--json]
    python -m components local down

Each instance is rendered with the same code as its ConfigMaps (a Placement
rooted in ``.local-run/<stack>/<instance>/``, 127.0.0.1 and a port of its own),
every address of the stack config that an instance of the project owns (its
service.loadBalancerIP or clusterIP) is mapped to that instance's local server, and
addresses no instance owns (external primaries) are used as they are. Then
the same gate code as `pulumi up` (bind9_topology.dns.gate) checks every zone.

Ports are deterministic: 15301 + the index of the instance in the sorted list
of every instance of the project (a busy port that is not ours is replaced
by a free one). Serials come from ``.local-run/serials.json``; the TSIG secret
from $BIND9_TSIG_SECRET or ``.local-run/tsig.secret`` (0600, made once, never
printed). Servers keep running after `up`; their pids are in
``.local-run/state.json``; `down` stops exactly those pids.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypedDict

from bind9_topology.config.config_size import check_stack
from bind9_topology.config.model import Instance, TopologyError
from bind9_topology.config.topology import (
    SECRET_ENV,
    Topology,
    list_stacks,
    load_topology,
    new_tsig_secret,
    read_stack_file,
)

RUN_DIR = ".local-run"
BASE_PORT = 15301
STATS_BASE_PORT = 18301
#: a primary's rndc channel (a changed zone file is loaded by `rndc reload <zone>`)
CONTROL_BASE_PORT = 18601
#: at most this many changed zones go by `rndc reload <zone>`, more by one SIGHUP.
#: bench/gate_latency.py at 10,000 zones loaded: one zone, rndc 48 ms vs SIGHUP 1,516 ms
#: to every secondary; 50 zones at once, SIGHUP 1.0 s vs an rndc process each 2.5 s.
RNDC_MAX_ZONES = 10
HOST = "127.0.0.1"
STATE_VERSION = 1


@dataclass
class Server:
    stack: str
    inst: Instance
    region: str
    port: int
    directory: Path
    stats_port: int = 0  # BIND's statistics channel (JSON) on 127.0.0.1
    control_port: int = 0  # a primary's rndc channel on 127.0.0.1 (signed with the TSIG key)

    @property
    def key(self) -> str:
        return f"{self.stack}/{self.inst.name}"

    @property
    def conf(self) -> Path:
        return self.directory / "etc/bind/named.conf"

    @property
    def log(self) -> Path:
        return self.directory / "named.log"


# --------------------------------------------------------------------------- state


def run_dir(project: Path) -> Path:
    return project / RUN_DIR


class ServerRecord(TypedDict, total=False):
    """A server `up` started, as state.json keeps it. Not total: a file an older runner
    wrote may lack a key (statsPort), so readers use .get."""

    stack: str
    instance: str
    role: Literal["primary", "secondary"]
    region: str
    address: str | None  # the fixed service address it stands for
    host: str
    port: int
    pid: int
    statsPort: int  # 0: no statistics channel
    controlPort: int  # a primary's rndc channel (0 or missing: none, SIGHUP instead)
    conf: str  # its named.conf (pid_alive checks the command line names it)
    dir: str
    startedAt: str  # ISO 8601 UTC


class RunState(TypedDict):
    """.local-run/state.json: every server `up` started, by "<stack>/<instance>"."""

    version: int
    servers: dict[str, ServerRecord]


def load_state(project: Path) -> RunState:
    path = run_dir(project) / "state.json"
    try:
        data: RunState = json.loads(path.read_text())  # as save_state wrote it
    except (FileNotFoundError, json.JSONDecodeError):
        return {"version": STATE_VERSION, "servers": {}}
    data.setdefault("servers", {})
    return data


def save_state(project: Path, state: RunState) -> None:
    path = run_dir(project) / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def pid_alive(pid: int | None, conf: str | None = None) -> bool:
    """True when *pid* runs (not a zombie) and, if given, its command line names *conf*."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rpartition(")")[2].split()[0] == "Z":
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
        return False
    return conf is None or conf in cmdline


def tsig_secret(project: Path) -> str:
    env = os.environ.get(SECRET_ENV)
    if env:
        return env
    path = run_dir(project) / "tsig.secret"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = new_tsig_secret()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


class LocalRunnerMissing(Exception):
    """gate.localRunner is set but the runner does not run this stack's servers."""


def runner_address_map(project: Path, stack: str, spec: Any) -> dict[str, str]:
    """Every address of *stack*'s config -> the loopback server `local up` runs for it.

    For a stack with ``gate.localRunner`` (the local stack): `pulumi up` then probes
    exactly the servers `python -m components local up --stack <stack>` started, read
    from the runner's state file, and nothing else. Raises :class:`LocalRunnerMissing`
    (a message with the command to run) when an instance of the stack is not running
    there, or when the stack names an address no running local server stands for.
    """
    import ipaddress

    from bind9_topology.dns.gate import gate_plans, map_address

    state = load_state(project)
    running: dict[str, tuple[str, int]] = {}
    for info in state["servers"].values():
        if info.get("stack") != stack or not pid_alive(info.get("pid"), info.get("conf")):
            continue
        host, port = str(info.get("host")), int(info.get("port") or 0)
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).is_loopback and 0 < port < 65536:
                running[str(info.get("instance"))] = (host, port)
    start = f"python -m components local up --stack {stack}"
    missing = [i.name for i in spec.instances if i.name not in running]
    if missing:
        raise LocalRunnerMissing(
            f"bind9-topology:gate.localRunner: the local runner is not running "
            f"{', '.join(missing)} of stack {stack} (state: {run_dir(project) / 'state.json'}); "
            f"start it first: `{start}`, then run pulumi again. This stack's gate only "
            "probes the loopback servers the runner started.")
    unowned = [i.name for i in spec.instances if not i.service.fixed_address]
    if unowned:
        raise LocalRunnerMissing(
            f"bind9-topology:gate.localRunner: instances {', '.join(unowned)} have no fixed "
            "service address (service.loadBalancerIP or clusterIP), so the gate could not "
            "tell which local server stands for them; give each one")
    amap = {i.service.fixed_address: "{}:{}".format(*running[i.name]) for i in spec.instances}
    # Everything the gate and the serial probe would reach must be one of those servers.
    addresses = [a for plan in gate_plans(spec) for _, a in (*plan.primaries, *plan.secondaries)
                 if a]
    addresses += [a for z in spec.zones for a in z.alsoNotify]
    addresses += [a for z in spec.zones
                  for a in (z.secondaryConfig.primaryServers if z.secondaryConfig else [])]
    outside = []
    for address in dict.fromkeys(addresses):
        host, _ = map_address(address, amap)
        if not ipaddress.ip_address(host).is_loopback:
            outside.append(address)
    if outside:
        raise LocalRunnerMissing(
            f"bind9-topology:gate.localRunner: {', '.join(outside)} is not an address of an "
            f"instance of stack {stack}, so no local server stands for it; the local stack "
            "only sends traffic to the loopback servers the runner started (remove it, or "
            "make it an instance's service address)")
    return amap


# --------------------------------------------------------------------------- planning


def load_stack(project: Path, stack: str, secret: str) -> Topology:
    """The stack as `pulumi up` would check it, with the local run's own TSIG secret.

    A secret set with `pulumi config set --secret` (a {secure: ...} value) is not
    readable here and not needed; one written in clear is refused as on every path.
    """
    from bind9_topology.config.model import TopologyError
    from bind9_topology.config.topology import clear_secret_issue

    raw = read_stack_file(project, stack)
    written = raw.pop("tsigSecret", None)
    topo = load_topology(raw, stack=stack, project_dir=project, tsig_secret=secret)
    if isinstance(written, str) and written:
        raise TopologyError([clear_secret_issue(stack)], topo.warnings)
    from bind9_topology.config.topology import (
        resolve_offline,  # primaryStack: read from its stack file
    )

    return resolve_offline(topo, project)


def _check_requested(project: Path, stack: str, secret: str) -> Topology:
    """A stack asked for by name, checked as load_stack does and also against the size of
    its config in the engine's PULUMI_CONFIG: the runner needs no engine, but the same
    stack's `pulumi up` would stop at 'argument list too long', so it is said here, first.
    (Stacks started only because they own primaries are not refused for it.)"""
    too_big, near = check_stack(project, stack)
    try:
        topo = load_stack(project, stack, secret)
    except TopologyError as exc:
        raise TopologyError([*exc.issues, *too_big], [*exc.warnings, *near]) from None
    if too_big:
        raise TopologyError(too_big, [*topo.warnings, *near])
    return replace(topo, warnings=(*topo.warnings, *near))


def _existing_secret(project: Path) -> str | None:
    """The local run's secret if one exists already (nothing is written here)."""
    env = os.environ.get(SECRET_ENV)
    if env:
        return env
    path = run_dir(project) / "tsig.secret"
    return path.read_text().strip() if path.exists() else None


def project_topologies(project: Path, secret: str) -> dict[str, Topology]:
    """Every stack of the project that validates (the others are reported when asked for)."""
    out: dict[str, Topology] = {}
    for stack in list_stacks(project):
        with contextlib.suppress(TopologyError):
            out[stack] = load_stack(project, stack, secret)
    return out


def assign_ports(
    topos: dict[str, Topology], project: Path, state: RunState
) -> dict[str, Server]:
    from bind9_topology.local.named_process import _port_free, free_port

    servers: dict[str, Server] = {}
    taken: set[int] = set()
    keys = sorted((s, i.name) for s, t in topos.items() for i in t.spec.instances)
    for index, (stack, name) in enumerate(keys):
        topo = topos[stack]
        inst = next(i for i in topo.spec.instances if i.name == name)
        directory = run_dir(project) / stack / name
        old = state["servers"].get(f"{stack}/{name}") or {}
        port = BASE_PORT + index
        if old.get("port") and pid_alive(old.get("pid"), old.get("conf")):
            port = int(old["port"])  # ours, still running
        elif port in taken or not _port_free(HOST, port):
            port = free_port(HOST)
        taken.add(port)
        region = inst.labels.get("region", topo.spec.region)
        servers[f"{stack}/{name}"] = Server(
            stack, inst, region, port, directory, _stats_port(index, old, taken),
            _control_port(index, old, taken) if inst.role == "primary" else 0)
    return servers


def _control_port(index: int, old: ServerRecord, taken: set[int]) -> int:
    """A primary's rndc channel: CONTROL_BASE_PORT + index, kept while ours runs."""
    from bind9_topology.local.named_process import _port_free, free_port

    port = CONTROL_BASE_PORT + index
    if old.get("controlPort") and pid_alive(old.get("pid"), old.get("conf")):
        port = int(old["controlPort"])
    elif port in taken or not _port_free(HOST, port):
        port = free_port(HOST)
    taken.add(port)
    return port


def _stats_port(index: int, old: ServerRecord, taken: set[int]) -> int:
    """The statistics channel's port: STATS_BASE_PORT + index, kept while ours runs."""
    from bind9_topology.local.named_process import _port_free, free_port

    port = STATS_BASE_PORT + index
    if old.get("statsPort") and pid_alive(old.get("pid"), old.get("conf")):
        port = int(old["statsPort"])
    elif port in taken or not _port_free(HOST, port):
        port = free_port(HOST)
    taken.add(port)
    return port


def owners(servers: dict[str, Server]) -> dict[str, Server]:
    """Fixed service address -> the local server that stands for it."""
    return {s.inst.service.fixed_address: s for s in servers.values()
            if s.inst.service.fixed_address}


def stacks_needed(requested: list[str], topos: dict[str, Topology],
                  servers: dict[str, Server]) -> list[str]:
    """The requested stacks plus those owning the primaries they transfer from."""
    from bind9_topology.config.model import parse_server

    own = owners(servers)
    needed = list(requested)
    for stack in needed:  # grows while iterating
        for zone in topos[stack].spec.zones:
            for address in (zone.secondaryConfig.primaryServers if zone.secondaryConfig else []):
                host, port = parse_server(address)
                owner = own.get(host)
                if port == 53 and owner is not None and owner.stack not in needed:
                    needed.append(owner.stack)
    return needed


def absent_servers(topos: dict[str, Topology], stacks: list[str], servers: dict[str, Server],
                   state: RunState) -> dict[str, list[Server]]:
    """Servers of stacks this run does not start that the gates of *stacks* wait for (a
    catalog's `alsoNotify` secondaries, checked per member), and that are not running:
    by their stack. The gate would wait for them until its deadline."""
    from bind9_topology.dns.gate import gate_plans

    own = owners(servers)
    absent: dict[str, list[Server]] = {}
    for stack in stacks:
        for plan in gate_plans(topos[stack].spec):
            for _, address in (*plan.primaries, *plan.secondaries):
                owner = own.get(address) if address else None
                if owner is None or owner.stack in stacks:
                    continue
                info = state["servers"].get(owner.key) or {}
                if pid_alive(info.get("pid"), info.get("conf")):
                    continue
                found = absent.setdefault(owner.stack, [])
                if owner not in found:
                    found.append(owner)
    return absent


def absent_message(requested: list[str], absent: dict[str, list[Server]],
                   topos: dict[str, Topology], deadline: float) -> str:
    """What `local up` says at once when its gate waits for servers it does not run."""
    names = "; ".join(
        f"{', '.join(f'{s.key} ({s.inst.service.fixed_address})' for s in found)} "
        f"of stack {stack}" for stack, found in absent.items())
    starts = " and ".join(f"`python -m components local up --stack {s}`" for s in absent)
    verify = ""
    if any(topos[s].spec.catalog is not None for s in requested):
        verify = ("; or, to gate the catalog at the primaries only, set "
                  "catalog.verifySecondaries: false in the stack file")
    return (f"local up: the gate waits for {names}, which the runner is not running: it "
            f"would wait for them until its deadline ({deadline:g} s) and then fail. Start "
            f"them: {starts} (it also starts the stacks whose primaries they transfer "
            f"from), or every stack: `python -m components local up --all`{verify}")


# --------------------------------------------------------------------------- the time bound


class RunTimeout(Exception):
    """`local up --timeout N` ran out; the message says during which step."""


class Budget:
    """`--timeout N` as a bound on the whole run, not only on the gate.

    Every wait takes at most what is left (:meth:`left`), steps check it between
    themselves (:meth:`check`), and a SIGALRM at the end (:meth:`hard_limit`, main
    thread only) interrupts work that does not wait, such as building or digesting a
    large zone. Starting a server and recording its pid is :meth:`critical`: the alarm
    is held until the pid is in the state file, so no named is left unrecorded.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.start = time.monotonic()
        self.end = None if seconds is None else self.start + seconds
        self.step = "starting"
        self._critical = 0
        self._pending = False

    def left(self, cap: float) -> float:
        if self.end is None:
            return cap
        return max(0.0, min(cap, self.end - time.monotonic()))

    def expired(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end

    def message(self) -> str:
        return (f"local up: --timeout {self.seconds:g}s reached after "
                f"{time.monotonic() - self.start:.1f}s while {self.step}")

    def check(self, step: str | None = None) -> None:
        if step is not None:
            self.step = step
        if self.expired():
            raise RunTimeout(self.message())

    @contextlib.contextmanager
    def critical(self) -> Any:
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if not self._critical and self._pending:
            self._pending = False
            raise RunTimeout(self.message())

    @contextlib.contextmanager
    def hard_limit(self) -> Any:
        if self.end is None or threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_alarm(_signum: int, _frame: Any) -> None:
            if self._critical:
                self._pending = True
                return
            raise RunTimeout(self.message())

        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(0.001, self.end - time.monotonic()))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


# --------------------------------------------------------------------------- served serials

_SOA_SERIAL = re.compile(r"\sSOA\s+\S+\s+\S+\s*\(?\s*(\d+)", re.IGNORECASE)


def serial_on_disk(path: Path) -> int | None:
    """The SOA serial of a zone file as named wrote or will load it (text format), if any."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(16384)
    except OSError:
        return None
    text = re.sub(r";[^\n]*", "", head)
    m = _SOA_SERIAL.search(text)
    return int(m.group(1)) if m and int(m.group(1)) < 2**32 else None


def served_serials(topos: dict[str, Topology], servers: dict[str, Server],
                   state: RunState, budget: Budget) -> dict[str, int]:
    """Zone name -> the highest serial any local server of it serves or will load.

    Every server of every stack that lists the zone (primaries and secondaries) is
    asked: a running one by a SOA query, a stopped one by the zone file it loads on its
    next start (a secondary keeps what it transferred). This is how `local up` starts
    past the highest served serial, the way `pulumi up` does, even when the serial store
    fell behind its servers.
    """
    from bind9_topology.dns.checks import Endpoint, query_soa
    from bind9_topology.dns.serials import serial_compare_safe
    from bind9_topology.render.bind_files import ZONE_DIR, zone_file_name

    asks: list[tuple[str, Server, bool]] = []
    for server in servers.values():
        topo = topos.get(server.stack)
        if topo is None:
            continue
        info = state["servers"].get(server.key) or {}
        running = (info.get("port") == server.port
                   and pid_alive(info.get("pid"), str(server.conf.resolve())))
        for zone in {z.zoneName for z in topo.spec.zones_for(server.inst)}:
            asks.append((zone, server, running))

    def ask(item: tuple[str, Server, bool]) -> tuple[str, int | None]:
        zone, server, running = item
        if running:
            soa = query_soa(Endpoint(HOST, server.port), zone,
                            timeout=max(0.05, budget.left(0.5)))
            if soa.ok and soa.serial is not None:
                return zone, soa.serial
        return zone, serial_on_disk(server.directory / ZONE_DIR / zone_file_name(zone))

    highest: dict[str, int] = {}
    if not asks:
        return highest
    with ThreadPoolExecutor(max_workers=min(16, len(asks))) as pool:
        for zone, serial in pool.map(ask, asks):
            if serial is not None and (zone not in highest
                                       or serial_compare_safe(serial, highest[zone]) > 0):
                highest[zone] = serial
    return highest


# --------------------------------------------------------------------------- up


def _write(rendered: Any, directory: Path) -> list[str]:
    """render.write_tree, keeping unchanged files' mtimes; return the changed paths."""
    from bind9_topology.render.bind_files import write_tree

    files = {**rendered.config_files, **rendered.zone_files, **rendered.secret_files}
    before: dict[str, tuple[bytes, int]] = {}
    for rel in files:
        path = directory / rel
        with contextlib.suppress(FileNotFoundError):
            before[rel] = (path.read_bytes(), path.stat().st_mtime_ns)
    write_tree(rendered, directory, include_secrets=True)
    changed = []
    now = time.time_ns()
    for rel, data in files.items():
        path = directory / rel
        old = before.get(rel)
        if old is not None and old[0] == data:
            os.utime(path, ns=(old[1], old[1]))
        else:
            changed.append(rel)
            if old is not None:  # named skips a zone whose file looks no newer than its load
                bumped = max(now, old[1]) + 1_000_000_000
                os.utime(path, ns=(bumped, bumped))
    return changed


def _reload_zones(server: Server, rendered: Any, changed: list[str], old: ServerRecord) -> bool:
    """Load what changed on a running primary zone by zone (`rndc reload <zone>`, as the
    pod agent does) when only zone files changed and it has the rndc channel; False when
    it must be SIGHUPed instead. A SIGHUP re-reads named.conf and looks at every zone
    file: at 10,000 zones that is seconds per edit (bench/gate_latency.py --apply, ADR 19)."""
    from bind9_topology.render.bind_files import TSIG_DIR

    zones = {rendered.zone_of_file.get(rel) for rel in changed}
    if len(zones) > RNDC_MAX_ZONES:
        return False  # one SIGHUP loads many changed zones sooner than an rndc run each
    port = old.get("controlPort")
    keys = [rel for rel in rendered.secret_files if rel.startswith(TSIG_DIR)]
    if None in zones or not port or len(keys) != 1 or not shutil.which("rndc"):
        return False
    rndc = ["rndc", "-k", str(server.directory / keys[0]), "-s", HOST, "-p", str(port)]
    for zone in sorted(z for z in zones if z is not None):
        try:
            done = subprocess.run([*rndc, "reload", zone], capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        if done.returncode != 0:
            return False  # SIGHUP: named reloads whatever is left
    return True


def _wait_authoritative(port: int, zones: list[str], timeout: float) -> bool:
    from bind9_topology.local.named_process import soa_status

    end = time.monotonic() + timeout
    pending = list(zones)
    while pending and time.monotonic() < end:
        pending = [z for z in pending
                   if (st := soa_status(HOST, port, z, timeout=0.2)) is None or st != (0, True)]
        if pending:
            time.sleep(0.02)
    return not pending


def _start(server: Server) -> int:
    from bind9_topology.local.named_process import NamedProcess

    proc = NamedProcess(name=server.key)
    # The runner exits while named runs on: the child keeps its own copy of the log fd.
    return proc.start(server.conf, server.directory, server.log)


@dataclass
class ZoneJob:
    stack: str
    plan: Any
    primaries: list[Any]
    secondaries: list[Any]
    expected_serial: int | None
    expected_digest: str | None
    expected_ds: list[str] | None = None  # a signed zone: the DS of the runner's keys


def dnssec_material(project: Path, topo: Topology) -> dict[str, dict[str, Any]]:
    """Signed zones' key material, made once and kept in .local-run/dnssec/<zone>.json
    (0600): a restarted runner signs with the same keys, as a restarted pod does."""
    from bind9_topology.dns.dnssec import generate_material
    from bind9_topology.render.bind_files import write_private

    out: dict[str, dict[str, Any]] = {}
    for zone in topo.spec.zones:
        if zone.type != "primary" or zone.dnssec is None:
            continue
        path = run_dir(project) / "dnssec" / f"{zone.zoneName}.json"
        if path.exists():
            out[zone.zoneName] = json.loads(path.read_text())
            continue
        material = generate_material()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, json.dumps(material).encode())
        out[zone.zoneName] = material
    return out


def _expected_ds(project: Path | None, topo: Topology, zone: str) -> list[str] | None:
    from bind9_topology.dns.dnssec import public_info

    if project is None or not any(z.zoneName == zone and z.type == "primary"
                                  and z.dnssec is not None for z in topo.spec.zones):
        return None
    return list(public_info(zone, dnssec_material(project, topo)[zone])["ds"])


def _jobs(topos: dict[str, Topology], stacks: list[str], servers: dict[str, Server],
          serials: dict[tuple[str, str], int], project: Path | None = None) -> list[ZoneJob]:
    from bind9_topology.dns.checks import Endpoint
    from bind9_topology.dns.gate import gate_plans, map_address

    own = owners(servers)
    jobs = []
    for stack in stacks:
        topo = topos[stack]
        amap = {ip: f"{HOST}:{s.port}" for ip, s in own.items()}
        amap.update(topo.spec.gate.addressMap)

        def ep(label: str, address: str | None, stack: str = stack,
               amap: dict[str, str] = amap) -> Endpoint:
            if address is None:  # no fixed IP: the instance itself, by name
                s = servers[f"{stack}/{label}"]
                return Endpoint(HOST, s.port, label)
            host, port = map_address(address, amap)
            owner = own.get(address)
            return Endpoint(host, port, owner.inst.name if owner else label)

        for plan in gate_plans(topo.spec):
            content = topo.contents.get(plan.zone) if plan.primary_zone else None
            jobs.append(ZoneJob(
                stack, plan,
                [ep(n, a or None) for n, a in plan.primaries],
                [ep(n, a) for n, a in plan.secondaries],
                serials.get((stack, plan.zone)) if plan.primary_zone else None,
                content.digest if content else None,
                _expected_ds(project, topo, plan.zone),
            ))
    return jobs


def _notify(jobs: list[ZoneJob], key: Any, budget: Budget) -> None:
    """NOTIFY every local secondary of every primary zone, signed with the key.

    The primaries notify on load too, but a secondary started after them (or
    restarted with an older copy on disk) may miss that and would wait for its SOA
    refresh; this NOTIFY makes it check the primary now.
    """
    from bind9_topology.dns.checks import send_notify

    targets = [(ep, job.plan.zone, job.expected_serial) for job in jobs
               if job.expected_serial is not None for ep in job.secondaries
               if ep.host == HOST]
    if not targets:
        return
    def one(target: tuple[Any, str, int | None]) -> None:
        ep, zone, serial = target
        end = time.monotonic() + budget.left(5.0)  # a secondary still starting: retry
        for _ in range(50):
            probe = send_notify(ep, zone, key=key, serial=serial,
                                timeout=max(0.05, min(0.5, end - time.monotonic())))
            if probe.ok or time.monotonic() >= end:
                return
            time.sleep(0.1)

    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        list(pool.map(one, targets))


class Progress:
    def __init__(self, total_zones: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total = total_zones
        self.state: dict[str, tuple[int, int]] = {}
        self.done = 0
        self.start = time.monotonic()

    def update(self, key: str, ready: int, total: int) -> None:
        self.state[key] = (ready, total)
        if self.enabled:
            r = sum(a for a, _ in self.state.values())
            t = sum(b for _, b in self.state.values())
            sys.stderr.write(f"\r  waiting for transfers: {self.done}/{self.total} zones ready, "
                             f"{r}/{t} server checks passed, "
                             f"{time.monotonic() - self.start:.1f}s ")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def run_gates(jobs: list[ZoneJob], key: Any, deadline: float, poll: float,
              progress: Progress) -> list[tuple[ZoneJob, Any]]:
    """Gate every job: each stack's zones in one ``wait_many`` (their rounds batched,
    ADR 19), the stacks side by side; reports in the order of *jobs*."""
    from bind9_topology.dns.gate import ZoneJob as GateJob
    from bind9_topology.dns.gate import wait_many
    from bind9_topology.dns.sessions import Sessions

    if not jobs:
        return []
    stacks: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        stacks.setdefault(job.stack, []).append(i)
    reports: dict[int, Any] = {}

    def one_stack(stack: str, members: list[int], sessions: Sessions) -> None:
        def seen(p: Any) -> None:
            progress.update(f"{stack}/{p.zone}", p.ready, p.total)

        def decided(report: Any) -> None:
            if report.ok:
                progress.done += 1

        got = wait_many([GateJob(jobs[i].plan.zone, jobs[i].primaries, jobs[i].secondaries,
                                 jobs[i].expected_serial, jobs[i].expected_digest,
                                 jobs[i].expected_ds) for i in members],
                        key, deadline, poll, on_progress=seen, sessions=sessions,
                        on_report=decided)
        reports.update(zip(members, got, strict=True))

    # the run's kept TCP connections (transfers), closed when every zone is gated
    with Sessions() as sessions, ThreadPoolExecutor(max_workers=len(stacks)) as pool:
        for future in [pool.submit(one_stack, stack, members, sessions)
                       for stack, members in stacks.items()]:
            future.result()
    progress.finish()
    return [(job, reports[i]) for i, job in enumerate(jobs)]


def up(project: Path, requested: list[str], *, as_json: bool, timeout: float | None,
       once: bool) -> int:
    """Start, gate, report. With *timeout* the whole run is bounded (:class:`Budget`)."""
    budget = Budget(timeout)
    ours: list[str] = []  # keys of the servers this run starts or updates (for --once)
    try:
        with budget.hard_limit():
            return _up(project, requested, as_json=as_json, once=once, budget=budget,
                       ours=ours)
    except RunTimeout as exc:
        note = ("stopped the servers it started (--once)" if once else
                "servers started so far keep running (python -m components local status | down)")
        print(f"{exc}; {note}", file=sys.stderr)
        if once:
            down(project, quiet=True, only=ours)
        return 1


def _up(project: Path, requested: list[str], *, as_json: bool, once: bool, budget: Budget,
        ours: list[str]) -> int:
    budget.check("loading the stacks")
    # Check the requested stacks before anything is written (not even the secret file):
    # a bad stack raises its TopologyError with every problem at once.
    probe_secret = _existing_secret(project) or base64.b64encode(bytes(32)).decode()
    for stack in requested:
        checked = _check_requested(project, stack, probe_secret)
        if not as_json:
            for warning in checked.warnings:
                print(f"warning: {warning}", file=sys.stderr)
    state = load_state(project)
    secret = tsig_secret(project)
    topos = project_topologies(project, secret)
    servers = assign_ports(topos, project, state)
    stacks = stacks_needed(requested, topos, servers)
    extra = [s for s in stacks if s not in requested]
    if extra and not as_json:
        print(f"also starting {', '.join(extra)}: it owns primaries the requested stacks "
              "transfer from", file=sys.stderr)
    absent = absent_servers(topos, stacks, servers, state)
    if absent:  # said at once, not only when the gate gives up
        wait = float(min(topos[s].spec.gate.deadlineSeconds for s in stacks))
        if budget.end is not None:
            wait = min(wait, budget.left(float("inf")))
        print(absent_message(requested, absent, topos, round(wait)), file=sys.stderr,
              flush=True)
    running = [s for s in servers.values() if s.stack in stacks]
    running.sort(key=lambda s: (s.inst.role != "primary", s.key))
    ours.extend(s.key for s in running)

    serials = _assign_serials(project, topos, stacks, servers, state, budget)
    address_map = {(ip, 53): (HOST, s.port) for ip, s in owners(servers).items()}
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    for server in running:
        _run_server(project, server, topos[server.stack], serials, address_map, secret,
                    state, now, budget)
    ok = _gate_and_report(project, topos, stacks, servers, serials, secret, state,
                          as_json=as_json, once=once, budget=budget)
    if once:
        down(project, quiet=True, only=[s.key for s in running])
    return 0 if ok else 1


def _assign_serials(project: Path, topos: dict[str, Topology], stacks: list[str],
                    servers: dict[str, Server], state: RunState,
                    budget: Budget) -> dict[tuple[str, str], int]:
    """Each zone's serial: the stored one while its content stays, else the next one past
    every serial a server of the zone serves now (as ZoneSerials does under Pulumi)."""
    from bind9_topology.dns.serials import SerialStore

    budget.check("asking the servers which serials they serve")
    served = served_serials(topos, servers, state, budget)
    budget.check("assigning serials")
    store = SerialStore(run_dir(project) / "serials.json")
    serials: dict[tuple[str, str], int] = {}
    for stack in stacks:
        for zone, content in topos[stack].contents.items():
            serials[(stack, zone)] = store.advance(
                stack, zone, content.content_hash, served=served.get(zone)).serial
    return serials


def _run_server(project: Path, server: Server, topo: Topology,
                serials: dict[tuple[str, str], int], address_map: dict[Any, Any], secret: str,
                state: RunState, now: str, budget: Budget) -> None:
    """Render one server's files; start its named, or SIGHUP the running one when a file
    changed; record it in the state; wait (bounded) for a primary to load its zones."""
    from bind9_topology.render.bind_files import Placement
    from bind9_topology.render.plan import plan_instance

    budget.check(f"rendering {server.key}")
    # a primary gets the rndc channel the pod agent uses (127.0.0.1, the TSIG key)
    placement = Placement(root=str(server.directory.resolve()), port=server.port,
                          listen_v4=HOST, listen_v6="none", notify_delay=0,
                          address_map=address_map, stats_port=server.stats_port,
                          agent=server.control_port > 0,
                          control_port=server.control_port or None)
    rendered = plan_instance(
        topo.spec, server.inst, topo.contents, placement, secret,
        dnssec_material(project, topo),
    ).with_serials({z: serials[(server.stack, z)] for z in topo.contents})
    changed = _write(rendered, server.directory)
    budget.check(f"starting {server.key}")
    with budget.critical():  # the pid is recorded before a timeout may interrupt
        old = state["servers"].get(server.key) or {}
        fresh = False
        if (pid_alive(old.get("pid"), str(server.conf.resolve()))
                and old.get("port") == server.port):
            if changed and not _reload_zones(server, rendered, changed, old):
                os.kill(int(old["pid"]), signal.SIGHUP)
            pid = int(old["pid"])
        else:
            pid = _start(server)
            fresh = True
        state["servers"][server.key] = {
            "stack": server.stack, "instance": server.inst.name, "role": server.inst.role,
            "region": server.region, "address": server.inst.service.fixed_address,
            "host": HOST, "port": server.port, "pid": pid, "statsPort": server.stats_port,
            "controlPort": server.control_port,  # loaded by the start or the SIGHUP
            "conf": str(server.conf.resolve()), "dir": str(server.directory.resolve()),
            "startedAt": now if fresh else old.get("startedAt", now),
        }
        save_state(project, state)
    if server.inst.role == "primary":
        zones = [z.zoneName for z in topo.spec.zones_for(server.inst)]
        budget.step = f"waiting for {server.key} to load {', '.join(zones)}"
        if not _wait_authoritative(server.port, zones, budget.left(15)):
            budget.check()
            print(f"warning: {server.key} is not answering for {', '.join(zones)} "
                  f"(see {server.log})", file=sys.stderr)


def _gate_and_report(project: Path, topos: dict[str, Topology], stacks: list[str],
                     servers: dict[str, Server], serials: dict[tuple[str, str], int],
                     secret: str, state: RunState, *, as_json: bool, once: bool,
                     budget: Budget) -> bool:
    """NOTIFY, the gate on every zone of the stacks, and its table (or JSON)."""
    from bind9_topology.dns.checks import make_tsig_key

    budget.check("computing the zones' content digests")
    key_spec = topos[stacks[0]].spec.tsigKey
    key = make_tsig_key(key_spec.name, key_spec.algorithm, secret)
    jobs = _jobs(topos, stacks, servers, serials, project)
    budget.check("notifying the secondaries")
    _notify(jobs, key, budget)
    deadline = float(min(topos[s].spec.gate.deadlineSeconds for s in stacks))
    if budget.end is not None:  # what is left of --timeout, less a moment to report
        deadline = max(0.05, budget.left(float("inf")) - 0.25)
    poll = min(topos[s].spec.gate.pollIntervalSeconds for s in stacks)
    budget.check("waiting for the transfers (the gate)")
    progress = Progress(len(jobs), enabled=sys.stderr.isatty())
    results = run_gates(jobs, key, deadline, poll, progress)
    ok = all(r.ok for _, r in results)
    summary = _summary(results, servers, state)
    if as_json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(_table(results, servers))
        for _, report in results:
            if not report.ok:
                print(report.message, file=sys.stderr)
        print(f"{'all' if ok else 'NOT all'} {len(results)} zone(s) ready; servers keep running "
              "(python -m components local status | down)" if not once else
              f"{'all' if ok else 'NOT all'} {len(results)} zone(s) ready")
    return ok


def _server_for(servers: dict[str, Server], stack: str, label: str, port: int) -> Server | None:
    for s in servers.values():
        if s.port == port and s.inst.name == label:
            return s
    return servers.get(f"{stack}/{label}")


def _rows(results: list[tuple[ZoneJob, Any]], servers: dict[str, Server]) -> list[dict[str, Any]]:
    rows = []
    for job, report in results:
        for st in report.servers:
            s = _server_for(servers, job.stack, st.endpoint.label, st.endpoint.port)
            rows.append({
                "stack": job.stack,
                "instance": st.endpoint.label,
                "role": st.role,
                "region": s.region if s else "external",
                "address": (s.inst.service.fixed_address if s else None) or st.endpoint.host,
                "host": st.endpoint.host,
                "port": st.endpoint.port,
                "zone": job.plan.zone,
                "serial": st.serial,
                "result": "ready" if st.ok else st.reason.name,
                "detail": st.detail,
                "timeToReadySeconds": st.ready_after_s,
                "attempts": st.attempts,
            })
    return rows


def _summary(results: list[tuple[ZoneJob, Any]], servers: dict[str, Server],
             state: RunState) -> dict[str, Any]:
    return {
        "ready": all(r.ok for _, r in results),
        "zones": [
            {"stack": j.stack, "zone": j.plan.zone, "ready": r.ok, "serial": r.target_serial,
             "elapsedSeconds": r.elapsed_s, "message": r.message}
            for j, r in results
        ],
        "rows": _rows(results, servers),
        "servers": [
            {k: v for k, v in info.items() if k != "conf"} | {
                "alive": pid_alive(info.get("pid"), info.get("conf"))}
            for _, info in sorted(state["servers"].items())
        ],
        "addressMap": {ip: f"{HOST}:{s.port}" for ip, s in sorted(owners(servers).items())},
    }


def _format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def _table(results: list[tuple[ZoneJob, Any]], servers: dict[str, Server]) -> str:
    rows = []
    for r in _rows(results, servers):
        ttr = r["timeToReadySeconds"]
        rows.append([
            r["instance"], r["role"], r["region"],
            f"{r['address']} -> {r['host']}:{r['port']}", r["zone"],
            str(r["serial"] if r["serial"] is not None else "-"),
            r["result"] if r["result"] == "ready" else f"{r['result']}: {r['detail']}",
            f"{ttr * 1000:.0f} ms" if ttr is not None else "-",
        ])
    return _format_table(["INSTANCE", "ROLE", "REGION", "ADDRESS", "ZONE", "SERIAL",
                          "TRANSFER", "TIME TO READY"], rows)


# --------------------------------------------------------------------------- status / down


def status(project: Path, *, as_json: bool) -> int:
    state = load_state(project)
    rows: list[dict[str, Any]] = []  # the JSON rows: a record without conf, and more
    for key, info in sorted(state["servers"].items()):
        alive = pid_alive(info.get("pid"), info.get("conf"))
        rows.append({**{k: v for k, v in info.items() if k != "conf"}, "key": key,
                     "alive": alive, "stats": _stats(info) if alive else None})
    if as_json:
        print(json.dumps({"servers": rows}, indent=2, sort_keys=True))
    elif not rows:
        print("no local servers (python -m components local up --stack NAME)")
    else:
        print(_format_table(
            ["STACK", "INSTANCE", "ROLE", "REGION", "ADDRESS", "LISTEN", "PID", "STATE"],
            [[r["stack"], r["instance"], r["role"], r["region"], str(r.get("address") or "-"),
              f"{r['host']}:{r['port']}", str(r["pid"]), "running" if r["alive"] else "stopped"]
             for r in rows]))
        print()
        print(_stats_table(rows))
    return 0


def _stats(info: ServerRecord) -> dict[str, Any]:
    """Per-zone serials and transfer counters from the server's statistics channel."""
    from bind9_topology.dns.stats import read_stats

    if not info.get("statsPort"):
        return {"ok": False, "error": "no statistics channel (started before it existed: "
                "local down, then local up)"}
    st = read_stats(str(info.get("host")), int(info["statsPort"]))
    if not st.ok:
        return {"ok": False, "error": st.error}
    return {"ok": True, "zones": st.zones, "transfersIn": st.transfers_in,
            "transfersFailed": st.transfers_failed, "transfersOut": st.transfers_out}


def _stats_table(rows: list[dict[str, Any]]) -> str:
    """One line per zone and server, from BIND's statistics channel (transfer counts are
    the server's, over all its zones: in = completed as a secondary, out = served)."""
    lines = []
    for r in rows:
        st = r.get("stats")
        if not r["alive"] or not st:
            continue
        if not st["ok"]:
            lines.append([r["stack"], r["instance"], "-", "-", "-", "-", st["error"]])
            continue
        for zone, z in sorted(st["zones"].items()):
            lines.append([r["stack"], r["instance"], zone, str(z["type"]), str(z["serial"]),
                          f"{st['transfersIn']} ok, {st['transfersFailed']} failed",
                          str(st["transfersOut"])])
    return _format_table(["STACK", "INSTANCE", "ZONE", "TYPE", "SERIAL (named)",
                          "XFR IN (server)", "XFR OUT (server)"], lines)


def _stop_pid(pid: int, conf: str | None, timeout: float = 5.0) -> None:
    if not pid_alive(pid, conf):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while pid_alive(pid, conf) and time.monotonic() < end:
        time.sleep(0.05)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap when it is our own child (--once)
    if pid_alive(pid, conf):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def down(project: Path, *, quiet: bool = False, only: list[str] | None = None) -> int:
    state = load_state(project)
    stopped = []
    for key, info in sorted(state["servers"].items()):
        if only is not None and key not in only:
            continue
        _stop_pid(int(info.get("pid") or 0), info.get("conf"))
        stopped.append(key)
        del state["servers"][key]
    save_state(project, state)
    if not quiet:
        print(f"stopped {len(stopped)} server(s)" + (f": {', '.join(stopped)}" if stopped else ""))
    return 0


# --------------------------------------------------------------------------- CLI


def add_local_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("local", help="run a stack's topology in real named on loopback")
    verbs = p.add_subparsers(dest="local_command", required=True)

    u = verbs.add_parser("up", help="render, start named, transfer, gate every zone")
    group = u.add_mutually_exclusive_group(required=True)
    group.add_argument("--stack", help="stack name (Pulumi.<stack>.yaml)")
    group.add_argument("--all", action="store_true", help="every stack of the project at once")
    u.add_argument("--once", action="store_true", help="up, verify, then down; exit 1 if not ready")
    u.add_argument("--json", action="store_true", help="print the status as JSON")
    u.add_argument("--timeout", type=float, default=None,
                   help="gate deadline in seconds (default: the stacks' gate.deadlineSeconds)")
    u.set_defaults(func=_cmd_up)

    s = verbs.add_parser("status", help="the local servers and whether they run")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=lambda a: status(a.project, as_json=a.json))

    d = verbs.add_parser("down", help="stop every server `local up` started (by pid)")
    d.set_defaults(func=lambda a: down(a.project))


def _cmd_up(args: argparse.Namespace) -> int:
    project = Path(args.project).resolve()
    stacks = list_stacks(project) if args.all else [args.stack]
    return up(project, stacks, as_json=args.json, timeout=args.timeout, once=args.once)
