"""The margin heads of 2020-2022: CurricularFace, sub-center ArcFace, AdaFace, MagFace, SphereFace2.

Each owns its class weights ``W [C, D]`` like the heads of :mod:`faceverify.losses.classification`,
is called as ``loss(x [B, D], labels [B]) -> scalar`` and sets ``predictions [B]`` (the class with
the largest ``cos t_j``). With ``cos t_j = <x^, W^_j>`` and ``t_y`` the angle to the label's class:

* **CurricularFace** (Huang et al., CVPR 2020): the target logit is ArcFace's ``s cos(t_y + m)``
  (``s (cos t_y - m sin m)`` past ``t_y + m > pi``); a negative that is harder than the target,
  ``cos t_j > cos(t_y + m)``, becomes ``s cos t_j (t + cos t_j)`` (easy ones stay ``s cos t_j``),
  with ``t`` the running mean of ``cos t_y``: ``t <- 0.01 mean_i cos t_{y_i} + 0.99 t`` each
  training step, before the logits (``t`` starts at 0, a buffer saved with the head; not
  differentiated). Early in training ``t ~ 0`` shrinks the hard negatives' logits (easy samples
  first); as ``t`` grows they weigh more. Eq. 7-9 of the paper; s = 64, m = 0.5.
* **Sub-center ArcFace** (Deng et al., ECCV 2020): ``K`` sub-centers per class,
  ``W [C, K D]`` (row ``c`` holds its ``K`` centers side by side); ``cos t_j = max_k <x^, W^_{jk}>``,
  then ArcFace's margin. K = 3, s = 64, m = 0.5.
* **AdaFace** (Kim et al., CVPR 2022): the feature norm ``||x||`` (clipped to [0.001, 100],
  not differentiated) measured against the batch, ``z = clip(h (||x|| - mu) / (sigma + eps), -1, 1)``
  with ``mu, sigma`` running means (momentum 0.01; start 20 and 100) of the batch mean and
  unbiased standard deviation of the norms, buffers saved with the head. The target logit is
  ``s (cos(clip(t_y - m z, eps, pi - eps)) - (m + m z))``: an angular margin ``-m z`` and an
  additive one ``m + m z`` (Eq. 12), so high-norm (high-quality) images get ArcFace-like
  and low-norm ones CosFace-like margins. m = 0.4, h = 0.333, s = 64, eps = 1e-3.
* **MagFace** (Meng et al., CVPR 2021): ``a = clip(||x||, l_a, u_a)`` (differentiated), margin
  ``m(a) = l_m + (u_m - l_m) (a - l_a) / (u_a - l_a)``, target logit ``s cos(t_y + m(a))`` (with
  ArcFace's fallback), plus the regulariser ``lambda_g g(a)``, ``g(a) = a / u_a^2 + 1 / a``, batch mean
  (Eq. 4-6). The feature norm is the image's quality score (:meth:`MagFaceLoss.quality`).
  l_a = 10, u_a = 110, l_m = 0.45, u_m = 0.8, lambda_g = 35, s = 64.
* **SphereFace2** (Wen et al., ICLR 2022): binary, one classifier per class, no softmax over classes::

      L = lambda / r * log(1 + exp(-(r (g(cos t_y) - m) + b)))
          + (1 - lambda) / r * sum_{i != y} log(1 + exp(r (g(cos t_i) + m) + b))

  with ``g(z) = 2 ((z + 1) / 2)^t - 1`` (the similarity adjustment), a learned bias ``b`` and
  lambda = 0.7, r = 30, m = 0.4, t = 3 (SphereFace2-C). ``b`` starts where its gradient is zero for
  features orthogonal to every class (``cos = 0``): ``lambda sigma(-(a_y + b)) = (1 - lambda)(C - 1)
  sigma(a_i + b)`` with ``a_y = r (g(0) - m)``, ``a_i = r (g(0) + m)``, a quadratic in ``e^b`` solved here.
  Under Partial FC each rank sums the terms of its shard's sampled classes and the sums are added
  over the ranks (no softmax to complete); ``b`` is replicated and its gradient summed over the
  shards. With r < 1 each sampled negative that is no label of the step counts ``1 / r`` times
  (an unbiased estimate of the sum over every class, whose balance with the positive term the
  paper's lambda and ``b`` are set for); the step's labels are always sampled and count once.

Distributed: CurricularFace's ``t`` and AdaFace's norm statistics are batch statistics; with a
process group they are taken over the global batch (one all-reduce of a few numbers), so every
rank keeps the same buffers. Under Partial FC (which gathers the batch) CurricularFace also
all-reduces each row's ``cos(t_y + m)``, whose column lives on one rank only. With gradient
accumulation each micro-batch is a batch for these statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from faceverify.errors import InvalidInputError
from faceverify.losses.classification import (
    ArcFaceLoss,
    Best,
    _AdditiveMarginHead,
    _best,
    _cosine,
    _init_weight,
    _put_targets,
    _target_cosine,
)
from faceverify.losses.micro_batch import MicroBatchAware


def _grouped() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _summed(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over the ranks of the process group (as they are in one process)."""
    if _grouped():
        values = values.clone()
        dist.all_reduce(values)
    return values


