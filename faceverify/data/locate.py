"""Finding data on disk: explicit paths first, then ``$FACEVERIFY_DATA``."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "FACEVERIFY_DATA"


class DataNotFoundError(FileNotFoundError):
    """Data needed for a command is not where it was looked for; the message says how to fix it."""


def data_root(required: bool = True) -> Path | None:
    """``$FACEVERIFY_DATA`` as a Path (it holds ``lfw/`` and ``faces/``)."""
    value = os.environ.get(DATA_ENV)
    if not value:
        if required:
            raise DataNotFoundError(
                f"${DATA_ENV} is not set; point it at the folder holding lfw/ (e.g. "
                f"export {DATA_ENV}=../shared/data) or pass the paths explicitly"
            )
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"${DATA_ENV}={value} is not a directory")
    return root


def lfw_protocol_dir(explicit: str | Path | None = None) -> Path:
    """Folder with ``pairs.txt`` / ``people.txt``: the explicit one or ``$FACEVERIFY_DATA/lfw``."""
    folder = Path(explicit) if explicit else data_root() / "lfw"
    if not (folder / "pairs.txt").is_file():
        raise DataNotFoundError(f"no LFW pairs.txt in {folder}")
    return folder


def lfw_images_dir(explicit: str | Path | None = None) -> Path:
    """LFW image tree ``<Name>/<Name>_NNNN.jpg``: explicit, or ``$FACEVERIFY_DATA/lfw/lfw-deepfunneled``."""
    folder = Path(explicit) if explicit else data_root() / "lfw" / "lfw-deepfunneled"
    if not folder.is_dir():
        raise DataNotFoundError(
            f"LFW image folder {folder} does not exist; pass --lfw DIR or set ${DATA_ENV}"
        )
    return folder
