"""A tiny ablation end to end on real faces: AT&T subjects laid out as an LFW-style protocol
(10 people sets, 10 pair folds), aligned with MTCNN, two arms, one held-out fold."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_prep.prepare import AlignConfig, align_tree
from faceverify.ablation.protocol import split_for
from faceverify.ablation.spec import AblationSpec, cells, load_spec, train_config
from faceverify.cli import main
from faceverify.data.lfw import read_people
from faceverify.demo import run_demo
from faceverify.results import read_rows


def assert_scored_from_its_cell(row: dict) -> None:
    """The row's accuracy and AUC are what its held-out scores give: recomputed from the cell file
    (scores, same) with the row's threshold (rule: same iff score > threshold) and scikit-learn's AUC."""
    from sklearn.metrics import roc_auc_score

    with np.load(row["cell_file"]) as cell:
        scores, same = cell["scores"], cell["same"]
    assert float(row["accuracy"]) == pytest.approx(float(np.mean((scores > float(row["threshold"])) == same)),
                                                   abs=2e-6)
    assert float(row["auc"]) == pytest.approx(float(roc_auc_score(same, scores)), abs=2e-6)


def assert_drawn(path: Path) -> None:
    """A plot with content: a real PNG of plot size with many colours (axes, text, marks), not blank."""
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 300 and image.height >= 200, path
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 20, path


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
        assert_scored_from_its_cell(row)
        assert float(row["compactness"]) > 0 and float(row["separation"]) > 0
        assert row["iterations"] == "8" and int(row["train_images"]) == 360  # 36 people x 10
        assert row["commit"] and row["device"].startswith("cpu") and len(row["config_hash"]) == 12
        assert row["sampler"] == "pk" and row["k"].isdigit()  # the sampler the cell trained with, resolved
    table = (results / "tiny.md").read_text()
    assert "| softmax | 1 |" in table and "| softmax+center | 1 |" in table
    assert "Paired differences against `softmax`" in table
    assert "The ROC pools every cell's held-out scores per arm." in table and "![roc](tiny_roc.png)" in table
    for plot in ("tiny_accuracy.png", "tiny_roc.png", "tiny_projection.png"):
        assert_drawn(results / plot)
    # a re-run skips finished cells
    assert main(["ablate", str(spec_path)]) == 0
    assert capsys.readouterr().out.count("done earlier") == 2


def test_a_signal_mid_cell_records_nothing_and_the_rerun_resumes_the_cell(att_protocol, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch, capsys):
    """Ctrl-C / SIGTERM during an ablation stops it: the cell's checkpoint is saved, but the unfinished
    network is neither scored nor recorded, and no further cell starts (once, a stopped cell was
    evaluated at its stopping step, written as an ``ok`` row and skipped as "done" by every re-run)."""
    import signal

    from faceverify.ablation import runner

    protocol, aligned = att_protocol
    spec_path = tiny_spec(tmp_path, protocol, aligned)
    real_train = runner.train
    first_steps: list[int] = []

    def interrupted(config, callbacks=None, restart=False):
        def press_ctrl_c(trainer) -> None:
            if trainer.state.step == 3:
                signal.raise_signal(signal.SIGINT)  # the trainer's own handler receives it
        return real_train(config, [press_ctrl_c], restart)

    monkeypatch.setattr(runner, "train", interrupted)
    assert main(["ablate", str(spec_path)]) == 130
    captured = capsys.readouterr()
    assert "stopped by signal at step 3 of 8" in captured.err and "Re-run the same command" in captured.err
    assert "[2/2]" not in captured.out  # the next cell never started
    assert not (tmp_path / "results" / "tiny.csv").exists()
    assert not list((tmp_path / "work").rglob("cells/*.npz"))  # nothing scored
    runs = list((tmp_path / "work" / "tiny" / "runs").iterdir())
    assert len(runs) == 1
    from faceverify.training.checkpoint import load_checkpoint

    assert load_checkpoint(runs[0] / "checkpoints" / "last.pt")["train_state"]["step"] == 3

    def watched(config, callbacks=None, restart=False):
        return real_train(config, [lambda trainer: first_steps.append(trainer.state.step)], restart)

    monkeypatch.setattr(runner, "train", watched)
    assert main(["ablate", str(spec_path)]) == 0
    assert first_steps[0] == 4  # the stopped cell resumed after its step 3, not from scratch
    with open(tmp_path / "results" / "tiny.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["arm"], r["iterations"], r["status"]) for r in rows] == [("softmax", "8", "ok"),
                                                                       ("softmax+center", "8", "ok")]
    assert rows[0]["run_dir"] == str(runs[0])


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
    assert_drawn(tmp_path / "r" / "sweep_sweep.png")


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
    assert result["held_out_fold"] == 5 and result["iterations"] == 6
    demo_row = read_rows(tmp_path / "demo" / "demo.csv")[-1]  # the demo's one ablation cell
    assert_scored_from_its_cell(demo_row)
    assert result["accuracy"] == float(demo_row["accuracy"]) and result["threshold"] == float(demo_row["threshold"])
    assert (tmp_path / "demo" / "result.json").is_file() and (tmp_path / "demo" / "demo.md").is_file()
    assert (tmp_path / "demo" / "aligned" / "manifest.csv").is_file()
    counts = json.loads((tmp_path / "demo" / "aligned" / "summary.json").read_text())["counts"]
    assert counts["ok"] >= 0.9 * sum(counts.values())  # faces found: the minimum face size fits these photos
    assert (tmp_path / "record" / "demo.csv").is_file()
    captured = capsys.readouterr()
    assert "train:" in captured.err  # a progress bar while it trains
    assert "In context: trained on LFW alone" in captured.out and "99.28%" in captured.out
    # the model it leaves behind, with its threshold from the other nine folds
    from faceverify.use.model import load_model

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


def test_demo_minimum_face_size_scales_with_the_photos(tmp_path: Path):
    from PIL import Image

    from faceverify.demo import DEMO_MIN_FACE_SIZE, demo_align_config

    for size, expected in [((250, 250), DEMO_MIN_FACE_SIZE), ((92, 112), 44), ((30, 30), 20), ((500, 400), 192)]:
        Image.new("RGB", size).save(tmp_path / "p.png")
        assert demo_align_config(tmp_path / "p.png").min_face_size == expected
    assert demo_align_config().min_face_size == DEMO_MIN_FACE_SIZE


def test_demo_draws_random_batches_while_ablation_arms_keep_pk(tmp_path: Path):
    """The demo trains softmax + center loss on batches drawn at random (Wen et al.); the cpu
    profile's PK batches stay the ablation arms' default, and the demo's other settings are the
    profile's (one merge: the sampler does not drop the rest of ``data``)."""
    from faceverify.ablation.spec import Cell
    from faceverify.demo import DEMO_ITERATIONS, demo_spec

    demo = train_config(demo_spec(tmp_path / "a", tmp_path / "p", tmp_path), Cell("softmax+center", 0, 1),
                        tmp_path, tmp_path)
    assert demo.data.sampler == "shuffle"
    assert (demo.data.batch_size, demo.data.k, demo.data.flip) == (128, 4, True)
    assert demo.optim.max_iters == DEMO_ITERATIONS
    arm = AblationSpec(profile="cpu", arms={"softmax+center": {"loss": {"terms": {"softmax": 1.0, "center": 0.003}}}})
    assert train_config(arm, Cell("softmax+center", 0, 1), tmp_path, tmp_path).data.sampler == "pk"


