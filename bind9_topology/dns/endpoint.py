"""Where a DNS server is: what every probe, transfer and gate report names.

Its own module so that the fast transfer reader (fastxfr) and the checks built on it
(checks) both use it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: gate.via values whose targets are an instance's pods, listed through the Kubernetes
#: API: reached through a port-forward of the API, or at each pod's own IP
VIA_API: Literal["kubernetes-api"] = "kubernetes-api"
VIA_POD_NETWORK: Literal["pod-network"] = "pod-network"
PodsVia = Literal["kubernetes-api", "pod-network"]
PODS_VIA: tuple[str, ...] = (VIA_API, VIA_POD_NETWORK)


@dataclass(frozen=True)
class Endpoint:
    """A DNS server address: an IP ``host``, a ``port`` and an optional label.

    ``tcp_only``: the path carries TCP alone (a port-forward through the Kubernetes
    API), so queries that would go over UDP go over TCP.
    """

    host: str
    port: int = 53
    label: str = ""
    tcp_only: bool = False

    def __str__(self) -> str:
        where = f"{self.host}#{self.port}"
        return f"{self.label} ({where})" if self.label else where
