"""The alignment run on real photos: statuses, fallbacks, manifest, resume after a kill."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_prep.detect import FaceDetector
from data_prep.prepare import MANIFEST_COLUMNS, AlignConfig, AlignmentError, align_tree, read_manifest
from faceverify.cli import main
from faceverify.data.images import read_rgb


@pytest.fixture()
def mixed_tree(tmp_path: Path, faces_dir: Path) -> Path:
    """A small SRC/<identity>/<image> tree of real photos and deliberately bad files."""
    src = tmp_path / "src"
    samples = faces_dir / "facenet_pytorch_samples"
    for person in ("kate_siegel", "paul_rudd", "angelina_jolie"):
        (src / person).mkdir(parents=True)
        shutil.copy(samples / "test_images" / person / "1.jpg", src / person / "1.jpg")
    (src / "noise").mkdir()
    shutil.copy(samples / "test_images" / "noise" / "1.jpg", src / "noise" / "1.jpg")
    (src / "dogs").mkdir()
    shutil.copy(faces_dir / "dlib_faces" / "dogs.jpg", src / "dogs" / "dogs.jpg")
    (src / "att_s1").mkdir()
    for i in (1, 2):
        shutil.copy(faces_dir / "att_faces" / "s1" / f"{i}.pgm", src / "att_s1" / f"{i}.pgm")
    (src / "rgba").mkdir()
    shutil.copy(faces_dir / "face_recognition_samples" / "tests" / "test_images" / "32bit.png", src / "rgba")
    (src / "group").mkdir()
    shutil.copy(samples / "multiface.jpg", src / "group" / "multiface.jpg")
    bad = src / "bad"
    bad.mkdir()
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("this is not a JPEG")
    whole = (samples / "multiface.jpg").read_bytes()
    (bad / "cut.jpg").write_bytes(whole[: len(whole) // 3])
    (src / "empty").mkdir()
    (src / "notes").mkdir()
    (src / "notes" / "readme.txt").write_text("not an image")
    return src


def rows_by_src(dst: Path) -> dict[str, dict[str, str]]:
    return {r["src"]: r for r in read_manifest(dst / "manifest.csv")}


def test_training_run_records_every_image_with_a_status(mixed_tree: Path, tmp_path: Path, detector: FaceDetector):
    dst = tmp_path / "aligned"
    summary = align_tree(mixed_tree, dst, AlignConfig(purpose="train", batch_size=3), detector, progress=False)
    rows = rows_by_src(dst)
    with open(dst / "manifest.csv", newline="") as handle:
        assert next(csv.reader(handle)) == MANIFEST_COLUMNS
    assert len(rows) == 12  # every source image, none silently dropped
    for person in ("kate_siegel", "paul_rudd", "angelina_jolie"):
        row = rows[f"{person}/1.jpg"]
        assert row["status"] == "ok" and row["dst"] == f"{person}/1.png" and float(row["score"]) > 0.9
        crop = read_rgb(dst / row["dst"])
        assert crop.shape == (112, 96, 3)
    assert rows["noise/1.jpg"]["status"] == "no_face" and rows["dogs/dogs.jpg"]["status"] == "no_face"
    assert not (dst / "noise" / "1.png").exists()  # training default: skip
    for name in ("1.pgm", "2.pgm"):
        assert rows[f"att_s1/{name}"]["status"] == "ok"
        assert read_rgb(dst / "att_s1" / name.replace(".pgm", ".png")).shape == (112, 96, 3)
    assert rows["rgba/32bit.png"]["status"] == "ok"
    group = rows["group/multiface.jpg"]
    assert group["n_faces"] == "6" and "chose by center" in group["reason"]
    assert 620 < float(group["x1"]) < 700  # the left eye of the face nearest the centre
    reasons = {name: rows[f"bad/{name}"]["reason"] for name in ("zero.jpg", "text.jpg", "cut.jpg")}
    assert all(rows[f"bad/{n}"]["status"] == "unreadable" for n in reasons)
    assert "zero-byte" in reasons["zero.jpg"]
    assert "not a recognised image" in reasons["text.jpg"]
    assert "truncated" in reasons["cut.jpg"]
    assert summary["counts"] == {"ok": 7, "fallback": 0, "no_face": 2, "unreadable": 3}
    assert summary["empty_identity_folders"] == ["empty", "notes"]
    assert summary["ignored_files"] == ["notes/readme.txt"]
    on_disk = json.loads((dst / "summary.json").read_text())
    assert on_disk["counts"] == summary["counts"] and on_disk["images_per_second"] > 0
    # landmarks are in source pixels: mapping them with the template transform lands on the template
    assert float(rows["kate_siegel/1.jpg"]["residual"]) < 6.0

    again = align_tree(mixed_tree, dst, AlignConfig(purpose="train", batch_size=3), detector, progress=False)
    assert again["processed_this_run"] == 0 and again["counts"] == summary["counts"]


def test_evaluation_run_aligns_failures_with_the_mean_detected_landmarks(mixed_tree: Path, tmp_path: Path,
                                                                         detector: FaceDetector):
    dst = tmp_path / "eval"
    summary = align_tree(mixed_tree, dst, AlignConfig(purpose="eval", template="112x112"), detector,
                         progress=False)
    rows = rows_by_src(dst)
    noise = rows["noise/1.jpg"]
    assert noise["status"] == "fallback" and "mean landmarks of 7 detected faces" in noise["reason"]
    assert read_rgb(dst / noise["dst"]).shape == (112, 112, 3)
    relative = np.array(summary["fallback"]["mean_relative_landmarks"])
    width, height = float(noise["width"]), float(noise["height"])
    np.testing.assert_allclose(float(noise["x1"]), relative[0, 0] * width, atol=0.01)
    np.testing.assert_allclose(float(noise["y1"]), relative[0, 1] * height, atol=0.01)
    assert summary["counts"]["fallback"] == 2 and summary["counts"]["unreadable"] == 3


def test_supplied_landmarks_for_failures_and_for_all(mixed_tree: Path, tmp_path: Path, detector: FaceDetector):
    landmarks = tmp_path / "landmarks.txt"
    landmarks.write_text("# relpath x1 y1 ... x5 y5\nnoise/1.jpg 500 300 600 300 550 360 510 420 590 420\n"
                         "kate_siegel/1.jpg 10 10 50 10 30 30 15 50 45 50\n")
    dst = tmp_path / "failures"
    align_tree(mixed_tree, dst, AlignConfig(landmarks_file=str(landmarks)), detector, progress=False)
    rows = rows_by_src(dst)
    assert rows["noise/1.jpg"]["status"] == "fallback" and "supplied" in rows["noise/1.jpg"]["reason"]
    assert rows["kate_siegel/1.jpg"]["reason"] == ""  # detected face wins when only failures use the file
    dst_all = tmp_path / "all"
    align_tree(mixed_tree, dst_all, AlignConfig(landmarks_file=str(landmarks), landmarks_for="all"),
               detector, progress=False)
    kate = rows_by_src(dst_all)["kate_siegel/1.jpg"]
    assert kate["status"] == "ok" and kate["reason"] == "supplied landmarks" and kate["x1"] == "10.0"
    bad = tmp_path / "bad.txt"
    bad.write_text("noise/1.jpg 1 2 3\n")
    with pytest.raises(AlignmentError, match="bad.txt line 1: expected"):
        align_tree(mixed_tree, tmp_path / "x", AlignConfig(landmarks_file=str(bad)), detector, progress=False)


def test_empty_source_is_a_clear_error(tmp_path: Path):
    (tmp_path / "src" / "someone").mkdir(parents=True)
    with pytest.raises(AlignmentError, match="no images found under"):
        align_tree(tmp_path / "src", tmp_path / "dst", progress=False)
    with pytest.raises(AlignmentError, match="does not exist"):
        align_tree(tmp_path / "absent", tmp_path / "dst", progress=False)


def lfw_subset(lfw_images: Path, root: Path, people: int = 8, per_person: int = 3) -> Path:
    names = [n for n in sorted(os.listdir(lfw_images)) if len(os.listdir(lfw_images / n)) >= per_person]
    for name in names[:people]:
        (root / name).mkdir(parents=True)
        for f in sorted(os.listdir(lfw_images / name))[:per_person]:
            shutil.copy(lfw_images / name / f, root / name / f)
    return root


def test_a_killed_run_resumes_to_exactly_the_uninterrupted_outputs(tmp_path: Path, lfw_images: Path):
    src = lfw_subset(lfw_images, tmp_path / "src")
    command = [sys.executable, "-m", "faceverify.cli", "align", str(src), "DST", "--batch-size", "4",
               "--device", "cpu", "--purpose", "eval"]
    clean = tmp_path / "clean"
    subprocess.run([c if c != "DST" else str(clean) for c in command], check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([c if c != "DST" else str(killed) for c in command],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = killed / ".journal.csv"
    deadline = time.time() + 120
    while time.time() < deadline:
        if journal.is_file() and len(journal.read_text().splitlines()) >= 7:  # header + 6 rows
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "manifest.csv").exists(), "the run finished before it could be killed"
    done_before = len(journal.read_text().splitlines()) - 1
    assert 6 <= done_before < 24

    resumed = subprocess.run([c if c != "DST" else str(killed) for c in command], check=True,
                             capture_output=True, text=True)
    assert "aligned 24 images" in resumed.stdout
    assert (killed / "manifest.csv").read_bytes() == (clean / "manifest.csv").read_bytes()
    crops = sorted(p.relative_to(clean) for p in clean.rglob("*.png"))
    assert len(crops) == 24
    assert crops == sorted(p.relative_to(killed) for p in killed.rglob("*.png"))
    for rel in crops:
        assert (killed / rel).read_bytes() == (clean / rel).read_bytes(), rel
    assert not list(killed.rglob(".*.tmp"))


def test_cli_align_with_options(tmp_path: Path, faces_dir: Path):
    src = tmp_path / "src"
    (src / "s1").mkdir(parents=True)
    for i in (1, 2, 3):
        shutil.copy(faces_dir / "att_faces" / "s1" / f"{i}.pgm", src / "s1" / f"{i}.pgm")
    out = tmp_path / "out"
    assert main(["align", str(src), str(out), "--template", "112x112", "--ext", "jpg", "--scale", "2",
                 "--device", "cpu", "threads=1"]) == 0
    assert read_rgb(out / "s1" / "1.jpg").shape == (224, 224, 3)
    assert main(["align", str(src), str(out), "nosuchkey=1"]) == 2
