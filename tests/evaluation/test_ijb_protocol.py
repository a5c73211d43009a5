"""The IJB 1:1 and 1:N protocol against brute-force references: plain loops in float64 that read
like the protocol's definitions (and like the loop the published scripts run)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faceverify.evaluation.identification import identification_metrics, mean_over_galleries
from faceverify.evaluation.ijb_protocol import (
    FAR_TARGETS,
    TestMode as Mode,
    auc,
    far_key,
    pair_scores,
    pooled_templates,
    roc,
    tar_at_far,
    tar_at_far_insightface,
)

# ----------------------------------------------------------------------------- references


def reference_templates(features, templates, medias):
    out = {}
    for t in sorted(set(templates.tolist())):
        by_media: dict[int, list[np.ndarray]] = {}
        for f, tt, m in zip(features, templates, medias):
            if tt == t:
                by_media.setdefault(int(m), []).append(np.array(f, np.float64))
        total = np.zeros(features.shape[1])
        for fs in by_media.values():
            mean = np.zeros(features.shape[1])
            for f in fs:
                mean += f
            total += mean / len(fs)
        norm = math.sqrt(sum(v * v for v in total))
        out[t] = total / norm if norm > 0 else total
    return out


def reference_scores(pooled, pairs):
    return np.array([sum(x * y for x, y in zip(pooled[int(a)], pooled[int(b)])) for a, b in pairs])


def reference_strict(scores, labels, far):
    pos = [s for s, l in zip(scores, labels) if l == 1]
    neg = [s for s, l in zip(scores, labels) if l == 0]
    best = 0.0
    for threshold in sorted(set(scores.tolist())) + [math.inf]:
        fa = sum(1 for s in neg if s >= threshold) / len(neg)
        ta = sum(1 for s in pos if s >= threshold) / len(pos)
        if fa <= far:
            best = max(best, ta)
    return best


def reference_insightface(scores, labels, far):
    """sklearn's roc_curve written out: distinct thresholds descending, collinear points dropped,
    (0, 0) prepended; then the curve reversed and the first point of smallest |fpr - far|."""
    thresholds = sorted(set(scores.tolist()), reverse=True)
    tps = [sum(1 for s, l in zip(scores, labels) if l == 1 and s >= t) for t in thresholds]
    fps = [sum(1 for s, l in zip(scores, labels) if l == 0 and s >= t) for t in thresholds]
    keep = [0]
    for i in range(1, len(thresholds) - 1):
        if fps[i + 1] - 2 * fps[i] + fps[i - 1] != 0 or tps[i + 1] - 2 * tps[i] + tps[i - 1] != 0:
            keep.append(i)
    if len(thresholds) > 1:
        keep.append(len(thresholds) - 1)
    fpr = [0.0] + [fps[i] / fps[-1] for i in keep]
    tpr = [0.0] + [tps[i] / tps[-1] for i in keep]
    fpr, tpr = fpr[::-1], tpr[::-1]
    best = None
    for i, f in enumerate(fpr):
        if best is None or abs(f - far) < abs(fpr[best] - far):
            best = i
    return tpr[best]


def reference_identification(probes, probe_subjects, gallery, gallery_subjects, ranks, fpirs):
    subjects = sorted(set(gallery_subjects.tolist()))
    rows = []
    for p in probes:
        per_subject = {}
        for g, s in zip(gallery, gallery_subjects):
            score = float(sum(x * y for x, y in zip(p, g)))
            per_subject[int(s)] = max(per_subject.get(int(s), -math.inf), score)
        rows.append(per_subject)
    mated = [i for i, s in enumerate(probe_subjects) if int(s) in subjects]
    nonmated = [i for i in range(len(probes)) if i not in mated]
    rank_of = {}
    for i in mated:
        mate = rows[i][int(probe_subjects[i])]
        rank_of[i] = sum(1 for v in rows[i].values() if v >= mate)
    out = {f"rank_{k}": sum(1 for i in mated if rank_of[i] <= k) / len(mated) for k in ranks}
    tops = [max(rows[i].values()) for i in nonmated]
    tpir = {}
    for fpir in fpirs:
        best = 0.0
        for threshold in sorted(set(tops)) + [math.inf, -math.inf]:  # alarm when the best score > threshold
            alarms = sum(1 for v in tops if v > threshold) / len(tops)
            if alarms <= fpir:
                hits = sum(1 for i in mated if rank_of[i] == 1 and rows[i][int(probe_subjects[i])] > threshold)
                best = max(best, hits / len(mated))
        tpir[far_key(fpir)] = best
    out["tpir_at_fpir"] = tpir
    return out


# ----------------------------------------------------------------------------- data


def random_release(rng, n_images=120, n_templates=30, dim=8):
    templates = rng.integers(0, n_templates, n_images) * 7 + 3  # sparse, unordered ids
    templates[:n_templates] = np.arange(n_templates) * 7 + 3  # every template has an image
    medias = rng.integers(0, 4, n_images) + 100 * (templates % 5)
    medias[templates == 3] = 5  # a template whose images all share one media
    lone = 7 * n_templates + 3  # a template with exactly one image
    templates = np.r_[templates, lone]
    medias = np.r_[medias, 9]
    embeddings = rng.normal(size=(n_images + 1, dim))
    flips = embeddings + 0.3 * rng.normal(size=embeddings.shape)
    scores = rng.uniform(0.2, 1.0, n_images + 1)
    return embeddings, flips, scores, templates, medias


@pytest.mark.parametrize("mode", [Mode(), Mode("none", True, False), Mode("sum", False, True),
                                  Mode("none", False, False)])
def test_pooling_and_scores_equal_the_loop_reference(mode):
    rng = np.random.default_rng(7)
    embeddings, flips, det, templates, medias = random_release(rng)
    expected = []
    for e, f, s in zip(embeddings, flips, det):  # the test mode, image by image
        v = e + f if mode.flip == "sum" else e.copy()
        if mode.unit_norm:
            v = v / math.sqrt(sum(x * x for x in v))
        expected.append(v * s if mode.detector_score else v)
    reference = reference_templates(np.array(expected), templates, medias)
    ids, pooled = pooled_templates(embeddings, flips, np.arange(len(embeddings)), det, templates, medias, mode)
    assert ids.tolist() == sorted(reference)
    np.testing.assert_allclose(pooled, np.array([reference[t] for t in ids.tolist()]), atol=1e-9)
    # chunk by chunk, on shuffled rows of the embeddings
    perm = rng.permutation(len(embeddings))
    rows = np.argsort(perm)
    fused_ids, fused = pooled_templates(embeddings[perm], flips[perm], rows, det, templates, medias, mode, chunk=13)
    assert fused_ids.tolist() == ids.tolist()
    np.testing.assert_allclose(fused, pooled, atol=1e-9)
    pairs = rng.choice(ids, size=(200, 2))
    pairs[5] = pairs[4]  # a duplicate pair
    pairs[6] = [3, 3]  # a template against itself
    pairs[7:40, 0] = ids[2]  # one template on the smaller side of many pairs
    for block in (1, 50, 1 << 25):  # one template per block, several, all at once
        np.testing.assert_allclose(pair_scores(ids, pooled, pairs, block_entries=block),
                                   reference_scores(reference, pairs), atol=1e-9)


@pytest.mark.parametrize("template_offset,media_offset", [(0, 0), (1 << 40, 0), (0, -(1 << 33))])
def test_pooling_groups_media_the_same_for_ids_inside_and_outside_the_packed_key(template_offset, media_offset):
    """(template, media) pairs are grouped by one packed 64-bit key when both ids fit 32 bits and by
    a row unique otherwise (ids of 2^40, or negative media ids): both give the loop's templates."""
    rng = np.random.default_rng(11)
    embeddings, flips, det, templates, medias = random_release(rng)
    templates, medias = templates + template_offset, medias + media_offset
    reference = reference_templates((embeddings + flips) * det[:, None], templates, medias)
    ids, pooled = pooled_templates(embeddings, flips, np.arange(len(embeddings)), det, templates, medias, Mode())
    assert ids.tolist() == sorted(reference)
    np.testing.assert_allclose(pooled, np.array([reference[t] for t in ids.tolist()]), atol=1e-9)


