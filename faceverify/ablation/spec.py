"""Ablation specs: arms, folds, seeds, a profile, per-arm tuning, an optional one-key sweep.

A spec is a YAML file of :class:`AblationSpec` fields. Each *arm* is a set of
:class:`~faceverify.training.config.TrainConfig` changes (usually ``loss.terms`` and loss
options) applied, by the one merge rule, on top of the *profile* and the spec's ``base``. An arm
may declare ``tune:`` — dotted keys with candidate values (a list) or a range
(``{low, high, log: true|false, int: true|false}``)::

    arms:
      triplet:
        loss: {terms: !replace {triplet: 1.0}}
        tune: {loss.triplet.margin: [0.1, 0.2, 0.3], optim.lr: {low: 0.01, high: 0.1, log: true}}
    tuning: {trials: 3, search: random}

With ``tuning.trials > 0`` every arm gets the same number of *trials* per held-out fold (grid:
every combination, which must number exactly ``trials`` for each arm; random: ``trials``
combinations drawn per arm and fold from a seeded generator). A trial trains on the training
people minus one more people set (the inner-validation set ``j = k mod 10 + 1``) and is scored on
set ``j``'s pairs — never on the test fold. ``tuning.max_iters`` may make trials shorter than the
final cells (the same for every arm: a budgeted search). The chosen values then train the
*final* cells (all nine training sets) for every held-out fold x seed. Arms compare at the same
number of images seen (batch x iterations); the network, input and embedding size are the profile's.

A *sweep* (``sweep_arm``, ``sweep_key``, ``sweep_values``) instead varies one key of one arm as
separate labelled arms (``softmax+center @ 0.003``) — a sensitivity curve, not a tuning.

``train_source`` (a packed or RecordIO folder, e.g. CASIA-WebFace) replaces the per-fold LFW
packs: final cells train on it and are evaluated on every LFW fold (the standard protocol) and on
the ``bins`` sets; trials hold out ``tuning.holdout_fraction`` of its identities for validation.

Profiles (``PROFILES``) fix the network, input size and schedule so that arms differ only in
their losses:

* ``cpu``: sphere20 at width 1/4 on 56x48 crops, 128-d embeddings, PK batches of 32 x 4,
  1,500 iterations, ~2.5 minutes per cell on two CPU cores;
* ``gpu``: Face-ResNet (face_resnet27) at 112x96, 512-d, batches of 64 x 4, for an accelerator.

A run's length is its ``optim.max_iters``, with the milestones written for it (a layer that sets
milestones sets that length too). The spec's ``max_iters`` (and ``tuning.max_iters`` for trials)
sets every cell's length through the one rule, :meth:`OptimConfig.with_length`: milestones keep
their fraction of the run, the warm-up at most a quarter of it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from faceverify.config import ConfigError, from_dict, leaf, load_config, merge_tree, parse_hw, to_dict
from faceverify.errors import InvalidInputError
from faceverify.training.config import TrainConfig

PROFILES: dict[str, dict[str, Any]] = {
    "cpu": {
        "input_size": "56x48",
        "train": {
            "device": "cpu",
            "channels_last": True,  # oneDNN's convolutions run ~20% faster on NHWC on a CPU
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
class TuningSpec:
    trials: int = 0  # per arm and held-out fold; 0 = no tuning (arms train as written)
    search: Literal["grid", "random"] = "random"
    seed: int = 0  # draws of the random search
    metric: Literal["accuracy", "auc", "map_at_r"] = "accuracy"  # what the inner validation maximises
    holdout_fraction: float = 0.1  # with train_source: identities held out of trials for validation
    max_iters: int = 0  # iterations of a trial (the same for every arm); 0 = the finals' iterations


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
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)  # arm -> TrainConfig changes (+ tune)
    tuning: TuningSpec = field(default_factory=TuningSpec)
    reference: str = ""  # arm the others are paired with; "" = softmax if present, else the first arm
    sweep_arm: str = ""  # arm whose `sweep_key` is varied
    sweep_key: str = ""  # dotted TrainConfig key, e.g. loss.terms.center
    sweep_values: list[float] = field(default_factory=list)
    inner_validation: bool = False  # without tuning: hold one more people set out to score sweep values
    max_iters: int = 0  # every cell's optim.max_iters (OptimConfig.with_length); 0 = as the layers give it
    eval_flip: Literal["none", "concat", "sum"] = "concat"
    projection_identities: int = 8
    train_source: str = ""  # a packed or RecordIO folder instead of the per-fold LFW packs
    bins: list[str] = field(default_factory=list)  # .bin sets evaluated beside LFW (with train_source)
    bootstrap: int = 10_000  # resamples for the confidence intervals
    # the paper's figures beside the measured arms in the report (arm -> LFW accuracy in [0, 1]), and
    # where they come from; what they were trained on differs from the recording (said in the table)
    published: dict[str, float] = field(default_factory=dict)
    published_source: str = ""


@dataclass(frozen=True)
class Cell:
    arm: str
    seed: int
    fold: int  # 1-based held-out fold; 0 with a train_source (every LFW fold is evaluated)
    sweep_value: float | None = None
    stage: Literal["final", "trial"] = "final"
    trial: int | None = None
    values: tuple[tuple[str, Any], ...] = ()  # tuned key -> value

    @property
    def label(self) -> str:
        """The arm as shown in tables: ``softmax+center`` or ``softmax+center @ 0.003``."""
        return self.arm if self.sweep_value is None else f"{self.arm} @ {self.sweep_value:g}"

    @property
    def slug(self) -> str:
        value = "" if self.sweep_value is None else f"_v{self.sweep_value:g}"
        trial = "" if self.trial is None else f"_t{self.trial}"
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in self.arm)
        return f"{safe}{value}{trial}_s{self.seed}_f{self.fold}"

    def values_text(self) -> str:
        return json.dumps(dict(self.values), sort_keys=True) if self.values else ""


def load_spec(path: str | Path | None, overrides: list[str] | None = None) -> AblationSpec:
    """The spec file with ``a.b=value`` overrides merged on by the one merge rule (an override of
    ``arms.<arm>.<key>`` or ``base.<key>`` sets that one key and keeps everything else)."""
    spec = load_config(AblationSpec, path, overrides)
    validate(spec)
    return spec


def arm_changes(spec: AblationSpec, arm: str) -> dict[str, Any]:
    """The arm's TrainConfig changes (without its ``tune`` block)."""
    return {k: v for k, v in spec.arms[arm].items() if k != "tune"}


