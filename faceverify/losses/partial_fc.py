"""Partial FC: class weights sharded over the ranks, a sample of the classes each step, and the
softmax completed across ranks.

An, Zhu, Xiao, Wu, Zhang, Deng, Guo, Zhao, Fu, "Killing Two Birds with One Stone: Efficient and
Robust Training of Face Recognition CNNs by Partial FC", CVPR 2022.

With ``W`` processes (torchrun), rank ``k`` holds rows ``[start_k, stop_k)`` of the ``C x D`` class
weights (``C // W`` each, the first ``C mod W`` ranks one more: :func:`class_shard`). Each step:

1. :func:`gather_batch`: the embeddings ``X [N, D]`` and labels ``y [N]`` of every rank are gathered
   (``N`` = the global batch, in rank order); the gradient of ``X`` flows back to each rank's rows.
2. rank ``k`` samples the classes of its shard: every class that is a label of ``y`` (a positive),
   and each other class ``c`` with probability ``r`` (``loss.partial_fc.sample_rate``), kept when
   ``u_t(c) < r`` with ``u_t(c)`` a uniform number hashed from (seed, step ``t``, ``c``) alone
   (:func:`class_uniforms`). The sample depends neither on the world size nor on the rank, so a run
   resumed on another number of processes draws the same classes as an uninterrupted one; the
   sample holds ``P_k + r (C_k - P_k)`` classes on average. (insightface's ``partial_fc_v2`` draws a
   fixed count per shard instead, which depends on the sharding.)
3. ``z [N, S_k]``: the head's margin rule (softmax, CosFace, ArcFace, SphereFace:
   :mod:`faceverify.losses.classification`) on the ``S_k`` sampled rows, the margin at each positive.
4. :class:`DistributedCrossEntropy` completes the softmax over all ranks' columns::

       L = 1/N sum_i [ log sum_k sum_j exp(z_ij - m_i) + m_i - z_{i,y_i} ]

   with ``m_i`` the row maximum over every rank (all-reduce MAX), the sums of exponentials and the
   target logit all-reduced (SUM); ``dL/dz_ij = (p_ij - [j = y_i]) / N`` on each rank's own columns.
5. after the optimiser step, :meth:`PartialFC.apply_update` moves the sampled rows by SGD with
   momentum and weight decay (the rule of ``torch.optim.SGD``); rows not sampled keep their weights
   *and* their momentum (a dense optimiser would decay a zero-gradient row's momentum and move it).

``r = 1`` samples every class: the full head, sharded. One process is a world of one: the same
sampling without sharding. Center loss centers shard the same way (:class:`ShardedCenterLoss`);
only the batch's classes take part, so nothing is sampled.

DDP: the Partial FC terms are means over the *global* batch on every rank, while DDP averages the
backbone's gradients over ranks (right for terms computed on each rank's own batch).
:func:`gather_batch` therefore scales the gradient flowing back into a rank's embeddings by
``grad_scale`` (the world size under DDP), so the backbone gets the exact gradient of the global
mean. The sharded tensors take no part in DDP (:meth:`Objective.ddp_ignored`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn

from faceverify.config import ConfigError, check_range
from faceverify.losses.micro_batch import MicroBatchAware

BLOCK_ROWS = 8192  # rows initialised from one random stream: the initial weights do not depend on the sharding
_MASK64 = (1 << 64) - 1


@dataclass
class PartialFCOptions:
    """``sample_rate``: 0 = off (every rank holds a replicated copy of the head, as plain DDP);
    ``0 < r <= 1``: the classification heads and the center loss's centers are sharded over the
    ranks and each class other than the batch's is sampled with probability ``r`` each step."""

    sample_rate: float = 0.0

    def __post_init__(self) -> None:
        check_range("partial_fc.sample_rate", self.sample_rate, 0, 1)

    @property
    def enabled(self) -> bool:
        return self.sample_rate > 0


@dataclass(frozen=True)
class ClassShard:
    """Rows ``[start, stop)`` of ``num_classes`` held by ``rank`` of ``world_size``."""

    start: int
    stop: int
    num_classes: int
    rank: int = 0
    world_size: int = 1

    @property
    def size(self) -> int:
        return self.stop - self.start


