"""The 10-fold protocol against brute-force loops; AUC, EER, TAR@FAR against references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from faceverify.evaluation.verification import (
    accuracy_at_thresholds,
    best_threshold,
    equal_error_rate,
    evaluate_features,
    evaluate_scores,
    fold_scores,
    pair_similarity,
    threshold_at_far,
)


def brute_force_ten_fold(scores: np.ndarray, same: np.ndarray, fold: np.ndarray):
    """Plain loops: every fold, every candidate threshold, every pair."""
    n_folds = int(fold.max()) + 1
    accs, thresholds = [], []
    for k in range(n_folds):
        train = [i for i in range(len(scores)) if fold[i] != k]
        test = [i for i in range(len(scores)) if fold[i] == k]
        values = sorted(set(float(scores[i]) for i in train))
        candidates = [values[0] - 1.0]
        candidates += [(values[j] + values[j + 1]) / 2.0 for j in range(len(values) - 1)]
        candidates += [values[-1] + 1.0]
        best_t, best_acc = None, -1.0
        for t in candidates:
            correct = 0
            for i in train:
                correct += int((scores[i] > t) == bool(same[i]))
            acc = correct / len(train)
            if acc > best_acc:  # strict: the smallest threshold wins ties
                best_t, best_acc = t, acc
        correct = sum(int((scores[i] > best_t) == bool(same[i])) for i in test)
        accs.append(correct / len(test))
        thresholds.append(best_t)
    return accs, thresholds


def lfw_like_folds(n_folds: int = 10, per_class: int = 30):
    same = np.tile(np.r_[np.ones(per_class, bool), np.zeros(per_class, bool)], n_folds)
    fold = np.repeat(np.arange(n_folds), 2 * per_class)
    return same, fold


def test_perfectly_separable_scores_give_100_percent():
    same, fold = lfw_like_folds()
    rng = np.random.default_rng(1)
    scores = np.where(same, rng.uniform(0.6, 1.0, same.size), rng.uniform(-1.0, 0.4, same.size))
    result = evaluate_scores(scores, same, fold)
    assert result.accuracy == 1.0
    assert result.accuracy_std == 0.0
    assert result.auc == 1.0
    assert result.eer == 0.0
    assert all(0.4 <= t <= 0.6 for t in result.fold_thresholds)


def test_all_wrong_way_round_scores_give_zero_auc():
    same, fold = lfw_like_folds()
    scores = np.where(same, -1.0, 1.0) + np.linspace(0, 0.01, same.size)
    result = evaluate_scores(scores, same, fold)
    assert result.auc == 0.0
    assert result.accuracy == pytest.approx(0.5)  # best is "always same" or "always different"


@pytest.mark.parametrize("decimals", [1, 2, 6])
def test_vectorised_protocol_equals_brute_force_with_ties(decimals: int):
    same, fold = lfw_like_folds(per_class=25)
    rng = np.random.default_rng(decimals)
    scores = np.round(rng.normal(same * 0.8, 1.0), decimals)  # coarse rounding -> many ties
    if decimals == 1:
        assert np.unique(scores).size < scores.size / 4
    result = evaluate_scores(scores, same, fold)
    ref_acc, ref_thr = brute_force_ten_fold(scores, same, fold)
    assert result.fold_accuracies == pytest.approx(ref_acc, abs=1e-12)
    assert result.fold_thresholds == pytest.approx(ref_thr, abs=1e-12)
    assert result.accuracy == pytest.approx(np.mean(ref_acc))
    assert result.accuracy_std == pytest.approx(np.std(ref_acc))


def test_accuracy_at_thresholds_counts_ties_on_the_not_same_side():
    scores = np.array([0.5, 0.5, 0.5, 0.9])
    same = np.array([True, False, False, True])
    # threshold exactly at a score: score > t is False for the tied ones
    acc = accuracy_at_thresholds(scores, same, np.array([0.5, 0.4, 1.0]))
    assert acc.tolist() == [0.75, 0.5, 0.5]
    t, a = best_threshold(scores, same)
    assert a == 0.75 and 0.5 <= t < 0.9


def test_auc_equals_sklearn_and_mann_whitney():
    same, fold = lfw_like_folds(per_class=40)
    rng = np.random.default_rng(7)
    scores = np.round(rng.normal(same * 1.0, 1.0), 1)
    result = evaluate_scores(scores, same, fold)
    assert result.auc == pytest.approx(roc_auc_score(same, scores), abs=1e-12)
    pos, neg = scores[same], scores[~same]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    assert result.auc == pytest.approx(wins / (pos.size * neg.size), abs=1e-12)


def test_eer_matches_a_dense_threshold_sweep():
    same, fold = lfw_like_folds(per_class=200)
    rng = np.random.default_rng(3)
    scores = rng.normal(same * 1.5, 1.0)
    eer = equal_error_rate(scores, same)
    best_gap, at = math.inf, None
    for t in np.linspace(scores.min(), scores.max(), 20001):
        far = np.mean(scores[~same] > t)
        frr = np.mean(scores[same] <= t)
        if abs(far - frr) < best_gap:
            best_gap, at = abs(far - frr), (far + frr) / 2
    assert eer == pytest.approx(at, abs=3e-3)


def test_threshold_at_far_respects_the_target_exactly():
    rng = np.random.default_rng(5)
    negatives = np.round(rng.normal(size=2700), 2)
    for far in (1e-3, 1e-2, 0.1):
        t = threshold_at_far(negatives, far)
        above = int(np.sum(negatives > t))
        assert above <= math.floor(far * negatives.size)
        # no smaller threshold among the negatives' values keeps the FAR bound
        lower = np.unique(negatives[negatives < t])
        if lower.size:
            assert np.sum(negatives > lower[-1]) > math.floor(far * negatives.size)


def test_tar_at_far_equals_loop_reference():
    same, fold = lfw_like_folds(per_class=300)
    rng = np.random.default_rng(11)
    scores = rng.normal(same * 2.0, 1.0)
    result = evaluate_scores(scores, same, fold, far_targets=(1e-2,))
    tars = []
    for k in range(10):
        negs = sorted((scores[i] for i in range(scores.size) if fold[i] != k and not same[i]), reverse=True)
        allowed = math.floor(1e-2 * len(negs) + 1e-9)
        t = negs[allowed]
        pos = [scores[i] for i in range(scores.size) if fold[i] == k and same[i]]
        tars.append(sum(p > t for p in pos) / len(pos))
    assert result.tar_at_far["0.01"] == pytest.approx(np.mean(tars))
    assert result.far_achieved["0.01"] <= 0.03


def test_pca_is_fitted_on_training_folds_only():
    rng = np.random.default_rng(0)
    n_images, dim = 200, 16
    features = rng.normal(size=(n_images, dim))
    same, fold = lfw_like_folds(n_folds=4, per_class=20)
    index_a = rng.integers(0, n_images, same.size)
    index_b = rng.integers(0, n_images, same.size)
    rows = fold_scores(features, index_a, index_b, fold, "cosine", pca_dim=5)
    for k in range(4):
        train = fold != k
        train_images = np.unique(np.r_[index_a[train], index_b[train]])
        pca = PCA(5, svd_solver="full").fit(features[train_images])
        projected = pca.transform(features)
        expected = pair_similarity(projected[index_a], projected[index_b], "cosine")
        np.testing.assert_allclose(rows[k], expected, atol=1e-10)
    assert not np.allclose(rows[0], rows[1])


def test_mean_subtraction_uses_training_mean():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(50, 4)) + 3.0
    same, fold = lfw_like_folds(n_folds=2, per_class=10)
    index_a = rng.integers(0, 50, same.size)
    index_b = rng.integers(0, 50, same.size)
    rows = fold_scores(features, index_a, index_b, fold, "euclidean", subtract_mean=True)
    plain = fold_scores(features, index_a, index_b, fold, "euclidean")
    np.testing.assert_allclose(rows, plain)  # translation does not change distances
    rows_cos = fold_scores(features, index_a, index_b, fold, "cosine", subtract_mean=True)
    train = fold != 0
    mean = features[np.unique(np.r_[index_a[train], index_b[train]])].mean(0)
    expected = pair_similarity(features[index_a] - mean, features[index_b] - mean, "cosine")
    np.testing.assert_allclose(rows_cos[0], expected)


def test_euclidean_scores_are_negated_distances():
    a = np.array([[0.0, 0.0], [1.0, 1.0]])
    b = np.array([[3.0, 4.0], [1.0, 1.0]])
    np.testing.assert_allclose(pair_similarity(a, b, "euclidean"), [-5.0, 0.0])
    np.testing.assert_allclose(pair_similarity(a, b, "cosine"), [0.0, 1.0])


def test_evaluate_features_end_to_end_on_clustered_embeddings():
    rng = np.random.default_rng(4)
    identities = rng.normal(size=(100, 32))
    image_identity = np.repeat(np.arange(100), 4)
    features = identities[image_identity] + 0.5 * rng.normal(size=(400, 32))
    same, fold = lfw_like_folds(n_folds=10, per_class=20)
    index_a, index_b = [], []
    for s in same:
        ident = rng.integers(100)
        a = ident * 4 + rng.integers(4)
        if s:
            b = ident * 4 + (a - ident * 4 + 1 + rng.integers(3)) % 4
        else:
            other = (ident + 1 + rng.integers(99)) % 100
            b = other * 4 + rng.integers(4)
        index_a.append(a)
        index_b.append(b)
    result = evaluate_features(features, np.array(index_a), np.array(index_b), same, fold)
    assert result.accuracy > 0.95
    assert result.n_pairs == 400 and result.n_folds == 10


def test_non_finite_scores_are_rejected():
    same, fold = lfw_like_folds(n_folds=2, per_class=2)
    scores = np.zeros(same.size)
    scores[1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_scores(scores, same, fold)
