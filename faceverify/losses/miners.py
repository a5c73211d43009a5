"""Miners: choose the pairs or triplets a loss sees. They return index tuples under no_grad.

Index tuples:

* triplets ``(anchor, positive, negative)``, each ``int64 [T]``;
* pairs ``(anchor_pos, positive, anchor_neg, negative)``, ``int64 [P]`` and ``[N]``.

Miners:

* :class:`BatchHardMiner` — Hermans et al. 2017 ("In Defense of the Triplet Loss"): for each
  anchor, its farthest positive and its closest negative.
* :class:`SemiHardMiner` — Schroff et al. 2015 (FaceNet): every triplet whose negative is farther
  than the positive but within the margin, ``0 < d(a,n) - d(a,p) <= m``.
* :class:`DistanceWeightedMiner` — Wu et al. 2017 ("Sampling Matters"): on the unit sphere the
  pairwise distance of random points has density ``q(d) ~ d^(n-2) (1 - d^2/4)^((n-3)/2)``; for
  each (anchor, positive) a negative is drawn with probability ``~ 1 / q(max(d, cutoff))``,
  and never beyond ``nonzero_loss_cutoff`` (those give no loss).
* :class:`MultiSimilarityMiner` — Wang et al. 2019: keep negatives with
  ``S_an > min_p S_ap - eps`` and positives with ``S_ap < max_n S_an + eps`` (cosine similarity).
"""

from __future__ import annotations

import torch

from faceverify.errors import InvalidInputError
from faceverify.losses.distances import cosine_similarity, get_distance, same_label_masks

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Pairs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@torch.no_grad()
def all_pairs(labels: torch.Tensor) -> Pairs:
    """Every ordered pair ``(i, j), i != j``: positives where labels match, negatives otherwise."""
    pos, neg = same_label_masks(labels)
    a1, p = torch.where(pos)
    a2, n = torch.where(neg)
    return a1, p, a2, n


@torch.no_grad()
def all_triplets(labels: torch.Tensor) -> Triplets:
    """Every ``(a, p, n)`` with ``y_a = y_p != y_n`` and ``a != p``."""
    pos, neg = same_label_masks(labels)
    valid = pos.unsqueeze(2) & neg.unsqueeze(1)
    a, p, n = torch.where(valid)
    return a, p, n


def _oriented(matrix: torch.Tensor, distance: str) -> torch.Tensor:
    """A distance-like matrix (smaller = closer) whatever the measure."""
    return -matrix if distance == "cosine_similarity" else matrix


class BatchHardMiner:
    """For each anchor with a positive and a negative: the hardest of each (Hermans 2017)."""

    def __init__(self, distance: str = "euclidean"):
        self.distance = distance
        self._fn = get_distance(distance)

    @torch.no_grad()
    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        d = _oriented(self._fn(embeddings), self.distance)
        pos, neg = same_label_masks(labels)
        valid = pos.any(dim=1) & neg.any(dim=1)
        hardest_pos = d.masked_fill(~pos, float("-inf")).argmax(dim=1)
        hardest_neg = d.masked_fill(~neg, float("inf")).argmin(dim=1)
        anchors = torch.where(valid)[0]
        return anchors, hardest_pos[anchors], hardest_neg[anchors]


class SemiHardMiner:
    """All triplets with ``0 < d(a,n) - d(a,p) <= margin`` (FaceNet's semi-hard negatives)."""

    def __init__(self, margin: float = 0.2, distance: str = "euclidean"):
        self.margin = margin
        self.distance = distance
        self._fn = get_distance(distance)

    @torch.no_grad()
    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        d = _oriented(self._fn(embeddings), self.distance)
        a, p, n = all_triplets(labels)
        gap = d[a, n] - d[a, p]
        keep = (gap > 0) & (gap <= self.margin)
        return a[keep], p[keep], n[keep]


