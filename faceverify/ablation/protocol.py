"""The LFW-only protocol ("unrestricted, no outside data") for one held-out fold.

For held-out View 2 fold ``k`` (1-based): train on the people of the other nine
``people.txt`` sets that have at least two images, and test on fold ``k``'s 600 pairs (whose
people all belong to set ``k``, so no test identity is ever trained on). The threshold for fold
``k`` is chosen, as in the standard protocol, on the pairs of the other nine folds; AUC and
TAR@FAR are computed on fold ``k``'s pairs alone.

With ``inner_validation`` one more set, ``j = k mod 10 + 1``, is held out of training too; its
pairs give an accuracy that sweeps use to *choose* a value without looking at fold ``k``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from data_prep.pack import PackConfig, pack_aligned
from faceverify.data.lfw import (
    PairsProtocol,
    identity_of_key,
    people_keys,
    read_pairs,
    read_people,
    resolve_image_paths,
)
from faceverify.evaluation.verification import best_threshold, pair_similarity, threshold_at_far


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


@dataclass
class FoldScores:
    """Similarities of every View 2 pair under one model (cosine of flip-combined features)."""

    scores: np.ndarray  # [6000]
    same: np.ndarray
    fold: np.ndarray  # 0-based

    def accuracy(self, test_fold: int, threshold_folds: list[int]) -> tuple[float, float]:
        """(accuracy on ``test_fold``, threshold) with the threshold chosen on ``threshold_folds``
        (all 1-based)."""
        train = np.isin(self.fold, [f - 1 for f in threshold_folds])
        threshold, _ = best_threshold(self.scores[train], self.same[train])
        test = self.fold == test_fold - 1
        return float(np.mean((self.scores[test] > threshold) == self.same[test])), threshold

    def fold_metrics(self, test_fold: int, threshold_folds: list[int], far: float = 1e-3) -> dict[str, float]:
        accuracy, threshold = self.accuracy(test_fold, threshold_folds)
        train = np.isin(self.fold, [f - 1 for f in threshold_folds])
        test = self.fold == test_fold - 1
        far_threshold = threshold_at_far(self.scores[train & ~self.same], far)
        return {
            "accuracy": accuracy,
            "threshold": threshold,
            "auc": float(roc_auc_score(self.same[test], self.scores[test])),
            "tar_at_far_1e-3": float(np.mean(self.scores[test & self.same] > far_threshold)),
        }


def pair_scores(pairs: PairsProtocol, features: dict[str, np.ndarray]) -> FoldScores:
    a = np.stack([features[k] for k in pairs.keys_a])
    b = np.stack([features[k] for k in pairs.keys_b])
    return FoldScores(pair_similarity(a, b, "cosine"), pairs.same, pairs.fold)


def evaluation_images(protocol_dir: Path, aligned: Path, held_out: int) -> tuple[PairsProtocol, list[str], dict[str, Path]]:
    """View 2 pairs, the keys to embed (all pair images + every image of the held-out people
    with at least two images, for the geometry) and their aligned files."""
    pairs = read_pairs(protocol_dir / "pairs.txt")
    people = read_people(protocol_dir / "people.txt")
    test_people = {n: c for n, c in people[held_out - 1].items() if c >= 2}
    keys = list(dict.fromkeys(pairs.keys + people_keys(test_people)))
    return pairs, keys, resolve_image_paths(aligned, keys)


def held_out_identity_keys(keys: list[str], test_people: frozenset[str]) -> list[str]:
    return [k for k in keys if identity_of_key(k) in test_people]
