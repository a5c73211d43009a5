"""``manifest.csv``, the record of an alignment run that ``pack`` (and anyone) reads: one row per
source image with its status (ok / fallback / no_face / unreadable), why, the detection, the five
landmarks, the crop's path and the source's size and mtime (so a changed source is aligned again).
"""

from __future__ import annotations

import csv
from pathlib import Path

from faceverify.errors import FaceverifyError
from faceverify.io import atomic_write

STATUSES = ("ok", "fallback", "no_face", "unreadable")
LANDMARK_COLUMNS = [f"{axis}{i}" for i in range(1, 6) for axis in ("x", "y")]
MANIFEST_COLUMNS = [
    "src", "dst", "identity", "status", "reason", "score", "n_faces",
    *LANDMARK_COLUMNS, "width", "height", "residual", "src_bytes", "src_mtime_ns",
]


class AlignmentError(FaceverifyError, ValueError):
    """Bad input to the alignment run (empty source, malformed landmarks file or manifest, ...)."""


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    """The rows, sorted by source path, under :data:`MANIFEST_COLUMNS`."""
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        for row in sorted(rows, key=lambda r: r["src"]):
            writer.writerow(row)


MANIFEST_REQUIRED = ("src", "dst", "identity", "status")


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows of a ``manifest.csv`` written by :func:`align_tree`.

    Raises:
        AlignmentError: a missing column or a row with the wrong number of fields; the message
            names the file and the line.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise AlignmentError(f"{path} line 1: empty manifest, expected a header")
        missing = [c for c in MANIFEST_REQUIRED if c not in header]
        if missing:
            raise AlignmentError(f"{path} line 1: manifest header lacks {', '.join(missing)}")
        rows = []
        for fields in reader:
            if len(fields) != len(header):
                raise AlignmentError(f"{path} line {reader.line_num}: expected {len(header)} fields, "
                                     f"got {len(fields)}")
            rows.append(dict(zip(header, fields)))
        return rows
