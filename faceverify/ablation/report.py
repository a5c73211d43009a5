"""Tables and plots of an ablation, regenerated from its CSV (never edited by hand).

Writes next to ``<name>.csv``: ``<name>.md`` (mean and std per arm, per-fold accuracies, paired
differences against the reference arm, the paper's ordering check, the sweep table),
``<name>_accuracy.png`` (bars with error bars), ``<name>_roc.png`` (held-out ROC per arm, pooled
over cells), ``<name>_projection.png`` (2-D PCA of a few held-out identities per arm) and, for a
sweep, ``<name>_sweep.png`` (held-out accuracy against the swept value, with error bars).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from faceverify.ablation.geometry import projection  # noqa: E402
from faceverify.ablation.spec import AblationSpec, Cell  # noqa: E402
from faceverify.evaluation.report import plot_roc as plot_curves  # noqa: E402
from faceverify.io import save_figure, write_text  # noqa: E402
from faceverify.results import read_rows  # noqa: E402

PAPER_ORDER = ("softmax", "softmax+contrastive", "softmax+center")


def _f(row: dict[str, str], key: str) -> float:
    try:
        return float(row[key])
    except (KeyError, ValueError):
        return float("nan")


def _labels_in_order(spec: AblationSpec, rows: list[dict[str, str]]) -> list[str]:
    present = {r["label"] for r in rows}
    ordered = []
    for arm in spec.arms:
        if spec.sweep_key and arm == spec.sweep_arm:
            ordered += [Cell(arm, 0, 1, float(v)).label for v in spec.sweep_values]
        else:
            ordered.append(arm)
    return [label for label in ordered if label in present]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def summary_table(labels: list[str], by_label: dict[str, list[dict[str, str]]]) -> list[str]:
    lines = [
        "| arm | cells | accuracy % (mean ± std) | AUC | TAR@FAR=1e-3 % | compactness | separation | "
        "compactness / separation | train s / cell |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label in labels:
        rows = by_label[label]
        acc = np.array([_f(r, "accuracy") for r in rows])

        def mean(key: str) -> float:
            return float(np.nanmean([_f(r, key) for r in rows]))

        lines.append(
            f"| {label} | {len(rows)} | {_pct(acc.mean())} ± {_pct(acc.std())} | {mean('auc'):.4f} | "
            f"{_pct(mean('tar_at_far_1e-3'))} | {mean('compactness'):.3f} | {mean('separation'):.3f} | "
            f"{mean('ratio'):.3f} | {mean('train_seconds'):.0f} |"
        )
    return lines


def per_fold_table(labels: list[str], by_label: dict[str, list[dict[str, str]]]) -> list[str]:
    folds = sorted({int(r["fold"]) for rows in by_label.values() for r in rows})
    lines = ["| arm | " + " | ".join(f"fold {f}" for f in folds) + " |", "|---|" + "---|" * len(folds)]
    for label in labels:
        cells = []
        for fold in folds:
            values = [_f(r, "accuracy") for r in by_label[label] if int(r["fold"]) == fold]
            cells.append(_pct(float(np.mean(values))) if values else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def paired_differences(labels: list[str], by_label: dict[str, list[dict[str, str]]], reference: str) -> list[str]:
    """Accuracy of each arm minus the reference arm on the same (fold, seed), in points."""
    ref = {(r["fold"], r["seed"]): _f(r, "accuracy") for r in by_label[reference]}
    spread = 100 * float(np.std(list(ref.values())))
    lines = [
        f"Paired differences against `{reference}` (same held-out fold and seed), in accuracy points; "
        f"the fold-to-fold standard deviation of `{reference}` itself is {spread:.2f} points.",
        "",
        "| arm | pairs | mean difference | std of differences | arm better in |",
        "|---|---|---|---|---|",
    ]
    for label in labels:
        if label == reference:
            continue
        diffs = [100 * (_f(r, "accuracy") - ref[(r["fold"], r["seed"])]) for r in by_label[label]
                 if (r["fold"], r["seed"]) in ref]
        if not diffs:
            continue
        wins = sum(d > 0 for d in diffs)
        lines.append(f"| {label} | {len(diffs)} | {np.mean(diffs):+.2f} | {np.std(diffs):.2f} | "
                     f"{wins} of {len(diffs)} |")
    return lines


def ordering_check(by_label: dict[str, list[dict[str, str]]]) -> list[str]:
    if not all(arm in by_label for arm in PAPER_ORDER):
        return []
    means = {arm: float(np.mean([_f(r, "accuracy") for r in by_label[arm]])) for arm in PAPER_ORDER}
    stds = {arm: float(np.std([_f(r, "accuracy") for r in by_label[arm]])) for arm in PAPER_ORDER}
    holds = means[PAPER_ORDER[0]] < means[PAPER_ORDER[1]] < means[PAPER_ORDER[2]]
    gaps = [means[PAPER_ORDER[1]] - means[PAPER_ORDER[0]], means[PAPER_ORDER[2]] - means[PAPER_ORDER[1]]]
    largest_std = max(stds.values())
    return [
        "Wen et al.'s ordering (softmax < softmax+contrastive < softmax+center) "
        + ("holds" if holds else "does not hold") + " in the means at this scale: "
        + ", ".join(f"{arm} {_pct(means[arm])}%" for arm in PAPER_ORDER)
        + f". The steps are {100 * gaps[0]:+.2f} and {100 * gaps[1]:+.2f} points, against a fold-to-fold "
        f"standard deviation of up to {100 * largest_std:.2f} points"
        + (" (each step is smaller than that spread)." if max(abs(g) for g in gaps) < largest_std
           else " (at least one step exceeds that spread)."),
    ]


def sweep_section(spec: AblationSpec, rows: list[dict[str, str]]) -> list[str]:
    swept = [r for r in rows if r["arm"] == spec.sweep_arm and r["sweep_value"] != ""]
    if not swept:
        return []
    values = sorted({float(r["sweep_value"]) for r in swept})
    lines = [f"## Sweep of `{spec.sweep_key}` ({spec.sweep_arm})", "",
             "| value | cells | held-out accuracy % (mean ± std) | inner-validation accuracy % |",
             "|---|---|---|---|"]
    for value in values:
        group = [r for r in swept if float(r["sweep_value"]) == value]
        acc = np.array([_f(r, "accuracy") for r in group])
        inner = np.array([_f(r, "inner_accuracy") for r in group])
        inner_text = _pct(float(np.nanmean(inner))) if np.isfinite(inner).any() else "n/a"
        lines.append(f"| {value:g} | {len(group)} | {_pct(acc.mean())} ± {_pct(acc.std())} | {inner_text} |")
    if any(np.isfinite(_f(r, "inner_accuracy")) for r in swept):
        lines += ["", "Choosing the value by inner validation (a people set held out of training, never the "
                  "test fold), per held-out fold and seed:", "",
                  "| fold | seed | chosen value | its inner accuracy % | its held-out accuracy % |", "|---|---|---|---|---|"]
        chosen_acc = []
        for key in sorted({(r["fold"], r["seed"]) for r in swept}):
            group = [r for r in swept if (r["fold"], r["seed"]) == key]
            best = max(group, key=lambda r: (_f(r, "inner_accuracy"), -float(r["sweep_value"])))
            chosen_acc.append(_f(best, "accuracy"))
            lines.append(f"| {key[0]} | {key[1]} | {float(best['sweep_value']):g} | "
                         f"{_pct(_f(best, 'inner_accuracy'))} | {_pct(_f(best, 'accuracy'))} |")
        lines += ["", f"Held-out accuracy of the inner-validation choice: {_pct(float(np.mean(chosen_acc)))} ± "
                  f"{_pct(float(np.std(chosen_acc)))} %."]
    return lines


def timing_line(rows: list[dict[str, str]]) -> str:
    """Compute time from the rows: per-cell training + evaluation, and the wall span of the run."""
    seconds = [_f(r, "train_seconds") + _f(r, "eval_seconds") for r in rows]
    starts = sorted(datetime.strptime(r["time_utc"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc) for r in rows)
    last = max(rows, key=lambda r: r["time_utc"])
    span = (starts[-1] - starts[0]).total_seconds() + _f(last, "train_seconds") + _f(last, "eval_seconds")
    return (f"Time: {sum(seconds) / 60:.1f} min of training and evaluation over {len(rows)} cells "
            f"({np.mean(seconds) / 60:.1f} min per cell); {span / 60:.1f} min from the first cell's start to the "
            f"last cell's end (cells resumed in later runs lengthen this span).")


def plot_accuracy(labels: list[str], by_label: dict[str, list[dict[str, str]]], path: Path, title: str) -> None:
    means = [100 * np.mean([_f(r, "accuracy") for r in by_label[label]]) for label in labels]
    stds = [100 * np.std([_f(r, "accuracy") for r in by_label[label]]) for label in labels]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2), 4.2), dpi=120)
    ax.bar(range(len(labels)), means, yerr=stds, capsize=4, color="#4c72b0")
    for i, label in enumerate(labels):  # every cell as a dot, so the spread is visible
        values = [100 * _f(r, "accuracy") for r in by_label[label]]
        ax.scatter([i] * len(values), values, color="black", s=10, zorder=3)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    low = min(m - s for m, s in zip(means, stds))
    ax.set_ylim(max(0.0, low - 5), min(100.0, max(m + s for m, s in zip(means, stds)) + 2))
    ax.set_ylabel("held-out LFW accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_roc(labels: list[str], cell_dir: Path, by_label: dict[str, list[dict[str, str]]], path: Path,
             title: str) -> None:
    """One held-out ROC per arm, its cells' fold scores pooled."""
    curves = {}
    for label in labels:
        scores, same = [], []
        for row in by_label[label]:
            file = cell_dir / f"{row['cell']}.npz"
            if file.is_file():
                with np.load(file) as data:
                    scores.append(data["scores"])
                    same.append(data["same"])
        if scores:
            far, tar, _ = roc_curve(np.concatenate(same), np.concatenate(scores))
            curves[label] = (far, tar)
    plot_curves(curves, path, title=title, floor=1e-3)


