"""Bind9Instance: one BIND server (Deployment) with its ConfigMaps, Secret, Service, policy."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from bind9_topology.render import manifests
from bind9_topology.render.bind_files import RenderedInstance, render_tsig_key
from bind9_topology.spec.model import Instance, StackSpec

TYPE = "bind9-topology:index:Bind9Instance"
PLACEHOLDER_SERIAL = 2000000000  # ten digits, like YYYYMMDDnn: shards are sized with it


@dataclass
class Bind9InstanceArgs:
    spec: StackSpec
    instance: Instance
    render: Callable[[Mapping[str, int]], RenderedInstance]
    serials: Mapping[str, pulumi.Input[int]] = field(default_factory=dict)
    tsig_secret: pulumi.Input[str] = ""
    # Signed zones this instance serves as a primary: zone -> DnssecKeys.material (secret)
    dnssec_keys: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)
    # ... and their key tags (public): a pod annotation, so new keys roll the pods
    dnssec_tags: Mapping[str, pulumi.Output[Any]] = field(default_factory=dict)


class Bind9Instance(pulumi.ComponentResource):
    deployment: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service
    config_maps: list[k8s.core.v1.ConfigMap]
    checksum: pulumi.Output[str]

    def __init__(
        self, name: str, args: Bind9InstanceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        spec, inst = args.spec, args.instance
        child = pulumi.ResourceOptions(parent=self)

        # The layout (which file goes to which ConfigMap) is fixed with placeholder serials,
        # so the number of resources is known before the real serials are.
        placeholders = dict.fromkeys(args.serials, PLACEHOLDER_SERIAL)
        layout = args.render(placeholders)

        # Each ConfigMap waits only on the serials of the zones it holds: the config
        # ConfigMap on none, so a change to one zone shows one zone's ConfigMap changing.
        self.config_maps = []
        layout_maps = manifests.config_maps(spec, layout)
        by_key = {path.rsplit("/", 1)[-1]: zone for path, zone in layout.zone_of_file.items()}
        for obj in layout_maps:
            keys = sorted(obj["data"])
            zones = sorted({by_key[k] for k in keys if k in by_key})
            data: pulumi.Input[dict[str, str]]
            if zones:
                data = pulumi.Output.all(**{z: args.serials[z] for z in zones}).apply(
                    functools.partial(
                        _render_keys, render=args.render, placeholders=placeholders, keys=keys
                    )
                )
            else:
                data = obj["data"]
            self.config_maps.append(
                k8s.core.v1.ConfigMap(
                    obj["metadata"]["name"], metadata=obj["metadata"], data=data, opts=child
                )
            )

        secret_shell = manifests.secret_shell(spec, inst)
        key = spec.tsigKey
        secret_body = pulumi.Output.secret(args.tsig_secret).apply(
            lambda s: render_tsig_key(key.name, key.algorithm, s).decode()
        )
        self.secret = k8s.core.v1.Secret(
            secret_shell["metadata"]["name"],
            metadata=secret_shell["metadata"],
            type=secret_shell["type"],
            string_data={manifests.tsig_secret_key(spec): secret_body},
            opts=child,
        )

        self.dnssec_secret = None
        if layout.signed_links and args.dnssec_keys:
            shell = manifests.secret_shell(spec, inst)
            shell["metadata"] = {**shell["metadata"], "name": manifests.dnssec_secret_name(inst)}
            plain: Any = pulumi.Output.all(**args.dnssec_keys).apply(_dnssec_secret_data)
            files = pulumi.Output.secret(plain)  # the keys are secrets already; stay so
            self.dnssec_secret = k8s.core.v1.Secret(
                manifests.dnssec_secret_name(inst),
                metadata=shell["metadata"],
                type=shell["type"],
                string_data=files,
                opts=child,
            )

        # The layout's checksum moves exactly when content moves (a serial moves only with
        # content), and it is known now: no annotation waits on the serials.
        dep = manifests.deployment(spec, layout, layout_maps[1:])
        if self.dnssec_secret is not None and args.dnssec_tags:
            annotations = dep["spec"]["template"]["metadata"]["annotations"]
            annotations[manifests.ANNOTATION_DNSSEC_KEYS] = pulumi.Output.all(
                **args.dnssec_tags).apply(lambda tags: " ".join(
                    f"{zone}:{t['ksk']}/{t['zsk']}" for zone, t in sorted(tags.items())))
        self.deployment = k8s.apps.v1.Deployment(
            inst.name,
            metadata=dep["metadata"],
            spec=dep["spec"],
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*self.config_maps, self.secret,
                                         *([self.dnssec_secret] if self.dnssec_secret else [])]
            ),
        )

        svc = manifests.service(spec, inst)
        self.service = k8s.core.v1.Service(
            f"{inst.name}-svc", metadata=svc["metadata"], spec=svc["spec"], opts=child
        )
        policy = manifests.network_policy(spec, inst)
        self.network_policy = k8s.networking.v1.NetworkPolicy(
            f"{inst.name}-netpol", metadata=policy["metadata"], spec=policy["spec"], opts=child
        )
        pdb = manifests.pod_disruption_budget(spec, inst)
        self.pdb = (
            k8s.policy.v1.PodDisruptionBudget(
                f"{inst.name}-pdb", metadata=pdb["metadata"], spec=pdb["spec"], opts=child
            )
            if pdb
            else None
        )
        monitor = manifests.service_monitor(spec, inst)
        self.service_monitor = (
            k8s.apiextensions.CustomResource(
                f"{inst.name}-servicemonitor", api_version=monitor["apiVersion"],
                kind=monitor["kind"], metadata=monitor["metadata"], spec=monitor["spec"],
                opts=child,
            )
            if monitor
            else None
        )
        self.checksum = pulumi.Output.from_input(layout.checksum)
        self.address = self.service.spec.apply(
            lambda s: (s.load_balancer_ip or s.cluster_ip) if s else None
        )
        self.register_outputs(
            {
                "name": inst.name,
                "role": inst.role,
                "service": self.service.metadata.name,
                "address": self.address,
                "checksum": self.checksum,
            }
        )


def _dnssec_secret_data(materials: dict[str, str]) -> dict[str, str]:
    """The key files of every signed zone, keyed as a Secret allows ('+' -> '_')."""
    import json

    from bind9_topology.dns.dnssec import secret_files, secret_key

    data: dict[str, str] = {}
    for zone, material in sorted(materials.items()):
        for name, body in secret_files(zone, json.loads(material)).items():
            data[secret_key(name)] = body.decode()
    return data


def _render_keys(
    serials: dict[str, Any],
    *,
    render: Callable[[Mapping[str, int]], RenderedInstance],
    placeholders: dict[str, int],
    keys: list[str],
) -> dict[str, str]:
    real = {**placeholders, **{z: int(v) for z, v in serials.items()}}
    return manifests.data_for_keys(render(real), keys)
