"""Pair- and triplet-based losses: contrastive, triplet, N-pair, multi-similarity, margin.

All are ``loss(embeddings [B, D], labels [B], indices_tuple=None) -> scalar``. ``indices_tuple``
comes from a miner (:mod:`faceverify.losses.miners`): pairs ``(a1, p, a2, n)`` or triplets
``(a, p, n)``; without it every valid pair/triplet of the batch is used (or the loss's own
mining). A batch with nothing to learn from (no valid pair) gives a zero that keeps the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from faceverify.errors import InvalidInputError
from faceverify.losses.distances import cosine_similarity, euclidean, get_distance, same_label_masks
from faceverify.losses.miners import (
    BatchHardMiner,
    DistanceWeightedMiner,
    Pairs,
    SemiHardMiner,
    Triplets,
    multi_similarity_masks,
    pairs_from_triplets,
    triplets_from_pairs,
)


def _zero(embeddings: torch.Tensor) -> torch.Tensor:
    return embeddings.sum() * 0.0


def _mean_nonzero(values: torch.Tensor) -> torch.Tensor:
    positive = values > 0
    if not positive.any():
        return values.sum() * 0.0
    return values[positive].mean()


def _as_pairs(indices: tuple[torch.Tensor, ...]) -> Pairs:
    if len(indices) == 4:
        return indices  # type: ignore[return-value]
    if len(indices) == 3:
        return pairs_from_triplets(indices)  # type: ignore[arg-type]
    raise ValueError(f"indices_tuple must hold 3 (triplets) or 4 (pairs) tensors, got {len(indices)}")


def _as_triplets(indices: tuple[torch.Tensor, ...]) -> Triplets:
    if len(indices) == 3:
        return indices  # type: ignore[return-value]
    if len(indices) == 4:
        return triplets_from_pairs(indices)  # type: ignore[arg-type]
    raise ValueError(f"indices_tuple must hold 3 (triplets) or 4 (pairs) tensors, got {len(indices)}")


# ----------------------------------------------------------------------------- contrastive
MinerChoice = Literal["none", "multi_similarity", "batch_hard", "semi_hard", "distance_weighted"]


@dataclass
class ContrastiveOptions:
    margin: float = 1.0
    squared: bool = True
    normalize: bool = True  # L2-normalise embeddings first (margins then live on the unit sphere)
    reduction: Literal["mean", "pos_neg_mean", "avg_nonzero"] = "mean"
    miner: MinerChoice = "none"  # a miner's pairs/triplets replace all pairs (any pair loss takes one)


class ContrastiveLoss(nn.Module):
    """Contrastive loss (Hadsell, Chopra & LeCun, CVPR 2006), as in Wen et al.'s model B.

    For a pair with Euclidean distance ``D`` and ``y = 1`` for the same identity::

        squared=True:   L = y D^2 + (1 - y) max(0, m - D)^2      (Hadsell's form, without the 1/2)
        squared=False:  L = y D   + (1 - y) max(0, m - D)

    over all ordered in-batch pairs ``(i, j), i != j`` (or the mined ones). Reductions: ``mean``
    over pairs (Hadsell), ``pos_neg_mean`` (mean over positives + mean over negatives, robust to
    the many more negative than positive pairs of a batch) or ``avg_nonzero`` (means over the
    positive-loss pairs only, per class of pair — pytorch-metric-learning's default).

    pytorch-metric-learning's ``ContrastiveLoss(pos_margin=0, neg_margin=m)`` equals
    ``squared=False, reduction="avg_nonzero"``; it has no squared form.

    Shapes: embeddings ``[B, D]``, labels ``[B]`` -> scalar.
    """

    def __init__(self, margin: float = 1.0, squared: bool = True, normalize: bool = True,
                 reduction: str = "mean"):
        super().__init__()
        if reduction not in ("mean", "pos_neg_mean", "avg_nonzero"):
            raise InvalidInputError(f"unknown reduction {reduction!r}; valid: mean, pos_neg_mean, avg_nonzero")
        self.margin = margin
        self.squared = squared
        self.normalize = normalize
        self.reduction = reduction

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                indices_tuple: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        x = F.normalize(embeddings, dim=1) if self.normalize else embeddings
        d = euclidean(x)
        if indices_tuple is None:
            # all pairs: reduce the [B, B] matrices with float masks (no index lists, no gathers)
            pos_mask, neg_mask = (m.to(d.dtype) for m in same_label_masks(labels))
            pos = d * d if self.squared else d
            hinge = F.relu(self.margin - d)
            neg = hinge * hinge if self.squared else hinge
            return self._reduce(pos * pos_mask, pos_mask, neg * neg_mask, neg_mask, embeddings)
        a1, p, a2, n = _as_pairs(indices_tuple)
        pos = d[a1, p]
        neg = F.relu(self.margin - d[a2, n])
        if self.squared:
            pos, neg = pos * pos, neg * neg
        return self._reduce(pos, torch.ones_like(pos), neg, torch.ones_like(neg), embeddings)

    def _reduce(self, pos: torch.Tensor, pos_mask: torch.Tensor, neg: torch.Tensor, neg_mask: torch.Tensor,
                embeddings: torch.Tensor) -> torch.Tensor:
        """Reduce masked loss values (entries outside the masks are already zero)."""
        n_pos, n_neg = pos_mask.sum(), neg_mask.sum()
        if self.reduction == "mean":  # no pair at all gives 0 / 1 = 0 (no host sync to test for it)
            return (pos.sum() + neg.sum()) / (n_pos + n_neg).clamp_min(1)
        if self.reduction == "pos_neg_mean":
            return pos.sum() / n_pos.clamp_min(1) + neg.sum() / n_neg.clamp_min(1)
        # avg_nonzero: each mean over the pairs whose loss is positive
        return pos.sum() / (pos > 0).sum().clamp_min(1) + neg.sum() / (neg > 0).sum().clamp_min(1)


# ----------------------------------------------------------------------------- triplet
@dataclass
class TripletOptions:
    margin: float = 0.2
    mining: Literal["all", "batch_hard", "semi_hard", "distance_weighted"] = "batch_hard"
    distance: Literal["euclidean", "squared_euclidean", "cosine_similarity"] = "euclidean"
    normalize: bool = True
    reduction: Literal["auto", "mean", "avg_nonzero"] = "auto"
    miner: MinerChoice = "none"  # a separate miner's tuples replace `mining` (e.g. multi_similarity)


class TripletLoss(nn.Module):
    """Triplet loss (Schroff et al. 2015, FaceNet; batch-hard of Hermans et al. 2017)::

        L(a, p, n) = max(0, D(a, p) - D(a, n) + m)        (distances)
        L(a, p, n) = max(0, S(a, n) - S(a, p) + m)        (cosine similarity)

    ``mining``: ``all`` valid triplets; ``batch_hard`` (hardest positive and negative per anchor);
    ``semi_hard`` (all triplets with ``0 < D(a,n) - D(a,p) <= m``); ``distance_weighted``
    (Wu et al. 2017 sampling, see the miner). Mined triplets passed as ``indices_tuple`` replace
    the built-in mining. ``reduction="auto"`` averages over triplets with non-zero loss for
    ``all`` (Hermans' "BA != 0") and over all triplets otherwise.

    pytorch-metric-learning's ``TripletMarginLoss`` (``LpDistance(normalize_embeddings=...)``,
    ``AvgNonZeroReducer``), with ``BatchHardMiner`` / ``TripletMarginMiner("semihard")``, equals
    this loss with ``reduction="avg_nonzero"``.

    Shapes: embeddings ``[B, D]``, labels ``[B]`` -> scalar.
    """

    def __init__(self, margin: float = 0.2, mining: str = "batch_hard", distance: str = "euclidean",
                 normalize: bool = True, reduction: str = "auto",
                 generator: torch.Generator | None = None):
        super().__init__()
        valid = ("all", "batch_hard", "semi_hard", "distance_weighted")
        if mining not in valid:
            raise InvalidInputError(f"unknown triplet mining {mining!r}; valid: {', '.join(valid)}")
        self.margin = margin
        self.mining = mining
        self.distance = distance
        self._fn = get_distance(distance)
        self.normalize = normalize
        self.reduction = reduction if reduction != "auto" else ("avg_nonzero" if mining == "all" else "mean")
        self._miner = {
            "all": None,
            "batch_hard": BatchHardMiner(distance),
            "semi_hard": SemiHardMiner(margin, distance),
            "distance_weighted": DistanceWeightedMiner(generator=generator),
        }[mining]

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                indices_tuple: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        x = F.normalize(embeddings, dim=1) if self.normalize else embeddings
        d = self._fn(x)
        # distance-like orientation: smaller = closer
        closeness = -d if self.distance == "cosine_similarity" else d
        if indices_tuple is None and self.mining in ("all", "semi_hard"):
            losses = self._dense_losses(closeness, labels)
        else:
            if indices_tuple is not None:
                a, p, n = _as_triplets(indices_tuple)
            else:
                a, p, n = self._miner(x, labels)
            if a.numel() == 0:
                return _zero(embeddings)
            losses = F.relu(closeness[a, p] - closeness[a, n] + self.margin)
        if losses.numel() == 0:
            return _zero(embeddings)
        return losses.mean() if self.reduction == "mean" else _mean_nonzero(losses)

    def _dense_losses(self, closeness: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Losses of every valid (or semi-hard) triplet without building a [B, B, B] tensor:
        one row per positive pair (a, p) against all B candidate negatives -> [P, B]."""
        pos_mask, neg_mask = same_label_masks(labels)
        a, p = torch.where(pos_mask)
        gap = closeness[a] - closeness[a, p].unsqueeze(1)  # d(a, n) - d(a, p)
        keep = neg_mask[a]
        if self.mining == "semi_hard":
            keep = keep & (gap > 0) & (gap <= self.margin)
        return F.relu(self.margin - gap)[keep]


# ----------------------------------------------------------------------------- N-pair
@dataclass
class NPairOptions:
    l2_reg: float = 0.002
    miner: MinerChoice = "none"


class NPairLoss(nn.Module):
    """Multi-class N-pair loss (Sohn, NeurIPS 2016), with its L2 embedding regulariser::

        L = 1/N sum_i log(1 + sum_{j != i} exp(f_i . f_j^+ - f_i . f_i^+))
            + l2_reg * mean over the 2N used embeddings of ||f||^2

    The N pairs are one (anchor, positive) per class present at least twice: the class's first
    and second sample in batch order (classes seen once are not used). The first term is the
    cross-entropy of the ``[N, N]`` anchor-positive inner-product matrix with the diagonal as
    targets. pytorch-metric-learning's ``NPairsLoss`` chooses the same pairs but by default
    L2-normalises before the inner product (pass ``DotProductSimilarity(normalize_embeddings=
    False)`` for Sohn's raw inner products); its optional ``LpRegularizer`` averages over *all*
    batch embeddings, which equals ours for batches of two images per class.

    Shapes: embeddings ``[B, D]``, labels ``[B]`` -> scalar.
    """

    def __init__(self, l2_reg: float = 0.002):
        super().__init__()
        self.l2_reg = l2_reg

    @staticmethod
    def pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.argsort(labels, stable=True)
        sorted_labels = labels[order]
        first = torch.ones_like(sorted_labels, dtype=torch.bool)
        first[1:] = sorted_labels[1:] != sorted_labels[:-1]
        starts = torch.where(first)[0]
        has_second = starts + 1 < labels.numel()
        has_second &= sorted_labels[(starts + 1).clamp_max(labels.numel() - 1)] == sorted_labels[starts]
        starts = starts[has_second]
        return order[starts], order[starts + 1]

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                indices_tuple: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        if indices_tuple is not None:
            a1, p = _as_pairs(indices_tuple)[:2]
            keep = {}
            for a, q in zip(a1.tolist(), p.tolist()):
                keep.setdefault(int(labels[a]), (a, q))
            if not keep:
                return _zero(embeddings)
            anchors = torch.tensor([v[0] for v in keep.values()], device=labels.device)
            positives = torch.tensor([v[1] for v in keep.values()], device=labels.device)
        else:
            anchors, positives = self.pairs(labels)
        if anchors.numel() == 0:
            return _zero(embeddings)
        fa, fp = embeddings[anchors], embeddings[positives]
        logits = fa @ fp.T
        targets = torch.arange(anchors.numel(), device=embeddings.device)
        loss = F.cross_entropy(logits, targets)
        if self.l2_reg:
            loss = loss + self.l2_reg * torch.cat([fa, fp]).pow(2).sum(dim=1).mean()
        return loss


# ----------------------------------------------------------------------------- multi-similarity
@dataclass
class MultiSimilarityOptions:
    alpha: float = 2.0
    beta: float = 50.0
    base: float = 0.5
    epsilon: float = 0.1  # pair mining margin; negative disables the loss's own mining
    miner: MinerChoice = "none"  # another miner's pairs instead of the loss's own mining


class MultiSimilarityLoss(nn.Module):
    """Multi-similarity loss with its own pair mining (Wang et al., CVPR 2019, Eq. 4-6).

    With cosine similarities ``S`` and the mined positive set ``P_i`` / negative set ``N_i`` of
    anchor ``i``::

        L = 1/B sum_i [ 1/alpha log(1 + sum_{k in P_i} exp(-alpha (S_ik - base)))
                      + 1/beta  log(1 + sum_{k in N_i} exp( beta  (S_ik - base))) ]

    Mining keeps negatives with ``S_ik > min_{P} S_i. - epsilon`` and positives with
    ``S_ik < max_{N} S_i. + epsilon``. Equals pytorch-metric-learning's ``MultiSimilarityLoss``
    with ``MultiSimilarityMiner(epsilon)``.

    Shapes: embeddings ``[B, D]``, labels ``[B]`` -> scalar.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, epsilon: float = 0.1):
        super().__init__()
        self.alpha, self.beta, self.base, self.epsilon = alpha, beta, base, epsilon

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                indices_tuple: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        s = cosine_similarity(embeddings)
        if indices_tuple is not None:
            a1, p, a2, n = _as_pairs(indices_tuple)
            pos_mask = torch.zeros_like(s, dtype=torch.bool)
            neg_mask = torch.zeros_like(s, dtype=torch.bool)
            pos_mask[a1, p] = True
            neg_mask[a2, n] = True
        elif self.epsilon >= 0:
            pos_mask, neg_mask = multi_similarity_masks(s.detach(), labels, self.epsilon)
        else:
            pos_mask, neg_mask = same_label_masks(labels)
        zeros = s.new_zeros(s.shape[0], 1)
        pos_terms = (-self.alpha * (s - self.base)).masked_fill(~pos_mask, float("-inf"))
        neg_terms = (self.beta * (s - self.base)).masked_fill(~neg_mask, float("-inf"))
        # log(1 + sum exp(z)) = logsumexp([z, 0]): stable, and exactly 0 for an empty set
        pos_loss = torch.logsumexp(torch.cat([pos_terms, zeros], dim=1), dim=1) / self.alpha
        neg_loss = torch.logsumexp(torch.cat([neg_terms, zeros], dim=1), dim=1) / self.beta
        return (pos_loss + neg_loss).mean()


# ----------------------------------------------------------------------------- margin
@dataclass
class MarginOptions:
    margin: float = 0.2  # alpha
    beta: float = 1.2  # initial boundary between positive and negative distances
    learn_beta: bool = True
    class_beta: bool = False  # one boundary per class instead of one for all
    nu: float = 0.0  # boundary regularisation weight
    beta_lr_multiplier: float = 1.0  # the boundaries' learning rate over the base one
    miner: MinerChoice = "distance_weighted"  # the sampling the loss was designed with


class MarginLoss(nn.Module):
    """Margin-based loss (Wu, Manmatha, Smola & Krähenbühl, "Sampling Matters in Deep Embedding
    Learning", ICCV 2017, Eq. 4-5), on L2-normalised embeddings with euclidean distance ``D``::

        l(i, j) = max(0, alpha + y_ij (D_ij - beta)),   y_ij = +1 same identity, -1 otherwise

    over the (anchor, positive) and (anchor, negative) pairs of triplets — all valid triplets, or
    those of a miner (distance-weighted sampling by default, the pairing the paper proposes).
    ``beta`` (one, or one per class) is learned, with ``nu * beta`` as its regulariser. The sum of
    pair losses (plus the regulariser of class boundaries) is divided by the number of pairs with
    a non-zero loss. Equals pytorch-metric-learning's ``MarginLoss`` on the same triplets.

    Shapes: embeddings ``[B, D]``, labels ``[B]`` -> scalar.
    """

    def __init__(self, num_classes: int, margin: float = 0.2, beta: float = 1.2, learn_beta: bool = True,
                 class_beta: bool = False, nu: float = 0.0):
        super().__init__()
        initial = torch.full((num_classes if class_beta else 1,), float(beta))
        if learn_beta:
            self.beta = nn.Parameter(initial)
        else:
            self.register_buffer("beta", initial)
        self.margin, self.nu, self.learn_beta = margin, nu, learn_beta

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                indices_tuple: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        from faceverify.losses.miners import all_triplets

        a, p, n = _as_triplets(indices_tuple) if indices_tuple is not None else all_triplets(labels)
        x = F.normalize(embeddings, dim=1)
        d = euclidean(x)
        beta = self.beta.to(x.dtype)
        beta = beta if beta.numel() == 1 else beta[labels[a]]
        pos = F.relu(d[a, p] - beta + self.margin)
        neg = F.relu(beta - d[a, n] + self.margin)
        divisor = ((pos > 0).sum() + (neg > 0).sum()).clamp_min(1).to(x.dtype)
        loss = (pos.sum() + neg.sum()) / divisor  # no triplet: 0 / 1 = 0, the graph kept
        if self.learn_beta and self.nu:
            loss = loss + (self.nu * beta if beta.numel() == 1 else (self.nu * beta).sum() / divisor).sum()
        return loss


__all__ = [
    "ContrastiveLoss", "ContrastiveOptions", "TripletLoss", "TripletOptions", "NPairLoss",
    "NPairOptions", "MultiSimilarityLoss", "MultiSimilarityOptions", "MarginLoss", "MarginOptions",
    "same_label_masks",
]
