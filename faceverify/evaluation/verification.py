"""The LFW 10-fold verification protocol, ROC / AUC / EER and TAR@FAR.

Protocol (Huang et al. 2007, View 2): the 6,000 pairs form 10 folds. For held-out fold k, the
decision threshold is the one that maximises accuracy on the other nine folds; it is applied to
fold k. The reported accuracy is the mean (and standard deviation) of the ten held-out accuracies.

Scores are similarities: *higher means more likely the same person*. ``cosine`` uses the cosine
similarity; ``euclidean`` uses the negated Euclidean distance, so one rule serves both: a pair is
predicted "same" iff ``score > threshold``.

Threshold search is exact: every midpoint between consecutive distinct training scores (plus one
threshold below all and one above all) is a candidate, and the accuracy of all of them is computed
at once with two ``searchsorted`` calls, O(n log n) per fold. Among equally good thresholds the
smallest is chosen (a documented, deterministic tie rule).

Optional per-fold transforms follow Wen et al. (ECCV 2016) and the SphereFace evaluation: the
mean (``subtract_mean``) and a PCA projection (``pca_dim``) are fitted on the images of the nine
training folds only, never on the held-out fold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score, roc_curve

from faceverify.errors import InvalidInputError

Metric = Literal["cosine", "euclidean"]
METRICS: tuple[str, ...] = ("cosine", "euclidean")


def pair_similarity(a: np.ndarray, b: np.ndarray, metric: Metric) -> np.ndarray:
    """Similarity of row-aligned features ``a[N, D]`` and ``b[N, D]`` -> ``[N]`` (higher = same).

    cosine: <a, b> / (|a| |b|) (zero vectors score 0); euclidean: -|a - b|_2.
    """
    if metric == "cosine":
        norm_a = np.linalg.norm(a, axis=1)
        norm_b = np.linalg.norm(b, axis=1)
        denom = np.maximum(norm_a * norm_b, np.finfo(np.float64).tiny)
        return np.einsum("nd,nd->n", a, b) / denom
    if metric == "euclidean":
        return -np.linalg.norm(a - b, axis=1)
    raise InvalidInputError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")


def threshold_candidates(scores: np.ndarray) -> np.ndarray:
    """Ascending candidate thresholds: below all, every midpoint of distinct scores, above all."""
    distinct = np.unique(scores)
    if distinct.size == 0:
        return np.array([0.0])
    return np.concatenate(
        [[distinct[0] - 1.0], (distinct[:-1] + distinct[1:]) / 2.0, [distinct[-1] + 1.0]]
    )


def accuracy_at_thresholds(
    scores: np.ndarray, same: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """Accuracy of the rule ``same iff score > t`` for every t in ``thresholds`` (vectorised)."""
    pos = np.sort(scores[same])
    neg = np.sort(scores[~same])
    true_pos = pos.size - np.searchsorted(pos, thresholds, side="right")
    true_neg = np.searchsorted(neg, thresholds, side="right")
    return (true_pos + true_neg) / max(scores.size, 1)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The accuracy-maximising threshold (smallest among ties) and its accuracy."""
    candidates = threshold_candidates(scores)
    acc = accuracy_at_thresholds(scores, same, candidates)
    best = int(np.argmax(acc))
    return float(candidates[best]), float(acc[best])


def threshold_at_far(negative_scores: np.ndarray, far: float) -> float:
    """Smallest-FAR-respecting threshold: at most ``floor(far * n_neg)`` negatives score above it.

    Exact (no interpolation): the threshold is a negative score itself, so with the rule
    ``same iff score > t`` the false-accept rate on these negatives is <= ``far``.
    """
    neg = np.sort(np.asarray(negative_scores, dtype=np.float64))[::-1]
    if neg.size == 0:
        raise InvalidInputError("no negative pairs to set a FAR threshold on")
    allowed = int(math.floor(far * neg.size + 1e-9))
    if allowed >= neg.size:
        return float(neg[-1] - 1.0)
    return float(neg[allowed])


def equal_error_rate(scores: np.ndarray, same: np.ndarray) -> float:
    """EER: the rate where false accepts equal false rejects, linearly interpolated on the ROC."""
    fpr, tpr, _ = roc_curve(same.astype(int), scores)
    fnr = 1.0 - tpr
    diff = fnr - fpr  # non-increasing along the curve
    crossing = int(np.argmax(diff <= 0))
    if crossing == 0:
        return float(fpr[0])
    d0, d1 = diff[crossing - 1], diff[crossing]
    t = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(fpr[crossing - 1] + t * (fpr[crossing] - fpr[crossing - 1]))


