"""Recall@K retrieval over identities (Song et al., CVPR 2016 "lifted structure" protocol).

Each image whose identity has at least two images is a query against *all other* images (itself
excluded); Recall@K is the fraction of queries with at least one image of the same identity among
their K most similar images.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import torch

from faceverify.errors import InvalidInputError


def _query_setup(embeddings: np.ndarray, labels: Sequence[str] | np.ndarray, metric: str,
                 dtype: torch.dtype) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What both retrieval metrics start from: ``(query rows (identities with another image),
    features [N, D] (unit length for cosine), identity codes [N], other images of each one's
    identity [N])``."""
    labels_arr = np.asarray(labels)
    counts = Counter(labels_arr.tolist())
    queries = np.flatnonzero([counts[label] >= 2 for label in labels_arr.tolist()])
    feats = torch.as_tensor(np.asarray(embeddings), dtype=dtype)
    if metric == "cosine":
        feats = torch.nn.functional.normalize(feats, dim=1)
    elif metric != "euclidean":
        raise InvalidInputError(f"unknown metric {metric!r}; valid: cosine, euclidean")
    _, codes = np.unique(labels_arr, return_inverse=True)
    others = torch.as_tensor([counts[label] - 1 for label in labels_arr.tolist()])
    return queries, feats, torch.as_tensor(codes), others


def recall_at_k(
    embeddings: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    metric: str = "cosine",
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@K for each K.

    Args:
        embeddings: ``[N, D]`` features, any float dtype.
        labels: ``[N]`` identity of each row.
        ks: the K values.
        metric: ``cosine`` (similarity) or ``euclidean`` (distance), as in verification.
        chunk_size: queries per block, so memory stays O(chunk_size * N).

    Returns:
        ``{"1": r1, "5": r5, ...}`` plus ``"n_queries"`` (as a float) for the record.
    """
    ks = sorted(int(k) for k in ks)
    queries, feats, codes_t, _ = _query_setup(embeddings, labels, metric, torch.float32)
    if queries.size == 0:
        return {**{str(k): float("nan") for k in ks}, "n_queries": 0.0}
    k_max = min(max(ks), feats.shape[0] - 1)
    hits = {k: 0 for k in ks}
    for start in range(0, queries.size, chunk_size):
        q_idx = torch.as_tensor(queries[start : start + chunk_size])
        q = feats[q_idx]
        if metric == "cosine":
            sim = q @ feats.T
        else:
            sim = -torch.cdist(q, feats)
        sim[torch.arange(q_idx.numel()), q_idx] = float("-inf")
        top = sim.topk(k_max, dim=1).indices
        match = codes_t[top] == codes_t[q_idx].unsqueeze(1)
        first_hit = torch.where(match.any(dim=1), match.float().argmax(dim=1), k_max)
        for k in ks:
            hits[k] += int((first_hit < k).sum())
    out = {str(k): hits[k] / queries.size for k in ks}
    out["n_queries"] = float(queries.size)
    return out


def map_at_r(
    embeddings: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    metric: str = "cosine",
    chunk_size: int = 1024,
) -> dict[str, float]:
    """MAP@R (Musgrave, Belongie & Lim, "A Metric Learning Reality Check", ECCV 2020).

    For each query with ``R >= 1`` other images of its identity, retrieve its ``R`` most similar
    other images and average the precision at each rank that holds a correct one:

        MAP@R = mean over queries of  1/R * sum_{i=1..R} P(i) * rel(i)

    with ``P(i)`` the precision among the first ``i`` results. Unlike Recall@1 it rewards a
    well-clustered identity, not just one close neighbour. Returns ``{"map_at_r", "n_queries"}``.
    """
    queries, feats, codes_t, r_of = _query_setup(embeddings, labels, metric, torch.float64)
    if queries.size == 0:
        return {"map_at_r": float("nan"), "n_queries": 0.0}
    r_max = int(r_of[torch.as_tensor(queries)].max())
    total = 0.0
    for start in range(0, queries.size, chunk_size):
        q_idx = torch.as_tensor(queries[start : start + chunk_size])
        sim = feats[q_idx] @ feats.T if metric == "cosine" else -torch.cdist(feats[q_idx], feats)
        sim[torch.arange(q_idx.numel()), q_idx] = float("-inf")
        top = sim.topk(min(r_max, feats.shape[0] - 1), dim=1).indices
        relevant = (codes_t[top] == codes_t[q_idx].unsqueeze(1)).double()  # [Q, r_max]
        r = r_of[q_idx].unsqueeze(1)
        ranks = torch.arange(1, top.shape[1] + 1, dtype=torch.float64).unsqueeze(0)
        within = ranks <= r
        precision = torch.cumsum(relevant, dim=1) / ranks
        total += float(((precision * relevant * within).sum(dim=1) / r.double().squeeze(1)).sum())
    return {"map_at_r": total / queries.size, "n_queries": float(queries.size)}
