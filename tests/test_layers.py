"""The layers hold: `lint-imports` (pyproject.toml [tool.importlinter]) keeps the import graph
layered (engines < loadgen < analysis < experiments < run.py) and the results contract
(analysis.records) free of other project imports; scripts/test.sh runs it before the tests.
Here: no module imports another module's private name (`from m import _x`, or `m._x` on an
imported project module), which import-linter does not see."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engines", "loadgen", "analysis", "experiments", "hydra_plugins")


def _project(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in PACKAGES


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(path: Path, source: str | None = None) -> list[str]:
    """`file:line: what` for every private name of another project module that `path` (or `source`,
    read as that file) takes."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    rel = path.relative_to(ROOT)
    out: list[str] = []
    modules: set[str] = set()  # local names bound to project modules
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and _project(node.module):
            for a in node.names:
                if _private(a.name):
                    out.append(f"{rel}:{node.lineno}: from {node.module} import {a.name}")
                modules.add(a.asname or a.name)  # may be a submodule (from analysis import results)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if _project(a.name):
                    modules.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name) \
                and node.value.id in modules:  # fmt: skip
            out.append(f"{rel}:{node.lineno}: {node.value.id}.{node.attr}")
    return out


def project_files() -> list[Path]:
    files = [ROOT / "run.py"]
    for pkg in PACKAGES:
        files += sorted((ROOT / pkg).rglob("*.py"))
    return files


def test_no_module_imports_another_modules_private_name():
    found = [line for f in project_files() for line in private_imports(f)]
    assert found == [], "private names taken across modules (make them public or move them):\n" + "\n".join(found)


def test_the_check_sees_both_forms():
    f = ROOT / "analysis" / "__probe_private__.py"  # never written: its source is given
    src = "from analysis.results import _flat\nfrom analysis import results\nx = results._jsonable(1)\ny = results.__name__\n"
    assert private_imports(f, src) == ["analysis/__probe_private__.py:1: from analysis.results import _flat",
                                  "analysis/__probe_private__.py:3: results._jsonable"]  # fmt: skip


@pytest.mark.skipif(shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
                    reason="import-linter is not installed in this environment (pip install -e '.[dev]')")
def test_the_import_contracts_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    p = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
