"""Secrets on disk and in processes: key files are 0600 from their first byte, and named
never sees the TSIG secret in its environment."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from bind9_topology.config.topology import load_topology
from bind9_topology.local import runner
from bind9_topology.local.named_process import NamedProcess, named_environment
from bind9_topology.render import bind_files
from bind9_topology.render.bind_files import (
    TSIG_DIR,
    RenderedInstance,
    render_instance,
    write_private,
    write_tree,
)

pytestmark = pytest.mark.unit

KEY = f"{TSIG_DIR}/transfer-key.conf"


@pytest.fixture
def prod_rendered(prod_raw, project_dir, tsig_secret) -> dict[str, RenderedInstance]:
    topo = load_topology(prod_raw, stack="prod", project_dir=project_dir, tsig_secret=tsig_secret)
    serials = dict.fromkeys(topo.contents, 2024051701)
    return {i.name: render_instance(topo.spec, i, topo.contents, serials, tsig_secret=tsig_secret)
            for i in topo.spec.instances}


@pytest.fixture
def open_umask():
    old = os.umask(0)  # the worst case: nothing narrows a mode given to open()
    try:
        yield
    finally:
        os.umask(old)


def _spy_writes(monkeypatch, secret: bytes) -> list[tuple[str, int | None]]:
    """Record every way a file with the secret gets created: (path, mode) per os.open,
    and (path, None) for Path.write_bytes/write_text (mode from the umask: not allowed)."""
    seen: list[tuple[str, int | None]] = []
    real_open = os.open
    real_write_bytes = Path.write_bytes

    def spy_open(path, flags, mode=0o777, *a, **kw):
        if flags & os.O_CREAT:
            seen.append((str(path), mode))
        return real_open(path, flags, mode, *a, **kw)

    def spy_write_bytes(self, data):
        if secret in data:
            seen.append((str(self), None))
        return real_write_bytes(self, data)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(Path, "write_bytes", spy_write_bytes)
    return seen


def test_key_file_created_0600_even_with_umask_0(prod_rendered, tmp_path, tsig_secret,
                                                 monkeypatch, open_umask) -> None:
    rendered = prod_rendered["primary-dns"]
    seen = _spy_writes(monkeypatch, tsig_secret.encode())
    write_tree(rendered, tmp_path, include_secrets=True)
    key = tmp_path / KEY
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert tsig_secret.encode() in key.read_bytes()
    # the only creation that carried the secret was an os.open with mode 0600
    creations = [(p, m) for p, m in seen if "transfer-key" in p]
    assert creations and all(m == 0o600 for _, m in creations), creations
    assert not [p for p in (tmp_path / TSIG_DIR).iterdir() if p.name.startswith(".")]


def test_key_file_with_a_wide_mode_is_replaced_not_rewritten(prod_rendered, tmp_path,
                                                             tsig_secret, open_umask) -> None:
    key = tmp_path / KEY
    key.parent.mkdir(parents=True)
    key.write_bytes(b"old")
    key.chmod(0o644)
    inode = key.stat().st_ino
    write_tree(prod_rendered["primary-dns"], tmp_path, include_secrets=True)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.stat().st_ino != inode  # a new file, never the old 0644 one with the secret
    assert tsig_secret.encode() in key.read_bytes()


def test_write_private_leaves_no_temp_file_on_failure(tmp_path, monkeypatch) -> None:
    def boom(*_a, **_kw):
        raise OSError("disk full")

    monkeypatch.setattr(bind_files.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_private(tmp_path / "k.conf", b"secret")
    assert list(tmp_path.iterdir()) == []


def test_local_runner_secret_file_is_0600_from_the_start(tmp_path, monkeypatch,
                                                         open_umask) -> None:
    monkeypatch.delenv(runner.SECRET_ENV, raising=False)
    seen: list[tuple[str, int]] = []
    real_open = os.open

    def spy_open(path, flags, mode=0o777, *a, **kw):
        if flags & os.O_CREAT:
            seen.append((str(path), mode))
        return real_open(path, flags, mode, *a, **kw)

    monkeypatch.setattr(os, "open", spy_open)
    secret = runner.tsig_secret(tmp_path)
    path = tmp_path / runner.RUN_DIR / "tsig.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [m for p, m in seen if p == str(path)] == [0o600]
    assert runner.tsig_secret(tmp_path) == secret


def test_named_environment_is_an_allowlist() -> None:
    env = named_environment({"PATH": "/x", "BIND9_TSIG_SECRET": "s3cret", "LANG": "C.UTF-8",
                             "PULUMI_CONFIG": '{"bind9-topology:tsigSecret": "s3cret"}',
                             "AWS_SECRET_ACCESS_KEY": "k"})
    assert env == {"PATH": "/x", "LANG": "C.UTF-8"}
    assert named_environment({})["PATH"]


def test_named_child_does_not_inherit_the_secret(tmp_path, monkeypatch) -> None:
    """A stand-in for named (same NamedProcess.start path) dumps the environment it got."""
    fake = tmp_path / "fake-named"
    fake.write_text(f"#!{sys.executable}\nimport os, sys\n"
                    "sys.stdout.write(repr(dict(os.environ)))\n")
    fake.chmod(0o755)
    monkeypatch.setenv(runner.SECRET_ENV, "c2VjcmV0LXZhbHVlLW5vdC1mb3ItbmFtZWQ=")
    monkeypatch.setenv("PULUMI_CONFIG", '{"bind9-topology:tsigSecret": "in-config"}')
    proc = NamedProcess(named=str(fake), threads=None)
    proc.start(tmp_path / "named.conf", tmp_path, tmp_path / "named.log")
    try:
        end = time.monotonic() + 10
        while proc.is_running() and time.monotonic() < end:
            time.sleep(0.02)
    finally:
        proc.stop()
    logged = (tmp_path / "named.log").read_text()
    assert "PATH" in logged
    assert "c2VjcmV0LXZhbHVlLW5vdC1mb3ItbmFtZWQ=" not in logged and "in-config" not in logged
    assert runner.SECRET_ENV not in logged
