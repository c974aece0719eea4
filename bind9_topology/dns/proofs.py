"""Content proofs the transfer gate already paid for: pull a zone again only when its serial moved.

Proving a server's content costs a TSIG AXFR and a digest over the whole zone. Within one
process (a `pulumi up`, the local runner, a bench run) the gate often asks the same server
for the same zone again -- the next round of a gate, another gate of the same stack, a
re-check after an update. :class:`ContentProofs` remembers, per server, zone and serial,
the digest a verified pull showed, so that a server whose serial did not move is not
pulled twice.

What a hit proves is what the pull proved: a server's content at one serial changes only
with a new serial (a secondary takes content only by transfer, and the product moves the
serial with every change); a serial reused after lost state is caught because the
expected digest then differs from the remembered one, so the zone is pulled again. Only
positive proofs are kept (a mismatch is pulled again next round: a primary may be
reloading), and only for servers with a fixed address: a port-forward's listener port
(``Endpoint.tcp_only``) is a new one per gate and may reach another pod next time.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

from bind9_topology.dns.checks import Endpoint

__all__ = ["ContentProofs", "Proof", "default_proofs"]


@dataclass(frozen=True)
class Proof:
    digest: str
    records: int
    at: float  # time.monotonic() of the pull


class ContentProofs:
    """Verified (server, zone, serial) -> digest, bounded (least recently used out)."""

    def __init__(self, max_entries: int = 200_000, max_age_s: float | None = None) -> None:
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self._entries: collections.OrderedDict[tuple[str, int, str, int], Proof] = (
            collections.OrderedDict())
        self._lock = threading.Lock()
        self.hits = 0
        self.stored = 0  # proofs recorded

    @staticmethod
    def _key(endpoint: Endpoint, zone: str, serial: int) -> tuple[str, int, str, int] | None:
        if endpoint.tcp_only:
            return None
        return (endpoint.host, endpoint.port, zone.lower().rstrip(".") + ".", serial)

    def get(self, endpoint: Endpoint, zone: str, serial: int, digest: str) -> Proof | None:
        """The proof that *endpoint* served *digest* at *serial*, if one was made."""
        key = self._key(endpoint, zone, serial)
        if key is None or self.max_entries <= 0:
            return None
        with self._lock:
            proof = self._entries.get(key)
            if proof is None or proof.digest != digest.lower():
                return None
            if self.max_age_s is not None and time.monotonic() - proof.at > self.max_age_s:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return proof

    def known(self, endpoint: Endpoint, zone: str, serial: int) -> Proof | None:
        """The proof of whatever *endpoint* was proven to serve at *serial*, if any: what a
        gate that learns the content from the primaries (a region's zone) starts from."""
        key = self._key(endpoint, zone, serial)
        if key is None or self.max_entries <= 0:
            return None
        with self._lock:
            proof = self._entries.get(key)
            if proof is None:
                return None
            if self.max_age_s is not None and time.monotonic() - proof.at > self.max_age_s:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return proof

    def put(self, endpoint: Endpoint, zone: str, serial: int, digest: str, records: int) -> None:
        """Remember a verified pull: *endpoint* served *digest* at *serial*."""
        key = self._key(endpoint, zone, serial)
        with self._lock:
            self.stored += 1
            if key is None or self.max_entries <= 0:
                return
            self._entries[key] = Proof(digest.lower(), records, time.monotonic())
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


_default = ContentProofs()


def default_proofs() -> ContentProofs:
    """The process's proofs (what :func:`~bind9_topology.dns.gate.wait_until_transferred`
    uses unless it is given its own)."""
    return _default
