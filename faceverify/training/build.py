"""What a training run is built from, apart from the loop: the module DDP wraps (backbone +
objective, :class:`TrainStep`), the optimiser's parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from faceverify.data.samplers import PKSampler, ShuffledBatchSampler
from faceverify.data.sources import TrainingData
from faceverify.errors import InvalidInputError
from faceverify.losses.objective import Objective, ObjectiveOutput, needs_pk_sampling
from faceverify.training.config import TrainConfig


class TrainStep(nn.Module):
    """Backbone + objective in one module, so DDP synchronises the loss parameters too."""

    def __init__(self, backbone: nn.Module, objective: Objective, amp_dtype: torch.dtype | None):
        super().__init__()
        self.backbone = backbone
        self.objective = objective
        self.amp_dtype = amp_dtype

    def forward(self, images: torch.Tensor, labels: torch.Tensor, micro_batch: int = 0,
                micro_batches: int = 1) -> ObjectiveOutput:
        with torch.autocast(images.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            embeddings = self.backbone(images)
        with torch.autocast(images.device.type, enabled=False):
            return self.objective(embeddings.float(), labels, micro_batch, micro_batches)


def _backbone_parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """Weight decay on conv/linear weights and biases; none on PReLU slopes or norm layers
    unless the config asks for it."""
    decay, no_decay = [], []
    for module in model.modules():
        is_prelu = isinstance(module, nn.PReLU)
        is_norm = isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm))
        for param in module.parameters(recurse=False):
            if not param.requires_grad:
                continue
            skip = (is_prelu and not config.optim.decay_prelu) or (is_norm and not config.optim.decay_norm)
            (no_decay if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.optim.weight_decay, "name": "backbone"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "backbone_no_decay"})
    return groups


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the base learning rate at iteration ``step`` (warm-up x schedule)."""
    optim = config.optim
    if optim.schedule == "multistep":
        factor = optim.gamma ** sum(step >= m for m in optim.milestones)
    elif optim.schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(step, optim.max_iters) / max(optim.max_iters, 1)))
    else:
        factor = 1.0
    if optim.warmup_iters and step < optim.warmup_iters:
        alpha = step / optim.warmup_iters
        factor *= optim.warmup_factor * (1.0 - alpha) + alpha
    return factor


def build_optimizer(backbone: nn.Module, objective: Objective,
                    config: TrainConfig) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """SGD over the backbone's groups and the objective's (class weights, proxies, centers; each
    group's ``lr_multiplier`` applied), foreach updates, and the :func:`lr_factor` schedule."""
    groups = _backbone_parameter_groups(backbone, config) + objective.parameter_groups(config.optim.weight_decay)
    for group in groups:
        group.setdefault("lr", config.optim.lr * group.pop("lr_multiplier", 1.0))
    # foreach: one fused update per parameter group instead of a Python loop over tensors
    optimizer = torch.optim.SGD(groups, lr=config.optim.lr, momentum=config.optim.momentum,
                                nesterov=config.optim.nesterov, foreach=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    return optimizer, scheduler


def sampler_kind(config: TrainConfig) -> str:
    """``pk`` or ``shuffle``: ``data.sampler``, with ``auto`` resolved (PK when a term needs pairs)."""
    if config.data.sampler != "auto":
        return config.data.sampler
    return "pk" if needs_pk_sampling(config.loss) else "shuffle"


def build_sampler(dataset: TrainingData, config: TrainConfig, needs_pk: bool, world: int,
                  rank: int) -> PKSampler | ShuffledBatchSampler:
    """PK batches (P identities x K images) when ``data.sampler`` is ``pk``, or ``auto`` and a term
    needs pairs; shuffled batches otherwise; both sharded by rank and resumable."""
    data = config.data
    if data.sampler == "pk" or (data.sampler == "auto" and needs_pk):
        if data.batch_size % data.k:
            raise InvalidInputError(f"batch_size {data.batch_size} must be a multiple of k = {data.k}")
        return PKSampler(dataset.labels, data.batch_size // data.k, data.k, config.seed, world, rank)
    return ShuffledBatchSampler(len(dataset), data.batch_size, config.seed, world, rank)