def _arc_target(cos_y: torch.Tensor, m: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos(t_y + m), the target logit / s)``: ArcFace's margin with its fallback
    ``cos t_y - m sin m`` where ``t_y + m > pi``; ``m`` a number or one per row ``[B, 1]``."""
    m = torch.as_tensor(m, dtype=cos_y.dtype, device=cos_y.device)
    sin_y = (1.0 - cos_y * cos_y).clamp_min(1e-12).sqrt()
    with_margin = cos_y * torch.cos(m) - sin_y * torch.sin(m)
    return with_margin, torch.where(cos_y >= torch.cos(math.pi - m), with_margin, cos_y - m * torch.sin(m))


@dataclass
class CurricularFaceOptions:
    s: float = 64.0
    m: float = 0.5  # radians
    momentum: float = 0.01  # of the running mean t of the target cosine


class CurricularFaceLoss(_AdditiveMarginHead):
    """CurricularFace (see the module docstring)."""

    global_batch = False  # Partial FC sets True: its input is the gathered batch

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.5, momentum: float = 0.01):
        super().__init__(embedding_dim, num_classes, s, m)
        self.momentum = momentum
        self.register_buffer("t", torch.zeros(()))

    def margin_logits(self, embeddings: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                      bias: torch.Tensor | None = None) -> tuple[torch.Tensor, Best]:
        cos = _cosine(embeddings, weight)
        best = _best(cos)
        cos_y, plain = _target_cosine(cos, targets)
        has = (targets >= 0).unsqueeze(1)
        with_margin, target = _arc_target(cos_y, self.m)
        with torch.no_grad():
            threshold = torch.where(has, with_margin, torch.zeros_like(with_margin))
            if self.global_batch and _grouped():  # the target's column is on one rank: share its threshold
                threshold = _summed(threshold)
                known = _summed(has.to(cos.dtype)) > 0
            else:
                known = has
            if self.training:
                total = _summed(torch.stack([(cos_y * has).sum(), has.sum().to(cos_y.dtype)]))
                self.t.mul_(1.0 - self.momentum).add_(self.momentum * total[0] / total[1].clamp_min(1.0))
            hard = (cos > threshold) & known
        t = self.t.to(cos.dtype)
        modulated = torch.where(hard, cos * (t + cos), cos)
        # a row without its target here keeps its column 0 as modulated (not the plain cosine)
        kept = modulated.gather(1, targets.clamp_min(0).unsqueeze(1))
        return _put_targets(modulated * self.s, targets, target * self.s, kept * self.s), best


@dataclass
class SubCenterArcFaceOptions:
    s: float = 64.0
    m: float = 0.5  # radians
    sub_centers: int = 3


class SubCenterArcFaceLoss(ArcFaceLoss):
    """Sub-center ArcFace: ``K`` centers per class, the nearest one counts (see the module docstring)."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.5, sub_centers: int = 3):
        if sub_centers < 1:
            raise InvalidInputError(f"sub-center ArcFace needs sub_centers >= 1, got {sub_centers}")
        super().__init__(embedding_dim, 0, s, m)  # no [C, D] weight drawn only to be replaced
        self.sub_centers = int(sub_centers)
        weight = torch.empty(num_classes * self.sub_centers, embedding_dim)
        if num_classes:
            nn.init.xavier_uniform_(weight)
        self.weight = nn.Parameter(weight.reshape(num_classes, self.sub_centers * embedding_dim))

    def row_width(self, embedding_dim: int) -> int:
        """Width of one class's row of weights (Partial FC shards and samples these rows)."""
        return self.sub_centers * embedding_dim

    def class_cosine(self, embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        rows, dim = weight.shape[0], embeddings.shape[1]
        centers = weight.reshape(rows * self.sub_centers, dim)
        return _cosine(embeddings, centers).reshape(-1, rows, self.sub_centers).amax(dim=2)


@dataclass
class AdaFaceOptions:
    s: float = 64.0
    m: float = 0.4
    h: float = 0.333
    momentum: float = 0.01  # of the running batch mean and standard deviation of the feature norms


class AdaFaceLoss(_AdditiveMarginHead):
    """AdaFace (see the module docstring)."""

    global_batch = False  # Partial FC sets True: its input is the gathered batch
    eps = 1e-3

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.4, h: float = 0.333,
                 momentum: float = 0.01):
        super().__init__(embedding_dim, num_classes, s, m)
        self.h, self.momentum = h, momentum
        self.register_buffer("batch_mean", torch.full((), 20.0))
        self.register_buffer("batch_std", torch.full((), 100.0))

    def norm_scaler(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``z [B, 1]``: each feature norm against the running batch statistics (updated first in training)."""
        with torch.no_grad():
            norms = embeddings.norm(dim=1).clamp(0.001, 100.0)
            if self.training:
                sums = torch.stack([norms.sum(), (norms * norms).sum(), norms.new_tensor(float(len(norms)))])
                if not self.global_batch:
                    sums = _summed(sums)
                total, squares, count = sums
                mean = total / count
                std = ((squares - count * mean * mean).clamp_min(0.0) / (count - 1.0).clamp_min(1.0)).sqrt()
                self.batch_mean.mul_(1.0 - self.momentum).add_(self.momentum * mean.to(self.batch_mean.dtype))
                self.batch_std.mul_(1.0 - self.momentum).add_(self.momentum * std.to(self.batch_std.dtype))
            scaler = (norms - self.batch_mean.to(norms.dtype)) / (self.batch_std.to(norms.dtype) + self.eps)
            return (scaler * self.h).clamp(-1.0, 1.0).unsqueeze(1)

    def margin_logits(self, embeddings: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                      bias: torch.Tensor | None = None) -> tuple[torch.Tensor, Best]:
        z = self.norm_scaler(embeddings).to(embeddings.dtype)
        cos = _cosine(embeddings, weight)
        best = _best(cos)
        cos_y, plain = _target_cosine(cos, targets)
        theta = torch.acos(cos_y.clamp(-1.0 + self.eps, 1.0 - self.eps))
        angular = torch.cos((theta - self.m * z).clamp(self.eps, math.pi - self.eps))
        target = angular - (self.m + self.m * z)
        return _put_targets(cos * self.s, targets, target * self.s, plain * self.s), best


@dataclass
class MagFaceOptions:
    s: float = 64.0
    lower_norm: float = 10.0  # l_a
    upper_norm: float = 110.0  # u_a
    lower_margin: float = 0.45  # l_m
    upper_margin: float = 0.8  # u_m
    lambda_g: float = 35.0  # weight of the magnitude regulariser g(a)


class MagFaceLoss(_AdditiveMarginHead):
    """MagFace (see the module docstring): ``loss = CE(margin logits) + lambda_g mean g(a)``."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, lower_norm: float = 10.0,
                 upper_norm: float = 110.0, lower_margin: float = 0.45, upper_margin: float = 0.8,
                 lambda_g: float = 35.0):
        if not 0 < lower_norm < upper_norm:
            raise InvalidInputError(f"MagFace needs 0 < lower_norm < upper_norm, got {lower_norm}, {upper_norm}")
        super().__init__(embedding_dim, num_classes, s, lower_margin)
        self.lower_norm, self.upper_norm = lower_norm, upper_norm
        self.lower_margin, self.upper_margin, self.lambda_g = lower_margin, upper_margin, lambda_g

    def magnitude(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``a [B, 1]``: the feature norm clipped to ``[l_a, u_a]`` (differentiable inside)."""
        return embeddings.norm(dim=1, keepdim=True).clamp(self.lower_norm, self.upper_norm)

    def margin(self, magnitude: torch.Tensor) -> torch.Tensor:
        slope = (self.upper_margin - self.lower_margin) / (self.upper_norm - self.lower_norm)
        return slope * (magnitude - self.lower_norm) + self.lower_margin

    def regulariser(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``mean_i g(a_i)``, ``g(a) = a / u_a^2 + 1 / a``."""
        a = self.magnitude(embeddings)
        return (a / self.upper_norm**2 + 1.0 / a).mean()

    @staticmethod
    def quality(embeddings: torch.Tensor) -> torch.Tensor:
        """MagFace's quality score of each image: its feature norm ``[B]``."""
        return embeddings.norm(dim=1)

    def margin_logits(self, embeddings: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                      bias: torch.Tensor | None = None) -> tuple[torch.Tensor, Best]:
        m = self.margin(self.magnitude(embeddings))
        cos = _cosine(embeddings, weight)
        best = _best(cos)
        cos_y, plain = _target_cosine(cos, targets)
        _, target = _arc_target(cos_y, m)
        return _put_targets(cos * self.s, targets, target * self.s, plain * self.s), best

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices_tuple: object = None) -> torch.Tensor:
        return super().forward(embeddings, labels) + self.lambda_g * self.regulariser(embeddings)


