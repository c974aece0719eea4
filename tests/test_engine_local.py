"""The local stack through the real Pulumi engine, exactly as the README says:
`local up --stack local`, the stack's secret set to
the runner's, `pulumi up`; no address map copied. A gate failure inside `pulumi up`
shows its message alone (server, serial, reason, fix), never a Python traceback;
with the runner stopped the program refuses before creating anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from tests.enginekit import Engine, local_runner_engine

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with local_runner_engine(tmp_path_factory.mktemp("engine-local")) as eng:
        yield eng


def test_local_stack_from_the_readme(engine: Engine) -> None:
    stack_file = engine.project / "Pulumi.local.yaml"
    gate = yaml.safe_load(stack_file.read_text())["config"]["bind9-topology:gate"]
    assert gate.get("localRunner") is True and "addressMap" not in gate

    # Nothing runs yet: the program refuses, names the command, creates nothing.
    engine.run("stack", "init", "local")
    engine.run("config", "set", "--secret", "bind9-topology:tsigSecret",
               "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=", stack="local")
    refused = engine.run("up", "--yes", "--skip-preview", stack="local", check=False)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "python -m components local up --stack local" in output, output
    assert "Traceback" not in output, output
    exported = json.loads(engine.run("stack", "export", stack="local").stdout)
    assert all(r["type"].startswith("pulumi:")
               for r in exported["deployment"].get("resources") or []), exported

    # The README's steps.
    engine.cli("local", "up", "--stack", "local")
    secret = (engine.project / ".local-run/tsig.secret").read_text().strip()
    engine.run("config", "set", "--secret", "bind9-topology:tsigSecret", secret, stack="local")
    engine.run("up", "--yes", "--skip-preview", stack="local")
    outputs = json.loads(engine.run("stack", "output", "--json", stack="local").stdout)
    assert all(z["ready"] is True for z in outputs["zones"].values()), outputs
    assert secret not in stack_file.read_text()

    # A gate that fails inside `pulumi up` (the stack's key no longer matches the
    # servers'): the message alone, within seconds, not the provider host's traceback.
    engine.run("config", "set", "--secret", "bind9-topology:tsigSecret",
               "b3RoZXJvdGhlcm90aGVyb3RoZXJvdGhlcm90aGVyMTI=", stack="local")
    failed = engine.run("up", "--yes", "--skip-preview", stack="local", check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "TSIG rejected by local-primary (127.0.0.1#" in output, output
    assert "fix: this server holds another TSIG key" in output, output
    assert "Traceback" not in output and 'File "' not in output, output
    assert secret not in output

    # The runner stops: pulumi refuses again instead of probing anything.
    engine.cli("local", "down")
    engine.run("config", "set", "--secret", "bind9-topology:tsigSecret", secret, stack="local")
    again = engine.run("preview", stack="local", check=False)
    assert again.returncode != 0
    assert "the local runner is not running" in again.stdout + again.stderr
    engine.run("destroy", "--yes", "--skip-preview", stack="local", check=False)
