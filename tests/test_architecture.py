"""The import rules of docs/architecture.md, read from the source with `ast` (nothing is imported).

Every import counts: at the top of a module, inside a function, or under `if TYPE_CHECKING:`, because each is a
dependency a reader has to follow and a change can break.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sweep_engine"

# What each part of the package may import from the others (docs/architecture.md, "The packages").
STAGES = ("data", "training", "sweep", "analysis")
MAY_IMPORT = {
    "core": {"core"},
    "data": {"core", "data"},
    "training": {"core", "data", "training"},
    "sweep": {"core", "data", "training", "sweep"},
    "analysis": {"core", "analysis"},
    "top": {"core", "top", *STAGES},  # cli.py and demo.py, which put the stages together
}
TOP = {"sweep_engine.cli", "sweep_engine.demo"}

# Cycles through imports made only for type annotations, in the analysis (its owner removes them; each must then
# leave this list, see test_no_cycle_left_in_the_known_list).
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Every module `name` imports (absolute names; `from pkg import mod` counts as pkg.mod when it is one)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return found


GRAPH = {name: {m for m in imports_of(name) if m in MODULES and m != name} for name in MODULES}


def part_of(name: str) -> str:
    if name in TOP:
        return "top"
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else "core"


def cycles() -> set[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan), as sets of module names."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.add(frozenset(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_the_walk_sees_the_imports_it_must() -> None:
    assert "sweep_engine.sweep.ray_tune" in GRAPH["sweep_engine.sweep.commands"]  # inside a function
    assert "sweep_engine.sweep.search" in GRAPH["sweep_engine.sweep.driver"]  # under TYPE_CHECKING
    assert "sweep_engine.data.bible" in GRAPH["sweep_engine.data.corpora"]  # `from package import module`
    assert external("sweep_engine.sweep.ray_train", "ray") and external("sweep_engine.tracking", "mlflow")


def test_no_import_cycle() -> None:
    found = cycles()
    assert found <= KNOWN_CYCLES, sorted(sorted(c) for c in found - KNOWN_CYCLES)


def test_no_cycle_left_in_the_known_list() -> None:
    """A cycle fixed must leave KNOWN_CYCLES too, so that it cannot come back unnoticed."""
    assert cycles() >= KNOWN_CYCLES


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_part_imports_only_what_it_may(name: str) -> None:
    wrong = sorted(m for m in GRAPH[name] if part_of(m) not in MAY_IMPORT[part_of(name)])
    assert not wrong, f"{name} ({part_of(name)}) imports {wrong}"


def external(name: str, library: str) -> bool:
    return any(m == library or m.startswith(f"{library}.") for m in imports_of(name))


def test_ray_only_in_the_two_ray_modules() -> None:
    assert {m for m in MODULES if external(m, "ray")} == {
        "sweep_engine.sweep.ray_tune",
        "sweep_engine.sweep.ray_train",
    }


def test_mlflow_only_in_tracking() -> None:
    assert {m for m in MODULES if external(m, "mlflow")} == {"sweep_engine.tracking"}


def test_the_core_needs_no_torch() -> None:
    """validate, plan and status load the core: it must not pull torch in (training and analysis use it)."""
    assert not [m for m in MODULES if part_of(m) == "core" and external(m, "torch")]
