"""The arrows run one way: the spine (workbench) on top, then ensembles, tracks, features and synth, and the shared
leaf (common) at the bottom. Checked on the source, so a new import that breaks the order fails here."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LEAVES = ("tracks", "features", "ensembles", "synth", "common")


def imported(path: Path) -> set[str]:
    """The top-level packages a module imports, wherever in it (a function's lazy import counts too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", LEAVES)
def test_leaf_layers_never_import_the_spine(package):
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py") if "workbench" in imported(p)]
    assert offenders == []


def test_common_imports_nothing_of_the_project():
    offenders = [p.name for p in (ROOT / "common").rglob("*.py") if imported(p) & {"workbench", *LEAVES} - {"common"}]
    assert offenders == []


def test_a_plain_command_loads_neither_optuna_nor_the_bench():
    code = "import sys, workbench.cli; print(sorted({'optuna', 'workbench.bench'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
