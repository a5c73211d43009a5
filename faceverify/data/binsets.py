"""insightface ``.bin`` verification sets: ``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...

A ``.bin`` file is a pickle of ``(images, issame)``: ``images`` a list of ``2N`` encoded images
(JPEG or PNG; each element ``bytes`` or a uint8 NumPy array holding the encoded bytes) and
``issame`` ``N`` booleans; images ``2i`` and ``2i + 1`` form pair ``i``. The pairs are evaluated in
10 consecutive equal blocks (insightface's split: scikit-learn's ``KFold(10)`` without shuffling,
the first ``N mod 10`` folds one pair longer). For an ``lfw.bin`` built from ``pairs.txt`` in file
order these blocks are exactly LFW's official folds. With fewer than 10 pairs there are as many
folds as pairs (one pair each), and the result says so.

Reading uses a restricted unpickler: only lists, tuples, bytes, booleans and NumPy arrays can be
built (pickle protocols 0-5, NumPy 1 or 2), so a ``.bin`` from elsewhere cannot run code when
opened; every length the pickle claims is checked against the file before anything is allocated.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from faceverify.data.lfw import PairsProtocol
from faceverify.data.recordio import decode_image, encode_image
from faceverify.errors import FaceverifyError, IsAFolderError, MissingInputError
from faceverify.io import atomic_write

STANDARD_SETS = ("lfw", "cfp_fp", "cfp_ff", "agedb_30", "calfw", "cplfw", "vgg2_fp")


class BinSetError(FaceverifyError, ValueError):
    """A ``.bin`` file that is not a verification set; the message names the file and the problem."""


# What NumPy needs to rebuild a uint8 array from a pickle, and nothing more:
# protocols 2-4 go through ``multiarray._reconstruct(ndarray, ...)`` and ``ndarray.__setstate__``
# (protocol 2 writes the data through ``_codecs.encode(str, 'latin1')``); protocol 5 (what
# ``pickle.HIGHEST_PROTOCOL`` gives since Python 3.8, with NumPy >= 1.16) writes contiguous arrays
# as ``numeric._frombuffer(bytearray, dtype, shape, order)``; NumPy scalars (``np.bool_`` issame
# values) use ``multiarray.scalar``. NumPy 2 spells the modules ``numpy._core``, NumPy 1 ``numpy.core``.
_NUMPY_GLOBALS = {
    (f"{core}.{module}", name)
    for core in ("numpy.core", "numpy._core")
    for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
}
ALLOWED_GLOBALS = frozenset(_NUMPY_GLOBALS | {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("builtins", "bytearray"), ("__builtin__", "bytearray"), ("_codecs", "encode"),
})


class _SafeUnpickler(pickle.Unpickler):
    """Builds only lists, tuples, bytes, booleans, numbers and NumPy arrays (:data:`ALLOWED_GLOBALS`)."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle's hook
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a verification set")


def _check_claimed_sizes(data: bytes, path: Path) -> None:
    """Walk the pickle's opcodes without building anything: every ``bytes``/``bytearray``/``str``
    opcode's claimed length must fit in the file. The unpickler allocates a ``bytearray8`` of the
    claimed size before reading it, so a 60-byte file claiming 2^60 bytes would be a MemoryError."""
    try:
        for _ in pickletools.genops(data):
            pass
    except ValueError as err:
        raise BinSetError(f"{path} is not a readable verification set: {err} (a length the file's "
                          f"{len(data)} bytes cannot hold: truncated or forged)") from None


def _as_issame(raw: object, path: Path) -> np.ndarray:
    """``issame`` as booleans: a list/tuple/array of ``bool`` (``np.bool_``) or of the integers 0 and 1.

    Anything else is refused, naming the first bad value: ``bool('False')`` is True, so strings
    must never be read as booleans."""
    if isinstance(raw, np.ndarray):
        if raw.dtype == bool:
            return raw.reshape(-1).copy()
        if np.issubdtype(raw.dtype, np.integer) and np.isin(raw, (0, 1)).all():
            return raw.reshape(-1).astype(bool)
        raise BinSetError(f"{path}: issame is an array of {raw.dtype}; expected booleans or 0/1")
    if not isinstance(raw, (list, tuple)):
        raise BinSetError(f"{path}: issame is {type(raw).__name__}, expected a list of booleans")
    values = np.empty(len(raw), dtype=bool)
    for i, value in enumerate(raw):
        if isinstance(value, (bool, np.bool_)):
            values[i] = bool(value)
        elif isinstance(value, (int, np.integer)) and value in (0, 1):
            values[i] = value == 1
        else:
            raise BinSetError(f"{path}: issame value {i} is {value!r} ({type(value).__name__}); expected a "
                              "boolean or 0/1")
    return values


