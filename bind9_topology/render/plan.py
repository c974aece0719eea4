"""InstancePlan: everything one instance needs, computed once from the spec.

A plan holds the instance's files, its ConfigMaps (each with the zones whose serial
its bytes hold) and the bodies of its Kubernetes objects. Serials are often not known
when the plan is made (under Pulumi they are Outputs of ZoneSerial), so the plan is
rendered once with a ten-digit placeholder serial (the widest a serial prints, so
the ConfigMap layout holds for any real one) and keeps each zone's serial as a slot:
the bytes before it and after it. Filling a slot is concatenation, not rendering.

The Pulumi layer maps a plan to resources; the local runner and `render` fill the
same plan with known serials (:meth:`InstancePlan.with_serials`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bind9_topology.config.model import Instance, StackSpec
from bind9_topology.config.zone_records import ZoneContent
from bind9_topology.render import manifests
from bind9_topology.render.bind_files import (
    CONTAINER,
    ZONE_DIR,
    Placement,
    RenderedInstance,
    render_instance,
    soa_parts,
    zone_file_name,
)

#: ten digits, like YYYYMMDDnn and like the largest serial (4294967295): what the
#: layout is sized with, so a real serial never makes a file longer than planned
PLACEHOLDER_SERIAL = 2000000000

Obj = dict[str, Any]


@dataclass(frozen=True)
class SerialSlot:
    """A file whose bytes hold one zone's serial: ``before + str(serial) + after``."""

    zone: str
    before: str
    after: str

    def fill(self, serial: int) -> str:
        return f"{self.before}{serial}{self.after}"


@dataclass(frozen=True)
class ConfigMapPlan:
    """One ConfigMap: its object body, the keys known now and the keys waiting on a serial."""

    name: str
    body: Obj  # apiVersion, kind, metadata (data left out: see data())
    static: Mapping[str, str]
    slots: Mapping[str, SerialSlot]
    #: a zone shard of a large instance: its files go out as one tar.gz (binaryData)
    packed: bool = False

    @property
    def zones(self) -> tuple[str, ...]:
        """The zones whose serial this ConfigMap's bytes hold (what it waits on)."""
        return tuple(sorted({slot.zone for slot in self.slots.values()}))

    def data(self, serials: Mapping[str, int]) -> dict[str, str]:
        """The files (key -> text) with *serials* filled in."""
        filled = {key: slot.fill(int(serials[slot.zone])) for key, slot in self.slots.items()}
        return dict(sorted({**self.static, **filled}.items()))

    def content(self, serials: Mapping[str, int]) -> dict[str, dict[str, str]]:
        """What the ConfigMap carries: {"data": files}, or packed {"binaryData": ...}."""
        files = self.data(serials)
        return manifests.packed_content(self.name, files) if self.packed else {"data": files}


@dataclass(frozen=True)
class InstancePlan:
    instance: Instance
    layout: RenderedInstance  # rendered with PLACEHOLDER_SERIAL for every primary zone
    config_maps: tuple[ConfigMapPlan, ...]  # the config ConfigMap first, then zone shards
    file_slots: Mapping[str, SerialSlot]  # zone file path -> its serial slot
    deployment: Obj
    service: Obj
    network_policy: Obj
    pod_disruption_budget: Obj | None
    service_monitor: Obj | None
    #: the agent's ServiceAccount, Role and RoleBinding (None: no agent)
    agent_rbac: tuple[Obj, Obj, Obj] | None
    tsig_secret: Obj  # the Secret without data: the Pulumi layer adds it as a secret
    tsig_secret_key: str  # its one key (<key name>.conf)
    dnssec_secret: Obj | None  # the DNSSEC key Secret without data (primaries that sign)

    @property
    def checksum(self) -> str:
        """Moves exactly when content moves (a serial moves only with content)."""
        return self.layout.checksum

    @property
    def zones(self) -> tuple[str, ...]:
        """The primary zones whose serial the plan waits on."""
        return tuple(sorted({slot.zone for slot in self.file_slots.values()}))

    def with_serials(self, serials: Mapping[str, int]) -> RenderedInstance:
        """The instance's files with real serials (the local runner, `render`)."""
        missing = sorted(set(self.zones) - set(serials))
        if missing:
            raise KeyError(f"no serial for {', '.join(missing)}")
        zone_files = dict(self.layout.zone_files)
        for path, slot in self.file_slots.items():
            zone_files[path] = slot.fill(int(serials[slot.zone])).encode()
        return dataclasses.replace(
            self.layout, zone_files=zone_files,
            serials={z: int(serials[z]) for z in self.layout.serials})


def plan_instance(
    spec: StackSpec,
    instance: Instance,
    contents: Mapping[str, ZoneContent],
    placement: Placement = CONTAINER,
    tsig_secret: str | None = None,
    dnssec_keys: Mapping[str, Mapping[str, object]] | None = None,
) -> InstancePlan:
    """The plan of *instance*. *tsig_secret* and *dnssec_keys* only where they are known
    in clear (the local runner): under Pulumi they stay Outputs and never enter a plan."""
    primary = sorted(z.zoneName for z in spec.zones_for(instance) if z.type == "primary")
    layout = render_instance(spec, instance, contents, dict.fromkeys(primary, PLACEHOLDER_SERIAL),
                             placement, tsig_secret, dnssec_keys)
    file_slots: dict[str, SerialSlot] = {}
    for zone in primary:
        path = f"{ZONE_DIR}/{zone_file_name(zone)}"
        before, _ = soa_parts(contents[zone])
        rendered = layout.zone_files[path].decode()
        opening = f"{before}{PLACEHOLDER_SERIAL}"
        if not rendered.startswith(opening):
            raise AssertionError(f"{path} does not open with its SOA: {rendered[:200]!r}")
        file_slots[path] = SerialSlot(zone, before, rendered[len(opening):])
    slot_of_key = {manifests.config_map_key(path): slot for path, slot in file_slots.items()}

    # the files of every ConfigMap (packed later, once the serials are in: content())
    maps = manifests.config_maps(spec, layout, pack=False)
    first_zone_map = 1 + len(manifests.zone_conf_files(layout))
    packed = manifests.packs_zones(layout)
    config_maps = tuple(
        ConfigMapPlan(
            name=obj["metadata"]["name"],
            body={k: v for k, v in obj.items() if k != "data"},
            static={k: v for k, v in obj["data"].items() if k not in slot_of_key},
            slots={k: slot_of_key[k] for k in obj["data"] if k in slot_of_key},
            packed=packed and index >= first_zone_map,
        )
        for index, obj in enumerate(maps)
    )
    dnssec_secret = None
    if layout.signed_links:
        dnssec_secret = manifests.secret_shell(spec, instance)
        dnssec_secret["metadata"] = {**dnssec_secret["metadata"],
                                     "name": manifests.dnssec_secret_name(instance)}
    return InstancePlan(
        instance=instance,
        layout=layout,
        config_maps=config_maps,
        file_slots=file_slots,
        deployment=manifests.deployment(spec, layout, maps[first_zone_map:]),
        service=manifests.service(spec, instance),
        network_policy=manifests.network_policy(spec, instance),
        pod_disruption_budget=manifests.pod_disruption_budget(spec, instance),
        service_monitor=manifests.service_monitor(spec, instance),
        agent_rbac=(manifests.agent_rbac(spec, instance)
                    if manifests.uses_agent(spec, layout) else None),
        tsig_secret=manifests.secret_shell(spec, instance),
        tsig_secret_key=manifests.tsig_secret_key(spec),
        dnssec_secret=dnssec_secret,
    )
