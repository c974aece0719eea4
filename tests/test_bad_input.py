"""Bad input on every entry point.

Each class of mistake is tried through `load_topology` (what every entry point
calls), and the classes that can reach them through `python -m components
validate`, `render`, `local up` and the Pulumi program under mocks. Every case
asserts that the message names the config path, that there is no traceback,
and that nothing was registered (program) or written (render, local up).
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from bind9_topology.config import safeyaml
from bind9_topology.config.model import ConfigIssue, TopologyError
from bind9_topology.config.topology import PREFIX, SECRET_KEY, Topology, load_topology
from bind9_topology.render.bind_files import render_instance
from components import cli
from tests.conftest import new_secret
from tests.test_program_errors import RecordingMocks, run_program

pytestmark = pytest.mark.unit

P = PREFIX
ROOT = Path(__file__).resolve().parent.parent

Raw = dict[str, Any]
Mutation = Callable[[Raw], None]


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    """A project of its own (Pulumi.yaml, configs/) with the zone cache off."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "Pulumi.yaml", root)
    shutil.copytree(ROOT / "configs", root / "configs")
    monkeypatch.setenv("BIND9_TOPOLOGY_CACHE_DIR", "off")
    monkeypatch.delenv(cli.SECRET_ENV, raising=False)
    return root


def load(raw: Raw, project: Path, secret: str | None = "") -> Topology:
    return load_topology(copy.deepcopy(raw), stack="prod", project_dir=project,
                         tsig_secret=new_secret() if secret == "" else secret)


def issues_of(raw: Raw, project: Path) -> list[ConfigIssue]:
    """The issues load_topology reports; any other exception fails the test."""
    with pytest.raises(TopologyError) as info:
        load(raw, project)
    assert info.value.issues
    return info.value.issues


def assert_issue(issues: list[ConfigIssue], path: str, *fragments: str) -> ConfigIssue:
    for issue in issues:
        if issue.path == path and all(f in issue.message for f in fragments):
            return issue
    raise AssertionError(f"no issue at {path} with {fragments}; got:\n"
                         + "\n".join(map(str, issues)))


def program_error(monkeypatch, raw: Raw, project: Path, **kwargs: Any) -> str:
    """Run the Pulumi program (mocks); it must fail with a RunError and register nothing."""
    monkeypatch.setattr(pulumi, "get_root_directory", lambda: str(project))
    mocks = RecordingMocks()
    raw = {**copy.deepcopy(raw), SECRET_KEY: raw.get(SECRET_KEY, new_secret())}
    raw.setdefault("gate", {"enabled": False})
    with pytest.raises(pulumi.RunError) as info:
        run_program(monkeypatch, raw, mocks, **kwargs)
    assert mocks.registered == [], f"registered before failing: {mocks.registered}"
    message = str(info.value)
    assert "Traceback" not in message
    return message


def program_ok(monkeypatch, raw: Raw, project: Path, **kwargs: Any) -> tuple[RecordingMocks,
                                                                             list[str]]:
    """Run the program on good config; return the mocks and what pulumi.log.warn said."""
    warned: list[str] = []
    monkeypatch.setattr(pulumi, "get_root_directory", lambda: str(project))
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: warned.append(str(msg)))
    raw = {**copy.deepcopy(raw), SECRET_KEY: new_secret(), "gate": {"enabled": False}}
    mocks = run_program(monkeypatch, raw, RecordingMocks(), **kwargs)
    assert mocks.registered
    return mocks, warned


def line_with(text: str, path: str, *fragments: str) -> str:
    for line in text.splitlines():
        if f"{path}:" in line and all(f in line for f in fragments):
            return line
    raise AssertionError(f"{path} with {fragments} not in:\n{text}")


def write_stack(project: Path, raw: Raw | str, name: str = "bad",
                extra: dict[str, Any] | None = None) -> None:
    if isinstance(raw, str):
        (project / f"Pulumi.{name}.yaml").write_text(raw)
        return
    config = {f"{P}{k}": v for k, v in raw.items()}
    config.update(extra or {})
    (project / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump({"config": config}))


def cli_error(project: Path, capsys, *args: str) -> str:
    """Run the CLI; it must exit 2 with the problems on stderr and no traceback."""
    code = cli.main(["--project", str(project), *args])
    out = capsys.readouterr()
    assert code == 2, out
    assert "Traceback" not in out.err + out.out
    return out.err


def validate_error(project: Path, capsys, stack: str = "bad") -> str:
    return cli_error(project, capsys, "validate", "--stack", stack)


def render_error(project: Path, capsys, tmp_path: Path, stack: str = "bad") -> str:
    out, state = tmp_path / "out", tmp_path / "serials.json"
    err = cli_error(project, capsys, "render", "--stack", stack, "--out", str(out),
                    "--state", str(state))
    assert not out.exists(), "render wrote output for a bad stack"
    assert not state.exists(), "render moved serials for a bad stack"
    return err


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- 1. shapes