def _as_encoded(item: object, index: int, path: Path) -> bytes:
    """One image element: ``bytes``/``bytearray``, or a 1-D uint8 array of the encoded file's bytes."""
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim != 1:
            raise BinSetError(f"{path}: image {index} is an array of {item.dtype} with shape {item.shape}; "
                              "expected the encoded file's bytes (a 1-D uint8 array or bytes)")
        item = item.tobytes()
    if not isinstance(item, (bytes, bytearray)):
        raise BinSetError(f"{path}: image {index} is {type(item).__name__}, expected encoded image bytes")
    if not item:
        raise BinSetError(f"{path}: image {index} is empty (0 bytes)")
    return bytes(item)


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
    if path.is_dir():
        raise IsAFolderError(f"verification set {path} is a folder, not a .bin file")
    if not path.is_file():
        raise MissingInputError(f"verification set {path} does not exist")
    data = path.read_bytes()
    if not data:
        raise BinSetError(f"{path} is empty (0 bytes)")
    _check_claimed_sizes(data, path)
    try:
        loaded = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError) as err:
        raise BinSetError(f"{path} is not a readable verification set (a pickle of images and issame): "
                          f"{type(err).__name__}: {err}") from None
    if not isinstance(loaded, (tuple, list)) or len(loaded) != 2:
        raise BinSetError(f"{path}: expected a pickled pair (images, issame), got {type(loaded).__name__}")
    raw_images, raw_same = loaded
    if not isinstance(raw_images, (list, tuple)):
        raise BinSetError(f"{path}: images is {type(raw_images).__name__}, expected a list of encoded images")
    images = [_as_encoded(item, i, path) for i, item in enumerate(raw_images)]
    issame = _as_issame(raw_same, path)
    if len(images) % 2:
        raise BinSetError(f"{path}: {len(images)} images, an odd number: images 2i and 2i + 1 form pair i")
    if len(images) != 2 * issame.size:
        raise BinSetError(f"{path}: {len(images)} images for {issame.size} issame values (expected {2 * issame.size})")
    if issame.size == 0:
        raise BinSetError(f"{path}: no pairs")
    return BinSet(path.stem, images, issame, path)


def write_bin(path: str | Path, images: Sequence[np.ndarray | bytes], issame: Sequence[bool],
              encoding: Literal["jpg", "png"] = "jpg", as_arrays: bool = False,
              protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    """Write a ``.bin`` set: uint8 RGB arrays are encoded (JPEG quality 95 as insightface's, or PNG,
    which keeps the pixels exactly); ``as_arrays`` stores each as a uint8 array of its bytes.
    Pickled at ``protocol`` (insightface writes ``pickle.HIGHEST_PROTOCOL``, 5 on Python >= 3.8)."""
    encoded = [item if isinstance(item, (bytes, bytearray)) else encode_image(item, encoding) for item in images]
    if len(encoded) != 2 * len(issame):
        raise BinSetError(f"{len(encoded)} images for {len(issame)} pairs (expected {2 * len(issame)})")
    elements = [np.frombuffer(e, dtype=np.uint8) for e in encoded] if as_arrays else [bytes(e) for e in encoded]
    with atomic_write(path, "wb") as handle:
        pickle.dump((elements, [bool(s) for s in issame]), handle, protocol=protocol)
    return Path(path)


def find_bins(folder: str | Path) -> list[Path]:
    """The ``.bin`` sets in ``folder``: the standard ones first, in the usual order, then the rest.
    Hidden files (macOS's ``._lfw.bin``) and folders named ``*.bin`` are not sets and are passed
    over; a folder without any set is an error naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError(f"--bin-dir {folder} is not a folder")
    found = sorted(p for p in folder.glob("*.bin") if p.is_file() and not p.name.startswith("."))
    if not found:
        raise MissingInputError(f"--bin-dir {folder} holds no .bin verification set (lfw.bin, cfp_fp.bin, "
                                "agedb_30.bin, ...)")
    rank = {name: i for i, name in enumerate(STANDARD_SETS)}
    return sorted(found, key=lambda p: (rank.get(p.stem, len(rank)), p.stem))
