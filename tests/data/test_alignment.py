"""Similarity alignment: exact on known transforms, identity on the template, OpenCV agreement."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from faceverify.data.alignment import (
    TEMPLATE_112X96,
    alignment_residual,
    apply_transform,
    get_template,
    similarity_transform,
    warp_face,
)


def test_template_coordinates_are_the_published_ones():
    t96 = get_template("112x96")
    assert t96.size == (112, 96)
    assert t96.points[0].tolist() == [30.2946, 51.6963]
    assert t96.points[4].tolist() == [62.7299, 92.2041]
    t112 = get_template("112x112")
    assert t112.size == (112, 112)
    np.testing.assert_allclose(t112.points, TEMPLATE_112X96 + [8.0, 0.0])
    big = get_template("112x96", scale=2.0)
    assert big.size == (224, 192)
    np.testing.assert_allclose(big.points, TEMPLATE_112X96 * 2)
    with pytest.raises(ValueError, match="valid: 112x96, 112x112"):
        get_template("96x96")


def test_landmarks_equal_to_the_template_give_the_identity():
    matrix = similarity_transform(TEMPLATE_112X96, TEMPLATE_112X96)
    np.testing.assert_allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    assert alignment_residual(TEMPLATE_112X96, get_template("112x96")) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("angle,scale,shift", [(0.3, 2.5, (40.0, -7.0)), (-1.2, 0.4, (3.0, 99.0)), (3.0, 1.0, (0, 0))])
def test_known_similarity_is_recovered_exactly(angle: float, scale: float, shift: tuple[float, float]):
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, size=(5, 2))
    c, s = np.cos(angle), np.sin(angle)
    truth = np.array([[scale * c, -scale * s, shift[0]], [scale * s, scale * c, shift[1]]])
    dst = apply_transform(truth, src)
    np.testing.assert_allclose(similarity_transform(src, dst), truth, atol=1e-9)


def test_least_squares_agrees_with_brute_force_minimum_on_noisy_points():
    rng = np.random.default_rng(1)
    src = rng.uniform(50, 150, size=(5, 2))
    dst = TEMPLATE_112X96 + rng.normal(scale=2.0, size=(5, 2))
    matrix = similarity_transform(src, dst)
    best = np.sum((apply_transform(matrix, src) - dst) ** 2)
    # perturbing any of the four similarity parameters never lowers the squared error
    a, b, tx, ty = matrix[0, 0], matrix[1, 0], matrix[0, 2], matrix[1, 2]
    for delta in np.eye(4) * 1e-4:
        for sign in (1, -1):
            da, db, dx, dy = sign * delta
            m = np.array([[a + da, -(b + db), tx + dx], [b + db, a + da, ty + dy]])
            assert np.sum((apply_transform(m, src) - dst) ** 2) >= best - 1e-9
    # OpenCV's robust estimator reaches the same transform on these five points
    cv_matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    assert np.sum((apply_transform(cv_matrix, src) - dst) ** 2) >= best - 1e-6


def test_reflections_are_never_produced():
    src = TEMPLATE_112X96.copy()
    mirrored = src * [-1, 1] + [96, 0]  # the template mirrored left-right
    matrix = similarity_transform(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_degenerate_landmarks_are_rejected():
    with pytest.raises(ValueError, match="one point"):
        similarity_transform(np.ones((5, 2)), TEMPLATE_112X96)
    with pytest.raises(ValueError, match="NaN"):
        similarity_transform(np.full((5, 2), np.nan), TEMPLATE_112X96)


def test_warp_moves_a_marked_pixel_to_its_template_position():
    template = get_template("112x96")
    image = np.zeros((400, 300, 3), np.uint8)
    src = TEMPLATE_112X96 * 2 + [50, 60]  # the face at twice the crop scale
    for x, y in src.round().astype(int):
        cv2.circle(image, (x, y), 3, (255, 255, 255), -1)
    crop = warp_face(image, similarity_transform(src, template.points), template)
    assert crop.shape == (112, 96, 3)
    for x, y in template.points.round().astype(int):
        assert crop[y, x].min() > 200


def test_large_photos_shrink_without_aliasing_and_match_a_direct_warp():
    template = get_template("112x96")
    rng = np.random.default_rng(0)
    smooth = cv2.GaussianBlur(rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8), (0, 0), 25)
    src = TEMPLATE_112X96 * 20 + [1000, 600]  # a face ~1,900 px wide in a 12-megapixel photo
    matrix = similarity_transform(src, template.points)
    fast = warp_face(smooth, matrix, template).astype(float)
    reference = cv2.resize(smooth, (400, 300), interpolation=cv2.INTER_AREA)
    ref_matrix = similarity_transform(src / 10, template.points)
    direct = cv2.warpAffine(reference, ref_matrix, (96, 112), flags=cv2.INTER_LINEAR).astype(float)
    assert np.abs(fast - direct).mean() < 2.0
