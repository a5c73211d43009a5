"""A RecordIO pack as a training dataset: :class:`RecordFaces` serves whole batches (decoded in
DataLoader workers, or JPEG bytes for decoding on the GPU), and a record that cannot be read or
decoded gives its place in the batch to another image of the batch (:func:`fill_skipped`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from faceverify.data.recordio import RecordIOFolder
from faceverify.data.recordio_format import RecordIOError


class EncodedBatch(list):
    """A batch's encoded images (``bytes`` each) with their image ``indices`` and record ``keys``,
    so that a payload the GPU cannot decode can be named and skipped."""

    indices: list[int]
    keys: list[int]


def fill_skipped(images: list, labels: np.ndarray, failed: Sequence[int]) -> tuple[list, np.ndarray]:
    """Each failed position of a batch takes a good image of the same batch (of the same label when
    there is one, else the first good one with its label), so the batch keeps its size: shapes stay
    static (compile, DDP, gathered heads) and the substitution is a function of the batch alone,
    which keeps a resumed run identical. Raises RecordIOError when no image of the batch is good."""
    bad = set(failed)
    good = [i for i in range(len(images)) if i not in bad]
    if not good:
        raise RecordIOError(f"no image of a batch of {len(images)} decodes; run faceverify rec check on the data")
    labels = np.array(labels, copy=True)
    for position in failed:
        same = [g for g in good if labels[g] == labels[position]]
        source = same[0] if same else good[0]
        images[position], labels[position] = images[source], labels[source]
    return images, labels


class RecordFaces(Dataset):
    """A RecordIO folder as a training dataset of ``(uint8 [H, W, 3] tensor, label)``.

    ``__getitems__`` decodes a whole batch (what the DataLoader calls with a batch sampler), in
    the worker processes when ``data.workers > 0``; each worker opens its own file handle. A
    record that cannot be read or decoded to the pack's crop size is skipped: its place in the
    batch goes to another image of the batch (:func:`fill_skipped`) and the third element of the
    batch names it (:meth:`RecordIOFolder.skip_note`), for the trainer to count and report.
    """

    def __init__(self, root: str | Path, progress: bool = True, cache_dir: str | Path | None = None,
                 encoded: bool = False):
        self.folder = RecordIOFolder(root, progress=progress, cache_dir=cache_dir)
        self.encoded = encoded  # serve JPEG bytes for decoding on the GPU (decode_batch_on_gpu)
        self.labels = self.folder.labels
        self.root = self.folder.root

    def __len__(self) -> int:
        return len(self.folder)

    @property
    def num_classes(self) -> int:
        return self.folder.num_classes

    @property
    def image_size(self) -> tuple[int, int]:
        return self.folder.image_size

    @property
    def fingerprint(self) -> str:
        return self.folder.fingerprint()

    def describe(self) -> str:
        return self.folder.describe()

    def skip_note(self, index: int, reason: str) -> dict:
        return self.folder.skip_note(index, reason)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.folder.checked_image(index)), int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor | EncodedBatch, torch.Tensor, list[dict]]:
        """``(uint8 [B, H, W, 3] or EncodedBatch, labels [B], skipped records)``."""
        idx = np.asarray(indices, dtype=np.int64)
        items: list = []
        failed: list[int] = []
        skipped: list[dict] = []
        for position, i in enumerate(idx.tolist()):
            try:
                items.append(self.folder.image_bytes(i) if self.encoded else self.folder.checked_image(i))
            except RecordIOError as err:
                items.append(None)
                failed.append(position)
                skipped.append(self.folder.skip_note(i, str(err)))
        labels = self.labels[idx]
        if failed:
            items, labels = fill_skipped(items, labels, failed)
        if self.encoded:
            batch = EncodedBatch(items)
            batch.indices, batch.keys = idx.tolist(), self.folder.image_keys[idx].tolist()
            return batch, torch.from_numpy(labels), skipped
        return torch.from_numpy(np.stack(items)), torch.from_numpy(labels), skipped


def decode_batch_on_gpu(payloads: Sequence[bytes], device: torch.device | str) -> torch.Tensor:
    """JPEG bytes -> uint8 RGB ``[B, H, W, 3]`` decoded on ``device`` (torchvision's nvJPEG decoder on
    CUDA; the same call on the CPU decodes there, which is how the tests check it)."""
    import warnings

    with warnings.catch_warnings():  # torchvision 0.29 announces a move of its decoders to torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

        tensors = [torch.frombuffer(bytearray(p), dtype=torch.uint8) for p in payloads]
        decoded = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
    return torch.stack(decoded).permute(0, 2, 3, 1).contiguous()


def decode_batch_skipping(payloads: Sequence[bytes], labels: torch.Tensor, device: torch.device | str,
                          size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
    """:func:`decode_batch_on_gpu`, but a payload that does not decode (or not to ``size``) is
    skipped: ``(uint8 [B, H, W, 3], labels [B], [(position, reason), ...])``, the failed positions
    filled by :func:`fill_skipped`. The batch is decoded in one call; only when that fails is each
    payload decoded alone to find the bad ones."""
    try:
        decoded = decode_batch_on_gpu(payloads, device)
        if tuple(decoded.shape[1:3]) == tuple(size):
            return decoded, labels, []
    except RuntimeError:
        pass
    images: list = []
    failed: list[tuple[int, str]] = []
    for position, payload in enumerate(payloads):
        try:
            image = decode_batch_on_gpu([payload], device)[0]
        except RuntimeError as err:
            images.append(None)
            failed.append((position, f"the payload is not a decodable image ({len(payload)} bytes): "
                                     f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"))
            continue
        if tuple(image.shape[:2]) != tuple(size):
            images.append(None)
            failed.append((position, f"a {image.shape[0]}x{image.shape[1]} image, the pack's crops are "
                                     f"{size[0]}x{size[1]}"))
            continue
        images.append(image)
    images, filled = fill_skipped(images, labels.cpu().numpy(), [p for p, _ in failed])
    return torch.stack(images), torch.from_numpy(filled), failed


