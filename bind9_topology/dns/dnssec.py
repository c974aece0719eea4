"""DNSSEC signing keys: generated once (in Python), written as BIND key files, checked.

Pure: no Pulumi import. A zone's keys are a KSK and a ZSK (ECDSAP256SHA256,
algorithm 13), each kept as its private scalar (base64) and its creation time;
everything else (DNSKEY, key tag, DS, the K<zone>.+013+<tag>.key/.private files
exactly as `dnssec-keygen` writes them) is derived from that. The dynamic
resource components.dnssec_keys keeps the material in Pulumi state as a secret,
the local runner in .local-run/dnssec/ (mode 0600); neither ever regenerates it,
so a restarted or added replica signs with the same keys.

`dnssec-policy` (named.conf.j2) lists a KSK and a ZSK with `lifetime unlimited`
and algorithm 13: BIND finds the provided keys in its key-directory (a KSK is the
key with the SEP flag, 257; a ZSK the one without, 256) and never makes its own.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dns.dnssec
import dns.dnssectypes
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS
import dns.rrset

from bind9_topology.dns.sessions import Sessions

ALGORITHM = dns.dnssectypes.Algorithm.ECDSAP256SHA256  # 13
ALGORITHM_NAME = "ECDSAP256SHA256"
DIGEST = "SHA256"  # DS digest type 2
KSK_FLAGS = 257
ZSK_FLAGS = 256

#: Policy names BIND defines itself (a zone's policy must be one of ours)
BUILTIN_POLICIES = frozenset({"default", "insecure", "none"})

#: Where keys live inside an instance's tree (relative to its root): the Secret's copy
#: (read-only) and the key-directory named writes .state files to.
KEY_SECRET_DIR = "etc/bind/dnssec"
KEY_DIR = "var/cache/bind/keys"
SIGNED_DIR = "var/cache/bind/signed"


@dataclass(frozen=True)
class ZoneKey:
    zone: str
    role: str  # "ksk" | "zsk"
    private_b64: str  # the 32-byte P-256 private scalar, base64
    created: int  # unix time

    @property
    def flags(self) -> int:
        return KSK_FLAGS if self.role == "ksk" else ZSK_FLAGS

    def _private_key(self) -> Any:
        from cryptography.hazmat.primitives.asymmetric import ec

        scalar = int.from_bytes(base64.b64decode(self.private_b64), "big")
        return ec.derive_private_key(scalar, ec.SECP256R1())

    @property
    def dnskey(self) -> dns.rdtypes.ANY.DNSKEY.DNSKEY:
        key = dns.dnssec.make_dnskey(self._private_key().public_key(), ALGORITHM,
                                     flags=self.flags)
        assert isinstance(key, dns.rdtypes.ANY.DNSKEY.DNSKEY)
        return key

    @property
    def tag(self) -> int:
        return dns.dnssec.key_id(self.dnskey)

    @property
    def ds(self) -> dns.rdtypes.ANY.DS.DS:
        ds = dns.dnssec.make_ds(f"{self.zone}.", self.dnskey, DIGEST)
        assert isinstance(ds, dns.rdtypes.ANY.DS.DS)
        return ds

    @property
    def basename(self) -> str:
        return f"K{self.zone}.+{int(ALGORITHM):03d}+{self.tag:05d}"

    def key_file(self) -> bytes:
        """The .key file, byte for byte as dnssec-keygen (BIND 9.18) writes it."""
        kind = "key-signing" if self.role == "ksk" else "zone-signing"
        stamp = _stamp(self.created)
        lines = [
            f"; This is a {kind} key, keyid {self.tag}, for {self.zone}.",
            f"; Created: {stamp}",
            f"; Publish: {stamp}",
            f"; Activate: {stamp}",
            f"{self.zone}. IN DNSKEY {self.flags} 3 {int(ALGORITHM)} {_b64_bind(self.dnskey.key)}",
        ]
        return ("\n".join(lines) + "\n").encode()

    def private_file(self) -> bytes:
        """The .private file, byte for byte as dnssec-keygen (BIND 9.18) writes it."""
        when = time.strftime("%Y%m%d%H%M%S", time.gmtime(self.created))
        lines = [
            "Private-key-format: v1.3",
            f"Algorithm: {int(ALGORITHM)} ({ALGORITHM_NAME})",
            f"PrivateKey: {self.private_b64}",
            f"Created: {when}",
            f"Publish: {when}",
            f"Activate: {when}",
        ]
        return ("\n".join(lines) + "\n").encode()

    def files(self) -> dict[str, bytes]:
        return {f"{self.basename}.key": self.key_file(),
                f"{self.basename}.private": self.private_file()}


def _b64_bind(data: bytes) -> str:
    """Base64 in BIND's presentation: 56-character chunks joined by spaces."""
    text = base64.b64encode(data).decode()
    return " ".join(text[i:i + 56] for i in range(0, len(text), 56))


def _stamp(created: int) -> str:
    t = time.gmtime(created)
    return f"{time.strftime('%Y%m%d%H%M%S', t)} ({time.asctime(t)})"


def generate_private() -> str:
    """A fresh P-256 private scalar (base64), from the OS's CSPRNG via cryptography."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return base64.b64encode(key.private_numbers().private_value.to_bytes(32, "big")).decode()


def generate_material(created: int | None = None) -> dict[str, Any]:
    """A zone's key material: {"ksk": {...}, "zsk": {...}}, each private (base64) + created."""
    now = int(created if created is not None else time.time())
    return {role: {"private": generate_private(), "created": now} for role in ("ksk", "zsk")}


