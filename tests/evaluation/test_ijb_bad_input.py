"""A damaged IJB release: one line naming the file and the line, exit status 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceverify.cli import main
from faceverify.data.ijb import read_ijb
from tests.evaluation.ijb_folder import toy_spec, write_ijb


def _random_embeddings(root: Path, spec, path: Path, dim: int = 8) -> Path:
    rng = np.random.default_rng(3)
    names = [n for n, _, _ in spec.images]
    np.savez(path, paths=np.array(names), embeddings=rng.normal(size=(len(names), dim)),
             embeddings_flip=rng.normal(size=(len(names), dim)))
    return path


def _eval(root: Path, tmp_path: Path, capsys, embeddings: Path | None = None) -> tuple[int, str]:
    embeddings = embeddings or _random_embeddings(root, toy_spec(), tmp_path / "emb.npz")
    code = main(["eval", "--ijb", str(root), "--embeddings", str(embeddings), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip().splitlines()[-1] if err.strip() else ""


def test_a_valid_toy_release_reads_and_scores(tmp_path: Path, capsys):
    root = write_ijb(tmp_path / "IJBC", toy_spec())
    release = read_ijb(root)
    assert release.prefix == "ijbc" and release.name == "IJB-C" and len(release.pairs) == 15
    assert release.landmarks.shape == (6, 5, 2) and release.labels.sum() == 3
    code, _ = _eval(root, tmp_path, capsys)
    assert code == 0 and (tmp_path / "out" / "metrics.json").is_file() and (tmp_path / "out" / "roc.png").is_file()


def _damage(tmp_path: Path, file_suffix: str, edit) -> Path:
    root = write_ijb(tmp_path / "IJBC", toy_spec())
    path = root / "meta" / f"ijbc_{file_suffix}"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")
    return root


CASES = [
    ("missing column", "face_tid_mid.txt", lambda ls: ls[:2] + [" ".join(ls[2].split()[:2])] + ls[3:],
     r"ijbc_face_tid_mid.txt line 3: expected '<image name> <template id> <media id>', got 2 field"),
    ("non-numeric template", "face_tid_mid.txt", lambda ls: ls[:1] + ["2.jpg x 102"] + ls[2:],
     r"ijbc_face_tid_mid.txt line 2: template id 'x' is not an integer"),
    ("image listed twice", "face_tid_mid.txt", lambda ls: ls + [ls[0].split()[0] + " 99 199"],
     r"ijbc_face_tid_mid.txt line 7: image 1.jpg listed twice \(first at line 1\)"),
    ("landmarks of the wrong length", "name_5pts_score.txt", lambda ls: ls[:3] + [" ".join(ls[3].split()[:-2])] + ls[4:],
     r"ijbc_name_5pts_score.txt line 4: expected .* \(12 fields\), got 10"),
    ("non-numeric score", "name_5pts_score.txt", lambda ls: ls[:1] + [" ".join(ls[1].split()[:-1] + ["high"])] + ls[2:],
     r"ijbc_name_5pts_score.txt line 2: 'high' is not a number"),
    ("pair template without image", "template_pair_label.txt", lambda ls: ls[:4] + ["1 777 0"] + ls[4:],
     r"ijbc_template_pair_label.txt line 5: template 777 has no image in .*ijbc_face_tid_mid.txt"),
    ("non-numeric pair", "template_pair_label.txt", lambda ls: ls[:2] + ["1 two 0"] + ls[2:],
     r"ijbc_template_pair_label.txt line 3: template id 'two' is not an integer"),
    ("short pair line", "template_pair_label.txt", lambda ls: ls[:6] + ["1 2"] + ls[6:],
     r"ijbc_template_pair_label.txt line 7: expected '<template id 1> <template id 2> <0\|1>', got 2"),
    ("bad label", "template_pair_label.txt", lambda ls: ls[:1] + ["1 2 3"] + ls[1:],
     r"ijbc_template_pair_label.txt line 2: label 3 is not 0 or 1"),
    ("empty pairs file", "template_pair_label.txt", lambda ls: [],
     r"ijbc_template_pair_label.txt: no template pairs"),
]


@pytest.mark.parametrize("name,suffix,edit,message", CASES, ids=[c[0] for c in CASES])
def test_damaged_meta_files_are_named_with_their_line(tmp_path: Path, capsys, name, suffix, edit, message):
    root = _damage(tmp_path, suffix, edit)
    code, line = _eval(root, tmp_path, capsys)
    assert code == 2
    assert __import__("re").search(message, line), line
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_mixed_ijbb_and_ijbc_files_are_refused(tmp_path: Path, capsys):
    root = write_ijb(tmp_path / "IJB", toy_spec())
    (root / "meta" / "ijbb_template_pair_label.txt").write_text("1 2 0\n")
    code, line = _eval(root, tmp_path, capsys)
    assert code == 2 and "mixed IJB-B and IJB-C files" in line and "ijbb_template_pair_label.txt" in line


def test_ijbb_prefix_is_read_from_the_files(tmp_path: Path, capsys):
    root = write_ijb(tmp_path / "IJBB", toy_spec(), prefix="ijbb")
    assert read_ijb(root).name == "IJB-B"


def test_missing_protocol_file_and_folder(tmp_path: Path, capsys):
    root = write_ijb(tmp_path / "IJBC", toy_spec())
    (root / "meta" / "ijbc_name_5pts_score.txt").unlink()
    code, line = _eval(root, tmp_path, capsys)
    assert code == 2 and "ijbc_name_5pts_score.txt is missing" in line
    code, line = _eval(tmp_path / "nowhere", tmp_path, capsys)
    assert code == 2 and "does not exist" in line


def test_an_image_without_landmarks_is_named(tmp_path: Path, capsys):
    root = _damage(tmp_path, "name_5pts_score.txt", lambda ls: ls[1:])
    code, line = _eval(root, tmp_path, capsys)
    assert code == 2 and "no landmarks for 1 image(s)" in line and "1.jpg" in line


def test_a_template_with_no_usable_embedding_is_an_error_never_dropped(tmp_path: Path, capsys):
    root = write_ijb(tmp_path / "IJBC", toy_spec())
    spec = toy_spec()
    emb = _random_embeddings(root, spec, tmp_path / "emb.npz")
    data = dict(np.load(emb))
    data["status"] = np.array(["ok", "unreadable: truncated JPEG", "ok", "ok", "ok", "ok"])
    np.savez(emb, **data)
    code, line = _eval(root, tmp_path, capsys, emb)
    assert code == 2 and "template 2: 2.jpg (unreadable: truncated JPEG)" in line


def test_one_n_csv_defects_are_named(tmp_path: Path, capsys):
    spec = toy_spec()
    spec.galleries = {"G1": [(1, 0, "a.jpg"), (11, 1, "b.jpg")]}
    spec.probes = [(2, 0, "c.jpg"), (12, 1, "d.jpg"), (22, 2, "e.jpg"), (2, 5, "f.jpg")]
    root = write_ijb(tmp_path / "IJBC", spec)
    code, line = _eval(root, tmp_path, capsys)
    assert code == 2 and "ijbc_1N_probe_mixed.csv line 5: template 2 has subject 5, but 0 at line 2" in line
    spec.probes = spec.probes[:3]
    write_ijb(root, spec)
    (root / "meta" / "ijbc_1N_gallery_G2.csv").write_text("TEMPLATE_ID,SUBJECT_ID\n404,9\n")
    code, line = _eval(root, tmp_path, capsys)
    assert code == 2 and "ijbc_1N_gallery_G2.csv line 2: template 404 has no image" in line
    (root / "meta" / "ijbc_1N_gallery_G2.csv").unlink()
    code, _ = _eval(root, tmp_path, capsys)
    assert code == 0
    import json

    ident = json.loads((tmp_path / "out" / "metrics.json").read_text())["identification"]
    assert set(ident) == {"G1", "mean"} and ident["G1"]["n_mated"] == 2 and ident["G1"]["n_nonmated"] == 1


def test_ijb_flags_and_sources_are_checked(tmp_path: Path, capsys):
    root = write_ijb(tmp_path / "IJBC", toy_spec())
    emb = _random_embeddings(root, toy_spec(), tmp_path / "emb.npz")
    base = ["eval", "--ijb", str(root), "--embeddings", str(emb), "--out", str(tmp_path / "o")]
    assert main(base + ["--flip", "concat"]) == 2
    assert "flip must be sum or none" in capsys.readouterr().err
    assert main(base + ["--pca", "4"]) == 2
    assert "--pca belong to the LFW/.bin evaluation" in capsys.readouterr().err
    assert main(["eval", "--embeddings", str(emb), "--out", str(tmp_path / "o"), "--unit-norm"]) == 2
    assert "--unit-norm goes with --ijb DIR" in capsys.readouterr().err
