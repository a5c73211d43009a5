"""insightface ``.bin`` verification sets: round trips with bytes and NumPy elements, the
consecutive folds, malformed and malicious files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from faceverify.data.binsets import BinSetError, consecutive_folds, find_bins, read_bin, write_bin


def images(n: int, size: int = 24) -> list[np.ndarray]:
    rng = np.random.default_rng(n)
    return [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("as_arrays", [False, True])
def test_round_trip_with_bytes_or_numpy_elements(tmp_path: Path, as_arrays: bool):
    pictures = images(8)
    write_bin(tmp_path / "cfp_fp.bin", pictures, [True, False, True, False], encoding="png", as_arrays=as_arrays)
    with open(tmp_path / "cfp_fp.bin", "rb") as handle:
        raw_images, _ = pickle.load(handle)
    assert isinstance(raw_images[0], np.ndarray if as_arrays else bytes)
    binset = read_bin(tmp_path / "cfp_fp.bin")
    assert binset.name == "cfp_fp" and binset.n_pairs == 4 and binset.issame.tolist() == [True, False, True, False]
    np.testing.assert_array_equal(binset.decode_all(), np.stack(pictures))
    pairs = binset.pairs()
    assert pairs.keys_a[1] == "cfp_fp/000002" and pairs.keys_b[1] == "cfp_fp/000003"
    assert binset.n_folds == 4 and pairs.fold.tolist() == [0, 1, 2, 3]  # fewer than 10 pairs: one per fold


def test_python2_style_pickles_load(tmp_path: Path):
    encoded = [b"\x89PNG fake" for _ in range(4)]
    with open(tmp_path / "old.bin", "wb") as handle:
        pickle.dump((encoded, [True, False]), handle, protocol=2)  # bytes as _codecs.encode(..., 'latin1')
    assert read_bin(tmp_path / "old.bin").images == encoded


def test_folds_are_ten_consecutive_blocks_the_first_ones_longer():
    assert consecutive_folds(6000).tolist() == np.repeat(np.arange(10), 600).tolist()
    folds = consecutive_folds(25)
    assert np.bincount(folds).tolist() == [3, 3, 3, 3, 3, 2, 2, 2, 2, 2] and np.all(np.diff(folds) >= 0)


@pytest.mark.parametrize("content,fragment", [
    (None, "an odd number"), ("mismatch", "6 images for 2 issame values"), (b"", "is empty"),
    (b"not a pickle at all", "not a readable verification set"), ("nopairs", "no pairs"),
    ("evil", "posix.system is not allowed"),
])
def test_malformed_or_malicious_files_are_refused(tmp_path: Path, content, fragment: str):
    path = tmp_path / "set.bin"
    if content is None:
        path.write_bytes(pickle.dumps(([b"a"] * 3, [True])))
    elif content == "mismatch":
        path.write_bytes(pickle.dumps(([b"a"] * 6, [True, False])))
    elif content == "nopairs":
        path.write_bytes(pickle.dumps(([], [])))
    elif content == "evil":
        class Evil:
            def __reduce__(self):
                return os.system, ("touch " + str(tmp_path / "pwned"),)

        path.write_bytes(pickle.dumps((Evil(), [])))
    else:
        path.write_bytes(content)
    with pytest.raises(BinSetError, match=fragment):
        read_bin(path)
    assert not (tmp_path / "pwned").exists()


def test_find_bins_puts_the_standard_sets_first(tmp_path: Path):
    for name in ("zzz", "agedb_30", "cfp_fp", "lfw"):
        write_bin(tmp_path / f"{name}.bin", images(2), [True], encoding="png")
    assert [p.stem for p in find_bins(tmp_path)] == ["lfw", "cfp_fp", "agedb_30", "zzz"]
