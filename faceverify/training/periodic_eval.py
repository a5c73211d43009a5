"""The periodic check during training (``eval.every``): every configured benchmark scored through
:mod:`faceverify.evaluation` (an LFW tree, optionally on a subset of folds, ``.bin`` sets, an IJB
release in the papers' test mode), logged, and ``best.pt`` kept on the headline number of the set
``eval.best`` names (accuracy; IJB: TAR at FAR 1e-4), or the mean of all headlines."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from faceverify.data.alignment import template_for_input
from faceverify.data.lfw import key_of_path, read_pairs
from faceverify.errors import InvalidInputError
from faceverify.evaluation.benchmarks import benchmarks_from, evaluate_benchmark
from faceverify.evaluation.ijb_embed import embed_ijb_in_memory, network_embedder, template_aligner
from faceverify.evaluation.ijb_eval import evaluate_ijb
from faceverify.evaluation.ijb_protocol import TestMode
from faceverify.evaluation.lfw_eval import EmbeddingSet, EvalConfig, evaluate_embedder

if TYPE_CHECKING:  # pragma: no cover
    from faceverify.training.trainer import Trainer


def _ijb_tar_at_far(trainer: Trainer) -> dict[str, float]:
    """The IJB release through the network being trained, aligned to its input's template -> the
    strict TAR at each FAR (papers' test mode)."""
    release = trainer.ijb
    align = template_aligner(template_for_input(trainer.input_size), trainer.input_size)
    embed = network_embedder(trainer.embed, trainer.info.device)
    dim = trainer.config.model.embedding_dim
    plain, flipped, status = embed_ijb_in_memory(release, align, embed, dim)
    embeddings = EmbeddingSet.from_rows([key_of_path(n) for n in release.images.tolist()], plain, flipped, status)
    metrics, _ = evaluate_ijb(release, embeddings, TestMode())
    return metrics["tar_at_far"]


def evaluate_during_training(trainer: Trainer) -> dict[str, float]:
    """Check every configured benchmark; returns the log record and keeps ``best.pt`` on the
    set ``eval.best`` names (or the mean of all)."""
    ev = trainer.config.eval
    # which benchmarks exist is checked by the eval section's own validation (EvalDuringTraining)
    record: dict[str, float] = {}
    headlines: dict[str, float] = {}
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
                headlines[benchmark.name] = float(metrics["accuracy"])
                record[f"eval/{benchmark.name}/auc"] = float(metrics["auc"])
            record.update({f"eval/{name}/accuracy": value for name, value in headlines.items()})
            if trainer.ijb is not None:
                tars = _ijb_tar_at_far(trainer)
                for key in ("1e-04", "1e-05"):
                    record[f"eval/{trainer.ijb.prefix}/tar_at_far_{key.replace('e-0', 'e-')}"] = tars[key]
                headlines[trainer.ijb.prefix] = tars["1e-04"]
        trainer.backbone.train()
        if ev.best != "mean" and ev.best not in headlines:
            raise InvalidInputError(f"eval.best = {ev.best!r} is none of the evaluated sets {sorted(headlines)} "
                             "(or 'mean')")
        followed = float(np.mean(list(headlines.values()))) if ev.best == "mean" else headlines[ev.best]
    else:
        followed = 0.0
    record["eval/accuracy"] = followed
    if followed > trainer.state.best_accuracy:
        trainer.state.best_accuracy, trainer.state.best_step = followed, trainer.state.step
        if trainer.config.keep_best:
            trainer.save("best.pt")
    return record
