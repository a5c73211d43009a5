"""insightface / MXNet RecordIO training sets, read and written in pure Python and NumPy.

The packs face training sets circulate in today (``faces_webface_112x112`` = CASIA-WebFace,
``faces_emore`` = MS1MV2, ``ms1m-retinaface-t1``) are a folder with

* ``train.rec``: dmlc RecordIO records. Each part of a record is ``magic (0xced7230a, uint32) |
  lrec (uint32) | payload | zero padding to 4 bytes`` with ``lrec = cflag << 29 | length``.
  The writer never lets the magic word appear 4-byte aligned inside a payload: it cuts the
  payload there into parts (cflag 1 = first, 2 = middle, 3 = last; 0 = a whole record) and drops
  that word, which the reader puts back between the parts.
* ``train.idx``: ``key<TAB>byte offset`` per line, for random access.
* ``property``: ``classes,height,width``.

Each record's payload is MXNet's ``IRHeader`` (``struct '<IfQQ'``: flag, label, id, id2) then,
if ``flag = n > 0``, ``n`` float32 labels, then the encoded image (JPEG or PNG, 112x112 crops on
the ArcFace template). Two layouts are in the wild:

* **legacy** (the insightface packs above): record 0 is a header with ``flag > 0`` and
  ``label = [N + 1, N + 1 + C]``; images are records ``1 .. N``; records ``N + 1 .. N + C`` hold
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
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Literal, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from faceverify.io import atomic_write, write_text
from faceverify.progress import progress_bar

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24
Layout = Literal["legacy", "builder"]


class RecordIOError(ValueError):
    """A RecordIO file that cannot be read as one; the message names the file, record and offset."""


# ----------------------------------------------------------------------------- framing
def encode_record(payload: bytes) -> bytes:
    """dmlc framing of one record, split where the magic word sits 4-byte aligned in ``payload``."""
    if len(payload) >= 1 << 29:
        raise RecordIOError(f"a record holds at most 2^29 - 1 bytes, got {len(payload)}")
    out = bytearray()
    start = 0
    aligned_end = len(payload) - len(payload) % 4
    for i in range(0, aligned_end, 4):
        if payload[i : i + 4] == _MAGIC_BYTES:
            flag = 1 if start == 0 else 2
            out += _MAGIC_BYTES + struct.pack("<I", flag << 29 | (i - start)) + payload[start:i]
            start = i + 4
    flag = 3 if start else 0
    tail = payload[start:]
    out += _MAGIC_BYTES + struct.pack("<I", flag << 29 | len(tail)) + tail
    out += b"\0" * (-len(payload) % 4)
    return bytes(out)


def _read_at(source: BinaryIO | int, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` from a file object, or from a file descriptor with ``os.pread``
    (which moves no shared position, so threads may read one descriptor at once)."""
    if isinstance(source, int):
        return os.pread(source, size, offset)
    source.seek(offset)
    return source.read(size)


def read_record(source: BinaryIO | int, offset: int, path: Path | str = "", key: int | str = "?") -> bytes:
    """The payload of the record starting at byte ``offset`` (its parts rejoined); ``source`` is
    a binary file object or a file descriptor."""
    parts: list[bytes] = []
    position = offset
    while True:
        header = _read_at(source, position, 8)
        if len(header) < 8:
            raise RecordIOError(f"{path}: record {key} at byte {position}: file ends inside the record header "
                                "(truncated file)")
        magic, lrec = struct.unpack("<II", header)
        if magic != MAGIC:
            raise RecordIOError(f"{path}: record {key} at byte {position}: found 0x{magic:08x} where the "
                                f"RecordIO magic 0x{MAGIC:08x} belongs (corrupt file, or a wrong index)")
        flag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        if flag > 3 or (not parts and flag == 2) or (not parts and flag == 3) or (parts and flag in (0, 1)):
            raise RecordIOError(f"{path}: record {key} at byte {position}: part flag {flag} out of sequence")
        padded = length + (-length % 4)
        data = _read_at(source, position + 8, padded)
        if len(data) < padded:
            raise RecordIOError(f"{path}: record {key} at byte {position}: needs {padded} payload bytes, "
                                f"the file ends after {len(data)} (truncated file)")
        parts.append(data[:length])
        position += 8 + padded
        if flag in (0, 3):
            return _MAGIC_BYTES.join(parts)