class DistanceWeightedMiner:
    """Distance-weighted negative sampling (Wu et al. 2017) on L2-normalised embeddings.

    For every positive pair (a, p), one negative n is drawn with probability proportional to
    ``w(a, n) = 1 / q(max(d_an, cutoff))`` if ``d_an < nonzero_loss_cutoff`` else 0, where
    ``log q(d) = (D - 2) log d + (D - 3)/2 log(1 - d^2/4)``. Anchors whose weights are all zero
    fall back to a uniformly drawn negative. Deterministic given ``generator``.
    """

    def __init__(self, cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4,
                 generator: torch.Generator | None = None):
        self.cutoff = cutoff
        self.nonzero_loss_cutoff = nonzero_loss_cutoff
        self.generator = generator

    @torch.no_grad()
    def negative_probabilities(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``[B, B]`` row-stochastic sampling probabilities over each anchor's negatives."""
        x = torch.nn.functional.normalize(embeddings.double(), dim=1)
        dim = x.shape[1]
        d = torch.cdist(x, x).clamp_min(self.cutoff)
        log_q = (dim - 2.0) * torch.log(d) + (dim - 3.0) / 2.0 * torch.log((1.0 - 0.25 * d * d).clamp_min(1e-8))
        log_w = -log_q
        _, neg = same_label_masks(labels)
        allowed = neg & (d < self.nonzero_loss_cutoff)
        log_w = log_w.masked_fill(~allowed, float("-inf"))
        # rows with no allowed negative: uniform over all negatives
        empty = ~allowed.any(dim=1)
        uniform = torch.zeros_like(log_w).masked_fill(~neg, float("-inf"))
        log_w = torch.where(empty.unsqueeze(1), uniform, log_w)
        probs = torch.softmax(log_w, dim=1)  # exp(log_w - max) / sum: stable in high dimension
        return torch.nan_to_num(probs, nan=0.0)

    @torch.no_grad()
    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        probs = self.negative_probabilities(embeddings, labels)
        a1, p, _, _ = all_pairs(labels)
        has_neg = probs[a1].sum(dim=1) > 0
        a1, p = a1[has_neg], p[has_neg]
        if a1.numel() == 0:
            empty = labels.new_zeros(0)
            return empty, empty, empty
        n = torch.multinomial(probs[a1].float().cpu(), 1, generator=self.generator).squeeze(1)
        return a1, p, n.to(labels.device)


@torch.no_grad()
def multi_similarity_masks(
    similarity: torch.Tensor, labels: torch.Tensor, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept ``(positive, negative)`` ``[B, B]`` masks of multi-similarity mining."""
    pos, neg = same_label_masks(labels)
    min_pos = similarity.masked_fill(~pos, float("inf")).min(dim=1, keepdim=True).values
    max_neg = similarity.masked_fill(~neg, float("-inf")).max(dim=1, keepdim=True).values
    return pos & (similarity - epsilon < max_neg), neg & (similarity + epsilon > min_pos)


class MultiSimilarityMiner:
    """Multi-similarity pair mining (Wang et al. 2019, Eq. 4-5) on cosine similarity."""

    def __init__(self, epsilon: float = 0.1):
        self.epsilon = epsilon

    @torch.no_grad()
    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Pairs:
        keep_pos, keep_neg = multi_similarity_masks(cosine_similarity(embeddings), labels, self.epsilon)
        a1, p = torch.where(keep_pos)
        a2, n = torch.where(keep_neg)
        return a1, p, a2, n


MINERS = {
    "batch_hard": BatchHardMiner,
    "semi_hard": SemiHardMiner,
    "distance_weighted": DistanceWeightedMiner,
    "multi_similarity": MultiSimilarityMiner,
}


def build_miner(name: str, **options) -> object:
    if name not in MINERS:
        raise InvalidInputError(f"unknown miner {name!r}; valid: {', '.join(MINERS)}")
    return MINERS[name](**options)


def triplets_from_pairs(pairs: Pairs) -> Triplets:
    """Every (a, p, n) combining a positive pair and a negative pair with the same anchor."""
    a1, p, a2, n = pairs
    match = a1.unsqueeze(1) == a2.unsqueeze(0)
    i, j = torch.where(match)
    return a1[i], p[i], n[j]


def pairs_from_triplets(triplets: Triplets) -> Pairs:
    """The positive and negative pairs contained in triplets (duplicates kept)."""
    a, p, n = triplets
    return a, p, a, n


__all__ = [
    "BatchHardMiner", "SemiHardMiner", "DistanceWeightedMiner", "MultiSimilarityMiner", "MINERS",
    "build_miner", "multi_similarity_masks", "all_pairs", "all_triplets", "triplets_from_pairs", "pairs_from_triplets",
]
