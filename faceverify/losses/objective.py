"""The training objective: a weighted sum of loss terms chosen in the config.

    total = sum_k  w_k * L_k(embeddings, labels)

e.g. Wen et al.'s model C is ``terms: {softmax: 1.0, center: 0.003}`` (lambda = 0.003). The
Objective owns every loss parameter (class weights, centers, proxies), so the optimiser, the
checkpoints and DDP see them; it returns the total and each term's unweighted value for
logging, and applies the paper-style center update after each optimiser step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from faceverify.config import ConfigError
from faceverify.errors import InvalidInputError
from faceverify.losses.center import CenterLoss, CenterOptions
from faceverify.losses.classification import (
    ArcFaceLoss,
    ArcFaceOptions,
    CosFaceLoss,
    CosFaceOptions,
    SoftmaxLoss,
    SoftmaxOptions,
    SphereFaceLoss,
    SphereFaceOptions,
)
from faceverify.losses.margin_heads import (
    AdaFaceLoss,
    AdaFaceOptions,
    CurricularFaceLoss,
    CurricularFaceOptions,
    MagFaceLoss,
    MagFaceOptions,
    SphereFace2Loss,
    SphereFace2Options,
    SubCenterArcFaceLoss,
    SubCenterArcFaceOptions,
)
from faceverify.losses.miners import build_miner
from faceverify.losses.micro_batch import MicroBatchAware
from faceverify.losses.partial_fc import (
    PartialFC,
    PartialFCOptions,
    RowSGD,
    ShardedCenterLoss,
    class_shard,
    gather_batch,
    rule_without_classes,
)
from faceverify.losses.pair import (
    ContrastiveLoss,
    ContrastiveOptions,
    MarginLoss,
    MarginOptions,
    MultiSimilarityLoss,
    MultiSimilarityOptions,
    NPairLoss,
    NPairOptions,
    TripletLoss,
    TripletOptions,
)
from faceverify.losses.proxy import ProxyNCALoss, ProxyNCAOptions


@dataclass
class LossConfig:
    """Which terms, with which weights, and each loss's options."""

    terms: dict[str, float] = field(default_factory=lambda: {"softmax": 1.0})
    softmax: SoftmaxOptions = field(default_factory=SoftmaxOptions)
    center: CenterOptions = field(default_factory=CenterOptions)
    contrastive: ContrastiveOptions = field(default_factory=ContrastiveOptions)
    triplet: TripletOptions = field(default_factory=TripletOptions)
    npair: NPairOptions = field(default_factory=NPairOptions)
    proxy_nca: ProxyNCAOptions = field(default_factory=ProxyNCAOptions)
    multi_similarity: MultiSimilarityOptions = field(default_factory=MultiSimilarityOptions)
    margin: MarginOptions = field(default_factory=MarginOptions)
    cosface: CosFaceOptions = field(default_factory=CosFaceOptions)
    arcface: ArcFaceOptions = field(default_factory=ArcFaceOptions)
    sphereface: SphereFaceOptions = field(default_factory=SphereFaceOptions)
    curricularface: CurricularFaceOptions = field(default_factory=CurricularFaceOptions)
    subcenter_arcface: SubCenterArcFaceOptions = field(default_factory=SubCenterArcFaceOptions)
    adaface: AdaFaceOptions = field(default_factory=AdaFaceOptions)
    magface: MagFaceOptions = field(default_factory=MagFaceOptions)
    sphereface2: SphereFace2Options = field(default_factory=SphereFace2Options)
    partial_fc: PartialFCOptions = field(default_factory=PartialFCOptions)

    def __post_init__(self) -> None:
        # a negative weight would train against its loss (softmax - center), never what is meant
        for name, weight in self.terms.items():
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight) \
                    or weight < 0:
                raise ConfigError(f"loss.terms.{name} = {weight!r}: a term's weight must be a finite number >= 0 "
                                  "(0 switches the term off)")


Builder = Callable[[int, int, LossConfig, torch.Generator], nn.Module]

