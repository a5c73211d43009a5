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

from data_prep.detect import FaceDetector, choose_face
from faceverify.cli import main
from faceverify.data.images import read_rgb
from faceverify.training.trainer import train
from tests.evaluation.ijb_folder import IJBSpec, write_ijb
from tests.training.conftest import small_config


@pytest.fixture(scope="module")
def release(mini_lfw, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ijb") / "IJBC"
    (root / "loose_crop").mkdir(parents=True)
    photos = [(s, p) for s, name in enumerate(mini_lfw.train_people) for p in sorted((mini_lfw.train_tree / name).iterdir())]
    detector = FaceDetector("cpu")
    images, landmarks, template_of = [], {}, {}
    found = detector.detect([read_rgb(p) for _, p in photos])
    for index, ((subject, path), detections) in enumerate(zip(photos, found)):
        name = f"{index + 1}.jpg"
        shutil.copy(path, root / "loose_crop" / name)
        chosen = choose_face(detections, (250, 250), "center")
        landmarks[name] = (detections.landmarks[chosen], float(detections.scores[chosen]))
        k = index % 6  # a subject's photos 0 | 1 2 | 3 4 5 -> templates of 1, 2 and 3 photos
        slot = 0 if k == 0 else (1 if k < 3 else 2)
        template = 100 * subject + slot + 1
        media = 1000 * template + (0 if k in (3, 4) else k)  # photos 3 and 4: one media (frames of a video)
        images.append((name, template, media))
        template_of[template] = subject
    ids = sorted(template_of)
    pairs = [(a, b, int(template_of[a] == template_of[b])) for i, a in enumerate(ids) for b in ids[i + 1:]]
    first = [t for t in ids if t % 100 == 1]
    galleries = {"G1": [(t, template_of[t], "x.jpg") for t in first if template_of[t] < 6],
                 "G2": [(t, template_of[t], "x.jpg") for t in first if template_of[t] >= 6]}
    probes = [(t, template_of[t], "x.jpg") for t in ids if t % 100 != 1]
    return write_ijb(root, IJBSpec(images, landmarks, pairs, galleries, probes))


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