def plot_projection(labels: list[str], cell_dir: Path, by_label: dict[str, list[dict[str, str]]], path: Path) -> None:
    shown = []
    for label in labels:
        rows = sorted(by_label[label], key=lambda r: (int(r["seed"]), int(r["fold"])))
        file = cell_dir / f"{rows[0]['cell']}.npz"
        if file.is_file():
            shown.append((label, rows[0], file))
    if not shown:
        return
    columns = min(4, len(shown))
    grid_rows = (len(shown) + columns - 1) // columns
    panel = 4.2 if len(shown) == 1 else 3.2  # one arm gets room for its title and legend
    fig, axes = plt.subplots(grid_rows, columns, figsize=(panel * columns, panel * 0.95 * grid_rows), dpi=110,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, row, file) in zip(axes.flat, shown):
        with np.load(file) as data:
            names = [str(n) for n in data["projection_labels"]]
            points = projection(data["projection_features"], names, sorted(set(names)))
        ax.axis("on")
        for i, name in enumerate(sorted(set(names))):
            mask = np.array(names) == name
            ax.scatter(points[mask, 0], points[mask, 1], s=9, color=plt.cm.tab10(i % 10), label=name)
        ax.set_title(f"{label}\nfold {row['fold']}, ratio {_f(row, 'ratio'):.2f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(4, max(len(names), 1)), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle("2-D PCA of held-out identities' embeddings\n(never trained on)", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 0.93))
    save_figure(fig, path)
    plt.close(fig)


def plot_sweep(spec: AblationSpec, rows: list[dict[str, str]], path: Path) -> None:
    swept = [r for r in rows if r["arm"] == spec.sweep_arm and r["sweep_value"] != ""]
    if not swept:
        return
    values = sorted({float(r["sweep_value"]) for r in swept})
    means = [100 * np.mean([_f(r, "accuracy") for r in swept if float(r["sweep_value"]) == v]) for v in values]
    stds = [100 * np.std([_f(r, "accuracy") for r in swept if float(r["sweep_value"]) == v]) for v in values]
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


def write_reports(spec: AblationSpec, csv_path: Path, cell_dir: Path) -> Path:
    all_rows = read_rows(csv_path)
    rows = [r for r in all_rows if r.get("status", "ok") == "ok"]
    diverged = [r for r in all_rows if r.get("status") == "diverged"]
    by_label: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_label[row["label"]].append(row)
    labels = _labels_in_order(spec, rows)
    out = csv_path.parent
    if not rows:
        write_text(out / f"{csv_path.stem}.md",
                   f"# Ablation `{spec.name}`\n\nNo finished cell yet; {len(diverged)} diverged.\n")
        return out / f"{csv_path.stem}.md"
    stem = csv_path.stem
    commits = sorted({r["commit"] for r in rows})
    devices = sorted({r["device"] for r in rows})
    reference = "softmax" if "softmax" in by_label else labels[0]
    lines = [
        f"# Ablation `{spec.name}` ({spec.profile} profile)",
        "",
        f"Generated from `{csv_path.name}` by `faceverify ablate`; do not edit by hand. "
        f"{len(rows)} finished cell(s), {len(diverged)} diverged; folds {sorted({int(r['fold']) for r in rows})}; seeds "
        f"{sorted({int(r['seed']) for r in rows})}; input {rows[0]['input']}; commit(s) {', '.join(commits)}; "
        f"device(s) {', '.join(devices)}.",
        "",
        "Protocol: LFW only. For held-out View 2 fold k, train on the people of the other nine people.txt "
        "sets with at least two images, test on fold k's 600 pairs (threshold chosen on the other nine "
        "folds' pairs; AUC and TAR on fold k alone). Geometry on the held-out people's L2-normalised "
        "embeddings.",
        "",
        *summary_table(labels, by_label),
        "",
        "Held-out accuracy per fold (%):",
        "",
        *per_fold_table(labels, by_label),
    ]
    if len(labels) > 1:  # with one arm there is nothing to pair with
        lines += ["", *paired_differences(labels, by_label, reference)]
    if diverged:
        lines += ["", "Cells whose training diverged (non-finite loss; left out of the statistics above):", ""]
        lines += [f"- {r['label']}, fold {r['fold']}, seed {r['seed']}: {r['reason']}" for r in diverged]
    check = ordering_check(by_label)
    if check:
        lines += ["", *check]
    sweep = sweep_section(spec, rows)
    if sweep:
        lines += ["", *sweep]
    lines += ["", timing_line(rows)]
    lines += ["", f"![accuracy]({stem}_accuracy.png) ![roc]({stem}_roc.png)", "",
              f"![projection]({stem}_projection.png)"]
    if sweep:
        lines += ["", f"![sweep]({stem}_sweep.png)"]
    write_text(out / f"{stem}.md", "\n".join(lines) + "\n")
    title = f"{spec.name}: held-out accuracy, mean ± std over folds and seeds"
    plot_accuracy(labels, by_label, out / f"{stem}_accuracy.png", title)
    plot_roc(labels, cell_dir, by_label, out / f"{stem}_roc.png", f"{spec.name}: held-out ROC (pooled cells)")
    plot_projection(labels, cell_dir, by_label, out / f"{stem}_projection.png")
    if spec.sweep_key:
        plot_sweep(spec, rows, out / f"{stem}_sweep.png")
    return out / f"{stem}.md"
