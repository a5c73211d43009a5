"""The alignment run's journal (``DST/.journal.csv``): what is done, kept crash-safe so that a
killed ``align`` resumes where it stopped and a line torn by the kill is dropped, not trusted."""

from __future__ import annotations

import csv
import zlib
from pathlib import Path

from data_prep.manifest import MANIFEST_COLUMNS
from faceverify.io import atomic_write


def read_journal(path: Path) -> dict[str, dict[str, str]]:
    """The intact rows of a journal by source path, reading only (torn or damaged lines dropped;
    no file: none)."""
    rows: dict[str, dict[str, str]] = {}
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header == MANIFEST_COLUMNS + ["crc"]:
                for fields in reader:
                    if len(fields) == len(MANIFEST_COLUMNS) + 1 and fields[-1] == Journal._crc(fields[:-1]):
                        row = dict(zip(MANIFEST_COLUMNS, fields))
                        rows[row["src"]] = row
    return rows


class Journal:
    """Append-only record of finished images.

    Each line carries a CRC32 of its fields, so a line torn by a kill mid-write is recognised
    and dropped on the next run (its image is simply redone).
    """

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[str, dict[str, str]] = read_journal(path)
        # rewrite a clean journal so a torn line never sits in the middle of the file
        self.rewrite()
        self._handle = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._handle)

    def rewrite(self) -> None:
        with atomic_write(self.path, newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(MANIFEST_COLUMNS + ["crc"])
            for row in self.rows.values():
                fields = [row[c] for c in MANIFEST_COLUMNS]
                writer.writerow(fields + [self._crc(fields)])

    @staticmethod
    def _crc(fields: list[str]) -> str:
        return format(zlib.crc32("\x1f".join(fields).encode("utf-8")), "08x")

    def append(self, row: dict[str, str]) -> None:
        fields = [row[c] for c in MANIFEST_COLUMNS]
        self._writer.writerow(fields + [self._crc(fields)])
        self._handle.flush()
        self.rows[row["src"]] = row

    def rewrite_open(self) -> None:
        """Rewrite the journal from ``rows`` while it is open for appending (after rows were dropped)."""
        self._handle.close()
        self.rewrite()
        self._handle = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._handle)

    def close(self) -> None:
        self._handle.close()
