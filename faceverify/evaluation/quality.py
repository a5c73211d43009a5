"""Face image quality: the error-versus-reject curve (ERC) of a verifier with a quality score.

A quality score ``q`` per image (MagFace, Meng et al., CVPR 2021: the feature norm ``||x||``; it is
what ``faceverify embed`` writes as ``quality``). The ERC (Grother & Tabassi, "Performance of
biometric quality measures", IEEE TPAMI 2007) asks how much the errors fall when the worst images
are set aside:

1. a pair's quality is the lower of its two images', ``q_pair = min(q_a, q_b)``;
2. the threshold ``tau`` is fixed once, on all pairs, at the target false match rate: the smallest
   score ``tau`` with ``#{impostor scores > tau} / #impostors <= FMR`` (a pair matches when its
   score exceeds ``tau``);
3. for each fraction ``f`` the ``ceil(f P)`` pairs of lowest quality (of all ``P``) are rejected
   (ties broken by pair order) and ``FNMR(f)`` = the share of the remaining genuine pairs whose
   score is ``<= tau``.

A useful quality score makes ``FNMR(f)`` fall as ``f`` grows; a random one keeps it flat.
"""

from __future__ import annotations

import math

import numpy as np

REJECT_FRACTIONS = tuple(round(0.05 * i, 2) for i in range(11))  # 0 to 50% of the pairs


def fmr_threshold(scores: np.ndarray, same: np.ndarray, fmr: float) -> float:
    """The smallest impostor score ``tau`` (or ``-inf``) with at most ``fmr`` of the impostors above it."""
    impostors = np.sort(np.asarray(scores, dtype=np.float64)[~np.asarray(same, dtype=bool)])[::-1]
    allowed = int(math.floor(fmr * len(impostors) + 1e-9))  # impostors that may score above tau
    if allowed >= len(impostors):
        return -math.inf
    return float(impostors[allowed])


def error_versus_reject(scores: np.ndarray, same: np.ndarray, pair_quality: np.ndarray, fmr: float = 1e-3,
                        fractions: tuple[float, ...] = REJECT_FRACTIONS) -> dict:
    """``{fmr, threshold, reject_fractions, fnmr, genuine_kept}`` (see the module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    quality = np.asarray(pair_quality, dtype=np.float64)
    if not (scores.shape == same.shape == quality.shape):
        raise ValueError(f"scores {scores.shape}, same {same.shape} and quality {quality.shape} must match")
    threshold = fmr_threshold(scores, same, fmr)
    order = np.argsort(quality, kind="stable")  # lowest quality first, ties in pair order
    fnmr, kept_genuine = [], []
    for fraction in fractions:
        keep = np.ones(len(scores), dtype=bool)
        keep[order[: int(math.ceil(fraction * len(scores) - 1e-9))]] = False
        genuine = scores[keep & same]
        kept_genuine.append(int(genuine.size))
        fnmr.append(float((genuine <= threshold).mean()) if genuine.size else float("nan"))
    return {"fmr": fmr, "threshold": threshold, "reject_fractions": list(fractions), "fnmr": fnmr,
            "genuine_kept": kept_genuine}


def pair_quality(quality: np.ndarray, index_a: np.ndarray, index_b: np.ndarray) -> np.ndarray:
    """``min(q_a, q_b)`` of every pair."""
    quality = np.asarray(quality, dtype=np.float64)
    return np.minimum(quality[index_a], quality[index_b])
