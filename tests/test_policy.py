"""The policy pack's rules (policy/rules.py), each with a violating and a passing input,
and the pack's wiring (policy/__main__.py) on resource inputs as the analyzer gets them.

Recursion, transfers to any address, a dnssec-policy on a secondary zone and a ConfigMap
over 1 MiB are refused by the stack model or the renderer before the program registers
anything, so no stack can reach the pack with them: these tests are where those rules
are proven. tests/test_engine_policy.py runs the pack through the real engine.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from policy.rules import (
    CONFIGMAP_LIMIT,
    NamedConfError,
    configmap_size,
    configmap_too_large,
    image_pinned,
    named_confs,
    parse_named_conf,
    primary_transfer_to_any,
    read_named_conf,
    recursion_on,
    secondary_dnssec_policy,
    transfer_without_tsig,
    unpinned_images,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
PRIMARY = (GOLDEN / "primary-dns.named.conf").read_text()
SECONDARY = (GOLDEN / "secondary-dns.named.conf").read_text()


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# ----------------------------------------------------------------------- parser


def test_parser_reads_statements_blocks_strings_and_comments() -> None:
    stmts = parse_named_conf("""
        # hash comment
        /* block
           comment { */
        options { directory "/var/cache/bind"; allow-transfer { key "k1"; !10.0.0.1; }; };
        zone "example.com" IN { type primary; file "db.example.com"; }; // trailing
    """)
    assert [s.name for s in stmts] == ["options", "zone"]
    options, zone = stmts
    transfer = options.find("allow-transfer")
    assert transfer is not None and transfer.block is not None
    assert [s.words for s in transfer.block] == [["key", "k1"], ["!10.0.0.1"]]
    assert zone.words == ["zone", "example.com", "IN"]
    assert zone.find("type") is not None


def test_parser_refuses_unbalanced_braces() -> None:
    with pytest.raises(NamedConfError):
        parse_named_conf("options { recursion no;")
    with pytest.raises(NamedConfError):
        parse_named_conf("options { recursion no; }; };")


def test_golden_configs_read_with_their_roles() -> None:
    primary, secondary = read_named_conf(PRIMARY), read_named_conf(SECONDARY)
    assert (primary.instance, primary.role) == ("primary-dns", "primary")
    assert (secondary.instance, secondary.role) == ("secondary-dns", "secondary")
    assert {z.type for z in primary.zones} == {"primary"}
    assert {z.name for z in secondary.zones} == {"example.com", "example.net", "example.org"}


def test_role_from_zone_types_without_the_header() -> None:
    conf = read_named_conf('options { recursion no; }; zone "a" { type slave; };')
    assert conf.role == "secondary"
    conf = read_named_conf('options { recursion no; }; zone "a" { type master; };')
    assert conf.role == "primary"


@pytest.mark.parametrize("text", [PRIMARY, SECONDARY], ids=["primary", "secondary"])
def test_rendered_configs_pass_every_rule(text: str) -> None:
    conf = read_named_conf(text)
    for rule in (transfer_without_tsig, recursion_on, secondary_dnssec_policy,
                 primary_transfer_to_any):
        assert rule(conf) == [], rule.__name__


# ----------------------------------------------------------------------- transfers


def test_transfer_without_tsig() -> None:
    violating = read_named_conf(_replace(
        PRIMARY, "allow-transfer { key transfer-key; };",
        "allow-transfer { key transfer-key; 10.0.0.0/8; };"))
    [message] = transfer_without_tsig(violating)
    assert "instance primary-dns (primary): options allows zone transfers without a TSIG key" \
        in message
    assert "10.0.0.0/8" in message
    assert transfer_without_tsig(read_named_conf(PRIMARY)) == []


def test_transfer_without_tsig_in_a_zone_and_through_an_acl() -> None:
    zone_level = read_named_conf(_replace(
        SECONDARY, "allow-transfer { key transfer-key; };", "allow-transfer { localnets; };"))
    [message] = transfer_without_tsig(zone_level)
    assert 'zone "example.com"' in message and "localnets" in message

    acl = read_named_conf(
        'acl peers { 192.0.2.0/24; key k; }; acl signed { key k; };\n'
        'options { recursion no; allow-transfer { signed; }; };\n'
        'zone "a" { type primary; allow-transfer { !192.0.2.1; peers; }; };')
    [message] = transfer_without_tsig(acl)
    assert 'zone "a"' in message and "192.0.2.0/24" in message
    # none, negations and keys only: nothing goes out unsigned.
    assert transfer_without_tsig(read_named_conf(
        'options { allow-transfer { none; }; };\n'
        'zone "a" { type secondary; allow-transfer { !any; key k; }; };')) == []


def test_no_allow_transfer_is_bind_default_of_any() -> None:
    conf = read_named_conf('options { recursion no; };\nzone "a" { type primary; };')
    assert transfer_without_tsig(conf)
    [message] = primary_transfer_to_any(conf)
    assert "any (no allow-transfer)" in message


@pytest.mark.parametrize("entry", ["any", "0.0.0.0/0", "::/0"])
def test_primary_transfer_to_any(entry: str) -> None:
    violating = read_named_conf(_replace(
        PRIMARY, "allow-transfer { key transfer-key; };",
        f"allow-transfer {{ key transfer-key; {entry}; }};"))
    [message] = primary_transfer_to_any(violating)
    assert "primary-dns (primary): options lets any address transfer the zones" in message
    assert entry in message
    assert primary_transfer_to_any(read_named_conf(PRIMARY)) == []
    # A prefix is keyless but not "any"; a secondary is the other rule's business.
    prefix = read_named_conf(_replace(
        PRIMARY, "allow-transfer { key transfer-key; };", "allow-transfer { 10.0.0.0/8; };"))
    assert primary_transfer_to_any(prefix) == []
    secondary = read_named_conf(_replace(
        SECONDARY, "allow-transfer { none; };", f"allow-transfer {{ {entry}; }};"))
    assert primary_transfer_to_any(secondary) == []


# ----------------------------------------------------------------------- recursion


def test_recursion_on() -> None:
    violating = read_named_conf(_replace(PRIMARY, "recursion no;", "recursion yes;"))
    [message] = recursion_on(violating)
    assert "options has `recursion yes;`" in message
    missing = read_named_conf(_replace(SECONDARY, "recursion no;", ""))
    [message] = recursion_on(missing)
    assert "BIND's default is yes" in message
    in_view = read_named_conf('options { recursion no; }; view "v" { recursion yes; };')
    assert recursion_on(in_view) and 'view "v"' in recursion_on(in_view)[0]
    assert recursion_on(read_named_conf(PRIMARY)) == []


# ----------------------------------------------------------------------- dnssec


def test_secondary_dnssec_policy() -> None:
    violating = read_named_conf(_replace(
        SECONDARY, 'zone "example.com" {\n    type secondary;',
        'zone "example.com" {\n    type secondary;\n    dnssec-policy "default";'))
    [message] = secondary_dnssec_policy(violating)
    assert 'secondary-dns (secondary): zone "example.com" (type secondary) has dnssec-policy' \
        in message
    in_options = read_named_conf(_replace(
        SECONDARY, "recursion no;", 'recursion no;\n    dnssec-policy "default";'))
    assert any("options has dnssec-policy" in m for m in secondary_dnssec_policy(in_options))
    # A secondary zone on a primary instance is a secondary too.
    mixed = read_named_conf(
        'options { recursion no; };\nzone "p" { type primary; dnssec-policy "x"; };\n'
        'zone "s" { type slave; dnssec-policy "x"; };')
    [message] = secondary_dnssec_policy(mixed)
    assert 'zone "s"' in message


def test_primary_may_sign() -> None:
    signed = read_named_conf(_replace(
        PRIMARY, 'journal "/var/cache/bind/db.example.com.jnl";',
        'journal "/var/cache/bind/db.example.com.jnl";\n    dnssec-policy "example-com";\n'
        "    inline-signing yes;"))
    assert secondary_dnssec_policy(signed) == []
    off = read_named_conf(_replace(
        SECONDARY, 'zone "example.com" {\n    type secondary;',
        'zone "example.com" {\n    type secondary; dnssec-policy "none";'))
    assert secondary_dnssec_policy(off) == []


# ----------------------------------------------------------------------- ConfigMaps


def test_configmap_size_limit() -> None:
    assert configmap_too_large("small", {"named.conf": PRIMARY}) == []
    exact = {"k": "x" * (CONFIGMAP_LIMIT - 1)}  # key + value = 1 MiB exactly
    assert configmap_size(exact, None) == CONFIGMAP_LIMIT
    [message] = configmap_too_large("zones-0", exact)
    assert "ConfigMap zones-0 holds 1048576 bytes, at or above the 1 MiB" in message
    assert configmap_too_large("under", {"k": "x" * (CONFIGMAP_LIMIT - 2)}) == []
    # binaryData counts decoded bytes: 4 base64 chars are 3 bytes.
    assert configmap_size(None, {"b": "QUJD"}) == 1 + 3
    assert configmap_too_large("binary", {"a": "x"},
                               {"b": "A" * (CONFIGMAP_LIMIT // 3 * 4 + 4)})


def test_named_confs_only_from_the_named_conf_key() -> None:
    assert named_confs({"named.conf": PRIMARY, "ready.sh": "#!/bin/sh"}) == [PRIMARY]
    assert named_confs({"db.example.com": "@ SOA ..."}) == []
    assert named_confs(None) == []


# ----------------------------------------------------------------------- images


@pytest.mark.parametrize("image,pinned", [
    ("internetsystemsconsortium/bind9:9.18", True),
    ("localhost/bind9-topology/bind9:9.18-deb12", True),
    ("registry.example:5000/bind9:9.20", True),
    ("bind9@sha256:" + "a" * 64, True),
    ("internetsystemsconsortium/bind9", False),
    ("internetsystemsconsortium/bind9:latest", False),
    ("registry.example:5000/bind9", False),
    ("bind9:", False),
])
def test_image_pinned(image: str, pinned: bool) -> None:
    assert image_pinned(image) is pinned


def _deployment_spec(*images: str, init: str | None = None) -> dict[str, Any]:
    pod: dict[str, Any] = {"containers": [{"name": f"c{i}", "image": image}
                                          for i, image in enumerate(images)]}
    if init:
        pod["initContainers"] = [{"name": "init", "image": init}]
    return {"template": {"spec": pod}}


def test_unpinned_images() -> None:
    spec = _deployment_spec("internetsystemsconsortium/bind9:9.18", "exporter:latest",
                            init="busybox")
    messages = unpinned_images("primary-dns", spec)
    assert len(messages) == 2
    assert "Deployment primary-dns: container init runs image 'busybox', not pinned" \
        in messages[0]
    assert "container c1 runs image 'exporter:latest'" in messages[1]
    assert unpinned_images("ok", _deployment_spec("bind9:9.18", "exporter:v0.8.0")) == []
    assert unpinned_images("empty", None) == []


# ----------------------------------------------------------------------- the pack


@pytest.fixture(scope="module")
def pack() -> ModuleType:
    """policy/__main__.py as the analyzer runs it (its directory on sys.path), without
    serving: PolicyPack is only built when it runs as __main__."""
    sys.path.insert(0, str(ROOT / "policy"))
    try:
        spec = importlib.util.spec_from_file_location("bind9_policy_pack",
                                                      ROOT / "policy" / "__main__.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "policy"))
    return module


def _validate(pack: ModuleType, name: str, resource_type: str, props: dict[str, Any],
              resource: str = "res") -> list[str]:
    from pulumi_policy.proxy import unknown_checking_proxy

    [policy] = [p for p in pack.POLICIES if p.name == name]
    reported: list[str] = []
    args = SimpleNamespace(resource_type=resource_type, name=resource,
                           props=unknown_checking_proxy(props))
    policy.validate(args, lambda message, urn=None: reported.append(message))
    return reported


def test_pack_is_mandatory_and_has_every_rule(pack: ModuleType) -> None:
    assert {p.name for p in pack.POLICIES} == {
        "transfer-requires-tsig", "no-recursion", "no-dnssec-policy-on-secondaries",
        "primary-transfer-not-to-any", "configmap-under-1mib", "images-pinned"}
    source = (ROOT / "policy" / "__main__.py").read_text()
    assert "enforcement_level=EnforcementLevel.MANDATORY" in source


def test_pack_checks_named_conf_configmaps(pack: ModuleType) -> None:
    bad = {"data": {"named.conf": _replace(PRIMARY, "recursion no;", "recursion yes;")}}
    [message] = _validate(pack, "no-recursion", "kubernetes:core/v1:ConfigMap", bad)
    assert "recursion yes" in message
    good = {"data": {"named.conf": PRIMARY}}
    assert _validate(pack, "no-recursion", "kubernetes:core/v1:ConfigMap", good) == []
    # Other resource types are not read.
    assert _validate(pack, "no-recursion", "kubernetes:core/v1:Secret", bad) == []


def test_pack_skips_data_unknown_during_preview(pack: ModuleType) -> None:
    from pulumi_policy.proxy import UNKNOWN_OBJECT_VALUE

    unknown = {"data": UNKNOWN_OBJECT_VALUE}
    for name in ("transfer-requires-tsig", "configmap-under-1mib"):
        assert _validate(pack, name, "kubernetes:core/v1:ConfigMap", unknown) == []


def test_pack_checks_sizes_and_images(pack: ModuleType) -> None:
    big = {"data": {"db.big": "x" * CONFIGMAP_LIMIT}}
    [message] = _validate(pack, "configmap-under-1mib", "kubernetes:core/v1:ConfigMap", big,
                          resource="primary-dns-zones-0")
    assert "ConfigMap primary-dns-zones-0" in message
    spec = {"spec": _deployment_spec("internetsystemsconsortium/bind9")}
    [message] = _validate(pack, "images-pinned", "kubernetes:apps/v1:Deployment", spec,
                          resource="primary-dns")
    assert "Deployment primary-dns" in message
    assert _validate(pack, "images-pinned", "kubernetes:apps/v1:Deployment",
                     {"spec": _deployment_spec("internetsystemsconsortium/bind9:9.18")}) == []
