"""The periodic check during training (``eval.every``): every configured benchmark scored through
:mod:`faceverify.evaluation` (an LFW tree, optionally on a subset of folds, and ``.bin`` sets),
logged, and ``best.pt`` kept on the set ``eval.best`` names (or the mean of all)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from faceverify.data.lfw import read_pairs
from faceverify.errors import InvalidInputError
from faceverify.evaluation.benchmarks import benchmarks_from, evaluate_benchmark
from faceverify.evaluation.lfw_eval import EvalConfig, evaluate_embedder

if TYPE_CHECKING:  # pragma: no cover
    from faceverify.training.trainer import Trainer


def evaluate_during_training(trainer: Trainer) -> dict[str, float]:
    """Check every configured benchmark; returns the log record and keeps ``best.pt`` on the
    set ``eval.best`` names (or the mean of all)."""
    ev = trainer.config.eval
    # which benchmarks exist is checked by the eval section's own validation (EvalDuringTraining)
    record: dict[str, float] = {}
    accuracies: dict[str, float] = {}
    if trainer.info.is_main:
        trainer.backbone.eval()
        config = EvalConfig(flip=ev.flip)
        with torch.no_grad():
            for benchmark in benchmarks_from(ev.lfw or None, ev.pairs or None, ev.bins):
                if benchmark.kind == "tree":
                    pairs = read_pairs(benchmark.pairs)
                    if ev.folds:  # cross-validated within these folds, for speed
                        pairs = pairs.subset([f - 1 for f in ev.folds])
                    metrics = evaluate_embedder(trainer.embed, benchmark.path, benchmark.pairs, None, config,
                                                image_size=trainer.input_size, device=trainer.info.device,
                                                progress=False, pairs=pairs)
                else:
                    metrics = evaluate_benchmark(trainer.embed, benchmark, config, trainer.input_size,
                                                 trainer.info.device, progress=False)
                accuracies[benchmark.name] = float(metrics["accuracy"])
                record[f"eval/{benchmark.name}/auc"] = float(metrics["auc"])
        trainer.backbone.train()
        record.update({f"eval/{name}/accuracy": value for name, value in accuracies.items()})
        if ev.best != "mean" and ev.best not in accuracies:
            raise InvalidInputError(f"eval.best = {ev.best!r} is none of the evaluated sets {sorted(accuracies)} "
                             "(or 'mean')")
        followed = float(np.mean(list(accuracies.values()))) if ev.best == "mean" else accuracies[ev.best]
    else:
        followed = 0.0
    record["eval/accuracy"] = followed
    if followed > trainer.state.best_accuracy:
        trainer.state.best_accuracy, trainer.state.best_step = followed, trainer.state.step
        if trainer.config.keep_best:
            trainer.save("best.pt")
    return record