def tune_space(spec: AblationSpec, arm: str) -> dict[str, Any]:
    return dict(spec.arms[arm].get("tune", {}) or {})


def validate(spec: AblationSpec) -> None:
    if spec.profile not in PROFILES:
        raise InvalidInputError(f"unknown profile {spec.profile!r}; valid: {', '.join(PROFILES)}")
    if not spec.arms:
        raise InvalidInputError(f"spec {spec.name!r} has no arms")
    if spec.train_source:
        pass  # every LFW fold is evaluated; `folds` does not apply
    elif any(not 1 <= f <= 10 for f in spec.folds) or not spec.folds or len(set(spec.folds)) != len(spec.folds):
        raise InvalidInputError(f"folds must be distinct View 2 fold numbers 1..10, got {spec.folds}")
    if not spec.seeds or len(set(spec.seeds)) != len(spec.seeds):
        raise InvalidInputError(f"seeds must be a non-empty list of distinct integers, got {spec.seeds}")
    if spec.max_iters < 0:
        raise InvalidInputError(f"max_iters must be >= 0 (0 = the profile's), got {spec.max_iters}")
    if spec.reference and spec.reference not in spec.arms:
        raise InvalidInputError(f"reference {spec.reference!r} is not one of the arms {list(spec.arms)}")
    if spec.sweep_key:
        if spec.sweep_arm not in spec.arms:
            raise InvalidInputError(f"sweep_arm {spec.sweep_arm!r} is not one of the arms {list(spec.arms)}")
        if not spec.sweep_values:
            raise InvalidInputError("sweep_key is set but sweep_values is empty")
    if spec.tuning.trials < 0:
        raise InvalidInputError(f"tuning.trials must be >= 0, got {spec.tuning.trials}")
    if spec.tuning.max_iters < 0:
        raise InvalidInputError(f"tuning.max_iters must be >= 0 (0 = the finals'), got {spec.tuning.max_iters}")
    if not 0 < spec.tuning.holdout_fraction < 1:
        raise InvalidInputError(f"tuning.holdout_fraction must be in (0, 1), got {spec.tuning.holdout_fraction}")
    for layer, changes in [("base", spec.base)] + [(f"arm {arm!r}", arm_changes(spec, arm)) for arm in spec.arms]:
        optim = changes.get("optim") or {}
        if isinstance(optim, dict) and "milestones" in optim and "max_iters" not in optim:
            raise InvalidInputError(f"{layer} sets optim.milestones without the optim.max_iters they are written for; "
                                    "give both (the spec's max_iters then stretches them, OptimConfig.with_length)")
    for arm in spec.arms:
        space = tune_space(spec, arm)
        if spec.tuning.trials:
            if not space:
                raise InvalidInputError(f"tuning.trials = {spec.tuning.trials} but arm {arm!r} declares no `tune:`; every "
                                 "arm gets the same trial budget")
            candidates(spec, arm, held_out_folds(spec)[0])  # checks the space
        elif space:
            raise InvalidInputError(f"arm {arm!r} declares `tune:` but tuning.trials is 0")
    first = held_out_folds(spec)[0]
    for arm in spec.arms:  # fail now, not after hours of training, on a bad key
        for cell in cells_of_arm(spec, arm, seed=spec.seeds[0], fold=first):
            train_config(spec, cell, Path("x"), Path("y"))
        for values in candidates(spec, arm, first):
            train_config(spec, Cell(arm, spec.seeds[0], first, stage="trial", trial=0, values=values),
                         Path("x"), Path("y"))


