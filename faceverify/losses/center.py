"""Center loss (Wen, Zhang, Li & Qiao, "A Discriminative Feature Learning Approach for Deep Face
Recognition", ECCV 2016).

    L_C = 1/2 * 1/B * sum_i || x_i - c_{y_i} ||^2                                   (Eq. 2, batch mean)

    dL_C/dx_i = (x_i - c_{y_i}) / B                                                 (Eq. 3)

Centers are updated by the paper's rule (Eq. 4, Algorithm 1) after each step, not by the
optimiser::

    delta_c_j = sum_i [y_i = j] (c_j - x_i) / (1 + n_j),     c_j <- c_j - alpha * delta_c_j

with ``n_j`` the number of samples of class ``j`` in the batch. ``update="sgd"`` instead makes
the centers an ``nn.Parameter`` trained by the optimiser with their own learning rate, as common
PyTorch ports do.

Only ``centers[labels]`` (``[B, D]``) is gathered; no ``[B, C]`` matrix is ever built, so the
cost does not grow with the number of classes (10,575 for CASIA-WebFace).

Distributed: with ``update="paper"`` the per-class sums and counts are all-reduced, so every
rank applies the update of the concatenated global batch and the centers stay identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

from faceverify.errors import InvalidInputError
from faceverify.losses.micro_batch import MicroBatchAware


@dataclass
class CenterOptions:
    alpha: float = 0.5  # center learning rate of the paper's update rule
    update: Literal["paper", "sgd"] = "paper"
    lr: float = 0.5  # with update="sgd": the optimiser learning rate of the centers


class CenterLoss(MicroBatchAware, nn.Module):
    """``loss(x [B, D], labels [B]) -> scalar``; call :meth:`update_centers` after each step
    (the :class:`~faceverify.losses.objective.Objective` does) when ``update="paper"``. Under
    gradient accumulation the update uses every micro-batch of the step (Eq. 4 on their union)."""

    def __init__(self, num_classes: int, embedding_dim: int, alpha: float = 0.5, update: str = "paper"):
        super().__init__()
        if update not in ("paper", "sgd"):
            raise InvalidInputError(f"unknown center update {update!r}; valid: paper, sgd")
        self.num_classes = num_classes
        self.alpha = alpha
        self.update = update
        initial = torch.zeros(num_classes, embedding_dim)
        if update == "paper":
            self.register_buffer("centers", initial)
        else:
            self.centers = nn.Parameter(initial)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # the step's (x, y) parts

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                indices_tuple: object = None) -> torch.Tensor:
        centers = self.centers[labels]
        if self.update == "paper":
            centers = centers.detach()
            if self.training:
                if self.first_micro_batch or self._pending is None:
                    self._pending = []
                self._pending.append((embeddings.detach(), labels.detach()))
        diff = embeddings - centers.to(embeddings.dtype)
        return 0.5 * (diff * diff).sum(dim=1).mean()

    @torch.no_grad()
    def update_centers(self) -> None:
        """Apply Eq. 4 with the batch of the last training forward (no-op otherwise)."""
        if self.update != "paper" or self._pending is None:
            return
        embeddings = torch.cat([x for x, _ in self._pending])
        labels = torch.cat([y for _, y in self._pending])
        self._pending = None
        centers = self.centers
        delta_sum = torch.zeros_like(centers)
        delta_sum.index_add_(0, labels, centers[labels] - embeddings.to(centers.dtype))
        counts = torch.bincount(labels, minlength=self.num_classes).to(centers.dtype)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(delta_sum)
            dist.all_reduce(counts)
        centers -= self.alpha * delta_sum / (1.0 + counts).unsqueeze(1)
