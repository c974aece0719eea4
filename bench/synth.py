"""Synthetic but realistic topologies for the benchmarks.

`write_project(dir, zones=1000, records=100)` lays out a project directory the
way a user's repository looks: three region stacks (``Pulumi.bench.yaml``, the
primary region with the primaries and a local secondary;
``Pulumi.bench-west.yaml`` and ``Pulumi.bench-eu.yaml``, two secondary regions
with two secondary instances each), one records file per zone under
``configs/zones/``, and the same zone data as octoDNS YAML under
``octodns/config/`` so both tools read the same records.

Record mix per zone (for 100 records): apex NS x3, MX x2, SPF/verification
TXT, CAA x2, apex A/AAAA, glue A for the name servers and mail hosts, then
hosts with A (about 45%), AAAA (20%), CNAME (20%), TXT (DKIM/DMARC-like, 7%),
SRV (5%), MX on subdomains (3%). Deterministic for a given (zone index, size).

The zones are listed in `zonesFiles` (configs/zone-lists/<stack>/*.yaml), never inline:
10,000 inline zones would be far over the engine's 128 KiB cap on the stack config.

Run on its own to write a project and print where it is:
    python bench/synth.py --zones 10 --records 100 --out /tmp/bench-project
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import shutil
from pathlib import Path
from typing import Any

import yaml

PROJECT = "bind9-topology"
PRIMARY_STACK = "bench"
SECONDARY_STACKS = ("bench-west", "bench-eu")
STACKS = (PRIMARY_STACK, *SECONDARY_STACKS)
PRIMARY_IP = "10.0.1.10"
NOTIFY = ["10.0.1.20", "10.0.2.20", "10.0.2.21", "10.0.3.20", "10.0.3.21"]
#: a fixed, valid TSIG secret (32 bytes, base64): benchmarks need no real secret
TSIG_SECRET = base64.b64encode(bytes(range(32))).decode()

Rec = tuple[str, str, int | None, str]  # name, type, ttl, data


def zone_name(index: int) -> str:
    return f"zone{index:05d}.example"


def zone_records(index: int, count: int) -> list[Rec]:
    """`count` records (at least 12) for zone number `index`; deterministic."""
    rnd = random.Random(index * 7919 + count)
    zn = zone_name(index)
    recs: list[Rec] = [
        ("@", "NS", None, f"ns1.{zn}."),
        ("@", "NS", None, f"ns2.{zn}."),
        ("@", "NS", None, "ns.provider.example."),
        ("@", "MX", None, f"10 mx1.{zn}."),
        ("@", "MX", None, f"20 mx2.{zn}."),
        ("@", "TXT", None, '"v=spf1 mx include:_spf.provider.example -all"'),
        ("@", "TXT", None, f'"site-verification={rnd.getrandbits(128):032x}"'),
        ("@", "CAA", None, '0 issue "letsencrypt.org"'),
        ("@", "CAA", None, f'0 iodef "mailto:security@{zn}"'),
        ("@", "A", None, f"192.0.2.{index % 250 + 1}"),
        ("@", "AAAA", None, f"2001:db8:{index % 65536:x}::1"),
        ("ns1", "A", None, "10.0.1.10"),
        ("ns2", "A", None, "10.0.2.20"),
        ("mx1", "A", 300, f"198.51.100.{index % 250 + 1}"),
        ("mx2", "A", 300, f"203.0.113.{index % 250 + 1}"),
    ][: max(count, 12)]
    hosts: list[str] = []
    n = 0
    while len(recs) < count:
        n += 1
        roll = rnd.random()
        host = f"host{n}"
        if roll < 0.45:
            recs.append((host, "A", rnd.choice([None, 300, 60]),
                         f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"))
            hosts.append(host)
        elif roll < 0.65:
            recs.append((host, "AAAA", None,
                         f"2001:db8:{rnd.getrandbits(16):x}:{rnd.getrandbits(16):x}::"
                         f"{rnd.getrandbits(16):x}"))
            hosts.append(host)
        elif roll < 0.85:
            target = rnd.choice(hosts) if hosts else "@"
            data = f"{zn}." if target == "@" else target
            if rnd.random() < 0.3:
                data = f"lb{n}.cdn.provider.example."
            recs.append((f"alias{n}", "CNAME", None, data))
        elif roll < 0.92:
            if rnd.random() < 0.5:
                key = base64.b64encode(rnd.randbytes(96)).decode()
                recs.append((f"s{n}._domainkey", "TXT", None,
                             f'"v=DKIM1; k=rsa; p={key}"'))
            else:
                recs.append((f"_dmarc{n}", "TXT", None,
                             f'"v=DMARC1; p=quarantine; rua=mailto:dmarc@{zn}"'))
        elif roll < 0.97:
            svc = rnd.choice(["_sip._tcp", "_xmpp._tcp", "_ldap._tcp", "_imaps._tcp"])
            tgt = rnd.choice(hosts) if hosts else "ns1"
            recs.append((f"{svc}.s{n}", "SRV", None,
                         f"{rnd.randrange(0, 20)} {rnd.randrange(0, 100)} "
                         f"{rnd.randrange(1, 65535)} {tgt}.{zn}."))
        else:
            recs.append((f"mail{n}", "MX", None, f"10 mx1.{zn}."))
    return recs[:count]


def records_yaml(recs: list[Rec]) -> str:
    """The records file (our format), written the way a person would: one flow map a line."""
    out = ["records:"]
    for name, rtype, ttl, data in recs:
        # JSON strings are valid YAML flow scalars: quick to write, exact to read back.
        ttl_part = f", ttl: {ttl}" if ttl is not None else ""
        out.append(f"  - {{name: {json.dumps(name)}, type: {rtype}, "
                   f"data: {json.dumps(data)}{ttl_part}}}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- octoDNS


def _octo_value(rtype: str, data: str) -> Any:
    parts = data.split()
    if rtype == "MX":
        return {"preference": int(parts[0]), "exchange": parts[1]}
    if rtype == "SRV":
        return {"priority": int(parts[0]), "weight": int(parts[1]), "port": int(parts[2]),
                "target": parts[3]}
    if rtype == "CAA":
        flags, tag, value = data.split(" ", 2)
        return {"flags": int(flags), "tag": tag, "value": value.strip('"')}
    if rtype == "TXT":
        return data.strip('"').replace(";", "\\;")  # octoDNS wants ; escaped
    return data


def octodns_zone_yaml(index: int, recs: list[Rec], default_ttl: int = 3600) -> str:
    """The same records as an octoDNS YamlProvider zone file."""
    zn = zone_name(index)
    grouped: dict[str, dict[str, dict[str, Any]]] = {}
    for name, rtype, ttl, data in recs:
        owner = "" if name == "@" else name
        if rtype == "CNAME" and not data.endswith("."):
            data = f"{data}.{zn}."
        rec = grouped.setdefault(owner, {}).setdefault(
            rtype, {"type": rtype, "ttl": ttl if ttl is not None else default_ttl, "values": []}
        )
        rec["values"].append(_octo_value(rtype, data))
    doc: dict[str, Any] = {}
    for owner, by_type in grouped.items():
        entries = []
        for rtype, rec in by_type.items():
            if rtype == "CNAME":
                entries.append({"type": rtype, "ttl": rec["ttl"], "value": rec["values"][0]})
            else:
                entries.append(rec)
        doc[owner] = entries if len(entries) > 1 else entries[0]
    return yaml.dump(doc, Dumper=_Dumper, default_flow_style=False, sort_keys=True,
                     width=10_000)


_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def octodns_config(project: Path, zones: int) -> Path:
    """octoDNS main config: YamlProvider source -> octodns_bind.ZoneFileProvider target."""
    config = {
        "providers": {
            "config": {
                "class": "octodns.provider.yaml.YamlProvider",
                "directory": str(project / "octodns" / "config"),
                "default_ttl": 3600,
                "enforce_order": False,
            },
            "zonefile": {
                "class": "octodns_bind.ZoneFileProvider",
                "directory": str(project / "octodns" / "out"),
                "file_extension": ".zone",
                "hostmaster_email": "hostmaster",
                "default_ttl": 3600,
                "refresh": 3600,
                "retry": 600,
                "expire": 1209600,
                "nxdomain": 300,
            },
        },
        "zones": {
            f"{zone_name(i)}.": {"sources": ["config"], "targets": ["zonefile"]}
            for i in range(zones)
        },
    }
    path = project / "octodns" / "octodns.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --------------------------------------------------------------------------- our stacks


def _instance(name: str, role: str, region: str, ip: str) -> dict[str, Any]:
    return {
        "name": name,
        "role": role,
        "replicas": 2,
        "version": "9.18",
        "labels": {"dns-role": role, "region": region, "environment": "production"},
        "config": {"recursion": False, "allowQuery": ["0.0.0.0/0", "::/0"]},
        "service": {"type": "LoadBalancer", "loadBalancerIP": ip},
    }


def stack_configs(zones: int) -> dict[str, dict[str, Any]]:
    """Raw stack config (without the project prefix) for the three stacks."""
    common = {
        "environment": "production",
        "namespace": "dns-system",
        "tsigKey": {"name": "transfer-key", "algorithm": "hmac-sha256"},
        "gate": {"enabled": True, "deadlineSeconds": 300, "pollIntervalSeconds": 1},
    }
    primary_zones = []
    local_secondary = []
    for i in range(zones):
        zn = zone_name(i)
        primary_zones.append({
            "zoneName": zn,
            "type": "primary",
            "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
            "soaRecord": {"primaryNs": f"ns1.{zn}.", "adminEmail": f"hostmaster@{zn}",
                          "refresh": 3600, "retry": 600, "expire": 1209600,
                          "negativeTtl": 300},
            "ttl": 3600,
            "recordsFile": f"configs/zones/{zn}.yaml",
            "alsoNotify": NOTIFY,
        })
        local_secondary.append({
            "zoneName": zn,
            "type": "secondary",
            "instanceSelector": {"matchLabels": {"dns-role": "secondary",
                                                 "region": "us-east-1"}},
            "secondaryConfig": {"primaryServers": [PRIMARY_IP]},
        })
    out = {
        PRIMARY_STACK: {
            **common,
            "region": "us-east-1",
            "instances": [_instance("primary-dns", "primary", "us-east-1", PRIMARY_IP),
                          _instance("secondary-dns", "secondary", "us-east-1", "10.0.1.20")],
            "zones": primary_zones + local_secondary,
        }
    }
    for s, (stack, region) in enumerate(zip(SECONDARY_STACKS, ("us-west-2", "eu-west-1"),
                                            strict=True)):
        out[stack] = {
            **common,
            "region": region,
            "instances": [
                _instance(f"secondary-dns-{region}-a", "secondary", region, f"10.0.{s + 2}.20"),
                _instance(f"secondary-dns-{region}-b", "secondary", region, f"10.0.{s + 2}.21"),
            ],
            "zones": [
                {
                    "zoneName": zone_name(i),
                    "name": f"{zone_name(i).replace('.', '-')}-secondary",
                    "type": "secondary",
                    "instanceSelector": {"matchLabels": {"dns-role": "secondary"}},
                    "secondaryConfig": {"primaryServers": [PRIMARY_IP]},
                }
                for i in range(zones)
            ],
        }
    return out


#: the stack config key for zones listed in files (README "Many zones: zonesFiles")
ZONES_FILES_KEY = "zonesFiles"
#: zones per file of a stack's zone list directory
ZONES_PER_FILE = 1000


def write_zone_lists(project: Path, stack: str, zones: list[dict[str, Any]]) -> str:
    """A stack's zones as `zonesFiles` lists (configs/zone-lists/<stack>/NNNN.yaml, at most
    ZONES_PER_FILE zones each, one flow mapping a line); the directory, relative."""
    rel = f"configs/zone-lists/{stack}"
    folder = project / rel
    folder.mkdir(parents=True, exist_ok=True)
    for n, start in enumerate(range(0, max(len(zones), 1), ZONES_PER_FILE)):
        chunk = zones[start:start + ZONES_PER_FILE]
        # JSON objects are YAML flow mappings: quick to write, exact to read back.
        (folder / f"{n:04d}.yaml").write_text(
            "".join(f"- {json.dumps(z, separators=(', ', ': '))}\n" for z in chunk) or "[]\n")
    return rel


def write_project(
    project: Path, zones: int, records: int, *, octodns: bool = True, fresh: bool = True,
    inline: bool = False,
) -> Path:
    """Write stacks, records files and (optionally) octoDNS config; return project.

    The zones go into `zonesFiles` lists (configs/zone-lists/<stack>/), as a large
    topology must keep them: inline, 1,000 zones are over the engine's 128 KiB cap on
    the stack config (PULUMI_CONFIG). *inline*: in the stack files instead (bench/cluster.py
    rewrites the inline zones)."""
    if fresh and project.exists():
        shutil.rmtree(project)
    (project / "configs" / "zones").mkdir(parents=True, exist_ok=True)
    if octodns:
        (project / "octodns" / "config").mkdir(parents=True, exist_ok=True)
    for i in range(zones):
        recs = zone_records(i, records)
        zn = zone_name(i)
        (project / "configs" / "zones" / f"{zn}.yaml").write_text(records_yaml(recs))
        if octodns:
            (project / "octodns" / "config" / f"{zn}.yaml").write_text(
                octodns_zone_yaml(i, recs))
    (project / "Pulumi.yaml").write_text(f"name: {PROJECT}\nruntime: python\n")
    for stack, raw in stack_configs(zones).items():
        if not inline:
            listed = write_zone_lists(project, stack, raw.pop("zones"))
            raw = {**raw, ZONES_FILES_KEY: [listed]}
        doc = {"config": {f"{PROJECT}:{k}": v for k, v in raw.items()}}
        (project / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    if octodns:
        octodns_config(project, zones)
    return project


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zones", type=int, default=10)
    ap.add_argument("--records", type=int, default=100)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--no-octodns", action="store_true")
    ap.add_argument("--inline", action="store_true", help="zones inline in the stack files")
    args = ap.parse_args()
    write_project(args.out, args.zones, args.records, octodns=not args.no_octodns,
                  inline=args.inline)
    print(args.out)


if __name__ == "__main__":
    main()