def _set(path: list[Any], value: Any) -> Mutation:
    def mutate(raw: Raw) -> None:
        node: Any = raw
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return mutate


SHAPE_CASES: dict[str, tuple[Mutation, str, str]] = {
    "labels-as-list": (_set(["instances", 0, "labels"], ["dns-role=primary"]),
                       f"{P}instances[0].labels", "expected a mapping"),
    "instances-as-mapping": (_set(["instances"], {"primary-dns": {"role": "primary"}}),
                             f"{P}instances", "expected a list"),
    "zones-as-string": (_set(["zones"], "example.com"), f"{P}zones", "expected a list"),
    "bindy-as-string": (_set(["bindyManifests"], "configs/bindy/prod.yaml"),
                        f"{P}bindyManifests", "expected a list"),
    "bindy-directory": (_set(["bindyManifests"], ["configs"]),
                        f"{P}bindyManifests[0](configs)", "is a directory"),
    "bindy-not-a-string": (_set(["bindyManifests"], [{"path": "x.yaml"}]),
                           f"{P}bindyManifests[0]", "expected a path"),
    "record-ttl-64-bit": (
        lambda raw: raw["zones"][0]["records"].append(
            {"name": "www", "type": "A", "data": "192.0.2.1", "ttl": 2**40}),
        f"{P}zones[0].records[2].ttl", "2^31-1"),
    "zone-ttl-33-bit": (_set(["zones", 0, "ttl"], 2**32), f"{P}zones[0].ttl", "2^31-1"),
    "soa-as-list": (_set(["zones", 0, "soaRecord"], ["ns1.example.com."]),
                    f"{P}zones[0].soaRecord", "expected a mapping"),
    "match-labels-as-list": (_set(["zones", 1, "instanceSelector", "matchLabels"],
                                  ["dns-role"]),
                             f"{P}zones[1].instanceSelector.matchLabels", "expected a mapping"),
    "resources-as-string": (_set(["instances", 0, "resources"], "small"),
                            f"{P}instances[0].resources", "expected a mapping"),
}


@pytest.mark.parametrize("case", SHAPE_CASES)
def test_shape_error_is_a_path_named_problem(case, minimal_raw, project):
    mutate, path, fragment = SHAPE_CASES[case]
    mutate(minimal_raw)
    assert_issue(issues_of(minimal_raw, project), path, fragment)


@pytest.mark.parametrize("case", ["labels-as-list", "bindy-as-string", "bindy-directory",
                                  "record-ttl-64-bit", "instances-as-mapping"])
def test_shape_error_through_the_program(case, minimal_raw, project, monkeypatch):
    mutate, path, fragment = SHAPE_CASES[case]
    mutate(minimal_raw)
    line_with(program_error(monkeypatch, minimal_raw, project), path, fragment)


@pytest.mark.parametrize("case", ["labels-as-list", "bindy-directory", "zone-ttl-33-bit"])
def test_shape_error_through_validate_and_render(case, minimal_raw, project, capsys, tmp_path):
    mutate, path, fragment = SHAPE_CASES[case]
    mutate(minimal_raw)
    write_stack(project, minimal_raw)
    line_with(validate_error(project, capsys), path, fragment)
    line_with(render_error(project, capsys, tmp_path), path, fragment)


BINDY_DOCS = {
    "document-is-a-list": ("- apiVersion: dns.firestoned.io/v1alpha1\n- kind: DNSZone\n",
                           "#0", "expected a Kubernetes document"),
    "spec-is-a-list": (
        "apiVersion: dns.firestoned.io/v1alpha1\nkind: DNSZone\nmetadata: {name: z}\n"
        "spec:\n- zoneName: example.net\n", "#0.spec", "expected spec as a mapping"),
    "metadata-is-a-string": (
        "apiVersion: dns.firestoned.io/v1alpha1\nkind: Bind9Instance\nmetadata: primary\n"
        "spec: {}\n", "#0.metadata", "expected metadata as a mapping"),
    "labels-are-a-list": (
        "apiVersion: dns.firestoned.io/v1alpha1\nkind: Bind9Instance\n"
        "metadata: {name: p, labels: [dns-role]}\nspec: {}\n",
        "#0.metadata.labels", "expected labels as a mapping"),
    "not-yaml": ("apiVersion: [unclosed\n", "", "not valid YAML"),
}


@pytest.mark.parametrize("case", BINDY_DOCS)
def test_bad_bindy_document(case, minimal_raw, project, monkeypatch, capsys, tmp_path):
    text, suffix, fragment = BINDY_DOCS[case]
    (project / "bindy.yaml").write_text(text)
    minimal_raw["bindyManifests"] = ["bindy.yaml"]
    path = f"{P}bindyManifests[0](bindy.yaml){suffix}"
    assert_issue(issues_of(minimal_raw, project), path, fragment)
    line_with(program_error(monkeypatch, minimal_raw, project), path, fragment)
    write_stack(project, minimal_raw)
    line_with(validate_error(project, capsys), path, fragment)