@pytest.mark.parametrize("terms,expected", [
    ({"softmax": 1.0}, "shuffle"), ({"softmax": 1.0, "center": 0.003}, "shuffle"), ({"arcface": 1.0}, "shuffle"),
    ({"sphereface2": 1.0}, "shuffle"), ({"softmax": 1.0, "contrastive": 0.1}, "pk"), ({"triplet": 1.0}, "pk"),
    ({"margin": 1.0}, "pk"), ({"multi_similarity": 1.0}, "pk"), ({"npair": 1.0}, "pk"), ({"proxy_nca": 1.0}, "pk"),
    ({"softmax": 1.0, "triplet": 0.0}, "shuffle"),  # a term weighted 0 is off
])
def test_sampler_auto_draws_pk_batches_for_pair_and_proxy_terms_only(terms, expected):
    """Issue 26: ``data.sampler: auto`` gives random batches to arms made only of classification
    terms (+ center) and PK batches to any arm with a pair or proxy term."""
    from faceverify.config import merge
    from faceverify.training.build import sampler_kind
    from faceverify.training.config import TrainConfig

    config = merge(TrainConfig(), {"data": {"sampler": "auto"}, "loss": {"terms": terms}})
    assert sampler_kind(config) == expected


# ----------------------------------------------------------------------------- tuning, hashing, statistics
def tuned_spec(tmp_path: Path, protocol: Path, aligned: Path, extra: str = "") -> Path:
    spec = tmp_path / "tuned.yaml"
    spec.write_text(
        "name: tuned\nprofile: cpu\nfolds: [2]\nseeds: [0, 1]\nmax_iters: 4\nprojection_identities: 3\n"
        f"lfw_aligned: {aligned}\nlfw_protocol: {protocol}\nwork: {tmp_path / 'work'}\nresults: {tmp_path / 'results'}\n"
        "base: {data: {batch_size: 16, k: 4}}\n"
        "tuning: {trials: 2, search: grid}\n"
        "arms:\n"
        "  softmax: {loss: {terms: {softmax: 1.0}}, tune: {optim.lr: [0.01, 0.05]}}\n"
        "  margin:\n"
        "    loss: {terms: !replace {margin: 1.0}}\n"
        "    tune: {loss.margin.margin: [0.1, 0.3]}\n" + extra
    )
    return spec


