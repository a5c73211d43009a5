"""``faceverify eval --embeddings``: outputs, options and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from faceverify.cli import main
from faceverify.data.lfw import identity_of_key, read_pairs

REQUIRED_KEYS = {
    "accuracy", "accuracy_std", "fold_accuracies", "fold_thresholds", "auc", "eer", "tar_at_far",
    "recall_at_k", "n_pairs", "metric", "flip", "pca",
}


def clustered_embeddings(keys: list[str], dim: int = 32, noise: float = 0.6, seed: int = 0):
    """One random direction per identity plus per-image noise: separable but not perfectly."""
    rng = np.random.default_rng(seed)
    identities = sorted({identity_of_key(k) for k in keys})
    centers = {name: rng.normal(size=dim) for name in identities}
    plain = np.stack([centers[identity_of_key(k)] + noise * rng.normal(size=dim) for k in keys])
    flipped = plain + 0.1 * noise * rng.normal(size=plain.shape)
    return plain.astype(np.float32), flipped.astype(np.float32)


def write_npz(path: Path, keys: list[str], with_flip: bool = True, ext: str = ".jpg") -> Path:
    plain, flipped = clustered_embeddings(keys)
    arrays = {"paths": np.array([k + ext for k in keys]), "embeddings": plain}
    if with_flip:
        arrays["embeddings_flip"] = flipped
    np.savez(path, **arrays)
    return path


def test_eval_on_real_view2_pairs_writes_every_output(tmp_path: Path, lfw_dir: Path):
    pairs = read_pairs(lfw_dir / "pairs.txt")
    emb = write_npz(tmp_path / "emb.npz", pairs.keys)
    out = tmp_path / "out"
    code = main(["eval", "--embeddings", str(emb), "--pairs", str(lfw_dir / "pairs.txt"),
                 "--out", str(out), "--flip", "concat", "--pca", "16"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert REQUIRED_KEYS <= set(metrics)
    assert metrics["n_pairs"] == 6000 and len(metrics["fold_accuracies"]) == 10
    assert len(metrics["fold_thresholds"]) == 10
    assert set(metrics["tar_at_far"]) == {"0.001", "0.01"}
    assert set(metrics["recall_at_k"]) >= {"1", "5", "10"}
    assert metrics["flip"] == "concat" and metrics["pca"] == 16 and metrics["metric"] == "cosine"
    assert 0.9 < metrics["accuracy"] <= 1.0
    assert (out / "roc.png").stat().st_size > 1000
    assert "accuracy" in (out / "report.md").read_text()
    assert "pca: 16" in (out / "config.yaml").read_text()


def small_pairs(tmp_path: Path) -> tuple[Path, list[str]]:
    lines = ["3\t4"]
    keys = []
    for fold in range(3):
        for i in range(4):
            name = f"P{fold}{i}"
            lines.append(f"{name}\t1\t2")
            keys += [f"{name}/{name}_0001", f"{name}/{name}_0002"]
        for i in range(4):
            a, b = f"P{fold}{i}", f"P{fold}{(i + 1) % 4}"
            lines.append(f"{a}\t1\t{b}\t2")
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, list(dict.fromkeys(keys))


@pytest.mark.parametrize("flip", ["none", "sum", "concat"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_eval_options_without_shared_data(tmp_path: Path, flip: str, metric: str):
    pairs_path, keys = small_pairs(tmp_path)
    emb = write_npz(tmp_path / "emb.npz", keys, ext=".png")
    out = tmp_path / "out"
    assert main(["eval", "--embeddings", str(emb), "--pairs", str(pairs_path), "--out", str(out),
                 "--flip", flip, "--metric", metric, "subtract_mean=true"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_pairs"] == 24 and metrics["flip"] == flip and metrics["metric"] == metric
    assert metrics["subtract_mean"] is True


def test_flip_without_flip_embeddings_is_an_error(tmp_path: Path, capsys):
    pairs_path, keys = small_pairs(tmp_path)
    emb = write_npz(tmp_path / "emb.npz", keys, with_flip=False)
    code = main(["eval", "--embeddings", str(emb), "--pairs", str(pairs_path), "--out",
                 str(tmp_path / "o"), "--flip", "concat"])
    assert code == 2
    assert "embeddings_flip" in capsys.readouterr().err


def test_missing_embeddings_are_reported(tmp_path: Path, capsys):
    pairs_path, keys = small_pairs(tmp_path)
    emb = write_npz(tmp_path / "emb.npz", keys[:-3])
    code = main(["eval", "--embeddings", str(emb), "--pairs", str(pairs_path), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "3 image(s)" in err and "P23/P23_0002" in err


def test_unknown_override_lists_valid_keys(tmp_path: Path, capsys):
    pairs_path, keys = small_pairs(tmp_path)
    emb = write_npz(tmp_path / "emb.npz", keys)
    code = main(["eval", "--embeddings", str(emb), "--pairs", str(pairs_path), "--out",
                 str(tmp_path / "o"), "pcaa=3"])
    assert code == 2
    assert "valid keys here: metric, flip, pca" in capsys.readouterr().err
