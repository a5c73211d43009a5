"""Results are data: rows appended to a CSV, Markdown tables generated from the CSV.

Every row carries the commit, the device and the time it was produced, so a number in
``results/`` can always be traced to the script run that made it.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterable

from faceverify.io import atomic_write, write_text
from faceverify.provenance import device_description, git_commit, utc_now


def provenance(device: str | None = None) -> dict[str, str]:
    """The columns every results row carries."""
    return {"commit": git_commit(), "device": device or device_description(), "time_utc": utc_now()}


def append_rows(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Append rows to a CSV, widening the header if new columns appear."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existing: list[dict[str, str]] = read_rows(path) if path.is_file() else []
    new_rows = [dict(r) for r in rows]
    columns: list[str] = []
    for row in existing + new_rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in existing + new_rows:
            writer.writerow({k: _fmt(row.get(k, "")) for k in columns})
    return path


def read_rows(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.6g}"
    return value


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A GitHub Markdown table of ``rows`` (all columns unless ``columns`` is given)."""
    if not rows:
        return "(no rows)\n"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(_fmt(row.get(c, ""))) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def csv_to_markdown(csv_path: str | Path, md_path: str | Path, title: str, note: str = "",
                    columns: list[str] | None = None) -> Path:
    """Regenerate ``md_path`` from ``csv_path`` (never edit the Markdown by hand)."""
    rows = read_rows(csv_path)
    text = f"# {title}\n\nGenerated from `{Path(csv_path).name}`; do not edit by hand.\n\n"
    if note:
        text += note.strip() + "\n\n"
    text += markdown_table(rows, columns)
    return write_text(md_path, text)


def record_rows(csv_path: str | Path, rows: Iterable[dict[str, Any]], md_path: str | Path, title: str,
                note: str = "", columns: list[str] | None = None) -> Path:
    """What every recording script ends with: append ``rows`` to ``csv_path`` (the source) and
    regenerate ``md_path`` from the whole CSV (:func:`append_rows`, :func:`csv_to_markdown`)."""
    append_rows(csv_path, rows)
    return csv_to_markdown(csv_path, md_path, title, note=note, columns=columns)