def test_tuning_chooses_on_inner_validation_and_finals_use_the_choice(att_protocol, tmp_path: Path, capsys):
    protocol, aligned = att_protocol
    spec_path = tuned_spec(tmp_path, protocol, aligned)
    assert main(["ablate", str(spec_path)]) == 0
    results = tmp_path / "results"
    with open(results / "tuned_tuning.csv", newline="") as handle:
        trials = list(csv.DictReader(handle))
    with open(results / "tuned.csv", newline="") as handle:
        finals = list(csv.DictReader(handle))
    assert [(t["arm"], t["trial"]) for t in trials] == [("softmax", "0"), ("softmax", "1"), ("margin", "0"),
                                                        ("margin", "1")]
    assert all(t["inner_fold"] == "3" and t["stage"] == "trial" and t["seed"] == "0" for t in trials)
    assert all(int(t["train_images"]) == 320 for t in trials)  # sets 2 (test) and 3 (inner) held out
    assert [(f["arm"], f["seed"]) for f in finals] == [("softmax", "0"), ("margin", "0"), ("softmax", "1"),
                                                       ("margin", "1")]
    for final in finals:
        assert int(final["train_images"]) == 360  # finals train on all nine other sets
        arm_trials = [t for t in trials if t["arm"] == final["arm"]]
        best = max(arm_trials, key=lambda t: (float(t["inner_accuracy"]), -int(t["trial"])))
        assert final["values"] == best["values"]  # chosen on inner validation, never on the test fold
        assert final["recall_at_1"] and final["map_at_r"] and final["effective_rank"]
        assert int(final["images_seen"]) == 4 * 16
    report = (results / "tuned.md").read_text()
    assert "## Tuning (2 grid trials" in report and "Tuning curve of `margin`" in report
    assert "accuracy % [95% CI]" in report and "| verdict |" in report
    assert_drawn(results / "tuned_tuning.png")
    # a re-run trains nothing; editing one arm retrains that arm only, and each cell counts once
    assert main(["ablate", str(spec_path)]) == 0
    assert capsys.readouterr().out.count("done earlier") == 8
    assert main(["ablate", str(spec_path), "arms.margin.loss.margin.beta=1.0"]) == 0
    out = capsys.readouterr().out
    assert out.count("done earlier") == 4 and "margin" not in "".join(
        line for line in out.splitlines() if "done earlier" in line)
    report = (results / "tuned.md").read_text()
    assert "| margin | 2 |" in report and "| softmax | 2 |" in report
    assert "4 row(s) of earlier configurations" in report