def scan_offsets(path: Path, progress: bool = True) -> list[int]:
    """Byte offset of every record, found by walking the file's headers (no payload is read)."""
    offsets: list[int] = []
    size = path.stat().st_size
    with open(path, "rb") as handle, progress_bar(total=size, unit="B", unit_scale=True,
                                                  desc=f"index {path.name}", enabled=progress) as bar:
        position = 0
        in_record = False
        while position < size:
            header = handle.read(8)
            if len(header) < 8:
                raise RecordIOError(f"{path}: record {len(offsets)} at byte {position}: truncated header")
            magic, lrec = struct.unpack("<II", header)
            if magic != MAGIC:
                raise RecordIOError(f"{path}: record {len(offsets)} at byte {position}: found 0x{magic:08x} "
                                    f"where the RecordIO magic belongs (corrupt file)")
            flag, length = lrec >> 29, lrec & ((1 << 29) - 1)
            if not in_record:
                offsets.append(position)
            in_record = flag in (1, 2)
            step = 8 + length + (-length % 4)
            if position + step > size:
                raise RecordIOError(f"{path}: record {len(offsets) - 1} at byte {position}: needs {step} bytes, "
                                    f"the file ends after {size - position} (truncated file)")
            handle.seek(step - 8, os.SEEK_CUR)
            position += step
            bar.update(step)
    return offsets


def read_index_lines(path: Path) -> Iterator[tuple[int, int, int]]:
    """``(line number, key, offset)`` of every ``key<TAB>offset`` line of a ``.idx`` file."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2 or not all(f.isdigit() for f in fields):
                raise RecordIOError(f"{path} line {lineno}: expected 'key<TAB>offset', got {line.strip()!r}")
            yield lineno, int(fields[0]), int(fields[1])


def read_index(path: Path) -> dict[int, int]:
    """``key -> offset`` from a ``.idx`` file; a key given twice is refused (naming both lines):
    the legacy layout would read another record's image under a label, the builder drop one."""
    index: dict[int, int] = {}
    lines: dict[int, int] = {}
    for lineno, key, offset in read_index_lines(path):
        if key in index:
            raise RecordIOError(f"{path} line {lineno}: key {key} again (first on line {lines[key]}); an index "
                                "names each record once (a corrupt or concatenated train.idx; delete it to rebuild)")
        index[key], lines[key] = offset, lineno
    if not index:
        raise RecordIOError(f"{path}: empty index")
    return index


def write_index(path: Path, offsets: Sequence[int]) -> None:
    with atomic_write(path) as handle:
        handle.writelines(f"{key}\t{offset}\n" for key, offset in enumerate(offsets))


# ----------------------------------------------------------------------------- IRHeader
@dataclass(frozen=True)
class IRHeader:
    flag: int
    label: float | np.ndarray  # a scalar, or the flag's float32 labels
    id: int
    id2: int


def pack_ir(label: float | Sequence[float], image: bytes, id_: int = 0, id2: int = 0) -> bytes:
    """MXNet ``recordio.pack``: a scalar label in the header, or ``n`` labels before the image."""
    if np.ndim(label) == 0:
        return struct.pack(IR_FORMAT, 0, float(label), id_, id2) + image
    values = np.asarray(label, dtype=np.float32).reshape(-1)
    return struct.pack(IR_FORMAT, values.size, 0.0, id_, id2) + values.tobytes() + image


def unpack_ir(record: bytes, path: Path | str = "", key: int | str = "?") -> tuple[IRHeader, bytes]:
    """MXNet ``recordio.unpack``: ``(header, image bytes)``."""
    if len(record) < IR_SIZE:
        raise RecordIOError(f"{path}: record {key}: {len(record)} bytes, too short for an IRHeader")
    flag, label, id_, id2 = struct.unpack(IR_FORMAT, record[:IR_SIZE])
    rest = record[IR_SIZE:]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise RecordIOError(f"{path}: record {key}: header announces {flag} labels, the record is too short")
        values = np.frombuffer(rest[: 4 * flag], dtype="<f4").copy()
        return IRHeader(flag, values, id_, id2), rest[4 * flag :]
    return IRHeader(flag, float(label), id_, id2), rest


