"""An ablation's CSV rows as the report and the plots read them: the latest row per cell, a row's
number, the arms' labels in the spec's order, a mean over rows."""

from __future__ import annotations

import numpy as np

from faceverify.ablation.spec import AblationSpec, Cell

KEY = ("arm", "sweep_value", "trial", "seed", "fold")  # what names a cell in a CSV


def row_value(row: dict[str, str], key: str) -> float:
    """A row's field as a number (NaN when missing or empty)."""
    try:
        return float(row[key])
    except (KeyError, ValueError, TypeError):
        return float("nan")


def latest_rows(rows: list[dict[str, str]]) -> tuple[list[dict[str, str]], int]:
    """One row per cell, the latest in the file; and how many earlier rows were set aside."""
    latest: dict[tuple[str, ...], dict[str, str]] = {}
    for row in rows:
        latest[tuple(row.get(k, "") for k in KEY)] = row
    return list(latest.values()), len(rows) - len(latest)


def labels_in_order(spec: AblationSpec, rows: list[dict[str, str]]) -> list[str]:
    """The labels present in ``rows``, in the spec's order of arms (a sweep's values in order)."""
    present = {r["label"] for r in rows}
    ordered = []
    for arm in spec.arms:
        if spec.sweep_key and arm == spec.sweep_arm:
            ordered += [Cell(arm, 0, 1, float(v)).label for v in spec.sweep_values]
        else:
            ordered.append(arm)
    return [label for label in ordered if label in present]


def mean_of(rows: list[dict[str, str]], key: str) -> float:
    """The mean of a field over rows, NaN when no row has it."""
    values = [row_value(r, key) for r in rows]
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
