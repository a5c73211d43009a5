"""``faceverify train`` and ``eval --checkpoint`` with bad input: one line, exit 2, nothing
half-written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from faceverify.cli import main
from faceverify.training.trainer import train
from tests.training.conftest import small_config
from tests.unprivileged import make_read_only, run_cli

REPO = Path(__file__).resolve().parents[2]


def base_args(att_packed: Path, out: Path) -> list[str]:
    return ["train", f"out={out}", f"data.source={att_packed}", "model.backbone=sphere20", "model.width=0.25",
            "model.embedding_dim=64", "data.batch_size=40", "data.workers=0", "optim.lr=0.01",
            "optim.max_iters=2", "progress=false", "tensorboard=false"]


@pytest.mark.parametrize("override,fragment", [
    ("data.batch_size=0", "data.batch_size must be >= 1, got 0"),
    ("checkpoint_every=0", "checkpoint_every must be >= 1, got 0"),
    ("log_every=0", "log_every must be >= 1, got 0"),
    ("optim.max_iters=0", "optim.max_iters must be >= 1, got 0"),
    ("optim.max_iters=-3", "optim.max_iters must be >= 1, got -3"),
    ("model.width=0", "model.width must be > 0"),
    ("model.width=-0.5", "model.width must be > 0"),
    ("device=gpu", "unknown device 'gpu' (say cuda"),
    ("data.k=0", "data.k must be >= 1"),
])
def test_bad_values_are_one_line_exit_2_before_any_output(att_packed: Path, tmp_path: Path, capsys,
                                                           override: str, fragment: str):
    out = tmp_path / "run"
    assert main(base_args(att_packed, out) + [override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert not out.exists()


def test_read_only_output_is_one_line_and_leaves_nothing(att_packed: Path, tmp_path: Path):
    locked = tmp_path / "locked"
    make_read_only(locked)
    try:
        done = run_cli(base_args(att_packed, locked / "run"), cwd=REPO)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().count("\n") == 0 and "is not writable" in done.stderr, done.stderr
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_eval_checkpoint_refuses_an_unaligned_tree(att_packed: Path, att_as_lfw, lfw_images: Path, tmp_path: Path,
                                                   capsys):
    run = tmp_path / "run"
    train(small_config(att_packed, run, optim={"max_iters": 2, "milestones": [100]}))
    _, pairs = att_as_lfw
    photos = tmp_path / "photos"
    shutil.copytree(lfw_images / "Aaron_Eckhart", photos / "Aaron_Eckhart")  # 250x250 LFW photos
    code = main(["eval", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--lfw", str(photos),
                 "--pairs", str(pairs), "--out", str(tmp_path / "e"), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") <= 2 and "looks unaligned: its images are 250x250" in err and "faceverify align" in err
    assert main(["eval", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--lfw", str(photos),
                 "--pairs", str(pairs), "--out", str(tmp_path / "e"), "--device", "gpu"]) == 2
    assert "say cuda" in capsys.readouterr().err
