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


def brute_map_at_r(features: np.ndarray, labels: list[str], metric: str) -> float:
    values = []
    for q in range(len(labels)):
        r = labels.count(labels[q]) - 1
        if r < 1:
            continue
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
        correct, total = 0, 0.0
        for i, (_, j) in enumerate(scored[:r], start=1):
            if labels[j] == labels[q]:
                correct += 1
                total += correct / i
        values.append(total / r)
    return float(np.mean(values))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_at_r_equals_a_brute_force_loop(metric: str, seed: int):
    from faceverify.evaluation.retrieval import map_at_r

    rng = np.random.default_rng(seed)
    labels = [f"p{i}" for i in rng.integers(0, 9, 60)] + ["alone"]
    centers = {label: rng.normal(size=6) for label in set(labels)}
    features = np.stack([centers[label] + 0.9 * rng.normal(size=6) for label in labels])
    result = map_at_r(features, labels, metric, chunk_size=7)
    assert result["map_at_r"] == pytest.approx(brute_map_at_r(features, labels, metric), abs=1e-12)
    assert result["n_queries"] == sum(labels.count(label) >= 2 for label in labels)


def test_map_at_r_is_one_for_perfect_clusters_and_lower_than_recall_at_1_otherwise():
    from faceverify.evaluation.retrieval import map_at_r

    labels = ["a"] * 4 + ["b"] * 4
    tight = np.array([[1, 0]] * 4 + [[0, 1]] * 4, dtype=float) + 1e-3 * np.arange(8)[:, None]
    assert map_at_r(tight, labels)["map_at_r"] == pytest.approx(1.0)
    # each image's nearest neighbour is its twin, the identity's other two are beyond the other identity:
    # Recall@1 = 1 but MAP@R = 1/3 (R = 3, one correct image, at rank 1)
    points = np.array([[0, 0], [0, 0.01], [0, 0.1], [0, 0.11], [10, 0], [10, 0.01], [10, 0.1], [10, 0.11]], float)
    mixed = ["a", "a", "b", "b", "a", "a", "b", "b"]
    assert recall_at_k(points, mixed, [1], metric="euclidean")["1"] == 1.0
    assert map_at_r(points, mixed, "euclidean")["map_at_r"] == pytest.approx(1 / 3)


def test_effective_rank_and_collapse_flag():
    from faceverify.ablation.geometry import class_geometry, effective_rank

    rng = np.random.default_rng(0)
    spread = rng.normal(size=(200, 16))
    assert 12 < effective_rank(spread) <= 16
    line = np.outer(rng.normal(size=200), rng.normal(size=16)) + 5
    assert effective_rank(line) < 2
    labels = [f"p{i % 20}" for i in range(200)]
    assert class_geometry(spread, labels)["collapsed"] is False
    collapsed = np.ones((200, 16)) + 1e-6 * rng.normal(size=(200, 16))
    geometry = class_geometry(collapsed, labels)
    assert geometry["collapsed"] is True and geometry["compactness"] < 0.01