RECORDS_FILES = {
    "string": ("just text\n", f"{P}zones[0].recordsFile", "expected a list of records"),
    "list-of-lists": ("- [www, A, 192.0.2.1]\n", f"{P}zones[0].recordsFile[0]",
                      "expected a mapping"),
    "ttl-too-big": ("- {name: www, type: A, data: 192.0.2.1, ttl: 4294967296}\n",
                    f"{P}zones[0].recordsFile[0].ttl", "2^31-1"),
    "unknown-key": ("records:\n- {name: www, type: A, data: 192.0.2.1, tll: 60}\n",
                    f"{P}zones[0].recordsFile[0].tll", "did you mean 'ttl'?"),
}


@pytest.mark.parametrize("case", RECORDS_FILES)
def test_bad_records_file(case, minimal_raw, project, monkeypatch):
    text, path, fragment = RECORDS_FILES[case]
    (project / "records.yaml").write_text(text)
    minimal_raw["zones"][0]["recordsFile"] = "records.yaml"
    assert_issue(issues_of(minimal_raw, project), path, fragment)
    line_with(program_error(monkeypatch, minimal_raw, project), path, fragment)


STACK_FILES = {
    "unclosed-bracket": ("config:\n  bind9-topology:region: us-east-1\n"
                         "  bind9-topology:instances: [\n", "Pulumi.bad.yaml:4:", "not valid YAML"),
    "bad-indent": ("config:\n  bind9-topology:region: us-east-1\n bind9-topology:zones: []\n",
                   "Pulumi.bad.yaml:3:", "not valid YAML"),
    "tab": ("config:\n\tbind9-topology:region: x\n", "Pulumi.bad.yaml:2:", "not valid YAML"),
    "config-is-a-list": ("config:\n- bind9-topology:region: x\n", "Pulumi.bad.yaml:config",
                         "expected a mapping"),
    "document-is-a-string": ("just words\n", "Pulumi.bad.yaml", "expected a mapping"),
}


@pytest.mark.parametrize("case", STACK_FILES)
def test_stack_file_that_is_not_valid(case, project, capsys, tmp_path):
    text, path, fragment = STACK_FILES[case]
    write_stack(project, text)
    err = validate_error(project, capsys)
    assert path in err and fragment in err, err
    err = render_error(project, capsys, tmp_path)
    assert path in err and fragment in err, err


def test_local_up_refuses_a_bad_stack_without_starting_anything(
    minimal_raw, project, capsys
):
    minimal_raw["instances"][0]["labels"] = ["dns-role"]
    write_stack(project, minimal_raw)
    err = cli_error(project, capsys, "local", "up", "--stack", "bad", "--once")
    line_with(err, f"{P}instances[0].labels", "expected a mapping")
    started = [f for f in files_under(project) if f.endswith("named.conf")]
    assert not started, f"local up wrote server config for a bad stack: {started}"
    written = [f for f in files_under(project) if ".local-run" in f]
    assert not written, f"local up wrote files for a bad stack: {written}"


def test_local_up_refuses_a_clear_secret_as_validate_does(minimal_raw, project, capsys):
    minimal_raw["tsigSecret"] = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
    write_stack(project, minimal_raw)
    err = cli_error(project, capsys, "local", "up", "--stack", "bad", "--once")
    line_with(err, "Pulumi.bad.yaml:bind9-topology:tsigSecret", "stored in clear")
    assert not [f for f in files_under(project) if ".local-run" in f]


def test_local_up_prints_the_warnings_validate_prints(minimal_raw, project, capsys):
    minimal_raw["zones"][0]["soaRecord"].update({"refresh": 600, "retry": 3600})
    minimal_raw["instances"][0]["labels"] = ["dns-role"]  # and stop before starting
    write_stack(project, minimal_raw)
    err = cli_error(project, capsys, "local", "up", "--stack", "bad", "--once")
    assert "warning" in err and "retry" in err, err


# --------------------------------------------------------------------------- 2. paths


def _outside_cases(project: Path) -> dict[str, tuple[str, str]]:
    outside = project.parent / "outside.yaml"
    outside.write_text("- {name: www, type: A, data: 192.0.2.1}\n")
    (project / "configs" / "link.yaml").symlink_to(outside)
    (project / "configs" / "linkdir").symlink_to(project.parent, target_is_directory=True)
    return {
        "dotdot": ("../outside.yaml", "leaves the project directory with '..'"),
        "dotdot-inside-then-out": ("configs/../../outside.yaml", "with '..'"),
        "absolute": (str(outside), "is an absolute path"),
        "absolute-etc": ("/etc/passwd", "is an absolute path"),
        "symlink-file": ("configs/link.yaml", "through a symlink"),
        "symlink-dir": ("configs/linkdir/outside.yaml", "through a symlink"),
    }


