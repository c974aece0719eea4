"""Model validation: one test per rule, each naming the config path and the fix.

Every test asserts the exact issue path and a fragment of the message that
tells the user what to do, and that the config had no other problem (so a
rule does not fire for the wrong reason). The last tests check that every
problem comes back at once.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bind9_topology.config.model import ConfigIssue, TopologyError
from bind9_topology.config.topology import Topology, load_topology

pytestmark = pytest.mark.unit

P = "bind9-topology:"

Raw = dict[str, Any]


@pytest.fixture
def check(
    project_dir: Path, tsig_secret: str
) -> Callable[..., list[ConfigIssue]]:
    """Load raw; return the issues (an empty list when it loads)."""

    def run(
        raw: Raw, *, secret: str | None = tsig_secret, stack: str = "prod"
    ) -> list[ConfigIssue]:
        try:
            load_topology(raw, stack=stack, project_dir=project_dir, tsig_secret=secret)
        except TopologyError as exc:
            assert exc.issues, "TopologyError without issues"
            return exc.issues
        return []

    return run


def only_issue(issues: list[ConfigIssue], path: str, *fragments: str) -> ConfigIssue:
    """Exactly one issue, at path, whose message holds every fragment."""
    assert len(issues) == 1, "expected one issue, got:\n" + "\n".join(map(str, issues))
    return has_issue(issues, path, *fragments)


def has_issue(issues: list[ConfigIssue], path: str, *fragments: str) -> ConfigIssue:
    at_path = [i for i in issues if i.path == path]
    assert at_path, f"no issue at {path}; got:\n" + "\n".join(map(str, issues))
    for issue in at_path:
        if all(f in issue.message for f in fragments):
            return issue
    raise AssertionError(
        f"no issue at {path} mentions {fragments}; got:\n" + "\n".join(map(str, at_path))
    )


def primary_zone(raw: Raw) -> dict[str, Any]:
    return raw["zones"][0]


def add_records(raw: Raw, *records: dict[str, Any]) -> str:
    """Append records to the primary zone; return the path of the first one added."""
    zone_records = primary_zone(raw)["records"]
    first = len(zone_records)
    zone_records.extend(records)
    return f"{P}zones[0].records[{first}]"


# --------------------------------------------------------------------------- baseline


def test_minimal_config_is_valid(check, minimal_raw):
    assert check(minimal_raw) == []


def test_prod_stack_is_valid(check, prod_raw):
    assert check(prod_raw) == []


def test_issue_str_and_error_text_name_path_and_count(check, minimal_raw):
    minimal_raw["instances"][0]["replicas"] = 0
    minimal_raw["instances"][1]["version"] = "9.11"
    issues = check(minimal_raw)
    error = TopologyError(issues)
    text = str(error)
    assert text.startswith("2 problem(s) in the stack configuration:")
    assert f"  - {P}instances[0].replicas: replicas is 0" in text
    assert f"  - {P}instances[1].version: BIND version '9.11'" in text


# --------------------------------------------------------------------------- addresses


def test_bad_ip_in_primary_servers(check, minimal_raw):
    minimal_raw["zones"][1]["secondaryConfig"]["primaryServers"] = ["10.0.1.10", "10.0.1.300"]
    only_issue(
        check(minimal_raw),
        f"{P}zones[1].secondaryConfig.primaryServers[1]",
        "'10.0.1.300' is not an IP address",
        "write an IPv4/IPv6 address",
        "'10.0.1.10:5353'",
    )


def test_bad_load_balancer_ip(check, minimal_raw):
    minimal_raw["instances"][0]["service"]["loadBalancerIP"] = "10.0.1"
    only_issue(
        check(minimal_raw),
        f"{P}instances[0].service.loadBalancerIP",
        "'10.0.1' is not an IP address",
        "give the fixed IP other regions list in primaryServers",
    )


def test_bad_cidr_in_allow_query(check, minimal_raw):
    minimal_raw["instances"][0]["config"] = {"allowQuery": ["10.0.0.0/33", "0.0.0.0/0"]}
    only_issue(
        check(minimal_raw),
        f"{P}instances[0].config.allowQuery[0]",
        "'10.0.0.0/33' is not a CIDR",
        "write a network such as '10.0.0.0/8'",
    )


# --------------------------------------------------------------------------- names and records


def test_bad_zone_name(check, minimal_raw):
    primary_zone(minimal_raw)["zoneName"] = "-bad.example"
    issues = check(minimal_raw)
    has_issue(
        issues,
        f"{P}zones[0].zoneName",
        "'-bad.example' is not a valid zone name",
        "e.g. 'example.com'",
    )
    assert all(i.path.startswith(f"{P}zones[0]") for i in issues), issues


def test_zone_name_with_empty_label(check, minimal_raw):
    primary_zone(minimal_raw)["zoneName"] = "example..com"
    has_issue(
        check(minimal_raw),
        f"{P}zones[0].zoneName",
        "'example..com' is not a valid zone name",
        "labels separated by single dots",
    )


def test_bad_record_name(check, minimal_raw):
    path = add_records(minimal_raw, {"name": "www..app", "type": "A", "data": "192.0.2.1"})
    only_issue(
        check(minimal_raw),
        f"{path}.name",
        "'www..app' is not a valid record name",
        "use a name relative to the zone such as 'www' or '@'",
    )


def test_record_name_with_whitespace(check, minimal_raw):
    path = add_records(minimal_raw, {"name": "www A", "type": "A", "data": "192.0.2.1"})
    only_issue(check(minimal_raw), f"{path}.name", "contains whitespace", "such as 'www'")


def test_record_data_dnspython_rejects_a(check, minimal_raw):
    path = add_records(minimal_raw, {"name": "web", "type": "A", "data": "999.1.1.1"})
    only_issue(
        check(minimal_raw),
        f"{path}.data",
        "A data '999.1.1.1' is not valid",
        "write it as in a master file, e.g. A 192.0.2.1",
    )


def test_record_data_mx_without_preference(check, minimal_raw):
    path = add_records(minimal_raw, {"name": "@", "type": "MX", "data": "mail"})
    only_issue(
        check(minimal_raw),
        f"{path}.data",
        "MX data 'mail' is not valid",
        "e.g. MX 10 mail.example.com.",
    )


def test_cname_beside_other_data(check, minimal_raw):
    # dnspython alone would silently keep only one of the two: the model must refuse.
    first = add_records(
        minimal_raw,
        {"name": "www", "type": "A", "data": "192.0.2.1"},
        {"name": "www", "type": "CNAME", "data": "example.com."},
    )
    cname_path = first.replace("records[2]", "records[3]")
    only_issue(
        check(minimal_raw),
        cname_path,
        "www has a CNAME beside other data (A)",
        "a CNAME must be the only record at its name",
        "remove the CNAME or the other records",
    )


def test_cname_at_apex(check, minimal_raw):
    path = add_records(minimal_raw, {"name": "@", "type": "CNAME", "data": "elsewhere.net."})
    only_issue(
        check(minimal_raw), path, "the apex (@) has a CNAME beside other data (NS, SOA)"
    )


def test_zone_without_ns_at_apex(check, minimal_raw):
    primary_zone(minimal_raw)["records"] = [{"name": "ns1", "type": "A", "data": "10.0.1.10"}]
    only_issue(
        check(minimal_raw),
        f"{P}zones[0].records",
        "zone example.com has no NS record at its apex",
        "add {name: '@', type: NS, data: ns1.example.com.}",
    )


# --------------------------------------------------------------------------- topology


def test_secondary_zone_without_primary_servers(check, minimal_raw):
    del minimal_raw["zones"][1]["secondaryConfig"]
    only_issue(
        check(minimal_raw),
        f"{P}zones[1].secondaryConfig.primaryServers",
        "a secondary zone needs the IPs of its primaries",
        "add secondaryConfig.primaryServers: ['10.0.1.10']",
    )


def test_instance_selector_matches_no_instance(check, minimal_raw):
    minimal_raw["zones"][1]["instanceSelector"]["matchLabels"]["region"] = "eu-west-9"
    only_issue(
        check(minimal_raw),
        f"{P}zones[1].instanceSelector",
        "'region': 'eu-west-9'",
        "selects no instance",
        "fix the labels or add an instance that carries them",
    )


def test_duplicate_instance_names(check, minimal_raw):
    minimal_raw["instances"].append({"name": "primary-dns", "role": "primary"})
    only_issue(
        check(minimal_raw),
        f"{P}instances[2].name",
        "duplicate instance name 'primary-dns' (also bind9-topology:instances[0])",
        "give each instance its own name",
    )


def test_duplicate_zone_names(check, minimal_raw):
    minimal_raw["zones"].append(copy.deepcopy(primary_zone(minimal_raw)))
    only_issue(
        check(minimal_raw),
        f"{P}zones[2].name",
        "duplicate zone resource name 'example-com' (also bind9-topology:zones[0])",
        "set a distinct name",
    )


def test_same_zone_twice_on_one_instance(check, minimal_raw):
    twin = copy.deepcopy(primary_zone(minimal_raw))
    twin["name"] = "example-com-again"
    minimal_raw["zones"].append(twin)
    only_issue(
        check(minimal_raw),
        f"{P}zones",
        "instance 'primary-dns' would serve example.com twice (example-com and "
        "example-com-again)",
        "one zone per instance",
    )


# --------------------------------------------------------------------------- instances


def test_unsupported_version(check, minimal_raw):
    minimal_raw["instances"][0]["version"] = "9.11"
    only_issue(
        check(minimal_raw),
        f"{P}instances[0].version",
        "BIND version '9.11' is not supported",
        "use one of '9.18', '9.20'",
    )


def test_replicas_zero(check, minimal_raw):
    minimal_raw["instances"][1]["replicas"] = 0
    only_issue(
        check(minimal_raw),
        f"{P}instances[1].replicas",
        "replicas is 0",
        "set it to 1 or more",
    )


def test_invalid_label_key(check, minimal_raw):
    minimal_raw["instances"][0]["labels"] = {"team name": "dns"}
    only_issue(
        check(minimal_raw),
        f"{P}instances[0].labels.team name",
        "label key 'team name' is not valid",
        "use [prefix/]name with alphanumerics",
    )


def test_invalid_label_value(check, minimal_raw):
    minimal_raw["instances"][0]["labels"] = {"team": "dns & ops"}
    only_issue(
        check(minimal_raw),
        f"{P}instances[0].labels.team",
        "label value 'dns & ops' is not valid",
        "use at most 63 alphanumerics",
    )


def test_instance_name_not_dns1123(check, minimal_raw):
    minimal_raw["instances"][0]["name"] = "Primary_DNS"
    only_issue(
        check(minimal_raw),
        f"{P}instances[0].name",
        "'Primary_DNS' is not a DNS-1123 label",
        "use lower-case letters, digits and '-'",
        "(e.g. 'primary-dns')",
    )


def test_recursion_true_rejected(check, minimal_raw):
    minimal_raw["instances"][0]["config"] = {"recursion": True}
    only_issue(
        check(minimal_raw),
        f"{P}instances[0].config.recursion",
        "recursion must be false on an authoritative server",
        "remove the key or set it to false",
    )


# --------------------------------------------------------------------------- size


def test_zone_too_big_to_deploy(check, minimal_raw):
    minimal_raw["maxZoneBytes"] = 2048
    add_records(
        minimal_raw,
        *({"name": f"host{n}", "type": "A", "data": f"192.0.2.{n}"} for n in range(1, 101)),
    )
    only_issue(
        check(minimal_raw),
        f"{P}zones[0]",
        "zone example.com renders to",
        "over maxZoneBytes (2048)",
        "split it into delegated child zones or raise bind9-topology:maxZoneBytes",
    )


# --------------------------------------------------------------------------- TSIG secret


def test_missing_tsig_secret(check, minimal_raw):
    only_issue(
        check(minimal_raw, secret=None, stack="prod-eu-west-1"),
        f"{P}tsigSecret",
        "the TSIG secret is not set",
        "pulumi config set --secret --stack prod-eu-west-1 bind9-topology:tsigSecret",
    )


def test_missing_tsig_secret_allowed_when_not_required(project_dir, minimal_raw):
    topo = load_topology(
        minimal_raw, stack="prod", project_dir=project_dir, tsig_secret=None,
        secret_required=False,
    )
    assert isinstance(topo, Topology) and topo.tsig_secret is None


@pytest.mark.parametrize("secret", ["not base64!!", "c2hvcnQ="], ids=["not-base64", "too-short"])
def test_tsig_secret_not_base64(check, minimal_raw, secret):
    issue = only_issue(
        check(minimal_raw, secret=secret),
        f"{P}tsigSecret",
        "the TSIG secret is not valid base64 of at least 16 bytes",
        "pulumi config set --secret --stack prod bind9-topology:tsigSecret",
    )
    assert secret not in issue.message, "the (bad) secret must not be echoed"


# --------------------------------------------------------------------------- unknown keys


def test_unknown_config_key_typo(check, minimal_raw):
    minimal_raw["instances"][0]["replica"] = 2
    only_issue(
        check(minimal_raw),
        f"{P}instances[0].replica",
        "unknown key 'replica'",
        "did you mean 'replicas'?",
        "valid keys here: config, image, labels, metrics, name, replicas",
    )


def test_unknown_top_level_key_typo(check, minimal_raw):
    minimal_raw["namspace"] = "dns-system"
    only_issue(
        check(minimal_raw),
        f"{P}namspace",
        "unknown key 'namspace'",
        "did you mean 'namespace'?",
    )


def test_unknown_nested_key_typo(check, minimal_raw):
    primary_zone(minimal_raw)["soaRecord"]["adminMail"] = "x@example.com"
    only_issue(
        check(minimal_raw),
        f"{P}zones[0].soaRecord.adminMail",
        "unknown key 'adminMail'",
        "did you mean 'adminEmail'?",
    )


# --------------------------------------------------------------------------- bindy manifests


def test_bindy_manifest_mistake_points_at_the_file(prod_raw, tmp_path, project_dir, tsig_secret):
    text = (project_dir / "configs/bindy/prod.yaml").read_text()
    bad = text.replace("replicas: 2", "replicas: 0", 1)
    assert bad != text
    # Files are read only from inside the project: a project of its own in tmp_path.
    project = tmp_path / "project"
    shutil.copytree(project_dir / "configs", project / "configs")
    (project / "bindy.yaml").write_text(bad)
    raw = {k: v for k, v in prod_raw.items() if k not in ("instances", "zones")}
    raw["bindyManifests"] = ["bindy.yaml"]
    with pytest.raises(TopologyError) as info:
        load_topology(raw, stack="prod", project_dir=project, tsig_secret=tsig_secret)
    only_issue(
        info.value.issues,
        "bindy.yaml#Bind9Instance/primary-dns.spec.replicas",
        "replicas is 0",
        "set it to 1 or more",
    )


# --------------------------------------------------------------------------- all at once


def test_every_issue_comes_back_at_once(check, minimal_raw):
    """Shape errors, record errors and the secret in one run: nothing hides another."""
    minimal_raw["namspace"] = "x"
    minimal_raw["instances"][0]["replicas"] = 0
    minimal_raw["instances"][0]["version"] = "9.11"
    minimal_raw["instances"][0]["config"] = {"allowQuery": ["nope"], "recursion": True}
    minimal_raw["instances"][1]["name"] = "Secondary_DNS"
    minimal_raw["zones"][1]["secondaryConfig"]["primaryServers"] = ["10.0.1"]
    add_records(
        minimal_raw,
        {"name": "web", "type": "A", "data": "999.1.1.1"},
        {"name": "@", "type": "MX", "data": "mail"},
    )
    issues = check(minimal_raw, secret=None)
    expected = {
        f"{P}namspace": "unknown key",
        f"{P}instances[0].replicas": "replicas is 0",
        f"{P}instances[0].version": "'9.11' is not supported",
        f"{P}instances[0].config.allowQuery[0]": "is not a CIDR",
        f"{P}instances[0].config.recursion": "recursion must be false",
        f"{P}instances[1].name": "is not a DNS-1123 label",
        f"{P}zones[1].secondaryConfig.primaryServers[0]": "is not an IP address",
        f"{P}zones[0].records[2].data": "A data '999.1.1.1' is not valid",
        f"{P}zones[0].records[3].data": "MX data 'mail' is not valid",
        f"{P}tsigSecret": "pulumi config set --secret",
    }
    for path, fragment in expected.items():
        has_issue(issues, path, fragment)
    assert len(issues) == len(expected), "\n".join(map(str, issues))


def test_every_cross_check_issue_comes_back_at_once(check, minimal_raw):
    """When the shapes are valid, every topology and zone rule reports together."""
    minimal_raw["maxZoneBytes"] = 1024
    minimal_raw["instances"].append({"name": "primary-dns", "role": "primary"})
    minimal_raw["instances"][1]["labels"] = {"team": "dns & ops"}
    minimal_raw["zones"][1]["secondaryConfig"]["primaryServers"] = []
    minimal_raw["zones"].append(
        {
            "zoneName": "example.org",
            "type": "secondary",
            "instanceSelector": {"matchLabels": {"dns-role": "nowhere"}},
            "secondaryConfig": {"primaryServers": ["10.0.1.10"]},
        }
    )
    add_records(
        minimal_raw,
        {"name": "www", "type": "CNAME", "data": "example.com."},
        {"name": "www", "type": "TXT", "data": '"hello"'},
    )
    issues = check(minimal_raw, secret="not base64!!")
    has_issue(issues, f"{P}instances[2].name", "duplicate instance name")
    has_issue(issues, f"{P}instances[1].labels.team", "label value")
    has_issue(issues, f"{P}zones[1].secondaryConfig.primaryServers", "needs the IPs")
    has_issue(issues, f"{P}zones[2].instanceSelector", "selects no instance")
    has_issue(issues, f"{P}zones[0].records[2]", "CNAME beside other data (TXT)")
    has_issue(issues, f"{P}tsigSecret", "not valid base64")
    # the zone is not built while its records are wrong, so its size is not reported
    assert not [i for i in issues if "maxZoneBytes" in i.message], issues
