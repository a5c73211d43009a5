"""The GPU proof's CPU check: ``DEVICE=cpu QUICK=1 experiments/gpu_proof.sh`` runs every section end
to end (tiny batches, fp32, a CPU-sized payload built from the shared LFW) and writes every CSV into
a temporary folder, never into ``results/``. What a lent GPU runs is this same script."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("train", "amp", "data", "align", "lfw_gpu_losses", "ddp")


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def payload(lfw_images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CPU-sized payload, built as the script builds it (aligning what work/ lacks)."""
    out = tmp_path_factory.mktemp("payload") / "payload"
    env = {**os.environ, "FACEVERIFY_DATA": str(lfw_images.parent.parent)}
    subprocess.run([sys.executable, str(ROOT / "experiments" / "gpu_payload.py"), "--quick", "--no-wheels",
                    "--out", str(out)], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    return out


@pytest.mark.slow
def test_quick_cpu_run_writes_every_section(payload: Path, tmp_path: Path) -> None:
    results_before = sorted(p.relative_to(ROOT) for p in (ROOT / "results").rglob("*"))
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "PYTHON": sys.executable, "TMPDIR": str(tmp_path),
           "GPU_PROOF_SECONDS": "400", "GPU_PAYLOAD": str(payload)}
    done = subprocess.run(["bash", str(ROOT / "experiments" / "gpu_proof.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    where = Path(re.findall(r"gpu_proof: figures in (\S+) \(exit 0\)", done.stdout)[-1])
    assert where.is_relative_to(tmp_path)
    assert sorted(p.relative_to(ROOT) for p in (ROOT / "results").rglob("*")) == results_before
    tables = {name: rows(where / f"{name}.csv") for name in SECTIONS}
    for name, table in tables.items():
        assert table, name
        for row in table:
            assert row["device"].startswith("cpu") and row["torch"] and row["commit"], (name, row)
            assert row.get("status", "") in ("", "done", "ok") or (name == "train" and row["compile"] == "True"), row
    train = [r for r in tables["train"] if r["status"] == "done"]
    assert {r["model"] for r in train} == {"face_resnet27", "sphere20", "iresnet50"}
    assert all(float(r["trainer_images_per_s"]) > 0 and float(r["bare_images_per_s"]) > 0 for r in train)
    assert {r["amp"] for r in tables["amp"]} == {"bf16", "fp16"}
    assert all(r["passed"] == "True" for r in tables["amp"]), tables["amp"]
    assert {r["source"] for r in tables["data"]} == {"packed memmap", "recordio, cpu decode"}
    assert float(tables["align"][0]["pipeline_images_per_s"]) > 0
    arms = {r["arm"] for r in tables["lfw_gpu_losses"]}
    assert arms == {"softmax", "softmax+contrastive", "softmax+center"}
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in tables["lfw_gpu_losses"])
    ddp = tables["ddp"]
    assert ddp[0]["backend"] == "gloo" and ddp[0]["passed"] == "True"
    assert {r["check"].split(",")[0] for r in ddp[1:]} == {"full head", "partial_fc head"}


def test_a_section_that_does_not_fit_is_recorded_as_skipped_not_started(payload: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "gpu_proof.py"), "--device", "cpu", "--quick",
                           "--payload", str(payload), "--out", str(tmp_path), "--seconds", "5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in SECTIONS:
        (row,) = rows(tmp_path / f"{name}.csv")
        assert row["status"] == "skipped" and float(row["estimate_s"]) > float(row["left_s"]), (name, row)
    assert not list(tmp_path.glob("*.md"))  # rows only: the 8 files a device call brings back


def test_the_default_deadline_schedules_every_section_on_a_gpu():
    """At the estimates (section 1 at half its target rates) the 500 s deadline runs every
    uncompiled throughput pair and every section, with section 5 long enough to learn; the compiled
    pairs run only if the measured pairs come in under their estimates (else a rerun with
    GPU_PROOF_ONLY=1 records them)."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import gpu_proof

    rows = gpu_proof.plan(500.0)
    assert all(r["runs"] for r in rows if "compiled" not in r["what"]), rows
    assert {r["section"] for r in rows} == {"1", "2", "3", "4", "5", "6"}
    (lfw,) = [r for r in rows if r["section"] == "5"]
    assert int(lfw["what"].split()[0]) >= 300
    last = rows[-1]
    assert last["start_s"] + last["estimate_s"] <= 500.0
    assert any(r["runs"] for r in gpu_proof.plan(900.0) if "compiled" in r["what"])
