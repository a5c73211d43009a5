"""insightface ``.bin`` verification sets: ``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...

A ``.bin`` file is a pickle of ``(images, issame)``: ``images`` a list of ``2N`` encoded images
(JPEG or PNG; each element ``bytes`` or a uint8 NumPy array holding the encoded bytes) and
``issame`` ``N`` booleans; images ``2i`` and ``2i + 1`` form pair ``i``. The pairs are evaluated in
10 consecutive equal blocks (insightface's split: scikit-learn's ``KFold(10)`` without shuffling,
the first ``N mod 10`` folds one pair longer). For an ``lfw.bin`` built from ``pairs.txt`` in file
order these blocks are exactly LFW's official folds. With fewer than 10 pairs there are as many
folds as pairs (one pair each), and the result says so.

Reading uses a restricted unpickler: only lists, tuples, bytes, booleans and NumPy arrays can be
built, so a ``.bin`` from elsewhere cannot run code when opened.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from faceverify.data.lfw import PairsProtocol
from faceverify.data.recordio import decode_image, encode_image
from faceverify.io import atomic_write

STANDARD_SETS = ("lfw", "cfp_fp", "cfp_ff", "agedb_30", "calfw", "cplfw", "vgg2_fp")


class BinSetError(ValueError):
    """A ``.bin`` file that is not a verification set; the message names the file and the problem."""


class _SafeUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("builtins", "bytearray"), ("__builtin__", "bytearray"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle's hook
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a verification set")


@dataclass
class BinSet:
    """A verification set: ``name`` (file stem), encoded ``images`` (2N) and ``issame`` [N]."""

    name: str
    images: list[bytes]
    issame: np.ndarray
    source: Path

    @property
    def n_pairs(self) -> int:
        return int(self.issame.size)

    @property
    def n_folds(self) -> int:
        return min(10, self.n_pairs)

    def keys(self) -> list[str]:
        """An image key per image: ``<name>/<index, 6 digits>``."""
        return [f"{self.name}/{i:06d}" for i in range(len(self.images))]

    def pairs(self) -> PairsProtocol:
        """The pairs as a protocol: 10 consecutive folds (fewer when there are fewer pairs)."""
        keys = self.keys()
        return PairsProtocol(source=self.source, keys_a=tuple(keys[0::2]), keys_b=tuple(keys[1::2]),
                             same=self.issame.astype(bool), fold=consecutive_folds(self.n_pairs, self.n_folds),
                             n_folds=self.n_folds)

    def decode(self, index: int) -> np.ndarray:
        return decode_image(self.images[index], self.source, index)

    def decode_all(self) -> np.ndarray:
        """Every image, uint8 RGB ``[2N, H, W, 3]`` (all of one size, as the sets are)."""
        images = [self.decode(i) for i in range(len(self.images))]
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise BinSetError(f"{self.source}: images of several sizes {sorted(shapes)}")
        return np.stack(images)


def consecutive_folds(n_pairs: int, n_folds: int = 10) -> np.ndarray:
    """Fold of each pair for ``n_folds`` consecutive blocks, the first ``n mod k`` one longer (KFold)."""
    sizes = np.full(n_folds, n_pairs // n_folds)
    sizes[: n_pairs % n_folds] += 1
    return np.repeat(np.arange(n_folds), sizes)


def read_bin(path: str | Path) -> BinSet:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"verification set {path} does not exist")
    data = path.read_bytes()
    if not data:
        raise BinSetError(f"{path} is empty (0 bytes)")
    try:
        loaded = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise BinSetError(f"{path} is not a readable verification set (a pickle of images and issame): "
                          f"{type(err).__name__}: {err}") from None
    if not isinstance(loaded, (tuple, list)) or len(loaded) != 2:
        raise BinSetError(f"{path}: expected a pickled pair (images, issame), got {type(loaded).__name__}")
    raw_images, raw_same = loaded
    images = []
    for i, item in enumerate(raw_images):
        if isinstance(item, np.ndarray):
            item = item.astype(np.uint8, copy=False).tobytes()
        if not isinstance(item, (bytes, bytearray)) or not item:
            raise BinSetError(f"{path}: image {i} is {type(item).__name__}, expected encoded image bytes")
        images.append(bytes(item))
    issame = np.asarray(list(raw_same), dtype=bool).reshape(-1)
    if len(images) % 2:
        raise BinSetError(f"{path}: {len(images)} images, an odd number: images 2i and 2i + 1 form pair i")
    if len(images) != 2 * issame.size:
        raise BinSetError(f"{path}: {len(images)} images for {issame.size} issame values (expected {2 * issame.size})")
    if issame.size == 0:
        raise BinSetError(f"{path}: no pairs")
    return BinSet(path.stem, images, issame, path)


def write_bin(path: str | Path, images: Sequence[np.ndarray | bytes], issame: Sequence[bool],
              encoding: Literal["jpg", "png"] = "jpg", as_arrays: bool = False) -> Path:
    """Write a ``.bin`` set: uint8 RGB arrays are encoded (JPEG quality 95 as insightface's, or PNG,
    which keeps the pixels exactly); ``as_arrays`` stores each as a uint8 array of its bytes."""
    encoded = [item if isinstance(item, (bytes, bytearray)) else encode_image(item, encoding) for item in images]
    if len(encoded) != 2 * len(issame):
        raise BinSetError(f"{len(encoded)} images for {len(issame)} pairs (expected {2 * len(issame)})")
    elements = [np.frombuffer(e, dtype=np.uint8) for e in encoded] if as_arrays else [bytes(e) for e in encoded]
    with atomic_write(path, "wb") as handle:
        pickle.dump((elements, [bool(s) for s in issame]), handle, protocol=4)
    return Path(path)


def find_bins(folder: str | Path) -> list[Path]:
    """The ``.bin`` sets in ``folder``: the standard ones first, in the usual order, then the rest."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--bin-dir {folder} is not a folder")
    found = sorted(folder.glob("*.bin"))
    rank = {name: i for i, name in enumerate(STANDARD_SETS)}
    return sorted(found, key=lambda p: (rank.get(p.stem, len(rank)), p.stem))
