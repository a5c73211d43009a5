"""Resumable embedding of a long list of images in fixed chunks (``faceverify embed``, the IJB
evaluation).

``OUT.partial/`` holds ``meta.json`` (what the run embeds with: a model fingerprint, the source, the
chunk size) and one ``chunk-<k>.npz`` per finished chunk with the chunk's ``stamps`` (each image's
size and modification time): a killed run resumes at the first chunk not written or whose images
changed since; a run with other ``meta`` is refused rather than mixed in. At the end the chunks are
joined into ``OUT`` (``paths``, ``embeddings`` and ``embeddings_flip`` ``[N, D]`` float32,
``status`` ``[N]``: ``ok`` or why not; rows not ``ok`` hold zeros; ``quality`` ``[N]``, each image's
feature norm, MagFace's quality score) and the folder is removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from faceverify.errors import InvalidInputError
from faceverify.io import atomic_write, read_json, write_json
from faceverify.progress import progress_bar

# names of one chunk -> (embeddings [n, D], embeddings of the mirrors [n, D], status [n])
ChunkEmbedder = Callable[[list[str]], tuple[np.ndarray, np.ndarray, list[str]]]


def file_stamp(path: Path) -> str:
    """A file's size and modification time, or ``"missing"``."""
    try:
        info = path.stat()
    except OSError:
        return "missing"
    return f"{info.st_size}-{info.st_mtime_ns}"


def _chunk_stamps(part: Path) -> list[str] | None:
    try:
        with np.load(part) as data:
            return data["stamps"].tolist() if "stamps" in data else None
    except (OSError, ValueError, KeyError):
        return None  # a damaged chunk is embedded again


def embed_in_chunks(names: Sequence[str], stamp: Callable[[str], str], embed_chunk: ChunkEmbedder, out: Path,
                    meta: dict, chunk: int, progress: bool = True, unit: str = "photo") -> dict:
    """Embed ``names`` into ``out`` (see the module docstring) -> a summary (counts, statuses)."""
    partial = out.with_name(out.name + ".partial")
    meta = {**meta, "images": len(names), "chunk": chunk}
    if (partial / "meta.json").is_file():
        previous = read_json(partial / "meta.json", "unfinished embed run's metadata")
        if previous != meta:
            raise InvalidInputError(f"{partial} holds an unfinished run with another model, source or chunk size; "
                                    "delete it or choose another --out")
    write_json(partial / "meta.json", meta)
    starts = list(range(0, len(names), chunk))
    done_before = 0
    with progress_bar(total=len(names), desc="embed", unit=unit, enabled=progress) as bar:
        for index, start in enumerate(starts):
            part = partial / f"chunk-{index:06d}.npz"
            these = list(names[start : start + chunk])
            stamps = [stamp(name) for name in these]
            if part.is_file() and _chunk_stamps(part) == stamps:  # an image changed since: embed the chunk again
                done_before += len(these)
                bar.update(len(these))
                continue
            plain, flipped, status = embed_chunk(these)
            with atomic_write(part, "wb") as handle:
                np.savez(handle, paths=np.array(these), embeddings=plain.astype(np.float32),
                         embeddings_flip=flipped.astype(np.float32), status=np.array(status), stamps=np.array(stamps))
            bar.update(len(these))
    parts = [np.load(partial / f"chunk-{i:06d}.npz") for i in range(len(starts))]
    status = np.concatenate([p["status"] for p in parts])
    embeddings = np.concatenate([p["embeddings"] for p in parts])
    with atomic_write(out, "wb") as handle:  # quality: each image's feature norm (MagFace's quality score)
        np.savez(handle, paths=np.concatenate([p["paths"] for p in parts]), embeddings=embeddings,
                 embeddings_flip=np.concatenate([p["embeddings_flip"] for p in parts]), status=status,
                 quality=np.linalg.norm(embeddings.astype(np.float64), axis=1).astype(np.float32))
    for part in partial.iterdir():
        part.unlink()
    partial.rmdir()
    failed = {str(s): int(n) for s, n in zip(*np.unique(status[status != "ok"], return_counts=True))}
    return {"ok": int((status == "ok").sum()), "failed": failed, "resumed_from": done_before, "out": str(out)}
