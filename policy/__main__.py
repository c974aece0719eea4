"""bind9-topology's policy pack: `pulumi preview --policy-pack policy` fails (mandatory)
when a rendered named.conf lets a zone be transferred without a TSIG key, turns recursion
on, gives a secondary a dnssec-policy or lets a primary transfer to any address, when a
ConfigMap is at or above 1 MiB, or when a Deployment's container image is not pinned.

The engine runs this file as an analyzer plugin (the language host's RunPlugin, with
this directory first on sys.path); the rules are the pure functions of rules.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError
from rules import (
    NAMED_CONF_RULES,
    NamedConf,
    configmap_too_large,
    named_confs,
    read_named_conf,
    unpinned_images,
)

CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"

DESCRIPTIONS = {
    "transfer-requires-tsig":
        "Zone transfers (allow-transfer in options, views and zones) only to clients "
        "that sign with a TSIG key.",
    "no-recursion": "Authoritative servers answer no recursive queries (recursion no).",
    "no-dnssec-policy-on-secondaries":
        "Only primaries sign: no dnssec-policy on a secondary instance or zone.",
    "primary-transfer-not-to-any":
        "A primary never allows transfers to any address (any, 0.0.0.0/0, ::/0, or no "
        "allow-transfer, BIND's default).",
}


def _name(args: ResourceValidationArgs) -> str:
    return str(args.name)


def _named_conf_policy(name: str,
                       rule: Callable[[NamedConf], list[str]]) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type != CONFIG_MAP:
            return
        try:
            data: Mapping[str, Any] | None = args.props.get("data")
            texts = named_confs(data)
        except UnknownValueError:
            return  # data waiting on outputs during preview: the zone shards, no named.conf
        for text in texts:
            for message in rule(read_named_conf(text)):
                report_violation(message, None)

    return ResourceValidationPolicy(name=name, description=DESCRIPTIONS[name], validate=validate)


def _configmap_size(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != CONFIG_MAP:
        return
    try:
        messages = configmap_too_large(_name(args), args.props.get("data"),
                                       args.props.get("binaryData"))
    except UnknownValueError:
        # A zone shard's data waits on its zones' serials during a first preview; its
        # size is checked when `pulumi up` registers it with the data known.
        return
    for message in messages:
        report_violation(message, None)


def _pinned_images(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type != DEPLOYMENT:
        return
    for message in unpinned_images(_name(args), args.props.get("spec")):
        report_violation(message, None)


POLICIES: list[Policy] = [
    *(_named_conf_policy(name, rule) for name, rule in NAMED_CONF_RULES.items()),
    ResourceValidationPolicy(
        name="configmap-under-1mib",
        description="A ConfigMap's data stays below 1 MiB, the most the API server accepts.",
        validate=_configmap_size,
    ),
    ResourceValidationPolicy(
        name="images-pinned",
        description="Every container image of a Deployment names a version: a tag other "
                    "than latest, or a digest.",
        validate=_pinned_images,
    ),
]

if __name__ == "__main__":  # the engine's run; tests import this file for POLICIES
    PolicyPack(
        name="bind9-topology",
        enforcement_level=EnforcementLevel.MANDATORY,
        policies=POLICIES,
    )