def held_out_folds(spec: AblationSpec) -> list[int]:
    """The held-out LFW folds cells are made for; ``[0]`` with a train_source (every fold is evaluated)."""
    return [0] if spec.train_source else list(spec.folds)


def _grid_values(key: str, space: Any) -> list[Any]:
    if isinstance(space, list):
        if not space:
            raise ConfigError(f"tune {key}: an empty list of candidates")
        return list(space)
    raise ConfigError(f"tune {key}: the grid search needs a list of candidates, got {space!r}")


def _draw(key: str, space: Any, rng: np.random.Generator) -> Any:
    if isinstance(space, list):
        return space[int(rng.integers(len(space)))]
    if isinstance(space, dict) and {"low", "high"} <= set(space):
        low, high = float(space["low"]), float(space["high"])
        if not low < high:
            raise ConfigError(f"tune {key}: low must be below high, got {space}")
        if space.get("log"):
            if low <= 0:
                raise ConfigError(f"tune {key}: a log range needs low > 0, got {space}")
            value = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        else:
            value = float(rng.uniform(low, high))
        return int(round(value)) if space.get("int") else float(f"{value:.4g}")
    raise ConfigError(f"tune {key}: expected a list of candidates or {{low, high[, log, int]}}, got {space!r}")


def candidates(spec: AblationSpec, arm: str, fold: int) -> list[tuple[tuple[str, Any], ...]]:
    """The ``tuning.trials`` value combinations tried for ``arm`` on held-out ``fold``."""
    space = tune_space(spec, arm)
    trials = spec.tuning.trials
    if not trials or not space:
        return []
    keys = sorted(space)
    if spec.tuning.search == "grid":
        combos = list(itertools.product(*(_grid_values(k, space[k]) for k in keys)))
        if len(combos) != trials:
            raise ConfigError(f"arm {arm!r}: its grid has {len(combos)} combinations, tuning.trials is {trials}; every "
                              "arm must get the same budget (adjust the grid or use search: random)")
        return [tuple(zip(keys, combo)) for combo in combos]
    # random: distinct combinations while the space allows, drawn per (arm, fold) from one seed
    seed = [spec.tuning.seed, fold, *(ord(c) for c in arm)]
    rng = np.random.default_rng(seed)
    finite = all(isinstance(space[k], list) for k in keys)
    size = int(np.prod([len(space[k]) for k in keys])) if finite else None
    out: list[tuple[tuple[str, Any], ...]] = []
    attempts = 0
    while len(out) < trials:
        combo = tuple((k, _draw(k, space[k], rng)) for k in keys)
        attempts += 1
        if combo not in out or (size is not None and len(out) >= size) or attempts > 100 * trials:
            out.append(combo)
    return out


