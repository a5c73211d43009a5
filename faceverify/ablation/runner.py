"""``faceverify ablate SPEC``: tune, train and evaluate every cell of a spec, resumably.

For each held-out fold: the tuning *trials* of every arm (inner validation, see
:mod:`faceverify.ablation.protocol`), then the *final* cells of every seed with each arm's chosen
values. A cell's run folder is ``runs/<cell>-<hash>``, the hash of its resolved config (without
the output folder): editing an arm trains it again instead of re-evaluating the old model. Rows go
to ``<results>/<name>.csv`` (finals) and ``<name>_tuning.csv`` (trials); a row whose key and hash
are already there is skipped, a cell interrupted mid-training resumes from its checkpoint, and the
rows of earlier configurations stay in the CSV but are reported apart. Scoring goes through
:mod:`faceverify.evaluation.verification` (the threshold of a fold always from the other folds).
After every cell the tables and plots are regenerated.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from faceverify.ablation.geometry import class_geometry, largest_identities
from faceverify.ablation.protocol import (
    ensure_pack,
    evaluation_images,
    held_out_identity_keys,
    inner_fold,
    split_for,
)
from faceverify.ablation.report import write_reports
from faceverify.ablation.spec import (
    PROFILES,
    AblationSpec,
    Cell,
    candidates,
    cell_hash,
    cells,
    held_out_folds,
    input_size,
    train_config,
)
from faceverify.data.binsets import consecutive_folds
from faceverify.data.lfw import PairsProtocol, identity_of_key, read_people
from faceverify.data.locate import lfw_protocol_dir
from faceverify.data.sources import open_training_data
from faceverify.data.splits import holdout_identities, validation_pairs
from faceverify.errors import InvalidInputError, MissingInputError
from faceverify.evaluation.benchmarks import benchmarks_from, evaluate_benchmark
from faceverify.evaluation.embed import combine_flip, embed_arrays, embed_images
from faceverify.evaluation.lfw_eval import EmbeddingSet, EvalConfig, evaluate_embeddings
from faceverify.evaluation.retrieval import map_at_r, recall_at_k
from faceverify.provenance import device_description
from faceverify.results import append_rows, provenance, read_rows
from faceverify.training.build import sampler_kind
from faceverify.training.distributed import resolve_device
from faceverify.training.checkpoint_eval import load_backbone
from faceverify.training.stop import raise_if_stopped
from faceverify.training.nan_guard import NonFiniteLossError
from faceverify.training.trainer import train
from faceverify.locks import lock_output

ROW_KEY = ("arm", "sweep_value", "trial", "seed", "fold")


def _value_text(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def row_key(row: dict) -> tuple[str, ...]:
    return tuple(str(row.get(k, "")) for k in ROW_KEY)


def cell_key(cell: Cell) -> tuple[str, ...]:
    return (cell.arm, _value_text(cell.sweep_value), "" if cell.trial is None else str(cell.trial), str(cell.seed),
            str(cell.fold))


def check_aligned(aligned: Path) -> None:
    if not (aligned / "manifest.csv").is_file():
        raise MissingInputError(
            f"no aligned LFW at {aligned} (manifest.csv missing); create it with\n"
            f"  faceverify align $FACEVERIFY_DATA/lfw/lfw-deepfunneled {aligned} --purpose eval"
        )


def config_device(spec: AblationSpec) -> str:
    return str(PROFILES[spec.profile]["train"].get("device", "auto"))


# ----------------------------------------------------------------------------- scoring
def fold_metrics(embeddings: EmbeddingSet, pairs: PairsProtocol, test_fold: int, flip: str,
                 exclude_fold: int | None = None) -> tuple[dict, object]:
    """Accuracy, threshold, AUC and TAR@FAR of View 2 fold ``test_fold`` (1-based), its threshold
    chosen on the other folds — without ``exclude_fold`` when given (inner validation must not see
    the test fold). Computed by the k-fold protocol of ``evaluation.verification``."""
    folds = [f for f in range(pairs.n_folds) if f + 1 != exclude_fold]
    subset = pairs.subset(folds) if exclude_fold is not None else pairs
    position = folds.index(test_fold - 1) + 1 if exclude_fold is not None else test_fold
    config = EvalConfig(flip=flip, folds=[position], recall_ks=[])
    metrics, result = evaluate_embeddings(embeddings, subset, config)
    return {"accuracy": metrics["accuracy"], "threshold": metrics["fold_thresholds"][0], "auc": metrics["auc"],
            "tar_at_far_1e-3": metrics["tar_at_far"][repr(1e-3)]}, result


def retrieval_metrics(features: np.ndarray, labels: list[str]) -> dict[str, float]:
    """Recall@1 and MAP@R of identities (cosine)."""
    return {"recall_at_1": recall_at_k(features, labels, [1])["1"], "map_at_r": map_at_r(features, labels)["map_at_r"]}


def evaluate_lfw_cell(spec: AblationSpec, cell: Cell, checkpoint: Path, protocol_dir: Path, aligned: Path,
                      test_people: frozenset[str], cell_file: Path) -> dict:
    """A cell trained on LFW's other folds: held-out (final) or inner-validation (trial) metrics,
    retrieval and geometry of the scored people."""
    started = time.perf_counter()
    pairs, keys, paths = evaluation_images(protocol_dir, aligned, cell.fold)
    device = resolve_device(config_device(spec))
    model, size, _ = load_backbone(checkpoint, device)
    with torch.no_grad():
        plain, flipped = embed_images(model, [paths[k] for k in keys], image_size=size, batch_size=256,
                                      with_flip=spec.eval_flip != "none", device=device, progress=False)
    embeddings = EmbeddingSet(keys, plain, flipped)
    features = combine_flip(plain, flipped, spec.eval_flip)
    by_key = dict(zip(keys, features))
    metrics: dict = {}
    if cell.stage == "trial" or (spec.inner_validation and not spec.tuning.trials):
        inner = inner_fold(cell.fold)
        inner_scores, _ = fold_metrics(embeddings, pairs, inner, spec.eval_flip, exclude_fold=cell.fold)
        metrics.update({f"inner_{k}": v for k, v in inner_scores.items()}, inner_fold=inner)
        inner_people = {n for n, c in read_people(protocol_dir / "people.txt")[inner - 1].items() if c >= 2}
        inner_keys = [k for a, b in zip(pairs.keys_a, pairs.keys_b) for k in (a, b)
                      if identity_of_key(k) in inner_people]
        inner_keys = list(dict.fromkeys(inner_keys))
        if inner_keys:
            inner_retrieval = retrieval_metrics(np.stack([by_key[k] for k in inner_keys]),
                                                [identity_of_key(k) for k in inner_keys])
            metrics.update({f"inner_{k}": v for k, v in inner_retrieval.items()})
    if cell.stage == "final":
        scores, result = fold_metrics(embeddings, pairs, cell.fold, spec.eval_flip)
        metrics.update(scores)
        held = held_out_identity_keys(keys, test_people)
        labels = [identity_of_key(k) for k in held]
        held_features = np.stack([by_key[k] for k in held])
        metrics.update(retrieval_metrics(held_features, labels))
        metrics.update(class_geometry(held_features, labels))
        shown = largest_identities(labels, spec.projection_identities)
        chosen = np.isin(np.array(labels), shown)
        cell_file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cell_file, scores=result.heldout_scores, same=result.same,
                 projection_features=held_features[chosen], projection_labels=np.array(labels)[chosen])
    metrics["eval_seconds"] = time.perf_counter() - started
    return metrics


def evaluate_source_cell(spec: AblationSpec, cell: Cell, checkpoint: Path, protocol_dir: Path, aligned: Path,
                         cell_file: Path) -> dict:
    """A cell trained on a train_source: trials on validation pairs of its held-out identities;
    finals on every LFW fold (standard protocol) and the ``bins`` sets."""
    started = time.perf_counter()
    device = resolve_device(config_device(spec))
    model, size, _ = load_backbone(checkpoint, device)
    metrics: dict = {}
    config = EvalConfig(flip=spec.eval_flip, recall_ks=[])
    if cell.stage == "trial":
        source = open_training_data(spec.train_source, progress=False)
        held = holdout_identities(source.labels, spec.tuning.holdout_fraction, spec.tuning.seed)
        rows = np.flatnonzero(np.isin(source.labels, held))
        images, _, skipped = source.__getitems__(rows)
        if skipped:
            raise InvalidInputError(f"{spec.train_source}: {len(skipped)} held-out validation record(s) do not decode "
                             f"(first: record {skipped[0]['record']}, {skipped[0]['reason']}); run faceverify rec check")
        with torch.no_grad():
            plain, flipped = embed_arrays(model, np.asarray(images), image_size=size, with_flip=spec.eval_flip != "none",
                                          device=device, progress=False)
        keys = [f"holdout/{r:08d}" for r in rows]
        embeddings = EmbeddingSet(keys, plain, flipped)
        position = {r: i for i, r in enumerate(rows)}
        index_a, index_b, same = validation_pairs(source.labels, held, seed=spec.tuning.seed)
        pairs = PairsProtocol(Path(spec.train_source), tuple(keys[position[r]] for r in index_a),
                              tuple(keys[position[r]] for r in index_b), same,
                              consecutive_folds(same.size), 10)
        inner, _ = evaluate_embeddings(embeddings, pairs, config)
        features = combine_flip(plain, flipped, spec.eval_flip)
        labels = [str(v) for v in source.labels[rows]]
        metrics.update({"inner_accuracy": inner["accuracy"], "inner_auc": inner["auc"],
                        **{f"inner_{k}": v for k, v in retrieval_metrics(features, labels).items()}})
    else:
        benchmarks = benchmarks_from(aligned, protocol_dir / "pairs.txt", spec.bins)
        for benchmark in benchmarks:
            result = evaluate_benchmark(model, benchmark, config, size, device, progress=False)
            prefix = "" if benchmark.name == "lfw" else f"{benchmark.name}_"
            metrics.update({f"{prefix}accuracy": result["accuracy"], f"{prefix}auc": result["auc"],
                            f"{prefix}tar_at_far_1e-3": result["tar_at_far"][repr(1e-3)]})
            if benchmark.name == "lfw":
                metrics["threshold"] = float(np.mean(result["fold_thresholds"]))
        cell_file.parent.mkdir(parents=True, exist_ok=True)
    metrics["eval_seconds"] = time.perf_counter() - started
    return metrics


# ----------------------------------------------------------------------------- the run
def chosen_values(spec: AblationSpec, arm: str, fold: int, trial_rows: dict[tuple[str, ...], dict]) -> \
        tuple[tuple[tuple[str, object], ...], dict] | None:
    """The tuned values of ``arm`` on ``fold``: the trial with the best inner-validation metric
    (ties: the earlier trial). None while a trial is missing."""
    options = candidates(spec, arm, fold)
    scored = []
    for trial, values in enumerate(options):
        row = trial_rows.get((arm, "", str(trial), str(spec.seeds[0]), str(fold)))
        if row is None:
            return None
        value = float(row.get(f"inner_{spec.tuning.metric}", "nan")) if row.get("status") == "ok" else float("nan")
        scored.append((-np.inf if np.isnan(value) else value, -trial, values, row))
    best = max(scored, key=lambda t: (t[0], t[1]))
    return best[2], best[3]


def run_ablation(spec: AblationSpec, log: Callable[[str], None] = print) -> Path:
    """Run every trial and cell of ``spec`` not yet recorded; returns the finals' CSV path.
    One run per spec: a second ``ablate`` of the same spec (its work folder and name) is refused
    while the first runs (``work/.<name>.lock``)."""
    with lock_output(Path(spec.work) / spec.name, f"ablate of {spec.name}", beside=True):
        return _run_ablation(spec, log)


def _run_ablation(spec: AblationSpec, log: Callable[[str], None]) -> Path:
    protocol_dir = Path(spec.lfw_protocol) if spec.lfw_protocol else lfw_protocol_dir()
    aligned = Path(spec.lfw_aligned)
    check_aligned(aligned)
    people = read_people(protocol_dir / "people.txt")
    results = Path(spec.results)
    csv_path = results / f"{spec.name}.csv"
    tuning_path = results / f"{spec.name}_tuning.csv"
    work = Path(spec.work)
    size = PROFILES[spec.profile]["input_size"]
    height, width = input_size(spec)

    def recorded(path: Path) -> dict[tuple[str, ...], dict]:
        return {row_key(r) + (r.get("config_hash", ""),): r for r in read_rows(path)} if path.is_file() else {}

    finals, trials = recorded(csv_path), recorded(tuning_path)
    latest_trials = {row_key(r): r for r in (read_rows(tuning_path) if tuning_path.is_file() else [])}
    order: list[Cell] = []
    for fold in held_out_folds(spec):
        order += [Cell(arm, spec.seeds[0], fold, stage="trial", trial=i, values=values)
                  for arm in spec.arms for i, values in enumerate(candidates(spec, arm, fold))]
        order += [c for c in cells(spec) if c.fold == fold and c.seed == spec.seeds[0]]
    order += [c for c in cells(spec) if c.seed != spec.seeds[0]]
    for index, cell in enumerate(order, start=1):
        if cell.stage == "final" and spec.tuning.trials:
            picked = chosen_values(spec, cell.arm, cell.fold, latest_trials)
            if picked is None:
                raise RuntimeError(f"{cell.arm} fold {cell.fold}: a tuning trial is missing")  # order guarantees it
            cell = replace(cell, values=picked[0])
        inner = cell.stage == "trial" or (spec.inner_validation and not spec.tuning.trials)
        if spec.train_source:
            source = Path(spec.train_source)
            test_people: frozenset[str] = frozenset()
        else:
            split = split_for(people, cell.fold, inner)
            source = ensure_pack(aligned, split, size, work)
            test_people = split.test_people
        config = train_config(spec, cell, source, Path("<run>"))
        if spec.train_source and cell.stage == "trial":
            config = replace(config, data=replace(config.data, holdout_fraction=spec.tuning.holdout_fraction,
                                                  holdout_seed=spec.tuning.seed))
        digest = cell_hash(config)
        run_dir = work / spec.name / "runs" / f"{cell.stage}_{cell.slug}-{digest}"
        config = replace(config, out=str(run_dir))
        key = cell_key(cell)
        stage_rows, path = (trials, tuning_path) if cell.stage == "trial" else (finals, csv_path)
        label = f"{cell.label}" + (f" trial {cell.trial} {cell.values_text()}" if cell.stage == "trial" else "")
        prefix = f"[{index}/{len(order)}] {label:40s} fold {cell.fold} seed {cell.seed}"
        previous = stage_rows.get(key + (digest,))
        if previous is not None:
            shown = previous.get("inner_accuracy" if cell.stage == "trial" else "accuracy", "nan")
            log(f"{prefix}: done earlier ({'inner ' if cell.stage == 'trial' else ''}accuracy "
                f"{100 * float(shown or 'nan'):.2f}%)")
            continue
        where = provenance(device=device_description(config.device if config.device != "auto" else None))
        base_row = {"spec": spec.name, "stage": cell.stage, "cell": cell.slug, "run_dir": str(run_dir), "arm": cell.arm,
                    "label": cell.label, "sweep_key": spec.sweep_key, "sweep_value": _value_text(cell.sweep_value),
                    "trial": "" if cell.trial is None else cell.trial, "values": cell.values_text(), "seed": cell.seed,
                    "fold": cell.fold, "input": f"{height}x{width}", "profile": spec.profile, "config_hash": digest,
                    "images_seen": config.optim.max_iters * config.data.batch_size,
                    "sampler": sampler_kind(config), "k": config.data.k if sampler_kind(config) == "pk" else ""}
        try:
            result = train(config)
            raise_if_stopped(result, config.optim.max_iters)  # a stop is not a result: no row, the re-run resumes
        except NonFiniteLossError as err:
            # a diverged cell is a result too: record it, keep going with the others
            row = {**base_row, "status": "diverged", "reason": str(err).split(";")[0], "accuracy": float("nan"),
                   "inner_accuracy": float("nan"), **where}
        else:
            cell_file = work / spec.name / "cells" / f"{cell.stage}_{cell.slug}-{digest}.npz"
            checkpoint = run_dir / "checkpoints" / "last.pt"
            if spec.train_source:
                metrics = evaluate_source_cell(spec, cell, checkpoint, protocol_dir, aligned, cell_file)
            else:
                metrics = evaluate_lfw_cell(spec, cell, checkpoint, protocol_dir, aligned, test_people, cell_file)
            row = {**base_row, "status": "ok", "reason": "", **metrics, "cell_file": str(cell_file),
                   "train_accuracy": result.train_accuracy, "final_loss": result.last_values.get("total", float("nan")),
                   "iterations": result.step, "train_images": result_images(config),
                   "train_seconds": result.total_seconds, **where}
        append_rows(path, [row])
        stage_rows[key + (digest,)] = {k: str(v) for k, v in row.items()}
        if cell.stage == "trial":
            latest_trials[key] = stage_rows[key + (digest,)]
        write_reports(spec, csv_path, tuning_path)
        if row["status"] != "ok":
            log(f"{prefix}: diverged ({row['reason']})")
        elif cell.stage == "trial":
            log(f"{prefix}: inner-validation accuracy {100 * row['inner_accuracy']:.2f}%, "
                f"{row['train_seconds']:.0f} s training")
        else:
            extra = f", chosen {cell.values_text()}" if cell.values else ""
            log(f"{prefix}: accuracy {100 * row['accuracy']:.2f}%, AUC {row['auc']:.4f}"
                + (f", MAP@R {row['map_at_r']:.3f}" if "map_at_r" in row else "")
                + f", {row['train_seconds']:.0f} s training{extra}")
    if csv_path.is_file() or tuning_path.is_file():
        write_reports(spec, csv_path, tuning_path)
    return csv_path


def result_images(config) -> int:
    """Training-set size of a run (its pack's or source's images, less any held-out identities)."""
    dataset = open_training_data(config.data.source, progress=False)
    if config.data.holdout_fraction:
        from faceverify.data.sources import holdout_subset

        dataset = holdout_subset(dataset, config.data.holdout_fraction, config.data.holdout_seed)
    return len(dataset)


__all__ = ["run_ablation", "fold_metrics", "chosen_values"]