@dataclass
class SphereFace2Options:
    lam: float = 0.7  # lambda: the weight of the positive term
    r: float = 30.0  # scale
    m: float = 0.4  # additive margin (SphereFace2-C)
    t: float = 3.0  # similarity adjustment g(z) = 2 ((z + 1) / 2)^t - 1


class SphereFace2Loss(MicroBatchAware, nn.Module):
    """SphereFace2: one-vs-all binary classifiers (see the module docstring)."""

    def __init__(self, embedding_dim: int, num_classes: int, lam: float = 0.7, r: float = 30.0, m: float = 0.4,
                 t: float = 3.0):
        super().__init__()
        if not 0 < lam < 1:
            raise InvalidInputError(f"SphereFace2's lambda must lie in (0, 1), got {lam}")
        self.weight = _init_weight(num_classes, embedding_dim)
        self.lam, self.r, self.m, self.t = lam, r, m, t
        self.bias = nn.Parameter(torch.full((), self.initial_bias(num_classes, lam, r, m, t)))

    @staticmethod
    def initial_bias(num_classes: int, lam: float, r: float, m: float, t: float) -> float:
        """``b`` whose gradient is zero when every ``cos = 0``: ``A B u^2 + (1 - z) B u - z = 0`` in
        ``u = e^b`` with ``A = e^{a_y}``, ``B = e^{a_i}``, ``z = lambda / ((1 - lambda)(C - 1))``."""
        if num_classes < 2:
            return 0.0
        g0 = 2.0 * 0.5**t - 1.0
        a_y, a_i = r * (g0 - m), r * (g0 + m)
        z = lam / ((1.0 - lam) * (num_classes - 1))
        # divided through by A B = e^{a_y + a_i}: u^2 + (1 - z) e^{-a_y} u - z e^{-a_y - a_i} = 0
        p, q = (1.0 - z) * math.exp(-a_y), z * math.exp(-a_y - a_i)
        u = 2.0 * q / (p + math.sqrt(p * p + 4.0 * q))  # the positive root, without cancellation
        return math.log(u)

    def similarity(self, cos: torch.Tensor) -> torch.Tensor:
        return 2.0 * ((cos + 1.0) / 2.0).pow(self.t) - 1.0

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return _cosine(embeddings, self.weight)

    one_vs_all = True  # Partial FC sums its per-class terms over the shards instead of a softmax

    def class_terms(self, embeddings: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                    bias: torch.Tensor) -> tuple[torch.Tensor, Best]:
        """``(per-class loss [B, S], best)`` over the columns of ``weight [S, D]``: ``targets [B]`` is
        each row's positive column (``-1``: its class is not among them, every column a negative).
        The loss is ``sum over columns, mean over rows, / r`` of these terms."""
        cos = _cosine(embeddings, weight)
        best = _best(cos)
        columns = torch.arange(cos.shape[1], device=cos.device)
        positive = columns.unsqueeze(0) == targets.unsqueeze(1)
        g = self.similarity(cos.clamp(-1.0, 1.0))
        margin = torch.where(positive, g.new_tensor(-self.m), g.new_tensor(self.m))  # in g's dtype, not float32
        z = self.r * (g + margin) + bias.to(cos.dtype)
        zero = torch.zeros((), dtype=z.dtype, device=z.device)  # log(1 + e^v) = logaddexp(v, 0), exact for any v
        return torch.where(positive, self.lam * torch.logaddexp(-z, zero),
                           (1.0 - self.lam) * torch.logaddexp(z, zero)), best

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices_tuple: object = None) -> torch.Tensor:
        per_class, (_, self.predictions) = self.class_terms(embeddings, self.weight, labels, self.bias)
        return per_class.sum(dim=1).mean() / self.r
