"""One run per output, with real concurrent processes: a second ``train`` / ``align`` / ``ablate`` /
``pack`` / ``embed`` into the same output is refused at once naming the holder, the first goes on
untouched, and a killed holder leaves no stale lock."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from faceverify.cli import main
from faceverify.locks import LOCK_NAME, OutputInUseError, lock_output

REPO = Path(__file__).resolve().parents[1]


def hold(path: Path, beside: bool = False, what: str = "run") -> subprocess.Popen:
    """Another process that takes ``path``'s lock and keeps it until killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from faceverify.locks import lock_output
        lock = lock_output({str(path)!r}, {what!r}, beside={beside})
        print("locked", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def wait_for(condition, seconds: float = 120.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_held_lock_is_refused_naming_the_holder_and_a_killed_holder_leaves_none(tmp_path: Path):
    holder = hold(tmp_path / "out", what="training run")
    try:
        with pytest.raises(OutputInUseError, match=rf"in use by another training run: PID {holder.pid} on "
                                                   rf"{socket.gethostname()}, started .*-c"):
            lock_output(tmp_path / "out")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / "out" / LOCK_NAME).is_file()  # the file stays; only a held flock counts
    with lock_output(tmp_path / "out") as lock:
        assert json.loads((tmp_path / "out" / LOCK_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(OutputInUseError):  # also within one process: one run per output
            lock_output(tmp_path / "out")
    assert not lock.held
    lock_output(tmp_path / "out").release()


def test_two_trainings_into_one_out(att_packed: Path, tmp_path: Path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "faceverify.cli", "train", f"out={out}", f"data.source={att_packed}",
            "model.backbone=sphere20", "model.width=0.25", "model.embedding_dim=64", "data.batch_size=40",
            "data.workers=0", "optim.lr=0.01", "optim.max_iters=100000", "log_every=1", "checkpoint_every=2",
            "progress=false", "tensorboard=false"]
    first = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics = out / "metrics.jsonl"
        wait_for(lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 2)
        started = time.perf_counter()
        second = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"in use by another training run: PID {first.pid}" in second.stderr
        assert second.stderr.count("\n") == 1  # one line, no traceback
        refused_in = time.perf_counter() - started
        assert first.poll() is None  # the first run goes on
        steps_before = len(metrics.read_text().splitlines())
        wait_for(lambda: len(metrics.read_text().splitlines()) >= steps_before + 2)
    finally:
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1))  # one writer: every step once, in order
    assert refused_in < 60  # refused at once (an interpreter start and imports), not after training


def test_two_aligns_into_one_dst(faces_dir: Path, tmp_path: Path):
    src = tmp_path / "src"
    samples = faces_dir / "facenet_pytorch_samples" / "test_images"
    for person in sorted(p.name for p in samples.iterdir() if p.is_dir()):
        shutil.copytree(samples / person, src / person)
    holder = hold(tmp_path / "dst", what="align")  # an align in progress holds DST's lock
    try:
        result = subprocess.run([sys.executable, "-m", "faceverify.cli", "align", str(src), str(tmp_path / "dst"),
                                 "--device", "cpu"], cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert result.returncode == 2 and f"in use by another align: PID {holder.pid}" in result.stderr
    assert not (tmp_path / "dst" / "manifest.csv").exists()
    assert main(["align", str(src), str(tmp_path / "dst"), "--device", "cpu", "--limit", "2"]) == 0  # lock gone


def test_two_packs_into_one_out_and_two_ablates_of_one_spec(att_packed: Path, faces_dir: Path, tmp_path: Path,
                                                           capsys):
    partial = tmp_path / "packed.partial"
    partial.mkdir()
    (partial / "images.u8").write_bytes(b"being written")
    holder = hold(tmp_path / "packed", beside=True, what="pack")
    try:
        assert main(["pack", str(faces_dir / "att_faces"), str(tmp_path / "packed"), "--size", "56x48"]) == 2
        assert f"in use by another pack: PID {holder.pid}" in capsys.readouterr().err
        assert (partial / "images.u8").read_bytes() == b"being written"  # the other pack's work is kept
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: tiny\nprofile: cpu\nfolds: [2]\nseeds: [0]\nmax_iters: 2\nlfw_aligned: {tmp_path}\n"
                    f"work: {tmp_path / 'work'}\nresults: {tmp_path / 'results'}\n"
                    "arms:\n  softmax: {loss: {terms: {softmax: 1.0}}}\n")
    holder = hold(tmp_path / "work" / "tiny", beside=True, what="ablate of tiny")
    try:
        assert main(["ablate", str(spec)]) == 2
        assert f"in use by another ablate of tiny: PID {holder.pid}" in capsys.readouterr().err
        assert not (tmp_path / "results").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_two_reproductions_into_one_out(tmp_path: Path, capsys):
    holder = hold(tmp_path / "repro", what="reproduce")
    try:
        assert main(["reproduce", "casia_C_center", "--train", str(tmp_path / "data"), "--out",
                     str(tmp_path / "repro")]) == 2
        assert f"in use by another reproduce: PID {holder.pid}" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
