"""Classification losses: softmax and the margin heads CosFace, ArcFace and SphereFace.

Each owns its class weights ``W [C, D]`` (so the Objective, optimiser, checkpoints and DDP see
them), is called as ``loss(embeddings [B, D], labels [B]) -> scalar`` (cross-entropy, batch
mean) and exposes ``logits(embeddings) -> [B, C]`` without margin. After each forward,
``predictions [B]`` holds the class each image would be given without margin (the argmax of
logits already computed), so the trainer can count training accuracy without a second
``[B, C]`` product and without a host synchronisation.

With ``cos t_j = <x^, W^_j>`` (unit vectors), the target-class logit is::

    softmax     W_y . x + b_y                         (Wen et al. 2016: the softmax supervision)
    CosFace     s (cos t_y - m)                       (Wang et al., CVPR 2018; m = 0.35, s = 64)
    ArcFace     s cos(t_y + m)   if t_y + m <= pi     (Deng et al., CVPR 2019; m = 0.5 rad, s = 64)
                s (cos t_y - m sin m)   otherwise     (keeps the logit decreasing in t_y)
    SphereFace  ||x|| (lam cos t_y + psi(t_y)) / (1 + lam),
                psi(t) = (-1)^k cos(m t) - 2k  for t in [k pi/m, (k+1) pi/m]
                                                      (Liu et al., CVPR 2017; m = 4)

and the other classes keep ``s cos t_j`` (``||x|| cos t_j`` for SphereFace). SphereFace's
``lam = max(lambda_min, base (1 + gamma it)^(-power))`` anneals from plain softmax to the margin
over training iterations ``it`` (the released code: base 1000, gamma 0.12, power 1, min 5).
Angular margins are in radians.

Every head computes its logits through ``margin_logits(embeddings [B, D], weight [S, D], targets [B],
bias [S] | None) -> (logits [B, S], (best score [B], best column [B]))``, where ``targets`` are
columns of ``weight`` (``-1``: the row's class is not among these weights, so no margin in this
row). The head's own forward passes all its weights and the labels; Partial FC
(:mod:`faceverify.losses.partial_fc`) passes the rows of its shard it sampled, so both use the
same margin arithmetic. The best score is the row's maximum without margin (the logit for
softmax, ``cos t`` for the others) and its column: the prediction.

pytorch-metric-learning's ``CosFaceLoss`` and ``ArcFaceLoss`` (ArcFace margin given in degrees,
weights stored as ``[D, C]``) compute the same values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from faceverify.errors import InvalidInputError
from faceverify.losses.micro_batch import MicroBatchAware


def _init_weight(num_classes: int, embedding_dim: int) -> nn.Parameter:
    weight = torch.empty(num_classes, embedding_dim)
    if num_classes:  # a head built for its margin rule only (Partial FC holds the weights) has none
        nn.init.xavier_uniform_(weight)
    return nn.Parameter(weight)


Best = tuple[torch.Tensor, torch.Tensor]  # (score [B], column [B]) of each row's best class, without margin


def _best(scores: torch.Tensor) -> Best:
    """Each row's largest score without margin and its column ``[B, S] -> ([B], [B])`` (no host sync)."""
    with torch.no_grad():
        if scores.shape[1] == 0:  # a Partial FC shard that sampled no class this step
            rows = scores.shape[0]
            return (torch.full((rows,), -math.inf, dtype=scores.dtype, device=scores.device),
                    torch.zeros(rows, dtype=torch.long, device=scores.device))
        return scores.detach().max(dim=1)


def _put_targets(logits: torch.Tensor, targets: torch.Tensor, target_logit: torch.Tensor,
                 plain_logit: torch.Tensor) -> torch.Tensor:
    """``logits [B, S]`` with ``target_logit [B, 1]`` written in place at each row's target column;
    rows with ``targets < 0`` get ``plain_logit`` (their own logit at column 0) back. One ``[B, S]``
    tensor, no copies, no host sync."""
    has = (targets >= 0).unsqueeze(1)
    return logits.scatter_(1, targets.clamp_min(0).unsqueeze(1), torch.where(has, target_logit, plain_logit))


