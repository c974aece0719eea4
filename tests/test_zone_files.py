"""`zonesFiles` and the cap on PULUMI_CONFIG (issue 21): many zones without bindy's dialect.

A 1,000-zone stack whose zones sit in zone files validates, renders and evaluates (the
program under mocks, its config handed over as the engine hands it); the very same zones
inline are refused by `validate`, `render`, `local up` and `deploy` before anything runs,
naming the key and the fix; broken zone files are named by file and index; the size is
measured as the engine's Go JSON writes it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime.mocks import _sync_await
from pulumi.runtime.stack import run_pulumi_func

from bind9_topology.config.config_size import (
    MAX_ARG_STRLEN,
    engine_config,
    go_json,
    measure,
    measure_env,
    size_findings,
    stack_config_size,
)
from bind9_topology.config.fleet import deploy_order
from bind9_topology.config.model import ConfigIssue, TopologyError
from bind9_topology.config.stack_files import read_stack_config
from bind9_topology.config.topology import load_topology
from components import cli, program
from tests.conftest import PROJECT_DIR, new_secret

pytestmark = pytest.mark.unit

P = "bind9-topology:"
ZONES = 1000
PRIMARY_IP = "10.0.1.10"


def zone(i: int) -> dict[str, Any]:
    """Zone number *i*, as a user writes it inline (SOA, a few records)."""
    name = f"zone{i:04d}.example"
    return {
        "zoneName": name, "type": "primary",
        "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
        "soaRecord": {"primaryNs": f"ns1.{name}.", "adminEmail": f"hostmaster@{name}"},
        "records": [{"name": "@", "type": "NS", "data": f"ns1.{name}."},
                    {"name": "ns1", "type": "A", "data": PRIMARY_IP},
                    {"name": "www", "type": "A", "data": "192.0.2.80"}],
    }


BASE: dict[str, Any] = {
    "region": "us-east-1",
    "gate": {"enabled": False},  # no servers to probe under mocks
    "instances": [{"name": "primary-dns", "role": "primary",
                   "service": {"type": "LoadBalancer", "loadBalancerIP": PRIMARY_IP}}],
}


def write_stack(project: Path, stack: str, config: dict[str, Any]) -> Path:
    path = project / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump({"config": {f"{P}{k}": v for k, v in config.items()}},
                                   sort_keys=False))
    return path


def write_yaml(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value if isinstance(value, str) else yaml.safe_dump(value, sort_keys=False))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project: Pulumi.yaml only (its config defaults count in PULUMI_CONFIG)."""
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    return tmp_path


