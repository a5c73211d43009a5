"""A training run's hold on its output folder: one run per ``out`` (see :mod:`faceverify.locks`)."""

from __future__ import annotations

from pathlib import Path

from faceverify.io import check_writable_dir, move_aside
from faceverify.locks import OutputInUseError, OutputLock, lock_output
from faceverify.training import distributed


def lock_run_output(out_dir: Path, restart: bool,
                    info: distributed.DistInfo) -> tuple[OutputLock | None, Path | None]:
    """``(lock, where an old run was moved)``: the main process takes ``out_dir``'s lock (``restart``
    moves an existing run aside first and locks the fresh folder); every rank stops if it could not."""
    lock, moved, error = None, None, None
    if info.is_main:
        try:
            check_writable_dir(out_dir, "output folder (out)")
            existed = out_dir.exists()
            lock = lock_output(out_dir, "training run")
            if restart and existed:
                moved = move_aside(out_dir)  # its lock moves with it, still held
                fresh = lock_output(out_dir, "training run")
                lock.release()
                lock = fresh
        except OSError as err:
            error = err
            if lock is not None:
                lock.release()
    if distributed.broadcast_flag(error is not None, info):
        raise error if error is not None else OutputInUseError(
            f"{out_dir}: the main process could not take the output folder (see its error)")
    return lock, moved