def cells_of_arm(spec: AblationSpec, arm: str, seed: int, fold: int) -> list[Cell]:
    if spec.sweep_key and arm == spec.sweep_arm:
        return [Cell(arm, seed, fold, float(v)) for v in spec.sweep_values]
    return [Cell(arm, seed, fold)]


def trial_cells(spec: AblationSpec, fold: int) -> list[Cell]:
    """Every trial of every arm for one held-out fold (trained with the first seed)."""
    return [Cell(arm, spec.seeds[0], fold, stage="trial", trial=i, values=values)
            for arm in spec.arms for i, values in enumerate(candidates(spec, arm, fold))]


def cells(spec: AblationSpec) -> list[Cell]:
    """Every final cell (tuned values still unset), seeds outermost and arms innermost, so early
    results cover all arms."""
    return [c for seed in spec.seeds for fold in held_out_folds(spec) for arm in spec.arms
            for c in cells_of_arm(spec, arm, seed, fold)]


def train_config(spec: AblationSpec, cell: Cell, packed: Path, out: Path) -> TrainConfig:
    """Profile, then ``base``, then the arm, then the swept or tuned values, seed, data and output."""
    tree = merge_tree(PROFILES[spec.profile]["train"], spec.base)
    tree = merge_tree(tree, arm_changes(spec, cell.arm))
    if cell.sweep_value is not None:
        tree = merge_tree(tree, leaf(spec.sweep_key, cell.sweep_value))
    for key, value in cell.values:
        tree = merge_tree(tree, leaf(key, value))
    tree["seed"] = cell.seed
    tree["out"] = str(out)
    tree.setdefault("data", {})["source"] = str(packed)
    config = from_dict(TrainConfig, tree)
    iterations = spec.tuning.max_iters if cell.stage == "trial" and spec.tuning.max_iters else spec.max_iters
    # the run's length is optim.max_iters; the spec's length stretches the schedule by its one rule
    return replace(config, optim=config.optim.with_length(iterations)) if iterations else config


def cell_hash(config: TrainConfig) -> str:
    """The hash naming a cell's run: its resolved config without the output folder."""
    text = json.dumps({k: v for k, v in to_dict(config).items() if k != "out"}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def input_size(spec: AblationSpec) -> tuple[int, int]:
    return parse_hw(PROFILES[spec.profile]["input_size"], "profile input_size")


def resolved_arms(spec: AblationSpec) -> dict[str, dict[str, Any]]:
    """What each arm (and swept value) trains with, fully resolved: the loss terms with the options
    of each active term, the optimiser, the network, the batches and its tuning space
    (``ablate --print-config``)."""
    out: dict[str, dict[str, Any]] = {}
    fold = held_out_folds(spec)[0]
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
                **({"tune": tune_space(spec, arm),
                    "trials_on_first_fold": [dict(v) for v in candidates(spec, arm, fold)]} if tune_space(spec, arm)
                   else {}),
            }
    return out