PATH_CASES = ["dotdot", "dotdot-inside-then-out", "absolute", "absolute-etc", "symlink-file",
              "symlink-dir"]


@pytest.mark.parametrize("case", PATH_CASES)
def test_records_file_outside_the_project_is_refused(case, minimal_raw, project, monkeypatch):
    value, fragment = _outside_cases(project)[case]
    minimal_raw["zones"][0]["recordsFile"] = value
    path = f"{P}zones[0].recordsFile"
    assert_issue(issues_of(minimal_raw, project), path, fragment, "copy the file into the project")
    line_with(program_error(monkeypatch, minimal_raw, project), path, fragment)


@pytest.mark.parametrize("case", PATH_CASES)
def test_bindy_manifest_outside_the_project_is_refused(case, minimal_raw, project, capsys):
    value, fragment = _outside_cases(project)[case]
    minimal_raw["bindyManifests"] = [value]
    path = f"{P}bindyManifests[0]({value})"
    assert_issue(issues_of(minimal_raw, project), path, fragment)
    write_stack(project, minimal_raw)
    line_with(validate_error(project, capsys), path, fragment)


def test_relative_paths_inside_the_project_still_work(prod_raw, project):
    topo = load(prod_raw, project)
    assert topo.contents  # recordsFile and bindyManifests of prod, relative and inside


# --------------------------------------------------------------------------- 3. what BIND refuses


def _records(*records: dict[str, Any]) -> Mutation:
    def mutate(raw: Raw) -> None:
        raw["zones"][0]["records"].extend(records)
    return mutate


R2 = f"{P}zones[0].records[2]"
R3 = f"{P}zones[0].records[3]"

BIND_REFUSES: dict[str, tuple[Mutation, str, str]] = {
    "ns-target-is-cname": (_records({"name": "@", "type": "NS", "data": "ns2"},
                                    {"name": "ns2", "type": "CNAME", "data": "ns1"}),
                           f"{R2}.data", "is a CNAME"),
    "in-zone-ns-without-address": (_records({"name": "@", "type": "NS", "data": "ns3"}),
                                   f"{R2}.data", "has no address record"),
    "ttl-above-2^31-1": (_records({"name": "www", "type": "A", "data": "192.0.2.1",
                                   "ttl": 2**31}),
                         f"{R2}.ttl", "BIND would set it to 0"),
    "mx-target-is-cname": (_records({"name": "@", "type": "MX", "data": "10 mail"},
                                    {"name": "mail", "type": "CNAME", "data": "ns1"}),
                           f"{R2}.data", "MX target mail.example.com. is a CNAME"),
    "srv-target-is-cname": (_records(
        {"name": "_sip._tcp", "type": "SRV", "data": "10 10 5060 sip"},
        {"name": "sip", "type": "CNAME", "data": "ns1"}),
        f"{R2}.data", "SRV target sip.example.com. is a CNAME"),
    "underscore-in-address-owner": (_records({"name": "my_host", "type": "A",
                                              "data": "192.0.2.1"}),
                                    f"{R2}.name", "check-names"),
    "underscore-in-mx-target": (_records({"name": "@", "type": "MX",
                                          "data": "10 my_mail.example.net."}),
                                f"{R2}.data", "check-names"),
    "ns-target-is-an-address": (_records({"name": "@", "type": "NS", "data": "192.0.2.53."}),
                                f"{R2}.data", "is an address"),
    "soa-primary-ns-not-hostname": (_set(["zones", 0, "soaRecord", "primaryNs"],
                                         "ns_1.example.com."),
                                    f"{P}zones[0].soaRecord.primaryNs", "not a hostname"),
}


@pytest.mark.parametrize("case", BIND_REFUSES)
def test_what_bind_refuses_does_not_pass_validate(case, minimal_raw, project):
    mutate, path, fragment = BIND_REFUSES[case]
    mutate(minimal_raw)
    assert_issue(issues_of(minimal_raw, project), path, fragment)


@pytest.mark.parametrize("case", ["ns-target-is-cname", "in-zone-ns-without-address",
                                  "mx-target-is-cname"])
def test_what_bind_refuses_through_the_program(case, minimal_raw, project, monkeypatch):
    mutate, path, fragment = BIND_REFUSES[case]
    mutate(minimal_raw)
    line_with(program_error(monkeypatch, minimal_raw, project), path, fragment)


def test_what_bind_refuses_in_a_records_file_names_its_entry(minimal_raw, project):
    (project / "records.yaml").write_text(
        "- {name: '@', type: NS, data: ns2}\n- {name: ns2, type: CNAME, data: ns1}\n")
    minimal_raw["zones"][0]["recordsFile"] = "records.yaml"
    assert_issue(issues_of(minimal_raw, project), f"{P}zones[0].recordsFile[0].data",
                 "is a CNAME")


