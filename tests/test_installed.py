"""What a user installs: a non-editable ``pip install .`` (a build, not the checkout) holds every
module and the recipes, and runs from anywhere without the repository's folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_non_editable_install_has_the_recipes_and_every_module(tmp_path: Path):
    source = tmp_path / "source"  # a copy: the build never writes into the checkout
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "work", "results",
                                                                "*.egg-info", "build", "__pycache__", "tests"))
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                            "--no-index", "--target", str(target), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    shutil.rmtree(source)  # nothing may be read from a checkout any more
    code = """
import importlib, json, pkgutil, sys
import faceverify, data_prep
from faceverify.reproduce import load_recipe
recipe = load_recipe("casia_C_center")
modules = [m.name for p in (faceverify, data_prep) for m in pkgutil.walk_packages(p.__path__, p.__name__ + ".")]
for name in [m for m in modules if not m.endswith("__main__")]:
    importlib.import_module(name)
print(json.dumps({"file": faceverify.__file__, "recipe": str(recipe.config_path), "published": recipe.published,
                  "modules": modules}))
"""
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout.splitlines()[-1])
    assert found["file"].startswith(str(target)) and found["recipe"].startswith(str(target))
    assert found["published"] == {"lfw": 0.9928}
    assert {"faceverify.locks", "faceverify.progress", "faceverify.data.recordio_check", "faceverify.data.splits",
            "data_prep.options", "faceverify.evaluation.options"} <= set(found["modules"])
    printed = subprocess.run([sys.executable, "-m", "faceverify.cli", "train",
                              str(Path(found["recipe"])), "data.source=x", "--print-config"],
                             cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert printed.returncode == 0 and "center: 0.003" in printed.stdout, printed.stderr
