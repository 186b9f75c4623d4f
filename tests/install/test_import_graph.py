"""The modules of each package import each other as a tree (no circle), counting the imports
made inside functions too: a circle works only by the accident of which module loads first,
and it breaks when someone moves an import to the top of a file (issue 31)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dino_core", "dino_models", "dino_export", "dino_runtime", "dino_train")


def module_files() -> dict[str, Path]:
    """``dino_export.quantize`` -> its file, for every module of the packages."""
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def imported_names(module: str, path: Path) -> list[str]:
    """Absolute dotted names of everything ``path`` imports, at the top or inside functions."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            if node.level:
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names += [f"{prefix}.{alias.name}" for alias in node.names] + [prefix]
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (names resolved to modules)."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets = set()
        for name in imported_names(module, path):
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module and name.split(".")[0] == module.split(".")[0]:
                targets.add(name)
        graph[module] = targets
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle ``[a, b, ..., a]`` of the graph, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_circle_finder_finds_a_circle():
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert find_circle(graph) == ["p.a", "p.b", "p.c", "p.a"]
    assert find_circle({"p.a": {"p.b"}, "p.b": set()}) is None


def test_relative_imports_resolve_to_modules():
    graph = import_graph()
    assert "dino_export.targets" in graph["dino_export.config"]
    assert "dino_core.errors" in graph["dino_core.cli"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle_in(package):
    graph = {m: deps for m, deps in import_graph().items() if m.split(".")[0] == package}
    assert find_circle(graph) is None, " -> ".join(find_circle(graph))