def test_a_threshold_is_never_chosen_on_the_test_fold():
    """Scores where the test fold's own best threshold differs from the other folds': the
    cell metric must be the other folds' threshold applied to the test fold (a leak scores higher)."""
    import numpy as np

    from faceverify.ablation.runner import fold_metrics
    from faceverify.data.lfw import PairsProtocol
    from faceverify.evaluation.lfw_eval import EmbeddingSet
    from faceverify.evaluation.verification import best_threshold, pair_similarity

    rng = np.random.default_rng(0)
    n_folds, per = 10, 20
    keys_a, keys_b, same, fold, vectors = [], [], [], [], {}
    for f in range(n_folds):
        for i in range(per):
            matched = i < per // 2
            a, b = f"p{f}_{i}/a", f"p{f}_{i}/b"
            base = rng.normal(size=8)
            # fold 4 (index 3) is shifted: its mismatched pairs are as similar as other folds' matched ones
            vectors[a] = base
            if f == 3:
                vectors[b] = base + (0.2 if matched else 1.0) * rng.normal(size=8)
            else:
                vectors[b] = base + rng.normal(size=8) if matched else rng.normal(size=8)
            keys_a.append(a)
            keys_b.append(b)
            same.append(matched)
            fold.append(f)
    pairs = PairsProtocol(Path("synthetic"), tuple(keys_a), tuple(keys_b), np.array(same), np.array(fold), n_folds)
    keys = list(vectors)
    embeddings = EmbeddingSet(keys, np.stack([vectors[k] for k in keys]), None)
    metrics, _ = fold_metrics(embeddings, pairs, 4, "none")
    scores = pair_similarity(np.stack([vectors[k] for k in keys_a]), np.stack([vectors[k] for k in keys_b]), "cosine")
    fold_arr, same_arr = np.array(fold), np.array(same)
    proper, _ = best_threshold(scores[fold_arr != 3], same_arr[fold_arr != 3])
    leaked, leaked_accuracy = best_threshold(scores[fold_arr == 3], same_arr[fold_arr == 3])
    expected = float(np.mean((scores[fold_arr == 3] > proper) == same_arr[fold_arr == 3]))
    assert metrics["threshold"] == proper and metrics["accuracy"] == expected
    assert leaked != proper and leaked_accuracy > expected  # the leak would have scored higher
    # inner validation of fold 5 with test fold 4 excluded: fold 4's pairs change nothing
    inner, _ = fold_metrics(embeddings, pairs, 5, "none", exclude_fold=4)
    moved = dict(vectors)
    for k in keys_a[60:80] + keys_b[60:80]:  # fold 4's pairs
        moved[k] = moved[k] * -3.0
    moved_set = EmbeddingSet(keys, np.stack([moved[k] for k in keys]), None)
    assert fold_metrics(moved_set, pairs, 5, "none", exclude_fold=4)[0] == inner
    assert fold_metrics(moved_set, pairs, 5, "none")[0] != inner  # ...while including it would


