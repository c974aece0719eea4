"""Every Kubernetes object every stack renders passes the API schema, strictly, offline.

The objects are the ones `python -m components render` writes: the inputs the
components register under mocks (components.preview), secrets redacted. The
schemas come with the kubernetes-validate package (no network).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

try:
    import kubernetes_validate
except ImportError as exc:  # fail loudly: a missing validator must not pass as "skipped"
    raise ImportError(
        "kubernetes-validate is required for the manifest tests; "
        "pip install -r requirements-dev.txt"
    ) from exc

from bind9_topology.config.topology import Topology, list_stacks, load_topology, read_stack_file
from components.preview import kubernetes_objects, run_components

pytestmark = pytest.mark.config

#: The Kubernetes version the manifests are checked against (schemas shipped offline).
KUBERNETES_VERSION = "1.33.0"

PROJECT_DIR = Path(__file__).resolve().parent.parent
STACKS = list_stacks(PROJECT_DIR)


def _objects(topology: Topology) -> list[dict[str, Any]]:
    return kubernetes_objects(run_components(topology))


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    secret = base64.b64encode(os.urandom(32)).decode()
    return {
        stack: _objects(load_topology(read_stack_file(PROJECT_DIR, stack), stack=stack,
                                      project_dir=PROJECT_DIR, tsig_secret=secret))
        for stack in STACKS
    }


def _validate(obj: dict[str, Any]) -> None:
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where} fails the Kubernetes {KUBERNETES_VERSION} schema:\n{exc}")


def _floats(value: Any, path: str = "") -> list[str]:
    """Paths of non-integer-typed numbers: `port: 53.0` passes JSON schema but not the API."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _floats(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _floats(v, f"{path}[{i}]")]
    return [path] if isinstance(value, float) else []


def test_the_pinned_schemas_ship_offline() -> None:
    versions = kubernetes_validate.utils.all_versions()
    assert KUBERNETES_VERSION in versions, f"known offline: {versions}"


def test_strict_validation_rejects_an_unknown_field() -> None:
    """Guard: strict mode really is strict for the pinned version."""
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "bogus": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("stack", STACKS)
def test_every_object_passes_the_schema(rendered, stack: str) -> None:
    objects = rendered[stack]
    kinds = {o["kind"] for o in objects}
    assert {"ConfigMap", "Secret", "Deployment", "Service", "NetworkPolicy"} <= kinds
    for obj in objects:
        _validate(obj)
        assert not _floats(obj), f"{obj['kind']}/{obj['metadata']['name']}: {_floats(obj)}"


def test_a_single_replica_sharded_stack_passes_the_schema(big_topology: Topology) -> None:
    """No PDB (replicas 1) and several zone ConfigMaps: the other shapes the code produces."""
    objects = _objects(big_topology)
    assert sum(o["kind"] == "ConfigMap" for o in objects) > 3
    for obj in objects:
        _validate(obj)
