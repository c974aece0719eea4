"""The content digest of a zone: one canonical form for the renderer, the gate and the tests.

ZONEMD's SIMPLE scheme (RFC 8976) computed by dnspython over the zone with its SOA
serial set to 0 and without what a DNSSEC signer adds, so "rendered text" and "what a
server transferred" compare by content alone. Pure: dnspython only.
"""

from __future__ import annotations

import hashlib
from typing import cast

import dns.name
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.zone
import dns.zonetypes


def content_hash(zone_text_without_serial: str) -> str:
    """sha256 hex of a zone's text rendered with serial 0: what a serial is keyed on."""
    return hashlib.sha256(zone_text_without_serial.encode("utf-8")).hexdigest()


def zone_digest(zone: dns.zone.Zone, *, ignore_soa_serial: bool = True) -> str:
    """SHA-384 hex digest of the zone's content, computed as ZONEMD does (RFC 8976, SIMPLE).

    With ``ignore_soa_serial`` (the default) the digest is computed as if the
    SOA serial were 0. Why: the serial is checked on its own (exactly on the
    primary, "at least" on secondaries), while the digest proves *content*.
    Leaving the serial out lets the renderer compute the digest before a
    serial is assigned (the serial is itself derived from a content hash),
    lets the same digest hold for the same content across serial bumps, and
    makes "rendered text" and "what the server transferred" comparable
    without knowing which serial was stamped in. Apex ZONEMD records are left
    out as RFC 8976 prescribes.

    The zone given is not modified: the digest runs on a shallow copy whose
    apex node is rebuilt with serial 0 (other nodes are shared, not copied).
    """
    target = zone
    if ignore_soa_serial:
        target = _with_serial_zero(zone)
    target = _without_signatures(target)
    return target.compute_digest(dns.zonetypes.DigestHashAlgorithm.SHA384).digest.hex()


#: What a DNSSEC signer adds (RRSIG, NSEC, NSEC3, NSEC3PARAM, DNSKEY, CDS, CDNSKEY and
#: BIND's private signing-state type 65534): a signed zone's content is the rendered one.
_SIGNER_TYPES = frozenset({46, 47, 50, 51, 48, 59, 60, 65534})


def _without_signatures(zone: dns.zone.Zone) -> dns.zone.Zone:
    """The zone without what a signer adds (the same zone when there is none of it)."""
    if not any(rds.rdtype in _SIGNER_TYPES for node in zone.nodes.values()
               for rds in node.rdatasets):
        return zone
    copy = dns.zone.Zone(zone.origin, zone.rdclass, zone.relativize)
    for name, node in zone.nodes.items():
        kept = [rds for rds in node.rdatasets if rds.rdtype not in _SIGNER_TYPES]
        if kept:
            new = copy.node_factory()  # a dns.node.Node
            new.rdatasets.extend(kept)
            copy.nodes[name] = new
    return copy


def _with_serial_zero(zone: dns.zone.Zone) -> dns.zone.Zone:
    origin = zone.origin
    if origin is None:
        raise ValueError("zone has no origin")
    apex_name = dns.name.empty if zone.relativize else origin
    apex = zone.nodes.get(apex_name)
    if apex is None:
        raise dns.zone.NoSOA
    copy = dns.zone.Zone(origin, zone.rdclass, zone.relativize)
    copy.nodes.update(zone.nodes)
    new_apex = copy.node_factory()
    for rds in apex.rdatasets:
        if rds.rdtype == dns.rdatatype.SOA:
            soa0 = dns.rdataset.Rdataset(rds.rdclass, rds.rdtype, ttl=rds.ttl)
            for rd in rds:
                soa0.add(cast(dns.rdtypes.ANY.SOA.SOA, rd).replace(serial=0))
            new_apex.rdatasets.append(soa0)
        else:
            new_apex.rdatasets.append(rds)
    copy.nodes[apex_name] = new_apex
    return copy


def zone_digest_from_text(text: str, origin: str, *, ignore_soa_serial: bool = True) -> str:
    """:func:`zone_digest` of zone-file *text* (parsed by dnspython with *origin*)."""
    zone = dns.zone.from_text(text, origin=origin, relativize=True, check_origin=True)
    return zone_digest(zone, ignore_soa_serial=ignore_soa_serial)
