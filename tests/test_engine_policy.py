"""The policy pack (policy/) through the real engine: `pulumi preview --policy-pack
policy` starts it as an analyzer plugin through the language host's RunPlugin.

Every example stack that previews without a cluster passes it: the region stacks, the
catalog pair and the cluster stacks (pulumi-kubernetes previews without a cluster), and
the local stack with the local runner's servers up. A stack the model accepts but the
pack refuses (an unpinned image, a primary transferring to an address range without the
TSIG key) fails the preview with the pack's messages, and previews without the pack.
The rules the model already refuses are proven by tests/test_policy.py.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import pytest
import yaml

from tests.enginekit import Engine, local_runner_engine

pytestmark = pytest.mark.engine

PACK = "bind9-topology@v0.1.0"
OFFLINE_STACKS = ["prod", "prod-us-west-2", "prod-eu-west-1", "catalog", "catalog-region",
                  "cluster", "cluster-us-west-2", "cluster-eu-west-1"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with local_runner_engine(tmp_path_factory.mktemp("engine-policy")) as eng:
        yield eng


def _secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _preview_with_pack(engine: Engine, stack: str, check: bool = True) -> str:
    proc = engine.run("preview", "--policy-pack", "policy", stack=stack, check=check)
    return proc.stdout + proc.stderr


def _passed(output: str) -> None:
    assert f"✅ {PACK} (local: policy)" in output, output[-4000:]
    assert "[mandatory]" not in output and "can't run policy" not in output, output[-4000:]


@pytest.mark.parametrize("stack", OFFLINE_STACKS)
def test_example_stacks_pass_the_pack(engine: Engine, stack: str) -> None:
    engine.init(stack, _secret())
    _passed(_preview_with_pack(engine, stack))


def test_local_stack_passes_the_pack(engine: Engine) -> None:
    engine.cli("local", "up", "--stack", "local")
    secret = (engine.project / ".local-run/tsig.secret").read_text().strip()
    engine.init("local", secret)
    _passed(_preview_with_pack(engine, "local"))


def test_violating_stack_fails_the_preview_with_the_packs_messages(engine: Engine) -> None:
    doc = yaml.safe_load((engine.project / "Pulumi.prod.yaml").read_text())
    doc.pop("encryptionsalt", None)
    doc["config"].pop("bind9-topology:tsigSecret", None)
    instances = doc["config"]["bind9-topology:instances"]
    primary = next(i for i in instances if i["role"] == "primary")
    secondary = next(i for i in instances if i["role"] == "secondary")
    primary["image"] = "internetsystemsconsortium/bind9:latest"
    primary.setdefault("config", {})["allowTransfer"] = ["key transfer-key", "10.20.0.0/16"]
    secondary["image"] = "registry.example:5000/bind9"
    (engine.project / "Pulumi.policy-violations.yaml").write_text(
        yaml.safe_dump(doc, sort_keys=False))
    engine.init("policy-violations", _secret())

    # The model takes this stack: without the pack the preview succeeds.
    engine.run("preview", stack="policy-violations")

    proc = engine.run("preview", "--policy-pack", "policy", stack="policy-violations",
                      check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-4000:]
    assert f"❌ {PACK} (local: policy)" in output, output[-4000:]
    for fragment in (
        "[mandatory]  images-pinned  (kubernetes:apps/v1:Deployment: primary-dns)",
        "Deployment primary-dns: container bind9 runs image "
        "'internetsystemsconsortium/bind9:latest', not pinned to a version",
        "Deployment secondary-dns: container bind9 runs image 'registry.example:5000/bind9', "
        "not pinned to a version",
        "[mandatory]  transfer-requires-tsig  (kubernetes:core/v1:ConfigMap: primary-dns-config)",
        "instance primary-dns (primary): options allows zone transfers without a TSIG key "
        "to 10.20.0.0/16",
    ):
        assert fragment in output, f"{fragment!r} not in:\n{output[-4000:]}"
    # The prefix is not "any": that rule stays quiet.
    assert "primary-transfer-not-to-any" not in output
