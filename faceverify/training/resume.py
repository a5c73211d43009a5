"""Whether a checkpoint may be resumed under a config and a dataset: only the same run, with its
neutral keys (speed, logging) and a longer multistep schedule allowed to differ."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from faceverify.config import changed_keys, to_dict
from faceverify.errors import FaceverifyError
from faceverify.training.config import RESUME_NEUTRAL, TrainConfig, upgrade_saved_config

if TYPE_CHECKING:  # pragma: no cover
    from faceverify.data.sources import TrainingData


class ResumeMismatchError(FaceverifyError, ValueError):
    """An output folder holds a run made with other settings or other data."""



def check_resumable(state: dict, config: TrainConfig, dataset: TrainingData, path: Path) -> None:
    """Refuse to resume ``state`` (a checkpoint at ``path``) under ``config`` and ``dataset`` if that
    would train something else than the run that wrote it; the message names every difference."""
    saved = upgrade_saved_config(state["config"])
    new = to_dict(config)
    problems = changed_keys(saved, new, ignore=RESUME_NEUTRAL)
    step = int(state["train_state"]["step"])
    old_iters, new_iters = saved["optim"]["max_iters"], config.optim.max_iters
    if old_iters != new_iters:
        if config.optim.schedule == "cosine":
            problems.append(f"optim.max_iters: {old_iters} -> {new_iters} (the cosine schedule depends on it)")
        elif new_iters < step:
            problems.append(f"optim.max_iters: {old_iters} -> {new_iters} (the run is already at step {step})")
    fingerprint = state.get("data_fingerprint")
    if state.get("num_classes") != dataset.num_classes or (fingerprint and fingerprint != dataset.fingerprint):
        old = state.get("data_description") or f"{state.get('num_classes')} identities"
        problems.append(f"data: {old} ({saved['data']['source']}) -> {dataset.describe()} ({config.data.source})")
    if problems:
        out = Path(config.out)
        raise ResumeMismatchError(
            f"{out} holds a run (step {step}, {path}) made with other settings or data, so it cannot be "
            "resumed:\n  " + "\n  ".join(problems) + "\nRe-run with the old values to resume it, or start over "
            "with --restart (Python: train(config, restart=True)), which moves the old run aside to "
            f"{out}.old-<time> (nothing is deleted)."
        )
