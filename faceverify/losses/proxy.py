"""Proxy-NCA (Movshovitz-Attias et al., "No Fuss Distance Metric Learning using Proxies",
ICCV 2017).

One learnable proxy ``p_c`` per class; with L2-normalised embeddings and proxies and
``d(x, p) = ||x^ - p^||^2``::

    include_positive_in_denominator=True (default):
        L = -log( exp(-s d(x, p_y)) / sum_{z}      exp(-s d(x, p_z)) )   = softmax cross-entropy
    include_positive_in_denominator=False (the paper's Eq. 3):
        L = -log( exp(-s d(x, p_y)) / sum_{z != y} exp(-s d(x, p_z)) )

averaged over the batch. The default keeps the positive proxy in the denominator: the loss is
then bounded below by 0 and numerically tame, the form pytorch-metric-learning implements and
ProxyNCA++ (Teh et al., ECCV 2020) recommends; ``s`` is their inverse temperature (9 there).

Shapes: embeddings ``[B, D]``, labels ``[B]`` -> scalar; the ``[B, C]`` distance matrix to all
proxies is inherent to the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from faceverify.losses.distances import squared_euclidean


@dataclass
class ProxyNCAOptions:
    scale: float = 9.0
    include_positive_in_denominator: bool = True
    lr_multiplier: float = 1.0  # the proxies' learning rate over the base one (ProxyNCA++ uses a larger one)


class ProxyNCALoss(nn.Module):
    def __init__(self, num_classes: int, embedding_dim: int, scale: float = 9.0,
                 include_positive_in_denominator: bool = True):
        super().__init__()
        self.proxies = nn.Parameter(torch.randn(num_classes, embedding_dim))
        self.scale = scale
        self.include_positive_in_denominator = include_positive_in_denominator

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``-s * d(x, p_c)`` for every class: ``[B, C]``."""
        x = F.normalize(embeddings, dim=1)
        proxies = F.normalize(self.proxies.to(embeddings.dtype), dim=1)
        return -self.scale * squared_euclidean(x, proxies)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                indices_tuple: object = None) -> torch.Tensor:
        logits = self.logits(embeddings)
        if self.include_positive_in_denominator:
            return F.cross_entropy(logits, labels)
        positive = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
        others = logits.scatter(1, labels.unsqueeze(1), float("-inf"))
        return (torch.logsumexp(others, dim=1) - positive).mean()
