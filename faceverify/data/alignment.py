"""5-point similarity alignment onto a fixed template (Wen et al. 2016; SphereFace; ArcFace).

The transform is the least-squares similarity (rotation, uniform scale, translation; no
reflection) mapping the five detected landmarks ``p_i`` onto the template points ``q_i``:

    min_{s, R, t}  sum_i || s R p_i + t - q_i ||^2

solved in closed form (Umeyama, TPAMI 1991): with centred point sets P, Q,
``Sigma = Q^T P / n = U D V^T``, ``R = U diag(1, det(U V^T)) V^T``,
``s = trace(D S) / var(P)``, ``t = mean(q) - s R mean(p)``.
The crop is then produced by ``cv2.warpAffine`` with that 2x3 matrix.

Point order everywhere: left eye, right eye, nose tip, left mouth corner, right mouth corner,
"left" meaning the image's left (MTCNN's order).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from faceverify.errors import InvalidInputError

# (x, y) in pixels of a 96-wide, 112-high crop (Wen et al. 2016 / SphereFace).
TEMPLATE_112X96 = np.array(
    [
        [30.2946, 51.6963],
        [65.5318, 51.5014],
        [48.0252, 71.7366],
        [33.5493, 92.3655],
        [62.7299, 92.2041],
    ],
    dtype=np.float64,
)
# ArcFace 112x112: the same points moved 8 px right.
TEMPLATE_112X112 = TEMPLATE_112X96 + np.array([8.0, 0.0])

TEMPLATES: dict[str, tuple[np.ndarray, tuple[int, int]]] = {
    "112x96": (TEMPLATE_112X96, (112, 96)),
    "112x112": (TEMPLATE_112X112, (112, 112)),
}


@dataclass(frozen=True)
class Template:
    """Template points ``[5, 2]`` and crop size (height, width), possibly scaled."""

    points: np.ndarray
    size: tuple[int, int]
    name: str

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]


def get_template(name: str, scale: float = 1.0) -> Template:
    """``112x96`` or ``112x112``; ``scale`` > 1 gives larger crops of the same face geometry
    (``scale=2`` -> 224x192 with every template coordinate doubled)."""
    if name not in TEMPLATES:
        raise InvalidInputError(f"unknown template {name!r}; valid: {', '.join(TEMPLATES)}")
    if scale <= 0:
        raise InvalidInputError(f"template scale must be positive, got {scale}")
    points, (height, width) = TEMPLATES[name]
    return Template(points * scale, (int(round(height * scale)), int(round(width * scale))), name)


def template_for_input(input_size: tuple[int, int] | list[int]) -> str:
    """The template a network of this input ``(H, W)`` was trained on: 7:6 crops are Wen et al.'s
    112x96 (also at other scales, e.g. the cpu profile's 56x48), square crops ArcFace's 112x112."""
    height, width = (int(v) for v in input_size)
    if abs(height / width - 112 / 96) < 1e-3:
        return "112x96"
    if height == width:
        return "112x112"
    raise InvalidInputError(f"a network input of {height}x{width} matches neither template (112x96 or 112x112)")


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity mapping ``src[n, 2]`` onto ``dst[n, 2]`` -> ``M[2, 3]``.

    ``dst ~= src @ M[:, :2].T + M[:, 2]``. Needs at least two distinct source points.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need matching [n>=2, 2] point sets, got {src.shape} and {dst.shape}")
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
        raise InvalidInputError("landmarks contain NaN or inf")
    mean_src = src.mean(axis=0)
    mean_dst = dst.mean(axis=0)
    p = src - mean_src
    q = dst - mean_dst
    var_p = (p**2).sum() / len(src)
    if var_p <= 1e-12:
        raise InvalidInputError("landmarks are all at one point; cannot fit a similarity transform")
    sigma = q.T @ p / len(src)
    u, d, vt = np.linalg.svd(sigma)
    s = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[1, 1] = -1.0  # forbid reflections
    rotation = u @ s @ vt
    scale = np.trace(np.diag(d) @ s) / var_p
    translation = mean_dst - scale * rotation @ mean_src
    return np.hstack([scale * rotation, translation[:, None]])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``points[n, 2]`` with a 2x3 affine matrix."""
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def alignment_residual(landmarks: np.ndarray, template: Template) -> float:
    """Mean distance (crop pixels) between the transformed landmarks and the template points."""
    matrix = similarity_transform(landmarks, template.points)
    return float(np.linalg.norm(apply_transform(matrix, landmarks) - template.points, axis=1).mean())


def warp_face(image: np.ndarray, matrix: np.ndarray, template: Template) -> np.ndarray:
    """Crop ``template.size`` from ``image`` (uint8 [H, W, 3]) with ``matrix`` (bilinear).

    When the transform shrinks by more than 2x (a large face in a phone photo), bilinear
    sampling would alias; the region under the crop is first reduced with ``INTER_AREA`` so the
    remaining warp shrinks by at most 2x. Only that region is resized, so a 12-megapixel photo
    costs about as much as a small one.
    """
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.5:
        inverse = cv2.invertAffineTransform(matrix)
        corners = np.array(
            [[0, 0], [template.width, 0], [0, template.height], [template.width, template.height]],
            dtype=np.float64,
        )
        source = apply_transform(inverse, corners)
        margin = 2.0 / scale
        x0 = int(max(np.floor(source[:, 0].min() - margin), 0))
        y0 = int(max(np.floor(source[:, 1].min() - margin), 0))
        x1 = int(min(np.ceil(source[:, 0].max() + margin), image.shape[1]))
        y1 = int(min(np.ceil(source[:, 1].max() + margin), image.shape[0]))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            factor = 2.0 * scale
            region = image[y0:y1, x0:x1]
            new_w = max(int(round(region.shape[1] * factor)), 1)
            new_h = max(int(round(region.shape[0] * factor)), 1)
            region = cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA)
            fx, fy = new_w / (x1 - x0), new_h / (y1 - y0)
            # x_src = x_region / f + offset  =>  dst = A diag(1/f) x_region + (A offset + b)
            linear = matrix[:, :2] @ np.diag([1.0 / fx, 1.0 / fy])
            shift = matrix[:, :2] @ np.array([x0, y0], dtype=np.float64) + matrix[:, 2]
            image, matrix = region, np.hstack([linear, shift[:, None]])
    return cv2.warpAffine(
        image,
        matrix,
        (template.width, template.height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


