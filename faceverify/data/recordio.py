"""insightface / MXNet RecordIO training sets: a pack folder opened and checked (:class:`RecordIOFolder`).

The byte format lives in :mod:`faceverify.data.recordio_format`, the training dataset in
:mod:`faceverify.data.recordio_dataset`.

A pack folder holds ``train.rec``, ``train.idx`` and ``property`` (their bytes are described in
:mod:`faceverify.data.recordio_format`). Two layouts are in the wild:

* **legacy** (insightface's packs: ``faces_webface_112x112``, ``faces_emore``,
  ``ms1m-retinaface-t1``): record 0 is a header with ``flag > 0`` and ``label = [N + 1, N + 1 + C]``; images are records ``1 .. N``; records ``N + 1 .. N + C`` hold
  each identity's image range ``[start, end)`` in their label;
* **builder** (insightface's newer ``rec_builder``): images from record 0 with scalar labels, no
  header record.

Labels are read once (from the identity ranges, or from every image header) and cached under
the cache folder (``$XDG_CACHE_HOME/faceverify/recordio/<file digest>/``, or ``cache_dir``),
never inside the data folder. A missing index is rebuilt there by scanning the file; a corrupt
or truncated record is a :class:`RecordIOError` naming the file, the record and the byte offset.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from faceverify.data.recordio_format import (  # noqa: F401 - the format's names, re-exported for readers of packs
    IR_FORMAT,
    IR_SIZE,
    MAGIC,
    IRHeader,
    Layout,
    RecordIOError,
    decode_image,
    encode_image,
    encode_record,
    iter_images,
    pack_ir,
    read_index,
    read_index_lines,
    read_record,
    scan_offsets,
    unpack_ir,
    write_index,
    write_recordio,
)
from faceverify.errors import MissingInputError
from faceverify.io import atomic_write
from faceverify.progress import progress_bar


def is_recordio_folder(path: str | Path) -> bool:
    return (Path(path) / "train.rec").is_file()


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "faceverify" / "recordio"


def is_legacy_header(key: int, header: IRHeader, image_bytes: int) -> bool:
    """Record 0 of the legacy layout: two or more labels ``[N + 1, N + 1 + C]`` and no image
    (``image_bytes``: the length of the record's payload after its header)."""
    return (key == 0 and header.flag >= 2 and image_bytes == 0
            and 1 <= int(header.label[0]) <= int(header.label[1]))


def scalar_label(header: IRHeader) -> float:
    """A builder record's identity label: the scalar, or the first of the flag's labels."""
    label = header.label
    return float(label if np.ndim(label) == 0 else np.asarray(label).reshape(-1)[0])


def is_identity_label(value: float) -> bool:
    """Identity labels are whole numbers >= 0 (``0.1`` or ``nan`` would become classes of their own)."""
    return math.isfinite(value) and value == round(value) and value >= 0


@dataclass(frozen=True)
class RangeDefect:
    """What is wrong with one legacy identity record's ``[start, end)`` image range: ``kind`` is
    ``missing`` (no record), ``no_range`` (``values``), ``outside`` (``start``, ``end``) or
    ``overlap`` (``image`` already claimed by identity record ``other``)."""

    kind: str
    key: int
    values: tuple[float, ...] = ()
    start: int = 0
    end: int = 0
    image: int = 0
    other: int = 0


def assign_identity_ranges(ranges: Iterable[tuple[int, np.ndarray | None]],
                           n: int) -> tuple[np.ndarray, list[RangeDefect]]:
    """``(owner, defects)`` of the legacy layout's identity records ``(key, label values or None)``,
    in key order, over image records ``1..n``: ``owner[i]`` is the identity record that claimed
    image record ``i + 1`` (``-1``: none; an image claimed twice keeps its first owner)."""
    owner = np.full(n, -1, dtype=np.int64)
    defects: list[RangeDefect] = []
    for key, values in ranges:
        if values is None:
            defects.append(RangeDefect("missing", key))
            continue
        values = np.asarray(values).reshape(-1)
        if values.size < 2 or not np.isfinite(values[:2]).all():
            defects.append(RangeDefect("no_range", key, values=tuple(values.tolist())))
            continue
        start, end = (int(v) for v in values[:2])
        if not 1 <= start <= end <= n + 1:
            defects.append(RangeDefect("outside", key, start=start, end=end))
            continue
        claimed = owner[start - 1 : end - 1]
        for image in (np.flatnonzero(claimed >= 0) + start).tolist():
            defects.append(RangeDefect("overlap", key, image=image, other=int(owner[image - 1])))
        owner[start - 1 : end - 1] = np.where(claimed >= 0, claimed, key)
    return owner, defects


class RecordIOFolder:
    """A ``train.rec`` / ``train.idx`` / ``property`` folder: layout, labels, random access.

    ``rebuild_index``: with no ``train.idx``, scan the file and write one under the cache folder;
    ``False`` refuses instead. ``cache_dir`` replaces the per-user cache folder (labels, index).
    """

    def __init__(self, root: str | Path, rebuild_index: bool = True, progress: bool = True,
                 cache_dir: str | Path | None = None):
        self.root = Path(root)
        self.rec = self.root / "train.rec"
        if not self.rec.is_file():
            raise MissingInputError(f"{self.root} is not a RecordIO folder: no train.rec")
        stat = self.rec.stat()
        if stat.st_size == 0:  # before any index is read, rebuilt or cached
            raise RecordIOError(f"{self.rec} is empty (0 bytes)")
        self._stamp = f"{stat.st_size}-{stat.st_mtime_ns}"
        digest = hashlib.sha256(f"{self.rec.resolve()}|{self._stamp}".encode()).hexdigest()[:16]
        self.cache = Path(cache_dir) / digest if cache_dir else _cache_dir() / digest
        self.offsets = self._load_index(rebuild_index, progress)
        self._check_offsets(stat.st_size)
        self._fd: int | None = None
        self._pid = -1
        self.property = self._read_property()
        first_key = min(self.offsets)
        first, first_image = unpack_ir(self.record(first_key), self.rec, first_key)
        if is_legacy_header(first_key, first, len(first_image)):
            self.layout: Layout = "legacy"
            n_plus_1, end = int(first.label[0]), int(first.label[1])
            self.image_keys = np.arange(1, n_plus_1, dtype=np.int64)
            self.identity_keys = np.arange(n_plus_1, end, dtype=np.int64)
        else:
            self.layout = "builder"
            self.image_keys = np.array(sorted(self.offsets), dtype=np.int64)
            self.identity_keys = np.zeros(0, dtype=np.int64)
        needed = self.image_keys[:1].tolist() + self.image_keys[-1:].tolist() + self.identity_keys[-1:].tolist()
        missing = [k for k in needed if k not in self.offsets]
        if missing:
            last = max(self.offsets)
            if self.layout == "legacy":
                claimed = int(max(self.image_keys[-1:].tolist() + self.identity_keys[-1:].tolist()))
                raise RecordIOError(
                    f"{self.rec}: its header record claims {self.image_keys.size} images and "
                    f"{self.identity_keys.size} identities (records 1..{claimed}), but the file holds records "
                    f"0..{last} only: a truncated train.rec, or a header from another pack (faceverify rec check "
                    f"{self.root} lists what is there)")
            raise RecordIOError(f"{self.rec}: the index lacks record {missing[0]} (a partial train.idx: faceverify rec "
                                f"check {self.root} compares it with the file)")
        self.labels, self.label_values = self._load_labels(progress)
        self.decoded_size = self._first_image_size()
        self._check_property()

    # -- setup
    def _check_offsets(self, size: int) -> None:
        """Every indexed record starts inside train.rec (an index of another file, or a truncated one)."""
        key, offset = max(self.offsets.items(), key=lambda item: item[1])
        if offset + 8 > size:
            raise RecordIOError(f"{self.rec}: the index puts record {key} at byte {offset}, past the end of the "
                                f"{size}-byte file (an index of another file, or a truncated train.rec)")

    def _first_image_size(self) -> tuple[int, int]:
        """The size of the first image record that decodes (of the first 16; a pack whose first 16
        all fail is not one to train on)."""
        errors = []
        for i in range(min(len(self), 16)):
            try:
                shape = self.image(i).shape
                return int(shape[0]), int(shape[1])
            except RecordIOError as err:
                errors.append(str(err))
        if not errors:
            raise RecordIOError(f"{self.rec}: no image records")
        raise RecordIOError(f"none of the first {len(errors)} image records decodes ({errors[0]}); run "
                            f"faceverify rec check {self.root}")

    def _check_property(self) -> None:
        """``property`` (classes,height,width) must agree with the records: the class count with the
        labels, the size with the first image that decodes."""
        if self.property is None:
            return
        classes, height, width = self.property
        path = self.root / "property"
        expected = {self.num_classes}
        if self.layout == "builder" and self.label_values.size:
            expected.add(int(self.label_values.max()) + 1)  # labels 0..C-1 with some classes empty
        if classes not in expected:
            raise RecordIOError(f"{path} says {classes} classes, the records hold {self.num_classes} identities "
                                f"({self.layout} layout); fix or delete the property file")
        if self.decoded_size != (height, width):
            raise RecordIOError(f"{path} says {height}x{width} (HxW) crops, the records hold "
                                f"{self.decoded_size[0]}x{self.decoded_size[1]} images; fix or delete the property file")

    # -- setup (index)
    def _load_index(self, rebuild: bool, progress: bool) -> dict[int, int]:
        for candidate in (self.root / "train.idx", self.cache / "train.idx"):
            if candidate.is_file():
                return read_index(candidate)
        if not rebuild:
            raise MissingInputError(f"{self.root} has no train.idx; rebuild it by scanning (rebuild_index=True) "
                                    "or copy the original index beside train.rec")
        offsets = scan_offsets(self.rec, progress)
        if not offsets:
            raise RecordIOError(f"{self.rec} holds no records")
        target = self.cache / "train.idx"
        write_index(target, offsets)
        return dict(enumerate(offsets))

    def _read_property(self) -> tuple[int, int, int] | None:
        path = self.root / "property"
        if not path.is_file():
            return None
        fields = path.read_text(encoding="utf-8").strip().split(",")
        try:
            classes, height, width = (int(v) for v in fields)
        except ValueError:
            raise RecordIOError(f"{path}: expected 'classes,height,width', got {','.join(fields)!r}") from None
        return classes, height, width

    def _load_labels(self, progress: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(labels 0..C-1 per image, the original label value of each class)``, cached."""
        cache = self.cache / f"train.labels-v2-{self._stamp}.npz"  # v2: labels validated when read
        if cache.is_file():
            with np.load(cache) as data:
                return data["labels"], data["values"]
        if self.layout == "legacy":
            n = int(self.image_keys.size)
            ranges = ((key, self.header(key).label)
                      for key in progress_bar(self.identity_keys.tolist(), desc="identities", enabled=progress))
            owner, defects = assign_identity_ranges(ranges, n)
            if defects:
                raise RecordIOError(self._range_message(defects[0], n))
            if (owner < 0).any():
                first = int(np.flatnonzero(owner < 0)[0]) + 1
                raise RecordIOError(f"{self.rec}: image record {first} belongs to no identity range")
            raw = (owner - int(self.identity_keys[0])).astype(np.float64)
        else:
            raw = np.empty(self.image_keys.size, dtype=np.float64)
            for i, key in enumerate(progress_bar(self.image_keys.tolist(), desc="labels", enabled=progress)):
                value = scalar_label(self.header(key))
                if not is_identity_label(value):
                    raise RecordIOError(f"{self.rec}: record {key} has label {value!r}; identity labels are "
                                        "whole numbers >= 0")
                raw[i] = value
        values, labels = np.unique(raw, return_inverse=True)
        try:
            with atomic_write(cache, "wb") as handle:
                np.savez(handle, labels=labels.astype(np.int64), values=values)
        except OSError:
            pass  # a read-only cache only costs the scan next time
        return labels.astype(np.int64), values

    def _range_message(self, defect: RangeDefect, n: int) -> str:
        if defect.kind == "no_range":
            return (f"{self.rec}: identity record {defect.key} holds no [start, end) image range "
                    f"(label {list(defect.values)})")
        if defect.kind == "outside":
            return (f"{self.rec}: identity record {defect.key} claims images [{defect.start}, {defect.end}), "
                    f"outside the pack's images 1..{n}")
        return (f"{self.rec}: identity records {defect.other} and {defect.key} both claim image record "
                f"{defect.image} (overlapping identity ranges)")

    # -- access
    def _file(self) -> int:
        # one descriptor per process (DataLoader workers each open their own); threads share it,
        # which positional reads (os.pread) allow
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.rec, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def record(self, key: int) -> bytes:
        offset = self.offsets.get(int(key))
        if offset is None:
            raise RecordIOError(f"{self.rec}: record {key} is not in the index")
        return read_record(self._file(), offset, self.rec, key)

    def header(self, key: int) -> IRHeader:
        return unpack_ir(self.record(key), self.rec, key)[0]

    def image_bytes(self, i: int) -> bytes:
        """The encoded image of the ``i``-th image (0-based over the images only)."""
        key = int(self.image_keys[i])
        return unpack_ir(self.record(key), self.rec, key)[1]

    def image(self, i: int) -> np.ndarray:
        return decode_image(self.image_bytes(i), self.rec, int(self.image_keys[i]))

    def __len__(self) -> int:
        return int(self.image_keys.size)

    @property
    def num_classes(self) -> int:
        return int(self.label_values.size)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the crops (``property`` agrees with the records: checked when opened)."""
        return self.decoded_size

    def skip_note(self, i: int, reason: str) -> dict:
        """What a skipped image record is: its index among the images, record key, label, why."""
        key = int(self.image_keys[i])
        prefix = f"{self.rec}: record {key}: "
        return {"index": int(i), "record": key, "label": float(self.label_values[self.labels[i]]),
                "reason": reason[len(prefix):] if reason.startswith(prefix) else reason}

    def checked_image(self, i: int) -> np.ndarray:
        """The ``i``-th image, refused (RecordIOError) unless it decodes to the pack's crop size."""
        image = self.image(i)
        if image.shape[:2] != self.decoded_size:
            raise RecordIOError(f"{self.rec}: record {int(self.image_keys[i])}: a {image.shape[0]}x{image.shape[1]} "
                                f"image, the pack's crops are {self.decoded_size[0]}x{self.decoded_size[1]}")
        return image

    def fingerprint(self) -> str:
        """What the data is: size and time of train.rec, layout, images and identities."""
        text = f"{self._stamp}|{self.layout}|{len(self)}|{self.num_classes}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        h, w = self.image_size
        return f"{len(self)} images of {self.num_classes} identities at {h}x{w} (RecordIO, {self.layout})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fd"] = None  # never pickle a file descriptor into workers
        return state

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)