def test_a_pair_naming_a_template_without_features_is_refused():
    ids = np.array([1, 5, 9])
    with pytest.raises(ValueError, match=r"template pair 1: template\(s\) \[5, 7\]"):
        pair_scores(ids, np.eye(3), np.array([[1, 5], [5, 7]]))
    big = np.array([1, 10**12])  # ids too sparse for a lookup table: the binary search
    with pytest.raises(ValueError, match=r"template pair 0"):
        pair_scores(big, np.eye(2), np.array([[3, 1]]))
    assert pair_scores(big, np.eye(2), np.array([[10**12, 10**12], [1, 10**12]])).tolist() == [1.0, 0.0]


def _scores_with_ties(rng, n, levels):
    labels = (rng.uniform(size=n) < 0.3).astype(np.int64)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(size=n) + 1.5 * labels, levels)  # few decimals: many ties
    return scores, labels


@pytest.mark.parametrize("seed,levels", [(0, 1), (1, 2), (2, 6)])
def test_both_tar_rules_equal_their_loop_references(seed, levels):
    rng = np.random.default_rng(seed)
    scores, labels = _scores_with_ties(rng, 400, levels)
    fars = FAR_TARGETS + (0.25, 1.0 / int((labels == 0).sum()))  # 1e-6.. is below 1 / n_impostors here
    curve = roc(scores, labels)
    strict = tar_at_far(curve, fars)
    nearest = tar_at_far_insightface(curve, fars)
    for far in fars:
        assert strict[far_key(far)] == pytest.approx(reference_strict(scores, labels, far), abs=1e-12)
        assert nearest[far_key(far)] == pytest.approx(reference_insightface(scores, labels, far), abs=1e-12)
    from sklearn.metrics import roc_auc_score, roc_curve

    assert auc(curve) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    # the rule as insightface's script runs it, on scikit-learn's roc_curve itself
    fpr, tpr, _ = roc_curve(labels, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    for far in fars:
        _, first_nearest = min(zip(np.abs(fpr - far), range(len(fpr))))
        assert nearest[far_key(far)] == tpr[first_nearest]


def test_far_below_one_impostor_accepts_only_what_beats_every_impostor():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.95])
    labels = np.array([1, 1, 0, 1, 0, 0])
    strict = tar_at_far(roc(scores, labels), (1e-6, 0.34, 0.67))
    # FAR <= 1e-6: no impostor may pass; the best impostor (0.95) tops every genuine score
    assert strict == {"1e-06": 0.0, "3e-01": 2 / 3, "7e-01": 1.0}


