"""Taking in a GPU proof's CSVs: rows appended to results, README lines from the last run only,
and the recipes' H200 hours from measured GPU rows (never from a CPU check of the script)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from faceverify.reproduce import H200_SCALED_TARGET, h200_estimate_hours, load_recipe, recipe_config
from faceverify.results import append_rows, read_rows

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import gpu_results  # noqa: E402
import update_readme  # noqa: E402


def train_row(run: str, device: str, model: str, rate: float, **extra: object) -> dict:
    return {"commit": "abc", "device": device, "time_utc": run, "run": run, "torch": "2.11.0", "status": "done",
            "section": "1 training throughput", "model": model, "batch_size": 512, "compile": "False",
            "trainer_images_per_s": rate, "bare_images_per_s": rate / 0.97, "ratio": 0.97,
            "target_images_per_s": 10000, "meets_target": rate >= 10000, "trainer_peak_memory_mb": 20480, **extra}


def proof_folder(tmp_path: Path, run: str, rate: float) -> Path:
    folder = tmp_path / run
    append_rows(folder / "train.csv", [train_row(run, "cuda: NVIDIA H200", "face_resnet27", rate),
                                       train_row(run, "cuda: NVIDIA H200", "iresnet50", rate / 2)])
    append_rows(folder / "amp.csv", [{"commit": "abc", "device": "cuda: NVIDIA H200", "run": run, "amp": "bf16",
                                      "first_loss": 8.1, "last_loss": 6.0, "passed": True}])
    (folder / "proof.log").write_text(f"log of {run}\n")
    return folder


def test_take_in_appends_and_the_readme_reads_the_last_run(tmp_path: Path) -> None:
    results = tmp_path / "results"
    gpu_results.take_in(proof_folder(tmp_path, "2027-01-01T00:00:00Z", 9000.0), results)
    gpu_results.take_in(proof_folder(tmp_path, "2027-01-02T00:00:00Z", 12000.0), results)
    assert len(read_rows(results / "train.csv")) == 4 and (results / "train.md").is_file()
    assert (results / "proof.log").read_text() == "log of 2027-01-02T00:00:00Z\n"
    lines = "\n".join(update_readme.gpu_lines(results))
    assert "face_resnet27 batch 512: 12,000 images/s" in lines and "9,000" not in lines
    assert "bf16: loss 8.10 -> 6.00, passed" in lines
    assert "no GPU run recorded yet" in update_readme.gpu_lines(tmp_path / "none")[0]


def test_h200_hours_come_from_measured_gpu_rows_only(tmp_path: Path) -> None:
    measured = tmp_path / "train.csv"
    append_rows(measured, [train_row("r", "cpu: x86_64, 2 threads, 2 cores", "face_resnet27", 30.0),
                           train_row("r", "cuda: NVIDIA H200", "iresnet50", 4000.0),
                           train_row("r", "cuda: NVIDIA H200", "iresnet50", 6000.0, status="skipped")])
    config, _ = recipe_config(load_recipe("casia_C_center"), [], cuda=True)
    hours, basis = h200_estimate_hours(config, measured)  # only a CPU row: still the target's estimate
    assert "not measured" in basis
    assert hours == pytest.approx(config.optim.max_iters * config.data.batch_size / 10_000 / 3600)
    config, _ = recipe_config(load_recipe("ms1m_iresnet50_arcface"), [], cuda=True)
    hours, basis = h200_estimate_hours(config, measured)
    assert basis.startswith("measured 4000 images/s")  # the skipped row's number is no measurement
    assert hours == pytest.approx(config.optim.max_iters * config.data.batch_size / 4000 / 3600)
    config, _ = recipe_config(load_recipe("webface42m_iresnet100_pfc"), [], cuda=True)
    hours, basis = h200_estimate_hours(config, measured)
    speed = 4000 * H200_SCALED_TARGET["iresnet100"][1]
    assert "scaled by multiply-adds from the iresnet50 speed" in basis
    assert hours == pytest.approx(config.optim.max_iters * config.data.batch_size / speed / 3600)