@dataclass
class VerificationResult:
    """Everything the protocol measures. Accuracies are fractions in [0, 1]."""

    accuracy: float
    accuracy_std: float
    fold_accuracies: list[float]
    fold_thresholds: list[float]
    auc: float
    eer: float
    tar_at_far: dict[str, float]
    tar_at_far_std: dict[str, float]
    far_achieved: dict[str, float]
    n_pairs: int
    n_folds: int
    metric: str
    threshold_selection: str
    heldout_scores: np.ndarray = field(repr=False)
    same: np.ndarray = field(repr=False)
    fold: np.ndarray = field(repr=False)
    folds: list[int] = field(default_factory=list)  # 1-based folds reported

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """(false accept rate, true accept rate) over the held-out scores; empty when the pairs are
        all matched or all mismatched (no curve exists)."""
        if not (self.same.any() and (~self.same).any()):
            return np.zeros(0), np.zeros(0)
        fpr, tpr, _ = roc_curve(self.same.astype(int), self.heldout_scores)
        return fpr, tpr

    def undefined(self) -> str:
        """What cannot be computed on these pairs, and why ("" when everything can)."""
        if not (~self.same).any():
            return "AUC, EER and TAR@FAR are undefined: the pairs hold no mismatched (different-person) pair"
        if not self.same.any():
            return "AUC, EER and TAR@FAR are undefined: the pairs hold no matched (same-person) pair"
        return ""

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "accuracy_std": self.accuracy_std,
            "fold_accuracies": self.fold_accuracies,
            "fold_thresholds": self.fold_thresholds,
            "auc": self.auc,
            "eer": self.eer,
            "tar_at_far": self.tar_at_far,
            "tar_at_far_std": self.tar_at_far_std,
            "far_achieved": self.far_achieved,
            "n_pairs": self.n_pairs,
            "n_folds": self.n_folds,
            "folds": self.folds,
            "metric": self.metric,
            "threshold_selection": self.threshold_selection,
            **({"undefined": self.undefined()} if self.undefined() else {}),
        }


def fold_scores(
    features: np.ndarray,
    index_a: np.ndarray,
    index_b: np.ndarray,
    fold: np.ndarray,
    metric: Metric = "cosine",
    pca_dim: int = 0,
    subtract_mean: bool = False,
    test_folds: list[int] | None = None,
    clip_pca: bool = False,
) -> np.ndarray:
    """Scores of every pair under each fold's transform -> ``[n_folds, N]``.

    Args:
        features: ``[M, D]`` one row per distinct image.
        index_a, index_b: ``[N]`` rows of ``features`` forming each pair.
        fold: ``[N]`` fold of each pair.
        pca_dim: 0 for none, else the PCA dimension fitted on the training folds' images.
        clip_pca: lower ``pca_dim`` to what the training folds allow (min(images, feature dim))
            instead of raising; small benchmarks and smoke runs use it.
        subtract_mean: subtract the training folds' mean feature first.

    Row k holds the scores computed with the transform fitted on folds != k (when a fold has no
    other folds, on itself). Without transforms every row is the same. ``test_folds`` (0-based)
    limits the fitting to those rows; the others are left NaN.
    """
    features = np.asarray(features, dtype=np.float64)
    n_folds = int(fold.max()) + 1 if fold.size else 0
    if pca_dim < 0:
        raise InvalidInputError(f"pca dimension must be >= 0, got {pca_dim}")
    if pca_dim == 0 and not subtract_mean:
        row = pair_similarity(features[index_a], features[index_b], metric)
        return np.broadcast_to(row, (n_folds, row.size)).copy()
    rows = np.full((n_folds, index_a.size), np.nan, dtype=np.float64)
    for k in (range(n_folds) if test_folds is None else test_folds):
        train = fold != k if n_folds > 1 else np.ones_like(fold, dtype=bool)
        train_images = np.unique(np.concatenate([index_a[train], index_b[train]]))
        fit = features[train_images]
        transformed = features
        if pca_dim:
            limit = min(fit.shape[0], fit.shape[1])
            if pca_dim > limit and not clip_pca:
                raise InvalidInputError(
                    f"pca dimension {pca_dim} exceeds min(training images, feature dim) = {limit}"
                )
            pca = PCA(n_components=min(pca_dim, limit), svd_solver="full").fit(fit)
            transformed = pca.transform(features)  # centres on the training mean
        elif subtract_mean:
            transformed = features - fit.mean(axis=0, keepdims=True)
        rows[k] = pair_similarity(transformed[index_a], transformed[index_b], metric)
    return rows


def check_test_folds(test_folds: list[int] | None, n_folds: int) -> list[int]:
    """0-based held-out folds to report: all of ``range(n_folds)`` by default; each must exist
    and appear once (a ValueError names the 1-based fold otherwise)."""
    if test_folds is None:
        return list(range(n_folds))
    folds = [int(k) for k in test_folds]
    if not folds:
        raise InvalidInputError("no folds to evaluate")
    for k in folds:
        if not 0 <= k < n_folds:
            raise InvalidInputError(f"fold {k + 1} does not exist: the pairs have folds 1..{n_folds}")
    repeated = sorted({k + 1 for k in folds if folds.count(k) > 1})
    if repeated:
        raise InvalidInputError(f"fold(s) {', '.join(map(str, repeated))} given more than once")
    return folds


