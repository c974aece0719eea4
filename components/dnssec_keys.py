"""DnssecKeys: a signed zone's KSK and ZSK, generated once and kept in Pulumi state.

The private keys exist only in this resource's `material` output, a Pulumi secret
(encrypted in state); `ds`, `dnskeys` and `keyTags` are public. Nothing but a
replacement (`pulumi up --replace <urn>`, or a new zone name) makes new keys: a pod
restart, a new replica or a changed record never does (components/dnssec.py).
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider

from components.args import plain


class DnssecKeysProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        from bind9_topology.dns.dnssec import generate_material, public_info

        zone = str(props["zoneName"])
        given = plain(props.get("material"))
        # Keys given (the local runner's, for a gate.localRunner stack) are adopted as they
        # are; otherwise new ones are made, once.
        material = json.loads(given) if given else generate_material()
        return CreateResult(id_=f"dnssec-{zone}", outs={
            **props, "material": json.dumps(material), **public_info(zone, material)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = ["zoneName"] if olds.get("zoneName") != news.get("zoneName") else []
        given, old = plain(news.get("material")), plain(olds.get("material"))
        if given and given != old:  # other keys to adopt (the local runner's were remade)
            replaces.append("material")
        return DiffResult(changes=bool(replaces), replaces=replaces, stables=["zoneName"],
                          delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)


class DnssecKeys(Resource, module="bind9", name="DnssecKeys"):
    """`material` (secret JSON: {"ksk"|"zsk": {"private", "created"}}), `ds`, `dnskeys`,
    `keyTags`; created once per zone name."""

    material: pulumi.Output[str]
    ds: pulumi.Output[list[str]]
    dnskeys: pulumi.Output[list[str]]
    keyTags: pulumi.Output[dict[str, int]]

    def __init__(self, name: str, zone_name: str,
                 opts: pulumi.ResourceOptions | None = None, *,
                 material: str | None = None) -> None:
        props = {"zoneName": zone_name,
                 "material": pulumi.Output.secret(material) if material else None,
                 "ds": None, "dnskeys": None, "keyTags": None}
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["material"]))
        super().__init__(DnssecKeysProvider(), name, props, opts)
