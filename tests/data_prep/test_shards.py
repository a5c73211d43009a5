"""Sharded alignment on real photos: shards run at the same time into one DST, a plain run merges
them into exactly an unsharded run's outputs; kill/resume, refusals and the hash rule."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_prep.detect import FaceDetector
from data_prep.prepare import AlignConfig, AlignmentError, align_tree
from data_prep.shards import SHARDS_DIR, Shard, parse_shard, shard_from_environment, shard_of
from faceverify.locks import OutputInUseError, lock_output
from tests.data_prep.test_prepare import lfw_subset, mixed_tree  # noqa: F401 - the fixture

CONFIG = AlignConfig(purpose="eval", batch_size=4, device="cpu", threads=1)  # eval: the centre fallback on


def outputs(dst: Path) -> tuple[bytes, dict[str, bytes]]:
    crops = {str(p.relative_to(dst)): p.read_bytes() for p in dst.rglob("*.png") if SHARDS_DIR not in p.parts}
    return (dst / "manifest.csv").read_bytes(), crops


def test_the_hash_rule_puts_a_photo_in_the_same_shard_whatever_else_the_folder_holds():
    paths = [f"person_{i}/photo_{j}.jpg" for i in range(60) for j in range(5)]
    for count in (2, 3, 7):
        shards = [shard_of(p, count) for p in paths]
        assert set(shards) == set(range(count))  # every shard gets photos
        assert all(Shard(k + 1, count).holds(p) for p, k in zip(paths, shards))
        assert min(shards.count(k) for k in range(count)) > len(paths) / count / 2  # roughly even
    # a pure function of the path: its value never depends on a listing
    assert shard_of("Aaron_Eckhart/Aaron_Eckhart_0001.jpg", 4) == shard_of("Aaron_Eckhart/Aaron_Eckhart_0001.jpg", 4)
    assert parse_shard("2/3") == Shard(2, 3)
    for bad in ("0/3", "4/3", "1/0", "a/b", "3"):
        with pytest.raises(AlignmentError):
            parse_shard(bad)


def test_the_rank_is_the_shard_under_torchrun(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert shard_from_environment() is None
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert shard_from_environment() == Shard(2, 3)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert shard_from_environment() is None


def test_shards_then_a_plain_run_equal_an_unsharded_run(mixed_tree: Path, tmp_path: Path,  # noqa: F811
                                                        detector: FaceDetector):
    plain = tmp_path / "plain"
    total = align_tree(mixed_tree, plain, CONFIG, detector=detector, progress=False)["sources"]
    sharded = tmp_path / "sharded"
    parts = [align_tree(mixed_tree, sharded, CONFIG, detector=detector, progress=False, shard=Shard(k, 3))
             for k in (1, 2, 3)]
    assert sum(p["sources"] for p in parts) == total and all(p["sources"] for p in parts)
    assert not (sharded / "manifest.csv").exists()  # only a plain run writes DST's own files
    for k in (1, 2, 3):
        assert (sharded / SHARDS_DIR / f"{k}-of-3" / "manifest.csv").is_file()
    summary = align_tree(mixed_tree, sharded, CONFIG, detector=detector, progress=False)
    assert summary["rows_merged_from_shards"] == total and summary["processed_this_run"] == 0
    assert summary["fallback"]["applied_this_run"] >= 1  # the centre fallback runs at the merge
    assert not (sharded / SHARDS_DIR).exists()
    assert outputs(sharded) == outputs(plain)


def _kill_after(command: list[str], journal: Path, rows: int) -> None:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (journal.is_file() and len(journal.read_text().splitlines()) > rows):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (journal.parent / "manifest.csv").exists(), "the shard finished before the kill"


def test_killed_shards_resume_by_themselves_or_by_the_merge_and_the_result_is_unchanged(tmp_path: Path,
                                                                                        lfw_images: Path):
    src = lfw_subset(lfw_images, tmp_path / "src")
    command = [sys.executable, "-m", "faceverify.cli", "align", str(src), "DST", "--batch-size", "4", "--device",
               "cpu", "--purpose", "eval", "--threads", "1"]
    clean = tmp_path / "clean"
    subprocess.run([c if c != "DST" else str(clean) for c in command], check=True, capture_output=True)
    dst = tmp_path / "sharded"
    run = [c if c != "DST" else str(dst) for c in command]
    _kill_after([*run, "--shard", "1/2"], dst / SHARDS_DIR / "1-of-2" / ".journal.csv", 2)
    resumed = subprocess.run([*run, "--shard", "1/2"], check=True, capture_output=True, text=True)
    assert "shard 1/2: aligned" in resumed.stdout
    _kill_after([*run, "--shard", "2/2"], dst / SHARDS_DIR / "2-of-2" / ".journal.csv", 2)
    merged = subprocess.run(run, check=True, capture_output=True, text=True)  # aligns shard 2's rest
    assert "aligned 24 images" in merged.stdout
    assert outputs(dst) == outputs(clean)
    assert not list(dst.rglob(".*.tmp"))


def test_two_shards_run_at_the_same_time_and_workers_merge_them(tmp_path: Path, lfw_images: Path):
    src = lfw_subset(lfw_images, tmp_path / "src", people=6, per_person=2)
    command = [sys.executable, "-m", "faceverify.cli", "align", str(src), "DST", "--batch-size", "2", "--device",
               "cpu", "--threads", "1"]
    clean = tmp_path / "clean"
    subprocess.run([c if c != "DST" else str(clean) for c in command], check=True, capture_output=True)
    together = tmp_path / "together"
    run = [c if c != "DST" else str(together) for c in command]
    procs = [subprocess.Popen([*run, "--shard", f"{k}/2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in (1, 2)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        assert "when every shard has ended" in out
    subprocess.run(run, check=True, capture_output=True)
    assert outputs(together) == outputs(clean)
    # --workers 2 gives each process one of the two cores: MTCNN's arithmetic depends on its thread
    # count, so the unsharded run to equal is the one with one thread
    one_thread = tmp_path / "one_thread"
    subprocess.run([c if c != "DST" else str(one_thread) for c in command], check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    workers = tmp_path / "workers"
    done = subprocess.run([c if c != "DST" else str(workers) for c in command] + ["--workers", "2"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "aligned 12 images" in done.stdout
    assert outputs(workers) == outputs(one_thread)


def test_workers_start_their_shard_processes_before_the_parent_loads_torch(tmp_path: Path, lfw_images: Path):
    """The parent runs shard 1 itself; its imports (torch, MTCNN: seconds) overlap the other shards'
    start-up only if it has not loaded torch before starting them."""
    src = lfw_subset(lfw_images, tmp_path / "src", people=3, per_person=2)
    code = f"""