def evaluate_scores(
    score_rows: np.ndarray,
    same: np.ndarray,
    fold: np.ndarray,
    metric: str = "cosine",
    far_targets: tuple[float, ...] = (1e-3, 1e-2),
    test_folds: list[int] | None = None,
) -> VerificationResult:
    """Apply the k-fold protocol to per-fold scores (``[n_folds, N]`` or ``[N]``).

    ``test_folds`` (0-based; default all) are the folds reported; each is scored with the
    threshold chosen on *every other* fold of the file, never on itself, and accuracy, AUC,
    EER and TAR@FAR are computed over those folds' pairs alone. With a single fold in the file
    (a View 1 file on its own) there is nothing to hold out from; the threshold is then chosen
    on the same pairs and ``threshold_selection`` says so ("same fold, optimistic").
    """
    same = np.asarray(same, dtype=bool)
    fold = np.asarray(fold, dtype=np.int64)
    score_rows = np.asarray(score_rows, dtype=np.float64)
    n_folds = int(fold.max()) + 1
    if score_rows.ndim == 1:
        score_rows = np.broadcast_to(score_rows, (n_folds, score_rows.size))
    folds = check_test_folds(test_folds, n_folds)
    if not np.all(np.isfinite(score_rows[folds])):
        raise InvalidInputError("verification scores contain NaN or inf; check the embeddings")
    reported = np.isin(fold, folds)
    heldout_all = score_rows[fold, np.arange(fold.size)]
    accuracies: list[float] = []
    thresholds: list[float] = []
    tars: dict[str, list[float]] = {repr(float(f)): [] for f in far_targets}
    fars: dict[str, list[float]] = {repr(float(f)): [] for f in far_targets}
    for k in folds:
        test = fold == k
        train = ~test if n_folds > 1 else test
        scores_k = score_rows[k]
        threshold, _ = best_threshold(scores_k[train], same[train])
        accuracies.append(float(np.mean((scores_k[test] > threshold) == same[test])))
        thresholds.append(threshold)
        for target in far_targets:
            key = repr(float(target))
            negatives = scores_k[train & ~same]
            if negatives.size == 0:  # all pairs matched (a tiny or one-sided set): no FAR to set a threshold by
                tars[key].append(math.nan)
                fars[key].append(math.nan)
                continue
            t_far = threshold_at_far(negatives, target)
            positives, test_negatives = scores_k[test & same], scores_k[test & ~same]
            tars[key].append(float(np.mean(positives > t_far)) if positives.size else math.nan)
            fars[key].append(float(np.mean(test_negatives > t_far)) if test_negatives.size else math.nan)
    heldout, same_reported, fold_reported = heldout_all[reported], same[reported], fold[reported]
    both_classes = same_reported.any() and (~same_reported).any()
    return VerificationResult(
        accuracy=float(np.mean(accuracies)),
        accuracy_std=float(np.std(accuracies)),
        fold_accuracies=accuracies,
        fold_thresholds=thresholds,
        auc=float(roc_auc_score(same_reported.astype(int), heldout)) if both_classes else float("nan"),
        eer=equal_error_rate(heldout, same_reported) if both_classes else float("nan"),
        tar_at_far={k: _mean_defined(v) for k, v in tars.items()},
        tar_at_far_std={k: _std_defined(v) for k, v in tars.items()},
        far_achieved={k: _mean_defined(v) for k, v in fars.items()},
        n_pairs=int(same_reported.size),
        n_folds=len(folds),
        metric=metric,
        threshold_selection="other folds" if n_folds > 1 else "same fold (optimistic)",
        heldout_scores=heldout,
        same=same_reported,
        fold=fold_reported,
        folds=[k + 1 for k in folds],
    )


def _mean_defined(values: list[float]) -> float:
    """Mean over the folds where the value is defined (TAR needs negatives to set the FAR threshold
    on and positives to count); NaN when no fold has it."""
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan


def _std_defined(values: list[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return float(np.std(defined)) if defined else math.nan


def evaluate_features(
    features: np.ndarray,
    index_a: np.ndarray,
    index_b: np.ndarray,
    same: np.ndarray,
    fold: np.ndarray,
    metric: Metric = "cosine",
    pca_dim: int = 0,
    subtract_mean: bool = False,
    far_targets: tuple[float, ...] = (1e-3, 1e-2),
    test_folds: list[int] | None = None,
    clip_pca: bool = False,
) -> VerificationResult:
    """Per-fold transforms, scores and the k-fold protocol in one call (see module docstring);
    ``test_folds`` (0-based) as in :func:`evaluate_scores`, ``clip_pca`` as in :func:`fold_scores`."""
    n_folds = int(np.max(fold)) + 1 if np.size(fold) else 0
    folds = check_test_folds(test_folds, n_folds)
    rows = fold_scores(features, index_a, index_b, fold, metric, pca_dim, subtract_mean, test_folds=folds,
                       clip_pca=clip_pca)
    return evaluate_scores(rows, same, fold, metric, far_targets, test_folds=folds)