def decode_image(data: bytes, path: Path | str = "", key: int | str = "?") -> np.ndarray:
    """Encoded JPEG/PNG -> uint8 RGB ``[H, W, 3]``."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise RecordIOError(f"{path}: record {key}: the payload is not a decodable image ({len(data)} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def encode_image(rgb: np.ndarray, encoding: Literal["jpg", "png"] = "jpg", quality: int = 95) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if encoding == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, data = cv2.imencode(f".{encoding}", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"could not encode an image of shape {rgb.shape} as {encoding}")
    return data.tobytes()


# ----------------------------------------------------------------------------- a dataset folder
def is_recordio_folder(path: str | Path) -> bool:
    return (Path(path) / "train.rec").is_file()


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "faceverify" / "recordio"


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
            raise FileNotFoundError(f"{self.root} is not a RecordIO folder: no train.rec")
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
        # the legacy header record: two+ labels [N + 1, N + 1 + C] and no image
        if first_key == 0 and first.flag >= 2 and not first_image and \
                1 <= int(first.label[0]) <= int(first.label[1]):
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
        if size == 0:
            raise RecordIOError(f"{self.rec} is empty (0 bytes)")
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
            raise FileNotFoundError(f"{self.root} has no train.idx; rebuild it by scanning (rebuild_index=True) "
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
        raw = np.empty(self.image_keys.size, dtype=np.float64)
        if self.layout == "legacy":
            raw.fill(np.nan)
            n = int(self.image_keys.size)
            owner = np.full(n, -1, dtype=np.int64)  # identity record that claimed each image
            for key in progress_bar(self.identity_keys.tolist(), desc="identities", enabled=progress):
                label_values = np.asarray(self.header(key).label).reshape(-1)
                if label_values.size < 2 or not np.isfinite(label_values[:2]).all():
                    raise RecordIOError(f"{self.rec}: identity record {key} holds no [start, end) image range "
                                        f"(label {label_values.tolist()})")
                start, end = (int(v) for v in label_values[:2])
                if not 1 <= start <= end <= n + 1:
                    raise RecordIOError(f"{self.rec}: identity record {key} claims images [{start}, {end}), outside "
                                        f"the pack's images 1..{n}")
                claimed = owner[start - 1 : end - 1]
                if (claimed >= 0).any():
                    image = start + int(np.flatnonzero(claimed >= 0)[0])
                    raise RecordIOError(f"{self.rec}: identity records {int(claimed[claimed >= 0][0])} and {key} both "
                                        f"claim image record {image} (overlapping identity ranges)")
                owner[start - 1 : end - 1] = key
                raw[start - 1 : end - 1] = key - int(self.identity_keys[0])
            if np.isnan(raw).any():
                first = int(np.flatnonzero(np.isnan(raw))[0]) + 1
                raise RecordIOError(f"{self.rec}: image record {first} belongs to no identity range")
        else:
            for i, key in enumerate(progress_bar(self.image_keys.tolist(), desc="labels", enabled=progress)):
                label = self.header(key).label
                value = float(label if np.ndim(label) == 0 else np.asarray(label).reshape(-1)[0])
                if not math.isfinite(value) or value != round(value) or value < 0:
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
            if tuple(image.shape[:2]) != tuple(size):
                raise RuntimeError(f"a {image.shape[0]}x{image.shape[1]} image, the pack's crops are {size[0]}x{size[1]}")
            images.append(image)
        except RuntimeError as err:
            images.append(None)
            failed.append((position, f"the payload is not a decodable image ({len(payload)} bytes): "
                                     f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"))
    images, filled = fill_skipped(images, labels.cpu().numpy(), [p for p, _ in failed])
    return torch.stack(images), torch.from_numpy(filled), failed


# ----------------------------------------------------------------------------- writing
def write_recordio(out: str | Path, images: Iterable[np.ndarray | bytes], labels: Sequence[int],
                   layout: Layout = "builder", encoding: Literal["jpg", "png"] = "jpg",
                   image_size: tuple[int, int] | None = None, progress: bool = True) -> Path:
    """Write ``out/train.rec``, ``train.idx`` and ``property`` in either layout.

    ``images`` are uint8 RGB arrays (encoded here) or already-encoded bytes; ``labels`` are
    class ids ``0..C-1``. The legacy layout needs the images grouped by label (each identity's
    images contiguous), as insightface's packs are.
    """
    out = Path(out)
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.size
    classes = int(labels.max()) + 1 if n else 0
    if layout == "legacy" and n and np.any(np.diff(labels) < 0):
        raise ValueError("the legacy layout needs the images sorted by label (identity ranges)")
    out.mkdir(parents=True, exist_ok=True)
    offsets: list[int] = []
    size = image_size
    with atomic_write(out / "train.rec", "wb") as handle:
        def put(payload: bytes) -> None:
            offsets.append(handle.tell())
            handle.write(encode_record(payload))

        if layout == "legacy":
            put(pack_ir([n + 1, n + 1 + classes], b""))
        for i, image in enumerate(progress_bar(images, total=n, desc="rec", unit="img", enabled=progress)):
            if i >= n:
                raise ValueError(f"more images than the {n} labels")
            if isinstance(image, np.ndarray):
                size = size or (int(image.shape[0]), int(image.shape[1]))
                data = encode_image(image, encoding)
            else:
                data = bytes(image)
                size = size or tuple(decode_image(data).shape[:2])
            label = float(labels[i])
            put(pack_ir(label if layout == "builder" else [label, float(i)], data, id_=i + (layout == "legacy")))
        if len(offsets) - (layout == "legacy") != n:
            raise ValueError(f"{len(offsets) - (layout == 'legacy')} images for {n} labels")
        if layout == "legacy":
            for c in range(classes):
                members = np.flatnonzero(labels == c)
                start, end = (int(members[0]) + 1, int(members[-1]) + 2) if members.size else (0, 0)
                put(pack_ir([start, end], b""))
    write_index(out / "train.idx", offsets)
    height, width = size or (0, 0)
    write_text(out / "property", f"{classes},{height},{width}\n")
    return out


def iter_images(paths: Sequence[Path]) -> Iterator[np.ndarray]:
    """Decode image files one at a time (for :func:`write_recordio`)."""
    from faceverify.data.images import read_rgb

    for path in paths:
        yield read_rgb(path)
