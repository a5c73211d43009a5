"""Recall@K against a brute-force loop."""

from __future__ import annotations

import numpy as np
import pytest

from faceverify.evaluation.retrieval import recall_at_k


def brute_recall(features: np.ndarray, labels: list[str], k: int, metric: str) -> float:
    counts = {label: labels.count(label) for label in labels}
    queries = [i for i in range(len(labels)) if counts[labels[i]] >= 2]
    hits = 0
    for q in queries:
        scored = []
        for j in range(len(labels)):
            if j == q:
                continue
            if metric == "cosine":
                s = features[q] @ features[j] / (np.linalg.norm(features[q]) * np.linalg.norm(features[j]))
            else:
                s = -np.linalg.norm(features[q] - features[j])
            scored.append((s, j))
        scored.sort(key=lambda t: -t[0])
        hits += any(labels[j] == labels[q] for _, j in scored[:k])
    return hits / len(queries)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_recall_matches_brute_force(metric: str):
    rng = np.random.default_rng(0)
    labels = [f"p{rng.integers(30)}" for _ in range(150)]
    centers = {label: rng.normal(size=8) for label in set(labels)}
    features = np.stack([centers[label] + 1.2 * rng.normal(size=8) for label in labels])
    ours = recall_at_k(features, labels, (1, 5, 10), metric=metric, chunk_size=37)
    for k in (1, 5, 10):
        assert ours[str(k)] == pytest.approx(brute_recall(features, labels, k, metric))
    singles = sum(labels.count(label) == 1 for label in labels)
    assert ours["n_queries"] == len(labels) - singles
    assert ours["1"] <= ours["5"] <= ours["10"]


def test_self_match_is_excluded():
    features = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.01]])
    out = recall_at_k(features, ["a", "b", "b"], (1,))
    # the only query identity is b; its nearest other image is never itself
    assert out["n_queries"] == 2
    assert out["1"] == 0.5
