"""Ablation specs: which arms, folds, seeds and profile; an optional one-key sweep.

A spec is a YAML file of :class:`AblationSpec` fields. Each *arm* is a set of
:class:`~faceverify.training.config.TrainConfig` changes (usually ``loss.terms`` and loss
options) applied on top of the *profile* and the spec's ``base``; a *sweep* varies one dotted
key of one arm over a list of values. Every (arm, value, seed, fold) is a *cell*: one training
run plus one evaluation.

Profiles (``PROFILES``) fix the network, input size and schedule so that arms differ only in
their losses:

* ``cpu``: sphere20 at width 1/4 on 56x48 crops, 128-d embeddings, PK batches of 32 x 4,
  1,500 iterations (~20 passes over the ~8,200 training images), ~2.5 minutes per cell on two
  CPU cores (width 1/2 for 700 iterations in more time reached 79.7% against 85.3% on fold 1);
* ``gpu``: Face-ResNet (face_resnet27) at 112x96, 512-d, batches of 64 x 4, for an
  accelerator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from faceverify.config import from_dict, leaf, load_config, merge_tree, to_dict
from faceverify.training.config import TrainConfig

PROFILES: dict[str, dict[str, Any]] = {
    "cpu": {
        "input_size": "56x48",
        "train": {
            "device": "cpu",
            "log_every": 50,
            "checkpoint_every": 500,
            "tensorboard": False,
            "progress": False,
            "data": {"sampler": "pk", "batch_size": 128, "k": 4, "workers": 0},
            "model": {"backbone": "sphere20", "width": 0.25, "embedding_dim": 128},
            "optim": {"lr": 0.05, "max_iters": 1500, "milestones": [1000, 1300], "warmup_iters": 100,
                      "weight_decay": 5e-4, "clip_grad_norm": 10.0},
        },
    },
    "gpu": {
        "input_size": "112x96",
        "train": {
            "device": "auto",
            "amp": "bf16",
            "channels_last": True,
            "log_every": 100,
            "checkpoint_every": 1000,
            "progress": False,
            "data": {"sampler": "pk", "batch_size": 256, "k": 4, "workers": 4},
            "model": {"backbone": "face_resnet27", "width": 1.0, "embedding_dim": 512},
            "optim": {"lr": 0.1, "max_iters": 6000, "milestones": [3600, 5000], "warmup_iters": 200,
                      "weight_decay": 5e-4, "clip_grad_norm": 10.0},
        },
    },
}


@dataclass
class AblationSpec:
    name: str = "ablation"
    profile: Literal["cpu", "gpu"] = "cpu"
    folds: list[int] = field(default_factory=lambda: [1, 2, 3])  # held-out View 2 folds, 1-based
    seeds: list[int] = field(default_factory=lambda: [0])
    lfw_aligned: str = "work/lfw_aligned_112x96"  # aligned LFW tree (faceverify align ... --purpose eval)
    lfw_protocol: str = ""  # folder with pairs.txt and people.txt; "" = $FACEVERIFY_DATA/lfw
    work: str = "work/ablation"  # packs, runs, per-cell arrays (resumable)
    results: str = "results/ablation"  # CSV + generated tables and plots
    base: dict[str, Any] = field(default_factory=dict)  # TrainConfig changes for every arm
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)  # arm -> TrainConfig changes
    sweep_arm: str = ""  # arm whose `sweep_key` is varied
    sweep_key: str = ""  # dotted TrainConfig key, e.g. loss.terms.center
    sweep_values: list[float] = field(default_factory=list)
    inner_validation: bool = False  # hold one more people set out of training to choose values
    max_iters: int = 0  # 0 = the profile's; a smaller number makes a quick run (tests)
    eval_flip: Literal["none", "concat", "sum"] = "concat"
    projection_identities: int = 8


@dataclass(frozen=True)
class Cell:
    arm: str
    seed: int
    fold: int  # 1-based held-out fold
    sweep_value: float | None = None

    @property
    def label(self) -> str:
        """The arm as shown in tables: ``softmax+center`` or ``softmax+center @ 0.003``."""
        return self.arm if self.sweep_value is None else f"{self.arm} @ {self.sweep_value:g}"

    @property
    def slug(self) -> str:
        value = "" if self.sweep_value is None else f"_v{self.sweep_value:g}"
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in self.arm)
        return f"{safe}{value}_s{self.seed}_f{self.fold}"


def load_spec(path: str | Path | None, overrides: list[str] | None = None) -> AblationSpec:
    """The spec file with ``a.b=value`` overrides merged on by the one merge rule (an override of
    ``arms.<arm>.<key>`` or ``base.<key>`` sets that one key and keeps everything else)."""
    spec = load_config(AblationSpec, path, overrides)
    validate(spec)
    return spec


def validate(spec: AblationSpec) -> None:
    if spec.profile not in PROFILES:
        raise ValueError(f"unknown profile {spec.profile!r}; valid: {', '.join(PROFILES)}")
    if not spec.arms:
        raise ValueError(f"spec {spec.name!r} has no arms")
    if any(not 1 <= f <= 10 for f in spec.folds) or not spec.folds or len(set(spec.folds)) != len(spec.folds):
        raise ValueError(f"folds must be distinct View 2 fold numbers 1..10, got {spec.folds}")
    if not spec.seeds or len(set(spec.seeds)) != len(spec.seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {spec.seeds}")
    if spec.max_iters < 0:
        raise ValueError(f"max_iters must be >= 0 (0 = the profile's), got {spec.max_iters}")
    if spec.sweep_key:
        if spec.sweep_arm not in spec.arms:
            raise ValueError(f"sweep_arm {spec.sweep_arm!r} is not one of the arms {list(spec.arms)}")
        if not spec.sweep_values:
            raise ValueError("sweep_key is set but sweep_values is empty")
    for arm in spec.arms:  # fail now, not after hours of training, on a bad key
        for cell in cells_of_arm(spec, arm, seed=0, fold=spec.folds[0]):
            train_config(spec, cell, Path("x"), Path("y"))


def cells_of_arm(spec: AblationSpec, arm: str, seed: int, fold: int) -> list[Cell]:
    if spec.sweep_key and arm == spec.sweep_arm:
        return [Cell(arm, seed, fold, float(v)) for v in spec.sweep_values]
    return [Cell(arm, seed, fold)]


def cells(spec: AblationSpec) -> list[Cell]:
    """Every cell, seeds outermost and arms innermost, so early results cover all arms."""
    return [c for seed in spec.seeds for fold in spec.folds for arm in spec.arms
            for c in cells_of_arm(spec, arm, seed, fold)]


def train_config(spec: AblationSpec, cell: Cell, packed: Path, out: Path) -> TrainConfig:
    """Profile, then ``base``, then the arm, then the swept value, seed, data and output."""
    tree = merge_tree(PROFILES[spec.profile]["train"], spec.base)
    tree = merge_tree(tree, spec.arms[cell.arm])
    if cell.sweep_value is not None:
        tree = merge_tree(tree, leaf(spec.sweep_key, cell.sweep_value))
    if spec.max_iters:
        tree.setdefault("optim", {})
        scale = spec.max_iters / PROFILES[spec.profile]["train"]["optim"]["max_iters"]
        milestones = PROFILES[spec.profile]["train"]["optim"]["milestones"]
        tree["optim"] = {**tree["optim"], "max_iters": spec.max_iters,
                         "milestones": [max(1, int(m * scale)) for m in milestones],
                         "warmup_iters": min(tree["optim"].get("warmup_iters", 0), spec.max_iters // 4)}
    tree["seed"] = cell.seed
    tree["out"] = str(out)
    tree.setdefault("data", {})["source"] = str(packed)
    return from_dict(TrainConfig, tree)


def input_size(spec: AblationSpec) -> tuple[int, int]:
    height, width = (int(v) for v in PROFILES[spec.profile]["input_size"].split("x"))
    return height, width


def resolved_arms(spec: AblationSpec) -> dict[str, dict[str, Any]]:
    """What each arm (and swept value) trains with, fully resolved: the loss terms with the options
    of each active term, the optimiser, the network and the batches (``ablate --print-config``)."""
    out: dict[str, dict[str, Any]] = {}
    fold = spec.folds[0]
    for arm in spec.arms:
        for cell in cells_of_arm(spec, arm, seed=spec.seeds[0] if spec.seeds else 0, fold=fold):
            config = to_dict(train_config(spec, cell, Path("<pack>"), Path("<run>")))
            loss = config["loss"]
            active = {name: w for name, w in loss["terms"].items() if w != 0}
            out[cell.label] = {
                "loss": {"terms": active, **{name: loss[name] for name in active if name in loss}},
                "optim": config["optim"],
                "model": config["model"],
                "data": {k: config["data"][k] for k in ("sampler", "batch_size", "k", "flip")},
            }
    return out
