"""Pairwise distances and similarities between embeddings, safe at zero distance.

Names say what is computed (DESIGN.md "Units"):

* ``squared_euclidean(x, y)[i, j] = ||x_i - y_j||^2``  (>= 0, 0 on the diagonal of x vs x)
* ``euclidean(x, y)[i, j] = ||x_i - y_j||``  (the square root is taken only where the squared
  distance is positive, so identical embeddings give a zero distance with a zero, not NaN,
  gradient)
* ``cosine_similarity(x, y)[i, j] = <x_i, y_j> / (||x_i|| ||y_j||)``  (higher = more similar)

Shapes: ``x [B, D]``, ``y [B', D]`` (default ``y = x``) -> ``[B, B']``. The squared distance is
computed as ``|x|^2 + |y|^2 - 2 x y^T`` (one matmul); for very large norms use float64.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from faceverify.errors import InvalidInputError

_TINY = 1e-12


def squared_euclidean(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    same = y is None
    y = x if y is None else y
    sq = (x * x).sum(dim=1, keepdim=True) + (y * y).sum(dim=1).unsqueeze(0) - 2.0 * x @ y.T
    sq = sq.clamp_min(0.0)
    if same:
        # exact zeros on the diagonal (cancellation would leave tiny positive values)
        sq = sq * (1.0 - torch.eye(x.shape[0], dtype=sq.dtype, device=sq.device))
    return sq


def euclidean(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    sq = squared_euclidean(x, y)
    positive = sq > _TINY
    # sqrt only where positive: d/dx sqrt(u) at u = 0 is infinite and would become NaN
    return torch.where(positive, sq.clamp_min(_TINY).sqrt(), torch.zeros_like(sq))


def cosine_similarity(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    xn = F.normalize(x, dim=1, eps=_TINY)
    yn = xn if y is None else F.normalize(y, dim=1, eps=_TINY)
    return xn @ yn.T


DISTANCES: dict[str, Callable[..., torch.Tensor]] = {
    "euclidean": euclidean,
    "squared_euclidean": squared_euclidean,
    "cosine_similarity": cosine_similarity,
}


def get_distance(name: str) -> Callable[..., torch.Tensor]:
    if name not in DISTANCES:
        raise InvalidInputError(f"unknown distance {name!r}; valid: {', '.join(DISTANCES)}")
    return DISTANCES[name]


def same_label_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positive [B, B], negative [B, B])`` bool masks; positives exclude the diagonal."""
    equal = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return equal & ~eye, ~equal