BIND_WARNS = {
    "mx-without-address": (_records({"name": "@", "type": "MX", "data": "10 mail"}),
                           f"{R2}.data", "has no A/AAAA record"),
    "delegation-without-glue": (_records({"name": "child", "type": "NS",
                                          "data": "ns.child"}),
                                f"{R2}.data", "has no glue"),
}


@pytest.mark.parametrize("case", BIND_WARNS)
def test_what_bind_only_logs_is_a_warning(case, minimal_raw, project):
    mutate, path, fragment = BIND_WARNS[case]
    mutate(minimal_raw)
    assert_issue(list(load(minimal_raw, project).warnings), path, fragment)


def test_out_of_zone_and_good_targets_pass(minimal_raw, project):
    _records(
        {"name": "@", "type": "MX", "data": "10 mx.example.net."},
        {"name": "@", "type": "MX", "data": "20 ns1"},
        {"name": "_sip._tcp", "type": "SRV", "data": "10 10 5060 ns1"},
        {"name": "*.wild", "type": "A", "data": "192.0.2.9"},
        {"name": "_dmarc", "type": "TXT", "data": '"v=DMARC1; p=none"'},
        {"name": "child", "type": "NS", "data": "ns.elsewhere.net."},
    )(minimal_raw)
    assert load(minimal_raw, project).warnings == ()


def test_idn_u_labels_become_a_labels_everywhere(minimal_raw, project):
    zone, secondary = minimal_raw["zones"]
    zone["zoneName"] = secondary["zoneName"] = "Bücher.example"
    zone["soaRecord"] = {"primaryNs": "ns1.bücher.example.",
                         "adminEmail": "hostmaster@bücher.example"}
    zone["records"] = [
        {"name": "@", "type": "NS", "data": "ns1"},
        {"name": "ns1", "type": "A", "data": "10.0.1.10"},
        {"name": "müller", "type": "A", "data": "192.0.2.7"},
        {"name": "straße", "type": "CNAME", "data": "müller"},
    ]
    topo = load(minimal_raw, project)
    alabel = "xn--bcher-kva.example"
    assert topo.primary_zone_names == [alabel]
    text = topo.contents[alabel].text(1)
    for expected in ("$ORIGIN xn--bcher-kva.example.", "xn--mller-kva", "xn--strae-oqa",
                     "ns1.xn--bcher-kva.example.", "hostmaster.xn--bcher-kva.example."):
        assert expected in text, text
    assert all(ord(c) < 128 for c in text), "a U-label reached the zone file"
    for inst in topo.spec.instances:
        rendered = render_instance(topo.spec, inst, topo.contents, {alabel: 1})
        files = {**rendered.config_files, **rendered.zone_files}
        for name, data in files.items():  # names are ConfigMap keys / container paths
            assert name.isascii() and data.decode().isascii(), f"U-label in {name}"
        assert any(f'zone "{alabel}"' in data.decode() for data in files.values())
        assert rendered.zones == (alabel,)
    assert zone_resource_names(topo) == {"xn--bcher-kva-example",
                                         "xn--bcher-kva-example-secondary"}


def zone_resource_names(topo: Topology) -> set[str]:
    return {z.resource_name for z in topo.spec.zones}


def test_invalid_idn_is_refused_with_its_path(minimal_raw, project):
    _records({"name": "a\u200db", "type": "A", "data": "192.0.2.1"})(minimal_raw)
    assert_issue(issues_of(minimal_raw, project), f"{R2}.name", "is not a valid record name")


# --------------------------------------------------------------------------- 4. dangerous settings


@pytest.mark.parametrize("entry", ["any", "0.0.0.0/0", "::/0", "ANY"])
def test_transfer_open_to_any_address_is_refused(entry, minimal_raw, project, monkeypatch):
    minimal_raw["instances"][0]["config"] = {"allowTransfer": ["10.0.2.0/24", entry]}
    path = f"{P}instances[0].config.allowTransfer[1]"
    assert_issue(issues_of(minimal_raw, project), path, "lets any address",
                 "key transfer-key")
    line_with(program_error(monkeypatch, minimal_raw, project), path, "lets any address")


def test_clear_secret_refused_by_the_program_as_by_validate(
    minimal_raw, project, monkeypatch, capsys
):
    secret = new_secret()
    write_stack(project, {**minimal_raw, SECRET_KEY: secret})
    from_validate = line_with(validate_error(project, capsys, "bad"),
                              f"Pulumi.bad.yaml:{P}{SECRET_KEY}", "stored in clear")
    raw = {**minimal_raw, SECRET_KEY: secret}
    message = program_error(monkeypatch, raw, project, stack="bad", secret_keys=[])
    from_program = line_with(message, f"Pulumi.bad.yaml:{P}{SECRET_KEY}", "stored in clear")
    assert from_program == from_validate
    assert secret not in message and secret not in from_validate
    assert "is not set" not in message  # one problem, not two


