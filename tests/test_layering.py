"""Imports run down the layers only: each lower package, imported whole in a fresh interpreter,
loads nothing of the layers above it (data, models, losses -> training, evaluation -> data_prep ->
commands and orchestrators)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HELPERS = {"faceverify", "faceverify.config", "faceverify.errors", "faceverify.io", "faceverify.locks",
           "faceverify.progress", "faceverify.provenance"}
ALLOWED = {
    "faceverify.data": {"faceverify.data"},
    "faceverify.models": {"faceverify.models"},
    "faceverify.losses": {"faceverify.losses"},
    "faceverify.evaluation": {"faceverify.data", "faceverify.evaluation"},
    "faceverify.training": {"faceverify.data", "faceverify.models", "faceverify.losses", "faceverify.evaluation",
                            "faceverify.training"},
    "data_prep": {"faceverify.data", "data_prep"},
}


def loaded_by(package: str) -> set[str]:
    """Top-level faceverify / data_prep packages in sys.modules after importing every module of ``package``."""
    code = f"""
import importlib, json, pkgutil, sys
package = importlib.import_module({package!r})
for info in pkgutil.walk_packages(package.__path__, {package!r} + "."):
    importlib.import_module(info.name)
names = sorted({{".".join(n.split(".")[:2 if n.startswith("faceverify") else 1]) for n in sys.modules
                 if n.split(".")[0] in ("faceverify", "data_prep")}})
print(json.dumps(names))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_lower_layer_loads_nothing_above_it(package: str):
    extra = loaded_by(package) - HELPERS - ALLOWED[package]
    assert not extra, f"{package} loads {sorted(extra)}"


def _imported(path: Path) -> set[str]:
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return {".".join(n.split(".")[:2 if n.startswith("faceverify") else 1]) for n in names
            if n.split(".")[0] in ("faceverify", "data_prep")}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_anywhere_in_a_lower_layer_runs_back_up(package: str):
    """Also the imports inside functions, which an import-time check never meets (data.sources once
    imported the ablation layer inside holdout_subset)."""
    folder = REPO / Path(*package.split("."))
    for path in sorted(folder.rglob("*.py")):
        extra = _imported(path) - HELPERS - ALLOWED[package]
        assert not extra, f"{path.relative_to(REPO)} imports {sorted(extra)}"


def test_every_error_a_user_can_fix_derives_from_one_base():
    """Each ``*Error`` class of the package is a FaceverifyError and still the built-in type it was
    (ValueError, OSError, ...), so user code catching either keeps working."""
    import importlib
    import inspect
    import pkgutil

    import data_prep
    import faceverify
    from faceverify.errors import FaceverifyError

    found = {}
    for package in (faceverify, data_prep):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for name, cls in inspect.getmembers(module, inspect.isclass):
                if name.endswith("Error") and cls.__module__ == module.__name__ and cls is not FaceverifyError:
                    found[name] = cls
    assert len(found) >= 17, sorted(found)  # the 17 of this writing; new ones join the check by name
    for name, cls in found.items():
        assert issubclass(cls, FaceverifyError), name
        assert any(issubclass(cls, base) for base in (ValueError, OSError, ArithmeticError, LookupError)), name