def test_tuning_spec_rules(tmp_path: Path):
    from faceverify.ablation.spec import candidates

    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\ntuning: {trials: 3, search: grid}\narms:\n  a: {tune: {optim.lr: [0.1, 0.2]}}\n")
    with pytest.raises(Exception, match="its grid has 2 combinations, tuning.trials is 3"):
        load_spec(spec)
    spec.write_text("name: s\ntuning: {trials: 2}\narms:\n  a: {tune: {optim.lr: [0.1, 0.2]}}\n  b: {}\n")
    with pytest.raises(ValueError, match="arm 'b' declares no `tune:`"):
        load_spec(spec)
    spec.write_text("name: s\narms:\n  a: {tune: {optim.lr: [0.1, 0.2]}}\n")
    with pytest.raises(ValueError, match="tuning.trials is 0"):
        load_spec(spec)
    spec.write_text("name: s\ntuning: {trials: 4, search: random, seed: 3}\narms:\n"
                    "  a: {tune: {optim.lr: {low: 0.001, high: 0.1, log: true}, loss.triplet.margin: [0.1, 0.2]}}\n"
                    "  b: {tune: {optim.lr: [0.01, 0.02, 0.03]}}\n")
    loaded = load_spec(spec)
    for arm in ("a", "b"):
        for fold in (1, 2):
            drawn = candidates(loaded, arm, fold)
            assert len(drawn) == 4 and drawn == candidates(loaded, arm, fold)  # equal budget, reproducible
    assert all(0.001 <= dict(v)["optim.lr"] <= 0.1 for v in candidates(loaded, "a", 1))
    assert len(set(candidates(loaded, "b", 1))) == 3  # distinct while the space allows


def test_report_statistics_verdicts_collapse_flag_and_one_row_per_cell(tmp_path: Path):
    from faceverify.ablation.report import write_reports
    from faceverify.results import append_rows

    spec = AblationSpec(name="synthetic", arms={"softmax": {}, "better": {}, "same": {}, "collapsed": {}},
                        folds=[1, 2, 3], seeds=[0, 1, 2], bootstrap=2000)
    rows = []
    base = {"status": "ok", "input": "56x48", "commit": "c", "device": "cpu", "time_utc": "2026-01-01T00:00:00Z",
            "train_seconds": 10, "eval_seconds": 1, "images_seen": 1000, "sweep_value": "", "trial": ""}
    rng = np.random.default_rng(0)
    for fold in (1, 2, 3):
        for seed in (0, 1, 2):
            reference = 0.80 + 0.01 * fold + 0.002 * seed
            for arm, delta, collapsed in (("softmax", 0.0, False), ("better", 0.03, False),
                                          ("same", float(rng.normal(0, 0.004)), False), ("collapsed", -0.2, True)):
                rows.append({**base, "arm": arm, "label": arm, "fold": fold, "seed": seed,
                             "accuracy": reference + delta, "auc": 0.9, "collapsed": collapsed,
                             "compactness": 0.001 if collapsed else 0.6, "separation": 0.001 if collapsed else 0.7})
    stale = {**rows[0], "accuracy": 0.1}
    append_rows(tmp_path / "synthetic.csv", [stale] + rows)  # an earlier row of the first cell, then its latest
    write_reports(spec, tmp_path / "synthetic.csv", None)
    report = (tmp_path / "synthetic.md").read_text()
    against_softmax, _, against_best = report.partition("The arm with the highest mean accuracy is `better`")
    assert against_best  # three arms or more: every arm is paired with the best arm too
    lines = {line.split(" | ")[0].strip("| "): line for line in against_softmax.splitlines() if line.startswith("| ")}
    best = {line.split(" | ")[0].strip("| "): line for line in against_best.splitlines() if line.startswith("| ")}
    assert best["same"].endswith("| worse |") and best["softmax"].endswith("| worse |") and "better" not in best
    assert "| softmax | 9 |" in report  # the stale row is not a tenth cell
    assert lines["better"].endswith("| better |") and lines["same"].endswith("| indistinguishable |")
    assert lines["collapsed"].rstrip().endswith("| worse |")
    assert "**yes** (9/9)" in report and "1 row(s) of earlier configurations" in report
    softmax_line = next(line for line in report.splitlines() if line.startswith("| softmax | 9 |"))
    assert "82.20 [" in softmax_line  # the mean of the latest rows, not dragged down by the stale 10%
    assert "Incomplete recording" not in report  # all 36 planned cells are there
    # a recording stopped part-way says so, with how much is done
    append_rows(tmp_path / "partial.csv", [r for r in rows if r["fold"] == 1])
    write_reports(spec, tmp_path / "partial.csv", None)
    partial = (tmp_path / "partial.md").read_text()
    assert "**Incomplete recording**: 12 of 36 planned cells" in partial


