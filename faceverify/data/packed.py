"""The packed training format: all aligned crops in one uint8 array read by memory map.

A packed folder holds

* ``images.u8``: raw ``uint8`` array ``[N, H, W, 3]`` (RGB, C order), opened with ``np.memmap``,
  so a dataset of any size costs constant memory and a batch is one fancy-index read;
* ``labels.npy``: ``int64 [N]``, identity index of each row (0 .. C-1);
* ``paths.txt``: the aligned file each row came from (one per line);
* ``meta.json``: shape, identity names (index = label), counts and how the pack was made.

The folder is written under a temporary name and renamed when complete, so a killed ``pack``
never leaves a half-written dataset behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from faceverify.data.images import read_rgb
from faceverify.errors import InvalidInputError, MissingInputError, OutputExistsError
from faceverify.io import read_json
from faceverify.locks import lock_output
from faceverify.progress import progress_bar

FORMAT = "faceverify-packed-v1"


def write_packed(
    out: str | Path,
    paths: Sequence[Path],
    labels: Sequence[int],
    identities: Sequence[str],
    image_size: tuple[int, int] | None = None,
    meta: dict[str, Any] | None = None,
    workers: int = 4,
    progress: bool = True,
    relative_to: Path | None = None,
) -> Path:
    """Decode ``paths`` (resized to ``image_size`` (H, W) if given) into a packed folder ``out``."""
    broken = [str(p) for p in paths if "\n" in str(p) or "\r" in str(p)]
    if broken:
        raise InvalidInputError(f"{len(broken)} file name(s) contain a line break, which paths.txt cannot hold "
                         f"(first: {broken[0]!r}); rename them")
    names = [str(Path(p).relative_to(relative_to) if relative_to else p) for p in paths]
    return write_packed_from(out, len(paths), lambda i: read_rgb(paths[i]), labels, identities, names,
                             image_size, meta, workers, progress)


class SkipImage(Exception):
    """Raised by a ``load_image`` of :func:`write_packed_from` for an image to leave out; ``note``
    (a dict: index, label, reason, ...) is recorded in ``meta.json`` under ``skipped_records``."""

    def __init__(self, note: dict):
        super().__init__(note.get("reason", ""))
        self.note = note


def write_packed_from(
    out: str | Path,
    count: int,
    load_image: Callable[[int], np.ndarray],
    labels: Sequence[int],
    identities: Sequence[str],
    names: Sequence[str],
    image_size: tuple[int, int] | None = None,
    meta: dict[str, Any] | None = None,
    workers: int = 4,
    progress: bool = True,
) -> Path:
    """Pack ``count`` images given by ``load_image(i) -> uint8 [H, W, 3]`` (files, RecordIO records)
    into ``out``; resized to ``image_size`` if given, else all must share the first one's size.
    An image whose ``load_image`` raises :class:`SkipImage` is left out and listed in ``meta.json``
    (``skipped_records``; identities left with no image are dropped and the labels renumbered).
    Written under ``out.partial`` and renamed when complete; removed on any failure."""
    out = Path(out)
    if count == 0:
        raise InvalidInputError("nothing to pack: no images left after filtering")
    if count != len(labels) or count != len(names):
        raise ValueError(f"{count} images but {len(labels)} labels and {len(names)} names")
    if image_size is not None:
        height, width = image_size
    else:  # without a target size the first image that loads sets it (and every other must match)
        height = width = 0
        for first in range(count):
            try:
                height, width = load_image(first).shape[:2]
                break
            except SkipImage:
                continue
        if not height:
            raise InvalidInputError(f"nothing to pack: none of the {count} images could be read")
    with lock_output(out, "pack", beside=True):  # one pack per OUT: another would remove this one's .partial
        return _write_packed_locked(out, count, load_image, labels, identities, names, image_size, height, width,
                                    meta, workers, progress)


def _write_packed_locked(out: Path, count: int, load_image: Callable[[int], np.ndarray], labels: Sequence[int],
                         identities: Sequence[str], names: Sequence[str], image_size: tuple[int, int] | None,
                         height: int, width: int, meta: dict[str, Any] | None, workers: int, progress: bool) -> Path:
    """:func:`write_packed_from` once it holds OUT's lock (an existing OUT is refused here, where no
    other pack can be publishing it)."""
    if out.exists():
        raise OutputExistsError(f"{out} already exists; remove it or choose another output folder")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a killed run (a live one would hold the lock)
    tmp.mkdir(parents=True)
    skipped: dict[int, dict] = {}
    try:
        images = np.memmap(tmp / "images.u8", dtype=np.uint8, mode="w+", shape=(count, height, width, 3))

        def load(i: int) -> None:
            try:
                image = load_image(i)
            except SkipImage as skip:
                skipped[i] = skip.note
                return
            if image.shape[:2] != (height, width):
                if image_size is None:
                    raise InvalidInputError(
                        f"{names[i]} is {image.shape[1]}x{image.shape[0]} (WxH) but the first image is "
                        f"{width}x{height}; give a target size to resize them all (faceverify pack --size HxW, "
                        "e.g. --size 112x96)"
                    )
                image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            images[i] = image

        with ThreadPoolExecutor(max(workers, 1)) as pool:
            list(progress_bar(pool.map(load, range(count)), total=count, desc="pack", unit="img", enabled=progress))
        labels_kept, names_kept, identities_kept = list(labels), list(names), list(identities)
        kept = count
        if skipped:
            keep = np.array([i for i in range(count) if i not in skipped], dtype=np.int64)
            if keep.size == 0:
                raise InvalidInputError(f"nothing to pack: none of the {count} images could be read "
                                 f"(first: {next(iter(skipped.values())).get('reason', '')})")
            for row, i in enumerate(keep.tolist()):  # compact in place: rows only move towards the start
                if row != i:
                    images[row] = images[i]
            kept = int(keep.size)
            classes, renumbered = np.unique(np.asarray(labels, dtype=np.int64)[keep], return_inverse=True)
            labels_kept = renumbered.tolist()
            names_kept = [names[i] for i in keep.tolist()]
            identities_kept = [identities[c] for c in classes.tolist()]
        images.flush()
        images = None  # unmap before the file is cut to the rows kept
        os.truncate(tmp / "images.u8", kept * height * width * 3)
        extra = dict(meta or {})
        extra["skipped_records"] = [skipped[i] for i in sorted(skipped)]
        if skipped:
            extra["left_out_images"] = {**extra.get("left_out_images", {}), "undecodable": len(skipped)}
        return _finish(tmp, out, (kept, int(height), int(width), 3), labels_kept, identities_kept, names_kept, extra)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
        raise


def _finish(tmp: Path, out: Path, shape: tuple[int, int, int, int], labels: Sequence[int],
            identities: Sequence[str], names: Sequence[str], meta: dict[str, Any] | None) -> Path:
    """Write labels, paths and meta.json next to images.u8, then publish ``tmp`` as ``out``."""
    np.save(tmp / "labels.npy", np.asarray(labels, dtype=np.int64))
    (tmp / "paths.txt").write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(identities))
    info = {
        "format": FORMAT,
        "shape": list(shape),
        "n_images": shape[0],
        "n_identities": len(identities),
        "identities": list(identities),
        "images_per_identity": {"min": int(counts.min()), "max": int(counts.max()), "mean": float(counts.mean())},
        **(meta or {}),
    }
    (tmp / "meta.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out


def write_packed_array(out: str | Path, images: np.ndarray, labels: Sequence[int], identities: Sequence[str],
                       meta: dict[str, Any] | None = None) -> Path:
    """Pack an in-memory uint8 array ``[N, H, W, 3]`` (synthetic benchmarks, tests)."""
    out = Path(out)
    if out.exists():
        raise OutputExistsError(f"{out} already exists; remove it or choose another output folder")
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images must be [N, H, W, 3] uint8, got {images.shape}")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    images.tofile(tmp / "images.u8")
    names = [f"array[{i}]" for i in range(len(images))]
    return _finish(tmp, out, tuple(images.shape), labels, identities, names, meta)


@dataclass
class PackedFaces(Dataset):
    """A packed folder as a dataset of ``(uint8 [H, W, 3] tensor, label)``.

    ``__getitems__`` serves a whole batch with one sorted memmap read, which is what the
    DataLoader calls when given a batch sampler.
    """

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise MissingInputError(f"{self.root} is not a packed dataset (no meta.json); run faceverify pack")
        self.meta = read_json(meta_path, "pack metadata")
        if not isinstance(self.meta, dict) or self.meta.get("format") != FORMAT:
            found = self.meta.get("format") if isinstance(self.meta, dict) else type(self.meta).__name__
            raise InvalidInputError(f"{self.root}: unknown packed format {found!r}")
        shape = self.meta.get("shape")
        if not (isinstance(shape, list) and len(shape) == 4 and all(type(v) is int and v >= 0 for v in shape)
                and shape[3] == 3):
            raise InvalidInputError(f"{self.root}/meta.json: shape must be [N, H, W, 3] counts, got {shape!r}")
        n, h, w, c = shape
        self.shape = (n, h, w, c)
        try:
            self.labels = np.load(self.root / "labels.npy", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise InvalidInputError(f"{self.root}/labels.npy cannot be read ({err}): damaged? pack again") from None
        if self.labels.shape != (n,):
            raise InvalidInputError(f"{self.root}: labels.npy has shape {self.labels.shape}, images {n}")
        expected = n * h * w * c
        actual = (self.root / "images.u8").stat().st_size
        if actual != expected:
            raise InvalidInputError(f"{self.root}/images.u8 holds {actual} bytes, expected {expected} (truncated?)")
        self._images: np.memmap | None = None

    @property
    def images(self) -> np.memmap:
        # opened lazily so each DataLoader worker maps the file itself
        if self._images is None:
            self._images = np.memmap(self.root / "images.u8", dtype=np.uint8, mode="r", shape=self.shape)
        return self._images

    @property
    def fingerprint(self) -> str:
        """A short hash of what the pack holds (shape, identities, labels, source file names), the
        same wherever the folder lies; checkpoints record it so a resumed run trains on the same data."""
        digest = hashlib.sha256(json.dumps([self.shape, self.meta["identities"]]).encode("utf-8"))
        digest.update(np.ascontiguousarray(self.labels).tobytes())
        paths = self.root / "paths.txt"
        if paths.is_file():
            digest.update(paths.read_bytes())
        return digest.hexdigest()[:16]

    def describe(self) -> str:
        return f"{self.shape[0]} images of {self.num_classes} identities at {self.shape[1]}x{self.shape[2]}"

    @property
    def num_classes(self) -> int:
        return int(self.meta["n_identities"])

    @property
    def identities(self) -> list[str]:
        return list(self.meta["identities"])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.shape[1]), int(self.shape[2])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self.images[index])), int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
        """``(uint8 [B, H, W, 3], labels [B], [])``: the batch shape of every training source (a
        packed folder has nothing to skip: its pixels were decoded when it was packed)."""
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        batch = np.empty((idx.size, *self.shape[1:]), dtype=np.uint8)
        batch[order] = self.images[idx[order]]  # sorted reads are sequential on disk
        return torch.from_numpy(batch), torch.from_numpy(self.labels[idx]), []

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_images"] = None  # never pickle the map into workers
        return state


def collate_batch(batch: Any) -> Any:
    """Collate for loaders fed by ``__getitems__``: the batch is already stacked."""
    return batch
