"""The package's layers hold: the core never imports Pulumi, and each layer only what is below it.

Read from the source with ``ast`` (every import, including those inside functions),
so a lazy import cannot slip past.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "bind9_topology"
#: bottom to top: a layer may import itself and those before it
LAYERS = ["pod", "config", "dns", "render", "kube", "local"]
#: outside libraries only some layers may use
ALLOWED_ONLY_IN = {"kubernetes": {"kube"}}
FORBIDDEN = ("pulumi", "pulumi_kubernetes", "components")


def imports_of(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; use the full path"
            found.append((node.lineno, node.module or ""))
    return found


def layer_of(path: Path) -> str:
    return path.relative_to(CORE).parts[0] if path.parent != CORE else ""


def core_files() -> list[Path]:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 20, files  # the walk found the package
    return files


def violations() -> list[str]:
    problems = []
    for path in core_files():
        layer = layer_of(path)
        rank = LAYERS.index(layer) if layer else -1
        for line, module in imports_of(path):
            top = module.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line} imports {module}"
            if top in FORBIDDEN:
                problems.append(f"{where}: the core stays free of the Pulumi layer")
            elif top in ALLOWED_ONLY_IN and layer not in ALLOWED_ONLY_IN[top]:
                problems.append(f"{where}: only {sorted(ALLOWED_ONLY_IN[top])} may use {top}")
            elif top == "bind9_topology" and module.count(".") >= 1:
                target = module.split(".")[1]
                if target in LAYERS and LAYERS.index(target) > rank:
                    problems.append(f"{where}: {layer or 'the package root'} sits below {target}")
    return problems


def test_core_layers_hold() -> None:
    assert violations() == []


def test_the_check_sees_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself can fail: a config module that imports pulumi and the dns layer."""
    fake = tmp_path / "bind9_topology"
    for layer in LAYERS:
        (fake / layer).mkdir(parents=True)
        for n in range(5):
            (fake / layer / f"m{n}.py").write_text("import json\n")
    (fake / "config" / "bad.py").write_text(
        "def f():\n    import pulumi\n    from bind9_topology.dns.gate import x\n")
    monkeypatch.setitem(globals(), "CORE", fake)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    found = violations()
    assert any("config/bad.py:2 imports pulumi" in p for p in found), found
    assert any("config sits below dns" in p for p in found), found


def test_pulumi_layer_uses_the_core() -> None:
    """components/ is the Pulumi layer: it imports the core, never the reverse (above)."""
    text = "".join(p.read_text() for p in (ROOT / "components").glob("*.py"))
    assert "from bind9_topology." in text


def test_pod_programs_need_only_python_and_dnspython() -> None:
    """bind9_topology/pod/ runs inside the pods from a ConfigMap, with the image's python3
    and python3-dnspython: the standard library and `dns` only, nothing of this project."""
    import sys

    allowed = set(sys.stdlib_module_names) | {"dns", "__future__"}
    found = [(path.name, line, module) for path in sorted((CORE / "pod").glob("*.py"))
             for line, module in imports_of(path) if module.split(".")[0] not in allowed]
    assert found == []
    assert (CORE / "pod" / "agent.py").is_file()


def test_no_two_core_modules_import_each_other() -> None:
    """No cycle in the core's module graph (every import, lazy and TYPE_CHECKING ones too):
    a cycle means two modules that cannot be read, tested or moved apart."""
    def module_of(path: Path) -> str:
        return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")

    modules = {module_of(p): p for p in core_files()}
    graph = {name: {m for _, m in imports_of(path) if m in modules and m != name}
             for name, path in modules.items()}
    cycles = []
    for name, targets in graph.items():
        seen, todo = set(), list(targets)
        while todo:
            current = todo.pop()
            if current == name:
                cycles.append(name)
                break
            if current not in seen:
                seen.add(current)
                todo.extend(graph[current])
    assert cycles == []