LOSSES: dict[str, Builder] = {
    "softmax": lambda d, c, cfg, g: SoftmaxLoss(d, c, bias=cfg.softmax.bias),
    "center": lambda d, c, cfg, g: CenterLoss(c, d, alpha=cfg.center.alpha, update=cfg.center.update),
    "contrastive": lambda d, c, cfg, g: ContrastiveLoss(
        cfg.contrastive.margin, cfg.contrastive.squared, cfg.contrastive.normalize, cfg.contrastive.reduction),
    "triplet": lambda d, c, cfg, g: TripletLoss(
        cfg.triplet.margin, cfg.triplet.mining, cfg.triplet.distance, cfg.triplet.normalize,
        cfg.triplet.reduction, generator=g),
    "npair": lambda d, c, cfg, g: NPairLoss(cfg.npair.l2_reg),
    "proxy_nca": lambda d, c, cfg, g: ProxyNCALoss(
        c, d, cfg.proxy_nca.scale, cfg.proxy_nca.include_positive_in_denominator),
    "multi_similarity": lambda d, c, cfg, g: MultiSimilarityLoss(
        cfg.multi_similarity.alpha, cfg.multi_similarity.beta, cfg.multi_similarity.base,
        cfg.multi_similarity.epsilon),
    "cosface": lambda d, c, cfg, g: CosFaceLoss(d, c, cfg.cosface.s, cfg.cosface.m),
    "arcface": lambda d, c, cfg, g: ArcFaceLoss(d, c, cfg.arcface.s, cfg.arcface.m, cfg.arcface.margin_warmup_iters),
    "margin": lambda d, c, cfg, g: MarginLoss(c, cfg.margin.margin, cfg.margin.beta, cfg.margin.learn_beta,
                                             cfg.margin.class_beta, cfg.margin.nu),
    "sphereface": lambda d, c, cfg, g: SphereFaceLoss(
        d, c, cfg.sphereface.m, cfg.sphereface.base, cfg.sphereface.gamma, cfg.sphereface.power,
        cfg.sphereface.lambda_min),
    "curricularface": lambda d, c, cfg, g: CurricularFaceLoss(
        d, c, cfg.curricularface.s, cfg.curricularface.m, cfg.curricularface.momentum),
    "subcenter_arcface": lambda d, c, cfg, g: SubCenterArcFaceLoss(
        d, c, cfg.subcenter_arcface.s, cfg.subcenter_arcface.m, cfg.subcenter_arcface.sub_centers),
    "adaface": lambda d, c, cfg, g: AdaFaceLoss(d, c, cfg.adaface.s, cfg.adaface.m, cfg.adaface.h,
                                               cfg.adaface.momentum),
    "magface": lambda d, c, cfg, g: MagFaceLoss(
        d, c, cfg.magface.s, cfg.magface.lower_norm, cfg.magface.upper_norm, cfg.magface.lower_margin,
        cfg.magface.upper_margin, cfg.magface.lambda_g),
    "sphereface2": lambda d, c, cfg, g: SphereFace2Loss(d, c, cfg.sphereface2.lam, cfg.sphereface2.r,
                                                       cfg.sphereface2.m, cfg.sphereface2.t),
}
# Terms that classify (own class weights and give logits); the first one in `terms` gives accuracy.
CLASSIFIERS = ("softmax", "cosface", "arcface", "sphereface", "curricularface", "subcenter_arcface", "adaface",
               "magface", "sphereface2")
# Classifiers Partial FC shards (their margin rule works on any sample of the class rows; SphereFace2's
# one-vs-all terms are summed over the shards).
PARTIAL_FC_HEADS = CLASSIFIERS
# Terms that need several images per identity in a batch (use the PK sampler).
NEEDS_PK = ("contrastive", "triplet", "npair", "multi_similarity", "margin")
# The terms ``data.sampler: auto`` gives PK batches: the pair terms, and Proxy-NCA, which compares
# each embedding with class proxies rather than with the batch but is trained and compared on
# class-balanced (m-per-class) batches like the pair losses (Musgrave et al., "A Metric Learning
# Reality Check", ECCV 2020); the classifiers keep batches drawn at random, as Wen et al. train.
PK_WHEN_AUTO = NEEDS_PK + ("proxy_nca",)


def needs_pk_sampling(config: LossConfig) -> bool:
    """Whether ``data.sampler: auto`` draws PK batches: a term of :data:`PK_WHEN_AUTO` has a
    non-zero weight."""
    return any(name in PK_WHEN_AUTO and float(weight) != 0.0 for name, weight in config.terms.items())


