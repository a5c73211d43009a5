"""Real data for the trainer tests: AT&T faces packed small, and an LFW-style tree + pairs file
made from them (so checkpoint evaluation runs the real protocol code)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from data_prep.pack import PackConfig, pack_aligned
from faceverify.config import merge
from faceverify.training.config import TrainConfig


@pytest.fixture(scope="session")
def att_packed(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "att"
    pack_aligned(faces_dir / "att_faces", out, PackConfig(size="56x48"), progress=False)
    return out


@pytest.fixture(scope="session")
def att_as_lfw(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """AT&T subjects as an LFW-style tree ``sN/sN_000i.pgm`` and a 2-fold pairs file."""
    root = tmp_path_factory.mktemp("attlfw")
    tree = root / "images"
    for subject in sorted(os.listdir(faces_dir / "att_faces")):
        folder = faces_dir / "att_faces" / subject
        if not folder.is_dir():
            continue
        (tree / subject).mkdir(parents=True)
        for i in range(1, 11):
            shutil.copy(folder / f"{i}.pgm", tree / subject / f"{subject}_{i:04d}.pgm")
    lines = ["2\t20"]
    for fold in range(2):
        subjects = [f"s{n}" for n in range(1 + 20 * fold, 21 + 20 * fold)]
        lines += [f"{s}\t{1 + fold}\t{6 + fold}" for s in subjects]
        lines += [f"{s}\t{3}\t{subjects[(i + 1) % 20]}\t{8}" for i, s in enumerate(subjects)]
    pairs = root / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    return tree, pairs


def small_config(packed: Path, out: Path, **changes) -> TrainConfig:
    """A sphere20 at width 1/4 on 56x48 AT&T: trains in seconds on two CPU cores."""
    base = {
        "out": str(out), "progress": False, "tensorboard": False, "log_every": 5, "checkpoint_every": 1000,
        "data": {"source": str(packed), "batch_size": 40, "workers": 0},
        "model": {"backbone": "sphere20", "width": 0.25, "embedding_dim": 64},
        "optim": {"lr": 0.01, "max_iters": 20, "milestones": [100]},
        "loss": {"terms": {"softmax": 1.0}},
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return merge(TrainConfig(), base)
