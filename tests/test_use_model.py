"""Using a model: ``faceverify verify`` (two photos, CSV of pairs), ``embed``, ``export`` and the Python
API, with dlib, a checkpoint and its exports, on real photos; bad input gets one line and exit 2
(or a recorded status in batch runs)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import faceverify
from faceverify.cli import main
from faceverify.data.lfw import read_pairs
from faceverify.use.model import Calibration, calibration_path, file_sha256, load_model, write_calibration
from faceverify.training.trainer import train
from tests.training.conftest import small_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(faces_dir: Path) -> dict[str, Path]:
    tests = faces_dir / "face_recognition_samples" / "tests" / "test_images"
    return {"obama": tests / "obama.jpg", "obama2": tests / "obama2.jpg", "biden": tests / "biden.jpg",
            "two": faces_dir / "face_recognition_samples" / "examples" / "two_people.jpg",
            "noise": faces_dir / "facenet_pytorch_samples" / "test_images" / "noise" / "1.jpg"}


@pytest.fixture(scope="module")
def checkpoint(att_packed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "run"
    train(small_config(att_packed, out, optim={"max_iters": 20, "milestones": [100], "lr": 0.03}))
    return out / "checkpoints" / "last.pt"


def last_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.rstrip("\n").split("\n")[-1]


# ----------------------------------------------------------------------------- dlib
def test_dlib_verify_exit_codes_and_json(photos, capsys):
    assert main(["verify", str(photos["obama"]), str(photos["obama2"]), "--model", "dlib"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("same person:") and "minus euclidean distance" in out and "dlib's documented rule" in out
    assert main(["verify", str(photos["obama"]), str(photos["biden"]), "--model", "dlib", "--json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["same"] is False and verdict["threshold"] == -0.6 and verdict["similarity"] < -0.6
    assert {"similarity", "threshold", "same", "faces_a", "faces_b"} <= set(verdict)


def test_all_faces_compares_every_face(photos, capsys):
    assert main(["verify", str(photos["two"]), str(photos["obama"]), "--model", "dlib", "--json",
                 "--all-faces"]) in (0, 1)
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["faces_a"] == 2 and len(verdict["pairs"]) == 2
    assert verdict["similarity"] == max(p["similarity"] for p in verdict["pairs"])


@pytest.mark.parametrize("case,fragment", [("noise", "no face found in"), ("missing", "does not exist"),
                                           ("truncated", "cannot read image")])
def test_bad_photos_are_one_line_exit_2_naming_the_photo(photos, tmp_path: Path, capsys, case: str,
                                                         fragment: str):
    if case == "noise":
        bad = photos["noise"]
    elif case == "missing":
        bad = tmp_path / "nowhere.jpg"
    else:
        bad = tmp_path / "cut.jpg"
        bad.write_bytes(photos["obama"].read_bytes()[:2000])
    assert main(["verify", str(photos["obama"]), str(bad), "--model", "dlib"]) == 2
    line = last_line(capsys)
    assert line.startswith("faceverify verify: error:") and fragment in line and str(bad) in line


# ----------------------------------------------------------------------------- checkpoints and exports
def test_a_checkpoint_without_threshold_says_so_and_takes_one(checkpoint: Path, photos, capsys):
    assert main(["verify", str(photos["obama"]), str(photos["obama2"]), "--model", str(checkpoint)]) == 2
    assert "has no calibrated threshold" in last_line(capsys)
    code = main(["verify", str(photos["obama"]), str(photos["obama2"]), "--model", str(checkpoint),
                 "--threshold", "-1.5", "--json"])
    verdict = json.loads(capsys.readouterr().out)
    assert code == 0 and verdict["same"] is True and verdict["threshold_source"] == "given (--threshold)"
    # the similarity is the cosine of the model's flip-concatenated features of the two chosen faces
    model = load_model(checkpoint, device="cpu")
    a, b = model.embed([photos["obama"], photos["obama2"]])
    assert verdict["similarity"] == pytest.approx(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), abs=1e-6)
    assert model.template == "112x96" and model.input_size == (56, 48) and a.shape == (2 * 64,)


def test_eval_calibrates_and_verify_matches_the_evaluator(checkpoint: Path, mini_lfw, tmp_path: Path, capsys):
    """The threshold comes from the LFW protocol, and verify scores a pair exactly as the evaluator
    scores the same pair from an aligned tree (same alignment, crop fit, flip and cosine)."""
    model_path = tmp_path / "model.pt"
    shutil.copy(checkpoint, model_path)
    aligned = tmp_path / "aligned"
    assert main(["align", str(mini_lfw.images), str(aligned), "--purpose", "eval", "--device", "cpu"]) == 0
    assert main(["eval", "--checkpoint", str(model_path), "--lfw", str(aligned), "--pairs", str(mini_lfw.pairs),
                 "--out", str(tmp_path / "eval"), "--flip", "concat", "--device", "cpu"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    calibration = json.loads(calibration_path(model_path).read_text())
    assert calibration["threshold"] == pytest.approx(np.mean(metrics["fold_thresholds"]))
    assert calibration["accuracy"] == metrics["accuracy"] and calibration["flip"] == "concat"
    pairs = read_pairs(mini_lfw.pairs)
    saved = np.load(tmp_path / "eval" / "embeddings.npz")
    row = {p.rsplit(".", 1)[0]: i for i, p in enumerate(saved["paths"].tolist())}
    features = np.concatenate([saved["embeddings"], saved["embeddings_flip"]], axis=1)
    for i in (0, 2):  # a matched and a mismatched pair
        a, b = pairs.keys_a[i], pairs.keys_b[i]
        fa, fb = features[row[a]], features[row[b]]
        expected = float(fa @ fb / np.linalg.norm(fa) / np.linalg.norm(fb))
        capsys.readouterr()
        code = main(["verify", str(mini_lfw.images / f"{a}.jpg"), str(mini_lfw.images / f"{b}.jpg"),
                     "--model", str(model_path), "--json"])
        verdict = json.loads(capsys.readouterr().out)
        assert verdict["similarity"] == pytest.approx(expected, abs=2e-3)
        assert verdict["threshold"] == pytest.approx(calibration["threshold"])
        assert code == (0 if verdict["similarity"] > verdict["threshold"] else 1)


@pytest.mark.parametrize("fmt,suffix", [("torchscript", ".ts"), ("onnx", ".onnx")])
def test_export_round_trips_with_its_metadata(checkpoint: Path, photos, tmp_path: Path, capsys, fmt: str,
                                              suffix: str):
    model_path = tmp_path / "model.pt"
    shutil.copy(checkpoint, model_path)
    write_calibration(model_path, Calibration(0.25, "cosine", "concat", 0.9, "a test threshold"))
    out = tmp_path / f"exported{suffix}"
    assert main(["export", str(model_path), str(out), "--format", fmt]) == 0
    printed = capsys.readouterr().out
    difference = float(printed.rsplit(" ", 1)[-1])
    assert difference <= 1e-4
    exported = load_model(out)
    assert exported.kind == fmt and exported.input_size == (56, 48) and exported.template == "112x96"
    assert exported.calibration == Calibration(0.25, "cosine", "concat", 0.9, "a test threshold",
                                               checkpoint_sha256=file_sha256(model_path))
    original = load_model(model_path, device="cpu")
    va = original.verify(photos["obama"], photos["biden"])
    vb = exported.verify(photos["obama"], photos["biden"])
    assert vb.similarity == pytest.approx(va.similarity, abs=1e-4) and vb.same == va.same
    assert vb.threshold == 0.25


@pytest.mark.parametrize("content,fragment", [(b"", "is empty"), (b"not a model at all", "is not a faceverify model"),
                                              ("zip", "is not a faceverify model")])
def test_a_model_file_of_another_kind_is_one_line(photos, tmp_path: Path, capsys, content, fragment: str):
    path = tmp_path / "model.pt"
    if content == "zip":
        import torch

        torch.save({"some": "dict"}, path)  # a torch file, but not a faceverify checkpoint
    else:
        path.write_bytes(content)
    assert main(["verify", str(photos["obama"]), str(photos["obama2"]), "--model", str(path)]) == 2
    assert fragment in last_line(capsys)


def test_a_template_other_than_the_models_is_refused(checkpoint: Path, photos, capsys):
    assert main(["verify", str(photos["obama"]), str(photos["obama2"]), "--model", str(checkpoint), "--template",
                 "112x112", "--threshold", "0"]) == 2
    assert "was trained on 112x96 crops" in last_line(capsys)


# ----------------------------------------------------------------------------- many photos
def test_verify_pairs_csv_embeds_each_photo_once_and_records_failures(photos, tmp_path: Path, monkeypatch):
    from faceverify.use.model import FaceModel

    seen = []
    original = FaceModel.faces_many

    def counting(self, images):
        seen.append(len(images))
        return original(self, images)

    monkeypatch.setattr(FaceModel, "faces_many", counting)
    pairs = tmp_path / "pairs.csv"
    shutil.copy(photos["obama"], tmp_path / "o.jpg")
    rows = [("o.jpg", str(photos["obama2"]), "x1"), ("o.jpg", str(photos["biden"]), "x2"),
            ("o.jpg", "gone.jpg", "x3"), (str(photos["noise"]), "o.jpg", "x4")]
    with open(pairs, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "note"])
        writer.writerows(rows)
    assert main(["verify", "--pairs", str(pairs), "--model", "dlib", "--out", str(tmp_path / "out.csv")]) == 0
    with open(tmp_path / "out.csv", newline="") as handle:
        results = list(csv.DictReader(handle))
    assert [r["note"] for r in results] == ["x1", "x2", "x3", "x4"]
    assert [r["same"] for r in results] == ["true", "false", "", ""]
    assert results[2]["status"] == "b: missing file" and results[3]["status"] == "a: no face found"
    assert sum(seen) == 4  # o.jpg, obama2, biden, noise: each read and detected once (gone.jpg never)


def test_embed_resumes_after_a_kill_to_the_same_result(checkpoint: Path, mini_lfw, tmp_path: Path, monkeypatch):
    from faceverify.use import photos as photos_module

    args = ["embed", str(mini_lfw.images), "--model", str(checkpoint), "--device", "cpu", "--chunk", "25"]
    out = tmp_path / "emb.npz"
    real = photos_module._crops
    calls = {"n": 0}

    def dying(model, root, rels):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed in the third chunk
        return real(model, root, rels)

    monkeypatch.setattr(photos_module, "_crops", dying)
    with pytest.raises(KeyboardInterrupt):
        main(args + ["--out", str(out)])
    assert not out.exists() and len(list((tmp_path / "emb.npz.partial").glob("chunk-*.npz"))) == 2
    monkeypatch.setattr(photos_module, "_crops", real)
    assert main(args + ["--out", str(out)]) == 0
    assert not (tmp_path / "emb.npz.partial").exists()
    straight = tmp_path / "straight.npz"
    assert main(args + ["--out", str(straight)]) == 0
    a, b = np.load(out), np.load(straight)
    assert a["paths"].tolist() == b["paths"].tolist() and len(a["paths"]) == 68
    np.testing.assert_array_equal(a["embeddings"], b["embeddings"])
    np.testing.assert_array_equal(a["embeddings_flip"], b["embeddings_flip"])
    # another model into the same unfinished output is refused, not mixed in
    (tmp_path / "again.npz.partial").mkdir()
    (tmp_path / "again.npz.partial" / "meta.json").write_text('{"model": "other"}')
    assert main(["embed", str(mini_lfw.images), "--model", str(checkpoint), "--out", str(tmp_path / "again.npz")]) == 2


def test_embed_output_evaluates_with_the_lfw_protocol(mini_lfw, tmp_path: Path):
    out = tmp_path / "emb.npz"
    assert main(["embed", str(mini_lfw.images), "--model", "dlib", "--out", str(out)]) == 0
    data = np.load(out)
    assert len(data["paths"]) == 68 and set(data["status"]) == {"ok"} and data["paths"][0].count("/") == 1
    assert main(["eval", "--embeddings", str(out), "--pairs", str(mini_lfw.pairs), "--out", str(tmp_path / "e"),
                 "--metric", "euclidean"]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["n_pairs"] == 40 and metrics["accuracy"] >= 0.9  # dlib on 40 real LFW pairs
    # the quality column (the feature norm) gives the error-versus-reject curve
    np.testing.assert_allclose(data["quality"], np.linalg.norm(data["embeddings"], axis=1), rtol=1e-6)
    erc = metrics["erc"]
    assert erc["quality"] == "feature norm" and len(erc["fnmr"]) == len(erc["reject_fractions"]) == 11
    assert (tmp_path / "e" / "erc.png").is_file() and "Error versus reject" in (tmp_path / "e" / "report.md").read_text()


def test_embed_records_photos_it_cannot_use_and_eval_names_them(photos, tmp_path: Path, capsys):
    listing = tmp_path / "list.txt"
    (tmp_path / "empty.jpg").write_bytes(b"")
    listing.write_text(f"{photos['obama']}\n{photos['noise']}\nempty.jpg\nnot_there.jpg\n")
    assert main(["embed", str(listing), "--model", "dlib", "--out", str(tmp_path / "e.npz")]) == 0
    data = np.load(tmp_path / "e.npz")
    assert data["status"].tolist() == ["ok", "no face found", "unreadable: zero-byte file", "missing file"]
    from faceverify.evaluation.lfw_eval import EmbeddingSet

    embeddings = EmbeddingSet.load(tmp_path / "e.npz")
    assert len(embeddings.keys) == 1 and embeddings.excluded[str(photos["noise"]).rsplit(".", 1)[0]] == "no face found"


# ----------------------------------------------------------------------------- an output that is an input
def test_export_onto_its_own_checkpoint_is_refused_and_keeps_it(checkpoint: Path, tmp_path: Path, capsys):
    model_path = tmp_path / "model.pt"
    shutil.copy(checkpoint, model_path)
    calibration = write_calibration(model_path, Calibration(0.25, "cosine", "concat", 0.9, "a test threshold"))
    before = model_path.read_bytes(), calibration.read_bytes()
    (tmp_path / "sub").mkdir()
    for out in (model_path, tmp_path / "sub" / ".." / "model.pt", calibration):
        assert main(["export", str(model_path), str(out), "--format", "torchscript"]) == 2
        assert "an input of this command" in last_line(capsys)
    link = tmp_path / "link.pt"
    link.symlink_to(model_path)
    assert main(["export", str(link), str(model_path)]) == 2  # another spelling of the same file
    assert (model_path.read_bytes(), calibration.read_bytes()) == before
    assert load_model(model_path).kind == "checkpoint"


def test_embed_and_verify_never_write_over_their_inputs(photos, tmp_path: Path, capsys):
    shutil.copy(photos["obama"], tmp_path / "o.jpg")
    shutil.copy(photos["obama2"], tmp_path / "o2.jpg")
    listing = tmp_path / "list.txt"
    listing.write_text("o.jpg\no2.jpg\n")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a,b\no.jpg,o2.jpg\n")
    before = {p: p.read_bytes() for p in (listing, pairs, tmp_path / "o.jpg", tmp_path / "o2.jpg")}
    for out in (listing, tmp_path / "o2.jpg"):
        assert main(["embed", str(listing), "--model", "dlib", "--out", str(out)]) == 2
        assert "an input of this command" in last_line(capsys)
    assert main(["embed", str(tmp_path), "--model", "dlib", "--out", str(tmp_path / "o.jpg")]) == 2
    for out in (pairs, tmp_path / "o.jpg"):
        assert main(["verify", "--pairs", str(pairs), "--model", "dlib", "--out", str(out)]) == 2
        assert "an input of this command" in last_line(capsys)
    assert {p: p.read_bytes() for p in before} == before
    assert not list(tmp_path.glob("*.partial"))


def test_verify_pairs_keeps_input_columns_named_like_its_own(photos, tmp_path: Path, capsys):
    pairs = tmp_path / "pairs.csv"
    with open(pairs, "w", newline="") as handle:  # a ground-truth "same", and a column already called input_status
        csv.writer(handle).writerows([["a", "b", "same", "status", "input_status"],
                                      [str(photos["obama"]), str(photos["obama2"]), "1", "checked", "x"],
                                      [str(photos["obama"]), str(photos["biden"]), "0", "", "y"]])
    first = tmp_path / "first.csv"
    assert main(["verify", "--pairs", str(pairs), "--model", "dlib", "--out", str(first)]) == 0
    assert "its column same is kept as input_same" in capsys.readouterr().out
    with open(first, newline="") as handle:
        header = next(csv.reader(handle))
        handle.seek(0)
        rows = list(csv.DictReader(handle))
    assert header == ["a", "b", "similarity", "threshold", "same", "status", "input_same", "input_input_status",
                      "input_status"]
    assert [r["input_same"] for r in rows] == ["1", "0"] and [r["same"] for r in rows] == ["true", "false"]
    assert [r["input_input_status"] for r in rows] == ["checked", ""] and [r["input_status"] for r in rows] == ["x", "y"]
    second = tmp_path / "second.csv"  # its own output as input: the earlier results are kept, no column twice
    assert main(["verify", "--pairs", str(first), "--model", "dlib", "--out", str(second)]) == 0
    with open(second, newline="") as handle:
        header = next(csv.reader(handle))
    assert len(header) == len(set(header)) == 13 and "input_similarity" in header


def test_export_rec_and_bin_never_write_among_or_over_their_inputs(mini_lfw, tmp_path: Path, capsys):
    tree = tmp_path / "data" / "lfw_112x96"  # the refusals come before any image is read
    shutil.copytree(mini_lfw.images, tree)
    listing = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for out in (tree, tree / "rec", tree.parent):
        assert main(["export", "rec", str(tree), str(out)]) == 2
        assert "must be separate" in last_line(capsys)
    pairs = tmp_path / "pairs.txt"
    shutil.copy(mini_lfw.pairs, pairs)
    before = pairs.read_bytes()
    photo = next(tree.glob("*/*.jpg"))
    for out in (pairs, photo):
        assert main(["export", "bin", str(tree), str(pairs), str(out)]) == 2
        assert "an input of this command" in last_line(capsys)
    assert pairs.read_bytes() == before
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p != pairs) == listing


# ----------------------------------------------------------------------------- the Python API
def test_the_readme_python_example(photos):
    model = faceverify.load_model("dlib")
    verdict = model.verify(photos["obama"], photos["obama2"])
    assert verdict.same and verdict.threshold == -0.6
    features = model.embed([photos["obama"], photos["biden"]])
    assert features.shape == (2, 128)
    assert model.describe()["template"] == "dlib"


# ----------------------------------------------------------------------------- thresholds, calibrations, damaged files
def test_a_threshold_that_is_not_finite_is_refused_and_one_outside_the_range_is_warned(checkpoint: Path, photos,
                                                                                      capsys):
    for value in ("nan", "inf", "-inf"):
        assert main(["verify", str(photos["obama"]), str(photos["obama2"]), "--model", str(checkpoint),
                     f"--threshold={value}"]) == 2
        assert "a threshold must be a finite number" in last_line(capsys)
    assert main(["verify", str(photos["obama"]), str(photos["obama2"]), "--model", str(checkpoint),
                 "--threshold", "1.5"]) == 1
    assert "outside the range of cosine scores [-1, 1]: every pair will be different" in capsys.readouterr().err
    assert main(["verify", str(photos["obama"]), str(photos["obama2"]), "--model", "dlib", "--threshold", "0.3"]) == 1
    assert "outside the range of euclidean scores [-inf, 0]" in capsys.readouterr().err


def test_a_calibration_made_before_more_training_is_not_used(att_packed: Path, photos, tmp_path: Path, capsys):
    out = tmp_path / "run"
    train(small_config(att_packed, out, optim={"max_iters": 3, "milestones": [100]}))
    last = out / "checkpoints" / "last.pt"
    write_calibration(last, Calibration(0.2, "cosine", "concat", 0.9, "a threshold for step 3"))
    assert main(["verify", str(photos["obama"]), str(photos["obama2"]), "--model", str(last)]) in (0, 1)
    capsys.readouterr()
    train(small_config(att_packed, out, optim={"max_iters": 5, "milestones": [100]}))  # trained on: step 5
    assert main(["verify", str(photos["obama"]), str(photos["obama2"]), "--model", str(last)]) == 2
    line = last_line(capsys)
    assert "was made for another state of" in line and "re-run faceverify eval --checkpoint" in line
    assert main(["verify", str(photos["obama"]), str(photos["obama2"]), "--model", str(last),
                 "--threshold", "0.2"]) in (0, 1)  # an explicit threshold still decides
    capsys.readouterr()
    assert main(["export", str(last), str(tmp_path / "m.ts")]) == 0
    assert "no threshold exported" in capsys.readouterr().err
    assert load_model(tmp_path / "m.ts").calibration is None


def test_a_truncated_model_and_an_export_into_a_folder_are_one_line(checkpoint: Path, photos, tmp_path: Path,
                                                                    capsys):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(checkpoint.read_bytes()[:100000])
    assert main(["verify", str(photos["obama"]), str(photos["obama2"]), "--model", str(cut), "--threshold", "0"]) == 2
    assert "is damaged or truncated" in last_line(capsys)
    assert main(["export", str(cut), str(tmp_path / "x.ts")]) == 2
    assert "is damaged or truncated" in last_line(capsys)
    (tmp_path / "folder").mkdir()
    assert main(["export", str(checkpoint), str(tmp_path / "folder")]) == 2
    assert "is a folder; give the export's file name" in last_line(capsys)
    assert list((tmp_path / "folder").iterdir()) == []


def test_a_resumed_embed_embeds_a_photo_fixed_since_again(photos, tmp_path: Path, monkeypatch):
    from faceverify.use import photos as photos_module

    (tmp_path / "p").mkdir()
    shutil.copy(photos["obama"], tmp_path / "p" / "a.jpg")
    (tmp_path / "p" / "b.jpg").write_bytes(b"")  # broken at first
    shutil.copy(photos["biden"], tmp_path / "p" / "c.jpg")
    real, calls = photos_module._crops, {"n": 0}

    def dying(model, root, rels):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed in the third chunk, after a and b were written
        return real(model, root, rels)

    monkeypatch.setattr(photos_module, "_crops", dying)
    args = ["embed", str(tmp_path / "p"), "--model", "dlib", "--chunk", "1", "--out", str(tmp_path / "e.npz")]
    with pytest.raises(KeyboardInterrupt):
        main(args)
    shutil.copy(photos["obama2"], tmp_path / "p" / "b.jpg")  # the photo is fixed before the re-run
    monkeypatch.setattr(photos_module, "_crops", real)
    assert main(args) == 0
    assert np.load(tmp_path / "e.npz")["status"].tolist() == ["ok", "ok", "ok"]


def test_a_pairs_csv_saved_by_excel_with_a_bom_is_read(photos, tmp_path: Path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"a,b\n{photos['obama']},{photos['obama2']}\n", encoding="utf-8-sig")
    assert pairs.read_bytes().startswith(b"\xef\xbb\xbf")
    assert main(["verify", "--pairs", str(pairs), "--model", "dlib", "--out", str(tmp_path / "out.csv")]) == 0
    with open(tmp_path / "out.csv", newline="") as handle:
        assert next(csv.DictReader(handle))["same"] == "true"
