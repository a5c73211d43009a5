"""Readers for the official LFW protocol files and image-path resolution.

LFW (Huang et al., 2007) ships its verification protocol as text files:

* View 2 ``pairs.txt``: header ``10<TAB>300``, then for each of the 10 folds 300 matched pairs
  ``name<TAB>i<TAB>j`` followed by 300 mismatched pairs ``name1<TAB>i<TAB>name2<TAB>j``.
* View 1 ``pairsDevTrain.txt`` / ``pairsDevTest.txt``: header ``N`` (matched pairs), then N matched
  and N mismatched pairs; read here as a single fold.
* ``people.txt``: header ``10``, then 10 identity-disjoint sets, each a count line followed by that
  many ``name<TAB>n_images`` lines. ``peopleDevTrain.txt`` / ``peopleDevTest.txt``: header ``N`` then
  N ``name<TAB>n_images`` lines (one set).

Images are named ``<root>/<Name>/<Name>_<NNNN>.<ext>``; the extension is whatever is on disk
(aligned trees often hold ``.png``). An image is identified here by its *key*
``<Name>/<Name>_<NNNN>`` (no extension) so that the same protocol applies to any tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceverify.errors import FaceverifyError, MissingInputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm", ".gif", ".tif", ".tiff")


class ProtocolFileError(FaceverifyError, ValueError):
    """A malformed LFW protocol file; the message names the file and the line."""


class MissingImagesError(FaceverifyError, FileNotFoundError):
    """Images referenced by a protocol file are not on disk; the message counts and lists them."""

    def __init__(self, root: Path, missing: list[str]):
        self.root = Path(root)
        self.missing = list(missing)
        shown = "\n  ".join(self.missing[:10])
        more = f"\n  ... and {len(self.missing) - 10} more" if len(self.missing) > 10 else ""
        super().__init__(
            f"{len(self.missing)} image(s) referenced by the protocol are missing under {self.root} "
            f"(expected <root>/<Name>/<Name>_<NNNN>.<ext>):\n  {shown}{more}"
        )


def image_key(name: str, number: int) -> str:
    """``("Aaron_Peirsol", 1) -> "Aaron_Peirsol/Aaron_Peirsol_0001"``."""
    return f"{name}/{name}_{number:04d}"


def key_of_path(relpath: str) -> str:
    """Key of a path relative to an LFW root: drop the extension, use forward slashes."""
    rel = relpath.replace("\\", "/")
    stem, _ = os.path.splitext(rel)
    return stem


def identity_of_key(key: str) -> str:
    return key.split("/", 1)[0]


@dataclass(frozen=True)
class PairsProtocol:
    """Pairs of an LFW protocol file.

    Attributes:
        source: the file read.
        keys_a, keys_b: image keys of each pair, length N.
        same: bool [N], True for matched pairs.
        fold: int [N], fold index in ``range(n_folds)``.
        n_folds: number of folds (10 for View 2, 1 for View 1 files).
    """

    source: Path
    keys_a: tuple[str, ...]
    keys_b: tuple[str, ...]
    same: np.ndarray
    fold: np.ndarray
    n_folds: int

    def __len__(self) -> int:
        return len(self.keys_a)

    @property
    def keys(self) -> list[str]:
        """Unique image keys in first-seen order."""
        return list(dict.fromkeys(self.keys_a + self.keys_b))

    def subset(self, folds: list[int]) -> "PairsProtocol":
        """The pairs of the given folds, renumbered ``0..len(folds)-1`` in the order given."""
        remap = {f: i for i, f in enumerate(folds)}
        idx = np.flatnonzero(np.isin(self.fold, folds))
        return PairsProtocol(
            source=self.source,
            keys_a=tuple(self.keys_a[i] for i in idx),
            keys_b=tuple(self.keys_b[i] for i in idx),
            same=self.same[idx].copy(),
            fold=np.array([remap[int(f)] for f in self.fold[idx]], dtype=np.int64),
            n_folds=len(folds),
        )


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise MissingInputError(f"protocol file {path} does not exist")
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _int_field(path: Path, lineno: int, text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ProtocolFileError(f"{path} line {lineno}: {what} {text!r} is not an integer") from None
    if value < 1:
        raise ProtocolFileError(f"{path} line {lineno}: {what} {value} must be >= 1")
    return value


def read_pairs(path: str | Path) -> PairsProtocol:
    """Read a View 2 (``10 300`` header) or View 1 (``N`` header) pairs file.

    Raises:
        ProtocolFileError: malformed header, wrong number of fields, non-integer image numbers,
            a matched pair where a mismatched one belongs (or vice versa), or a wrong line count;
            the message names the file and the 1-based line number.
    """
    path = Path(path)
    lines = _read_lines(path)
    if not lines:
        raise ProtocolFileError(f"{path} line 1: empty file, expected a header")
    header = lines[0].split()
    if len(header) == 2:
        n_folds = _int_field(path, 1, header[0], "number of folds")
        per_class = _int_field(path, 1, header[1], "pairs per class")
    elif len(header) == 1:
        n_folds, per_class = 1, _int_field(path, 1, header[0], "number of matched pairs")
    else:
        raise ProtocolFileError(
            f"{path} line 1: header {lines[0]!r} must be '<folds> <pairs per class>' (View 2) "
            "or '<matched pairs>' (View 1)"
        )
    expected = n_folds * 2 * per_class
    body = lines[1:]
    if len(body) != expected:
        raise ProtocolFileError(
            f"{path} line {min(len(body), expected) + 2}: header promises {expected} pair lines "
            f"({n_folds} fold(s) x 2 x {per_class}) but the file has {len(body)}"
        )
    keys_a: list[str] = []
    keys_b: list[str] = []
    same: list[bool] = []
    fold: list[int] = []
    for offset, line in enumerate(body):
        lineno = offset + 2
        f, within = divmod(offset, 2 * per_class)
        matched = within < per_class
        fields = line.split()
        if matched:
            if len(fields) != 3:
                raise ProtocolFileError(
                    f"{path} line {lineno}: expected a matched pair 'name i j' (fold {f + 1}), "
                    f"got {len(fields)} field(s): {line!r}"
                )
            name, i, j = fields
            keys_a.append(image_key(name, _int_field(path, lineno, i, "image number")))
            keys_b.append(image_key(name, _int_field(path, lineno, j, "image number")))
        else:
            if len(fields) != 4:
                raise ProtocolFileError(
                    f"{path} line {lineno}: expected a mismatched pair 'name1 i name2 j' "
                    f"(fold {f + 1}), got {len(fields)} field(s): {line!r}"
                )
            name1, i, name2, j = fields
            if name1 == name2:
                raise ProtocolFileError(
                    f"{path} line {lineno}: mismatched pair names the same person {name1!r} twice"
                )
            keys_a.append(image_key(name1, _int_field(path, lineno, i, "image number")))
            keys_b.append(image_key(name2, _int_field(path, lineno, j, "image number")))
        same.append(matched)
        fold.append(f)
    return PairsProtocol(
        source=path,
        keys_a=tuple(keys_a),
        keys_b=tuple(keys_b),
        same=np.asarray(same, dtype=bool),
        fold=np.asarray(fold, dtype=np.int64),
        n_folds=n_folds,
    )


def read_people(path: str | Path) -> list[dict[str, int]]:
    """Read ``people.txt`` (10 sets) or ``peopleDev*.txt`` (one set).

    Returns:
        one ``{name: number_of_images}`` mapping per set, in file order.
    """
    path = Path(path)
    lines = _read_lines(path)
    if not lines:
        raise ProtocolFileError(f"{path} line 1: empty file, expected a header")
    head = lines[0].split()
    if len(head) != 1:
        raise ProtocolFileError(f"{path} line 1: header {lines[0]!r} must be a single integer")
    count = _int_field(path, 1, head[0], "count")
    single_set = len(lines) > 1 and len(lines[1].split()) == 2
    sets: list[dict[str, int]] = []
    pos = 1

    def read_names(n: int) -> dict[str, int]:
        nonlocal pos
        names: dict[str, int] = {}
        for _ in range(n):
            if pos >= len(lines):
                raise ProtocolFileError(f"{path} line {pos + 1}: file ends inside a set of {n} people")
            fields = lines[pos].split()
            if len(fields) != 2:
                raise ProtocolFileError(
                    f"{path} line {pos + 1}: expected 'name n_images', got {lines[pos]!r}"
                )
            names[fields[0]] = _int_field(path, pos + 1, fields[1], "number of images")
            pos += 1
        return names

    if single_set:
        sets.append(read_names(count))
    else:
        for _ in range(count):
            if pos >= len(lines):
                raise ProtocolFileError(f"{path} line {pos + 1}: file ends before set {len(sets) + 1}")
            fields = lines[pos].split()
            if len(fields) != 1:
                raise ProtocolFileError(
                    f"{path} line {pos + 1}: expected the size of set {len(sets) + 1}, got {lines[pos]!r}"
                )
            size = _int_field(path, pos + 1, fields[0], "set size")
            pos += 1
            sets.append(read_names(size))
    if pos != len(lines):
        raise ProtocolFileError(f"{path} line {pos + 1}: unexpected extra line {lines[pos]!r}")
    return sets


def people_keys(people: dict[str, int]) -> list[str]:
    """All image keys of a people set (``Name/Name_0001`` ... ``Name/Name_<n>``)."""
    return [image_key(name, i) for name, n in people.items() for i in range(1, n + 1)]


def resolve_image_paths(root: str | Path, keys: list[str]) -> dict[str, Path]:
    """Find each key's image file under ``root`` with whatever extension it has on disk.

    Lists each identity folder once (13,233 LFW images resolve in well under a second).

    Raises:
        MissingImagesError: one error counting every missing key and listing the first ten.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"image root {root} does not exist or is not a directory")
    by_identity: dict[str, dict[str, str]] = {}
    resolved: dict[str, Path] = {}
    missing: list[str] = []
    for key in dict.fromkeys(keys):
        identity, stem = key.split("/", 1)
        if identity not in by_identity:
            listing: dict[str, str] = {}
            folder = root / identity
            if folder.is_dir():
                for entry in sorted(os.listdir(folder)):
                    file_stem, ext = os.path.splitext(entry)
                    if ext.lower() in IMAGE_EXTENSIONS:
                        # first extension in preference order wins if several exist
                        prev = listing.get(file_stem)
                        if prev is None or IMAGE_EXTENSIONS.index(ext.lower()) < IMAGE_EXTENSIONS.index(
                            os.path.splitext(prev)[1].lower()
                        ):
                            listing[file_stem] = entry
            by_identity[identity] = listing
        entry = by_identity[identity].get(stem)
        if entry is None:
            missing.append(key)
        else:
            resolved[key] = root / identity / entry
    if missing:
        raise MissingImagesError(root, missing)
    return resolved


def list_image_tree(root: str | Path) -> list[str]:
    """Every image under ``root/<identity>/`` as a relative path, sorted."""
    root = Path(root)
    out: list[str] = []
    for identity in sorted(os.listdir(root)):
        folder = root / identity
        if not folder.is_dir():
            continue
        for entry in sorted(os.listdir(folder)):
            if os.path.splitext(entry)[1].lower() in IMAGE_EXTENSIONS:
                out.append(f"{identity}/{entry}")
    return out
