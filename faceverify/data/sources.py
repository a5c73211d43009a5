"""Training data from wherever it is: a packed folder (``faceverify pack``) or a RecordIO folder.

Both datasets serve whole batches through ``__getitems__`` as ``(uint8 [B, H, W, 3], labels [B],
skipped)``, ``skipped`` naming the records a RecordIO batch could not decode (always empty for a
packed folder)
and expose ``labels``, ``num_classes``, ``image_size``, ``fingerprint`` and ``describe()``, which
is all the trainer and the samplers use.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from faceverify.data.packed import PackedFaces
from faceverify.data.recordio import is_recordio_folder
from faceverify.data.recordio_dataset import RecordFaces
from faceverify.data.splits import holdout_identities
from faceverify.errors import InvalidInputError, MissingInputError


class TrainingData(Protocol):
    """What the trainer and the samplers accept: a packed folder, a RecordIO folder, or a subset of
    either (:class:`SubsetFaces`). Batches come from ``__getitems__`` as ``(uint8 [B, H, W, 3],
    labels [B], skipped records)``."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def image_size(self) -> tuple[int, int]: ...

    @property
    def fingerprint(self) -> str: ...

    def describe(self) -> str: ...

    def __getitems__(self, indices: Sequence[int]) -> tuple: ...


def open_training_data(source: str | Path, cache_dir: str | Path | None = None, encoded: bool = False,
                       progress: bool = True) -> PackedFaces | RecordFaces:
    """A :class:`PackedFaces` or :class:`RecordFaces` for ``source``; anything else is an error that
    says what a source must be. ``encoded`` (RecordIO only) serves JPEG bytes for GPU decoding."""
    if not source:
        raise InvalidInputError("data.source is empty: point it at a folder written by `faceverify pack` or at a "
                         "RecordIO folder (train.rec, train.idx, property)")
    root = Path(source)
    if not root.is_dir():
        raise MissingInputError(f"data.source {root} does not exist")
    if is_recordio_folder(root):
        return RecordFaces(root, progress=progress, cache_dir=cache_dir, encoded=encoded)
    if encoded:
        raise InvalidInputError(f"data.decode=gpu needs RecordIO data (JPEG records); {root} is a packed folder of raw "
                         "pixels, which needs no decoding")
    if (root / "meta.json").is_file():
        return PackedFaces(root)
    raise MissingInputError(f"data.source {root} is neither a packed folder (meta.json, images.u8) nor a "
                            "RecordIO folder (train.rec); pack an aligned tree with `faceverify pack` or "
                            "convert with `faceverify pack --from-rec`")


class SubsetFaces:
    """The rows of a training dataset whose identities are not held out, labels renumbered 0..C-1.

    Serves batches as the wrapped dataset does (``__getitems__``); ``fingerprint`` and ``describe``
    say which identities were left out, so a resumed run checks it trains on the same subset.
    """

    def __init__(self, dataset: TrainingData, held_out: np.ndarray, note: str):
        self.dataset = dataset
        keep = ~np.isin(dataset.labels, held_out)
        self.rows = np.flatnonzero(keep)
        self.classes, self.labels = np.unique(dataset.labels[keep], return_inverse=True)
        self.labels = self.labels.astype(np.int64)
        self.note = note
        self.held_out = held_out

    def __len__(self) -> int:
        return int(self.rows.size)

    @property
    def num_classes(self) -> int:
        return int(self.classes.size)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.dataset.image_size

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(f"{self.dataset.fingerprint}|{self.held_out.tolist()}".encode()).hexdigest()
        return digest[:16]

    def describe(self) -> str:
        return f"{len(self)} images of {self.num_classes} identities ({self.note}; of {self.dataset.describe()})"

    def skip_note(self, index: int, reason: str) -> dict:
        return self.dataset.skip_note(index, reason)

    def __getitems__(self, indices):
        """``(images, labels renumbered, skipped)``: a skipped record's place holds another image of
        the batch (see :func:`~faceverify.data.recordio.fill_skipped`), whose label is mapped here."""
        idx = np.asarray(indices, dtype=np.int64)
        images, labels, skipped = self.dataset.__getitems__(self.rows[idx])
        renumbered = np.searchsorted(self.classes, np.asarray(labels))
        return images, torch.from_numpy(renumbered.astype(np.int64)), skipped


def holdout_subset(dataset: TrainingData, fraction: float, seed: int) -> SubsetFaces:
    """``dataset`` without the validation identities :func:`~faceverify.data.splits.holdout_identities`
    chooses (a fraction of those with two or more images)."""
    held_out = holdout_identities(dataset.labels, fraction, seed)
    return SubsetFaces(dataset, held_out, f"{held_out.size} identities held out for validation")
