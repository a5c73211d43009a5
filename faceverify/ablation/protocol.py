"""The LFW-only protocol ("unrestricted, no outside data") for one held-out fold.

For held-out View 2 fold ``k`` (1-based): train on the people of the other nine
``people.txt`` sets that have at least two images, and test on fold ``k``'s 600 pairs (whose
people all belong to set ``k``, so no test identity is ever trained on). The threshold for fold
``k`` is chosen, as in the standard protocol, on the pairs of the other nine folds; AUC and
TAR@FAR are computed on fold ``k``'s pairs alone.

With ``inner_validation`` one more set, ``j = k mod 10 + 1``, is held out of training too; its
pairs give an accuracy that tuning trials and sweeps use to *choose* a value without looking at
fold ``k`` (the threshold for set ``j`` comes from the eight folds that are neither ``k`` nor ``j``).

With a training source other than LFW (CASIA-WebFace, ...), :func:`~faceverify.data.splits.holdout_identities` sets a
fraction of its identities aside for the trials, and :func:`~faceverify.data.splits.validation_pairs` draws verification
pairs among them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from data_prep.pack import PackConfig, pack_aligned
from faceverify.data.lfw import (
    PairsProtocol,
    identity_of_key,
    people_keys,
    read_pairs,
    read_people,
    resolve_image_paths,
)


@dataclass(frozen=True)
class FoldSplit:
    held_out: int  # 1-based
    inner: int | None  # 1-based inner validation set, or None
    train_people: frozenset[str]
    test_people: frozenset[str]


def inner_fold(held_out: int) -> int:
    return held_out % 10 + 1


def split_for(people_sets: list[dict[str, int]], held_out: int, inner_validation: bool) -> FoldSplit:
    inner = inner_fold(held_out) if inner_validation else None
    excluded = {held_out} | ({inner} if inner else set())
    train = {name for k, group in enumerate(people_sets, start=1) if k not in excluded
             for name, count in group.items() if count >= 2}
    test = {name for name, count in people_sets[held_out - 1].items() if count >= 2}
    return FoldSplit(held_out, inner, frozenset(train), frozenset(test))


def ensure_pack(aligned: Path, split: FoldSplit, size: str, work: Path) -> Path:
    """The packed training set of ``split`` at ``size`` (built once, then reused)."""
    tag = f"fold{split.held_out}" + (f"_inner{split.inner}" if split.inner else "") + f"_{size}"
    out = work / "packs" / tag
    if not (out / "meta.json").is_file():
        pack_aligned(aligned, out, PackConfig(min_images=2, size=size), identities=set(split.train_people),
                     progress=False)
    return out


def evaluation_keys(protocol_dir: Path, held_out: int) -> tuple[PairsProtocol, list[str]]:
    """View 2 pairs and the keys to embed for held-out fold ``held_out``: every pair image (the
    threshold comes from the other folds' pairs) and every image of the held-out people with at
    least two images (retrieval and geometry)."""
    pairs = read_pairs(protocol_dir / "pairs.txt")
    people = read_people(protocol_dir / "people.txt")
    test_people = {n: c for n, c in people[held_out - 1].items() if c >= 2}
    return pairs, list(dict.fromkeys(pairs.keys + people_keys(test_people)))


def needed_keys(protocol_dir: Path, held_out: int) -> list[str]:
    """Every image a cell of held-out fold ``held_out`` uses: its evaluation images and its
    training people's images (what the demo aligns, nothing more)."""
    _, keys = evaluation_keys(protocol_dir, held_out)
    people = read_people(protocol_dir / "people.txt")
    train = split_for(people, held_out, inner_validation=False).train_people
    counts = {n: c for group in people for n, c in group.items() if n in train}
    return list(dict.fromkeys(keys + people_keys(counts)))


def evaluation_images(protocol_dir: Path, aligned: Path, held_out: int) -> tuple[PairsProtocol, list[str], dict[str, Path]]:
    """:func:`evaluation_keys` and their aligned files."""
    pairs, keys = evaluation_keys(protocol_dir, held_out)
    return pairs, keys, resolve_image_paths(aligned, keys)


def held_out_identity_keys(keys: list[str], test_people: frozenset[str]) -> list[str]:
    return [k for k in keys if identity_of_key(k) in test_people]
