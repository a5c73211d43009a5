"""A tiny ablation end to end on real faces: AT&T subjects laid out as an LFW-style protocol
(10 people sets, 10 pair folds), aligned with MTCNN, two arms, one held-out fold."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from data_prep.prepare import AlignConfig, align_tree
from faceverify.ablation.protocol import split_for
from faceverify.ablation.spec import AblationSpec, cells, load_spec, train_config
from faceverify.cli import main
from faceverify.data.lfw import read_people
from faceverify.demo import run_demo


@pytest.fixture(scope="module")
def att_protocol(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(protocol folder with pairs.txt + people.txt, aligned tree)."""
    root = tmp_path_factory.mktemp("attprotocol")
    raw = root / "lfw"  # an LFW-style image folder name, so locate_lfw(root) finds it
    subjects = [f"s{i}" for i in range(1, 41)]
    for subject in subjects:
        (raw / subject).mkdir(parents=True)
        for i in range(1, 11):
            shutil.copy(faces_dir / "att_faces" / subject / f"{i}.pgm", raw / subject / f"{subject}_{i:04d}.pgm")
    sets = [subjects[4 * k : 4 * k + 4] for k in range(10)]
    people = ["10"] + [line for group in sets for line in ["4", *(f"{s}\t10" for s in group)]]
    (root / "people.txt").write_text("\n".join(people) + "\n")
    pairs = ["10\t2"]
    for group in sets:
        pairs += [f"{group[0]}\t1\t2", f"{group[1]}\t3\t4"]
        pairs += [f"{group[0]}\t5\t{group[2]}\t6", f"{group[1]}\t7\t{group[3]}\t8"]
    (root / "pairs.txt").write_text("\n".join(pairs) + "\n")
    aligned = root / "aligned"
    align_tree(raw, aligned, AlignConfig(purpose="eval", device="cpu"), progress=False)
    return root, aligned


def tiny_spec(tmp_path: Path, protocol: Path, aligned: Path) -> Path:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        "name: tiny\nprofile: cpu\nfolds: [2]\nseeds: [0]\nmax_iters: 8\nprojection_identities: 3\n"
        f"lfw_aligned: {aligned}\nlfw_protocol: {protocol}\nwork: {tmp_path / 'work'}\n"
        f"results: {tmp_path / 'results'}\n"
        "base: {data: {batch_size: 16, k: 4}}\n"
        "arms:\n  softmax: {loss: {terms: {softmax: 1.0}}}\n"
        "  softmax+center: {loss: {terms: {softmax: 1.0, center: 0.003}}}\n"
    )
    return spec


