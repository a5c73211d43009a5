"""Progress reports: plain lines every 5% or 30 s when stderr is not a terminal (a log, a pipe, a
Slurm file), a bar on a terminal, nothing when off; counted on a real non-TTY training run."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from faceverify.progress import LINE_SECONDS, LineProgress, progress_bar, progress_mode

REPO = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_every_five_percent_or_thirty_seconds_with_rate_eta_and_postfix():
    clock, out = Clock(), io.StringIO()
    bar = LineProgress(total=1000, desc="train", unit="it", stream=out, clock=clock)
    for step in range(1, 1001):
        clock.now += 0.1  # 10 it/s: 5% (50 steps) every 5 s, before 30 s pass
        if step == 100:  # as the trainer does at a log step: the step's losses, then the update
            bar.set_postfix({"softmax": "2.31", "center": "0.05"})
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 21  # the start, then one per 5%
    assert lines[0] == "train: 0/1000 it (0%)"
    assert lines[2] == "train: 100/1000 it (10%), 10 it/s, elapsed 10s, ETA 1m30s; softmax=2.31 center=0.05"
    assert lines[-1].startswith("train: 1000/1000 it (100%), 10 it/s, elapsed 1m40s;")

    slow, out = Clock(), io.StringIO()
    bar = LineProgress(total=100_000, desc="align", unit="img", stream=out, clock=slow)
    for _ in range(200):
        slow.now += 1.0  # 200 s for 0.2%: only the 30 s rule prints
        bar.update(1)
    assert len(out.getvalue().splitlines()) == 1 + int(200 // LINE_SECONDS)


def test_the_mode_follows_the_terminal_and_the_override(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("FACEVERIFY_PROGRESS", raising=False)
    assert progress_mode(Tty()) == "bar" and progress_mode(io.StringIO()) == "lines"
    monkeypatch.setenv("FACEVERIFY_PROGRESS", "off")
    assert progress_mode(Tty()) == "off"
    monkeypatch.setenv("FACEVERIFY_PROGRESS", "lines")
    assert progress_mode(Tty()) == "lines"
    monkeypatch.setenv("FACEVERIFY_PROGRESS", "loud")
    with pytest.raises(ValueError, match="FACEVERIFY_PROGRESS='loud': expected one of bar, lines, off"):
        progress_mode()
    monkeypatch.setenv("FACEVERIFY_PROGRESS", "lines")
    assert list(progress_bar(range(3), desc="x", enabled=False)) == [0, 1, 2]


def _train(att_packed: Path, out: Path, env: dict[str, str]) -> str:
    args = [sys.executable, "-m", "faceverify.cli", "train", f"out={out}", f"data.source={att_packed}",
            "model.backbone=sphere20", "model.width=0.25", "model.embedding_dim=64", "data.batch_size=40",
            "data.workers=0", "optim.lr=0.01", "optim.max_iters=60", "log_every=10", "progress=true",
            "tensorboard=false", "loss.terms=!replace {softmax: 1.0, center: 0.003}"]
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, **env})  # stderr is a pipe: not a terminal
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_a_training_into_a_pipe_logs_a_few_plain_lines(att_packed: Path, tmp_path: Path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if k != "FACEVERIFY_PROGRESS"}
    monkeypatch.setattr(os, "environ", env)
    stderr = _train(att_packed, tmp_path / "lines", {})
    lines = [line for line in stderr.splitlines() if line.startswith("train:")]
    assert "%|" not in stderr  # no bar
    assert 21 <= len(lines) <= 21 + 10  # one per 5% of 60 steps (+ a 30 s line for a slow machine)
    assert lines[0] == "train: 0/60 it (0%)" and lines[-1].startswith("train: 60/60 it (100%)")
    assert re.search(r"it/s, elapsed \S+, ETA \S+; softmax=\S+ center=\S+ total=\S+ lr=\S+ img/s=\d+", stderr)

    barred = _train(att_packed, tmp_path / "bar", {"FACEVERIFY_PROGRESS": "bar"})
    assert "train: 100%|" in barred  # the override draws tqdm's bar even into a pipe
    quiet = _train(att_packed, tmp_path / "off", {"FACEVERIFY_PROGRESS": "off"})
    assert "train:" not in quiet