def test_clear_secret_is_listed_with_the_other_problems(minimal_raw, project, monkeypatch):
    raw = {**minimal_raw, SECRET_KEY: new_secret()}
    raw["instances"][0]["replicas"] = 0
    message = program_error(monkeypatch, raw, project, secret_keys=[])
    line_with(message, f"Pulumi.prod.yaml:{P}{SECRET_KEY}", "stored in clear")
    line_with(message, f"{P}instances[0].replicas", "set it to 1 or more")


def test_secret_set_with_secret_flag_passes_the_program(minimal_raw, project, monkeypatch):
    program_ok(monkeypatch, minimal_raw, project)  # secret_keys lists tsigSecret


FIXED = {
    "same-load-balancer-ip": ({"type": "LoadBalancer", "loadBalancerIP": "10.0.1.10"},
                              "service.loadBalancerIP"),
    "cluster-ip-equals-lb-ip": ({"clusterIP": "10.0.1.10"}, "service.clusterIP"),
    "same-v6-written-differently": ({"clusterIP": "2001:db8:0::10"}, "service.clusterIP"),
}


@pytest.mark.parametrize("case", FIXED)
def test_two_instances_with_one_fixed_address(case, minimal_raw, project, monkeypatch):
    service, key = FIXED[case]
    if "v6" in case:
        minimal_raw["instances"][0]["service"] = {"clusterIP": "2001:db8::10"}
    minimal_raw["instances"][1]["service"] = service
    path = f"{P}instances[1].{key}"
    assert_issue(issues_of(minimal_raw, project), path, "instance 'primary-dns'",
                 "give each instance its own address")
    line_with(program_error(monkeypatch, minimal_raw, project), path, "its own address")


# --------------------------------------------------------------------------- 5. names and values


VALUES: dict[str, tuple[Mutation, str, str]] = {
    "instance-name-trailing-newline": (_set(["instances", 0, "name"], "primary-dns\n"),
                                       f"{P}instances[0].name", "is not a DNS-1123 label"),
    "instance-name-starts-with-digit": (_set(["instances", 0, "name"], "1-primary"),
                                        f"{P}instances[0].name", "starts with a letter"),
    "label-value-trailing-newline": (_set(["instances", 0, "labels"], {"team": "dns\n"}),
                                     f"{P}instances[0].labels.team", "label value"),
    "namespace-trailing-newline": (_set(["namespace"], "dns-system\n"), f"{P}namespace",
                                   "is not a DNS-1123 label"),
    "tsig-key-name-trailing-newline": (_set(["tsigKey"], {"name": "transfer-key\n"}),
                                       f"{P}tsigKey.name", "is not valid"),
    "cpu-lots": (_set(["instances", 0, "resources"], {"requests": {"cpu": "lots"}}),
                 f"{P}instances[0].resources.requests.cpu", "not a Kubernetes quantity"),
    "memory-with-space": (_set(["instances", 0, "resources"], {"limits": {"memory": "1 Gi"}}),
                          f"{P}instances[0].resources.limits.memory",
                          "not a Kubernetes quantity"),
    "memory-wrong-suffix": (_set(["instances", 0, "resources"], {"limits": {"memory": "1GB"}}),
                            f"{P}instances[0].resources.limits.memory", "'128Mi'"),
    "cpu-negative": (_set(["instances", 0, "resources"], {"requests": {"cpu": "-1"}}),
                     f"{P}instances[0].resources.requests.cpu", "negative"),
    "admin-email-no-domain": (_set(["zones", 0, "soaRecord", "adminEmail"], "hostmaster"),
                              f"{P}zones[0].soaRecord.adminEmail", "has no domain"),
    "admin-email-empty-domain": (_set(["zones", 0, "soaRecord", "adminEmail"], "hostmaster@"),
                                 f"{P}zones[0].soaRecord.adminEmail", "a domain"),
    "admin-email-single-label": (_set(["zones", 0, "soaRecord", "adminEmail"],
                                      "root@localhost"),
                                 f"{P}zones[0].soaRecord.adminEmail", "has no domain"),
}


@pytest.mark.parametrize("case", VALUES)
def test_values_that_would_break_later(case, minimal_raw, project):
    mutate, path, fragment = VALUES[case]
    mutate(minimal_raw)
    assert_issue(issues_of(minimal_raw, project), path, fragment)


@pytest.mark.parametrize("case", ["instance-name-trailing-newline", "cpu-lots",
                                  "admin-email-no-domain"])
def test_values_that_would_break_later_through_the_program(case, minimal_raw, project,
                                                           monkeypatch):
    mutate, path, fragment = VALUES[case]
    mutate(minimal_raw)
    line_with(program_error(monkeypatch, minimal_raw, project), path, fragment)


