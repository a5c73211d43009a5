"""LFW protocol files: real counts from $FACEVERIFY_DATA, malformed files, missing images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceverify.data.lfw import (
    MissingImagesError,
    ProtocolFileError,
    identity_of_key,
    people_keys,
    read_pairs,
    read_people,
    resolve_image_paths,
)


def test_view2_has_ten_folds_of_300_plus_300(lfw_dir: Path):
    pairs = read_pairs(lfw_dir / "pairs.txt")
    assert len(pairs) == 6000 and pairs.n_folds == 10
    for k in range(10):
        in_fold = pairs.fold == k
        assert in_fold.sum() == 600
        assert pairs.same[in_fold].sum() == 300
        # matched pairs come first inside each fold, as in the file
        assert pairs.same[in_fold][:300].all() and not pairs.same[in_fold][300:].any()
    assert pairs.keys_a[0] == "Abel_Pacheco/Abel_Pacheco_0001"
    assert pairs.keys_b[0] == "Abel_Pacheco/Abel_Pacheco_0004"
    assert len(pairs.keys) == 7701


@pytest.mark.parametrize("name,count", [("pairsDevTrain.txt", 2200), ("pairsDevTest.txt", 1000)])
def test_view1_files_read_as_one_fold(lfw_dir: Path, name: str, count: int):
    pairs = read_pairs(lfw_dir / name)
    assert len(pairs) == count and pairs.n_folds == 1
    assert pairs.same.sum() == count // 2


def test_people_sets_are_identity_disjoint_and_hold_every_image(lfw_dir: Path, lfw_images: Path):
    sets = read_people(lfw_dir / "people.txt")
    assert len(sets) == 10
    names = [set(s) for s in sets]
    assert sum(len(s) for s in names) == len(set().union(*names))  # disjoint
    assert sum(sum(s.values()) for s in sets) == 13233
    keys = [k for s in sets for k in people_keys(s)]
    assert len(keys) == 13233
    resolved = resolve_image_paths(lfw_images, keys)  # every listed image exists
    assert len(resolved) == 13233
    pairs = read_pairs(lfw_dir / "pairs.txt")
    for k in range(10):
        fold_people = {identity_of_key(key) for i in np.flatnonzero(pairs.fold == k)
                       for key in (pairs.keys_a[i], pairs.keys_b[i])}
        assert fold_people <= names[k]


def test_view1_people_files(lfw_dir: Path):
    train = read_people(lfw_dir / "peopleDevTrain.txt")
    test = read_people(lfw_dir / "peopleDevTest.txt")
    assert len(train) == len(test) == 1
    assert len(train[0]) == 4038 and len(test[0]) == 1711
    assert not set(train[0]) & set(test[0])


def write(tmp_path: Path, text: str, name: str = "pairs.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD_VIEW2 = "2\t1\nA\t1\t2\nA\t1\tB\t1\nC\t1\t3\nC\t2\tD\t4\n"


def test_small_well_formed_view2(tmp_path: Path):
    pairs = read_pairs(write(tmp_path, GOOD_VIEW2))
    assert pairs.n_folds == 2 and pairs.same.tolist() == [True, False, True, False]
    assert pairs.fold.tolist() == [0, 0, 1, 1]
    assert pairs.keys_b[3] == "D/D_0004"


@pytest.mark.parametrize(
    "text,line,fragment",
    [
        ("ten\t300\n", 1, "not an integer"),
        ("1 2 3\n", 1, "header"),
        ("", 1, "empty file"),
        ("2\t1\nA\t1\t2\nA\t1\tB\t1\nC\t1\t3\n", 5, "promises 4 pair lines"),
        ("2\t1\nA\t1\nA\t1\tB\t1\nC\t1\t3\nC\t2\tD\t4\n", 2, "matched pair"),
        ("2\t1\nA\t1\t2\nA\t1\t2\nC\t1\t3\nC\t2\tD\t4\n", 3, "mismatched pair"),
        ("2\t1\nA\t1\t2\nA\t1\tB\tx\nC\t1\t3\nC\t2\tD\t4\n", 3, "not an integer"),
        ("2\t1\nA\t1\t2\nA\t1\tA\t2\nC\t1\t3\nC\t2\tD\t4\n", 3, "same person"),
        ("2\t1\nA\t0\t2\nA\t1\tB\t1\nC\t1\t3\nC\t2\tD\t4\n", 2, ">= 1"),
    ],
)
def test_malformed_pairs_files_name_the_line(tmp_path: Path, text: str, line: int, fragment: str):
    path = write(tmp_path, text)
    with pytest.raises(ProtocolFileError) as info:
        read_pairs(path)
    message = str(info.value)
    assert f"{path} line {line}:" in message
    assert fragment in message


@pytest.mark.parametrize(
    "text,line",
    [("2\n1\nA\t1\n", 4), ("2\nx\n", 2), ("1\n2\nA\t1\n", 4), ("2\nA\t1\nB\n", 3), ("1\nA\t1\nB\t2\n", 3)],
)
def test_malformed_people_files_name_the_line(tmp_path: Path, text: str, line: int):
    path = write(tmp_path, text, "people.txt")
    with pytest.raises(ProtocolFileError, match=f"line {line}:"):
        read_people(path)


def test_missing_images_are_counted_and_listed_never_skipped(tmp_path: Path):
    for name, numbers in {"A": [1, 2], "B": [1]}.items():
        (tmp_path / name).mkdir()
        for n in numbers:
            (tmp_path / name / f"{name}_{n:04d}.png").write_bytes(b"x")
    keys = ["A/A_0001", "A/A_0002", "B/B_0001"] + [f"C/C_{i:04d}" for i in range(1, 13)] + ["A/A_0003"]
    with pytest.raises(MissingImagesError) as info:
        resolve_image_paths(tmp_path, keys)
    err = info.value
    assert len(err.missing) == 13
    message = str(err)
    assert message.startswith("13 image(s)")
    assert "C/C_0001" in message and "C/C_0010" in message and "C/C_0011" not in message
    assert "and 3 more" in message
    found = resolve_image_paths(tmp_path, keys[:3])
    assert found["A/A_0001"].suffix == ".png"


def test_extension_found_on_disk_prefers_jpg(tmp_path: Path):
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "A_0001.png").write_bytes(b"x")
    (tmp_path / "A" / "A_0001.jpg").write_bytes(b"x")
    (tmp_path / "A" / "A_0002.webp").write_bytes(b"x")
    found = resolve_image_paths(tmp_path, ["A/A_0001", "A/A_0002"])
    assert found["A/A_0001"].name == "A_0001.jpg"
    assert found["A/A_0002"].name == "A_0002.webp"
