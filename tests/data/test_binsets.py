"""insightface ``.bin`` verification sets: round trips with bytes and NumPy elements, the
consecutive folds, malformed and malicious files."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from faceverify.data.binsets import BinSetError, consecutive_folds, find_bins, read_bin, write_bin
from faceverify.data.recordio import encode_image


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


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("form", ["bytes", "arrays", "numpy-issame"])
def test_every_pickle_protocol_as_other_tools_write_it(tmp_path: Path, protocol: int, form: str):
    """insightface dumps ``(bins, issame_list)`` with ``pickle.HIGHEST_PROTOCOL`` (5): bins the files'
    bytes, or (other converters) ``np.frombuffer`` arrays of them, issame a list or a NumPy bool array."""
    pictures = images(6)
    encoded = [encode_image(p, "png") for p in pictures]
    same = [True, False, True]
    if form == "bytes":
        content = (encoded, same)
    elif form == "arrays":
        content = ([np.frombuffer(e, dtype=np.uint8) for e in encoded], same)
    else:
        content = ([np.frombuffer(e, dtype=np.uint8) for e in encoded], np.array(same))
    data = pickle.dumps(content, protocol=protocol)
    if protocol == 5 and form != "bytes":
        assert b"_frombuffer" in data  # the NumPy >= 1.16 protocol-5 path the old reader refused
    (tmp_path / "set.bin").write_bytes(data)
    binset = read_bin(tmp_path / "set.bin")
    assert binset.issame.tolist() == same and binset.images == encoded
    np.testing.assert_array_equal(binset.decode_all(), np.stack(pictures))


def test_the_writer_pickles_at_the_highest_protocol_and_reads_back(tmp_path: Path):
    write_bin(tmp_path / "lfw.bin", images(4), [True, False], encoding="png", as_arrays=True)
    assert (tmp_path / "lfw.bin").read_bytes()[:2] == bytes([0x80, pickle.HIGHEST_PROTOCOL])
    assert read_bin(tmp_path / "lfw.bin").n_pairs == 2


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
    ("evil", "posix.system is not allowed"), ("evil5", "posix.system is not allowed"),
    ("eval", "builtins.eval is not allowed"),
    ("huge-bytearray", "cannot hold"), ("huge-bytes", "cannot hold"),
    ("none-issame", "issame is NoneType"), ("images-none", "images is NoneType"),
    ("images-dict", "images is dict"), ("str-images", "image 0 is str"),
    ("str-issame", "issame value 0 is 'True'"), ("float-issame", "issame value 1 is 0.5"),
    ("two-issame", "issame value 0 is 2"), ("wrong-length", "4 images for 3 issame values"),
    ("empty-image", "image 1 is empty"), ("int32-array", "image 0 is an array of int32"),
    ("pixels-array", r"image 0 is an array of uint8 with shape \(4, 4, 3\)"),
    ("out-of-band", "out-of-band"), ("truncated", "not a readable verification set"),
])
def test_malformed_or_malicious_files_are_refused(tmp_path: Path, content, fragment: str):
    path = tmp_path / "set.bin"
    if content is None:
        path.write_bytes(pickle.dumps(([b"a"] * 3, [True])))
    elif content == "mismatch":
        path.write_bytes(pickle.dumps(([b"a"] * 6, [True, False])))
    elif content == "nopairs":
        path.write_bytes(pickle.dumps(([], [])))
    elif content in ("evil", "evil5"):
        class Evil:
            def __reduce__(self):
                return os.system, ("touch " + str(tmp_path / "pwned"),)

        path.write_bytes(pickle.dumps((Evil(), []), protocol=2 if content == "evil" else 5))
    elif content == "eval":
        class Eval:
            def __reduce__(self):
                return eval, ("open(" + repr(str(tmp_path / "pwned")) + ", 'w')",)

        path.write_bytes(pickle.dumps(([Eval()], [True])))
    elif content in ("huge-bytearray", "huge-bytes"):
        # protocol 5 frame: a list holding one bytearray8 / bytes8 that claims 2^40 bytes, then 16 bytes
        opcode = b"\x96" if content == "huge-bytearray" else b"\x8e"
        path.write_bytes(b"\x80\x05" + b"]" + opcode + struct.pack("<Q", 1 << 40) + b"x" * 16)
    elif content == "out-of-band":
        frame = pickle.dumps(([pickle.PickleBuffer(b"abcd")] * 2, [True]), protocol=5, buffer_callback=lambda b: False)
        path.write_bytes(frame)
    elif content == "truncated":
        path.write_bytes(pickle.dumps(([b"a"] * 2, [True]), protocol=5)[:-5])
    else:
        bad = {"none-issame": ([b"a"] * 2, None), "images-none": (None, [True]), "images-dict": ({0: b"a"}, [True]),
               "str-images": (["a", "b"], [True]), "str-issame": ([b"a"] * 4, ["True", "False"]),
               "float-issame": ([b"a"] * 4, [1, 0.5]), "two-issame": ([b"a"] * 2, [2]),
               "wrong-length": ([b"a"] * 4, [True, False, True]), "empty-image": ([b"a", b""], [True]),
               "int32-array": ([np.arange(4, dtype=np.int32)] * 2, [True]),
               "pixels-array": ([np.zeros((4, 4, 3), np.uint8)] * 2, [True])}
        path.write_bytes(content if isinstance(content, bytes) else pickle.dumps(bad[content], protocol=5))
    with pytest.raises(BinSetError, match=fragment):
        read_bin(path)
    assert not (tmp_path / "pwned").exists()


def test_find_bins_puts_the_standard_sets_first(tmp_path: Path):
    for name in ("zzz", "agedb_30", "cfp_fp", "lfw"):
        write_bin(tmp_path / f"{name}.bin", images(2), [True], encoding="png")
    assert [p.stem for p in find_bins(tmp_path)] == ["lfw", "cfp_fp", "agedb_30", "zzz"]


def test_a_set_of_one_pixel_images_is_refused_before_it_is_scored(tmp_path: Path):
    from faceverify.evaluation.embed import embed_arrays

    tiny = [np.full((1, 1, 3), 7 * i, np.uint8) for i in range(4)]
    write_bin(tmp_path / "tiny.bin", tiny, [True, False], encoding="png")
    images_1x1 = read_bin(tmp_path / "tiny.bin").decode_all()
    assert images_1x1.shape == (4, 1, 1, 3)
    calls = []
    with pytest.raises(ValueError, match=r"crops of 1x1 are too small for a network taking 112x96"):
        embed_arrays(lambda x: calls.append(x), images_1x1, image_size=(112, 96), batch_size=2, with_flip=False,
                     device="cpu", progress=False)
    assert not calls  # nothing was embedded
