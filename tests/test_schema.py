"""One source for the stack config schema: Pulumi.yaml's `config:` block and the README's
"Stack config reference" table are written from StackSpec (components/schema.py) and
must not drift from it (fix: `python -m components schema --write`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from bind9_topology.config import schema
from bind9_topology.config.model import StackSpec
from bind9_topology.config.topology import SECRET_KEY
from components import cli

pytestmark = pytest.mark.unit

PROJECT_DIR = Path(__file__).resolve().parent.parent


def test_pulumi_yaml_and_readme_match_the_model() -> None:
    assert schema.drift(PROJECT_DIR) == [], (
        "the stack config schema drifted from components/model.py; "
        "run: python -m components schema --write")


def test_every_field_has_a_description_and_a_key() -> None:
    config = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]
    assert list(config) == [k.name for k in schema.config_keys()]
    assert set(config) == set(StackSpec.model_fields) | {SECRET_KEY}
    for name, field in StackSpec.model_fields.items():
        assert field.description, name
        assert config[name]["description"] == " ".join(field.description.split())


def test_the_rest_of_pulumi_yaml_is_kept() -> None:
    doc = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())
    assert doc["name"] == "bind9-topology"
    assert doc["runtime"] == {"name": "python", "options": {"toolchain": "pip"}}
    assert doc["description"].startswith("Authoritative DNS on Kubernetes")


def test_pulumi_yaml_defaults_give_the_models_defaults() -> None:
    """What the engine passes for an unset key (Pulumi.yaml's default) reads as the
    model's own default (load_topology drops empty strings)."""
    config = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]
    assert "default" not in config["region"]  # required: the engine insists on it
    raw = {k: v["default"] for k, v in config.items()
           if "default" in v and k != SECRET_KEY and v["default"] != ""}
    for name, key in config.items():
        if key["type"] == "array":
            assert key["items"]["type"] in ("object", "string"), name
    assert StackSpec.model_validate({**raw, "region": "r"}) == StackSpec(region="r")
    assert config[SECRET_KEY] == {"type": "string", "default": "",
                                  "description": schema.SECRET_DESCRIPTION}


def test_readme_table_lists_every_key_with_type_and_default() -> None:
    text = (PROJECT_DIR / "README.md").read_text()
    table = text[text.index(schema.README_BEGIN):text.index(schema.README_END)]
    rows = {line.split("|")[1].strip(" `"): line for line in table.splitlines()
            if line.startswith("| `")}
    assert set(rows) == set(StackSpec.model_fields) | {SECRET_KEY}
    assert "| `region` | string | required |" in rows["region"]
    assert "| `tsigSecret` | secret string |" in rows[SECRET_KEY]
    assert "`transfer-key`" in rows["tsigKey"]
    assert "64 MiB" in rows["maxZoneBytes"]
    # Text outside the generated block is the README's own.
    assert text.count(schema.README_BEGIN) == text.count(schema.README_END) == 1
    assert "## Stack config reference" in text[:text.index(schema.README_BEGIN)]


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    for name in ("Pulumi.yaml", "README.md"):
        shutil.copy(PROJECT_DIR / name, tmp_path / name)
    return tmp_path


def test_check_fails_on_drift_and_write_repairs(project_copy: Path, capsys) -> None:
    pulumi_yaml = project_copy / "Pulumi.yaml"
    readme = project_copy / "README.md"
    pulumi_yaml.write_text(pulumi_yaml.read_text().replace(
        "default: dns-system", "default: dns"))
    readme.write_text(readme.read_text().replace(
        "Kubernetes namespace the instances", "The namespace the instances"))
    assert schema.drift(project_copy) == ["Pulumi.yaml", "README.md"]
    assert cli.main(["--project", str(project_copy), "schema", "--check"]) == 1
    assert "python -m components schema --write" in capsys.readouterr().err
    assert cli.main(["--project", str(project_copy), "schema", "--write"]) == 0
    assert schema.drift(project_copy) == []
    assert pulumi_yaml.read_text() == (PROJECT_DIR / "Pulumi.yaml").read_text()
    assert readme.read_text() == (PROJECT_DIR / "README.md").read_text()
    assert cli.main(["--project", str(project_copy), "schema", "--check"]) == 0


def test_a_model_change_shows_as_drift(project_copy: Path, monkeypatch) -> None:
    field = StackSpec.model_fields["namespace"]
    monkeypatch.setattr(field, "description", "Another text.")
    assert schema.drift(project_copy) == ["Pulumi.yaml", "README.md"]


def test_readme_without_markers_is_an_error() -> None:
    with pytest.raises(ValueError, match="BEGIN stack-config-reference"):
        schema.readme("# no table here\n")
