"""Provenance: the commit a result names, dirty only when the code changed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from faceverify.provenance import git_commit


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True)


def test_changed_results_do_not_mark_a_commit_dirty_but_changed_code_does(tmp_path: Path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.csv").write_text("a\n1\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "first")
    clean = git_commit(root=tmp_path)
    assert len(clean) == 10 and not clean.endswith("+dirty")
    (tmp_path / "results" / "table.csv").write_text("a\n1\n2\n")  # a recording appending its rows
    assert git_commit(root=tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(root=tmp_path) == clean + "+dirty"
