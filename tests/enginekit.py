"""The real Pulumi engine for tests: the env of scripts/engine-env.sh and a project copy.

Shared by the `engine` tier (file backend, no cluster) and the `cluster` tier (the
local Kubernetes cluster of scripts/cluster.sh).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PULUMI_TIMEOUT = 300


@dataclass
class Engine:
    env: dict[str, str]
    project: Path

    def run(self, *args: str, stack: str | None = None, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        cmd = ["pulumi", *args, "--non-interactive"]
        if stack:
            cmd += ["--stack", stack]
        try:
            proc = subprocess.run(cmd, cwd=self.project, env={**self.env, **(env or {})},
                                  capture_output=True, text=True, timeout=PULUMI_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            pytest.fail(f"`{' '.join(cmd)}` still running after {PULUMI_TIMEOUT}s\n"
                        f"--- stdout\n{out[-6000:]}")
        if check and proc.returncode != 0:
            pytest.fail(f"`{' '.join(cmd)}` exited {proc.returncode}\n--- stdout\n"
                        f"{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
        return proc

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "components", *args], cwd=self.project,
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            pytest.fail(f"components {' '.join(args)} exited {proc.returncode}\n"
                        f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc

    def init(self, stack: str, secret: str) -> None:
        self.run("stack", "init", stack)
        self.run("config", "set", "--secret", "bind9-topology:tsigSecret", secret, stack=stack)


def engine_env() -> dict[str, str]:
    if os.environ.get("SKIP_ENGINE"):
        pytest.skip("SKIP_ENGINE is set")
    built = list((ROOT / ".cache" / "engine").glob("*/bin/pulumi"))
    if not built and shutil.which("go") is None:
        pytest.skip("no Pulumi engine built and no Go toolchain to build one")
    proc = subprocess.run(
        ["bash", "-c", f"source '{ROOT}/scripts/engine-env.sh' >/dev/null 2>&1 && env -0"],
        capture_output=True, text=True, timeout=3600,
        env={**os.environ, "ENGINE_ENV_QUIET": "1"},
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/engine-env.sh failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return dict(item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item)


def make_engine(base: Path) -> Engine:
    """A copy of the project under *base*, with its own file backend."""
    env = engine_env()
    project = base / "project"
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(
        ".git", ".cache", ".local-run", "__pycache__", ".pytest_cache", ".mypy_cache",
        ".ruff_cache", "out", "bench"))
    (base / "state").mkdir()
    env.update({
        "PULUMI_BACKEND_URL": f"file://{base / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": "engine-test-passphrase",
        "PYTHONPATH": str(project),
    })
    env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    return Engine(env=env, project=project)


@contextlib.contextmanager
def local_runner_engine(base: Path) -> Iterator[Engine]:
    """An engine on a project copy whose local runner is stopped afterwards (by pid,
    `local down`), with no TSIG secret in the environment (the runner makes its own)."""
    eng = make_engine(base)
    eng.env.pop("BIND9_TSIG_SECRET", None)
    try:
        yield eng
    finally:
        subprocess.run([sys.executable, "-m", "components", "local", "down"],
                       cwd=eng.project, env=eng.env, capture_output=True, timeout=60)
