"""``faceverify ablate SPEC``: train and evaluate every cell of a spec, resumably.

A cell whose row (same arm, value, seed, fold and config hash) is already in
``<results>/<name>.csv`` is skipped; a cell interrupted mid-training resumes from its last
checkpoint. After every cell the CSV gains a row and the tables and plots are regenerated.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from faceverify.ablation.geometry import class_geometry, largest_identities
from faceverify.ablation.protocol import (
    ensure_pack,
    evaluation_images,
    held_out_identity_keys,
    pair_scores,
    split_for,
)
from faceverify.ablation.report import write_reports
from faceverify.ablation.spec import PROFILES, AblationSpec, Cell, cells, input_size, train_config
from faceverify.config import config_hash
from faceverify.data.lfw import identity_of_key, read_people
from faceverify.data.locate import lfw_protocol_dir
from faceverify.evaluation.embed import combine_flip, embed_images
from faceverify.provenance import device_description
from faceverify.results import append_rows, provenance, read_rows
from faceverify.training.distributed import resolve_device
from faceverify.training.evaluate import load_backbone
from faceverify.training.trainer import NonFiniteLossError, train


def _row_key(arm: str, value: str, seed: str, fold: str) -> tuple[str, str, str, str]:
    return arm, value, seed, fold


def _value_text(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def check_aligned(aligned: Path) -> None:
    if not (aligned / "manifest.csv").is_file():
        raise FileNotFoundError(
            f"no aligned LFW at {aligned} (manifest.csv missing); create it with\n"
            f"  faceverify align $FACEVERIFY_DATA/lfw/lfw-deepfunneled {aligned} --purpose eval"
        )


def evaluate_cell(spec: AblationSpec, cell: Cell, checkpoint: Path, protocol_dir: Path, aligned: Path,
                  test_people: frozenset[str], cell_file: Path) -> dict:
    """Held-out metrics, inner-validation accuracy and geometry of one trained cell."""
    started = time.perf_counter()
    pairs, keys, paths = evaluation_images(protocol_dir, aligned, cell.fold)
    device = resolve_device(config_device(spec))
    model, size, _ = load_backbone(checkpoint, device)
    with torch.no_grad():
        plain, flipped = embed_images(model, [paths[k] for k in keys], image_size=size, batch_size=256,
                                      with_flip=spec.eval_flip != "none", device=device, progress=False)
    features = combine_flip(plain, flipped, spec.eval_flip)
    by_key = dict(zip(keys, features))
    scores = pair_scores(pairs, by_key)
    others = [f for f in range(1, 11) if f != cell.fold]
    metrics = scores.fold_metrics(cell.fold, others)
    if spec.inner_validation:
        inner = cell.fold % 10 + 1
        metrics["inner_fold"] = inner
        metrics["inner_accuracy"] = scores.accuracy(inner, [f for f in others if f != inner])[0]
    held = held_out_identity_keys(keys, test_people)
    labels = [identity_of_key(k) for k in held]
    held_features = np.stack([by_key[k] for k in held])
    metrics.update(class_geometry(held_features, labels))
    shown = largest_identities(labels, spec.projection_identities)
    chosen = np.isin(np.array(labels), shown)
    test = scores.fold == cell.fold - 1
    cell_file.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cell_file, scores=scores.scores[test], same=scores.same[test],
             projection_features=held_features[chosen], projection_labels=np.array(labels)[chosen])
    metrics["eval_seconds"] = time.perf_counter() - started
    return metrics


def config_device(spec: AblationSpec) -> str:
    return str(PROFILES[spec.profile]["train"].get("device", "auto"))


def run_ablation(spec: AblationSpec, log: Callable[[str], None] = print) -> Path:
    """Run every cell of ``spec`` not yet recorded; returns the CSV path."""
    protocol_dir = Path(spec.lfw_protocol) if spec.lfw_protocol else lfw_protocol_dir()
    aligned = Path(spec.lfw_aligned)
    check_aligned(aligned)
    people = read_people(protocol_dir / "people.txt")
    results = Path(spec.results)
    csv_path = results / f"{spec.name}.csv"
    work = Path(spec.work)
    done = {}
    if csv_path.is_file():
        for row in read_rows(csv_path):
            done[_row_key(row["arm"], row["sweep_value"], row["seed"], row["fold"])] = row
    todo = cells(spec)
    size = PROFILES[spec.profile]["input_size"]
    height, width = input_size(spec)
    for index, cell in enumerate(todo, start=1):
        split = split_for(people, cell.fold, spec.inner_validation)
        pack = ensure_pack(aligned, split, size, work)
        run_dir = work / spec.name / "runs" / cell.slug
        config = train_config(spec, cell, pack, run_dir)
        digest = config_hash(config)
        key = _row_key(cell.arm, _value_text(cell.sweep_value), str(cell.seed), str(cell.fold))
        prefix = f"[{index}/{len(todo)}] {cell.label:28s} fold {cell.fold} seed {cell.seed}"
        previous = done.get(key)
        if previous is not None and previous["config_hash"] == digest:
            log(f"{prefix}: done earlier, accuracy {100 * float(previous['accuracy']):.2f}%")
            continue
        where = provenance(device=device_description(config.device if config.device != "auto" else None))
        base_row = {"spec": spec.name, "cell": cell.slug, "run_dir": str(run_dir), "arm": cell.arm, "label": cell.label,
                    "sweep_key": spec.sweep_key, "sweep_value": _value_text(cell.sweep_value), "seed": cell.seed,
                    "fold": cell.fold}
        try:
            result = train(config)
        except NonFiniteLossError as err:
            # a diverged arm is a result too: record it, keep going with the other cells
            row = {**base_row, "status": "diverged", "reason": str(err).split(";")[0], "accuracy": float("nan"),
                   "input": f"{height}x{width}", "profile": spec.profile, "config_hash": digest, **where}
            append_rows(csv_path, [row])
            done[key] = {k: str(v) for k, v in row.items()}
            write_reports(spec, csv_path, work / spec.name / "cells")
            log(f"{prefix}: diverged ({row['reason']})")
            continue
        metrics = evaluate_cell(spec, cell, run_dir / "checkpoints" / "last.pt", protocol_dir, aligned,
                                split.test_people, work / spec.name / "cells" / f"{cell.slug}.npz")
        row = {
            **base_row, "status": "ok", "reason": "",
            "accuracy": metrics["accuracy"], "auc": metrics["auc"], "tar_at_far_1e-3": metrics["tar_at_far_1e-3"],
            "threshold": metrics["threshold"],
            "inner_fold": metrics.get("inner_fold", ""), "inner_accuracy": metrics.get("inner_accuracy", ""),
            "compactness": metrics["compactness"], "separation": metrics["separation"], "ratio": metrics["ratio"],
            "geometry_identities": metrics["geometry_identities"],
            "train_accuracy": result.train_accuracy, "final_loss": result.last_values.get("total", float("nan")),
            "iterations": result.step, "train_images": int(np.load(pack / "labels.npy").size),
            "input": f"{height}x{width}", "train_seconds": result.total_seconds,
            "eval_seconds": metrics["eval_seconds"], "profile": spec.profile, "config_hash": digest, **where,
        }
        append_rows(csv_path, [row])
        done[key] = {k: str(v) for k, v in row.items()}
        write_reports(spec, csv_path, work / spec.name / "cells")
        log(f"{prefix}: accuracy {100 * metrics['accuracy']:.2f}%, AUC {metrics['auc']:.4f}, "
            f"compactness/separation {metrics['ratio']:.3f}, {row['train_seconds']:.0f} s training")
    if csv_path.is_file():
        write_reports(spec, csv_path, work / spec.name / "cells")
    return csv_path