@dataclass
class ObjectiveOutput:
    """What one forward of the objective gives. Everything stays on the device: reading a value
    (``float(...)``) synchronises with it, so the trainer does that only at log steps."""

    total: torch.Tensor  # weighted sum, with its graph
    values: dict[str, torch.Tensor]  # detached 0-d value of each term (unweighted), and "total"
    predictions: torch.Tensor | None  # [B] class predicted by the first classification term

    def stacked(self) -> torch.Tensor:
        """The values as one 1-D tensor in ``values`` order (for the trainer's log window)."""
        return torch.stack(list(self.values.values()))

    def floats(self) -> dict[str, float]:
        """Every value as a Python float (one host synchronisation)."""
        return dict(zip(self.values, self.stacked().tolist()))


class Objective(nn.Module):
    """``objective(embeddings [B, D], labels [B]) -> ObjectiveOutput``.

    With ``loss.partial_fc.sample_rate > 0`` the classification terms and the center loss are
    :class:`~faceverify.losses.partial_fc.PartialFC` / ``ShardedCenterLoss`` over this process's
    shard of the classes (``rank`` of ``world_size``): they see the batch gathered from every rank,
    and their rows move in :meth:`after_step`. Proxies and per-class margins stay replicated.
    """

    def __init__(self, config: LossConfig, embedding_dim: int, num_classes: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        super().__init__()
        unknown = sorted(set(config.terms) - set(LOSSES))
        if unknown:
            raise InvalidInputError(f"unknown loss term(s) {', '.join(unknown)}; valid: {', '.join(LOSSES)}")
        active = {name: float(w) for name, w in config.terms.items() if float(w) != 0.0}
        if not active:
            raise InvalidInputError("the objective needs at least one loss term with a non-zero weight")
        self.config = config
        self.weights = active
        # random miners (distance-weighted sampling) draw from this generator; checkpoints save it
        self.generator = generator = torch.Generator().manual_seed(seed)
        self.world_size = world_size
        self.sharded: tuple[str, ...] = ()
        if config.partial_fc.enabled:
            shard = class_shard(num_classes, world_size, rank)
            self.sharded = tuple(n for n in active if n in PARTIAL_FC_HEADS or n == "center")
            if not self.sharded:
                raise ConfigError(f"loss.partial_fc.sample_rate = {config.partial_fc.sample_rate} but no term it "
                                  f"shards is on ({', '.join(PARTIAL_FC_HEADS)}, center); set it to 0")
            if "center" in self.sharded and config.center.update != "paper":
                raise ConfigError("loss.partial_fc shards the centers with the paper's update only; "
                                  "set loss.center.update=paper")
        modules: dict[str, nn.Module] = {}
        for index, name in enumerate(active):
            if name not in self.sharded:
                modules[name] = LOSSES[name](embedding_dim, num_classes, config, generator)
            elif name == "center":
                modules[name] = ShardedCenterLoss(shard, embedding_dim, config.center.alpha)
            else:
                rule = rule_without_classes(lambda d, c, n=name: LOSSES[n](d, c, config, generator), embedding_dim)
                modules[name] = PartialFC(rule, shard, embedding_dim, config.partial_fc.sample_rate, seed,
                                          bias=name == "softmax" and config.softmax.bias, stream=2 * index)
        self.losses = nn.ModuleDict(modules)
        # DDP averages the backbone's gradients over the ranks; the sharded terms are means over the
        # global batch on every rank, so their gradient into this rank's embeddings is scaled back up
        self.gather_grad_scale = float(world_size)
        # any pair loss may take a miner (its options' `miner`); the miner's tuples replace the
        # loss's own choice of pairs or triplets
        self.miners: dict[str, object] = {}
        for name in active:
            choice = getattr(getattr(config, name, None), "miner", "none")
            if choice != "none":
                options = {"generator": generator} if choice == "distance_weighted" else {}
                self.miners[name] = build_miner(choice, **options)
        self.classifier_name = next((n for n in active if n in CLASSIFIERS), None)

    def begin_step(self, labels: torch.Tensor) -> None:
        """Before the micro-batches of one optimiser step (gradient accumulation): this rank's labels
        of the whole step. The sharded heads gather them from every rank (a collective) so that their
        sample holds every positive of the step. Not needed when a step is one forward."""
        if not self.sharded:
            return
        gathered = labels
        if self.world_size > 1:
            parts = [torch.empty_like(labels) for _ in range(self.world_size)]
            dist.all_gather(parts, labels.contiguous())
            gathered = torch.cat(parts)
        for name in self.sharded:
            loss = self.losses[name]
            if isinstance(loss, PartialFC):
                loss.set_step_labels(gathered)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, micro_batch: int = 0,
                micro_batches: int = 1) -> ObjectiveOutput:
        """The loss of one batch, or of micro-batch ``micro_batch`` (0-based) of ``micro_batches``
        making one optimiser step: the terms with per-step state then treat the step's micro-batches
        as one batch (:mod:`faceverify.losses.micro_batch`)."""
        first, last = micro_batch == 0, micro_batch == micro_batches - 1
        for loss in self.losses.values():
            if isinstance(loss, MicroBatchAware):
                loss.set_micro_batch(first, last)
        # losses run in float32 (or float64 in tests) even when the network runs in bf16/fp16
        if embeddings.dtype not in (torch.float32, torch.float64):
            embeddings = embeddings.float()
        total: torch.Tensor | None = None
        values: dict[str, torch.Tensor] = {}
        gathered = None
        if self.sharded:  # once for every sharded term
            gathered = gather_batch(embeddings, labels, self.world_size, self.gather_grad_scale)
        for name, loss in self.losses.items():
            if name in self.sharded:
                value = loss(*gathered)
            else:
                miner = self.miners.get(name)
                indices = miner(embeddings.detach(), labels) if miner is not None else None
                value = loss(embeddings, labels, indices)
            weighted = self.weights[name] * value
            total = weighted if total is None else total + weighted
            values[name] = value.detach()
        assert total is not None  # the constructor guarantees at least one term
        values["total"] = total.detach()
        predictions = None
        if self.classifier_name is not None:
            predictions = self.losses[self.classifier_name].predictions
        return ObjectiveOutput(total, values, predictions)

    def after_step(self, lr: float = 0.0, sgd: RowSGD | None = None, grad_multiplier: float = 1.0) -> None:
        """After the optimiser step: the paper-style center update (Wen et al. Eq. 4), and the Partial FC
        rows sampled this step moved by SGD at learning rate ``lr`` with ``sgd``'s settings
        (``grad_multiplier`` undoes an fp16 loss scale)."""
        for name, loss in self.losses.items():
            if isinstance(loss, (CenterLoss, ShardedCenterLoss)):
                loss.update_centers()
            elif isinstance(loss, PartialFC):
                if sgd is None:
                    raise ValueError(f"the Partial FC term {name} needs after_step(lr, sgd)")
                loss.apply_update(lr, sgd, grad_multiplier)

    def discard_pending(self) -> None:
        """Forget the last batch (a skipped step, e.g. a non-finite loss or an AMP overflow)."""
        for loss in self.losses.values():
            if isinstance(loss, CenterLoss):
                loss._pending = None
            elif isinstance(loss, (PartialFC, ShardedCenterLoss)):
                loss.discard_pending()

    def sharded_keys(self) -> list[str]:
        """``state_dict`` keys of the tensors whose rows are this rank's classes (saved per shard)."""
        keys = []
        for name in self.sharded:
            module = self.losses[name]
            keys += [f"losses.{name}.{b}" for b in module.SHARDED if getattr(module, b, None) is not None]
        return keys

    def ddp_ignored(self) -> list[str]:
        """Parameter and buffer names (relative to this module) DDP must leave alone: the shards differ
        per rank and move in :meth:`after_step`."""
        names = self.sharded_keys()
        for name in self.sharded:
            names += [f"losses.{name}.{n}" for n, _ in self.losses[name].named_parameters()]
        return names

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Optimiser groups: class weights decay; centers (own lr), proxies and margin boundaries do not
        (the last two may carry an ``lr_multiplier`` of the base learning rate)."""
        groups: list[dict] = []
        for name, loss in self.losses.items():
            params = [p for p in loss.parameters() if p.requires_grad]
            if not params:
                continue
            if name == "center":
                groups.append({"params": params, "weight_decay": 0.0, "lr": self.config.center.lr,
                               "name": "center", "fixed_lr": True})
            elif name == "proxy_nca":
                groups.append({"params": params, "weight_decay": 0.0, "name": name,
                               "lr_multiplier": self.config.proxy_nca.lr_multiplier})
            elif name == "margin":
                groups.append({"params": params, "weight_decay": 0.0, "name": name,
                               "lr_multiplier": self.config.margin.beta_lr_multiplier})
            else:
                groups.append({"params": params, "weight_decay": weight_decay, "name": name})
        return groups

    @property
    def needs_pk_sampling(self) -> bool:
        return needs_pk_sampling(self.config)
