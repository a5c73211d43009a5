"""A training run's counters (saved in every checkpoint) and what a finished run returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_accuracy: float = -1.0
    best_step: int = -1
    seconds: float = 0.0  # training wall time over all runs of this output folder (resumes add up)


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    stopped_by_signal: bool
    seconds: float  # this invocation
    images_per_second: float
    total_seconds: float  # over every invocation on this output folder (resumes add up)
    last_values: dict[str, float] = field(default_factory=dict)
    train_accuracy: float = float("nan")
    best_accuracy: float = float("nan")