def class_shard(num_classes: int, world_size: int = 1, rank: int = 0) -> ClassShard:
    """Rank ``rank``'s share of ``num_classes``: ``C // W`` rows, one more on the first ``C mod W`` ranks."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    if num_classes < world_size:
        raise ConfigError(f"Partial FC shards {num_classes} classes over {world_size} processes: every process "
                          "needs at least one class")
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return ClassShard(start, start + base + (1 if rank < extra else 0), num_classes, rank, world_size)


@dataclass(frozen=True)
class RowSGD:
    """The optimiser settings the sampled rows are moved with (the run's ``optim`` section)."""

    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False


def _splitmix64(value: int) -> int:
    """The splitmix64 finaliser on a Python int (the seed and step keys)."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 tensors holding 64-bit patterns."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def class_uniforms(seed: int, step: int, start: int, stop: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``u_t(c)`` for classes ``c`` in ``[start, stop)``: float64 ``[stop - start]`` in ``[0, 1)``, a
    splitmix64 hash of (seed, step, c) in int64 arithmetic, so the same on every device and shard."""
    key = _splitmix64(_splitmix64(seed & _MASK64) ^ (step & _MASK64))
    z = torch.arange(start, stop, dtype=torch.int64, device=device) ^ _signed(key)
    z = z + _signed(0x9E3779B97F4A7C15)
    z = (z ^ _shift_right(z, 30)) * _signed(0xBF58476D1CE4E5B9)
    z = (z ^ _shift_right(z, 27)) * _signed(0x94D049BB133111EB)
    z = z ^ _shift_right(z, 31)
    return _shift_right(z, 11).double() * (2.0 ** -53)


def block_uniform_rows(seed: int, stream: int, start: int, stop: int, columns: int, bound: float) -> torch.Tensor:
    """Rows ``[start, stop)`` of a ``U(-bound, bound)`` matrix drawn in blocks of :data:`BLOCK_ROWS`
    rows, each block from its own generator seeded by (seed, stream, block): any sharding of the
    rows gets the same values (float32 ``[stop - start, columns]``, on the CPU)."""
    parts = []
    for block in range(start // BLOCK_ROWS, (max(stop, start + 1) - 1) // BLOCK_ROWS + 1):
        generator = torch.Generator().manual_seed(_splitmix64((seed * 1_000_003 + stream) * 1_000_003 + block) >> 1)
        values = torch.empty(BLOCK_ROWS, columns).uniform_(-bound, bound, generator=generator)
        lo, hi = max(start, block * BLOCK_ROWS), min(stop, (block + 1) * BLOCK_ROWS)
        parts.append(values[lo - block * BLOCK_ROWS : hi - block * BLOCK_ROWS])
    return torch.cat(parts) if parts else torch.empty(0, columns)


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``scale`` on the way back."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad * ctx.scale, None


class _SumOverRanks(torch.autograd.Function):
    """``partial -> sum of every rank's partial`` (all-reduce) forward; the gradient passes to the
    local partial unchanged, as :class:`DistributedCrossEntropy` gives each rank the gradient of
    the whole loss for its own columns."""

    @staticmethod
    def forward(ctx, partial: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = partial.detach().clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


class _SumGradientOverRanks(torch.autograd.Function):
    """Identity forward; the gradient all-reduced (summed) over the ranks on the way back: a
    replicated parameter whose every rank's loss holds only that rank's part of the whole."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def gather_batch(embeddings: torch.Tensor, labels: torch.Tensor, world_size: int,
                 grad_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's ``embeddings [B, D]`` and ``labels [B]`` in rank order -> ``([W B, D], [W B])``,
    through ``torch.distributed.nn``'s differentiable all-gather (each rank's gradient is the sum
    of every rank's, times ``grad_scale``). A world of one returns its inputs."""
    if world_size == 1:
        return embeddings, labels
    if grad_scale != 1.0:
        embeddings = _ScaleGradient.apply(embeddings, grad_scale)
    gathered = torch.cat(dist_nn.all_gather(embeddings.contiguous()))
    parts = [torch.empty_like(labels) for _ in range(world_size)]
    dist.all_gather(parts, labels.contiguous())
    return gathered, torch.cat(parts)


class DistributedCrossEntropy(torch.autograd.Function):
    """``(logits [N, S_k], targets [N], world_size) -> L`` (0-d), the cross-entropy of the softmax
    over the columns of every rank; ``targets`` are this rank's columns (``-1``: the row's class is
    on another rank). Each rank returns the same value; its gradient is for its own columns."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, world_size: int) -> torch.Tensor:  # type: ignore[override]
        distributed = world_size > 1
        rows = logits.shape[0]
        has = targets >= 0
        with torch.no_grad():
            if logits.shape[1]:
                row_max = logits.max(dim=1).values
            else:  # this rank sampled no class this step
                row_max = torch.full((rows,), -math.inf, dtype=logits.dtype, device=logits.device)
            if distributed:
                dist.all_reduce(row_max, op=dist.ReduceOp.MAX)
            probabilities = (logits - row_max.unsqueeze(1)).exp_()
            sum_exp = probabilities.sum(dim=1)
            target_logit = torch.where(has, logits.gather(1, targets.clamp_min(0).unsqueeze(1)).squeeze(1),
                                       torch.zeros((), dtype=logits.dtype, device=logits.device))
            if distributed:
                reduced = torch.stack([sum_exp, target_logit])
                dist.all_reduce(reduced)
                sum_exp, target_logit = reduced[0], reduced[1]
            probabilities /= sum_exp.unsqueeze(1)
            loss = (sum_exp.log() + row_max - target_logit).mean()
        ctx.save_for_backward(probabilities, targets)
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        probabilities, targets = ctx.saved_tensors
        grad = probabilities.clone()
        has = (targets >= 0).unsqueeze(1).to(grad.dtype)
        grad.scatter_add_(1, targets.clamp_min(0).unsqueeze(1), -has)
        return grad * (grad_output / probabilities.shape[0]), None, None


def _sgd_rows(weight: torch.Tensor, momentum: torch.Tensor, rows: torch.Tensor | None, current: torch.Tensor,
              grad: torch.Tensor, lr: float, sgd: RowSGD) -> None:
    """``torch.optim.SGD``'s update (weight decay, momentum without dampening, optional Nesterov) on
    ``rows`` of ``weight`` and ``momentum`` (all rows when ``None``); ``current`` = those rows' weights."""
    grad = grad.add(current, alpha=sgd.weight_decay) if sgd.weight_decay else grad
    if rows is None:
        momentum.mul_(sgd.momentum).add_(grad)
        step = grad.add(momentum, alpha=sgd.momentum) if sgd.nesterov else momentum
        weight.sub_(step, alpha=lr)
        return
    moved = momentum.index_select(0, rows).mul_(sgd.momentum).add_(grad)
    momentum.index_copy_(0, rows, moved)
    step = grad.add(moved, alpha=sgd.momentum) if sgd.nesterov else moved
    weight.index_copy_(0, rows, current - lr * step)


class PartialFC(MicroBatchAware, nn.Module):
    """One classification term over a shard of the classes: ``head(X [N, D], y [N]) -> L`` on the
    gathered batch (:func:`gather_batch`), then :meth:`apply_update` after the optimiser step.

    ``rule`` is the term's loss module built without classes (its margin arithmetic and counters,
    e.g. ArcFace's margin warm-up). The shard's ``weight [C_k, D]`` (and ``bias [C_k]`` for softmax)
    and their momentum are buffers: no optimiser and no DDP sees them. After a forward in training,
    ``predictions [B]`` holds, for this rank's own rows, the class with the best score without
    margin over the sampled classes of every rank (the full argmax when ``r = 1``).

    Gradient accumulation (``k`` micro-batches a step): :meth:`set_step_labels` gives the step's
    whole gathered batch of labels first, so the sample holds the positives of every micro-batch;
    all ``k`` forwards use that one sample and the same leaf rows, whose gradients add up, and the
    sample's step moves once — as one forward of the whole batch would.
    """

    SHARDED = ("weight", "weight_momentum", "bias", "bias_momentum")  # buffers whose rows are classes

    def __init__(self, rule: nn.Module, shard: ClassShard, embedding_dim: int, sample_rate: float, seed: int,
                 bias: bool = False, stream: int = 0):
        super().__init__()
        check_range("partial_fc.sample_rate", sample_rate, 0, 1, strict_min=True)
        self.rule = rule.requires_grad_(False)
        # a one-vs-all rule (SphereFace2): terms summed over the shards, its replicated bias trained
        self.one_vs_all = bool(getattr(rule, "one_vs_all", False))
        if self.one_vs_all:
            with torch.no_grad():  # the rule was built without classes: its initial bias is the full head's
                rule.bias.fill_(rule.initial_bias(shard.num_classes, rule.lam, rule.r, rule.m, rule.t))
            rule.bias.requires_grad_(True)
        if hasattr(rule, "global_batch"):  # its batch statistics: the gathered batch is already global
            rule.global_batch = True
        self.shard, self.sample_rate, self.seed = shard, float(sample_rate), int(seed)
        # a class's row: D weights, or K D for K sub-centers side by side
        width = rule.row_width(embedding_dim) if hasattr(rule, "row_width") else embedding_dim
        # the initial weights of the full head, drawn by row blocks: the same on any sharding
        if bias:  # nn.Linear's initial distribution: U(-1/sqrt(D), 1/sqrt(D)) for weights and bias
            bound = 1.0 / math.sqrt(embedding_dim)
        else:  # xavier_uniform of the [C K, D] matrix of every (sub-)center
            centers = width // embedding_dim
            bound = math.sqrt(6.0 / (shard.num_classes * centers + embedding_dim))
        weight = block_uniform_rows(seed, stream, shard.start, shard.stop, width, bound)
        self.register_buffer("weight", weight)
        self.register_buffer("weight_momentum", torch.zeros_like(weight))
        if bias:
            bias_rows = block_uniform_rows(seed, stream + 1, shard.start, shard.stop, 1, bound).squeeze(1)
            self.register_buffer("bias", bias_rows)
            self.register_buffer("bias_momentum", torch.zeros_like(bias_rows))
        else:
            self.bias = None
            self.bias_momentum = None
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # the sample's stream position
        self._host_step: int | None = None  # the step as a Python int (read from the buffer once)
        self._pending: tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None] | None = None
        self._step_labels: torch.Tensor | None = None  # the whole step's gathered labels (accumulation)
        self.predictions: torch.Tensor | None = None
        self.sampled_classes = shard.size

    def _slots(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(local index, inside this shard, slot)`` of each label; labels of other shards get the spare
        slot ``C_k``."""
        local = labels - self.shard.start
        inside = (local >= 0) & (local < self.shard.size)
        return local, inside, torch.where(inside, local, torch.full_like(local, self.shard.size))

    def sample(self, labels: torch.Tensor, step: int,
               positives: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(rows [S_k] of this shard in increasing order, or None for all; targets [N])``: the
        positives (``labels``, or the given ``positives``: a superset, e.g. the step's whole batch)
        here and each other class with probability ``r``; ``targets`` are the labels' columns among
        the rows (``-1`` for labels of other shards)."""
        shard, device = self.shard, self.weight.device
        local, inside, slot = self._slots(labels)
        if self.sample_rate >= 1.0:
            return None, torch.where(inside, local, torch.full_like(local, -1))
        positive_slot = slot if positives is None else self._slots(positives)[2]
        keep = class_uniforms(self.seed, step, shard.start, shard.stop, device) < self.sample_rate
        keep = torch.cat([keep, keep.new_zeros(1)]).index_fill_(0, positive_slot, True)[: shard.size]
        rows = keep.nonzero().squeeze(1)
        column = torch.cumsum(keep, 0) - 1  # a kept class's position among the rows
        return rows, torch.where(inside, column[slot.clamp_max(shard.size - 1)], torch.full_like(local, -1))

    def set_step_labels(self, labels: torch.Tensor | None) -> None:
        """The labels of the coming step's whole gathered batch (``None``: each forward's own)."""
        self._step_labels = labels

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices_tuple: object = None) -> torch.Tensor:
        if self._host_step is None:
            self._host_step = int(self.step)
        rows, targets = self.sample(labels, self._host_step, self._step_labels)
        continuing = self.training and not self.first_micro_batch and self._pending is not None
        if self.training and self.last_micro_batch:
            self.step += 1
            self._host_step += 1
            self._step_labels = None
        if continuing:  # the step's same rows: their gradients add up in the same leaves
            _, weight, bias = self._pending
        else:
            full = rows is None
            weight = (self.weight if full else self.weight.index_select(0, rows)).detach().requires_grad_(self.training)
            bias = None
            if self.bias is not None:
                bias = (self.bias if full else self.bias.index_select(0, rows)).detach().requires_grad_(self.training)
        if hasattr(self.rule, "set_micro_batch"):
            self.rule.set_micro_batch(self.first_micro_batch, self.last_micro_batch)
        if self.one_vs_all:
            return self._one_vs_all(embeddings, labels, weight, rows, targets)
        logits, (best, column) = self.rule.margin_logits(embeddings, weight, targets, bias)
        self.sampled_classes = logits.shape[1]
        if self.training:
            self._pending = (rows, weight, bias)
        self.predictions = self._predict(best, column, rows, labels.shape[0])
        loss = DistributedCrossEntropy.apply(logits, targets, self.shard.world_size)
        if hasattr(self.rule, "regulariser"):  # a per-image term of the features (MagFace's g(a))
            # on the gathered batch every rank has all of it: each keeps 1/W of its gradient (the
            # gather sums them), and the value is the whole term
            term = self.rule.lambda_g * self.rule.regulariser(embeddings)
            share = term / self.shard.world_size
            loss = loss + share + (term - share).detach()
        return loss

    def _one_vs_all(self, embeddings: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
                    rows: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
        """The one-vs-all loss over every rank's sampled classes: this shard's terms summed (a
        sampled negative that is no label of the step weighted ``1 / r``), added over the ranks."""
        bias = self.rule.bias
        if self.shard.world_size > 1:
            bias = _SumGradientOverRanks.apply(bias)
        per_class, (best, column) = self.rule.class_terms(embeddings, weight, targets, bias)
        self.sampled_classes = per_class.shape[1]
        if self.training:
            self._pending = (rows, weight, None)
        self.predictions = self._predict(best, column, rows, labels.shape[0])
        if rows is not None:
            positives = self._step_labels if self._step_labels is not None else labels
            always = torch.zeros(self.shard.size + 1, dtype=torch.bool, device=weight.device)
            always.index_fill_(0, self._slots(positives)[2], True)
            counts = torch.where(always[rows], 1.0, 1.0 / self.sample_rate).to(per_class.dtype)
            per_class = per_class * counts
        partial = per_class.sum(dim=1).mean() / self.rule.r
        return _SumOverRanks.apply(partial) if self.shard.world_size > 1 else partial

    def _predict(self, best: torch.Tensor, column: torch.Tensor, rows: torch.Tensor | None, total: int) -> torch.Tensor:
        """The best class over every rank's sampled columns, for this rank's own rows of the batch."""
        with torch.no_grad():
            if rows is None:
                classes = column + self.shard.start
            elif rows.numel():
                classes = rows[column] + self.shard.start
            else:  # nothing sampled here: its best score is -inf, another rank's class wins
                classes = column
            world = self.shard.world_size
            if world > 1:
                pair = torch.stack([best.double(), classes.double()], dim=1)
                parts = [torch.empty_like(pair) for _ in range(world)]
                dist.all_gather(parts, pair)
                stacked = torch.stack(parts)  # [W, N, 2]
                winner = stacked[..., 0].argmax(dim=0)
                classes = stacked[..., 1].gather(0, winner.unsqueeze(0)).squeeze(0).long()
            share = total // world
            return classes[self.shard.rank * share : (self.shard.rank + 1) * share]

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(*args, **kwargs)
        self._host_step = None  # read the loaded step at the next forward

    def discard_pending(self) -> None:
        self._pending = None
        self._step_labels = None

    @torch.no_grad()
    def apply_update(self, lr: float, sgd: RowSGD, grad_multiplier: float = 1.0) -> None:
        """Move the rows sampled by the last training forward (after its backward); ``grad_multiplier``
        undoes a loss scale (fp16). A step whose gradient is not finite leaves the rows as they were."""
        if self._pending is None:
            return
        rows, weight, bias = self._pending
        self._pending = None
        pairs = [(self.weight, self.weight_momentum, weight)]
        if bias is not None:
            pairs.append((self.bias, self.bias_momentum, bias))
        for target, momentum, leaf in pairs:
            if leaf.grad is None:
                continue
            grad = leaf.grad * grad_multiplier if grad_multiplier != 1.0 else leaf.grad
            if not bool(torch.isfinite(grad).all()):
                return
            _sgd_rows(target, momentum, rows, leaf.detach() if rows is not None else target, grad, lr, sgd)
            leaf.grad = None


class ShardedCenterLoss(MicroBatchAware, nn.Module):
    """Wen et al.'s center loss (:mod:`faceverify.losses.center`, the paper's update) with the centers
    of a shard of the classes: ``loss(X [N, D], y [N])`` on the gathered batch. Rank ``k`` adds
    ``1/2 ||x_i - c_{y_i}||^2`` for the rows whose class it holds; the value (the all-reduced sum / N)
    is the full center loss, the gradient each rank's share of it. The update (Eq. 4) uses the whole
    gathered batch, so no reduction is needed and the centers equal a full center loss's."""

    SHARDED = ("centers",)

    def __init__(self, shard: ClassShard, embedding_dim: int, alpha: float = 0.5):
        super().__init__()
        self.shard, self.alpha = shard, alpha
        self.register_buffer("centers", torch.zeros(shard.size, embedding_dim))
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None  # the step's parts

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices_tuple: object = None) -> torch.Tensor:
        local = labels - self.shard.start
        inside = (local >= 0) & (local < self.shard.size)
        slot = local.clamp(0, self.shard.size - 1)
        diff = embeddings - self.centers.index_select(0, slot).to(embeddings.dtype)
        partial = 0.5 * ((diff * diff).sum(dim=1) * inside.to(diff.dtype)).sum() / labels.shape[0]
        if self.training:
            if self.first_micro_batch or self._pending is None:
                self._pending = []
            self._pending.append((embeddings.detach(), slot, inside))
        if self.shard.world_size == 1:
            return partial
        total = partial.detach().clone()
        dist.all_reduce(total)
        return partial + (total - partial.detach())  # the full value; this rank's share of the gradient

    def discard_pending(self) -> None:
        self._pending = None

    @torch.no_grad()
    def update_centers(self) -> None:
        """Eq. 4 on this shard's classes with the last training batch (no-op otherwise)."""
        if self._pending is None:
            return
        embeddings, slot, inside = (torch.cat(parts) for parts in zip(*self._pending))
        self._pending = None
        weight = inside.to(self.centers.dtype).unsqueeze(1)
        delta_sum = torch.zeros_like(self.centers)
        delta_sum.index_add_(0, slot, (self.centers.index_select(0, slot) - embeddings.to(self.centers.dtype)) * weight)
        counts = torch.zeros(self.shard.size, dtype=self.centers.dtype, device=self.centers.device)
        counts.index_add_(0, slot, weight.squeeze(1))
        self.centers -= self.alpha * delta_sum / (1.0 + counts).unsqueeze(1)


def rule_without_classes(build: object, embedding_dim: int) -> nn.Module:
    """A head's loss module built with no class weights (its margin rule only); the empty-tensor
    initialisation warnings of torch are expected there and kept quiet."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return build(embedding_dim, 0)  # type: ignore[operator]
