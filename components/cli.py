"""Command line for review and local runs without the engine.

    python -m components validate --stack prod
    python -m components render --stack prod --out out/
    python -m components keygen
    python -m components schema --check            (Pulumi.yaml and README from the model)
    python -m components import-bindy bindy/*.yaml --stack prod   (see bind9_topology.config.bindy)
    python -m components local up --stack prod      (see bind9_topology.local.runner)
    python -m components deploy --preview|--up [--stacks a,b] [--json]   (see components.deploy)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from bind9_topology.config.config_size import check_stack
from bind9_topology.config.model import ConfigIssue, TopologyError
from bind9_topology.config.topology import (
    PREFIX,
    SECRET_ENV,
    SECRET_KEY,
    Topology,
    clear_secret_issue,
    list_stacks,
    load_topology,
    new_tsig_secret,
    project_dir_default,
    read_stack_file,
)


def secret_for_cli(raw: dict[str, Any], stack: str) -> tuple[str | None, list[ConfigIssue]]:
    """The TSIG secret the CLI may use: from the environment, never from a clear stack file."""
    value = raw.get(SECRET_KEY)
    if isinstance(value, str):
        return None, [clear_secret_issue(stack)]
    return os.environ.get(SECRET_ENV), []


def load_for_cli(project_dir: Path, stack: str, *, need_secret: bool = False) -> Topology:
    """The stack checked as `pulumi up` checks it, and also against the size its config
    will have in the engine's PULUMI_CONFIG (which the engine itself only reports as
    'argument list too long', before the program runs)."""
    raw = read_stack_file(project_dir, stack)
    too_big, near = check_stack(project_dir, stack)
    raw.warnings += near
    secret, issues = secret_for_cli(raw, stack)
    issues += too_big
    try:
        topology = load_topology(
            raw, stack=stack, project_dir=project_dir, tsig_secret=secret,
            secret_required=need_secret,
        )
    except TopologyError as exc:
        raise TopologyError([*exc.issues, *issues], exc.warnings) from None
    if issues:
        raise TopologyError(issues, topology.warnings)
    from bind9_topology.config.topology import (
        resolve_offline,  # primaryStack: read from its stack file
    )

    return resolve_offline(topology, project_dir)


def print_warnings(topology: Topology) -> None:
    for warning in topology.warnings:
        print(f"  warning: {warning}")


def cmd_validate(args: argparse.Namespace) -> int:
    stacks = list_stacks(args.project) if args.all else [args.stack]
    for stack in stacks:
        topo = load_for_cli(args.project, stack)
        spec = topo.spec
        print(f"{stack}: OK - region {spec.region}, {len(spec.instances)} instance(s), "
              f"{len(spec.zones)} zone(s), {sum(c.record_count for c in topo.contents.values())} "
              "primary record(s)")
        print_warnings(topo)
        raw = read_stack_file(args.project, stack)
        if SECRET_KEY not in raw and not os.environ.get(SECRET_ENV):
            print(f"  note: {PREFIX}{SECRET_KEY} is not set; `pulumi up` needs it: "
                  f'pulumi config set --secret --stack {stack} {PREFIX}{SECRET_KEY} '
                  '"$(python -m components keygen)"')
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from bind9_topology.dns.serials import SerialStore
    from bind9_topology.render.bind_files import write_tree
    from bind9_topology.render.plan import plan_instance

    from .preview import kubernetes_objects, run_components

    stacks = list_stacks(args.project) if args.all else [args.stack]
    store = SerialStore(args.state)
    # Every stack is checked before anything is written: a bad one leaves no partial tree.
    topos = {stack: load_for_cli(args.project, stack) for stack in stacks}
    for stack in stacks:
        topo = topos[stack]
        mocks = run_components(topo, store)
        base = Path(args.out) / stack
        for inst in topo.spec.instances:
            plan = plan_instance(topo.spec, inst, topo.contents)
            rendered = plan.with_serials(mocks.serials)
            write_tree(rendered, base / inst.name, include_secrets=False)
        manifest_dir = base / "manifests"
        manifest_dir.mkdir(parents=True, exist_ok=True)
        for old in manifest_dir.glob("*.yaml"):
            old.unlink()
        objects = kubernetes_objects(mocks)
        for obj in objects:
            name = f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
            (manifest_dir / name).write_text(yaml.safe_dump(obj, sort_keys=True))
        print(f"{stack}: {len(topo.spec.instances)} instance(s), {len(topo.spec.zones)} zone(s), "
              f"{len(objects)} Kubernetes object(s) -> {base}")
        print_warnings(topo)
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    print(new_tsig_secret())
    return 0


def cmd_import_bindy(args: argparse.Namespace) -> int:
    from bind9_topology.config.bindy_import import import_stack

    result = import_stack(
        [Path(f) for f in args.files], stack=args.stack, project_dir=args.project,
        region=args.region, environment=args.environment, namespace=args.namespace,
        force=args.force,
    )
    print(f"{args.stack}: imported {result.instances} instance(s) and {result.zones} zone(s) "
          f"from {', '.join(sorted(result.dialects))}")
    for path in result.written:
        print(f"  wrote {path}")
    for warning in result.warnings:
        print(f"  warning: {warning}")
    print(f"  next: python -m components validate --stack {args.stack}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from bind9_topology.config.schema import drift, write

    if args.write:
        changed = write(args.project)
        print(f"wrote {', '.join(changed)}" if changed else "Pulumi.yaml and README.md are current")
        return 0
    stale = drift(args.project)
    if stale:
        print(f"{', '.join(stale)}: the stack config schema differs from components/model.py; "
              "run: python -m components schema --write", file=sys.stderr)
        return 1
    print("Pulumi.yaml and README.md match the model")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m components", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=project_dir_default(),
                        help="project directory (holds Pulumi.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)

    def stack_args(p: argparse.ArgumentParser) -> None:
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--stack", help="stack name (Pulumi.<stack>.yaml)")
        group.add_argument("--all", action="store_true", help="every stack of the project")

    p = sub.add_parser("validate", help="check a stack's config; print every problem")
    stack_args(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("render", help="write named.conf, zones and manifests for review")
    stack_args(p)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--state", default=str(project_dir_default() / ".cache" / "serials.json"),
                   help="serial store used in place of Pulumi state")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser(
        "import-bindy",
        help="write a stack (Pulumi.<stack>.yaml, configs/zones/*.yaml) from bindy YAML",
        description="Convert bindy documents (dns.firestoned.io/v1alpha1, "
                    "bindy.firestoned.io/v1alpha1 or v1beta1) into this project's stack config "
                    "and zone records files. Nothing is written when a document has a problem "
                    "or a target file exists (unless --force).")
    p.add_argument("files", nargs="+", help="bindy YAML files (several documents each)")
    p.add_argument("--stack", required=True, help="name of the stack to write")
    p.add_argument("--region", help="the stack's region (default: the instances' region label)")
    p.add_argument("--environment", help="the stack's environment label")
    p.add_argument("--namespace", help="the stack's namespace (default: the documents')")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_import_bindy)

    p = sub.add_parser("keygen", help="print a new random TSIG secret (base64)")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser(
        "schema", help="Pulumi.yaml's config block and the README's config table, from the model")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when either has drifted")
    mode.add_argument("--write", action="store_true", help="rewrite both from the model")
    p.set_defaults(func=cmd_schema)

    try:
        from bind9_topology.local.runner import add_local_parser
    except ImportError:
        pass
    else:
        add_local_parser(sub)
    from .deploy import add_deploy_parser

    add_deploy_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TopologyError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
