"""``faceverify eval --bin``: an ``lfw.bin`` exported from an aligned LFW tree scores exactly as the
tree does (same folds, thresholds, accuracy), from a checkpoint and from an embeddings file; every
set lands in one table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from faceverify.cli import main
from faceverify.data.lfw import read_pairs
from faceverify.training.trainer import train
from tests.training.conftest import small_config


@pytest.fixture(scope="module")
def aligned_mini_lfw(mini_lfw, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("aligned_mini") / "lfw_112x96"
    assert main(["align", str(mini_lfw.images), str(out), "--purpose", "eval", "--device", "cpu"]) == 0
    return out


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_an_exported_lfw_bin_scores_exactly_as_the_tree(att_packed: Path, mini_lfw, aligned_mini_lfw: Path,
                                                        tmp_path: Path, capsys):
    train(small_config(att_packed, tmp_path / "run", optim={"max_iters": 6, "milestones": [100]}))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    bins = tmp_path / "bins"
    assert main(["export", "bin", str(aligned_mini_lfw), str(mini_lfw.pairs), str(bins / "lfw.bin"),
                 "--encoding", "png"]) == 0
    assert main(["eval", "--checkpoint", str(checkpoint), "--lfw", str(aligned_mini_lfw), "--pairs",
                 str(mini_lfw.pairs), "--out", str(tmp_path / "tree"), "--flip", "concat", "--device", "cpu"]) == 0
    assert main(["eval", "--checkpoint", str(checkpoint), "--bin", str(bins / "lfw.bin"), "--lfw", str(aligned_mini_lfw),
                 "--pairs", str(mini_lfw.pairs), "--out", str(tmp_path / "bin"), "--flip", "concat",
                 "--device", "cpu"]) == 0
    tree, from_bin = metrics_of(tmp_path / "tree"), metrics_of(tmp_path / "bin" / "lfw_bin")
    assert from_bin["n_folds"] == 10 and from_bin["n_pairs"] == tree["n_pairs"] == 40
    assert from_bin["fold_accuracies"] == tree["fold_accuracies"]  # the .bin's folds are pairs.txt's folds
    np.testing.assert_allclose(from_bin["fold_thresholds"], tree["fold_thresholds"], rtol=1e-6)
    assert from_bin["accuracy"] == tree["accuracy"] and from_bin["auc"] == pytest.approx(tree["auc"])
    table = (tmp_path / "bin" / "benchmarks.md").read_text()
    assert "| lfw |" in table and "| lfw_bin |" in table
    assert set(json.loads((tmp_path / "bin" / "benchmarks.json").read_text())) == {"lfw", "lfw_bin"}

    # the same set scored from an embeddings file whose paths name the .bin's images
    saved = np.load(tmp_path / "tree" / "embeddings.npz")
    row = {p.rsplit(".", 1)[0]: i for i, p in enumerate(saved["paths"].tolist())}
    pairs = read_pairs(mini_lfw.pairs)
    order = [row[k] for a, b in zip(pairs.keys_a, pairs.keys_b) for k in (a, b)]
    np.savez(tmp_path / "bin_emb.npz", paths=np.array([f"lfw/{i:06d}" for i in range(len(order))]),
             embeddings=saved["embeddings"][order], embeddings_flip=saved["embeddings_flip"][order])
    assert main(["eval", "--embeddings", str(tmp_path / "bin_emb.npz"), "--bin", str(bins / "lfw.bin"), "--out",
                 str(tmp_path / "emb"), "--flip", "concat"]) == 0
    assert metrics_of(tmp_path / "emb" / "lfw")["accuracy"] == tree["accuracy"]
    capsys.readouterr()
    assert main(["eval", "--embeddings", str(tmp_path / "bin_emb.npz"), "--bin", str(bins / "lfw.bin"), "--out",
                 str(tmp_path / "x"), "--folds", "1"]) == 2
    assert "always scored on all their folds" in capsys.readouterr().err


def test_training_checks_every_set_and_keeps_best_on_the_chosen_one(att_packed: Path, mini_lfw,
                                                                   aligned_mini_lfw: Path, tmp_path: Path):
    from faceverify.training.checkpoint import load_checkpoint
    from faceverify.training.logging import read_metrics

    bins = tmp_path / "bins"
    assert main(["export", "bin", str(aligned_mini_lfw), str(mini_lfw.pairs), str(bins / "lfw.bin")]) == 0
    (bins / "lfw.bin").rename(bins / "cfp_fp.bin")
    config = small_config(att_packed, tmp_path / "run", optim={"max_iters": 6, "milestones": [100]}, log_every=3,
                          eval={"every": 3, "lfw": str(aligned_mini_lfw), "pairs": str(mini_lfw.pairs),
                                "bins": [str(bins / "cfp_fp.bin")], "best": "cfp_fp"})
    result = train(config)
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "eval/accuracy" in r]
    assert [r["step"] for r in rows] == [3, 6]
    for r in rows:
        assert r["eval/accuracy"] == r["eval/cfp_fp/accuracy"] and "eval/lfw/accuracy" in r
        assert "loss/total" in r  # one row per step: the check's values join the step's log row
    assert result.best_accuracy == max(r["eval/cfp_fp/accuracy"] for r in rows)
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["train_state"]["best_accuracy"] == result.best_accuracy
    with pytest.raises(ValueError, match="eval.best = 'agedb_30' is none of the evaluated sets"):
        train(small_config(att_packed, tmp_path / "bad", optim={"max_iters": 3, "milestones": [100]},
                           eval={"every": 3, "bins": [str(bins / "cfp_fp.bin")], "best": "agedb_30"}))
