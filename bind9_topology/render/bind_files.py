"""Model in, bytes out: named.conf, zone files and the readiness script per instance.

Pure (no Pulumi import) and deterministic: the same model, serials and
placement give the same bytes, so a preview without a change shows no diff.
A Placement says where the bytes will run: in the container (root "", port 53)
or in a local `named` (a directory prefix, a loopback port, and a map from the
addresses in stack config to the local servers that stand for them).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import jinja2

from bind9_topology.config.model import Instance, StackSpec, Zone
from bind9_topology.config.zone_records import ZoneContent
from bind9_topology.dns import dnssec

TEMPLATES = Path(__file__).resolve().parent / "templates"
#: the in-pod agent, shipped in the instance's config ConfigMap (stdlib and dnspython only)
AGENT_SOURCE = Path(__file__).resolve().parent.parent / "pod" / "agent.py"
#: the readiness check ready.sh runs in the pod (python3, standard library only)
READY_SOURCE = AGENT_SOURCE.with_name("ready.py")

CONFIG_DIR = "etc/bind"
ZONE_DIR = "var/lib/bind/zones"
TSIG_DIR = "etc/bind/tsig"

# A ConfigMap holds at most 1 MiB in all; keep room for metadata and keys.
CONFIGMAP_BUDGET = 1_000_000
# A zone file bigger than this is cut into parts joined with $INCLUDE.
ZONE_PART_BYTES = 900_000

Address = tuple[str, int]

#: catalog-zones min-update-interval (BIND's default 5 s): apply catalog changes at once
CATALOG_MIN_UPDATE = 1


@dataclass(frozen=True)
class Placement:
    root: str = ""
    port: int = 53
    listen_v4: str = "any"
    listen_v6: str = "any"
    # BIND's default is 5 s, paid on every change before the first NOTIFY goes out; our
    # zones change by reload only (no dynamic updates to coalesce), so send at once.
    notify_delay: int = 0
    address_map: Mapping[Address, Address] = field(default_factory=dict)
    # BIND's statistics channel (JSON), on 127.0.0.1 only: 8053 in a pod, a port of its
    # own for each local named.
    stats_port: int = 8053
    # A pod runs the agent sidecar (spec.agent): secondaries notify it after each
    # transfer, primaries open rndc to it. Local named processes run without it.
    agent: bool = False
    # The agent's loopback ports where several pods share one loopback (tests): None is
    # the stack's agent.notifyPort / agent.controlPort.
    agent_notify_port: int | None = None
    control_port: int | None = None

    def map(self, address: Address) -> Address:
        return self.address_map.get(address, address)


CONTAINER = Placement(agent=True)

#: named.conf options per role that take the NOTIFY -> SOA query -> transfer path off
#: BIND's rate limiters. BIND queues NOTIFYs (notify-rate, startup-notify-rate) and a
#: secondary's SOA queries (serial-query-rate) behind limiters that release 10 every
#: 10/rate s: at the default 20/s, 0.5 s steps. A secondary runs 2 inbound transfers per
#: primary (transfers-per-ns) and 10 in all (transfers-in); a primary 10 outbound
#: (transfers-out). Measured with bench/gate_latency.py (50 zones changed at once, real
#: named on loopback): SIGHUP -> secondary transfer done, median 1.93 s -> 0.10 s.
#: A primary also takes every secondary pod's transfers at once when a region starts
#: (4 pods x 100 = 400 for 1,000 zones): TCP clients beyond tcp-clients (150) and a listen
#: queue of 10 were refused, and a secondary then holds the primary as unreachable for 10
#: minutes (BIND's unreachable cache; a NOTIFY clears it only when it comes from the
#: primary's own address, which a NAT or a Service address never is); transfers beyond
#: transfers-out fail with SERVFAIL and wait for the zone's retry (20-40 s measured).
ROLE_TUNING: dict[str, tuple[tuple[str, int], ...]] = {
    "primary": (
        ("notify-rate", 1000),
        ("startup-notify-rate", 1000),
        ("transfers-out", 1000),
        ("tcp-clients", 1000),
        ("tcp-listen-queue", 1024),
    ),
    "secondary": (
        ("serial-query-rate", 1000),
        ("transfers-in", 100),
        ("transfers-per-ns", 100),
    ),
}


@dataclass(frozen=True)
class RenderedInstance:
    instance: Instance
    config_files: dict[str, bytes]  # relative container path -> bytes (ConfigMap)
    zone_files: dict[str, bytes]  # relative container path -> bytes (ConfigMap shards)
    secret_files: dict[str, bytes]  # relative container path -> bytes (Secret only)
    zones: tuple[str, ...]
    serials: dict[str, int]
    zone_of_file: dict[str, str] = field(default_factory=dict)  # zone file path -> zoneName
    # Signed zones: link in a writable directory -> the zone file it stands for (relative)
    signed_links: dict[str, str] = field(default_factory=dict)
    # The agent applies zone ConfigMap changes to the running pods (a primary with the
    # agent): a zone's content is then no reason to restart them.
    live_zones: bool = False

    @property
    def checksum(self) -> str:
        """sha256 of what the pods must restart for: everything they mount from ConfigMaps
        (not the Secret), the zone files excepted where the agent applies them live."""
        digest = hashlib.sha256()
        files = dict(self.config_files)
        if not self.live_zones:
            files.update(self.zone_files)
        for path, data in sorted(files.items()):
            digest.update(path.encode() + b"\0" + hashlib.sha256(data).digest())
        return digest.hexdigest()


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)
_env.filters["basename"] = lambda path: str(path).rsplit("/", 1)[-1]


#: id(content) -> (content, head, tail): the SOA's presentation, once per zone content
_SOA_PARTS: dict[int, tuple[ZoneContent, str, str]] = {}
_SOA_PARTS_MAX = 200_000


def soa_parts(content: ZoneContent) -> tuple[str, str]:
    """(head, tail) with ``content.text(s) == head + str(s) + tail + content.body``.

    dnspython writes the SOA once per zone content (its serial field split out), not once
    per serial asked for: render, plan and the content hash each asked for it again, and
    at 10,000 zones those `replace(serial=...).to_text()` calls were seconds. Tested
    against ``content.text`` (tests/test_plan.py)."""
    got = _SOA_PARTS.get(id(content))
    if got is not None and got[0] is content:
        return got[1], got[2]
    fields = content.soa.replace(serial=0).to_text().split(" ")
    if fields[2] != "0":
        raise AssertionError(f"unexpected SOA presentation: {fields!r}")
    head = (f"$ORIGIN {content.zone_name}.\n@ {content.soa_ttl} IN SOA "
            + " ".join(fields[:2]) + " ")
    tail = " " + " ".join(fields[3:]) + "\n"
    if len(_SOA_PARTS) >= _SOA_PARTS_MAX:
        _SOA_PARTS.clear()
    _SOA_PARTS[id(content)] = (content, head, tail)
    return head, tail


def zone_text(content: ZoneContent, serial: int) -> str:
    """``content.text(serial)``, from the cached SOA parts."""
    head, tail = soa_parts(content)
    return f"{head}{serial}{tail}{content.body}"


def zone_file_name(zone_name: str) -> str:
    return f"db.{zone_name}"


def split_zone_text(text: str, root: str, file_name: str) -> dict[str, bytes]:
    """One file if it fits a ConfigMap, else parts joined by $INCLUDE (one line never splits)."""
    data = text.encode()
    if len(data) <= ZONE_PART_BYTES:
        return {f"{ZONE_DIR}/{file_name}": data}
    head, _, rest = text.partition("\n")  # $ORIGIN line
    soa, _, rest = rest.partition("\n")
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for line in rest.splitlines(keepends=True):
        if size + len(line) > ZONE_PART_BYTES and current:
            parts.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        parts.append("".join(current))
    files: dict[str, bytes] = {}
    main = [head, soa]
    for n, part in enumerate(parts):
        part_name = f"{file_name}.part{n:04d}"
        files[f"{ZONE_DIR}/{part_name}"] = part.encode()
        main.append(f"$INCLUDE {root}/{ZONE_DIR}/{part_name}")
    files[f"{ZONE_DIR}/{file_name}"] = ("\n".join(main) + "\n").encode()
    return files


def render_tsig_key(key_name: str, algorithm: str, secret: str) -> bytes:
    return _env.get_template("tsig-key.conf.j2").render(
        key_name=key_name, algorithm=algorithm, secret=secret
    ).encode()


#: zone statements beyond this many bytes leave named.conf for files of their own
#: (etc/bind/zones.d/), each in its own ConfigMap: named.conf's ConfigMap also carries the
#: agent and ready.sh, and a ConfigMap holds 1 MiB at most (about 3,000 secondary zones)
ZONE_CONF_INLINE_BYTES = 400_000
#: the size each of those files aims at (zones go to a file by a hash of their name, so
#: adding or removing a zone changes one file while their number stays the same)
ZONE_CONF_FILE_BYTES = 400_000
ZONE_CONF_DIR = f"{CONFIG_DIR}/zones.d"


def _name_server_lists(parts: _ZoneParts) -> list[tuple[str, list[Address]]]:
    """Each distinct NOTIFY target list and primaries list, named once (`notify-N`,
    `primaries-N`); every zone entry gets the name of its list."""
    lists: dict[tuple[str, tuple[Address, ...]], str] = {}
    for entries, key, prefix in ((parts.primary, "notify", "notify"),
                                 (parts.secondary, "primaries", "primaries")):
        count = 0
        for entry in entries:
            servers: tuple[Address, ...] = tuple(cast(list[Address], entry[key]))
            if not servers:
                continue
            name = lists.get((prefix, servers))
            if name is None:
                name = lists[(prefix, servers)] = f"{prefix}-{count}"
                count += 1
            entry[f"{key}_list"] = name
    return [(name, list(servers)) for (_, servers), name in lists.items()]


def _zone_statements(parts: _ZoneParts, root: str, key_name: str
                     ) -> tuple[str, dict[str, bytes]]:
    """The zone statements: inline text for named.conf, or (past ZONE_CONF_INLINE_BYTES)
    no text and the files that hold them, by relative path."""
    template = _env.get_template("zones.conf.j2")

    def text(primary: list[dict[str, object]], secondary: list[dict[str, object]]) -> str:
        return template.render(primary_zones=primary, secondary_zones=secondary, root=root,
                               key_name=key_name)

    inline = text(parts.primary, parts.secondary)
    size = len(inline.encode())
    if size <= ZONE_CONF_INLINE_BYTES:
        return inline, {}
    count = -(-size // ZONE_CONF_FILE_BYTES)

    def bucket(entry: dict[str, object]) -> int:
        return zlib.crc32(str(entry["name"]).encode()) % count

    files: dict[str, bytes] = {}
    for n in range(count):
        body = text([e for e in parts.primary if bucket(e) == n],
                    [e for e in parts.secondary if bucket(e) == n])
        files[f"{ZONE_CONF_DIR}/zones-{n}.conf"] = body.encode()
    return "", files


@dataclass
class _ZoneParts:
    """What the zones of one instance add up to, collected zone by zone."""

    primary: list[dict[str, object]] = field(default_factory=list)
    secondary: list[dict[str, object]] = field(default_factory=list)
    zone_files: dict[str, bytes] = field(default_factory=dict)
    zone_of_file: dict[str, str] = field(default_factory=dict)
    signed_links: dict[str, str] = field(default_factory=dict)  # link -> zone file (relative)
    key_files: dict[str, bytes] = field(default_factory=dict)


def _add_primary_zone(parts: _ZoneParts, zone: Zone, instance: Instance, text: str,
                      placement: Placement,
                      dnssec_keys: Mapping[str, Mapping[str, object]] | None) -> None:
    file_name = zone_file_name(zone.zoneName)
    files = split_zone_text(text, placement.root, file_name)
    parts.zone_files.update(files)
    parts.zone_of_file.update(dict.fromkeys(files, zone.zoneName))
    entry: dict[str, object] = {
        "name": zone.zoneName,
        "file": f"{placement.root}/{ZONE_DIR}/{file_name}",
        "notify": [placement.map(a) for a in zone.notify_servers],
    }
    if zone.dnssec is not None and instance.role == "primary":
        # BIND writes <file>.signed beside the zone file: the file named here is a link
        # (made at start) in a writable directory to the zone file.
        entry["file"] = f"{placement.root}/{dnssec.SIGNED_DIR}/{file_name}"
        entry["dnssec_policy"] = zone.dnssec.policy
        entry["key_directory"] = f"{placement.root}/{dnssec.KEY_DIR}"
        parts.signed_links[f"{dnssec.SIGNED_DIR}/{file_name}"] = f"{ZONE_DIR}/{file_name}"
        material = (dnssec_keys or {}).get(zone.zoneName)
        if material is not None:
            for name, data in dnssec.secret_files(zone.zoneName, material).items():
                parts.key_files[f"{dnssec.KEY_SECRET_DIR}/{name}"] = data
    parts.primary.append(entry)


def _consumed_catalogs(spec: StackSpec, instance: Instance, zones: list[Zone],
                       placement: Placement) -> list[dict[str, object]]:
    """Catalog zones this secondary consumes (components/catalog.py): named creates and
    deletes the member zones; they transfer from default-primaries with the key, and
    (like every zone of a secondary) allow transfers to the key only, for the gate.
    default-primaries are the catalog zone's own primaries (primaryServers, or those
    primaryStack resolved into the zone)."""
    catalog_zones = {z.zoneName: z.secondaryConfig for z in zones
                     if z.type == "secondary" and z.secondaryConfig is not None}
    return [
        {"name": c.zoneName,
         "primaries": [placement.map(a) for a in catalog_zones[c.zoneName].servers]}
        for c in spec.catalogs
        if instance.role == "secondary" and c.zoneName in catalog_zones
        and c.instanceSelector.matches(instance.labels)
    ]


def render_instance(
    spec: StackSpec,
    instance: Instance,
    contents: Mapping[str, ZoneContent],
    serials: Mapping[str, int],
    placement: Placement = CONTAINER,
    tsig_secret: str | None = None,
    dnssec_keys: Mapping[str, Mapping[str, object]] | None = None,
) -> RenderedInstance:
    """*dnssec_keys*: zone -> its key material (bind9_topology.dns.dnssec), for the Secret's files.

    named.conf does not depend on the keys (only on which zones are signed)."""
    zones: list[Zone] = spec.zones_for(instance)
    key = spec.tsigKey
    parts = _ZoneParts()
    for zone in sorted(zones, key=lambda z: z.zoneName):
        if zone.type == "primary":
            _add_primary_zone(parts, zone, instance,
                              zone_text(contents[zone.zoneName], serials[zone.zoneName]),
                              placement, dnssec_keys)
        else:
            assert zone.secondaryConfig is not None
            parts.secondary.append({
                "name": zone.zoneName,
                "file": zone_file_name(zone.zoneName),
                "primaries": [placement.map(a) for a in zone.secondaryConfig.servers],
            })
    catalogs = _consumed_catalogs(spec, instance, zones, placement)
    allow_transfer = instance.transfer_acl(key.name)
    if catalogs and not allow_transfer:
        allow_transfer = [f"key {key.name}"]
    agent = ({"notify_port": placement.agent_notify_port or spec.agent.notifyPort,
              "control_port": placement.control_port or spec.agent.controlPort}
             if spec.agent.enabled and placement.agent else None)
    server_lists = _name_server_lists(parts)
    zones_text, zone_confs = _zone_statements(parts, placement.root, key.name)
    named_conf = _env.get_template("named.conf.j2").render(
        server_lists=server_lists,
        zone_includes=[f"{placement.root}/{path}" for path in zone_confs],
        zones_text=zones_text,
        agent=agent,
        catalogs=catalogs,
        catalog_min_update=CATALOG_MIN_UPDATE,
        instance=instance,
        root=placement.root,
        port=placement.port,
        listen_v4=placement.listen_v4,
        listen_v6=placement.listen_v6,
        notify_delay=placement.notify_delay,
        stats_port=placement.stats_port,
        key_name=key.name,
        allow_query=instance.config.allowQuery,
        allow_transfer=allow_transfer,
        secondary_zones=bool(parts.secondary),
        max_refresh=instance.config.maxRefreshSeconds,
        tuning=ROLE_TUNING[instance.role],
        dnssec_policies=sorted({str(z["dnssec_policy"]) for z in parts.primary
                                if "dnssec_policy" in z}),
    )
    zone_names = tuple(sorted(z.zoneName for z in zones))
    ready = _env.get_template("ready.sh.j2").render(zones=zone_names, port=placement.port,
                                                     root=placement.root,
                                                     stats_port=placement.stats_port,
                                                     ready_py=READY_SOURCE.read_text())
    config_files = {
        f"{CONFIG_DIR}/named.conf": named_conf.encode(),
        f"{CONFIG_DIR}/ready.sh": ready.encode(),
        **zone_confs,
    }
    if agent:
        config_files[f"{CONFIG_DIR}/agent.py"] = AGENT_SOURCE.read_bytes()
    secret_files = {}
    if tsig_secret is not None:
        secret_files[f"{TSIG_DIR}/{key.name}.conf"] = render_tsig_key(
            key.name, key.algorithm, tsig_secret
        )
    secret_files.update(parts.key_files)
    return RenderedInstance(
        instance=instance,
        config_files=config_files,
        zone_files=parts.zone_files,
        zone_of_file=parts.zone_of_file,
        secret_files=secret_files,
        zones=zone_names,
        serials={z: serials[z] for z in zone_names if z in serials},
        signed_links=parts.signed_links,
        live_zones=agent is not None and instance.role == "primary",
    )


#: a zone starts a new zone ConfigMap with probability (its bytes / SHARD_TARGET), decided
#: by a hash of its name: shards of about this many bytes, cut where the names say
SHARD_TARGET = 500_000


def _starts_shard(zone: str, size: int, target: int) -> bool:
    """Whether *zone* opens a shard: a hash of its name under its share of *target*.

    Depends on the zone alone (its name and size), never on the zones before it, so an
    edit moves no other zone between shards, and a zone added or removed touches the
    shard it lands in (and, if it opens one, the shard before it)."""
    draw = int.from_bytes(hashlib.sha256(zone.encode()).digest()[:8], "big") / 2**64
    return draw < size / target


def stable_shards(
    files: Mapping[str, bytes], zone_of_file: Mapping[str, str],
    budget: int = CONFIGMAP_BUDGET, target: int = SHARD_TARGET,
) -> list[dict[str, bytes]]:
    """Zone files cut into ConfigMaps in name order, each cut decided by the zones, so one
    zone's edit changes one ConfigMap (ADR 16; first fit, `shard_files`, let a zone that
    grew push files of every later zone into other shards, so one edit changed them all).

    A shard opens at a zone that `_starts_shard` picks; one that would pass *budget* is
    cut before the file that does not fit (those cuts follow sizes, up to the next zone
    that opens a shard)."""
    shards: list[dict[str, bytes]] = []
    size = budget + 1  # the first file opens the first shard
    opened: str | None = None
    by_zone: dict[str, int] = {}
    for path, data in files.items():
        zone = zone_of_file.get(path, path)
        by_zone[zone] = by_zone.get(zone, 0) + len(data) + len(path)
    for path, data in sorted(files.items()):
        cost = len(data) + len(path)
        if cost > budget:
            raise ValueError(f"{path} is {len(data)} bytes and cannot fit one ConfigMap")
        zone = zone_of_file.get(path, path)
        fresh_zone = zone != opened
        opened = zone
        if (size + cost > budget
                or (fresh_zone and shards and _starts_shard(zone, by_zone[zone], target))):
            shards.append({})
            size = 0
        shards[-1][path] = data
        size += cost
    return shards


def shard_files(
    files: Mapping[str, bytes], budget: int = CONFIGMAP_BUDGET
) -> list[dict[str, bytes]]:
    """Pack files into as few ConfigMaps as fit the budget (first fit, in name order)."""
    shards: list[dict[str, bytes]] = []
    sizes: list[int] = []
    for path, data in sorted(files.items()):
        cost = len(data) + len(path)
        if cost > budget:
            raise ValueError(f"{path} is {len(data)} bytes and cannot fit one ConfigMap")
        for i, size in enumerate(sizes):
            if size + cost <= budget:
                shards[i][path] = data
                sizes[i] += cost
                break
        else:
            shards.append({path: data})
            sizes.append(cost)
    return shards


def write_private(path: Path, data: bytes) -> None:
    """Write *data* to *path* readable by its owner only, from the first byte on.

    A temp file in the same directory is created with mode 0600 (os.open, O_EXCL: the
    umask can only narrow it), written, fsynced and renamed over *path*; the key is never
    in a file that others can read, not even for a moment, and an old file with a wider
    mode is replaced, not rewritten in place.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_tree(rendered: RenderedInstance, directory: Path, *, include_secrets: bool) -> None:
    """Lay the files out as the container's filesystem under directory."""
    files = {**rendered.config_files, **rendered.zone_files}
    if include_secrets:
        files.update(rendered.secret_files)
    for rel, data in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.startswith((TSIG_DIR, dnssec.KEY_SECRET_DIR)):
            write_private(path, data)
            continue
        path.write_bytes(data)
        if rel.endswith(".sh"):
            path.chmod(0o755)
    for writable in ("var/cache/bind", "run/named", ZONE_DIR):
        (directory / writable).mkdir(parents=True, exist_ok=True)
    prepare_signing(rendered, directory)


def prepare_signing(rendered: RenderedInstance, directory: Path) -> None:
    """What the pod's init step does for signed zones: the key files copied (never over
    what named wrote) into the writable key-directory, and each signed zone's link."""
    if not rendered.signed_links:
        return
    keys = directory / dnssec.KEY_DIR
    keys.mkdir(parents=True, exist_ok=True)
    source = directory / dnssec.KEY_SECRET_DIR
    if source.is_dir():
        for item in sorted(source.iterdir()):
            target = keys / item.name
            if not target.exists():
                write_private(target, item.read_bytes())
    for link, zone_file in rendered.signed_links.items():
        path = directory / link
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.symlink_to(directory / zone_file)