def test_report_puts_the_published_figures_beside_the_measured_arms(tmp_path: Path):
    from faceverify.ablation.report import write_reports
    from faceverify.results import append_rows

    spec = AblationSpec(name="paper", arms={"softmax": {}, "softmax+center": {}}, folds=[1, 2], seeds=[0],
                        bootstrap=200, published={"softmax": 0.9737, "softmax+center": 0.9928,
                                                  "softmax+contrastive": 0.9910},
                        published_source="Wen et al., ECCV 2016, Table 2")
    base = {"status": "ok", "input": "56x48", "commit": "c", "device": "cpu", "time_utc": "2026-01-01T00:00:00Z",
            "train_seconds": 10, "eval_seconds": 1, "images_seen": 1000, "sweep_value": "", "trial": "", "seed": 0,
            "auc": 0.9, "collapsed": False, "compactness": 0.6, "separation": 0.7}
    append_rows(tmp_path / "paper.csv", [{**base, "arm": arm, "label": arm, "fold": fold, "accuracy": accuracy}
                                         for arm, fold, accuracy in (("softmax", 1, 0.80), ("softmax", 2, 0.86),
                                                                     ("softmax+center", 1, 0.88))])
    write_reports(spec, tmp_path / "paper.csv", None)
    report = (tmp_path / "paper.md").read_text()
    assert "Beside the paper (Wen et al., ECCV 2016, Table 2)" in report
    assert "| softmax | 83.00 | 2 | 97.37 |" in report  # the mean over the arm's cells
    assert "| softmax+center | 88.00 | 1 | 99.28 |" in report
    assert "| softmax+contrastive | not recorded yet | 0 | 99.10 |" in report
    without = AblationSpec(name="paper", arms=spec.arms, folds=[1, 2], seeds=[0], bootstrap=200)
    write_reports(without, tmp_path / "paper.csv", None)
    assert "Beside the paper" not in (tmp_path / "paper.md").read_text()


def test_training_on_another_source_with_held_out_identities_for_trials(att_protocol, att_packed: Path,
                                                                      tmp_path: Path):
    protocol, aligned = att_protocol
    spec = tmp_path / "source.yaml"
    spec.write_text(
        "name: source\nprofile: cpu\nseeds: [0]\nmax_iters: 4\n"
        f"lfw_aligned: {aligned}\nlfw_protocol: {protocol}\nwork: {tmp_path / 'work'}\nresults: {tmp_path / 'r'}\n"
        f"train_source: {att_packed}\nbase: {{data: {{batch_size: 16, k: 4}}}}\n"
        "tuning: {trials: 2, search: grid, holdout_fraction: 0.2}\n"
        "arms:\n  softmax: {loss: {terms: {softmax: 1.0}}, tune: {optim.lr: [0.01, 0.05]}}\n"
    )
    assert main(["ablate", str(spec)]) == 0
    with open(tmp_path / "r" / "source_tuning.csv", newline="") as handle:
        trials = list(csv.DictReader(handle))
    with open(tmp_path / "r" / "source.csv", newline="") as handle:
        finals = list(csv.DictReader(handle))
    assert len(trials) == 2 and all(int(t["train_images"]) == 320 for t in trials)  # 8 of 40 identities held out
    assert all(0 <= float(t["inner_accuracy"]) <= 1 and t["inner_map_at_r"] for t in trials)
    assert len(finals) == 1 and finals[0]["fold"] == "0" and int(finals[0]["train_images"]) == 400
    assert float(finals[0]["threshold"]) == float(finals[0]["threshold"])  # LFW's 10 folds scored
    assert "train on `" in (tmp_path / "r" / "source.md").read_text()


