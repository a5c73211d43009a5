"""The points of the demo's accuracy/time curve (``results/demo/training_curve.csv``), shared by
the script that records and plots it (``demo_tradeoffs.py --curve``) and the README generator.

One point per (sampler, BatchNorm, length): the latest row of each seed, averaged over seeds. Rows
recorded before a column existed count as PK batches, no BatchNorm, seed 0. Plain CSV logic, no
torch, so that ``update_readme.py`` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass

# what an empty cell of a column added later means: how the rows before it were recorded
LEGACY = {"sampler": "pk", "batch_norm": "False", "seed": "0"}


@dataclass
class CurvePoint:
    sampler: str  # "shuffle" (random batches) or "pk"
    batch_norm: bool
    iterations: int
    accuracies: list[float]  # percent, one per seed (in the order the seeds were first recorded)
    minutes: float  # mean training minutes over the seeds

    @property
    def accuracy(self) -> float:
        return sum(self.accuracies) / len(self.accuracies)

    @property
    def label(self) -> str:
        return f"{'random' if self.sampler == 'shuffle' else 'PK'} batches{', BatchNorm' if self.batch_norm else ''}"


def _value(row: dict[str, str], column: str) -> str:
    return row.get(column) or LEGACY[column]


def curve_points(rows: list[dict[str, str]], fold: int) -> list[CurvePoint]:
    """The curve's points of held-out ``fold``, sorted by (sampler, BatchNorm, iterations)."""
    latest: dict[tuple[str, str, int], dict[str, dict[str, str]]] = {}
    for row in rows:
        if int(row["fold"]) == fold:
            variant = (_value(row, "sampler"), _value(row, "batch_norm"), int(row["iterations"]))
            latest.setdefault(variant, {})[_value(row, "seed")] = row
    points = []
    for (sampler, batch_norm, iterations), by_seed in sorted(latest.items()):
        runs = list(by_seed.values())
        points.append(CurvePoint(sampler, batch_norm == "True", iterations,
                                 [100 * float(r["accuracy"]) for r in runs],
                                 sum(float(r["train_seconds"]) for r in runs) / len(runs) / 60))
    return points
