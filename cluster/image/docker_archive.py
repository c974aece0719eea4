"""Write a single-layer docker-archive tar (what `ctr images import` and `docker load` read).

Why: the local cluster has no registry and no image builder; a docker-archive is a
small, documented format (a layer tar, an image config, a manifest) that the standard
library can write. Usage:

    python3 docker_archive.py ROOTFS_DIR OUT.tar REF --entrypoint /usr/sbin/named [--user 101:101]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rootfs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("ref", help="image reference, e.g. localhost/bind9-topology/bind9:9.18")
    parser.add_argument("--entrypoint", action="append", default=[])
    parser.add_argument("--cmd", action="append", default=[])
    parser.add_argument("--user", default="")
    parser.add_argument("--env", action="append", default=[
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    parser.add_argument("--workdir", default="/")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.out.parent) as tmp:
        layer = Path(tmp) / "layer.tar"
        # GNU tar keeps numeric owners, modes, hard links and device nodes exactly.
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "--sort=name", "--mtime=@0",
             "-C", str(args.rootfs), "-cf", str(layer), "."],
            check=True,
        )
        diff_id = "sha256:" + sha256_file(layer)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {
                "Env": args.env,
                "Entrypoint": args.entrypoint or None,
                "Cmd": args.cmd or None,
                "User": args.user,
                "WorkingDir": args.workdir,
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "cluster/image"}],
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        manifest = [{"Config": config_name, "RepoTags": [args.ref], "Layers": ["layer.tar"]}]
        with tarfile.open(args.out, "w") as out:
            for name, data in ((config_name, config_bytes),
                               ("manifest.json", json.dumps(manifest).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
            out.add(layer, arcname="layer.tar")


if __name__ == "__main__":
    main()
