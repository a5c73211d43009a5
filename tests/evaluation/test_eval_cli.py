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


# ----------------------------------------------------------------------------- bad input
def one_line_error(capsys, fragment: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("faceverify eval: error:"), err
    assert fragment in err, err
    return err


@pytest.mark.parametrize("folds,fragment", [("1,11", "fold(s) 11 do not exist; the pairs file has folds 1..3"),
                                            ("1,1", "fold(s) 1 given more than once"),
                                            ("0", "fold(s) 0 do not exist"), ("a", "comma-separated")])
def test_out_of_range_or_repeated_folds_are_errors(tmp_path: Path, capsys, folds: str, fragment: str):
    pairs_path, keys = small_pairs(tmp_path)
    emb = write_npz(tmp_path / "emb.npz", keys)
    assert main(["eval", "--embeddings", str(emb), "--pairs", str(pairs_path), "--out", str(tmp_path / "o"),
                 "--folds", folds]) == 2
    one_line_error(capsys, fragment)
    assert not (tmp_path / "o").exists()


def test_one_fold_is_scored_with_the_threshold_of_the_other_folds(tmp_path: Path, lfw_dir: Path):
    """``--folds 1`` reports fold 1 exactly as the full 10-fold run does: its threshold comes from
    folds 2..10, never from fold 1 itself (the leak the old subset semantics had)."""
    pairs = read_pairs(lfw_dir / "pairs.txt")
    emb = write_npz(tmp_path / "emb.npz", pairs.keys)
    assert main(["eval", "--embeddings", str(emb), "--pairs", str(lfw_dir / "pairs.txt"), "--out",
                 str(tmp_path / "all")]) == 0
    assert main(["eval", "--embeddings", str(emb), "--pairs", str(lfw_dir / "pairs.txt"), "--out",
                 str(tmp_path / "one"), "--folds", "1"]) == 0
    full = json.loads((tmp_path / "all" / "metrics.json").read_text())
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert one["folds"] == [1] and one["n_pairs"] == 600 and one["threshold_selection"] == "other folds"
    assert one["fold_thresholds"] == [full["fold_thresholds"][0]]
    assert one["accuracy"] == full["fold_accuracies"][0]
    # the threshold fitted on fold 1 itself would score at least as well there: it is a different number
    from faceverify.evaluation.verification import best_threshold, pair_similarity

    data = np.load(emb)
    row = {k: i for i, k in enumerate(pairs.keys)}
    first = pairs.fold == 0
    scores = pair_similarity(data["embeddings"][[row[k] for k in np.array(pairs.keys_a)[first]]],
                             data["embeddings"][[row[k] for k in np.array(pairs.keys_b)[first]]], "cosine")
    own_threshold, own_accuracy = best_threshold(scores, pairs.same[first])
    assert own_threshold != one["fold_thresholds"][0] and own_accuracy >= one["accuracy"]


def test_a_key_present_twice_is_an_error_naming_it(tmp_path: Path, capsys):
    pairs_path, keys = small_pairs(tmp_path)
    plain, flipped = clustered_embeddings(keys + [keys[0]])
    paths = [k + ".jpg" for k in keys] + [keys[0] + ".png"]
    np.savez(tmp_path / "emb.npz", paths=np.array(paths), embeddings=plain, embeddings_flip=flipped)
    assert main(["eval", "--embeddings", str(tmp_path / "emb.npz"), "--pairs", str(pairs_path), "--out",
                 str(tmp_path / "o")]) == 2
    one_line_error(capsys, f"two rows are the same image '{keys[0]}'")


def test_nan_in_flip_embeddings_is_an_error(tmp_path: Path, capsys):
    pairs_path, keys = small_pairs(tmp_path)
    plain, flipped = clustered_embeddings(keys)
    flipped[5, 3] = np.nan
    np.savez(tmp_path / "emb.npz", paths=np.array([k + ".jpg" for k in keys]), embeddings=plain,
             embeddings_flip=flipped)
    assert main(["eval", "--embeddings", str(tmp_path / "emb.npz"), "--pairs", str(pairs_path), "--out",
                 str(tmp_path / "o"), "--flip", "concat"]) == 2
    one_line_error(capsys, f"1 embeddings_flip row(s) contain NaN or inf (first: row 5, {keys[5]})")


def test_paths_stored_as_bytes_are_decoded(tmp_path: Path):
    pairs_path, keys = small_pairs(tmp_path)
    plain, _ = clustered_embeddings(keys)
    np.savez(tmp_path / "bytes.npz", paths=np.array([(k + ".jpg").encode() for k in keys]), embeddings=plain)
    np.savez(tmp_path / "text.npz", paths=np.array([k + ".jpg" for k in keys]), embeddings=plain)
    for name in ("bytes", "text"):
        assert main(["eval", "--embeddings", str(tmp_path / f"{name}.npz"), "--pairs", str(pairs_path),
                     "--out", str(tmp_path / name)]) == 0
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("bytes", "text"))
    assert a["accuracy"] == b["accuracy"] and a["fold_thresholds"] == b["fold_thresholds"]