def test_tiny_ablation_end_to_end_and_resume(att_protocol, tmp_path: Path, capsys):
    protocol, aligned = att_protocol
    spec_path = tiny_spec(tmp_path, protocol, aligned)
    assert main(["ablate", str(spec_path)]) == 0
    out = capsys.readouterr().out
    assert "[1/2] softmax" in out and "[2/2] softmax+center" in out
    results = tmp_path / "results"
    with open(results / "tiny.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["arm"] for r in rows] == ["softmax", "softmax+center"]
    for row in rows:
        assert row["fold"] == "2" and row["status"] == "ok"
        assert 0.0 <= float(row["accuracy"]) <= 1.0 and 0.0 <= float(row["auc"]) <= 1.0
        assert float(row["compactness"]) > 0 and float(row["separation"]) > 0
        assert row["iterations"] == "8" and int(row["train_images"]) == 360  # 36 people x 10
        assert row["commit"] and row["device"].startswith("cpu") and len(row["config_hash"]) == 12
    table = (results / "tiny.md").read_text()
    assert "| softmax | 1 |" in table and "| softmax+center | 1 |" in table
    assert "Paired differences against `softmax`" in table
    for plot in ("tiny_accuracy.png", "tiny_roc.png", "tiny_projection.png"):
        assert (results / plot).stat().st_size > 5000, plot
    # a re-run skips finished cells
    assert main(["ablate", str(spec_path)]) == 0
    assert capsys.readouterr().out.count("done earlier") == 2


def test_sweep_with_inner_validation_and_its_plot(att_protocol, tmp_path: Path):
    protocol, aligned = att_protocol
    spec_path = tmp_path / "sweep.yaml"
    spec_path.write_text(
        "name: sweep\nprofile: cpu\nfolds: [3]\nmax_iters: 4\ninner_validation: true\nprojection_identities: 2\n"
        f"lfw_aligned: {aligned}\nlfw_protocol: {protocol}\nwork: {tmp_path / 'work'}\nresults: {tmp_path / 'r'}\n"
        "base: {data: {batch_size: 16, k: 4}}\n"
        "arms:\n  softmax+center: {loss: {terms: {softmax: 1.0, center: 0.003}}}\n"
        "sweep_arm: softmax+center\nsweep_key: loss.terms.center\nsweep_values: [0, 0.01]\n"
    )
    assert main(["ablate", str(spec_path)]) == 0
    with open(tmp_path / "r" / "sweep.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["sweep_value"] for r in rows] == ["0", "0.01"]
    assert all(r["inner_fold"] == "4" and r["inner_accuracy"] != "" for r in rows)
    assert int(rows[0]["train_images"]) == 320  # sets 3 (test) and 4 (inner) held out
    report = (tmp_path / "r" / "sweep.md").read_text()
    assert "Sweep of `loss.terms.center`" in report and "chosen value" in report
    assert (tmp_path / "r" / "sweep_sweep.png").stat().st_size > 5000


def test_spec_validation_and_cell_order(tmp_path: Path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\narms: {a: {loss: {terms: {softmax: 1.0}}}}\nfolds: [11]\n")
    with pytest.raises(ValueError, match="folds must be"):
        load_spec(spec)
    spec.write_text("name: x\narms: {a: {losss: {}}}\n")
    with pytest.raises(ValueError, match="unknown config key"):
        load_spec(spec)
    good = AblationSpec(arms={"a": {}, "b": {"loss": {"terms": {"center": 0.01, "softmax": 1.0}}}},
                        folds=[1, 2], seeds=[0, 1], sweep_arm="b", sweep_key="loss.terms.center",
                        sweep_values=[0.0, 0.1])
    order = [(c.seed, c.fold, c.label) for c in cells(good)]
    assert order[:3] == [(0, 1, "a"), (0, 1, "b @ 0"), (0, 1, "b @ 0.1")] and len(order) == 12
    config = train_config(good, cells(good)[2], Path("packed"), Path("out"))
    assert config.loss.terms == {"center": 0.1, "softmax": 1.0} and config.model.width == 0.25


def test_protocol_split_keeps_test_people_out_of_training(lfw_dir: Path):
    people = read_people(lfw_dir / "people.txt")
    split = split_for(people, 4, inner_validation=True)
    assert split.inner == 5
    assert not split.train_people & set(people[3]) and not split.train_people & set(people[4])
    assert split.test_people == {n for n, c in people[3].items() if c >= 2}
    assert all(os.sep not in n for n in split.train_people)


def test_demo_end_to_end_on_an_lfw_style_folder(att_protocol, tmp_path: Path, capsys):
    protocol, _ = att_protocol
    result = run_demo(str(protocol), tmp_path / "demo", fold=5, profile="cpu", download_to=None,
                      record=tmp_path / "record", max_iters=6)
    assert result["held_out_fold"] == 5 and result["iterations"] == 6 and 0.0 <= result["accuracy"] <= 1.0
    assert (tmp_path / "demo" / "result.json").is_file() and (tmp_path / "demo" / "demo.md").is_file()
    assert (tmp_path / "demo" / "aligned" / "manifest.csv").is_file()
    assert (tmp_path / "record" / "demo.csv").is_file()
    captured = capsys.readouterr()
    assert "train:" in captured.err  # a progress bar while it trains
    assert "In context: trained on LFW alone" in captured.out and "99.28%" in captured.out
    # the model it leaves behind, with its threshold from the other nine folds
    from faceverify.model import load_model

    model = load_model(tmp_path / "demo" / "model.pt", device="cpu")
    assert model.calibration is not None and model.calibration.threshold == pytest.approx(result["threshold"])
    assert model.calibration.accuracy == pytest.approx(result["accuracy"]) and model.calibration.flip == "concat"
    report = (tmp_path / "demo" / "demo.md").read_text()
    assert "Paired differences" not in report  # one arm: no empty table
    commands = [line.strip() for line in captured.out.splitlines() if line.strip().startswith("faceverify verify ")]
    assert len(commands) == 2 and "same person" in commands[0] and "different people" in commands[1]
    for line in commands:  # the printed verify commands run as printed and decide as they say
        argv, comment = line.split("   # ")
        assert main(argv.split()[1:]) == (0 if "same person" in comment else 1)
    again = run_demo(str(protocol), tmp_path / "demo", fold=5, profile="cpu", max_iters=6)
    assert again["accuracy"] == result["accuracy"]  # everything reused