def zone_keys(zone: str, material: Mapping[str, Any]) -> list[ZoneKey]:
    return [ZoneKey(zone, role, str(material[role]["private"]), int(material[role]["created"]))
            for role in ("ksk", "zsk")]


def public_info(zone: str, material: Mapping[str, Any]) -> dict[str, Any]:
    """What may be shown: the DNSKEYs, their tags, and the KSK's DS (for the parent)."""
    keys = zone_keys(zone, material)
    ksk = keys[0]
    return {
        "dnskeys": [f"{zone}. IN DNSKEY {k.dnskey.to_text()}" for k in keys],
        "keyTags": {k.role: k.tag for k in keys},
        "ds": [f"{zone}. IN DS {ksk.ds.to_text()}"],
    }


def secret_files(zone: str, material: Mapping[str, Any]) -> dict[str, bytes]:
    """Key files by name (K<zone>.+013+<tag>.key/.private) for one zone."""
    files: dict[str, bytes] = {}
    for key in zone_keys(zone, material):
        files.update(key.files())
    return files


def secret_key(file_name: str) -> str:
    """A Kubernetes Secret data key for a key file ('+' is not allowed there)."""
    return file_name.replace("+", "_")


# --------------------------------------------------------------------------- checks


def _fetch(endpoint: Any, zone: dns.name.Name, rdtype: dns.rdatatype.RdataType,
           timeout: float, sessions: Sessions | None = None,
           ) -> dns.message.Message:
    """*rdtype* of *zone* over TCP (with *sessions*: over one of the server's kept
    connections, bind9_topology.dns.sessions)."""
    query = dns.message.make_query(zone, rdtype, want_dnssec=True)
    query.flags &= ~dns.flags.RD
    if sessions is not None:
        with sessions.session(endpoint) as session:
            return session.query(query, timeout)
    return dns.query.tcp(query, endpoint.host, port=endpoint.port, timeout=timeout)


def _find(msg: dns.message.Message, name: dns.name.Name, rdtype: int,
          covers: int = 0) -> dns.rrset.RRset | None:
    for rrset in msg.answer:
        if rrset.name == name and rrset.rdtype == rdtype and rrset.covers == covers:
            return rrset
    return None


def check_signed(endpoint: Any, zone: str, expected_ds: Sequence[str],
                 timeout: float = 2.0, sessions: Sessions | None = None) -> tuple[bool, str]:
    """(ok, detail): *endpoint* serves DNSKEY and a signed SOA, and the signatures hold.

    The DNSKEY RRset must be signed by a key whose DS is one of *expected_ds* (text,
    "<zone>. IN DS ..." or the rdata alone), and the SOA's RRSIG must validate against
    that DNSKEY RRset (dnspython, dns.dnssec.validate). *sessions*: the kept TCP
    connections the two questions go over (bind9_topology.dns.sessions.Sessions).
    """
    name = dns.name.from_text(zone)
    wanted = {_ds_rdata(d) for d in expected_ds}
    try:
        keys_msg = _fetch(endpoint, name, dns.rdatatype.DNSKEY, timeout, sessions)
        soa_msg = _fetch(endpoint, name, dns.rdatatype.SOA, timeout, sessions)
    except Exception as exc:  # a probe reports, never raises
        return False, f"DNSKEY/SOA query failed: {exc}"
    dnskeys = _find(keys_msg, name, dns.rdatatype.DNSKEY)
    if dnskeys is None:
        return False, "serves no DNSKEY (the zone is not signed)"
    keys_sig = _find(keys_msg, name, dns.rdatatype.RRSIG, dns.rdatatype.DNSKEY)
    soa = _find(soa_msg, name, dns.rdatatype.SOA)
    soa_sig = _find(soa_msg, name, dns.rdatatype.RRSIG, dns.rdatatype.SOA)
    if soa is None or soa_sig is None:
        return False, "serves the SOA without an RRSIG (the zone is not signed yet)"
    anchors = [k for k in dnskeys
               if _ds_rdata(dns.dnssec.make_ds(name, k, DIGEST).to_text()) in wanted]
    if not anchors:
        return False, "no DNSKEY matches the expected DS (keys differ from the stack's)"
    anchor_set = dns.rrset.from_rdata_list(name, dnskeys.ttl, anchors)
    failed = "signatures do not validate against the expected DS"
    if keys_sig is None:
        return False, f"{failed}: DNSKEY RRset has no RRSIG"
    try:
        dns.dnssec.validate(dnskeys, keys_sig, {name: anchor_set})
        dns.dnssec.validate(soa, soa_sig, {name: dnskeys})
    except dns.exception.ValidationFailure as exc:
        return False, f"{failed}: {exc}"
    serial = soa[0].serial
    return True, f"signed (serial {serial}, key tags " \
        f"{', '.join(str(dns.dnssec.key_id(k)) for k in dnskeys)})"


def _ds_rdata(text: str) -> str:
    parts = text.split()
    if "DS" in parts:
        parts = parts[parts.index("DS") + 1:]
    return " ".join(parts).lower()


def served_key_tags(endpoint: Any, zone: str, timeout: float = 2.0) -> set[int]:
    msg = _fetch(endpoint, dns.name.from_text(zone), dns.rdatatype.DNSKEY, timeout)
    rrset = _find(msg, dns.name.from_text(zone), dns.rdatatype.DNSKEY)
    return {dns.dnssec.key_id(k) for k in rrset} if rrset is not None else set()


def policy_blocks(policies: Iterable[str]) -> list[str]:
    """Names of the dnssec-policy blocks to render (sorted, unique)."""
    return sorted(set(policies))