import subprocess, sys
from data_prep.prepare import AlignConfig, align_tree
started_with_torch = []
class Spy(subprocess.Popen):
    def __init__(self, *args, **kwargs):
        if "data_prep.shard_worker" in args[0]:
            started_with_torch.append("torch" in sys.modules)
        super().__init__(*args, **kwargs)
subprocess.Popen = Spy
summary = align_tree({str(src)!r}, {str(tmp_path / "dst")!r},
                     AlignConfig(purpose="eval", batch_size=2, device="cpu", threads=1, workers=2), progress=False)
import torch
print(started_with_torch, summary["sources"], summary["counts"]["ok"] + summary["counts"]["fallback"],
      torch.get_num_threads())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    default_threads = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                                     capture_output=True, text=True, check=True).stdout.strip()
    # shard processes started before torch; all 6 photos aligned; the caller's torch threads restored
    assert done.stdout.split() == ["[False]", "6", "6", default_threads], done.stdout


def test_shards_with_other_settings_another_split_or_a_running_plain_run_are_refused(
        mixed_tree: Path, tmp_path: Path, detector: FaceDetector):  # noqa: F811
    dst = tmp_path / "dst"
    align_tree(mixed_tree, dst, CONFIG, detector=detector, progress=False, shard=Shard(1, 2))
    other = AlignConfig(purpose="eval", batch_size=4, device="cpu", template="112x112")
    for shard in (Shard(2, 2), Shard(1, 2)):  # another shard, or the same one re-run
        with pytest.raises(AlignmentError, match=r"shard 1/2 in .* other settings.*template"):
            align_tree(mixed_tree, dst, other, detector=detector, progress=False, shard=shard)
    with pytest.raises(AlignmentError, match=r"shard 1/2 in .* other settings.*template"):
        align_tree(mixed_tree, dst, other, detector=detector, progress=False)  # nor merged by another plain run
    with pytest.raises(AlignmentError, match="2-way split"):
        align_tree(mixed_tree, dst, CONFIG, detector=detector, progress=False, shard=Shard(1, 3))
    with pytest.raises(AlignmentError, match="--restart moves the whole DST"):
        align_tree(mixed_tree, dst, CONFIG, detector=detector, progress=False, shard=Shard(2, 2), restart=True)
    with pytest.raises(AlignmentError, match="not both"):
        align_tree(mixed_tree, dst, AlignConfig(workers=2), shard=Shard(2, 2))
    with pytest.raises(AlignmentError, match="must not|inside|same"):
        align_tree(mixed_tree, mixed_tree / "crops", CONFIG, detector=detector, progress=False, shard=Shard(1, 2))
    # a running shard (its part's lock held) keeps a plain run out, and a plain run keeps shards out
    with lock_output(dst / SHARDS_DIR / "1-of-2", "align shard 1/2"), lock_output(dst, "shard", shared=True):
        with pytest.raises(OutputInUseError, match=r"shard\(s\) 1/2 right now"):
            align_tree(mixed_tree, dst, CONFIG, detector=detector, progress=False)
        with pytest.raises(OutputInUseError):
            align_tree(mixed_tree, dst, CONFIG, detector=detector, progress=False, shard=Shard(1, 2))
    with lock_output(dst, "align"):
        with pytest.raises(OutputInUseError, match="in use by another align"):
            align_tree(mixed_tree, dst, CONFIG, detector=detector, progress=False, shard=Shard(2, 2))
    shutil.rmtree(dst)


def test_under_torchrun_each_rank_aligns_its_shard(tmp_path: Path, lfw_images: Path):
    src = lfw_subset(lfw_images, tmp_path / "src", people=4, per_person=2)
    command = ["-m", "faceverify.cli", "align", str(src), "DST", "--batch-size", "2", "--device", "cpu",
               "--threads", "1"]
    one_thread = tmp_path / "one_thread"  # torchrun gives each rank one thread (OMP_NUM_THREADS=1)
    subprocess.run([sys.executable, *[c if c != "DST" else str(one_thread) for c in command]], check=True,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    dst = tmp_path / "ranks"
    run = [c if c != "DST" else str(dst) for c in command]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           "29561", *run], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "shard 1/2: aligned" in done.stdout and "shard 2/2: aligned" in done.stdout
    assert sorted(p.name for p in (dst / SHARDS_DIR).iterdir()) == ["1-of-2", "2-of-2"]
    subprocess.run([sys.executable, *run], check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert outputs(dst) == outputs(one_thread)
