"""The command line: `python -m components validate|render`.

Most tests call components.cli.main in-process (unit); one runs the real
`python -m components` in a subprocess to check what a user sees on a broken
stack: every problem with its path and fix, no traceback, a non-zero exit.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bind9_topology.render.bind_files import ZONE_DIR
from components import cli

pytestmark = pytest.mark.unit

PROJECT_DIR = Path(__file__).resolve().parent.parent
P = "bind9-topology:"

#: A stack file with one problem of each of several kinds; each (path, fix fragment).
BROKEN_CONFIG = {
    f"{P}region": "us-east-1",
    f"{P}instances": [
        {
            "name": "primary-dns",
            "role": "primary",
            "replicas": 0,
            "version": "9.99",
            "config": {"allowQuery": ["10.0.0.0/33"]},
        },
        {"name": "secondary-dns", "role": "secondary"},
    ],
    f"{P}zones": [
        {
            "zoneName": "example.com",
            "type": "primary",
            "instanceSelector": {"matchLabels": {"dns-role": "primary"}},
            "soaRecord": {"primaryNs": "ns1.example.com.", "adminEmail": "hostmaster@example.com"},
            "records": [
                {"name": "@", "type": "NS", "data": "ns1.example.com."},
                {"name": "ns1", "type": "A", "data": "10.0.1.300"},
            ],
        },
    ],
}
BROKEN_ISSUES = [
    (f"{P}instances[0].config.allowQuery[0]", "write a network such as"),
    (f"{P}instances[0].replicas", "set it to 1 or more"),
    (f"{P}instances[0].version", "use one of '9.18'"),
    (f"{P}zones[0].records[1].data", "e.g. A 192.0.2.1"),
]


def _secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def broken_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    if (PROJECT_DIR / "Pulumi.yaml").exists():
        shutil.copy(PROJECT_DIR / "Pulumi.yaml", project)
    shutil.copytree(PROJECT_DIR / "configs", project / "configs")
    (project / "Pulumi.broken.yaml").write_text(yaml.safe_dump({"config": BROKEN_CONFIG}))
    return project


def _assert_lists_every_issue(text: str) -> None:
    for path, fix in BROKEN_ISSUES:
        lines = [line for line in text.splitlines() if f"{path}:" in line]
        assert lines, f"{path} not reported:\n{text}"
        assert any(fix in line for line in lines), f"{path}: no fix {fix!r} in {lines}"
    assert f"{len(BROKEN_ISSUES)} problem(s)" in text


def test_validate_prod_exits_zero(capsys, monkeypatch) -> None:
    monkeypatch.delenv(cli.SECRET_ENV, raising=False)
    assert cli.main(["--project", str(PROJECT_DIR), "validate", "--stack", "prod"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("prod: OK")
    # No secret given: a note says how to set one, it is not an error.
    assert "pulumi config set --secret" in out.out


def test_validate_every_stack_exits_zero(capsys) -> None:
    assert cli.main(["--project", str(PROJECT_DIR), "validate", "--all"]) == 0
    assert capsys.readouterr().out.count(": OK") >= 3


def test_validate_broken_stack_lists_every_issue(broken_project: Path, capsys) -> None:
    code = cli.main(["--project", str(broken_project), "validate", "--stack", "broken"])
    assert code != 0
    err = capsys.readouterr().err
    _assert_lists_every_issue(err)
    assert "Traceback" not in err


def test_validate_broken_stack_through_python_m(broken_project: Path) -> None:
    """What a user sees from the real entry point: no traceback, non-zero exit."""
    proc = subprocess.run(
        [sys.executable, "-m", "components", "--project", str(broken_project),
         "validate", "--stack", "broken"],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "Traceback" not in proc.stdout
    _assert_lists_every_issue(proc.stderr)


def test_field_errors_do_not_hide_cross_checks(broken_project: Path, capsys) -> None:
    raw = yaml.safe_load((broken_project / "Pulumi.broken.yaml").read_text())
    raw["config"][f"{P}zones"].append({
        "zoneName": "example.com", "type": "secondary",
        "instanceSelector": {"matchLabels": {"dns-role": "secondary"}},
    })
    (broken_project / "Pulumi.broken.yaml").write_text(yaml.safe_dump(raw))
    assert cli.main(["--project", str(broken_project), "validate", "--stack", "broken"]) != 0
    assert f"{P}zones[1].secondaryConfig.primaryServers" in capsys.readouterr().err


def test_validate_unknown_stack(capsys) -> None:
    assert cli.main(["--project", str(PROJECT_DIR), "validate", "--stack", "nope"]) != 0
    err = capsys.readouterr().err
    assert "Pulumi.nope.yaml" in err and "known stacks" in err and "prod" in err


# --------------------------------------------------------------------------- render


def _render(out: Path, state: Path) -> int:
    return cli.main(["--project", str(PROJECT_DIR), "render", "--stack", "prod",
                     "--out", str(out), "--state", str(state)])


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def rendered_twice(tmp_path: Path, monkeypatch) -> tuple[Path, Path, str]:
    secret = _secret()
    monkeypatch.setenv(cli.SECRET_ENV, secret)  # so the Secret really gets built
    state = tmp_path / "serials.json"
    first, second = tmp_path / "a", tmp_path / "b"
    assert _render(first, state) == 0
    state_after_first = state.read_bytes()
    assert _render(second, state) == 0
    assert state.read_bytes() == state_after_first, "a second render moved a serial"
    return first, second, secret


def test_render_layout(rendered_twice) -> None:
    out, _, _ = rendered_twice
    base = out / "prod"
    for inst, role in (("primary-dns", "primary"), ("secondary-dns", "secondary")):
        conf = base / inst / "etc/bind/named.conf"
        assert conf.is_file()
        zone = base / inst / ZONE_DIR / "db.example.com"
        if role == "primary":
            text = zone.read_text()
            assert "SOA" in text and "NS" in text
        else:
            assert not zone.exists()  # secondaries get it by transfer
            assert (base / inst / ZONE_DIR).is_dir()
            assert "primaries" in conf.read_text()
    manifests = sorted(p.name for p in (base / "manifests").glob("*.yaml"))
    assert "deployment-primary-dns.yaml" in manifests
    assert "deployment-secondary-dns.yaml" in manifests
    kinds = {yaml.safe_load((base / "manifests" / m).read_text())["kind"] for m in manifests}
    assert kinds >= {"ConfigMap", "Secret", "Deployment", "Service", "NetworkPolicy",
                     "PodDisruptionBudget"}
    # The YAML holds integers where the API wants integers (no `port: 53.0`).
    dep = yaml.safe_load((base / "manifests" / "deployment-primary-dns.yaml").read_text())
    ports = dep["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert all(type(p["containerPort"]) is int for p in ports)


def test_render_writes_no_secret(rendered_twice) -> None:
    out, _, secret = rendered_twice
    files = _tree(out)
    assert files
    leaks = [path for path, data in files.items() if secret.encode() in data]
    assert not leaks, f"the TSIG secret is in {leaks}"
    assert not [p for p in files if "/tsig/" in p], "a TSIG key file was written"
    secret_yaml = yaml.safe_load((out / "prod/manifests/secret-primary-dns-tsig.yaml").read_text())
    assert set(secret_yaml["stringData"]) == {"transfer-key.conf"}
    assert "redacted" in secret_yaml["stringData"]["transfer-key.conf"]


def test_render_is_deterministic(rendered_twice) -> None:
    first, second, _ = rendered_twice
    a, b = _tree(first), _tree(second)
    assert sorted(a) == sorted(b)
    differ = [p for p in a if a[p] != b[p]]
    assert not differ, f"differ between two renders: {differ}"
