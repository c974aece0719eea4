"""What the dynamic providers are told to probe: the wire shape of a server, typed.

A target is either a server at an address (``DirectTarget``) or every pod of an
instance the stack deploys, reached through the Kubernetes API (``PodsTarget``,
expanded by bind9_topology.kube.forward.gate_endpoints). They travel as plain dicts
in the providers' inputs and state (what Pulumi serializes), so these are TypedDicts:
the same bytes in state as before they had a type, checked by mypy where built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

from bind9_topology.config.model import StackSpec, Zone
from bind9_topology.dns.endpoint import PODS_VIA, VIA_API, VIA_POD_NETWORK, PodsVia
from bind9_topology.dns.gate import map_address

__all__ = ["PODS_VIA", "VIA_API", "VIA_POD_NETWORK", "DirectTarget", "PodsTarget", "Target",
           "direct", "pods_of", "probe_targets", "through_api"]



class DirectTarget(TypedDict):
    """A server probed at its address (an external primary, a NOTIFY target, `direct`)."""

    name: NotRequired[str]
    host: str
    port: int


class PodsTarget(TypedDict):
    """Every pod of the instance's current ReplicaSet, listed through the API and reached
    through a port-forward of it (kubernetes-api) or at each pod's IP (pod-network)."""

    name: str
    instance: str
    namespace: str
    via: PodsVia


Target = DirectTarget | PodsTarget


def direct(host: str, port: int, name: str | None = None) -> DirectTarget:
    target = DirectTarget(host=host, port=port)
    if name is not None:
        target["name"] = name
    return target


def pods_of(instance: str, namespace: str, via: PodsVia = VIA_API) -> PodsTarget:
    return PodsTarget(name=instance, instance=instance, namespace=namespace, via=via)


def through_api(target: Mapping[str, Any]) -> bool:
    """A target whose pods are listed through the Kubernetes API (either way of asking)."""
    return target.get("via") in PODS_VIA


def probe_targets(spec: StackSpec, zone: Zone,
                  same_name: Sequence[Zone] | None = None) -> list[Target]:
    """Every server that may hold *zone*: its primaries, secondaries and NOTIFY targets.

    ZoneSerial asks them which serial they serve before it picks one. With gate.via
    kubernetes-api the stack's own instances are asked pod by pod through the API (as
    the gate asks them), other addresses directly (through gate.addressMap).
    *same_name*: the stack's zones named like *zone* (primary and secondary entries), when
    the caller has them grouped already (a stack of many zones: one pass, not one each).
    """
    via_api = spec.gate.via in PODS_VIA
    addresses: list[str] = []
    targets: list[Target] = []
    owned: set[str] = set()
    if same_name is None:
        same_name = [z for z in spec.zones if z.zoneName == zone.zoneName]
    for z in same_name:
        for inst in spec.instances_for(z):
            if inst.service.fixed_address:
                owned.add(inst.service.fixed_address)
            if via_api:
                pods = pods_of(inst.name, spec.namespace, spec.gate.via)  # type: ignore[arg-type]
                if pods not in targets:
                    targets.append(pods)
            elif inst.service.fixed_address:
                addresses.append(inst.service.fixed_address)
    addresses += [a for a in zone.alsoNotify if not (via_api and a in owned)]
    for address in dict.fromkeys(addresses):
        targets.append(direct(*map_address(address, spec.gate.addressMap)))
    return targets
