"""The IJB-B / IJB-C 1:1 protocol from image features: test mode, template pooling, pair scores,
and the two TAR-at-FAR rules.

Test mode (the default is the one papers report, insightface's ``eval_ijbc`` defaults):

* image feature ``f_i = e_i + e'_i`` (embedding of the aligned crop plus that of its mirror;
  ``flip = none``: ``e_i``), its norm **kept** (``unit_norm``: ``f_i / ||f_i||``), multiplied by
  the detector score ``s_i`` (``detector_score = False``: not);
* template feature ``t = normalize(sum_m mean_{i in m} f_i)``: within each media (a video or a
  still) the mean of its images, then the sum over the template's media, L2-normalised;
* score of a template pair = ``<t_1, t_2>``, the cosine.

Pooling is a sparse segment sum (each image weighted by 1 / its media's size), scoring blocks of
template similarity matrices, the ROC from one sort of the impostor scores' values: no Python loop
over images, templates or pairs (the 15.7M IJB-C pairs in seconds; ``experiments/bench_ijb.py``).

TAR at FAR, from the scores of genuine (label 1) and impostor (label 0) pairs, a pair accepted
when its score >= the threshold:

* **strict** (:func:`tar_at_far`): the largest TAR over every threshold (each distinct score, and
  one above all) whose FAR <= the target. Below ``1 / n_impostors`` only the thresholds that
  accept no impostor qualify.
* **insightface** (:func:`tar_at_far_insightface`): scikit-learn's ``roc_curve`` with its
  defaults (``drop_intermediate=True``), the curve reversed, the point whose FPR is nearest the
  target (``|fpr - target|`` smallest; on ties the first in the reversed order): what the
  published tables of arcface_torch and its descendants use. It may pick a point whose FAR is
  *above* the target, so it can exceed the strict TAR.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy import sparse

from faceverify.errors import InvalidInputError

FAR_TARGETS: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def far_key(far: float) -> str:
    """``1e-4`` -> ``"1e-04"`` (the keys of ``metrics.json`` and of the training log)."""
    return f"{far:.0e}"


@dataclass(frozen=True)
class TestMode:
    """How image features become template features (see the module docstring)."""

    flip: Literal["sum", "none"] = "sum"
    detector_score: bool = True
    unit_norm: bool = False

    def __post_init__(self) -> None:
        if self.flip not in ("sum", "none"):
            raise InvalidInputError(f"IJB flip must be sum or none, got {self.flip!r} (the IJB protocol adds the "
                                    "mirror's embedding; concatenation is an LFW option)")

    def describe(self) -> dict:
        return {**asdict(self), "feature_norm": "unit" if self.unit_norm else "kept",
                "is_paper_default": self == TestMode()}


def pooled_templates(embeddings: np.ndarray, embeddings_flip: np.ndarray | None, rows: np.ndarray,
                     detector_scores: np.ndarray, templates: np.ndarray, medias: np.ndarray, mode: TestMode,
                     chunk: int = 1 << 15) -> tuple[np.ndarray, np.ndarray]:
    """Unit template features ``[T, D]`` of the sorted template ids ``[T]`` under ``mode``, in one
    pass over ``chunk`` images at a time, without a float64 copy of all features (media mean then
    sum over media, L2-normalised; a media id is local to its template). Each template feature is
    ``sum_i w_i x_i`` with
    ``x_i`` = the embedding (+ its mirror's) in float64 and ``w_i`` = 1 / (images in its media)
    x the detector score x 1 / ``||x_i||`` (as the mode says). ``rows [N]`` picks the images' rows
    of ``embeddings``; ``detector_scores``, ``templates``, ``medias`` are per image ``[N]``."""
    if mode.flip == "sum":  # the same rule as evaluation.embed.combine_flip, kept here torch-free
        if embeddings_flip is None:
            raise InvalidInputError("flip sum needs the embeddings of the mirrored crops (embeddings_flip); "
                                    "give them or use flip none")
        if embeddings_flip.shape != embeddings.shape:
            raise InvalidInputError(f"embeddings_flip has shape {embeddings_flip.shape}, embeddings "
                                    f"{embeddings.shape}; they must match")
    groups, image_group = _media_groups(np.asarray(templates), np.asarray(medias))
    template_ids, group_template = np.unique(groups[:, 0], return_inverse=True)
    image_template = group_template.reshape(-1)[image_group]
    weights = 1.0 / np.bincount(image_group, minlength=len(groups))[image_group]
    if mode.detector_score:
        weights = weights * np.asarray(detector_scores, np.float64)
    pooled = np.zeros((len(template_ids), embeddings.shape[1]))
    in_order = len(rows) == len(embeddings) and bool((rows == np.arange(len(rows))).all())
    buffer = np.empty((min(chunk, len(rows)), embeddings.shape[1]))  # one float64 chunk, reused
    for start in range(0, len(rows), chunk):
        part = slice(start, start + chunk) if in_order else rows[start : start + chunk]  # a slice copies nothing
        x = buffer[: min(chunk, len(rows) - start)]
        if mode.flip == "sum":  # both cast to float64, then added: one pass
            np.add(embeddings[part], embeddings_flip[part], out=x, dtype=np.float64)
        else:
            x[...] = embeddings[part]
        w = weights[start : start + chunk]
        if mode.unit_norm:
            norms = np.linalg.norm(x, axis=1)
            w = w / np.where(norms > 0, norms, 1.0)
        scatter = sparse.csr_matrix((w, (image_template[start : start + chunk], np.arange(len(x)))),
                                    shape=(len(template_ids), len(x)))
        pooled += scatter @ x
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return template_ids, pooled / np.where(norms > 0, norms, 1.0)


def _media_groups(templates: np.ndarray, medias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct (template, media) pairs ``[G, 2]``, sorted; each image's group ``[N]``): one
    1-D unique of a packed 64-bit key when both ids fit 32 bits (IJB's do), else a row unique."""
    integral = templates.dtype.kind in "iu" and medias.dtype.kind in "iu"
    if integral and templates.size and min(templates.min(), medias.min()) >= 0 \
            and max(templates.max(), medias.max()) < 1 << 31:
        keys, image_group = np.unique((templates.astype(np.int64) << 32) | medias.astype(np.int64),
                                      return_inverse=True)
        return np.stack([keys >> 32, keys & 0xFFFFFFFF], axis=1), image_group.reshape(-1)
    groups, image_group = np.unique(np.stack([templates, medias], axis=1), axis=0, return_inverse=True)
    return groups, image_group.reshape(-1)


def _positions(ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each of ``values`` in the sorted ``ids`` (``-1`` where absent): a lookup table
    when the ids are small non-negative integers (IJB's are), else a binary search."""
    if len(ids) and ids[0] >= 0 and ids[-1] <= 16 * len(ids) + (1 << 20):
        table = np.full(int(ids[-1]) + 1, -1, np.int64)
        table[ids] = np.arange(len(ids))
        if values.size and values.min() >= 0 and values.max() <= ids[-1]:
            return table[values]  # the usual case: one gather
        inside = (values >= 0) & (values <= ids[-1])
        return np.where(inside, table[np.clip(values, 0, ids[-1])], -1)
    index = np.searchsorted(ids, values)
    clipped = np.minimum(index, len(ids) - 1)
    return np.where((index < len(ids)) & (ids[clipped] == values), index, -1)


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct ``values``, sorted; each entry's rank among them): a presence table over the ids
    when they are small non-negative integers (IJB's are: one scatter, one prefix sum, one gather),
    else :func:`numpy.unique`."""
    if values.size and values.min() >= 0 and values.max() <= 16 * len(values) + (1 << 20):
        present = np.zeros(int(values.max()) + 1, bool)
        present[values] = True
        rank = np.cumsum(present) - 1
        return np.flatnonzero(present), rank[values]
    distinct, inverse = np.unique(values, return_inverse=True)
    return distinct, inverse.reshape(-1)


def _pair_side(template_ids: np.ndarray, pairs: np.ndarray, column: int) -> tuple[np.ndarray, np.ndarray]:
    """(feature rows of the distinct templates on one side of the pairs, each pair's rank among
    them); a template without a feature is an error naming the first pair that uses it."""
    distinct, inverse = _distinct(pairs[:, column])
    rows = _positions(template_ids, distinct)
    if (rows < 0).any():
        missing = distinct[rows < 0]
        row = int(np.flatnonzero(np.isin(pairs, missing).any(axis=1))[0])
        raise InvalidInputError(f"template pair {row}: template(s) {pairs[row].tolist()} have no feature")
    return rows, inverse


def pair_scores(template_ids: np.ndarray, features: np.ndarray, pairs: np.ndarray,
                block_entries: int = 1 << 25) -> np.ndarray:
    """Cosine of each template pair ``[P, 2]`` (ids) -> ``[P]`` float64; ``features`` are the unit
    template features ``[T, D]`` of the sorted ``template_ids``.

    The protocol's pairs join few templates on one side (IJB-C: 3.5K gallery templates against
    19.6K probes), so the scores are read from blocks of the similarity matrix between the two
    sides' templates (one matrix product per block of ``block_entries`` scores) rather than from
    one gathered dot product per pair. Each side's templates are ranked straight from their ids
    (:func:`_distinct`), so no per-pair lookup of feature rows is made. With several blocks the
    pairs are grouped by block once (a stable radix sort of the block numbers), each block's
    product is written into one reused buffer and its pairs read from it by a flat ``take``.
    Scores equal a single product's to float64 rounding (the BLAS may round a block's sums
    differently, ~1e-16)."""
    rows_a, inverse_a = _pair_side(template_ids, pairs, 0)
    rows_b, inverse_b = _pair_side(template_ids, pairs, 1)
    if len(rows_a) > len(rows_b):  # block the smaller side (the cosine is symmetric)
        rows_a, inverse_a, rows_b, inverse_b = rows_b, inverse_b, rows_a, inverse_a
    side_b = features[rows_b]
    width = len(rows_b)
    block = max(1, block_entries // max(width, 1))
    scores = np.empty(len(pairs), np.float64)
    if block >= len(rows_a):  # one block: every pair, no grouping
        similarity = features[rows_a] @ side_b.T
        return similarity.ravel().take(inverse_a * width + inverse_b, out=scores)
    # group the pairs by block once (a stable radix sort of small block numbers), so each block
    # reads its own pairs, in their order, instead of every block scanning all pairs
    blocks = -(-len(rows_a) // block)
    key = (inverse_a // block).astype(np.int16 if blocks < 1 << 15 else np.int64)
    order = np.argsort(key, kind="stable")
    ends = np.cumsum(np.bincount(key, minlength=blocks))
    del key
    buffer = np.empty((block, width))  # one block of the similarity matrix, reused (fresh pages cost)
    for k in range(blocks):
        members = order[ends[k - 1] if k else 0 : ends[k]]
        side_a = features[rows_a[k * block : (k + 1) * block]]
        similarity = np.matmul(side_a, side_b.T, out=buffer[: len(side_a)])
        scores[members] = similarity.ravel().take((inverse_a[members] - k * block) * width + inverse_b[members])
    return scores


def _check_labels(labels: np.ndarray) -> tuple[int, int]:
    n_pos = int((labels == 1).sum())
    n_neg = int((labels == 0).sum())
    if n_pos == 0 or n_neg == 0 or n_pos + n_neg != len(labels):
        raise InvalidInputError(f"TAR at FAR needs genuine (1) and impostor (0) pairs and no other labels; got "
                                f"{n_pos} genuine, {n_neg} impostor of {len(labels)}")
    return n_pos, n_neg


@dataclass
class Roc:
    """The full ROC at every distinct score: ``far [K+1]``, ``tar [K+1]`` (first point (0, 0), the
    threshold above every score), ``thresholds [K+1]`` (``inf`` first)."""

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray
    n_genuine: int
    n_impostor: int
    true_accepts: np.ndarray  # [K+1] counts behind tar
    false_accepts: np.ndarray  # [K+1] counts behind far


def _runs(ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, how many of each) of an ascending array."""
    first = np.empty(len(ordered), bool)  # whether each entry starts a run, written in place
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    del first
    return ordered[starts], np.diff(starts, append=len(ordered))


def _accumulated_from_top(counts: np.ndarray) -> np.ndarray:
    """``[0, c_K, c_K + c_{K-1}, ...]`` ``[K+1]``: how many entries lie at or above each threshold,
    thresholds descending (one cumulative sum written in place)."""
    out = np.empty(len(counts) + 1, np.int64)
    out[0] = 0
    np.cumsum(counts[::-1], out=out[1:])
    return out


def roc(scores: np.ndarray, labels: np.ndarray) -> Roc:
    """The full ROC, each distinct score a threshold: the impostor scores sorted once (values only,
    no argsort), the few genuine ones merged in, the counts accumulated from the top."""
    n_pos, n_neg = _check_labels(labels)
    impostor = scores[labels == 0]
    impostor.sort()
    values_i, counts_i = _runs(impostor)
    del impostor
    values_g, counts_g = _runs(np.sort(scores[labels == 1]))
    where = np.searchsorted(values_i, values_g)
    shared = (where < len(values_i)) & (values_i[np.minimum(where, len(values_i) - 1)] == values_g)
    thresholds = np.insert(values_i, where[~shared], values_g[~shared])  # ascending, distinct
    impostors_at = np.insert(counts_i, where[~shared], 0)
    genuine_at = np.zeros(len(thresholds), np.int64)
    genuine_at[np.searchsorted(thresholds, values_g)] = counts_g
    tp = _accumulated_from_top(genuine_at)  # accepted when score >= threshold, from the top
    del genuine_at
    fp = _accumulated_from_top(impostors_at)
    del impostors_at
    descending = np.empty(len(thresholds) + 1)
    descending[0] = np.inf
    descending[1:] = thresholds[::-1]
    return Roc(fp / n_neg, tp / n_pos, descending, n_pos, n_neg, tp, fp)


def tar_at_far(curve: Roc, fars: tuple[float, ...] = FAR_TARGETS) -> dict[str, float]:
    """Strict rule: the largest TAR over the thresholds whose FAR <= each target."""
    out = {}
    for far in fars:
        allowed = np.flatnonzero(curve.far <= far)  # FAR and TAR rise together: the last allowed point
        out[far_key(far)] = float(curve.tar[allowed[-1]])
    return out


def tar_at_far_insightface(curve: Roc, fars: tuple[float, ...] = FAR_TARGETS) -> dict[str, float]:
    """insightface's rule (see the module docstring). scikit-learn's ``roc_curve`` is rebuilt from
    the full ROC's counts without a second sort: its points are the same tie-group ends, minus
    those where both counts continue a straight line (``drop_intermediate``), with (0, 0) first
    (``tests/evaluation/test_ijb_protocol.py`` checks it against ``roc_curve`` itself)."""
    tp, fp = curve.true_accepts[1:], curve.false_accepts[1:]
    keep = np.ones(len(tp), bool)
    if len(tp) > 2:
        keep[1:-1] = (np.diff(fp, 2) != 0) | (np.diff(tp, 2) != 0)
    fpr = np.r_[0, fp[keep]] / fp[-1]
    tpr = np.r_[0, tp[keep]] / tp[-1]
    fpr, tpr = fpr[::-1], tpr[::-1]
    return {far_key(far): float(tpr[int(np.argmin(np.abs(fpr - far)))]) for far in fars}


def auc(curve: Roc) -> float:
    """Area under the full ROC (trapezoids; ties are one step)."""
    return float(np.trapezoid(curve.tar, curve.far)) if hasattr(np, "trapezoid") else float(np.trapz(curve.tar, curve.far))
