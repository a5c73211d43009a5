"""Finding data on disk: explicit paths first, then ``$FACEVERIFY_DATA``; the one LFW locator
(:func:`locate_lfw`), which every command and the tests use."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from faceverify.errors import FaceverifyError

DATA_ENV = "FACEVERIFY_DATA"
# the image folder names of LFW as it circulates (deep-funneled first, as the shared data has it)
LFW_IMAGE_FOLDERS = ("lfw-deepfunneled", "lfw_funneled", "lfw-funneled", "lfw")


class DataNotFoundError(FaceverifyError, FileNotFoundError):
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
    """LFW image tree ``<Name>/<Name>_NNNN.jpg``: explicit, or the one in ``$FACEVERIFY_DATA/lfw``
    (``lfw-deepfunneled``, ``lfw_funneled`` or ``lfw``)."""
    if explicit:
        folder = Path(explicit)
    else:
        lfw = data_root() / "lfw"
        folder = _find_images(lfw) or lfw / LFW_IMAGE_FOLDERS[0]
    if not folder.is_dir():
        raise DataNotFoundError(
            f"LFW image folder {folder} does not exist; pass --lfw DIR or set ${DATA_ENV}"
        )
    return folder


class DatasetError(FaceverifyError, ValueError):
    """A dataset is missing, incomplete or corrupt; the message says what and how to fix it."""


@dataclass(frozen=True)
class LFWLocation:
    images: Path  # <Name>/<Name>_NNNN.jpg tree
    protocol: Path  # folder holding pairs.txt, people.txt, ...

    @property
    def pairs(self) -> Path:
        return self.protocol / "pairs.txt"

    @property
    def people(self) -> Path:
        return self.protocol / "people.txt"


def _find_images(folder: Path) -> Path | None:
    for name in LFW_IMAGE_FOLDERS:
        if (folder / name).is_dir():
            return folder / name
    return None


def locate_lfw(path: str | Path | None = None) -> LFWLocation:
    """Find LFW: ``path`` (a folder with ``pairs.txt`` and an image folder, or the image folder
    itself with the protocol files beside it), else ``$FACEVERIFY_DATA/lfw``, else the
    scikit-learn download folder ``~/scikit_learn_data/lfw_home``."""
    candidates: list[Path] = []
    if path is not None:
        candidates.append(Path(path).expanduser())
    else:
        if os.environ.get(DATA_ENV):
            candidates.append(Path(os.environ[DATA_ENV]).expanduser() / "lfw")
        candidates.append(Path.home() / "scikit_learn_data" / "lfw_home")
    for folder in candidates:
        images = _find_images(folder)
        if (folder / "pairs.txt").is_file() and images is not None:
            return LFWLocation(images, folder)
        if folder.is_dir() and (folder.parent / "pairs.txt").is_file() and folder.name in LFW_IMAGE_FOLDERS:
            return LFWLocation(folder, folder.parent)
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetError(
        f"LFW not found (looked in {looked}). Set {DATA_ENV} to a folder holding lfw/, pass the "
        "LFW folder explicitly, or download it with `faceverify lfw download DIR`."
    )
