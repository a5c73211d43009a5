"""Partial FC in the Trainer: one process against two gloo processes under torchrun, and a run that
moves from 2 to 1 to 3 processes and continues exactly like an uninterrupted one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from faceverify.training.checkpoint import load_checkpoint
from faceverify.training.config import TrainConfig
from faceverify.training.logging import read_metrics
from faceverify.training.sharded_checkpoint import ShardedCheckpointError
from faceverify.training.trainer import Trainer, train
from tests.training.conftest import small_config

REPO = Path(__file__).resolve().parents[2]


def overrides(source: Path, rate: float, iters: int, terms: str = "{softmax: 1.0, center: 0.01}") -> list[str]:
    return [f"data.source={source}", "model.backbone=sphere20", "model.width=0.125", "model.embedding_dim=16",
            "data.batch_size=24", "data.workers=0", f"optim.max_iters={iters}", "optim.lr=0.05",
            "optim.milestones=[1000]", "progress=false", "tensorboard=false", "log_every=1", "checkpoint_every=2",
            f"loss.terms={terms}", f"loss.partial_fc.sample_rate={rate}", "deterministic=true"]


def run(out: Path, args: list[str], processes: int, port: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "faceverify.cli"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
        str(port), "-m", "faceverify.cli"]
    done = subprocess.run([*launcher, "train", f"out={out}", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]


def losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss/total"] for r in read_metrics(out / "metrics.jsonl") if "loss/total" in r}


def test_one_process_partial_fc_trains_saves_its_shard_and_resumes(att_packed: Path, tmp_path: Path):
    def config(iters: int) -> TrainConfig:
        return small_config(att_packed, tmp_path / "run", log_every=1, checkpoint_every=2, deterministic=True,
                            data={"batch_size": 24}, model={"embedding_dim": 16, "width": 0.125},
                            optim={"lr": 0.05, "max_iters": iters, "milestones": [1000]},
                            loss={"terms": {"softmax": 1.0, "center": 0.01}, "partial_fc": {"sample_rate": 0.5}})

    result = train(config(4))
    assert result.step == 4 and result.last_values["softmax"] > 0
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    entry = last["class_shards"]
    assert entry["num_classes"] == 40 and [(f["start"], f["stop"]) for f in entry["files"]] == [(0, 40)]
    assert "losses.softmax.weight" not in last["objective"] and "losses.softmax.step" in last["objective"]
    folders = sorted(p.name for p in (tmp_path / "run" / "checkpoints" / "last.shards").iterdir())
    assert folders == ["step-000000004"]  # the shards of step 2 went when last.pt moved on
    trainer = Trainer(config(6))
    head = trainer.objective.losses["softmax"]
    saved = torch.load(tmp_path / "run" / "checkpoints" / entry["folder"] / entry["files"][0]["file"])
    torch.testing.assert_close(head.weight, saved["tensors"]["losses.softmax.weight"], rtol=0, atol=0)
    assert int(head.step) == 4
    trainer.release()
    # a damaged shard file is named, not silently replaced by fresh weights
    (tmp_path / "run" / "checkpoints" / entry["folder"] / entry["files"][0]["file"]).write_bytes(b"broken")
    with pytest.raises(ShardedCheckpointError, match="cannot read the class shard"):
        Trainer(config(6))


@pytest.mark.slow
def test_two_gloo_processes_of_partial_fc_equal_one_process(att_packed: Path, tmp_path: Path):
    for rate in (1.0, 0.5):
        args = overrides(att_packed, rate, 3)
        run(tmp_path / f"one{rate}", args, 1, 0)
        run(tmp_path / f"two{rate}", args, 2, 29541)
        one, two = losses(tmp_path / f"one{rate}"), losses(tmp_path / f"two{rate}")
        assert sorted(one) == [1, 2, 3]
        for step in one:
            assert abs(one[step] - two[step]) < 1e-5, (rate, step, one[step], two[step])
        a = load_checkpoint(tmp_path / f"one{rate}" / "checkpoints" / "last.pt")
        b = load_checkpoint(tmp_path / f"two{rate}" / "checkpoints" / "last.pt")
        for key in a["model"]:
            torch.testing.assert_close(b["model"][key], a["model"][key], rtol=1e-4, atol=1e-5, msg=key)
        assert [(f["start"], f["stop"]) for f in b["class_shards"]["files"]] == [(0, 20), (20, 40)]


@pytest.mark.slow
def test_a_run_moved_from_2_to_1_to_3_processes_continues_like_an_uninterrupted_one(att_packed: Path, tmp_path: Path):
    run(tmp_path / "straight", overrides(att_packed, 0.5, 6), 1, 0)
    moved = tmp_path / "moved"
    run(moved, overrides(att_packed, 0.5, 2), 2, 29543)
    run(moved, overrides(att_packed, 0.5, 4), 1, 0)
    run(moved, overrides(att_packed, 0.5, 6), 3, 29545)
    straight, resumed = losses(tmp_path / "straight"), losses(moved)
    assert sorted(resumed) == sorted(straight) == [1, 2, 3, 4, 5, 6]
    for step in straight:
        assert abs(straight[step] - resumed[step]) < 1e-5, (step, straight[step], resumed[step])
    last = load_checkpoint(moved / "checkpoints" / "last.pt")
    assert [(f["start"], f["stop"]) for f in last["class_shards"]["files"]] == [(0, 14), (14, 27), (27, 40)]
