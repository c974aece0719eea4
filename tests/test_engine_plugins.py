"""The engine's Python plugins as built here (engine/cli/langhost, engine/shims).

The engine closes a plugin by sending SIGINT to its process group and SIGKILLs it 5 s
later. A plugin started with SIGINT ignored (a background job, nohup, some CI runners
hand that on) must still exit on SIGINT, or every command sits out those 5 s at each
close. And About, which the engine asks at the start of every command, answers the
interpreter's path and version from the python the project runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.enginekit import Engine, make_engine

pytestmark = pytest.mark.engine

#: the engine's grace between SIGINT and SIGKILL (sdk/go/common/resource/plugin)
ENGINE_KILL_GRACE_S = 5.0


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return make_engine(tmp_path_factory.mktemp("plugins"))


def _bin(engine: Engine, name: str) -> Path:
    pulumi = subprocess.run(["bash", "-c", "command -v pulumi"], env=engine.env,
                            capture_output=True, text=True, check=True).stdout.strip()
    path = Path(pulumi).parent / name
    assert path.is_file(), f"{name} is not installed beside {pulumi}"
    return path


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("plugin", ["pulumi-language-python", "pulumi-resource-pulumi-python"])
def test_a_plugin_started_with_sigint_ignored_exits_on_sigint(engine: Engine,
                                                               plugin: str) -> None:
    proc = subprocess.Popen([str(_bin(engine, plugin)), "127.0.0.1:1"], env=engine.env,
                            cwd=engine.project, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_ignore_sigint)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert port.isdigit(), f"{plugin} did not print its port: {port!r}"
        os.killpg(proc.pid, signal.SIGINT)  # what the engine's plugin close sends
        try:
            proc.wait(ENGINE_KILL_GRACE_S - 1)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{plugin} ignored SIGINT: the engine would wait "
                        f"{ENGINE_KILL_GRACE_S:.0f} s and SIGKILL it")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_about_answers_the_projects_python(engine: Engine) -> None:
    proc = engine.run("about", "--json")
    runtime = json.loads(proc.stdout).get("runtime") or {}
    assert runtime.get("language") == "python", runtime
    assert runtime.get("version") == ".".join(str(n) for n in sys.version_info[:3]), runtime
    answered = Path(runtime.get("executable") or "")
    assert answered.is_file() and os.access(answered, os.X_OK), runtime
