"""Checkpoints written atomically, holding everything an exact resume needs.

A checkpoint holds the model, the objective (class weights, centers, proxies), optimizer,
scheduler and grad-scaler states, every RNG state, the sampler position (epoch, batch within
the epoch) and the step. It is written to a temporary file in the same folder, flushed to disk
and renamed over the old one, so a crash at any moment, or a full disk, leaves the last good
checkpoint intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from faceverify.errors import FaceverifyError, MissingInputError
from faceverify.io import atomic_write

FORMAT = "faceverify-checkpoint-v1"


class CheckpointError(FaceverifyError, ValueError):
    """A file that is not a faceverify checkpoint, or one that cannot be read."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` all at once (temporary file, fsync, rename).

    Raises:
        CheckpointError: the file could not be written (disk full, read-only folder); the
            temporary file is removed and the previous checkpoint at ``path`` is left intact.
    """
    path = Path(path)
    try:
        with atomic_write(path, "wb", durable=True) as handle:
            torch.save({"format": FORMAT, **state}, handle)
    except OSError as err:
        kept = f"the previous {path.name} is intact" if path.is_file() else f"no {path.name} was written"
        reason = err.strerror or str(err)
        raise CheckpointError(f"could not write checkpoint {path}: {reason}; {kept}, the temporary file "
                              "was removed") from err
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a faceverify checkpoint")
    return state