def test_the_two_rules_differ_where_the_nearest_point_lies_above_the_target():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    labels = np.array([1, 0, 1, 0])
    # FAR is 0 then 0.5: at target 0.4 the nearest point is FAR 0.5 (TAR 1), the strict one FAR 0
    assert tar_at_far(roc(scores, labels), (0.4,))["4e-01"] == 0.5
    assert tar_at_far_insightface(roc(scores, labels), (0.4,))["4e-01"] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identification_equals_its_loop_reference(seed):
    rng = np.random.default_rng(seed)
    dim, n_subjects = 6, 12
    centres = rng.normal(size=(n_subjects, dim))
    gallery_subjects = np.r_[np.arange(8), [2, 5]]  # subjects 2 and 5 have two gallery templates
    gallery = centres[gallery_subjects] + 0.6 * rng.normal(size=(len(gallery_subjects), dim))
    probe_subjects = rng.integers(0, n_subjects, 60)  # subjects 8..11 are not enrolled: non-mated
    probes = centres[probe_subjects] + 0.9 * rng.normal(size=(60, dim))
    if seed == 2:  # small integers: dot products exact in any order, and many tied scores
        probes, gallery = np.round(probes, 0), np.round(gallery, 0)
    else:
        unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
        probes, gallery = unit(probes), unit(gallery)
    fpirs = (1e-2, 1e-1, 0.3)
    got = identification_metrics(probes, probe_subjects, gallery, gallery_subjects, (1, 2, 5), fpirs)
    expected = reference_identification(probes, probe_subjects, gallery, gallery_subjects, (1, 2, 5), fpirs)
    for key in ("rank_1", "rank_2", "rank_5"):
        assert got[key] == pytest.approx(expected[key], abs=1e-12)
    for key, value in expected["tpir_at_fpir"].items():
        assert got["tpir_at_fpir"][key] == pytest.approx(value, abs=1e-12)
    assert got["n_mated"] + got["n_nonmated"] == 60 and got["n_gallery_subjects"] == 8


def test_mean_over_galleries_averages_each_rate():
    a = {"rank_1": 0.5, "tpir_at_fpir": {"1e-02": 0.2}}
    b = {"rank_1": 0.7, "tpir_at_fpir": {"1e-02": None}}
    mean = mean_over_galleries({"G1": a, "G2": {"rank_1": 0.9, "tpir_at_fpir": {"1e-02": 0.4}}})
    assert mean["rank_1"] == pytest.approx(0.7) and mean["tpir_at_fpir"]["1e-02"] == pytest.approx(0.3)
    assert mean_over_galleries({"G1": a, "G2": b})["tpir_at_fpir"]["1e-02"] is None


def test_flip_sum_without_or_with_mismatched_mirrors_is_refused():
    e, t, m, s = np.ones((3, 4)), np.array([1, 1, 2]), np.array([0, 0, 0]), np.ones(3)
    with pytest.raises(ValueError, match="flip sum needs the embeddings of the mirrored crops"):
        pooled_templates(e, None, np.arange(3), s, t, m, Mode())
    with pytest.raises(ValueError, match=r"embeddings_flip has shape \(3, 5\), embeddings \(3, 4\)"):
        pooled_templates(e, np.ones((3, 5)), np.arange(3), s, t, m, Mode())
    ids, pooled = pooled_templates(e, None, np.arange(3), s, t, m, Mode("none"))  # no mirrors needed
    assert ids.tolist() == [1, 2] and np.allclose(pooled, 0.5)
