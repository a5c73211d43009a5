"""Benchmark: the exact vectorised 10-fold protocol on the 6,000 LFW View 2 pairs.

Compared in the same run against the common fixed-grid search (facenet's ``calculate_roc``:
400 thresholds, a Python loop per threshold and fold), the baseline most evaluation scripts
use. Target: the 10-fold computation on 6,000 pairs in under 50 ms.

    python experiments/bench_protocol.py            # real pairs.txt from $FACEVERIFY_DATA
Writes ``results/benchmarks/protocol.csv`` (appends a row) and ``protocol.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from faceverify.data.lfw import read_pairs
from faceverify.evaluation.verification import evaluate_scores, fold_scores
from faceverify.provenance import device_description
from faceverify.results import provenance, record_rows

ROOT = Path(__file__).resolve().parent.parent


def grid_protocol(scores: np.ndarray, same: np.ndarray, fold: np.ndarray) -> float:
    """Baseline: facenet-style fixed grid of 400 thresholds, a loop per threshold."""
    thresholds = np.arange(-1.0, 1.0, 0.005)
    accs = []
    for k in range(10):
        train, test = fold != k, fold == k
        best, best_acc = thresholds[0], -1.0
        for t in thresholds:
            acc = np.mean((scores[train] > t) == same[train])
            if acc > best_acc:
                best, best_acc = t, acc
        accs.append(np.mean((scores[test] > best) == same[test]))
    return float(np.mean(accs))


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = parser.parse_args()
    pairs_path = args.pairs or Path(os.environ["FACEVERIFY_DATA"]) / "lfw" / "pairs.txt"
    pairs = read_pairs(pairs_path)
    keys = pairs.keys
    row = {k: i for i, k in enumerate(keys)}
    index_a = np.array([row[k] for k in pairs.keys_a])
    index_b = np.array([row[k] for k in pairs.keys_b])
    rng = np.random.default_rng(0)
    features = rng.normal(size=(len(keys), 512)).astype(np.float32)
    # make matched pairs similar so thresholds are not degenerate
    features[index_b[pairs.same]] = features[index_a[pairs.same]] + rng.normal(size=(int(pairs.same.sum()), 512))

    def ours_scores_and_protocol() -> None:
        scores = fold_scores(features, index_a, index_b, pairs.fold, "cosine")
        evaluate_scores(scores, pairs.same, pairs.fold, far_targets=())

    scores = fold_scores(features, index_a, index_b, pairs.fold, "cosine")[0]
    ours_protocol = best_of(lambda: evaluate_scores(scores, pairs.same, pairs.fold, far_targets=()), args.repeats)
    ours_total = best_of(ours_scores_and_protocol, args.repeats)
    grid = best_of(lambda: grid_protocol(scores, pairs.same, pairs.fold), max(2, args.repeats // 10))
    exact = evaluate_scores(scores, pairs.same, pairs.fold, far_targets=()).accuracy
    result = {
        **provenance(device=device_description("cpu")),
        "n_pairs": len(pairs),
        "exact_protocol_ms": 1000 * ours_protocol,
        "exact_with_cosine_scores_ms": 1000 * ours_total,
        "grid400_baseline_ms": 1000 * grid,
        "speedup_vs_grid": grid / ours_protocol,
        "exact_accuracy": exact,
        "grid_accuracy": grid_protocol(scores, pairs.same, pairs.fold),
        "target_ms": 50,
        "meets_target": ours_total < 0.050,
    }
    csv_path = args.out / "protocol.csv"
    record_rows(csv_path, [result], args.out / "protocol.md", "10-fold protocol timing (6,000 pairs)",
                note="Produced by `python experiments/bench_protocol.py`. Best of repeated runs; "
                     "512-d synthetic features, real pairs.txt folds.")
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
