"""``faceverify align`` with the input that used to lose data or crash a whole run: DST equal to
or nested with SRC, images too small for MTCNN, changed settings and sources on a re-run,
symbolic-link loops, line breaks in names, read-only outputs, bad numbers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep.detect import FaceDetector
from data_prep.prepare import AlignConfig, AlignmentError, align_tree, read_manifest
from faceverify.cli import main
from faceverify.data.images import read_rgb
from faceverify.locks import LOCK_NAME
from tests.unprivileged import make_read_only, run_cli

REPO = Path(__file__).resolve().parents[2]


def faces(faces_dir: Path) -> dict[str, Path]:
    samples = faces_dir / "facenet_pytorch_samples" / "test_images"
    return {name: samples / name / "1.jpg" for name in ("kate_siegel", "paul_rudd", "angelina_jolie")}


def tree_digest(root: Path) -> dict[str, str]:
    """Every output file's hash; the lock file is not an output (each run that takes the lock writes
    its own PID and start time into it, a refused re-run included)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK_NAME}


def rows_by_src(dst: Path) -> dict[str, dict[str, str]]:
    return {r["src"]: r for r in read_manifest(dst / "manifest.csv")}


@pytest.fixture()
def person_tree(tmp_path: Path, faces_dir: Path) -> Path:
    src = tmp_path / "src"
    for name, path in faces(faces_dir).items():
        (src / name).mkdir(parents=True)
        shutil.copy(path, src / name / "p1.jpg")
    return src


@pytest.mark.parametrize("dst_of", [lambda s: s, lambda s: s / "aligned", lambda s: s / "kate_siegel",
                                    lambda s: s.parent, lambda s: s / ".." / "src"])