@pytest.fixture(scope="module")
def big_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,000 zones twice: in four zone files (a directory) for `files`, inline for
    `inline`."""
    root = tmp_path_factory.mktemp("zone-files")
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", root / "Pulumi.yaml")
    zones = [zone(i) for i in range(ZONES)]
    for part in range(4):
        write_yaml(root / "configs" / "zone-lists" / f"part{part}.yaml",
                   zones[part * 250:(part + 1) * 250])
    write_stack(root, "files", {**BASE, "zonesFiles": ["configs/zone-lists"]})
    write_stack(root, "inline", {**BASE, "zones": zones})
    return root


def cli_run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- 1,000 zones


def test_thousand_zones_in_zone_files_validate(big_project: Path, capsys) -> None:
    code, out, err = cli_run(capsys, "--project", str(big_project), "validate", "--stack",
                             "files")
    assert code == 0, err
    assert f"files: OK - region us-east-1, 1 instance(s), {ZONES} zone(s)" in out
    assert "warning" not in out  # the stack file holds paths only: far from the cap
    assert stack_config_size(big_project, "files").total < 2_000


def test_thousand_zones_in_zone_files_render(big_project: Path, tmp_path: Path,
                                              capsys) -> None:
    code, out, err = cli_run(capsys, "--project", str(big_project), "render", "--stack", "files",
                             "--out", str(tmp_path / "out"), "--state",
                             str(tmp_path / "serials.json"))
    assert code == 0, err
    assert f"files: 1 instance(s), {ZONES} zone(s)" in out
    zone_dir = tmp_path / "out" / "files" / "primary-dns" / "var" / "lib" / "bind" / "zones"
    written = {p.name for p in zone_dir.iterdir()}
    assert len([n for n in written if n.startswith("db.zone")]) == ZONES, sorted(written)[:5]
    named_conf = (tmp_path / "out" / "files" / "primary-dns" / "etc" / "bind" / "named.conf")
    assert 'zone "zone0999.example"' in named_conf.read_text()


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.registered: list[tuple[str, str]] = []
        self.serial_zones: list[str] = []  # the zones the stack's ZoneSerials was given

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        self.registered.append((args.typ, args.name))
        if args.typ.endswith("bind9:ZoneSerials"):
            self.serial_zones += list(dict(args.inputs.get("zones") or {}))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        return {}


def test_thousand_zones_in_zone_files_evaluate(big_project: Path, monkeypatch) -> None:
    """The program itself, handed the stack's config as the engine hands it (every key as
    text, Pulumi.yaml's defaults filled in), reads the zone files from the project."""
    monkeypatch.chdir(big_project)  # where the program finds Pulumi.yaml under mocks
    monkeypatch.delenv("PULUMI_CONFIG", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_SECRET_KEYS", raising=False)
    project_doc = yaml.safe_load((big_project / "Pulumi.yaml").read_text())
    config = engine_config(read_stack_config(big_project, "files"), project_doc)
    config[f"{P}tsigSecret"] = new_secret()
    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: warnings.append(str(msg)))
    mocks = _Mocks()
    pulumi.runtime.set_mocks(mocks, project="bind9-topology", stack="files", preview=True)
    pulumi.runtime.set_all_config(config, [f"{P}tsigSecret"])
    try:
        _sync_await(run_pulumi_func(program.main))
    finally:
        pulumi.runtime.set_all_config({}, [])
    assert sorted(mocks.serial_zones) == [f"zone{i:04d}.example" for i in range(ZONES)]
    config_maps = [n for t, n in mocks.registered if t == "kubernetes:core/v1:ConfigMap"]
    assert any("zones" in n for n in config_maps), config_maps
    assert ("bind9-topology:index:Bind9Region", "files") in mocks.registered
    assert not [w for w in warnings if "PULUMI_CONFIG" in w], warnings


def test_same_zones_inline_refused_by_validate(big_project: Path, capsys) -> None:
    code, out, err = cli_run(capsys, "--project", str(big_project), "validate", "--stack",
                             "inline")
    assert code == 2, out + err
    assert "OK" not in out
    assert f"  - Pulumi.inline.yaml:{P}zones: the stack config is " in err, err
    size = stack_config_size(big_project, "inline")
    assert size.total > MAX_ARG_STRLEN
    for fragment in (f"{size.total:,} bytes as the engine hands it to the program",
                     "PULUMI_CONFIG", "over Linux's limit of 131,072 bytes",
                     "'argument list too long'", f"Largest keys: {P}zones ",
                     f"move the zones into YAML files listed in {P}zonesFiles"):
        assert fragment in err, (fragment, err)
    assert "Traceback" not in err


def test_same_zones_inline_refused_by_render_local_up_and_deploy(big_project: Path,
                                                                 tmp_path: Path,
                                                                 capsys) -> None:
    """Every entry point says it before anything runs: nothing rendered, no server
    started (no .local-run), no stack previewed (no `pulumi` needed to get there)."""
    where = f"Pulumi.inline.yaml:{P}zones: the stack config is "
    code, _, err = cli_run(capsys, "--project", str(big_project), "render", "--stack", "inline",
                           "--out", str(tmp_path / "out"))
    assert code == 2 and where in err, err
    assert not (tmp_path / "out").exists()

    code, _, err = cli_run(capsys, "--project", str(big_project), "local", "up", "--stack",
                           "inline", "--once")
    assert code == 2 and where in err, err
    assert not (big_project / ".local-run").exists()

    code, out, err = cli_run(capsys, "--project", str(big_project), "deploy", "--preview",
                             "--stacks", "inline")
    assert code == 1, out + err
    assert "deploy: no stack was run: 1 problem(s)" in err and where in err, err
    assert f"{P}zonesFiles" in err


