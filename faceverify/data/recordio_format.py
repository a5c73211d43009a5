"""The insightface / MXNet RecordIO byte format, read and written in pure Python and NumPy: the
dmlc record framing, ``train.idx``, MXNet's ``IRHeader``, image payloads, and a writer of whole
packs. No torch: :mod:`faceverify.data.recordio` opens a pack folder (layout, labels, checks) and
:mod:`faceverify.data.recordio_dataset` serves it to training.

insightface / MXNet RecordIO training sets, read and written in pure Python and NumPy.

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
the ArcFace template). The two layouts of records in a pack (legacy, builder) are read by
:class:`~faceverify.data.recordio.RecordIOFolder`.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Literal, Sequence

import cv2
import numpy as np

from faceverify.errors import FaceverifyError
from faceverify.io import atomic_write, write_text
from faceverify.progress import progress_bar

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24
Layout = Literal["legacy", "builder"]


class RecordIOError(FaceverifyError, ValueError):
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
        raise RecordIOError(f"could not encode an image of shape {rgb.shape} as {encoding}")
    return data.tobytes()


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
        raise RecordIOError("the legacy layout needs the images sorted by label (identity ranges)")
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
