"""The arrows run one way. Between packages, in layers, each importing only the layers below it: common (imports
nothing of the project), then features, then tracks, then synth and ensembles (siblings: neither imports the other),
then the spine (workbench), and benchmarks on top where that folder exists (nothing imports it). Within a package,
no module imports itself back through others. Checked on the source, a function's lazy import counted as any other,
so a new import that breaks the order fails here."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LAYERS = (("common",), ("features",), ("tracks",), ("synth", "ensembles"), ("workbench",), ("benchmarks",))
PACKAGES = [package for layer in LAYERS for package in layer if (ROOT / package / "__init__.py").is_file()]


def below(package: str) -> set[str]:
    """The packages `package` may import besides itself: every one of a lower layer."""
    level = next(k for k, layer in enumerate(LAYERS) if package in layer)
    return {name for layer in LAYERS[:level] for name in layer}


def modules(package: str) -> dict[str, Path]:
    """Every module of a package by its dotted name (a folder's `__init__.py` by the folder's)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(module: str, path: Path) -> Iterator[str]:
    """The dotted names a module imports, wherever in it; `from a import b` gives `a.b`, which is module `a.b` where
    `b` is a submodule and an attribute of `a` otherwise (resolve tells them apart)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one folder up per extra dot
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            yield from (f"{base}.{alias.name}" for alias in node.names)


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module of `known` a dotted name lies in (its longest known prefix), or None outside the project."""
    parts = name.split(".")
    return next((m for k in range(len(parts), 0, -1) if (m := ".".join(parts[:k])) in known), None)


ALL_MODULES = {name: path for package in PACKAGES for name, path in modules(package).items()}


def import_graph(package: str) -> dict[str, set[str]]:
    """Each module of the package to the modules of the same package it imports."""
    graph = {}
    for module, path in modules(package).items():
        targets = {resolve(name, ALL_MODULES) for name in imported(module, path)}
        graph[module] = {t for t in targets if t and t != module and t.split(".")[0] == package}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """Each strongly connected component of more than one module (Tarjan's algorithm): the shortest cycle from its
    first module back to it, and the component's other modules where the cycle misses some."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:  # the root of a component: it and everything above it on the stack
            component = {stack.pop()}
            while node not in component:
                component.add(stack.pop())
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    found = []
    for component in (c for c in components if len(c) > 1):
        cycle = shortest_cycle(graph, component)
        rest = sorted(component - set(cycle))
        found.append(" -> ".join(cycle) + (f" (with {', '.join(rest)})" if rest else ""))
    return sorted(found)


def shortest_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest path from the component's first module back to it (breadth first)."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for target in sorted(graph[node] & component):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                frontier.append(target)
    raise AssertionError(f"no cycle through {start} in its component {sorted(component)}")


def test_every_package_has_a_layer():
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert packages <= {name for layer in LAYERS for name in layer}


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_layers_below_it(package):
    allowed = below(package) | {package}
    offenders = [
        f"{module} imports {name}"
        for module, path in modules(package).items()
        for name in imported(module, path)
        if name.split(".")[0] in PACKAGES and name.split(".")[0] not in allowed
    ]
    assert offenders == [], f"{package} may import only {', '.join(sorted(allowed))}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_of_a_package_imports_itself_back(package):
    assert cycles(import_graph(package)) == []


def test_the_checks_see_a_lazy_relative_import_and_find_a_cycle_but_not_a_chain(tmp_path):
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert cycles(graph) == ["p.a -> p.b -> p.c -> p.a"]
    assert cycles({**graph, "p.b": {"p.a", "p.c"}}) == ["p.a -> p.b -> p.a (with p.c)"]
    assert cycles({"p.a": {"p.b"}, "p.b": set()}) == []
    source = tmp_path / "b.py"
    source.write_text("def later():\n    from p import a\n    from . import c\n")
    assert sorted(imported("p.b", source)) == ["p.a", "p.c"]
    assert resolve("p.a.function", {"p": source, "p.a": source}) == "p.a"


def test_a_plain_command_loads_neither_optuna_nor_the_benchmarks_nor_a_logger_library():
    shunned = {"optuna", "benchmarks", "tensorboard", "mlflow"}
    code = f"import sys, workbench.cli, workbench.train; print(sorted({shunned} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
