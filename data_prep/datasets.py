"""Dataset specifics: locating, downloading and verifying LFW; CASIA-WebFace layout and overlap.

LFW (Huang et al. 2007): 13,233 images of 5,749 people, ``<Name>/<Name>_NNNN.jpg``.

* :func:`locate_lfw` finds an image tree and its protocol files from an explicit path,
  ``$FACEVERIFY_DATA/lfw`` or a previous download.
* :func:`download_lfw` (users with internet) fetches the images and pairs files through
  scikit-learn's ``fetch_lfw_pairs`` (funneled or original variant; scikit-learn does not offer
  deep-funneled) and the people files from the official LFW site repository, then verifies.
* :func:`verify_lfw` checks completeness (13,233 images, 5,749 people) and, given a manifest
  TSV ``path, sha256, bytes``, every file's checksum.

CASIA-WebFace (Yi et al. 2014): 494,414 images of 10,575 people. Expected layout
``CASIA-WebFace/<identity id>/<NNN>.jpg`` (e.g. ``0000045/001.jpg``) plus the release's
``names.txt`` mapping ids to names (``0000045 Aaron_Eckhart`` per line; either a space or a tab).
:func:`casia_lfw_overlap` lists the CASIA ids whose person also appears in LFW, for
``faceverify pack --exclude-identities`` (the paper's models are evaluated on LFW, so those
identities are removed from training).
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.request
from pathlib import Path

from faceverify.data.lfw import list_image_tree, read_people
from faceverify.data.locate import (  # noqa: F401 - LFW is located there; these names are datasets' API
    LFW_IMAGE_FOLDERS,
    DatasetError,
    LFWLocation,
    locate_lfw,
)
from faceverify.errors import MissingInputError

LFW_IMAGES = 13233
LFW_PEOPLE = 5749
PEOPLE_FILES = ("people.txt", "peopleDevTrain.txt", "peopleDevTest.txt")
# The official LFW website repository (umass-vis-lfw/umass-vis-lfw.github.io), pinned commit.
LFW_SITE_RAW = (
    "https://raw.githubusercontent.com/umass-vis-lfw/umass-vis-lfw.github.io/"
    "2a620cd8cceb10430f8c7012fe9fa5f0837759e9/"
)


def verify_lfw(images: str | Path, manifest: str | Path | None = None) -> dict:
    """Count images and people; with a manifest TSV (path, sha256, bytes) check every file.

    Raises:
        DatasetError: fewer or more images/people than LFW has, or checksum mismatches; the
            message lists the first problems.
    """
    images = Path(images)
    people = [d for d in sorted(os.listdir(images)) if (images / d).is_dir()]
    files = list_image_tree(images)
    problems: list[str] = []
    if len(files) != LFW_IMAGES:
        problems.append(f"{len(files)} images, LFW has {LFW_IMAGES}")
    if len(people) != LFW_PEOPLE:
        problems.append(f"{len(people)} people, LFW has {LFW_PEOPLE}")
    checked = 0
    if manifest is not None:
        expected = read_checksum_manifest(manifest)
        present = set(files)
        missing = sorted(set(expected) - present)
        if missing:
            problems.append(f"{len(missing)} manifest images missing, e.g. {missing[:3]}")
        bad: list[str] = []
        for rel in sorted(present & set(expected)):
            digest, size = expected[rel]
            path = images / rel
            if path.stat().st_size != size or _sha256(path) != digest:
                bad.append(rel)
            checked += 1
        if bad:
            problems.append(f"{len(bad)} images differ from the manifest, e.g. {bad[:3]}")
    if problems:
        raise DatasetError(f"LFW at {images} is incomplete or corrupt: " + "; ".join(problems))
    return {"images": len(files), "people": len(people), "checksums_verified": checked}


def read_checksum_manifest(path: str | Path) -> dict[str, tuple[str, int]]:
    """``path<TAB>sha256<TAB>bytes`` lines after a ``path sha256 bytes`` header -> ``{path: (sha256, bytes)}``;
    a malformed line is a DatasetError naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"checksum manifest {path} does not exist")
    expected: dict[str, tuple[str, int]] = {}
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().split()
        if header[:2] != ["path", "sha256"]:
            raise DatasetError(f"{path} line 1: expected a 'path sha256 bytes' header")
        for lineno, line in enumerate(handle, start=2):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3:
                raise DatasetError(f"{path} line {lineno}: expected 3 tab-separated fields "
                                   f"(path, sha256, bytes), got {len(fields)}")
            rel, digest, size = fields
            if len(digest) != 64 or not size.isdigit():
                raise DatasetError(f"{path} line {lineno}: expected a 64-digit sha256 and a byte count, "
                                   f"got {digest!r} and {size!r}")
            expected[rel] = (digest.lower(), int(size))
    return expected


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_lfw(data_home: str | Path, funneled: bool = True, people_base_url: str = LFW_SITE_RAW) -> LFWLocation:
    """Download LFW with scikit-learn into ``data_home/lfw_home`` and the people files beside it.

    Resumable in the sense scikit-learn's fetcher is (finished files are not fetched again).
    Returns the verified location.
    """
    from sklearn.datasets import fetch_lfw_pairs

    data_home = Path(data_home)
    # fetches lfw(-funneled).tgz and the three pairs files, then decodes the pairs (small resize)
    fetch_lfw_pairs(subset="10_folds", data_home=str(data_home), funneled=funneled, resize=0.1,
                    download_if_missing=True)
    lfw_home = data_home / "lfw_home"
    for name in PEOPLE_FILES:
        target = lfw_home / name
        if not target.is_file():
            tmp = target.with_name(target.name + ".part")
            with urllib.request.urlopen(people_base_url + name, timeout=60) as response:
                tmp.write_bytes(response.read())
            read_people(tmp)  # refuse a corrupt or HTML answer before it takes the real name
            os.replace(tmp, target)
    location = locate_lfw(lfw_home)
    verify_lfw(location.images)
    return location


def _normalise_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def casia_lfw_overlap(casia_names: str | Path, lfw_names: list[str]) -> list[str]:
    """CASIA-WebFace identity ids whose person is also in LFW (names compared case- and
    punctuation-insensitively), sorted. ``casia_names`` is the release's ``names.txt``."""
    lfw = {_normalise_name(n) for n in lfw_names}
    overlap: list[str] = []
    with open(casia_names, encoding="utf-8", errors="replace") as handle:
        for lineno, line in enumerate(handle, start=1):
            fields = line.strip().split(None, 1)
            if not fields:
                continue
            if len(fields) != 2:
                raise DatasetError(f"{casia_names} line {lineno}: expected '<id> <name>', got {line.strip()!r}")
            if _normalise_name(fields[1]) in lfw:
                overlap.append(fields[0])
    return sorted(overlap)


def lfw_people_names(people_file: str | Path) -> list[str]:
    """Every person of an LFW people file (all sets)."""
    return [name for group in read_people(people_file) for name in group]
