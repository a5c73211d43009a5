"""``faceverify reproduce`` end to end on a stand-in: real LFW people outside the evaluated pairs as
a CASIA-style tree (with a names.txt naming one LFW person) and as RecordIO, a few iterations on
the CPU, LFW from a tree and .bin sets; the result is marked ``complete: false``."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from faceverify.cli import main
from faceverify.reproduce import load_recipe, record_row

SHORT = ["optim.max_iters=2", "model.width=0.125", "data.batch_size=16", "data.workers=0", "progress=false",
         "tensorboard=false"]


@pytest.fixture(scope="module")
def stand_in(mini_lfw, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("standin")
    casia = base / "CASIA-WebFace"
    lines = []
    for i, name in enumerate(mini_lfw.train_people, start=1):
        shutil.copytree(mini_lfw.train_tree / name, casia / f"{i:07d}")
        # one identity keeps its real (LFW) name: it must be left out; the others get names outside LFW
        lines.append(f"{i:07d} {name if i == 3 else f'Standin_Person_{i}'}")
    (casia / "names.txt").write_text("\n".join(lines) + "\n")
    aligned = base / "aligned112"
    assert main(["align", str(mini_lfw.train_tree), str(aligned), "--template", "112x112", "--device", "cpu"]) == 0
    assert main(["export", "rec", str(aligned), str(base / "rec")]) == 0
    lfw112 = base / "lfw112"
    assert main(["align", str(mini_lfw.images), str(lfw112), "--template", "112x112", "--purpose", "eval",
                 "--device", "cpu"]) == 0
    bins = base / "bins"
    assert main(["export", "bin", str(lfw112), str(mini_lfw.pairs), str(bins / "lfw.bin")]) == 0
    shutil.copy(bins / "lfw.bin", bins / "agedb_30.bin")
    only_agedb = base / "only_agedb"
    only_agedb.mkdir()
    shutil.copy(bins / "agedb_30.bin", only_agedb / "agedb_30.bin")
    return {"base": base, "casia": casia, "rec": base / "rec", "bins": bins, "only_agedb": only_agedb,
            "lfw": mini_lfw.root}


def result_of(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


def test_a_casia_style_tree_with_relative_paths(stand_in, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(stand_in["base"])
    out = Path(os.path.relpath(tmp_path / "run", stand_in["base"]))
    argv = ["reproduce", "casia_C_center", "--train", "CASIA-WebFace", "--lfw", str(stand_in["lfw"]),
            "--bin-dir", "only_agedb", "--out", str(out), *SHORT]
    assert main(argv) == 0
    result = result_of(tmp_path / "run")
    assert result["complete"] is False and "ran 2 of 28000 iterations" in result["incomplete_because"]
    assert "model.width: 1.0 -> 0.125" in result["incomplete_because"]
    assert result["data"]["kind"] == "tree" and result["data"]["identities"] == 11  # one LFW person left out
    assert result["data"]["lfw_identities_excluded"] is True
    assert any("1 identities also in LFW left out" in n for n in result["data"]["notes"])
    assert set(result["benchmarks"]) == {"lfw", "agedb_30"} and result["benchmarks"]["lfw"]["n_pairs"] == 40
    assert result["published"] == {"lfw": 0.9928} and result["template"] == "112x96"
    assert result["eval"]["flip"] == "concat" and result["eval"]["pca"] == 512
    assert result["h200_estimate_hours"] == pytest.approx(28000 * 256 / 10000 / 3600)
    assert "not measured" in result["h200_estimate_basis"]
    assert (tmp_path / "run" / "report.md").read_text().count("| lfw |") == 1
    assert all(p.is_relative_to(tmp_path / "run") or p == tmp_path / "run"
               for p in [Path(result["data"]["source"])])

    # the same command again resumes: nothing is trained twice
    assert main(argv) == 0
    assert result_of(tmp_path / "run")["iterations"] == 2
    # a changed names.txt makes another pack, and the run refuses to continue on other data
    names = stand_in["casia"] / "names.txt"
    original = names.read_text()
    names.write_text(original.replace(f"0000003 {names.read_text().splitlines()[2].split()[1]}", "0000003 Nobody_Known"))
    try:
        assert main(argv) == 2
        assert main(argv + ["--restart"]) == 0
        assert result_of(tmp_path / "run")["data"]["identities"] == 12
        assert len(list((tmp_path / "run" / "work").glob("train-packed-*"))) == 2
    finally:
        names.write_text(original)


def test_recordio_data_and_bin_sets(stand_in, tmp_path: Path):
    out = tmp_path / "rec_run"
    assert main(["reproduce", "casia_C_center", "--train", str(stand_in["rec"]), "--bin-dir", str(stand_in["bins"]),
                 "--out", str(out), *SHORT]) == 0
    result = result_of(out)
    assert result["data"]["kind"] == "recordio" and result["data"]["images"] == 72
    assert result["data"]["lfw_identities_excluded"] is None
    assert list(result["benchmarks"]) == ["lfw", "agedb_30"]  # the standard order
    # 112x112 data into the 112x96 recipe network: the template crop
    from faceverify.training.checkpoint import load_checkpoint

    assert load_checkpoint(out / "train" / "checkpoints" / "last.pt")["input_size"] == [112, 96]
    csv_path = record_row(result, tmp_path / "results")
    from faceverify.results import read_rows

    row = read_rows(csv_path)[-1]
    assert row["recipe"] == "casia_C_center" and row["complete"] == "False" and row["data_kind"] == "recordio"
    assert float(row["lfw_accuracy"]) == pytest.approx(result["benchmarks"]["lfw"]["accuracy"], abs=1e-6)
    assert float(row["agedb_30_auc"]) == pytest.approx(result["benchmarks"]["agedb_30"]["auc"], abs=1e-6)
    assert float(row["published_lfw"]) == pytest.approx(0.9928)  # Wen et al.'s model C
    assert "smoke runs" in (tmp_path / "results" / "reproduce.md").read_text()


def test_unknown_recipes_and_missing_benchmarks_are_clear(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(FileNotFoundError, match="known: .*casia_C_center"):
        load_recipe("no_such_recipe")
    monkeypatch.delenv("FACEVERIFY_DATA")
    assert main(["reproduce", "casia_C_center", "--train", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "give --lfw" in capsys.readouterr().err


def test_a_signal_stops_reproduce_before_any_evaluation_and_the_rerun_resumes(stand_in, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch, capsys):
    """SIGTERM mid-training: exit 130, the checkpoint saved, no result.json or report of the unfinished
    network (once, reproduce went on to evaluate and report it); the same command finishes the run."""
    import signal

    from faceverify import reproduce
    from faceverify.training.checkpoint import load_checkpoint

    out = tmp_path / "stopped"
    argv = ["reproduce", "casia_C_center", "--train", str(stand_in["rec"]), "--bin-dir", str(stand_in["bins"]),
            "--out", str(out), *SHORT]
    argv[argv.index("optim.max_iters=2")] = "optim.max_iters=3"
    real_train = reproduce.train

    def terminated(config, callbacks=None, restart=False):
        def send_sigterm(trainer) -> None:
            if trainer.state.step == 1:
                signal.raise_signal(signal.SIGTERM)
        return real_train(config, [send_sigterm], restart)

    monkeypatch.setattr(reproduce, "train", terminated)
    assert main(argv) == 130
    assert "stopped by signal at step 1 of 3" in capsys.readouterr().err
    assert not (out / "result.json").exists() and not (out / "report.md").exists()
    assert load_checkpoint(out / "train" / "checkpoints" / "last.pt")["train_state"]["step"] == 1
    monkeypatch.setattr(reproduce, "train", real_train)
    assert main(argv) == 0
    assert result_of(out)["iterations"] == 3


def test_bin_dir_junk_is_passed_over_and_a_bad_set_stops_before_training(stand_in, tmp_path: Path, capsys,
                                                                         monkeypatch: pytest.MonkeyPatch):
    from faceverify import reproduce

    bins = tmp_path / "bins"
    shutil.copytree(stand_in["bins"], bins)
    (bins / "._lfw.bin").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # what macOS leaves on a shared drive
    (bins / "old.bin").mkdir()  # a folder named like a set
    trained = []
    real_train = reproduce.train
    monkeypatch.setattr(reproduce, "train", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    argv = ["reproduce", "casia_C_center", "--train", str(stand_in["rec"]), "--bin-dir", str(bins), *SHORT]
    assert main([*argv, "--out", str(tmp_path / "ok")]) == 0
    assert set(json.loads((tmp_path / "ok" / "eval" / "benchmarks.json").read_text())) == {"lfw", "agedb_30"}
    (bins / "cfp_fp.bin").write_bytes(pickle.dumps(([b"a"] * 3, [True])))  # an odd image count
    trained.clear()
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "bad")]) == 2
    assert "cfp_fp.bin: 3 images, an odd number" in capsys.readouterr().err
    assert trained == []  # refused before any training
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["reproduce", "casia_C_center", "--train", str(stand_in["rec"]), "--bin-dir", str(empty),
                 "--out", str(tmp_path / "none")]) == 2
    assert "holds no .bin verification set" in capsys.readouterr().err


def test_reproduce_scores_an_ijb_release_beside_the_published_tar(stand_in, ijb_release: Path, tmp_path: Path):
    out = tmp_path / "ijb_run"
    assert main(["reproduce", "ms1m_iresnet50_arcface", "--train", str(stand_in["rec"]), "--bin-dir",
                 str(stand_in["only_agedb"]), "--ijb", str(ijb_release), "--out", str(out), *SHORT]) == 0
    result = result_of(out)
    ijbc = result["ijb"]["ijbc"]
    assert ijbc["published"] == {"1e-04": 0.9597, "1e-05": 0.9407} and ijbc["n_templates"] == 36
    assert set(ijbc["tar_at_far"]) == {"1e-06", "1e-05", "1e-04", "1e-03", "1e-02", "1e-01"}
    assert ijbc["test_mode"]["is_paper_default"] is True
    assert (out / "eval" / "ijbc" / "metrics.json").is_file()
    assert "IJBC 1:1" in (out / "report.md").read_text() and "95.97%" in (out / "report.md").read_text()
    row = record_row(result, tmp_path / "results")
    from faceverify.results import read_rows

    assert float(read_rows(row)[-1]["ijbc_tar_at_far_1e-04"]) == pytest.approx(ijbc["tar_at_far"]["1e-04"])


@pytest.mark.parametrize("recipe", ["webface42m_iresnet100_pfc", "glint360k_iresnet100_pfc"])
def test_the_partial_fc_recipes_run_on_recordio_data(stand_in, tmp_path: Path, recipe: str):
    out = tmp_path / recipe
    assert main(["reproduce", recipe, "--train", str(stand_in["rec"]), "--bin-dir", str(stand_in["only_agedb"]),
                 "--out", str(out), *SHORT, "amp=none", "model.width=0.0625"]) == 0
    result = result_of(out)
    assert result["data"]["kind"] == "recordio" and "agedb_30" in result["benchmarks"]
    assert "not measured" in result["h200_estimate_basis"] and result["h200_estimate_hours"] > 0
    from faceverify.training.checkpoint import load_checkpoint

    last = load_checkpoint(out / "train" / "checkpoints" / "last.pt")
    assert last["config"]["loss"]["partial_fc"]["sample_rate"] in (0.2, 1.0)
    assert last["config"]["model"]["backbone"] == "iresnet100"
    assert last["class_shards"]["num_classes"] == result["data"]["identities"]