@pytest.mark.parametrize("value", ["100m", "2", "0.5", "128Mi", "1Gi", "512M", "1e3", 2, 0.25])
def test_good_quantities_pass(value, minimal_raw, project):
    minimal_raw["instances"][0]["resources"] = {"requests": {"cpu": value, "memory": "64Mi"}}
    load(minimal_raw, project)


SOA_WARNINGS = {
    "retry-above-refresh": ({"refresh": 600, "retry": 3600, "expire": 1209600}, "retry",
                            "is not below refresh"),
    "expire-below-refresh-plus-retry": ({"refresh": 3600, "retry": 600, "expire": 3000},
                                        "expire", "below refresh + retry"),
    "expire-short": ({"refresh": 86400, "retry": 600, "expire": 172800}, "expire",
                     "less than 7 refresh intervals"),
}


@pytest.mark.parametrize("case", SOA_WARNINGS)
def test_contradicting_soa_timers_warn(case, minimal_raw, project, monkeypatch, capsys):
    timers, field, fragment = SOA_WARNINGS[case]
    minimal_raw["zones"][0]["soaRecord"].update(timers)
    path = f"{P}zones[0].soaRecord.{field}"
    topo = load(minimal_raw, project)  # a warning, not an error
    assert_issue(list(topo.warnings), path, fragment)
    write_stack(project, minimal_raw, name="warn")
    assert cli.main(["--project", str(project), "validate", "--stack", "warn"]) == 0
    line_with(capsys.readouterr().out, path, "warning:", fragment)
    _, warned = program_ok(monkeypatch, minimal_raw, project)
    line_with("\n".join(warned), path, fragment)


def test_default_soa_timers_do_not_warn(minimal_raw, project):
    assert load(minimal_raw, project).warnings == ()


# --------------------------------------------------------------------------- 6. namespace typos


@pytest.mark.parametrize("namespace", ["bind9-topolgy", "bind9_topology", "bind9-topologyy",
                                       "bnid9-topology"])
def test_typo_in_the_config_namespace_warns(namespace, minimal_raw, project, monkeypatch,
                                            capsys):
    zones = minimal_raw.pop("zones")
    extra = {f"{namespace}:zones": zones}
    write_stack(project, minimal_raw, name="typo", extra=extra)
    assert cli.main(["--project", str(project), "validate", "--stack", "typo"]) == 0
    out = capsys.readouterr().out
    line = line_with(out, f"Pulumi.typo.yaml:{namespace}:zones", "warning:",
                     f"did you mean '{P}zones'?")
    assert "looks like a typo" in line
    _, warned = program_ok(monkeypatch, minimal_raw, project, extra=extra)
    line_with("\n".join(warned), f"{namespace}:zones", f"did you mean '{P}zones'?")


def test_other_namespaces_do_not_warn(minimal_raw, project, capsys):
    extra = {"kubernetes:context": "kind", "aws:region": "us-east-1", "pulumi:tags": {"a": "b"}}
    write_stack(project, minimal_raw, name="ok", extra=extra)
    assert cli.main(["--project", str(project), "validate", "--stack", "ok"]) == 0
    assert "warning" not in capsys.readouterr().out


def test_typo_warning_comes_with_the_errors(minimal_raw, project, capsys):
    minimal_raw["instances"][0]["replicas"] = 0
    write_stack(project, minimal_raw, extra={"bind9-topolgy:zones": []})
    err = validate_error(project, capsys)
    line_with(err, f"{P}instances[0].replicas", "set it to 1 or more")
    assert "1 warning(s):" in err
    line_with(err, "Pulumi.bad.yaml:bind9-topolgy:zones", "did you mean")


# --------------------------------------------------------------------------- 7. bombs and sizes


