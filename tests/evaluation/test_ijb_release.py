"""IJB evaluation end to end on a small IJB-format release built from real LFW photos: 12 people,
36 templates of 1-3 photos (two of a 3-photo template share a media), landmarks and detector
scores from MTCNN, every template pair, and 1:N galleries G1/G2 with a mixed probe set. Scored with
dlib, a tiny checkpoint and random embeddings; killed and resumed; with a missing image."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from faceverify.cli import main
from faceverify.training.trainer import train
from tests.training.conftest import small_config


@pytest.fixture(scope="module")
def release(ijb_release: Path) -> Path:
    return ijb_release


@pytest.fixture(scope="module")
def dlib_run(release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dlib") / "out"
    assert main(["eval", "--ijb", str(release), "--model", "dlib", "--out", str(out)]) == 0
    return out


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_dlib_on_the_release_scores_far_above_random(dlib_run: Path, release: Path, tmp_path: Path):
    metrics = _metrics(dlib_run)
    assert metrics["n_templates"] == 36 and metrics["n_pairs"] == 630 and metrics["n_genuine"] == 36
    assert metrics["n_images_used"] == 72 and metrics["images_left_out"] == {}
    assert metrics["test_mode"] == {"flip": "sum", "detector_score": True, "unit_norm": False,
                                    "feature_norm": "kept", "is_paper_default": True}
    assert metrics["preprocessing"]["kind"] == "dlib" and metrics["preprocessing"]["faceverify_commit"]
    assert set(metrics["tar_at_far"]) == {"1e-06", "1e-05", "1e-04", "1e-03", "1e-02", "1e-01"}
    # random embeddings of the same images: a TAR near the FAR itself
    names = np.load(dlib_run / "embeddings.npz")["paths"]
    rng = np.random.default_rng(11)
    np.savez(tmp_path / "random.npz", paths=names, embeddings=rng.normal(size=(len(names), 128)),
             embeddings_flip=rng.normal(size=(len(names), 128)))
    assert main(["eval", "--ijb", str(release), "--embeddings", str(tmp_path / "random.npz"),
                 "--out", str(tmp_path / "random")]) == 0
    chance = _metrics(tmp_path / "random")
    assert metrics["tar_at_far"]["1e-02"] > 0.6 > 0.2 > chance["tar_at_far"]["1e-02"]
    ident = metrics["identification"]
    assert set(ident) == {"G1", "G2", "mean"}
    assert ident["G1"]["n_mated"] == 12 and ident["G1"]["n_nonmated"] == 12  # G2's subjects' probes
    assert ident["mean"]["rank_1"] > 0.8 > chance["identification"]["mean"]["rank_1"]
    assert (dlib_run / "roc.png").stat().st_size > 0 and "insightface" in (dlib_run / "report.md").read_text()


def test_the_written_embeddings_score_the_same_when_given_back(dlib_run: Path, release: Path, tmp_path: Path):
    assert main(["eval", "--ijb", str(release), "--embeddings", str(dlib_run / "embeddings.npz"),
                 "--out", str(tmp_path / "again")]) == 0
    again, first = _metrics(tmp_path / "again"), _metrics(dlib_run)
    assert again["tar_at_far"] == first["tar_at_far"] and again["identification"] == first["identification"]
    assert again["preprocessing"]["alignment"].startswith("not known")


@pytest.fixture(scope="module")
def tiny_checkpoint(att_packed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ijb_model") / "run"
    train(small_config(att_packed, out, optim={"max_iters": 10, "milestones": [100], "lr": 0.03}))
    return out / "checkpoints" / "last.pt"


def test_a_checkpoint_is_killed_resumed_and_switched_to_other_test_modes(release: Path, tiny_checkpoint: Path,
                                                                       tmp_path: Path, monkeypatch):
    import faceverify.evaluation.ijb_embed as ijb_embed

    args = ["eval", "--ijb", str(release), "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--chunk", "20"]
    real, calls = ijb_embed._read_and_align, {"n": 0}

    def dying(path, landmarks, align):
        calls["n"] += 1
        if calls["n"] == 45:  # in the third chunk
            raise KeyboardInterrupt
        return real(path, landmarks, align)

    monkeypatch.setattr(ijb_embed, "_read_and_align", dying)
    with pytest.raises(KeyboardInterrupt):
        main(args + ["--out", str(tmp_path / "a")])
    assert len(list((tmp_path / "a").glob("embeddings.npz.partial/chunk-*.npz"))) == 2
    monkeypatch.setattr(ijb_embed, "_read_and_align", real)
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    a, b = np.load(tmp_path / "a" / "embeddings.npz"), np.load(tmp_path / "b" / "embeddings.npz")
    np.testing.assert_array_equal(a["embeddings"], b["embeddings"])
    assert _metrics(tmp_path / "a")["embed"]["resumed_from"] == 40
    pre = _metrics(tmp_path / "a")["preprocessing"]
    assert pre["template"] == "112x96" and pre["input_size"] == [56, 48] and pre["normalisation"] == "(p - 127.5) / 128"
    assert main(["eval", "--ijb", str(release), "--embeddings", str(tmp_path / "a" / "embeddings.npz"), "--flip",
                 "none", "--no-detector-score", "--unit-norm", "--out", str(tmp_path / "c")]) == 0
    mode = _metrics(tmp_path / "c")["test_mode"]
    assert mode == {"flip": "none", "detector_score": False, "unit_norm": True, "feature_norm": "unit",
                    "is_paper_default": False}


def test_a_missing_image_is_left_out_and_named(release: Path, tmp_path: Path):
    copy = tmp_path / "IJBC"
    shutil.copytree(release, copy)
    (copy / "loose_crop" / "3.jpg").unlink()  # one photo of a 2-photo template
    (copy / "loose_crop" / "5.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    assert main(["eval", "--ijb", str(copy), "--model", "dlib", "--out", str(tmp_path / "out")]) == 0
    metrics = _metrics(tmp_path / "out")
    assert metrics["images_left_out"]["3.jpg"] == "missing file"
    assert metrics["images_left_out"]["5.jpg"].startswith("unreadable")
    assert metrics["n_images_used"] == 70 and metrics["n_pairs"] == 630


def test_training_checks_the_ijb_release_and_keeps_best_on_its_tar(release: Path, att_packed: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = train(small_config(att_packed, out, optim={"max_iters": 10, "milestones": [100], "lr": 0.03},
                                eval={"every": 5, "ijb": str(release), "best": "ijbc"}))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    checks = [r for r in records if "eval/ijbc/tar_at_far_1e-4" in r]
    assert [r["step"] for r in checks] == [5, 10]
    assert all(0.0 <= r["eval/ijbc/tar_at_far_1e-4"] <= 1.0 and "eval/ijbc/tar_at_far_1e-5" in r for r in checks)
    assert all(r["eval/accuracy"] == r["eval/ijbc/tar_at_far_1e-4"] for r in checks)
    assert (out / "checkpoints" / "best.pt").is_file() 
    assert result.best_accuracy == max(r["eval/ijbc/tar_at_far_1e-4"] for r in checks)
    # the check scores what `eval --ijb --checkpoint` scores for the same weights
    assert main(["eval", "--ijb", str(release), "--checkpoint", str(out / "checkpoints" / "last.pt"), "--device", "cpu",
                 "--out", str(tmp_path / "e")]) == 0
    assert _metrics(tmp_path / "e")["tar_at_far"]["1e-04"] == pytest.approx(checks[-1]["eval/ijbc/tar_at_far_1e-4"])


def test_a_damaged_ijb_release_fails_training_before_it_starts(att_packed: Path, tmp_path: Path):
    from faceverify.data.ijb import IJBFormatError

    (tmp_path / "IJBC" / "meta").mkdir(parents=True)
    (tmp_path / "IJBC" / "meta" / "ijbc_face_tid_mid.txt").write_text("1.jpg 1\n")
    for name in ("ijbc_template_pair_label.txt", "ijbc_name_5pts_score.txt"):
        (tmp_path / "IJBC" / "meta" / name).write_text("")
    with pytest.raises(IJBFormatError, match="line 1"):
        train(small_config(att_packed, tmp_path / "run", eval={"every": 5, "ijb": str(tmp_path / "IJBC")}))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
