"""``faceverify rec check DIR``: every defect of a RecordIO pack, each named by its record.

:class:`~faceverify.data.recordio.RecordIOFolder` refuses a pack at its first structural defect
and training skips the records that do not decode; this scan reads everything once and lists
all that is wrong, so a damaged pack is repaired (or its bad records known) before a long run:

* **framing**: the dmlc part headers of ``train.rec`` walked from the first byte to the last
  (a corrupt header is reported and the walk picks up at the next aligned magic word);
* **index**: ``train.idx`` lines that are malformed, name a key twice, point past the end of the
  file or between records, and records the index leaves out;
* **headers and labels**: every record's ``IRHeader``; builder labels must be whole numbers
  ``>= 0``; in the legacy layout the identity records' ``[start, end)`` ranges must lie in
  ``1..N``, not overlap, and cover every image record;
* **payloads**: every image decodes (in parallel threads; OpenCV's decoder releases the GIL), to
  one size, the ``property`` file's if there is one; ``property``'s class count must agree.
"""

from __future__ import annotations

import os
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from faceverify.data.recordio import (
    MAGIC,
    RangeDefect,
    RecordIOError,
    assign_identity_ranges,
    decode_image,
    is_identity_label,
    is_legacy_header,
    read_index_lines,
    read_record,
    scalar_label,
    unpack_ir,
)
from faceverify.errors import MissingInputError
from faceverify.progress import progress_bar

_MAGIC_BYTES = struct.pack("<I", MAGIC)


@dataclass(frozen=True)
class Defect:
    """One thing wrong: ``kind`` (framing, index, header, label, range, image, size, property),
    the record's key and byte offset where there is one, and what is wrong."""

    kind: str
    message: str
    record: int | None = None
    offset: int | None = None

    def line(self) -> str:
        where = []
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.offset is not None:
            where.append(f"byte {self.offset}")
        return f"{self.kind}: {' at '.join(where) + ': ' if where else ''}{self.message}"


@dataclass
class CheckReport:
    root: str
    layout: str = "unknown"
    records: int = 0
    images: int = 0
    identities: int = 0
    image_size: list[int] | None = None
    seconds: float = 0.0
    defects: list[Defect] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.defects

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for defect in self.defects:
            counts[defect.kind] = counts.get(defect.kind, 0) + 1
        return counts

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ok"], data["defect_counts"] = self.ok, self.counts()
        return data


def scan_framing(path: Path, progress: bool = True) -> tuple[list[int], list[Defect]]:
    """Start offsets of the records found by walking the part headers, and every framing defect.
    After a corrupt header the walk resumes at the next magic word on a 4-byte boundary."""
    size = path.stat().st_size
    starts: list[int] = []
    defects: list[Defect] = []
    with open(path, "rb") as handle, progress_bar(total=size, unit="B", unit_scale=True, desc="framing",
                                                  enabled=progress) as bar:
        position, in_record, start = 0, False, 0
        while position < size:
            handle.seek(position)
            header = handle.read(8)
            magic, lrec = struct.unpack("<II", header) if len(header) == 8 else (None, 0)
            if magic != MAGIC:
                found = "the file ends" if magic is None else f"0x{magic:08x}"
                defects.append(Defect("framing", f"{found} where a record header belongs (record {len(starts)} "
                                      "by count)", offset=position))
                resume = _next_magic(handle, position + 4, size)
                bar.update((resume if resume is not None else size) - position)
                if resume is None:
                    break
                position, in_record = resume, False
                continue
            flag, length = lrec >> 29, lrec & ((1 << 29) - 1)
            if (not in_record and flag in (2, 3)) or (in_record and flag in (0, 1)) or flag > 3:
                defects.append(Defect("framing", f"part flag {flag} out of sequence", offset=position))
                in_record = False
            if not in_record:
                start = position
                starts.append(start)
            in_record = flag in (1, 2)
            step = 8 + length + (-length % 4)
            if position + step > size:
                defects.append(Defect("framing", f"needs {step} bytes, the file ends after {size - position} "
                                      "(truncated file)", record=len(starts) - 1, offset=start))
                starts.pop()
                bar.update(size - position)
                break
            position += step
            bar.update(step)
    return starts, defects