def _bomb(levels: int = 9, width: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    lines.append(f"records: *a{levels}")
    return "\n".join(lines) + "\n"


def _good_records(count: int) -> str:
    return "".join(f"- {{name: host{n}, type: A, data: 192.0.2.{n % 250 + 1}}}\n"
                   for n in range(count))


BOMBS = {
    "billion-laughs": (_bomb(), "alias bomb"),
    "wide-laughs": (_bomb(levels=4, width=200), "alias bomb"),
    "deep-nesting": ("records: " + "[" * 10_000 + "]" * 10_000 + "\n", "nesting deeper"),
    "recursive-alias": ("records: &r [*r]\n", "recursive"),
}


@pytest.mark.parametrize("case", BOMBS)
def test_yaml_bomb_in_records_file(case, minimal_raw, project, monkeypatch):
    text, fragment = BOMBS[case]
    (project / "records.yaml").write_text(text)
    minimal_raw["zones"][0]["recordsFile"] = "records.yaml"
    started = time.monotonic()
    assert_issue(issues_of(minimal_raw, project), f"{P}zones[0].recordsFile", fragment)
    assert time.monotonic() - started < 5
    line_with(program_error(monkeypatch, minimal_raw, project), f"{P}zones[0].recordsFile",
              fragment)


@pytest.mark.parametrize("case", ["billion-laughs", "deep-nesting"])
def test_yaml_bomb_in_bindy_manifest_and_stack_file(case, minimal_raw, project, capsys):
    text, fragment = BOMBS[case]
    (project / "bindy.yaml").write_text(text)
    minimal_raw["bindyManifests"] = ["bindy.yaml"]
    assert_issue(issues_of(minimal_raw, project), f"{P}bindyManifests[0](bindy.yaml)", fragment)
    write_stack(project, "config:\n  bind9-topology:region: x\n" + "  " + text.replace(
        "\n", "\n  "))
    err = validate_error(project, capsys)
    assert "Pulumi.bad.yaml" in err and fragment in err, err


def test_a_bomb_costs_well_under_a_good_file_of_the_same_size(minimal_raw, project,
                                                              monkeypatch):
    good = _good_records(1500)
    bomb = _bomb()
    # Pad the bomb with good records to the good file's size: the same bytes to parse.
    padding = _good_records(1500)[: len(good) - len(bomb) - 20]
    padding = padding[: padding.rfind("\n") + 1]
    bad = "filler:\n" + "".join("  " + line + "\n" for line in padding.splitlines()) + bomb
    assert abs(len(bad) - len(good)) < 0.1 * len(good)

    # Work counted, not timed: the YAML parser's events the whole load asks for (the
    # bomb is refused while streamed, so its count follows its bytes, not its expansion).
    from bind9_topology.config import safeyaml

    events = [0]
    parse = safeyaml.yaml.parse

    def counted(*args: Any, **kwargs: Any) -> Any:
        for event in parse(*args, **kwargs):
            events[0] += 1
            yield event

    monkeypatch.setattr(safeyaml.yaml, "parse", counted)

    def peak(text: str) -> tuple[int, int]:
        (project / "records.yaml").write_text(text)
        raw = copy.deepcopy(minimal_raw)
        raw["zones"][0]["recordsFile"] = "records.yaml"
        events[0] = 0
        tracemalloc.start()
        with contextlib.suppress(TopologyError):
            load(raw, project)
        _, high = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return high, events[0]

    # The good file read the general way (YAML events), as the bomb is: the line reader
    # (fast_records.PlainRecords) takes the good file for less, and refuses the bomb.
    from bind9_topology.config import fast_records

    def not_plain(text: str) -> None:
        raise fast_records.NotPlain("measured the general way")

    with monkeypatch.context() as patch:
        patch.setattr(fast_records, "PlainRecords", not_plain)
        good_peak, good_events = peak(good)
    bad_peak, bad_events = peak(bad)
    # 3/4, not 1/2, since the zone build keeps lists, not objects, per record (ADR 18):
    # a bomb that expanded would cost thousands of times the good file, not 3/4 of it.
    assert bad_peak < good_peak * 3 / 4, (bad_peak, good_peak)
    assert good_events > 0 and bad_events > 0, (good_events, bad_events)
    # the refused file is streamed twice (the limits' check, then the loader up to the
    # refusal): a few times a good file's events at most; 9**10 nodes if it expanded
    assert bad_events <= good_events * 3, (bad_events, good_events)


def test_records_file_over_the_byte_limit_is_refused_before_it_is_read(
    minimal_raw, project, monkeypatch
):
    minimal_raw["maxZoneBytes"] = 1024  # records files may be 4x that
    (project / "records.yaml").write_text(_good_records(200))
    minimal_raw["zones"][0]["recordsFile"] = "records.yaml"
    opened: list[str] = []
    real_open = open

    def spy(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    assert_issue(issues_of(minimal_raw, project), f"{P}zones[0].recordsFile",
                 "over the 4096-byte limit", "split it")
    assert not [f for f in opened if f.endswith("records.yaml")], "the big file was read"


def test_device_or_fifo_is_refused(minimal_raw, project):
    fifo = project / "records.yaml"
    os.mkfifo(fifo)  # reading it would block forever
    minimal_raw["zones"][0]["recordsFile"] = "records.yaml"
    assert_issue(issues_of(minimal_raw, project), f"{P}zones[0].recordsFile",
                 "not a regular file")


def test_ordinary_aliases_still_load():
    text = "a: &x [1, 2]\nb: *x\nc: {<<: {k: v}, d: 1}\n"
    assert safeyaml.load(text) == {"a": [1, 2], "b": [1, 2], "c": {"k": "v", "d": 1}}


def test_python_m_components_validate_on_a_bomb_prints_no_traceback(project):
    import subprocess
    import sys

    write_stack(project, "config:\n  bind9-topology:region: x\n  " + _bomb().replace(
        "\n", "\n  "))
    proc = subprocess.run(
        [sys.executable, "-m", "components", "--project", str(project), "validate",
         "--stack", "bad"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "Pulumi.bad.yaml" in proc.stderr and "alias bomb" in proc.stderr
