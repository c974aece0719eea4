"""State written by an older revision previews with no change under this one.

    python3 scripts/check-no-change.py <old-rev> [<new-rev>, default HEAD; "worktree":
                                                   this checkout as it is on disk]

On a throwaway file backend: the local runner starts the local stack, `pulumi up`
runs with <old-rev>'s program and components, then `pulumi preview
--expect-no-changes --diff` with <new-rev>'s. A refactoring that renames a resource
(without an alias), changes an input, or breaks a provider unpickled from state
fails here. Needs the engine (scripts/engine-env.sh) and real named.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.enginekit import make_engine  # noqa: E402

CODE = ("components", "bind9_topology", "configs", "__main__.py")


def checkout(rev: str, dest: Path) -> Path:
    dest.mkdir()
    subprocess.run(f"git -C '{ROOT}' archive '{rev}' | tar -x -C '{dest}'", shell=True,
                   check=True)
    return dest


def swap(project: Path, source: Path) -> None:
    for item in CODE:
        target = project / item
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        if (source / item).is_dir():
            shutil.copytree(source / item, target)
        elif (source / item).exists():
            shutil.copy(source / item, target)


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    old_rev, new_rev = sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else "HEAD"
    base = Path(tempfile.mkdtemp(prefix="no-change-"))
    engine = make_engine(base)
    engine.env.pop("BIND9_TSIG_SECRET", None)
    project = engine.project

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(cmd, cwd=project, env=engine.env, capture_output=True,
                              text=True, timeout=600)
        print(f"$ {' '.join(cmd[:4])} ... -> {proc.returncode}")
        return proc

    swap(project, checkout(old_rev, base / "old"))
    try:
        steps = [run(sys.executable, "-m", "components", "local", "up", "--stack", "local")]
        secret = (project / ".local-run/tsig.secret").read_text().strip()
        steps += [run("pulumi", "stack", "init", "local"),
                  run("pulumi", "config", "set", "--secret", "bind9-topology:tsigSecret", secret,
                      "--stack", "local"),
                  run("pulumi", "up", "--yes", "--skip-preview", "--stack", "local",
                      "--non-interactive")]
        failed = next((p for p in steps if p.returncode), None)
        if failed is not None:
            print(failed.stdout[-3000:], failed.stderr[-3000:], file=sys.stderr)
            return 1
        swap(project, ROOT if new_rev == "worktree" else checkout(new_rev, base / "new"))
        preview = run("pulumi", "preview", "--expect-no-changes", "--diff", "--stack", "local",
                      "--non-interactive")
        print(preview.stdout[-4000:])
        if preview.returncode:
            print(preview.stderr[-3000:], file=sys.stderr)
        return preview.returncode
    finally:
        subprocess.run([sys.executable, "-m", "components", "local", "down"], cwd=project,
                       env=engine.env, capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
