"""The trainer on real faces: it learns, resumes exactly, stops cleanly, refuses NaN, runs bf16,
matches a two-process gloo run, and its checkpoints evaluate with the LFW protocol."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from faceverify.cli import main
from faceverify.training.checkpoint import load_checkpoint
from faceverify.training.logging import read_metrics
from faceverify.training.trainer import NonFiniteLossError, Trainer, lr_factor, train
from tests.training.conftest import small_config

REPO = Path(__file__).resolve().parents[2]


def test_overfits_the_40_att_identities_within_a_minute(att_packed: Path, tmp_path: Path):
    started = time.perf_counter()
    config = small_config(att_packed, tmp_path / "run", optim={"max_iters": 150, "milestones": [100], "lr": 0.03},
                          loss={"terms": {"softmax": 1.0, "center": 0.003}})
    result = train(config)
    elapsed = time.perf_counter() - started
    assert result.train_accuracy >= 0.95, result
    assert elapsed < 60, f"took {elapsed:.0f} s"
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert records[-1]["step"] == 150 and "loss/center" in records[-1] and records[-1]["lr"] == pytest.approx(0.003)
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "run" / "commit.txt").is_file()


def test_2n_steps_equal_n_steps_then_resume_n_bitwise(att_packed: Path, tmp_path: Path):
    common = dict(deterministic=True, optim={"max_iters": 12, "milestones": [7]},
                  loss={"terms": {"softmax": 1.0, "center": 0.01, "triplet": 0.5}},
                  data={"batch_size": 40, "k": 4, "workers": 0})
    straight = small_config(att_packed, tmp_path / "straight", **common)
    train(straight)
    first = small_config(att_packed, tmp_path / "split", **{**common, "optim": {"max_iters": 6, "milestones": [7]}})
    train(first)
    second = small_config(att_packed, tmp_path / "split", **common)  # same out: resumes at step 6
    result = train(second)
    assert result.step == 12
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    for part in ("model", "objective"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs"
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    timing = {"seconds"}
    assert {k: v for k, v in a["train_state"].items() if k not in timing} == {
        k: v for k, v in b["train_state"].items() if k not in timing}


def test_an_injected_nan_stops_the_run_naming_step_and_term(att_packed: Path, tmp_path: Path):
    config = small_config(att_packed, tmp_path / "nan", checkpoint_every=2,
                          loss={"terms": {"softmax": 1.0, "center": 0.01}})

    def poison(trainer: Trainer) -> None:
        if trainer.state.step == 3:
            trainer.objective.losses["center"].centers.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match=r"step 4: center = nan.*step 2\) is intact"):
        train(config, callbacks=[poison])
    state = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.pt")
    assert state["train_state"]["step"] == 2
    assert torch.isfinite(state["objective"]["losses.center.centers"]).all()


def test_bf16_autocast_and_channels_last_on_cpu(att_packed: Path, tmp_path: Path):
    config = small_config(att_packed, tmp_path / "bf16", amp="bf16", channels_last=True,
                          optim={"max_iters": 4, "milestones": [100]})
    trainer = Trainer(config)
    seen = {}
    def record(module, inputs, output) -> None:
        seen["dtype"] = output.dtype

    trainer.backbone.register_forward_hook(record)
    result = trainer.fit()
    assert seen["dtype"] == torch.bfloat16
    assert result.step == 4 and all(v == v for v in result.last_values.values())  # finite, not NaN


def test_sigterm_mid_run_leaves_a_loadable_checkpoint_and_the_rerun_resumes(att_packed: Path, tmp_path: Path):
    out = tmp_path / "term"
    args = [sys.executable, "-m", "faceverify.cli", "train", f"out={out}", f"data.packed={att_packed}",
            "model.backbone=sphere20", "model.width=0.25", "model.embedding_dim=64", "data.batch_size=40",
            "data.workers=0", "optim.lr=0.01", "optim.max_iters=100000", "log_every=1", "progress=false",
            "tensorboard=false"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "stopped by signal" in stdout
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    stopped_at = state["train_state"]["step"]
    assert 3 <= stopped_at < 100000
    resumed = subprocess.run(args[:-5] + ["optim.max_iters=" + str(stopped_at + 2), "log_every=1",
                                          "progress=false", "tensorboard=false"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"finished at step {stopped_at + 2}" in resumed.stdout


def test_resuming_with_another_loss_is_refused(att_packed: Path, tmp_path: Path):
    train(small_config(att_packed, tmp_path / "r", optim={"max_iters": 2, "milestones": [100]}))
    with pytest.raises(ValueError, match="different model or loss"):
        Trainer(small_config(att_packed, tmp_path / "r", loss={"terms": {"cosface": 1.0}}))


def test_learning_rate_schedules():
    config = small_config(Path("x"), Path("y"), optim={"milestones": [10, 20], "gamma": 0.1, "warmup_iters": 5,
                                                      "warmup_factor": 0.2, "max_iters": 30})
    assert lr_factor(0, config) == pytest.approx(0.2)
    assert lr_factor(5, config) == 1.0 and lr_factor(10, config) == pytest.approx(0.1)
    assert lr_factor(25, config) == pytest.approx(0.01)
    cosine = small_config(Path("x"), Path("y"), optim={"schedule": "cosine", "max_iters": 100})
    assert lr_factor(50, cosine) == pytest.approx(0.5) and lr_factor(100, cosine) == pytest.approx(0.0)


def test_periodic_lfw_check_keeps_the_best_and_checkpoint_evaluates(att_packed: Path, att_as_lfw, tmp_path: Path):
    tree, pairs = att_as_lfw
    out = tmp_path / "evalrun"
    config = small_config(att_packed, out, optim={"max_iters": 60, "milestones": [100]},
                          eval={"every": 20, "lfw": str(tree), "pairs": str(pairs), "flip": "concat"})
    result = train(config)
    records = [r for r in read_metrics(out / "metrics.jsonl") if "eval/accuracy" in r]
    assert [r["step"] for r in records] == [20, 40, 60]
    assert result.best_accuracy == max(r["eval/accuracy"] for r in records)
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    assert best["train_state"]["best_accuracy"] == result.best_accuracy
    eval_out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--lfw", str(tree),
                 "--pairs", str(pairs), "--out", str(eval_out), "--flip", "concat", "--device", "cpu"]) == 0
    metrics = json.loads((eval_out / "metrics.json").read_text())
    assert metrics["n_pairs"] == 80 and metrics["n_folds"] == 2 and metrics["flip"] == "concat"
    assert metrics["accuracy"] > 0.6  # 40 people seen in training: far above chance after 60 steps
    assert (eval_out / "roc.png").is_file() and metrics["source"]["checkpoint"].endswith("last.pt")


@pytest.mark.slow
def test_two_process_gloo_torchrun_matches_one_process(att_packed: Path, tmp_path: Path):
    overrides = [f"data.packed={att_packed}", "model.backbone=face_resnet27", "model.width=0.125",
                 "model.embedding_dim=32", "data.batch_size=40", "data.k=4", "data.workers=0",
                 "optim.max_iters=4", "optim.lr=0.01", "progress=false", "tensorboard=false",
                 "loss.terms={softmax: 1.0, center: 0.01}", "deterministic=true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "faceverify.cli", "train", f"out={tmp_path / 'one'}", *overrides],
                         cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29533", "-m", "faceverify.cli", "train", f"out={tmp_path / 'two'}",
                          *overrides], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr
    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    for part in ("model", "objective"):
        for key in a[part]:
            torch.testing.assert_close(b[part][key], a[part][key], rtol=1e-4, atol=1e-5, msg=f"{part}.{key}")
