"""The figures of an ablation report, from its rows: accuracy per arm (mean, 95% bootstrap interval,
every cell a dot), pooled held-out ROC per arm, a 2-D projection of held-out identities, each arm's
tuning trials, a sweep's curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from faceverify.ablation.geometry import projection  # noqa: E402
from faceverify.ablation.rows import row_value  # noqa: E402
from faceverify.ablation.spec import AblationSpec  # noqa: E402
from faceverify.ablation.stats import bootstrap_ci  # noqa: E402
from faceverify.evaluation.report import plot_roc as plot_curves  # noqa: E402
from faceverify.io import save_figure  # noqa: E402


def plot_accuracy(labels: list[str], by_label: dict[str, list[dict[str, str]]], path: Path, title: str,
                  resamples: int) -> None:
    means = [100 * np.nanmean([row_value(r, "accuracy") for r in by_label[label]]) for label in labels]
    intervals = [bootstrap_ci([row_value(r, "accuracy") for r in by_label[label]], resamples) for label in labels]
    errors = np.array([[m - 100 * lo, 100 * hi - m] for m, (lo, hi) in zip(means, intervals)]).T
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2), 4.2), dpi=120)
    ax.bar(range(len(labels)), means, yerr=errors, capsize=4, color="#4c72b0")
    for i, label in enumerate(labels):  # every cell as a dot, so the spread is visible
        values = [100 * row_value(r, "accuracy") for r in by_label[label]]
        ax.scatter([i] * len(values), values, color="black", s=10, zorder=3)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    finite = [v for v in means if np.isfinite(v)]
    low = min(100 * lo for lo, _ in intervals if np.isfinite(lo)) if finite else 0
    ax.set_ylim(max(0.0, low - 5), min(100.0, max(finite or [100]) + 5))
    ax.set_ylabel("held-out LFW accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def cell_arrays(row: dict[str, str], keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays ``keys`` of a row's cell file, read once; None when the file is not there (a
    recording resumed in another checkout lacks the files of its earlier cells) or lacks a key."""
    file = Path(row.get("cell_file", ""))
    if not row.get("cell_file") or not file.is_file():
        return None
    with np.load(file) as data:
        return {key: data[key] for key in keys} if all(key in data for key in keys) else None


def plot_roc(labels: list[str], by_label: dict[str, list[dict[str, str]]], path: Path, title: str) -> dict[str, int]:
    """One held-out ROC per arm, the fold scores of its cells pooled — of those cells whose file is
    still there (:func:`cell_arrays`). The legend names how many of the arm's cells each curve pools.
    Returns that count per arm (0: no curve); nothing is written when no arm has a curve."""
    curves, pooled = {}, {}
    for label in labels:
        cells = [arrays for row in by_label[label] if (arrays := cell_arrays(row, ("scores", "same")))]
        pooled[label] = 0
        if not cells:
            continue
        same = np.concatenate([c["same"] for c in cells])
        if same.any() and (~same).any():
            far, tar, _ = roc_curve(same, np.concatenate([c["scores"] for c in cells]))
            pooled[label] = len(cells)
            curves[f"{label} ({len(cells)} of {len(by_label[label])} cells)"] = (far, tar)
    if curves:
        plot_curves(curves, path, title=title, floor=1e-3)
    return pooled


def plot_projection(labels: list[str], by_label: dict[str, list[dict[str, str]]], path: Path) -> bool:
    """One panel per arm: its first cell (by seed, then fold) whose cell file is still there and holds
    projection features (:func:`cell_arrays`). Returns whether the figure was drawn (no arm has such
    a cell: nothing is written)."""
    shown = []
    for label in labels:
        for row in sorted(by_label[label], key=lambda r: (int(r["seed"]), int(r["fold"]))):
            arrays = cell_arrays(row, ("projection_features", "projection_labels"))
            if arrays is not None:
                shown.append((label, row, arrays))
                break
    if not shown:
        return False
    columns = min(4, len(shown))
    grid_rows = (len(shown) + columns - 1) // columns
    panel = 4.2 if len(shown) == 1 else 3.2  # one arm gets room for its title and legend
    fig, axes = plt.subplots(grid_rows, columns, figsize=(panel * columns, panel * 0.95 * grid_rows), dpi=110,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, row, arrays) in zip(axes.flat, shown):
        names = [str(n) for n in arrays["projection_labels"]]
        points = projection(arrays["projection_features"], names, sorted(set(names)))
        ax.axis("on")
        for i, name in enumerate(sorted(set(names))):
            mask = np.array(names) == name
            ax.scatter(points[mask, 0], points[mask, 1], s=9, color=plt.cm.tab10(i % 10), label=name)
        ax.set_title(f"{label}\nfold {row['fold']}, seed {row['seed']}, ratio {row_value(row, 'ratio'):.2f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(4, max(len(names), 1)), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle("2-D PCA of held-out identities' embeddings\n(never trained on)", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 0.93))
    save_figure(fig, path)
    plt.close(fig)
    return True


def plot_tuning(spec: AblationSpec, trial_rows: list[dict[str, str]], path: Path) -> None:
    arms = [arm for arm in spec.arms if any(r["arm"] == arm for r in trial_rows)]
    if not arms:
        return
    columns = min(3, len(arms))
    grid_rows = (len(arms) + columns - 1) // columns
    fig, axes = plt.subplots(grid_rows, columns, figsize=(3.6 * columns, 2.8 * grid_rows), dpi=110, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, arm in zip(axes.flat, arms):
        ax.axis("on")
        rows = [r for r in trial_rows if r["arm"] == arm and r.get("status") == "ok"]
        for fold in sorted({r["fold"] for r in rows}, key=int):
            group = sorted((r for r in rows if r["fold"] == fold), key=lambda r: int(r["trial"]))
            ax.plot([int(r["trial"]) for r in group], [100 * row_value(r, "inner_accuracy") for r in group], marker="o",
                    label=f"fold {fold}")
        ax.set_title(arm, fontsize=9)
        ax.set_xlabel("trial", fontsize=8)
        ax.set_ylabel("inner accuracy (%)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"{spec.name}: tuning trials scored by inner validation", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_sweep(spec: AblationSpec, rows: list[dict[str, str]], path: Path) -> None:
    swept = [r for r in rows if r["arm"] == spec.sweep_arm and r["sweep_value"] != ""]
    if not swept:
        return
    values = sorted({float(r["sweep_value"]) for r in swept})
    means = [100 * np.mean([row_value(r, "accuracy") for r in swept if float(r["sweep_value"]) == v]) for v in values]
    stds = [100 * np.std([row_value(r, "accuracy") for r in swept if float(r["sweep_value"]) == v]) for v in values]
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=120)
    positions = np.arange(len(values))
    ax.errorbar(positions, means, yerr=stds, marker="o", capsize=4)
    ax.set_xticks(positions)
    ax.set_xticklabels([f"{v:g}" for v in values])
    ax.set_xlabel(f"{spec.sweep_key} ({spec.sweep_arm})")
    ax.set_ylabel("held-out LFW accuracy (%)")
    ax.set_title(f"{spec.name}: mean ± std over folds and seeds", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
