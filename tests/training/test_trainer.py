"""The trainer on real faces: it learns, resumes exactly, stops cleanly, refuses NaN, runs bf16,
matches a two-process gloo run, and its checkpoints evaluate with the LFW protocol."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from data_prep.pack import PackConfig, pack_aligned
from faceverify.cli import main
from faceverify.config import load_config
from faceverify.training.checkpoint import CheckpointError, load_checkpoint
from faceverify.training.config import TrainConfig
from faceverify.training.logging import read_metrics
from faceverify.training.build import lr_factor
from faceverify.training.nan_guard import NonFiniteLossError
from faceverify.training.resume import ResumeMismatchError
from faceverify.training.trainer import Trainer, train
from tests.training.conftest import small_config

REPO = Path(__file__).resolve().parents[2]


def test_overfits_the_40_att_identities_in_150_steps(att_packed: Path, tmp_path: Path):
    config = small_config(att_packed, tmp_path / "run", optim={"max_iters": 150, "milestones": [100], "lr": 0.03},
                          loss={"terms": {"softmax": 1.0, "center": 0.003}})
    result = train(config)
    assert result.step == 150 and result.train_accuracy >= 0.95, result  # a bound on steps, not on seconds
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
    common = dict(deterministic=True, checkpoint_every=4, log_every=4, loss={"terms": {"softmax": 1.0, "center": 0.01}})
    config = small_config(att_packed, tmp_path / "nan", **common)

    def poison(trainer: Trainer) -> None:
        if trainer.state.step == 5:  # after step 5: step 6 is the first non-finite one
            trainer.objective.losses["center"].centers.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match=r"step 6: center = nan.*last checkpoint .*step 4\), which is intact"):
        train(config, callbacks=[poison])
    # nothing past the last good state was saved: last.pt is bit for bit a clean run's step 4,
    # and no log row of a poisoned step was written
    state = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.pt")
    assert state["train_state"]["step"] == 4
    train(small_config(att_packed, tmp_path / "clean", **{**common, "optim": {"max_iters": 4, "milestones": [100]}}))
    clean = load_checkpoint(tmp_path / "clean" / "checkpoints" / "last.pt")
    for part in ("model", "objective"):
        for key in clean[part]:
            assert torch.equal(state[part][key], clean[part][key]), f"{part}.{key} differs"
    assert [r["step"] for r in read_metrics(tmp_path / "nan" / "metrics.jsonl")] == [4]
    assert not (tmp_path / "nan" / "summary.json").exists()


def test_no_host_synchronisation_per_step(att_packed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Reading a tensor's value (item, float, bool, tolist, numpy, cpu) waits for the device; the
    number of such reads must not grow with the number of steps between log steps."""
    reads = {"n": 0}
    for name in ("item", "__float__", "__int__", "__bool__", "tolist", "numpy", "cpu"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            reads["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    counts = {}
    for steps in (5, 15):  # P = 2 identities of 40 per batch: 20 batches, both runs inside one epoch
        trainer = Trainer(small_config(att_packed, tmp_path / f"s{steps}", log_every=1000, checkpoint_every=1000,
                                       optim={"max_iters": steps, "milestones": [100]},
                                       data={"batch_size": 8, "k": 4, "sampler": "pk"},
                                       loss={"terms": {"softmax": 1.0, "center": 0.01, "triplet": 0.5}}))
        trainer.save = lambda name="last.pt": trainer.check_finite()  # no checkpoint file: count the loop alone
        before = reads["n"]
        trainer.fit()
        counts[steps] = reads["n"] - before
    assert counts[15] == counts[5], counts


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


def test_fp16_on_the_cpu_is_warned(att_packed: Path, tmp_path: Path, capsys):
    train(small_config(att_packed, tmp_path / "fp16", amp="fp16", optim={"max_iters": 1, "milestones": [100]}))
    assert "amp=fp16 on the CPU runs float16 arithmetic the CPU emulates" in capsys.readouterr().err
    train(small_config(att_packed, tmp_path / "bf16", amp="bf16", optim={"max_iters": 1, "milestones": [100]}))
    assert "warning" not in capsys.readouterr().err


def test_sigterm_mid_run_leaves_a_loadable_checkpoint_and_the_rerun_resumes(att_packed: Path, tmp_path: Path):
    out = tmp_path / "term"
    args = [sys.executable, "-m", "faceverify.cli", "train", f"out={out}", f"data.source={att_packed}",
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
    resumed = subprocess.run([a if not a.startswith("optim.max_iters=") else f"optim.max_iters={stopped_at + 2}"
                              for a in args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"finished at step {stopped_at + 2}" in resumed.stdout
    steps = [r["step"] for r in read_metrics(metrics)]
    assert steps == list(range(1, stopped_at + 3))  # one row per step across the stop


def test_resuming_with_another_loss_is_refused(att_packed: Path, tmp_path: Path):
    train(small_config(att_packed, tmp_path / "r", optim={"max_iters": 2, "milestones": [100]}))
    with pytest.raises(ResumeMismatchError, match=r"loss\.terms\.cosface: \(absent\) -> 1\.0"):
        Trainer(small_config(att_packed, tmp_path / "r", loss={"terms": {"cosface": 1.0}}))


def test_a_changed_learning_rate_is_refused_and_nothing_is_rewritten(att_packed: Path, tmp_path: Path):
    out = tmp_path / "lr"
    args = ["train", f"out={out}", f"data.source={att_packed}", "model.backbone=sphere20", "model.width=0.25",
            "model.embedding_dim=64", "data.batch_size=40", "data.workers=0", "optim.lr=0.01",
            "optim.max_iters=6", "progress=false", "tensorboard=false"]
    assert main(args) == 0
    before = {name: (out / name).read_bytes() for name in ("config.yaml", "checkpoints/last.pt")}
    for extra in (["optim.lr=0.5"], ["optim.lr=0.5", "optim.max_iters=8"]):
        with pytest.raises(ResumeMismatchError, match=r"(?s)optim\.lr: 0\.01 -> 0\.5.*--restart"):
            train(load_config(TrainConfig, None, args[1:] + extra))
        assert main(args + extra) == 2  # the CLI: one line, exit 2
    assert {name: (out / name).read_bytes() for name in before} == before
    assert load_checkpoint(out / "checkpoints" / "last.pt")["config"]["optim"]["lr"] == 0.01


def test_resume_accepts_neutral_keys_and_more_iterations(att_packed: Path, tmp_path: Path):
    out = tmp_path / "more"
    base = dict(deterministic=True, optim={"max_iters": 6, "milestones": [100]})
    train(small_config(att_packed, out, **base))
    resumed = train(small_config(att_packed, out, **{**base, "optim": {"max_iters": 9, "milestones": [100]}},
                                 log_every=1, progress=False, data={"workers": 0, "pin_memory": False}))
    assert resumed.step == 9
    cosine = {**base, "optim": {"max_iters": 6, "milestones": [100], "schedule": "cosine"}}
    train(small_config(att_packed, tmp_path / "cos", **cosine))
    with pytest.raises(ResumeMismatchError, match=r"optim\.max_iters: 6 -> 9 \(the cosine schedule depends on it\)"):
        Trainer(small_config(att_packed, tmp_path / "cos", **{**cosine, "optim": {**cosine["optim"], "max_iters": 9}}))
    with pytest.raises(ResumeMismatchError, match=r"optim\.max_iters: 9 -> 3 \(the run is already at step 9\)"):
        Trainer(small_config(att_packed, out, **{**base, "optim": {"max_iters": 3, "milestones": [100]}}))


def test_restart_moves_the_old_run_aside(att_packed: Path, tmp_path: Path):
    out = tmp_path / "again"
    args = ["train", f"out={out}", f"data.source={att_packed}", "model.backbone=sphere20", "model.width=0.25",
            "model.embedding_dim=64", "data.batch_size=40", "data.workers=0", "optim.lr=0.01",
            "optim.max_iters=3", "progress=false", "tensorboard=false"]
    assert main(args) == 0
    assert main(args + ["optim.lr=0.02", "--restart"]) == 0
    moved = sorted(tmp_path.glob("again.old-*"))
    assert len(moved) == 1
    assert load_checkpoint(moved[0] / "checkpoints" / "last.pt")["config"]["optim"]["lr"] == 0.01
    assert load_checkpoint(out / "checkpoints" / "last.pt")["config"]["optim"]["lr"] == 0.02
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [3]


def test_resuming_on_other_data_is_refused_clearly(att_packed: Path, faces_dir: Path, tmp_path: Path):
    train(small_config(att_packed, tmp_path / "d", optim={"max_iters": 2, "milestones": [100]}))
    fewer = tmp_path / "fewer"
    pack_aligned(faces_dir / "att_faces", fewer, PackConfig(size="56x48"), identities={f"s{i}" for i in range(1, 31)},
                 progress=False)
    with pytest.raises(ResumeMismatchError, match=r"(?s)data: 400 images of 40 identities.*-> 300 images of 30 identities"):
        Trainer(small_config(att_packed, tmp_path / "d", data={"source": str(fewer)}))


def test_a_killed_run_keeps_one_metrics_row_per_step(att_packed: Path, tmp_path: Path):
    out = tmp_path / "killed"
    config = small_config(att_packed, out, log_every=1, checkpoint_every=4, optim={"max_iters": 8, "milestones": [100]})

    def kill(trainer: Trainer) -> None:
        if trainer.state.step == 6:
            raise KeyboardInterrupt  # like a kill: no final checkpoint

    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[kill])
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    assert train(config).step == 8
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, 9))


def test_a_full_disk_while_checkpointing_keeps_last_pt(att_packed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "full"
    config = small_config(att_packed, out, checkpoint_every=2, optim={"max_iters": 6, "milestones": [100]})
    real_save = torch.save
    calls = {"n": 0}

    def save_until_full(obj, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            handle.write(b"partial bytes")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_full)
    with pytest.raises(CheckpointError, match="No space left on device; the previous last.pt is intact"):
        train(config)
    assert load_checkpoint(out / "checkpoints" / "last.pt")["train_state"]["step"] == 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.pt"]


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
    overrides = [f"data.source={att_packed}", "model.backbone=face_resnet27", "model.width=0.125",
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


@pytest.mark.slow
def test_two_gloo_processes_checking_a_bin_set_keep_best_without_hanging(att_packed: Path, tmp_path: Path):
    """best.pt is saved by the rank whose check improved (the main one) alone: saving it must not wait
    on a collective the other rank never joins (the skipped-record merge is done at last.pt only)."""
    from faceverify.data.binsets import write_bin
    from faceverify.data.packed import PackedFaces

    packed = PackedFaces(att_packed)  # 10 crops per person, in order
    images, same = [], []
    for p in range(20):  # matched pairs of person p, mismatched ones of p and p + 1
        images += [packed[10 * p][0].numpy(), packed[10 * p + 1 if p % 2 == 0 else 10 * (p + 1) + 2][0].numpy()]
        same.append(p % 2 == 0)
    write_bin(tmp_path / "att.bin", images, same, encoding="png")
    overrides = [f"data.source={att_packed}", "model.backbone=sphere20", "model.width=0.125",
                 "model.embedding_dim=32", "data.batch_size=40", "data.workers=0", "optim.max_iters=12",
                 "optim.lr=0.05", "progress=false", "tensorboard=false", "log_every=2", "eval.every=2",
                 f"eval.bins=[{tmp_path / 'att.bin'}]", "eval.best=att", "deterministic=true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29537", "-m", "faceverify.cli", "train", f"out={tmp_path / 'run'}",
                          *overrides], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "eval/accuracy" in r]
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12]
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["train_state"]["best_accuracy"] == max(r["eval/accuracy"] for r in rows)
    assert best["train_state"]["best_step"] > 2  # a later check improved: the main rank saved best.pt alone
