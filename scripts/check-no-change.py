"""State written by an older revision previews with no change under this one.

    python3 scripts/check-no-change.py <old-rev> [<new-rev>, default HEAD; "worktree":
                                                   this checkout as it is on disk] [--then-up]

On a throwaway file backend: the local runner starts the local stack, `pulumi up`
runs with <old-rev>'s program and components, then `pulumi preview
--expect-no-changes --diff` with <new-rev>'s. A refactoring that renames a resource
(without an alias), changes an input, or breaks a provider unpickled from state
fails here. Needs the engine (scripts/engine-env.sh) and real named.

--then-up, for a change that does move resources (e.g. ADR 11's one ZoneSerials per
stack): one record changes under <old-rev> first (so a serial is past today's first),
the preview shows the plan without --expect-no-changes, then `pulumi up` runs with
<new-rev> and must leave every zone's serial where <old-rev> put it, and a last preview
must be empty.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

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
    args = [a for a in sys.argv[1:] if a != "--then-up"]
    then_up = len(args) < len(sys.argv) - 1
    if len(args) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    old_rev, new_rev = args[0], args[1] if len(args) == 2 else "HEAD"
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
        if then_up:
            # one more change under the old revision, so the serials to keep are not the
            # ones a fresh start would pick anyway (today's YYYYMMDD00)
            edit_a_record(project)
            steps += [run(sys.executable, "-m", "components", "local", "up", "--stack", "local"),
                      run("pulumi", "up", "--yes", "--skip-preview", "--stack", "local",
                          "--non-interactive")]
        failed = next((p for p in steps if p.returncode), None)
        if failed is not None:
            print(failed.stdout[-3000:], failed.stderr[-3000:], file=sys.stderr)
            return 1
        swap(project, ROOT if new_rev == "worktree" else checkout(new_rev, base / "new"))
        if then_up:
            edit_a_record(project)  # the new revision's configs/ came with the swap
        preview = run("pulumi", "preview", *([] if then_up else ["--expect-no-changes"]),
                      "--diff", "--stack", "local", "--non-interactive")
        print(preview.stdout[-4000:])
        if preview.returncode:
            print(preview.stderr[-3000:], file=sys.stderr)
        if preview.returncode or not then_up:
            return preview.returncode
        return up_keeps_serials(run)
    finally:
        subprocess.run([sys.executable, "-m", "components", "local", "down"], cwd=project,
                       env=engine.env, capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def edit_a_record(project: Path) -> None:
    records = project / "configs" / "zones" / "local.example.yaml"
    records.write_text(records.read_text().replace("192.0.2.30", "192.0.2.31"))


def up_keeps_serials(run: Any) -> int:
    """`pulumi up` with the new revision: every zone's serial stays; then nothing to do."""
    def serials() -> dict[str, Any]:
        out = run("pulumi", "stack", "output", "zones", "--json", "--stack", "local")
        return {n: z.get("serial") for n, z in json.loads(out.stdout).items()}

    before = serials()
    up = run("pulumi", "up", "--yes", "--skip-preview", "--stack", "local", "--non-interactive")
    print(up.stdout[-3000:])
    if up.returncode:
        print(up.stderr[-3000:], file=sys.stderr)
        return up.returncode
    after = serials()
    print(f"serials before: {before}\nserials after:  {after}")
    if after != before:
        print("a serial moved in the move", file=sys.stderr)
        return 1
    again = run("pulumi", "preview", "--expect-no-changes", "--diff", "--stack", "local",
                "--non-interactive")
    print(again.stdout[-2000:])
    return again.returncode


if __name__ == "__main__":
    sys.exit(main())