def _next_magic(handle, position: int, size: int) -> int | None:
    """The next offset >= ``position`` on a 4-byte boundary holding the magic word."""
    position += -position % 4
    chunk = 1 << 20
    while position < size:
        handle.seek(position)
        data = handle.read(chunk + 3)
        at = 0
        while True:
            at = data.find(_MAGIC_BYTES, at)
            if at < 0 or at >= chunk:
                break
            if (position + at) % 4 == 0:
                return position + at
            at += 1
        position += chunk
    return None


def _read_index(path: Path, size: int, starts: set[int], corrupt: set[int], defects: list[Defect]) -> dict[int, int]:
    """``key -> offset`` of the index, reporting every line that is wrong (and keeping the first of
    a duplicated key)."""
    index: dict[int, int] = {}
    first_line: dict[int, int] = {}
    lineno = 0
    try:
        for lineno, key, offset in read_index_lines(path):
            if key in index:
                defects.append(Defect("index", f"train.idx line {lineno}: key {key} again (first on line "
                                      f"{first_line[key]})", record=key, offset=offset))
                continue
            index[key], first_line[key] = offset, lineno
            if offset >= size:
                defects.append(Defect("index", f"train.idx line {lineno}: offset past the end of the {size}-byte "
                                      "file", record=key, offset=offset))
            elif offset in corrupt:
                defects.append(Defect("index", f"train.idx line {lineno}: the record here has a corrupt header "
                                      "(see framing); not read", record=key, offset=offset))
            elif offset not in starts:
                defects.append(Defect("index", f"train.idx line {lineno}: no record starts at this offset",
                                      record=key, offset=offset))
    except RecordIOError as err:
        defects.append(Defect("index", f"{err} (lines after it not read)"))
    return index


def _check_labels(report: CheckReport, headers: dict[int, tuple], keys: list[int]) -> tuple[list[int], np.ndarray]:
    """Layout, image keys and labels from the headers; every label defect reported."""
    first = headers.get(keys[0]) if keys else None
    if first is None or not is_legacy_header(keys[0], first[0], first[1]):
        report.layout = "builder"
        values = []
        for key in keys:
            if key not in headers:
                continue
            value = scalar_label(headers[key][0])
            if is_identity_label(value):
                values.append(value)
            else:
                report.defects.append(Defect("label", f"label {value!r}; identity labels are whole numbers >= 0",
                                             record=key))
        report.identities = len(set(values))
        return [k for k in keys if k in headers], np.array(sorted(set(values)))
    report.layout = "legacy"
    n_plus_1, end = int(first[0].label[0]), int(first[0].label[1])
    image_keys = list(range(1, n_plus_1))
    n = len(image_keys)
    ranges = ((key, headers[key][0].label if key in headers else None) for key in range(n_plus_1, end))
    owner, defects = assign_identity_ranges(ranges, n)
    for defect in defects:
        report.defects.append(Defect("range", _range_text(defect, n), record=defect.key))
    for image in (np.flatnonzero(owner < 0) + 1).tolist():
        report.defects.append(Defect("range", "image record belongs to no identity range", record=image))
    report.identities = end - n_plus_1
    return image_keys, np.arange(report.identities)


def _range_text(defect: RangeDefect, n: int) -> str:
    if defect.kind == "missing":
        return "identity record missing (not in the file or the index)"
    if defect.kind == "no_range":
        return f"identity record holds no [start, end) range ({list(defect.values)})"
    if defect.kind == "outside":
        return f"identity range [{defect.start}, {defect.end}) outside the images 1..{n}"
    return f"image record {defect.image} also claimed by identity record {defect.other} (overlapping ranges)"