def near_cap_count(fraction: float = 0.85) -> int:
    """How many inline zones bring PULUMI_CONFIG to about *fraction* of the cap."""
    def size(count: int) -> int:
        return measure({f"{P}zones": go_json([zone(i) for i in range(count)])}).total

    per_zone = size(11) - size(10)
    return int((fraction * MAX_ARG_STRLEN - size(10)) / per_zone) + 10


def test_near_the_cap_is_a_warning(project: Path, capsys) -> None:
    """Between 75% of the cap and the cap: OK, with a warning naming the key and the fix."""
    write_stack(project, "near", {**BASE, "zones": [zone(i) for i in range(near_cap_count())]})
    size = stack_config_size(project, "near")
    assert 0.75 * MAX_ARG_STRLEN < size.total <= MAX_ARG_STRLEN, size.total
    code, out, err = cli_run(capsys, "--project", str(project), "validate", "--stack", "near")
    assert code == 0, err
    assert f"  warning: Pulumi.near.yaml:{P}zones: the stack config is {size.total:,} " in out
    assert f"{100 * size.total // MAX_ARG_STRLEN}% of Linux's limit" in out
    assert f"{P}zonesFiles" in out


# --------------------------------------------------------------------------- broken files


def load(project: Path, raw: dict[str, Any]) -> list[ConfigIssue]:
    try:
        load_topology(raw, stack="t", project_dir=project, tsig_secret=new_secret())
    except TopologyError as exc:
        return exc.issues
    return []


def one(issues: list[ConfigIssue], path: str, *fragments: str) -> None:
    assert len(issues) == 1, "\n".join(map(str, issues))
    assert issues[0].path == path, str(issues[0])
    for fragment in fragments:
        assert fragment in issues[0].message, (fragment, str(issues[0]))