def test_projection_uses_the_first_cell_whose_file_is_still_there(tmp_path: Path):
    """A recording resumed in another checkout lacks its earlier cells' files: the projection takes the
    arm's next cell instead of giving up, and with no file at all nothing is drawn (the report then
    links no projection)."""
    from faceverify.ablation.plots import plot_projection

    rng = np.random.default_rng(0)
    kept = tmp_path / "kept.npz"
    np.savez(kept, projection_features=rng.normal(size=(12, 8)).astype(np.float32),
             projection_labels=np.array(["a", "b", "c"] * 4))
    rows = [{"seed": "0", "fold": "1", "ratio": "0.5", "cell_file": str(tmp_path / "gone.npz")},
            {"seed": "1", "fold": "1", "ratio": "0.7", "cell_file": str(kept)}]
    drawn = tmp_path / "drawn.png"
    assert plot_projection(["arm"], {"arm": rows}, drawn) is True
    assert_drawn(drawn)
    missing = tmp_path / "missing.png"
    assert plot_projection(["arm"], {"arm": rows[:1]}, missing) is False
    assert not missing.exists()


def test_roc_says_how_many_cells_it_pools_and_is_linked_only_when_drawn(tmp_path: Path):
    """A ROC pooled from the cells whose files are still there counts them per arm (the report says
    so), and with no file at all none is drawn and none linked."""
    from faceverify.ablation.plots import plot_roc
    from faceverify.ablation.report import roc_line

    rng = np.random.default_rng(0)
    kept = tmp_path / "kept.npz"
    same = np.array([True, False] * 20)
    np.savez(kept, scores=rng.normal(size=40) + same, same=same)
    rows = [{"cell_file": str(tmp_path / "gone.npz")}, {"cell_file": str(kept)}]
    drawn = tmp_path / "drawn.png"
    assert plot_roc(["arm", "empty"], {"arm": rows, "empty": rows[:1]}, drawn, "t") == {"arm": 1, "empty": 0}
    assert_drawn(drawn)
    line = roc_line(["arm", "empty"], {"arm": rows, "empty": rows[:1]}, {"arm": 1, "empty": 0})
    assert "arm 1 of 2, empty 0 of 1" in line
    assert "no ROC and no projection" in roc_line(["empty"], {"empty": rows[:1]}, {"empty": 0})
    missing = tmp_path / "missing.png"
    assert plot_roc(["empty"], {"empty": rows[:1]}, missing, "t") == {"empty": 0}
    assert not missing.exists()


def test_the_report_pairs_every_arm_with_the_best_arm_too():
    """Which arms are indistinguishable from the best is a paired question as well: each arm's
    differences against the best arm on the same (fold, seed), computed by hand here."""
    from faceverify.ablation.report import best_arm_differences

    accuracy = {"softmax": [0.80, 0.82, 0.81, 0.79], "a": [0.90, 0.91, 0.92, 0.90], "b": [0.89, 0.92, 0.90, 0.91]}
    cells = [("1", "0"), ("2", "0"), ("1", "1"), ("2", "1")]
    by_label = {arm: [{"fold": f, "seed": s, "accuracy": str(v)} for (f, s), v in zip(cells, values)]
                for arm, values in accuracy.items()}
    lines = best_arm_differences(list(accuracy), by_label, "softmax", 200)
    assert "highest mean accuracy is `a`" in lines[0]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ") and "---" not in line}
    assert "| a |" not in "".join(rows.values())
    # b - a per cell: -1, +1, -2, +1 points -> mean -0.25; softmax - a: -10, -9, -11, -11 -> mean -10.25
    assert "| 4 | -0.25 [" in rows["b"] and rows["b"].endswith("| indistinguishable |")
    assert "| 4 | -10.25 [" in rows["softmax"] and rows["softmax"].endswith("| worse |")
    # exact Wilcoxon p of 4 same-signed differences is 2 / 2^4 = 0.125; Holm over the table's 2 comparisons doubles it
    assert "| 0.125 | 0.250 |" in rows["softmax"] and "| Holm p |" in "\n".join(lines)
    assert best_arm_differences(["softmax", "a"], by_label, "softmax", 200) == []  # two arms: the reference table says it
    by_label["softmax"] = [{**r, "accuracy": "0.99"} for r in by_label["softmax"]]
    assert best_arm_differences(list(accuracy), by_label, "softmax", 200) == []  # the reference is the best
