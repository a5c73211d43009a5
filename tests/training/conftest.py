"""The trainer tests' small config (the AT&T fixtures it trains on live in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from faceverify.config import merge
from faceverify.training.config import TrainConfig


def small_config(packed: Path, out: Path, **changes) -> TrainConfig:
    """A sphere20 at width 1/4 on 56x48 AT&T: trains in seconds on two CPU cores."""
    base = {
        "out": str(out), "progress": False, "tensorboard": False, "log_every": 5, "checkpoint_every": 1000,
        "data": {"source": str(packed), "batch_size": 40, "workers": 0},
        "model": {"backbone": "sphere20", "width": 0.25, "embedding_dim": 64},
        "optim": {"lr": 0.01, "max_iters": 20, "milestones": [100]},
        "loss": {"terms": {"softmax": 1.0}},
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return merge(TrainConfig(), base)
