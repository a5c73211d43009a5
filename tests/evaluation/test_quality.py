"""The error-versus-reject curve against a brute-force reading of its definition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faceverify.evaluation.quality import error_versus_reject, fmr_threshold, pair_quality


def reference(scores, same, quality, fmr, fractions):
    impostors = [s for s, g in zip(scores, same) if not g]
    # every candidate threshold: -inf and each score; the smallest whose false match rate is <= fmr
    candidates = sorted({-math.inf, *scores})
    threshold = next(t for t in candidates if sum(s > t for s in impostors) / len(impostors) <= fmr)
    order = sorted(range(len(scores)), key=lambda i: (quality[i], i))
    fnmr = []
    for fraction in fractions:
        rejected = set(order[: math.ceil(round(fraction * len(scores), 9))])
        genuine = [scores[i] for i in range(len(scores)) if same[i] and i not in rejected]
        fnmr.append(sum(s <= threshold for s in genuine) / len(genuine))
    return threshold, fnmr


@pytest.mark.parametrize("seed,fmr", [(0, 0.01), (1, 0.1), (2, 0.001)])
def test_the_curve_follows_its_definition(seed: int, fmr: float):
    rng = np.random.default_rng(seed)
    n = 600
    same = rng.random(n) < 0.5
    quality = rng.random(n)
    scores = np.where(same, 0.6 + 0.3 * rng.standard_normal(n) * (1.2 - quality), 0.1 * rng.standard_normal(n))
    scores = np.round(scores, 3)  # ties among the scores, and between scores and the threshold
    fractions = (0.0, 0.1, 0.25, 0.5)
    got = error_versus_reject(scores, same, quality, fmr, fractions)
    threshold, fnmr = reference(scores.tolist(), same.tolist(), quality.tolist(), fmr, fractions)
    assert got["threshold"] == threshold and got["reject_fractions"] == list(fractions)
    assert got["fnmr"] == pytest.approx(fnmr, abs=1e-15)
    assert got["fnmr"][-1] < got["fnmr"][0]  # the errors come from the low-quality pairs here


def test_a_quality_score_that_knows_nothing_keeps_the_curve_flat_and_pairs_take_the_lower_quality():
    rng = np.random.default_rng(3)
    n = 20_000
    same = rng.random(n) < 0.5
    scores = np.where(same, rng.normal(0.5, 0.2, n), rng.normal(0.0, 0.1, n))
    flat = error_versus_reject(scores, same, rng.random(n), 0.01)["fnmr"]
    assert max(flat) - min(flat) < 0.02
    assert fmr_threshold(np.array([0.1, 0.2, 0.9]), np.array([False, False, True]), 0.5) == 0.1  # one of two above
    np.testing.assert_array_equal(pair_quality(np.array([3.0, 1.0, 2.0]), np.array([0, 1]), np.array([2, 2])),
                                  [2.0, 1.0])