def check_recordio(root: str | Path, workers: int = 0, progress: bool = True) -> CheckReport:
    """Scan the pack in ``root`` (train.rec, train.idx, property) and report every defect."""
    started = time.perf_counter()
    root = Path(root)
    rec = root / "train.rec"
    if not rec.is_file():
        raise MissingInputError(f"{root} is not a RecordIO folder: no train.rec")
    report = CheckReport(str(root))
    size = rec.stat().st_size
    if size == 0:
        report.defects.append(Defect("framing", "train.rec is empty (0 bytes)"))
        return report
    starts, framing = scan_framing(rec, progress)
    report.defects += framing
    report.records = len(starts)
    start_set = set(starts)
    idx = root / "train.idx"
    if idx.is_file():
        corrupt = {d.offset for d in framing if d.offset is not None}
        index = _read_index(idx, size, start_set, corrupt, report.defects)
        indexed = set(index.values())
        for number, offset in enumerate(starts):
            if offset not in indexed:
                report.defects.append(Defect("index", f"train.idx leaves out this record ({number} by count)",
                                             offset=offset))
        offsets = {k: v for k, v in index.items() if v in start_set}
    else:
        offsets = dict(enumerate(starts))  # what RecordIOFolder rebuilds when there is no index
    keys = sorted(offsets)

    # every header (one read of each record), in parallel
    fd = os.open(rec, os.O_RDONLY)
    try:
        def read(key: int) -> tuple[int, tuple | None, Defect | None]:
            try:
                header, image = unpack_ir(read_record(fd, offsets[key], rec, key), rec, key)
                return key, (header, len(image)), None
            except RecordIOError as err:
                return key, None, Defect("header", _short(str(err), rec, key), record=key, offset=offsets[key])

        headers: dict[int, tuple] = {}
        threads = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(threads) as pool:
            for key, header, defect in progress_bar(pool.map(read, keys, chunksize=256), total=len(keys),
                                                    desc="headers", unit="rec", enabled=progress):
                if defect is not None:
                    report.defects.append(defect)
                else:
                    headers[key] = header
        image_keys, label_values = _check_labels(report, headers, keys)
        report.images = len(image_keys)

        def decode(key: int) -> tuple[int, tuple[int, int] | None, str]:
            try:
                _, payload = unpack_ir(read_record(fd, offsets[key], rec, key), rec, key)
                shape = decode_image(payload, rec, key).shape
                return key, (int(shape[0]), int(shape[1])), ""
            except (RecordIOError, KeyError) as err:
                return key, None, _short(str(err), rec, key) if not isinstance(err, KeyError) else \
                    "image record not in the index"

        sizes: dict[tuple[int, int], int] = {}
        shapes: dict[int, tuple[int, int]] = {}
        with ThreadPoolExecutor(threads) as pool:
            for key, shape, reason in progress_bar(pool.map(decode, [k for k in image_keys if k in headers],
                                                            chunksize=64),
                                                   total=sum(k in headers for k in image_keys), desc="decode",
                                                   unit="img", enabled=progress):
                if shape is None:
                    report.defects.append(Defect("image", reason, record=key, offset=offsets.get(key)))
                else:
                    shapes[key] = shape
                    sizes[shape] = sizes.get(shape, 0) + 1
    finally:
        os.close(fd)
    prop = _read_property(root, report)
    expected = (prop[1], prop[2]) if prop else (max(sizes, key=sizes.get) if sizes else None)
    if expected is not None:
        report.image_size = list(expected)
        for key, shape in sorted(shapes.items()):
            if shape != expected:
                what = "the property file's" if prop else "most records'"
                report.defects.append(Defect("size", f"a {shape[0]}x{shape[1]} image, {what} size is "
                                             f"{expected[0]}x{expected[1]}", record=key))
    allowed = {report.identities}
    if report.layout == "builder" and label_values.size:
        allowed.add(int(label_values.max()) + 1)  # labels 0..C-1 with some classes empty
    if prop and prop[0] not in allowed:
        report.defects.append(Defect("property", f"property says {prop[0]} classes, the records hold "
                                     f"{report.identities} identities"))
    report.seconds = time.perf_counter() - started
    return report


def _read_property(root: Path, report: CheckReport) -> tuple[int, int, int] | None:
    path = root / "property"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    try:
        classes, height, width = (int(v) for v in text.split(","))
        return classes, height, width
    except ValueError:
        report.defects.append(Defect("property", f"expected 'classes,height,width', got {text!r}"))
        return None


def _short(message: str, rec: Path, key: int) -> str:
    """A RecordIOError's message without the file and record it begins with."""
    for prefix in (f"{rec}: record {key} at byte ", f"{rec}: record {key}: "):
        if message.startswith(prefix):
            rest = message[len(prefix):]
            return rest.split(": ", 1)[1] if prefix.endswith("byte ") and ": " in rest else rest
    return message
