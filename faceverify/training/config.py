"""Training configuration (``faceverify train CONFIG [key=value ...]``).

Defaults are Wen et al.'s recipe (ECCV 2016): batch 256, SGD momentum 0.9, lr 0.1 divided by
10 at 16K and 24K iterations, stop at 28K, weight decay 5e-4, 512-d features on 112x96 crops;
the loss terms default to softmax alone and recipes add the rest. YAML files hold only changes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Literal

from faceverify.config import ConfigError, check_device, check_range, to_dict
from faceverify.config import parse_hw
from faceverify.losses.objective import LossConfig

# Keys that may differ when a run is resumed: they change how fast or how visibly a run goes,
# not what it computes (``data.source`` is checked by the pack's fingerprint instead of its path,
# ``optim.max_iters`` by Trainer's own rule). Every other key must equal the checkpoint's.
RESUME_NEUTRAL: tuple[str, ...] = (
    "out", "device", "compile", "channels_last", "deterministic", "log_every", "checkpoint_every",
    "keep_best", "tensorboard", "progress", "data.workers", "data.pin_memory", "data.source", "data.decode",
    "optim.max_iters", "model.gradient_checkpointing", "keep_host_memory",
)


@dataclass
class DataConfig:
    source: str = ""  # a folder written by `faceverify pack`, or a RecordIO folder (train.rec, train.idx)
    sampler: Literal["auto", "shuffle", "pk"] = "auto"  # auto: pk for pair and proxy terms (losses.objective.PK_WHEN_AUTO)
    batch_size: int = 256  # global batch (all ranks together)
    k: int = 4  # images per identity with the PK sampler (P = batch_size / k)
    flip: bool = True  # random horizontal flip, on the device
    workers: int = 2
    pin_memory: bool = True
    decode: Literal["cpu", "gpu"] = "cpu"  # RecordIO JPEGs: in the loader's workers, or in batches on the GPU
    holdout_fraction: float = 0.0  # leave this fraction of identities out (validation of tuning trials)
    holdout_seed: int = 0

    def __post_init__(self) -> None:
        check_range("batch_size", self.batch_size, 1)
        check_range("k", self.k, 1)
        check_range("workers", self.workers, 0)
        check_range("holdout_fraction", self.holdout_fraction, 0, 1, strict_max=True)


@dataclass
class ModelConfig:
    backbone: str = "face_resnet27"
    embedding_dim: int = 512
    width: float = 1.0  # channel multiplier (small CPU variants use e.g. 0.25)
    batch_norm: bool = False  # BN after convs for the plain (non-iresnet) backbones
    # HxW the network takes; "" = the data's crop size. A 112x96 network on 112x112 data gets the
    # template crop (columns 8..103) on the device; other sizes of the same aspect are resized.
    input: str = ""
    # recompute each stage's activations in the backward pass instead of keeping them (less memory,
    # about one more forward of compute; same loss and gradients)
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        check_range("embedding_dim", self.embedding_dim, 1)
        check_range("width", self.width, 0, strict_min=True)
        if self.input:
            try:
                parse_hw(self.input)
            except ValueError as err:
                raise ConfigError(f"input: {err}") from None


@dataclass
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    decay_prelu: bool = False  # weight decay on PReLU slopes
    decay_norm: bool = False  # weight decay on BatchNorm weights and biases
    schedule: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[int] = field(default_factory=lambda: [16000, 24000])
    gamma: float = 0.1
    warmup_iters: int = 0
    warmup_factor: float = 0.1  # lr multiplier at iteration 0 of the warm-up
    max_iters: int = 28000
    clip_grad_norm: float = 0.0  # 0 = off
    # gradient accumulation: each rank's share of a batch runs as this many micro-batches, one
    # optimiser step (the batch, schedule and sampler are unchanged; the activations of one
    # micro-batch at a time are kept). Equal to the whole batch for terms without batch statistics.
    accumulate: int = 1

    def __post_init__(self) -> None:
        check_range("lr", self.lr, 0, strict_min=True)
        check_range("accumulate", self.accumulate, 1)
        check_range("momentum", self.momentum, 0, 1, strict_max=True)
        check_range("weight_decay", self.weight_decay, 0)
        check_range("gamma", self.gamma, 0, strict_min=True)
        check_range("warmup_iters", self.warmup_iters, 0)
        check_range("warmup_factor", self.warmup_factor, 0, 1, strict_min=True)
        check_range("max_iters", self.max_iters, 1)
        check_range("clip_grad_norm", self.clip_grad_norm, 0)
        if any(m < 0 for m in self.milestones):
            raise ConfigError(f"milestones must be iterations >= 0, got {self.milestones}")

    def with_length(self, max_iters: int) -> OptimConfig:
        """This schedule for a run of ``max_iters`` iterations: the one rule by which a run's length
        changes (an ablation's ``max_iters`` and ``tuning.max_iters``, the demo's ``--max-iters``).

        ``optim.max_iters`` is the one length of a run; its milestones are written for it. Stretched
        to ``L`` iterations, each milestone keeps its fraction of the run, ``m' = max(1, floor(m * L /
        max_iters))``; the warm-up keeps its length but at most a quarter of the run,
        ``w' = min(w, floor(L / 4))``; the cosine schedule reads ``max_iters`` itself. The same
        length returns the schedule unchanged.
        """
        check_range("max_iters", max_iters, 1)
        if max_iters == self.max_iters:
            return self
        scale = max_iters / self.max_iters
        return replace(self, max_iters=max_iters, milestones=[max(1, int(m * scale)) for m in self.milestones],
                       warmup_iters=min(self.warmup_iters, max_iters // 4))


@dataclass
class EvalDuringTraining:
    """Benchmarks checked every ``every`` iterations: an aligned LFW tree with its pairs file
    (named ``lfw``), insightface ``.bin`` sets (named by file stem) and/or an IJB-B/IJB-C folder
    (named ``ijbb``/``ijbc``, scored in the papers' test mode). The LFW tree and the sets are logged
    as ``eval/<name>/accuracy``, IJB as ``eval/<name>/tar_at_far_1e-4`` (and ``_1e-5``); ``best.pt``
    follows ``best``: a benchmark's headline number (accuracy, or IJB's TAR at FAR 1e-4), or the
    ``mean`` of all headlines."""

    every: int = 0  # iterations between checks; 0 = off
    lfw: str = ""  # aligned LFW tree
    pairs: str = ""  # pairs file (e.g. View 1 pairsDevTest.txt, or pairs.txt with `folds`)
    folds: list[int] = field(default_factory=list)  # 1-based folds of a View 2 file; [] = all
    bins: list[str] = field(default_factory=list)  # .bin verification sets (lfw.bin, cfp_fp.bin, ...)
    ijb: str = ""  # an IJB-B or IJB-C folder (meta/, loose_crop/); aligned from its landmarks
    best: str = "mean"  # the set best.pt follows: "lfw", a .bin stem (e.g. cfp_fp), "ijbc"/"ijbb", or "mean"
    flip: Literal["none", "concat", "sum"] = "concat"

    def __post_init__(self) -> None:
        check_range("every", self.every, 0)
        bad = [f for f in self.folds if not 1 <= f <= 10]
        if bad or len(set(self.folds)) != len(self.folds):
            raise ConfigError(f"folds must be distinct fold numbers 1..10, got {self.folds}")
        if bool(self.lfw) != bool(self.pairs):
            raise ConfigError("eval.lfw and eval.pairs go together (an aligned LFW tree and its pairs file)")
        if self.every and not self.lfw and not self.bins and not self.ijb:
            raise ConfigError("eval.every is set but no benchmark is: give eval.lfw + eval.pairs, eval.bins and/or "
                              "eval.ijb")


@dataclass
class DDPConfig:
    """Distributed data parallel settings (runs under torchrun only)."""

    # gradients cast to bfloat16 / float16 for the all-reduce and back (torch's DDP communication
    # hooks, bf16_compress_hook / fp16_compress_hook): half the bytes on the wire
    compress: Literal["none", "bf16", "fp16"] = "none"


@dataclass
class TrainConfig:
    out: str = "runs/train"
    seed: int = 0
    device: str = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False  # bitwise reproducible (slower); used by the tests
    # fix glibc malloc's thresholds so the buffers a step frees stay for the next one instead of being
    # trimmed and page-faulted back in every step (training.host_memory; process-wide, glibc only)
    keep_host_memory: bool = True
    log_every: int = 20
    checkpoint_every: int = 1000
    keep_best: bool = True
    tensorboard: bool = True
    progress: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalDuringTraining = field(default_factory=EvalDuringTraining)
    ddp: DDPConfig = field(default_factory=DDPConfig)

    def __post_init__(self) -> None:
        check_device(self.device)
        check_range("log_every", self.log_every, 1)
        check_range("checkpoint_every", self.checkpoint_every, 1)
        if not self.out:
            raise ConfigError("out must name the run's output folder")


def upgrade_saved_config(saved: dict) -> dict:
    """A checkpoint's resolved config in today's keys: ``data.packed`` became ``data.source``;
    keys and sections added since (``model.input``, ``data.decode``, ``eval.bins``, ``eval.best``,
    ``optim.accumulate``, ``ddp``, ...) get their defaults. Returns a new mapping."""
    upgraded = copy.deepcopy(saved)
    data = upgraded.setdefault("data", {})
    if "packed" in data:
        data.setdefault("source", data.pop("packed"))
    defaults = to_dict(TrainConfig())
    for section in ("data", "model", "eval", "optim", "loss", "ddp"):
        for key, value in defaults[section].items():
            upgraded.setdefault(section, {}).setdefault(key, copy.deepcopy(value))
    return upgraded