def files_raw(*entries: Any, zones: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {**BASE, "zones": zones or [], "zonesFiles": list(entries)}


def test_zone_files_merge_with_inline_zones(project: Path) -> None:
    write_yaml(project / "zl" / "b.yaml", [zone(2)])
    write_yaml(project / "zl" / "a.yml", [zone(1)])
    write_yaml(project / "zl" / "notes.txt", "not read")
    write_yaml(project / "zl" / ".hidden.yaml", "{broken")
    write_yaml(project / "one.yaml", [zone(3)])
    topo = load_topology(files_raw("zl", "one.yaml", zones=[zone(0)]), stack="t",
                         project_dir=project, tsig_secret=new_secret())
    # inline first, then the files in the order listed (a directory's in name order)
    assert [z.zoneName for z in topo.spec.zones] == [
        "zone0000.example", "zone0001.example", "zone0002.example", "zone0003.example"]
    assert topo.spec.zonesFiles == ["zl", "one.yaml"]


def test_missing_file(project: Path) -> None:
    one(load(project, files_raw("configs/nope.yaml")),
        f"{P}zonesFiles[0](configs/nope.yaml)", "file not found:",
        "create it (a YAML list of zones) or fix the path", str(project))


def test_not_a_list(project: Path) -> None:
    write_yaml(project / "zones.yaml", {"zones": [zone(0)]})
    one(load(project, files_raw("zones.yaml")), "zones.yaml",
        "expected a list of zones", f"each as an entry of {P}zones", "got a mapping",
        "write the list at the top level of the file, without the 'zones:' key")
    write_yaml(project / "empty.yaml", "# nothing yet\n")
    one(load(project, files_raw("empty.yaml")), "empty.yaml", "got an empty file")


def test_bad_field_named_by_file_index_and_field(project: Path) -> None:
    bad = zone(1)
    bad["ttl"] = "an hour"
    bad["soaRecord"]["refrsh"] = 3600
    write_yaml(project / "zl" / "a.yaml", [zone(0), bad])
    issues = load(project, files_raw("zl"))
    assert {(i.path, i.message.split(";")[0]) for i in issues} == {
        ("zl/a.yaml[1].ttl", "expected a whole number, got a string"),
        ("zl/a.yaml[1].soaRecord.refrsh", "unknown key 'refrsh'"),
    }, issues
    assert "did you mean 'refresh'?" in next(i.message for i in issues if "refrsh" in i.path)


def test_yaml_syntax_error_names_file_line_and_column(project: Path) -> None:
    write_yaml(project / "zl.yaml", "- zoneName: a.example\n  type: [primary\n")
    issues = load(project, files_raw("zl.yaml"))
    assert len(issues) == 1 and issues[0].path.startswith("zl.yaml:"), issues
    assert issues[0].path.count(":") == 2 and "not valid YAML" in issues[0].message


def test_duplicate_of_an_inline_zone(project: Path) -> None:
    write_yaml(project / "zl" / "a.yaml", [zone(1), zone(0)])
    one(load(project, files_raw("zl", zones=[zone(0)])), "zl/a.yaml[1].name",
        f"duplicate zone resource name 'zone0000-example' (also {P}zones[0])",
        "primary zone zone0000.example is defined at both: keep one of the two entries")


def test_duplicate_across_files_with_another_name(project: Path) -> None:
    twin = {**zone(0), "name": "zone-zero"}
    write_yaml(project / "zl" / "a.yaml", [zone(0)])
    write_yaml(project / "zl" / "b.yaml", [twin])
    one(load(project, files_raw("zl")), f"{P}zones",
        "instance 'primary-dns' would serve zone0000.example twice (zone0000-example and "
        "zone-zero), from zl/a.yaml[0] and zl/b.yaml[0]; one zone per instance")


def test_directory_without_yaml(project: Path) -> None:
    write_yaml(project / "zl" / "README.txt", "zones go here")
    one(load(project, files_raw("zl/")), f"{P}zonesFiles[0](zl/)",
        "directory 'zl/' holds no .yaml or .yml file",
        "put the zone lists there (one YAML list of zones per file) or remove this entry")


def test_paths_refused_before_anything_is_read(project: Path) -> None:
    write_yaml(project / "zl" / "a.yaml", [zone(0)])
    issues = load(project, files_raw("/etc/passwd", "../outside.yaml", 7, "zl", "zl/a.yaml"))
    assert {i.path for i in issues} == {
        f"{P}zonesFiles[0](/etc/passwd)", f"{P}zonesFiles[1](../outside.yaml)",
        f"{P}zonesFiles[2]", f"{P}zonesFiles[4](zl/a.yaml)"}, issues
    by_path = {i.path: i.message for i in issues}
    assert "absolute path" in by_path[f"{P}zonesFiles[0](/etc/passwd)"]
    assert "leaves the project directory" in by_path[f"{P}zonesFiles[1](../outside.yaml)"]
    assert "expected a path (a string)" in by_path[f"{P}zonesFiles[2]"]
    assert ("zl/a.yaml is read already through bind9-topology:zonesFiles[3](zl); list each "
            "file once") in by_path[f"{P}zonesFiles[4](zl/a.yaml)"]


def test_zone_files_not_a_list_and_misspelt_key(project: Path) -> None:
    one(load(project, {**BASE, "zonesFiles": "zl"}), f"{P}zonesFiles",
        "expected a list, got a string")
    one(load(project, {**BASE, "zoneFiles": ["zl"]}), f"{P}zoneFiles",
        "unknown key 'zoneFiles'; did you mean 'zonesFiles'?")


def test_deploy_order_reads_zone_files(project: Path) -> None:
    """A region whose secondary zones (with their primaryServers) sit in a zone file still
    comes after the stack that owns those primaries."""
    write_stack(project, "main", BASE)
    write_yaml(project / "region-zones.yaml", [{
        "zoneName": "zone0000.example", "type": "secondary",
        "instanceSelector": {"matchLabels": {"dns-role": "secondary"}},
        "secondaryConfig": {"primaryServers": [PRIMARY_IP]}}])
    write_stack(project, "region", {"region": "eu-west-1", "zonesFiles": ["region-zones.yaml"],
                                    "instances": [{"name": "secondary-dns",
                                                   "role": "secondary"}]})
    order = deploy_order(project)
    assert order.stacks == ["main", "region"]
    assert "main" in order.after["region"]


# --------------------------------------------------------------------------- the size


def test_go_json_escapes_as_go_does() -> None:
    assert go_json({"b": "<a&b>", "a": [1, True, None, "é\u2028"]}) == (
        '{"a":[1,true,null,"é\\u2028"],"b":"\\u003ca\\u0026b\\u003e"}')


def test_measure_is_the_env_string_with_its_nul() -> None:
    config = {f"{P}zones": go_json([zone(0)]), f"{P}region": "us-east-1", "aws:x": "<&>"}
    text = go_json(config)
    size = measure(config)
    assert size.total == len(f"PULUMI_CONFIG={text}".encode()) + 1
    assert measure_env(text).total == size.total
    assert [k for k, _ in size.keys] == [f"{P}zones", f"{P}region", "aws:x"]
    assert measure({}).total == 0


def test_engine_config_fills_project_defaults_and_secret_lengths() -> None:
    secret = base64.b64encode(os.urandom(32)).decode()  # 44 characters
    ciphertext = "v1:" + base64.b64encode(os.urandom(12)).decode() + ":" + base64.b64encode(
        os.urandom(44 + 16)).decode()
    stack = {f"{P}region": "r", f"{P}tsigSecret": {"secure": ciphertext},
             f"{P}gate": {"enabled": False, "deadlineSeconds": 60},
             f"{P}maxZoneBytes": 2048, "kubernetes:context": "kind"}
    project_doc = {"name": "bind9-topology", "config": {
        "region": {"type": "string"}, "namespace": {"type": "string", "default": "dns-system"},
        "zones": {"type": "array", "default": []}, "maxZoneBytes": {"default": 1},
        "flag": {"type": "boolean", "default": True}}}
    got = engine_config(stack, project_doc)
    assert got == {f"{P}region": "r", f"{P}tsigSecret": "x" * len(secret),
                   f"{P}gate": '{"deadlineSeconds":60,"enabled":false}',
                   f"{P}maxZoneBytes": "2048", "kubernetes:context": "kind",
                   f"{P}namespace": "dns-system", f"{P}zones": "[]", f"{P}flag": "true"}


def test_findings_name_the_largest_keys_and_the_fix() -> None:
    big = {f"{P}zones": "z" * 120_000, f"{P}instances": "i" * 9_000, "aws:tags": "t" * 4_000}
    too_big, near = size_findings(measure(big), "Pulumi.s.yaml:")
    assert near == [] and len(too_big) == 1
    assert too_big[0].path == f"Pulumi.s.yaml:{P}zones"
    assert (f"Largest keys: {P}zones 120,0" in too_big[0].message
            and f"{P}instances 9,0" in too_big[0].message and "aws:tags 4,0" in too_big[0].message)
    too_big, near = size_findings(measure({"aws:tags": "t" * 110_000}))
    assert too_big == [] and near[0].path == "aws:tags"
    assert "every key of every namespace" in near[0].message
    assert size_findings(measure({f"{P}zones": "z" * 90_000})) == ([], [])


def test_program_warns_near_the_cap_from_its_own_variable(monkeypatch) -> None:
    """The program measures the PULUMI_CONFIG it was given (exactly) and warns near the
    cap; under the cap nothing is said."""
    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: warned.append(str(msg)))
    config = {f"{P}zones": go_json([zone(i) for i in range(near_cap_count())]),
              f"{P}region": "r"}
    text = go_json(config)
    monkeypatch.setenv("PULUMI_CONFIG", text)
    program.check_config_size()
    total = len(f"PULUMI_CONFIG={text}".encode()) + 1
    assert 0.75 * MAX_ARG_STRLEN < total < MAX_ARG_STRLEN, total
    assert len(warned) == 1 and warned[0].startswith(
        f"{P}zones: the stack config is {total:,} bytes"), warned
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({f"{P}region": "r"}))
    program.check_config_size()
    assert len(warned) == 1
