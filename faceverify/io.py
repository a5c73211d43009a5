"""Writing files so that a crash or a kill never leaves a half-written one behind.

Every output that a later run reads (checkpoints, manifests, summaries, packs' metadata, result
CSVs, reports) goes through :func:`atomic_write`: the bytes go to a temporary file beside the
target (``.<name>.tmp``), which is renamed over the target only once it is complete. On any
error the temporary file is removed and the old target, if there was one, is left as it was.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from faceverify.errors import InvalidInputError, NotAFolderError, NotWritableError


def temporary_path(path: str | Path) -> Path:
    """The temporary name :func:`atomic_write` uses for ``path`` (``dir/.name.tmp``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", durable: bool = False, **open_kwargs: Any) -> Iterator[IO]:
    """``with atomic_write(path) as handle: ...`` writes ``path`` all at once or not at all.

    ``durable=True`` also flushes the file to disk before the rename (checkpoints), so the
    new file survives a power cut, not only a killed process. Text mode defaults to UTF-8.
    """
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    with atomic_write(path) as handle:
        handle.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | Path, what: str = "file") -> Any:
    """The JSON in ``path``; a damaged or truncated file is an :class:`InvalidInputError` naming it
    (``what`` says which file it is to the user, e.g. "pack metadata")."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise InvalidInputError(f"{what} {path} is not UTF-8 text (byte {err.start}): damaged?") from None
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"{what} {path} is not valid JSON (line {err.lineno}, column {err.colno}: "
                                f"{err.msg}): damaged or truncated?") from None


def check_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` if needed and make sure files can be written in it, before any work.

    Raises:
        PermissionError: the folder (or the first existing parent) is not writable; the
            message names it.
    """
    path = Path(path)
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotAFolderError(f"{what} {path}: {existing} exists and is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise NotWritableError(f"{what} {path} is not writable ({existing} is read-only)")
    return path


def folder_overlap(source: str | Path, target: str | Path) -> str:
    """How two folders overlap, compared resolved: ``"same"``, ``"inside"`` (target lies inside
    source), ``"contains"`` (target contains source), or ``""`` when they are separate. The one
    test behind every command that writes a folder from another (``align``, ``pack``, ``export rec``)."""
    source, target = Path(source).resolve(), Path(target).resolve()
    if source == target:
        return "same"
    if source in target.parents:
        return "inside"
    return "contains" if target in source.parents else ""


def check_not_an_input(out: str | Path, inputs: Iterable[str | Path], what: str = "OUT") -> None:
    """Refuse an output path that names one of the command's inputs, before any work.

    ``faceverify export CKPT CKPT`` would replace the checkpoint by its export, ``embed LIST --out
    LIST`` the list by the embeddings. Paths are compared resolved (``..`` and symbolic links
    followed), so another spelling of an input is refused too.

    Raises:
        ValueError: ``out`` is one of ``inputs``; the message names both.
    """
    target = Path(out).resolve()
    for item in inputs:
        if Path(item).resolve() == target:
            raise InvalidInputError(f"{what} {out} is {item}, an input of this command: writing it would destroy the "
                             "input; choose another path")


def move_aside(path: str | Path) -> Path:
    """Rename ``path`` to ``<path>.old-<YYYYmmdd-HHMMSS>`` (a free name) and return the new name.

    How ``--restart`` starts over without deleting anything.
    """
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.old-{stamp}")
    counter = 1
    while target.exists():
        counter += 1
        target = path.with_name(f"{path.name}.old-{stamp}-{counter}")
    os.rename(path, target)
    return target


def save_figure(figure: Any, path: str | Path, **savefig_kwargs: Any) -> Path:
    """``figure.savefig`` through :func:`atomic_write` (the format from the file's suffix); the saved
    area grows to hold every title, label and legend (nothing is clipped at the edges)."""
    path = Path(path)
    savefig_kwargs.setdefault("bbox_inches", "tight")
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format=path.suffix.lstrip(".") or "png", **savefig_kwargs)
    return path