def test_align_refuses_a_dst_that_is_or_nests_with_src(person_tree: Path, dst_of, capsys):
    before = tree_digest(person_tree.parent)
    assert main(["align", str(person_tree), str(dst_of(person_tree)), "--ext", "jpg", "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "faceverify align: error:" in error
    assert "source folder" in error
    assert tree_digest(person_tree.parent) == before  # not one byte written, renamed or removed


def test_images_too_small_for_mtcnn_get_a_row_and_the_run_goes_on(tmp_path: Path, faces_dir: Path,
                                                                 detector: FaceDetector):
    src = tmp_path / "src"
    sizes = [(1, 1), (8, 8), (12, 12), (19, 19), (19, 500), (500, 1), (20, 20), (3, 2000)]
    rng = np.random.default_rng(0)
    (src / "tiny").mkdir(parents=True)
    for w, h in sizes:
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(src / "tiny" / f"{w}x{h}.png")
    for name, path in faces(faces_dir).items():  # sorted after "tiny"? no: mixed into the same batches below
        (src / name).mkdir()
        shutil.copy(path, src / name / "p1.jpg")
    dst = tmp_path / "dst"
    summary = align_tree(src, dst, AlignConfig(batch_size=4), detector, progress=False)
    rows = rows_by_src(dst)
    assert len(rows) == len(sizes) + 3
    for w, h in sizes:
        row = rows[f"tiny/{w}x{h}.png"]
        assert row["status"] == "no_face", row
        if min(w, h) < 20:
            assert "smaller than the detector's minimum face size (20 px)" in row["reason"], row
    assert rows["tiny/20x20.png"]["reason"] == "no face detected"
    for name in faces(faces_dir):
        assert rows[f"{name}/p1.jpg"]["status"] == "ok"
        assert read_rgb(dst / name / "p1.png").shape == (112, 96, 3)
    assert summary["counts"]["ok"] == 3 and summary["counts"]["no_face"] == len(sizes)


def test_detector_answers_every_size_alone_and_in_mixed_batches(faces_dir: Path, detector: FaceDetector):
    face = read_rgb(faces(faces_dir)["kate_siegel"])
    rng = np.random.default_rng(1)
    odd = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in
           [(1, 1), (2, 7), (11, 40), (19, 19), (20, 19), (21, 21), (12, 3000), (40, 2500)]]
    results = detector.detect([odd[0], face, *odd[1:], face])
    assert len(results[1]) == 1 and len(results[-1]) == 1  # the real face is still found beside them
    notes = [r.note for r in results[2:-1]]
    assert all("minimum face size" in n for n in notes[:3])
    # a strip 40 px high is downscaled to at most 1024 px wide but kept searchable (>= 20 px high)
    assert "minimum face size" not in notes[-1]


def test_a_changed_setting_is_refused_and_restart_moves_dst_aside(person_tree: Path, tmp_path: Path, capsys):
    dst = tmp_path / "dst"
    assert main(["align", str(person_tree), str(dst), "--device", "cpu"]) == 0
    before = tree_digest(dst)
    capsys.readouterr()
    assert main(["align", str(person_tree), str(dst), "--device", "cpu", "--template", "112x112"]) == 2
    error = capsys.readouterr().err
    assert "template: '112x96' -> '112x112'" in error and "--restart" in error
    assert tree_digest(dst) == before  # the summary still says 112x96, and so do the crops
    # speed-only settings may change: the re-run just finds everything done
    assert main(["align", str(person_tree), str(dst), "--device", "cpu", "--batch-size", "2", "--threads", "1"]) == 0
    assert json.loads((dst / "summary.json").read_text())["processed_this_run"] == 0
    before = tree_digest(dst)
    assert main(["align", str(person_tree), str(dst), "--device", "cpu", "--template", "112x112", "--restart"]) == 0
    old = sorted(tmp_path.glob("dst.old-*"))
    assert len(old) == 1 and tree_digest(old[0]) == before
    assert read_rgb(dst / "paul_rudd" / "p1.png").shape == (112, 112, 3)
    assert json.loads((dst / "summary.json").read_text())["template"] == "112x112"


def test_a_changed_source_is_aligned_again_and_a_removed_one_loses_its_crop(person_tree: Path, tmp_path: Path,
                                                                          faces_dir: Path, detector: FaceDetector):
    dst = tmp_path / "dst"
    align_tree(person_tree, dst, AlignConfig(), detector, progress=False)
    kate_crop = read_rgb(dst / "kate_siegel" / "p1.png")
    # another person's photo now sits at kate_siegel/p1.jpg (new size and time)
    shutil.copy(faces(faces_dir)["paul_rudd"], person_tree / "kate_siegel" / "p1.jpg")
    os.utime(person_tree / "kate_siegel" / "p1.jpg", ns=(1, 1))
    shutil.rmtree(person_tree / "angelina_jolie")
    summary = align_tree(person_tree, dst, AlignConfig(), detector, progress=False)
    assert summary["processed_this_run"] == 1
    assert summary["removed_crops_of_vanished_sources"] == 1
    replaced = read_rgb(dst / "kate_siegel" / "p1.png")
    # the same photo as paul_rudd/p1.jpg, detected in another batch: equal up to rounding
    paul = read_rgb(dst / "paul_rudd" / "p1.png").astype(int)
    assert np.abs(replaced.astype(int) - paul).max() <= 1
    assert np.abs(replaced.astype(int) - kate_crop.astype(int)).mean() > 20
    assert not (dst / "angelina_jolie" / "p1.png").exists()
    assert set(rows_by_src(dst)) == {"kate_siegel/p1.jpg", "paul_rudd/p1.jpg"}
    # a source that now has no face loses the crop of its old version
    Image.fromarray(np.full((60, 60, 3), 128, np.uint8)).save(person_tree / "paul_rudd" / "p1.jpg")
    align_tree(person_tree, dst, AlignConfig(), detector, progress=False)
    assert rows_by_src(dst)["paul_rudd/p1.jpg"]["status"] == "no_face"
    assert not (dst / "paul_rudd" / "p1.png").exists()


def test_symlink_loops_and_line_breaks_are_listed_not_fatal(person_tree: Path, tmp_path: Path,
                                                          detector: FaceDetector):
    os.symlink("loop", person_tree / "loop")  # a folder-level loop
    os.symlink("self.jpg", person_tree / "paul_rudd" / "self.jpg")  # a file-level loop
    os.symlink("/nonexistent/x.jpg", person_tree / "paul_rudd" / "gone.jpg")
    shutil.copy(person_tree / "paul_rudd" / "p1.jpg", person_tree / "paul_rudd" / "two\nlines.jpg")
    dst = tmp_path / "dst"
    summary = align_tree(person_tree, dst, AlignConfig(), detector, progress=False)
    unusable = summary["unusable_entries"]
    assert "loop: symbolic link loop" in unusable
    assert "paul_rudd/self.jpg: symbolic link loop" in unusable
    assert any(u.startswith("paul_rudd/gone.jpg: broken symbolic link") for u in unusable)
    row = rows_by_src(dst)["paul_rudd/two\nlines.jpg"]
    assert row["status"] == "unreadable" and "line break" in row["reason"]
    assert summary["counts"]["ok"] == 3


def test_read_only_dst_is_one_line_exit_2_and_nothing_is_written(person_tree: Path, tmp_path: Path):
    locked = tmp_path / "locked"
    make_read_only(locked)
    try:
        for dst in (locked, locked / "new"):
            done = run_cli(["align", str(person_tree), str(dst), "--device", "cpu"], cwd=REPO)
            assert done.returncode == 2, done.stderr
            assert done.stderr.strip().count("\n") == 0 and "not writable" in done.stderr
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("option", [["--batch-size", "0"], ["--limit", "-1"], ["--device", "gpu"],
                                    ["--min-face-size", "0"], ["--scale", "0"]])
def test_bad_numbers_and_devices_are_one_line_errors(person_tree: Path, tmp_path: Path, option: list[str], capsys):
    assert main(["align", str(person_tree), str(tmp_path / "dst"), *option]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert not (tmp_path / "dst").exists()
    if option[1] == "gpu":
        assert "say cuda" in error


def test_align_module_api_refuses_the_same_folder(person_tree: Path):
    with pytest.raises(AlignmentError, match="overwrite the photos"):
        align_tree(person_tree, person_tree, progress=False)