@pytest.mark.parametrize("content,fragment", [(b"", "is empty (0 bytes)"), (b"PK\x03\x04 not a zip", "cannot read"),
                                              (None, "Object arrays cannot be loaded")])
def test_empty_truncated_or_pickled_npz_is_one_line(tmp_path: Path, capsys, content, fragment: str):
    pairs_path, keys = small_pairs(tmp_path)
    path = tmp_path / "bad.npz"
    if content is None:
        np.savez(path, paths=np.array([{"a": 1}] * len(keys), dtype=object), embeddings=np.zeros((len(keys), 4)))
    else:
        path.write_bytes(content)
    assert main(["eval", "--embeddings", str(path), "--pairs", str(pairs_path), "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys, fragment)


def test_read_only_out_is_one_line_and_writes_nothing(tmp_path: Path):
    from tests.unprivileged import make_read_only, run_cli

    pairs_path, keys = small_pairs(tmp_path)
    emb = write_npz(tmp_path / "emb.npz", keys)
    locked = tmp_path / "locked"
    make_read_only(locked)
    try:
        done = run_cli(["eval", "--embeddings", str(emb), "--pairs", str(pairs_path), "--out", str(locked / "o")],
                       cwd=Path(__file__).resolve().parents[2])
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "--out" in done.stderr and "not writable" in done.stderr
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def _bin_and_embeddings(tmp_path: Path, name: str, same: list[bool], seed: int = 0) -> tuple[Path, Path]:
    from faceverify.data.binsets import write_bin

    images = [np.full((8, 8, 3), 10 * i, np.uint8) for i in range(2 * len(same))]
    path = write_bin(tmp_path / f"{name}.bin", images, same, encoding="png")
    rng = np.random.default_rng(seed)
    emb = tmp_path / f"{name}.npz"
    np.savez(emb, paths=np.array([f"{name}/{i:06d}" for i in range(len(images))]),
             embeddings=rng.normal(size=(len(images), 8)).astype(np.float32))
    return path, emb


def test_a_set_without_mismatched_pairs_scores_accuracy_and_names_what_is_undefined(tmp_path: Path, capsys):
    path, emb = _bin_and_embeddings(tmp_path, "allsame", [True, True, True])
    assert main(["eval", "--embeddings", str(emb), "--bin", str(path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| allsame | 3 | 3 | 100.00 | 0.00 | undefined | undefined |" in out
    assert "allsame: AUC, EER and TAR@FAR are undefined: the pairs hold no mismatched" in out
    metrics = json.loads((tmp_path / "out" / "allsame" / "metrics.json").read_text())
    assert metrics["accuracy"] == 1.0 and metrics["auc"] is None and "undefined" in metrics
    assert "undefined" in (tmp_path / "out" / "benchmarks.md").read_text()


def test_every_set_is_checked_before_any_is_scored(tmp_path: Path, capsys):
    good, emb = _bin_and_embeddings(tmp_path, "good", [True, False, True, False])
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a pickle")
    assert main(["eval", "--embeddings", str(emb), "--bin", str(good), str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.bin is not a readable verification set" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # good.bin was not scored and written first
    folder = tmp_path / "sets"
    folder.mkdir()
    assert main(["eval", "--embeddings", str(emb), "--bin", str(folder), "--out", str(tmp_path / "o")]) == 2
    assert "is a folder; give the .bin files in it" in capsys.readouterr().err


def test_an_image_whose_embedding_failed_is_named_with_its_status(tmp_path: Path, capsys):
    path, emb = _bin_and_embeddings(tmp_path, "set", [True, False])
    data = dict(np.load(emb))
    np.savez(emb, **data, status=np.array(["ok", "no face found", "ok", "ok"]))
    assert main(["eval", "--embeddings", str(emb), "--bin", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "first: set/000001: its row there has status 'no face found'" in capsys.readouterr().err
