"""Many photos through a model in one process: ``faceverify embed`` and ``faceverify verify --pairs``.

* :func:`embed_photos`: a folder tree (every image under it, recursively, sorted) or a list file
  (one path per line, relative to the list's folder unless absolute) -> ``EMB.npz`` with
  ``paths``, ``embeddings``, ``embeddings_flip``, ``status`` (``ok`` or why not: unreadable,
  missing, no face) and ``quality`` (the feature norm: MagFace's quality score). Rows that are not ``ok`` hold zeros, and ``faceverify eval --embeddings``
  ignores them (a pair that needs one is reported missing, with its status). Photos are done in
  fixed chunks written to ``EMB.npz.partial/``, so a killed run resumes at the first unfinished
  chunk; the chunks are joined into ``EMB.npz`` at the end.
* :func:`verify_pairs`: a CSV with columns ``a,b`` (paths; extra columns kept) -> a CSV with
  ``a,b,similarity,threshold,same,status`` per row; an input column named like one of these (a
  ground-truth ``same``, an earlier run's results) is kept as ``input_<name>``. Each distinct
  photo is read, detected and embedded once, in batches; a row that fails records why and never
  stops the run.
* Neither writes over one of its inputs: an ``--out`` that is the list, the pairs CSV or one of
  the photos is refused before anything is written.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from faceverify.data.images import UnreadableImageError, read_rgb
from faceverify.data.lfw import IMAGE_EXTENSIONS
from faceverify.errors import FaceverifyError, MissingInputError
from faceverify.evaluation.chunked_embed import embed_in_chunks, file_stamp
from faceverify.io import atomic_write, check_not_an_input
from faceverify.locks import lock_output
from faceverify.progress import progress_bar
from faceverify.use.model import FaceModel

RESULT_COLUMNS = ("similarity", "threshold", "same", "status")  # what verify --pairs adds to every row


class PhotoListError(FaceverifyError, ValueError):
    """A list or pairs file that cannot be used; the message names the file and the line."""


def list_photos(src: str | Path) -> tuple[Path, list[str]]:
    """``(root, relative paths)`` of a folder tree (recursive, sorted) or a list file."""
    src = Path(src)
    if src.is_dir():
        found = []
        for folder, dirs, files in os.walk(src):
            dirs.sort()
            for name in sorted(files):
                if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not name.startswith("."):
                    found.append(str((Path(folder) / name).relative_to(src)))
        if not found:
            raise PhotoListError(f"no images under {src} (looked for {', '.join(IMAGE_EXTENSIONS)})")
        return src, sorted(found)
    if src.is_file():
        lines = [line.strip() for line in src.read_text(encoding="utf-8-sig").splitlines()]
        paths = [line for line in lines if line and not line.startswith("#")]
        if not paths:
            raise PhotoListError(f"{src}: no photo paths in the list")
        return src.parent, paths
    raise MissingInputError(f"{src} is neither a folder of photos nor a list file")


def _photo_path(root: Path, rel: str) -> Path:
    """A listed photo's path: ``rel`` itself when absolute, else relative to the list's folder."""
    return Path(rel) if Path(rel).is_absolute() else root / rel


def _read(root: Path, rel: str) -> np.ndarray | str:
    """The photo, or why it cannot be used."""
    path = _photo_path(root, rel)
    try:
        return read_rgb(path)
    except FileNotFoundError:
        return "missing file"
    except UnreadableImageError as err:
        return f"unreadable: {err.reason}"


def _crops(model: FaceModel, root: Path, rels: Sequence[str]) -> tuple[list[np.ndarray | None], list[str]]:
    """The chosen face's crop of each photo (None when there is none) and each one's status."""
    images = [_read(root, rel) for rel in rels]
    readable = [i for i, im in enumerate(images) if isinstance(im, np.ndarray)]
    found = model.faces_many([images[i] for i in readable]) if readable else []
    crops: list[np.ndarray | None] = [None] * len(rels)
    status = [im if isinstance(im, str) else "" for im in images]
    for i, faces in zip(readable, found):
        if faces:
            crops[i] = faces[0].crop
            status[i] = "ok"
        else:
            status[i] = "no face found"
    return crops, status


def model_fingerprint(model: FaceModel) -> str:
    text = json.dumps(model.describe(), sort_keys=True)
    if model.kind != "dlib" and Path(model.name).is_file():
        stat = Path(model.name).stat()
        text += f"|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def embed_photos(model: FaceModel, src: str | Path, out: str | Path, chunk: int = 256,
                 progress: bool = True) -> dict:
    """Embed every photo of ``src`` into ``out`` (see the module docstring); returns a summary.
    One embed per ``out`` (``.<name>.lock`` beside it): a second is refused while the first runs."""
    root, rels = list_photos(src)
    out = Path(out)
    check_not_an_input(out, [src, *(_photo_path(root, rel) for rel in rels)], "--out")
    with lock_output(out, "embed", beside=True):
        return _embed_locked(model, root, rels, src, out, chunk, progress)


def _embed_locked(model: FaceModel, root: Path, rels: list[str], src: str | Path, out: Path, chunk: int,
                  progress: bool) -> dict:
    def embed_chunk(names: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        crops, status = _crops(model, root, names)
        usable = [c for c in crops if c is not None]
        plain, flipped = model.embed_crops_split(usable, with_flip=True)
        dim = plain.shape[1] if usable else model.embedding_dim
        full = np.zeros((len(names), dim), np.float32)
        full_flip = np.zeros((len(names), dim), np.float32)
        rows = [i for i, c in enumerate(crops) if c is not None]
        if rows:
            full[rows], full_flip[rows] = plain, flipped
        return full, full_flip, status

    meta = {"model": model_fingerprint(model), "src": str(Path(src).resolve())}
    summary = embed_in_chunks(rels, lambda rel: file_stamp(_photo_path(root, rel)), embed_chunk, out, meta, chunk,
                              progress)
    return {"photos": len(rels), **summary, "model": model.name}


def read_pairs_csv(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """``(columns, rows)`` of a pairs CSV with at least the columns ``a`` and ``b``."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"pairs file {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as handle:  # Excel writes a BOM
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        if "a" not in columns or "b" not in columns:
            raise PhotoListError(f"{path} line 1: a pairs CSV needs the columns a and b (paths), got {columns}")
        rows = []
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise PhotoListError(f"{path} line {reader.line_num}: expected {len(columns)} fields")
            rows.append(row)
    if not rows:
        raise PhotoListError(f"{path}: no pairs")
    return columns, rows


def verify_pairs(model: FaceModel, pairs_csv: str | Path, out_csv: str | Path, threshold: float | None = None,
                 chunk: int = 64, progress: bool = True) -> dict:
    """Decide every pair of ``pairs_csv`` into ``out_csv`` (see the module docstring)."""
    limit, _ = model.decision_threshold(threshold)
    columns, rows = read_pairs_csv(pairs_csv)
    root = Path(pairs_csv).parent
    photos = list(dict.fromkeys(p for row in rows for p in (row["a"], row["b"])))
    check_not_an_input(out_csv, [pairs_csv, *(_photo_path(root, p) for p in photos)], "--out")
    kept = kept_column_names(columns)
    features: dict[str, np.ndarray] = {}
    status: dict[str, str] = {}
    with progress_bar(total=len(photos), desc="verify", unit="photo", enabled=progress) as bar:
        for start in range(0, len(photos), chunk):
            names = photos[start : start + chunk]
            crops, states = _crops(model, root, names)
            usable = [i for i, c in enumerate(crops) if c is not None]
            embedded = model.embed_crops([crops[i] for i in usable])
            for i, name in enumerate(names):
                status[name] = states[i]
            for i, vector in zip(usable, embedded):
                features[names[i]] = vector
            bar.update(len(names))
    out_columns = ["a", "b", *RESULT_COLUMNS, *(kept[c] for c in columns if c not in ("a", "b"))]
    counts = {"same": 0, "different": 0, "failed": 0}
    with atomic_write(out_csv, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=out_columns)
        writer.writeheader()
        for row in rows:
            problems = [f"{side}: {status[row[side]]}" for side in ("a", "b") if status[row[side]] != "ok"]
            record = {kept[column]: value for column, value in row.items()}
            record["threshold"] = f"{limit:.6g}"
            if problems:
                record.update(similarity="", same="", status="; ".join(problems))
                counts["failed"] += 1
            else:
                score = model.score(features[row["a"]], features[row["b"]])
                same = score > limit
                record.update(similarity=f"{score:.6f}", same=str(same).lower(), status="ok")
                counts["same" if same else "different"] += 1
            writer.writerow(record)
    renamed = {column: name for column, name in kept.items() if column != name}
    return {"pairs": len(rows), **counts, "photos": len(photos), "threshold": limit, "out": str(out_csv),
            "renamed_columns": renamed}


def kept_column_names(columns: Sequence[str]) -> dict[str, str]:
    """The output name of each input column: its own, except that a column named like one of
    verify's (``similarity``, ``threshold``, ``same``, ``status`` — e.g. a ground-truth ``same``,
    or the results of an earlier run) becomes ``input_<name>`` (``input_input_<name>`` if that is
    taken too), so the output loses none of the input."""
    names = {column: column for column in columns}
    for column in columns:
        if column in RESULT_COLUMNS:
            name = f"input_{column}"
            while name in names.values():  # every input column's name, and the names given so far
                name = f"input_{name}"
            names[column] = name
    return names
