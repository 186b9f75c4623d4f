"""The Python API of real TensorRT releases, from the stored name lists, and a static check of
the toolkit's TensorRT calls against them.

The lists in ``tests/data/tensorrt`` are written by ``scripts/trt_api_surface.py`` (its
docstring says how, and how to refresh them): one name per line, ``Name``, ``Class.member`` or
``Class.Nested.member``. :func:`check_source` reads a module's syntax tree and reports each
TensorRT name it uses that a release lacks:

* a chain rooted at the module (``trt.BuilderFlag.FP16``, ``trt.Logger.WARNING``) is checked
  exactly, class by class;
* an attribute of an object that came from TensorRT (``builder = trt.Builder(...)``, then
  ``config = builder.create_builder_config()``, then ``config.int8_calibrator``) is checked
  against the members of every class of the release, since the object's class is not known
  without running the code. Such objects are followed through assignments (names and
  ``self.x``), calls, subscripts and the return values of the module's own functions.

The module is whatever name ``import tensorrt [as X]`` binds, and ``trt`` (the name the code
passes it around under).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "tensorrt"
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ApiNames:
    """One release's names."""

    role: str             # the list's file name: 10.3, 10.x, 11.x
    version: str          # e.g. 11.4.0.106
    names: frozenset[str]

    @cached_property
    def members(self) -> frozenset[str]:
        """Every member name of every class (the last part of a dotted name)."""
        return frozenset(n.rsplit(".", 1)[1] for n in self.names if "." in n)

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def has(self, name: str) -> bool:
        return name in self.names

    def require(self, name: str) -> None:
        """AttributeError, as the real bindings raise it, when the release lacks ``name``."""
        if name not in self.names:
            owner, _, attr = name.rpartition(".")
            raise AttributeError(f"TensorRT {self.version}: {owner or 'module tensorrt'} has no "
                                 f"attribute {attr!r}")


@cache
def load(role: str) -> ApiNames:
    lines = (DATA / f"{role}.txt").read_text().splitlines()
    version = lines[0].split()[2]  # "# TensorRT 11.4.0.106 Python API ..."
    return ApiNames(role, version, frozenset(line for line in lines if not line.startswith("#")))


def roles() -> list[str]:
    return sorted(p.stem for p in DATA.glob("*.txt"))


# -- the static check ---------------------------------------------------------------------------

def _key(node: ast.AST) -> str | None:
    """``x`` or ``self.x``: what an assignment can bind and a later read can look up."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}"
    return None


class _Flow:
    """Which names hold the module and which hold TensorRT objects, to a fixed point."""

    def __init__(self, tree: ast.Module) -> None:
        self.modules = {"trt"}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                self.modules |= {a.asname or a.name for a in node.names if a.name == "tensorrt"}
        self.objects: set[str] = set()
        self.functions: set[str] = set()  # module functions/methods that return TensorRT objects
        self._solve(tree)

    def kind(self, node: ast.AST) -> str | None:
        """``module``, ``object`` or None for an expression."""
        key = _key(node)
        if key in self.modules:
            return "module"
        if key in self.objects:
            return "object"
        if isinstance(node, ast.Attribute):
            if node.attr == "__version__":
                return None  # a str, not a TensorRT object
            return "object" if self.kind(node.value) else None
        if isinstance(node, ast.Call):
            if self.kind(node.func):
                return "object"
            name = node.func.attr if isinstance(node.func, ast.Attribute) else _key(node.func)
            return "object" if name in self.functions else None
        if isinstance(node, ast.Subscript):
            return "object" if self.kind(node.value) else None
        return None

    def _bind(self, target: ast.AST, value: ast.AST) -> bool:
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
            # a list, not a generator: every element is bound, not only up to the first change
            return any([self._bind(t, v) for t, v in zip(target.elts, value.elts)])  # noqa: C419
        key, kind = _key(target), self.kind(value)
        if key is None or kind is None:
            return False
        store = self.modules if kind == "module" else self.objects
        if key in store:
            return False
        store.add(key)
        return True

    def _solve(self, tree: ast.Module) -> None:
        changed = True
        while changed:
            changed = False
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign):
                    changed |= any([self._bind(t, node.value) for t in node.targets])  # noqa: C419
                elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
                    changed |= self._bind(node.target, node.value)
                elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                    changed |= self._bind(node.optional_vars, node.context_expr)
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    returns = [r.value for r in ast.walk(node)
                               if isinstance(r, ast.Return) and r.value is not None]
                    if node.name not in self.functions and any(self.kind(r) for r in returns):
                        self.functions.add(node.name)
                        changed = True


def uses(source: str) -> list[tuple[int, str, str]]:
    """Every TensorRT name ``source`` uses: (line, kind, name); kind ``qualified`` for a chain
    from the module (``BuilderFlag.FP16``), ``member`` for an attribute of a TensorRT object."""
    tree = ast.parse(source)
    flow = _Flow(tree)
    found, inner = set(), set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or node in inner:
            continue
        chain = [node]  # a.b.c: [.c, .b], then innermost first
        while isinstance(chain[-1].value, ast.Attribute):
            chain.append(chain[-1].value)
        inner.update(chain[1:])
        chain.reverse()
        for i, attr in enumerate(chain):
            kind = flow.kind(attr.value)
            parts = [a.attr for a in chain[i:]]
            if kind == "module":
                if parts[0] == "__version__":
                    parts = parts[:1]  # a str: what follows is str's API
                found |= {(node.lineno, "qualified", ".".join(parts[:d]))
                          for d in range(1, min(len(parts), 3) + 1)}
                found |= {(node.lineno, "member", p) for p in parts[3:]}
                break
            if kind == "object":
                found |= {(node.lineno, "member", p) for p in parts}
                break
    return sorted(found)


def check_source(source: str, api: ApiNames) -> list[str]:
    """One line per name ``source`` uses that ``api``'s release lacks."""
    problems = []
    for line, kind, name in uses(source):
        ok = api.has(name) if kind == "qualified" else name in api.members
        if not ok:
            what = f"tensorrt.{name}" if kind == "qualified" else f"a TensorRT object's .{name}"
            problems.append(f"line {line}: {what} (TensorRT {api.version} has no such name)")
    return problems


def modules_calling_tensorrt() -> list[Path]:
    """The toolkit's Python files (packages, benchmarks, scripts) that import tensorrt."""
    found = []
    for folder in ("dino_core", "dino_models", "dino_train", "dino_export", "dino_runtime",
                   "benchmarks", "scripts", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            if any(isinstance(n, ast.Import) and any(a.name == "tensorrt" for a in n.names)
                   or isinstance(n, ast.ImportFrom) and n.level == 0 and n.module == "tensorrt"
                   for n in ast.walk(tree)):
                found.append(path)
    return found