def _target_cosine(cos: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos t_y [B, 1]`` at each row's target column (column 0 where there is none), clamped to
    [-1, 1] for the margin, and as it is (written back where a row has no target)."""
    plain = cos.gather(1, targets.clamp_min(0).unsqueeze(1))
    return plain.clamp(-1.0, 1.0), plain


@dataclass
class SoftmaxOptions:
    bias: bool = True


class SoftmaxLoss(nn.Module):
    """Linear classifier + cross-entropy: ``L = -log softmax(W x + b)_y``."""

    def __init__(self, embedding_dim: int, num_classes: int, bias: bool = True):
        super().__init__()
        self.linear = nn.Linear(embedding_dim, num_classes, bias=bias)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.linear(embeddings)

    def margin_logits(self, embeddings: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                      bias: torch.Tensor | None = None) -> tuple[torch.Tensor, Best]:
        logits = F.linear(embeddings, weight.to(embeddings.dtype), None if bias is None else bias.to(embeddings.dtype))
        return logits, _best(logits)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices_tuple: object = None) -> torch.Tensor:
        logits, (_, self.predictions) = self.margin_logits(embeddings, self.linear.weight, labels, self.linear.bias)
        return F.cross_entropy(logits, labels)


def _cosine(embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.normalize(embeddings, dim=1) @ F.normalize(weight.to(embeddings.dtype), dim=1).T


class _AdditiveMarginHead(nn.Module):
    """Normalised class weights ``W [C, D]``, scale ``s`` and margin ``m`` shared by CosFace and
    ArcFace; logits without margin are ``s cos t``."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float, m: float):
        super().__init__()
        self.weight = _init_weight(num_classes, embedding_dim)
        self.s, self.m = s, m

    def class_cosine(self, embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``cos t [B, S]`` of each embedding with each class's row of ``weight``."""
        return _cosine(embeddings, weight)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.s * self.class_cosine(embeddings, self.weight)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices_tuple: object = None) -> torch.Tensor:
        # predictions: before the margin, the class a test would predict
        logits, (_, self.predictions) = self.margin_logits(embeddings, self.weight, labels)
        return F.cross_entropy(logits, labels)


@dataclass
class CosFaceOptions:
    s: float = 64.0
    m: float = 0.35


class CosFaceLoss(_AdditiveMarginHead):
    """Large margin cosine loss (CosFace)."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.35):
        super().__init__(embedding_dim, num_classes, s, m)

    def margin_logits(self, embeddings: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                      bias: torch.Tensor | None = None) -> tuple[torch.Tensor, Best]:
        cos = _cosine(embeddings, weight)
        best = _best(cos)
        cos_y, plain = _target_cosine(cos, targets)
        return _put_targets(cos * self.s, targets, (cos_y - self.m) * self.s, plain * self.s), best


@dataclass
class ArcFaceOptions:
    s: float = 64.0
    m: float = 0.5  # radians
    margin_warmup_iters: int = 0  # the margin grows linearly from 0 to m over these training iterations


class ArcFaceLoss(MicroBatchAware, _AdditiveMarginHead):
    """Additive angular margin loss (ArcFace), with the fallback where ``t_y + m > pi``.

    ``margin_warmup_iters``: the margin is ``m * min(1, it / warmup)`` at training iteration ``it``
    (counted by the loss, once per optimiser step, saved in checkpoints), so a small network first
    learns to classify before the margin bites.
    """

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.5,
                 margin_warmup_iters: int = 0):
        super().__init__(embedding_dim, num_classes, s, m)
        self.margin_warmup_iters = margin_warmup_iters
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def current_margin(self) -> torch.Tensor:
        """The margin now, a 0-d tensor on the loss's device (no host sync)."""
        if not self.margin_warmup_iters:
            return torch.full((), self.m, device=self.iteration.device)
        ramp = (self.iteration.double() / self.margin_warmup_iters).clamp_max(1.0)
        return (self.m * ramp).float()

    def margin_logits(self, embeddings: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                      bias: torch.Tensor | None = None) -> tuple[torch.Tensor, Best]:
        m = self.current_margin().to(embeddings.dtype)
        if self.training and self.last_micro_batch:  # one count per optimiser step
            self.iteration += 1
        cos = self.class_cosine(embeddings, weight)
        best = _best(cos)
        cos_y, plain = _target_cosine(cos, targets)
        # cos(t + m) = cos t cos m - sin t sin m, with sin t >= 0 on [0, pi]; the clamp keeps the
        # square root's gradient finite at |cos t| = 1 (acos would give an infinite one)
        sin_y = (1.0 - cos_y * cos_y).clamp_min(1e-12).sqrt()
        with_margin = cos_y * torch.cos(m) - sin_y * torch.sin(m)
        # t + m <= pi  <=>  cos t >= cos(pi - m)
        target = torch.where(cos_y >= torch.cos(math.pi - m), with_margin, cos_y - m * torch.sin(m))
        return _put_targets(cos * self.s, targets, target * self.s, plain * self.s), best  # in place: one [B, S] tensor


@dataclass
class SphereFaceOptions:
    m: int = 4
    base: float = 1000.0
    gamma: float = 0.12
    power: float = 1.0
    lambda_min: float = 5.0


def chebyshev(cos: torch.Tensor, m: int) -> torch.Tensor:
    """``cos(m t)`` from ``cos t`` (Chebyshev polynomial ``T_m``)."""
    previous, current = torch.ones_like(cos), cos
    if m == 0:
        return previous
    for _ in range(m - 1):
        previous, current = current, 2.0 * cos * current - previous
    return current


class SphereFaceLoss(MicroBatchAware, nn.Module):
    """Angular softmax (A-Softmax) with the annealed blend of the released SphereFace code."""

    def __init__(self, embedding_dim: int, num_classes: int, m: int = 4, base: float = 1000.0,
                 gamma: float = 0.12, power: float = 1.0, lambda_min: float = 5.0):
        super().__init__()
        if m < 1:
            raise InvalidInputError(f"SphereFace margin m must be a positive integer, got {m}")
        self.weight = _init_weight(num_classes, embedding_dim)
        self.m, self.base, self.gamma, self.power, self.lambda_min = int(m), base, gamma, power, lambda_min
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def current_lambda(self) -> torch.Tensor:
        """lambda = max(lambda_min, base * (1 + gamma * iteration) ** -power), on the device (no sync)."""
        decayed = self.base * (1.0 + self.gamma * self.iteration.double()) ** (-self.power)
        return decayed.clamp_min(self.lambda_min).float()

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings.norm(dim=1, keepdim=True) * _cosine(embeddings, self.weight)

    def margin_logits(self, embeddings: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                      bias: torch.Tensor | None = None) -> tuple[torch.Tensor, Best]:
        lam = self.current_lambda()
        if self.training and self.last_micro_batch:  # one count per optimiser step
            self.iteration += 1
        cos = _cosine(embeddings, weight)
        best = _best(cos)  # argmax of |x| cos t is argmax of cos t
        cos_y, plain = _target_cosine(cos, targets)
        with torch.no_grad():
            k = torch.floor(self.m * torch.acos(cos_y) / math.pi).clamp(0, self.m - 1)
        sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
        psi = sign * chebyshev(cos_y, self.m) - 2.0 * k
        lam = lam.to(cos_y.dtype)
        blended = (lam * cos_y + psi) / (1.0 + lam)
        norms = embeddings.norm(dim=1, keepdim=True)
        return _put_targets(norms * cos, targets, norms * blended, norms * plain), best

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices_tuple: object = None) -> torch.Tensor:
        logits, (_, self.predictions) = self.margin_logits(embeddings, self.weight, labels)
        return F.cross_entropy(logits, labels)
