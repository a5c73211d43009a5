"""Tables and plots of an ablation, regenerated from its CSVs (never edited by hand).

Writes next to ``<name>.csv``: ``<name>.md`` and the figures ``<name>_accuracy.png`` (mean and
95% bootstrap interval per arm, every cell a dot), ``<name>_roc.png`` (held-out ROC per arm,
pooled cells), ``<name>_projection.png`` (2-D PCA of a few held-out identities), and with tuning
``<name>_tuning.png`` (each arm's trials scored by inner validation), with a sweep
``<name>_sweep.png``.

The report counts one row per cell: the latest for each (arm, value, trial, seed, fold); rows of
earlier configurations stay in the CSV and are counted apart. Each arm gets its mean with a 95%
bootstrap interval over cells; every other arm is paired with the reference arm on the same
(fold, seed) and called better, worse or **indistinguishable** by that interval; an arm whose
embedding collapsed is flagged.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from faceverify.ablation.geometry import projection  # noqa: E402
from faceverify.ablation.spec import AblationSpec, Cell, held_out_folds, trial_cells  # noqa: E402
from faceverify.ablation.spec import cells as spec_cells  # noqa: E402
from faceverify.ablation.stats import bootstrap_ci, paired_comparison  # noqa: E402
from faceverify.evaluation.report import plot_roc as plot_curves  # noqa: E402
from faceverify.io import save_figure, write_text  # noqa: E402
from faceverify.results import read_rows  # noqa: E402

PAPER_ORDER = ("softmax", "softmax+contrastive", "softmax+center")
KEY = ("arm", "sweep_value", "trial", "seed", "fold")


def _f(row: dict[str, str], key: str) -> float:
    try:
        return float(row[key])
    except (KeyError, ValueError, TypeError):
        return float("nan")


def _pct(x: float) -> str:
    return f"{100 * x:.2f}" if np.isfinite(x) else "n/a"


def latest_rows(rows: list[dict[str, str]]) -> tuple[list[dict[str, str]], int]:
    """One row per cell, the latest in the file; and how many earlier rows were set aside."""
    latest: dict[tuple[str, ...], dict[str, str]] = {}
    for row in rows:
        latest[tuple(row.get(k, "") for k in KEY)] = row
    return list(latest.values()), len(rows) - len(latest)


def _labels_in_order(spec: AblationSpec, rows: list[dict[str, str]]) -> list[str]:
    present = {r["label"] for r in rows}
    ordered = []
    for arm in spec.arms:
        if spec.sweep_key and arm == spec.sweep_arm:
            ordered += [Cell(arm, 0, 1, float(v)).label for v in spec.sweep_values]
        else:
            ordered.append(arm)
    return [label for label in ordered if label in present]


def _fmt(value: float, spec: str) -> str:
    return format(value, spec) if np.isfinite(value) else "n/a"


def _mean(rows: list[dict[str, str]], key: str) -> float:
    values = [_f(r, key) for r in rows]
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def summary_table(labels: list[str], by_label: dict[str, list[dict[str, str]]], trials_by_arm: dict[str, list],
                  resamples: int) -> list[str]:
    lines = [
        "| arm | cells | accuracy % [95% CI] | AUC | TAR@FAR=1e-3 % | Recall@1 % | MAP@R | compactness | "
        "separation | effective rank | collapsed | images seen / cell | wall min (trials + cells) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in labels:
        rows = by_label[label]
        acc = [_f(r, "accuracy") for r in rows]
        low, high = bootstrap_ci(acc, resamples)
        collapsed = sum(r.get("collapsed") == "True" for r in rows)
        seconds = sum(_f(r, "train_seconds") + _f(r, "eval_seconds") for r in rows + trials_by_arm.get(
            rows[0]["arm"], []) if r.get("status") == "ok")
        lines.append(
            f"| {label} | {len(rows)} | {_pct(float(np.nanmean(acc)))} [{_pct(low)}, {_pct(high)}] | "
            f"{_fmt(_mean(rows, 'auc'), '.4f')} | {_pct(_mean(rows, 'tar_at_far_1e-3'))} | "
            f"{_pct(_mean(rows, 'recall_at_1'))} | {_fmt(_mean(rows, 'map_at_r'), '.3f')} | "
            f"{_fmt(_mean(rows, 'compactness'), '.3f')} | {_fmt(_mean(rows, 'separation'), '.3f')} | "
            f"{_fmt(_mean(rows, 'effective_rank'), '.1f')} | {'**yes**' if collapsed else 'no'}"
            f"{f' ({collapsed}/{len(rows)})' if collapsed else ''} | {int(_mean(rows, 'images_seen')) if np.isfinite(_mean(rows, 'images_seen')) else ''} | "
            f"{seconds / 60:.1f} |"
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


def paired_differences(labels: list[str], by_label: dict[str, list[dict[str, str]]], reference: str,
                       resamples: int) -> list[str]:
    """Every arm minus the reference on the same (fold, seed), in accuracy points."""
    ref = {(r["fold"], r["seed"]): _f(r, "accuracy") for r in by_label[reference]}
    lines = [
        f"Paired differences against `{reference}` (same held-out fold and seed), in accuracy points, with a 95% "
        "bootstrap interval and the Wilcoxon signed-rank test; an arm is called better or worse only when the "
        "interval excludes 0, otherwise **indistinguishable**.",
        "",
        "| arm | pairs | mean difference [95% CI] | Wilcoxon p | arm better in | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for label in labels:
        if label == reference:
            continue
        diffs = [100 * (_f(r, "accuracy") - ref[(r["fold"], r["seed"])]) for r in by_label[label]
                 if (r["fold"], r["seed"]) in ref]
        stats = paired_comparison(diffs, resamples)
        if not stats.n:
            continue
        p = f"{stats.p_value:.3f}" if np.isfinite(stats.p_value) else "n/a"
        lines.append(f"| {label} | {stats.n} | {stats.mean:+.2f} [{stats.low:+.2f}, {stats.high:+.2f}] | {p} | "
                     f"{stats.wins} of {stats.n} | {stats.verdict} |")
    return lines


def ordering_check(by_label: dict[str, list[dict[str, str]]], resamples: int) -> list[str]:
    if not all(arm in by_label for arm in PAPER_ORDER):
        return []
    means = {arm: float(np.mean([_f(r, "accuracy") for r in by_label[arm]])) for arm in PAPER_ORDER}
    steps = []
    for low_arm, high_arm in zip(PAPER_ORDER, PAPER_ORDER[1:]):
        ref = {(r["fold"], r["seed"]): _f(r, "accuracy") for r in by_label[low_arm]}
        diffs = [100 * (_f(r, "accuracy") - ref[(r["fold"], r["seed"])]) for r in by_label[high_arm]
                 if (r["fold"], r["seed"]) in ref]
        stats = paired_comparison(diffs, resamples)
        steps.append(f"{high_arm} vs {low_arm}: {stats.mean:+.2f} points [{stats.low:+.2f}, {stats.high:+.2f}], "
                     f"{stats.verdict}")
    holds = means[PAPER_ORDER[0]] < means[PAPER_ORDER[1]] < means[PAPER_ORDER[2]]
    return ["Wen et al.'s ordering (softmax < softmax+contrastive < softmax+center) "
            + ("holds" if holds else "does not hold") + " in the means: "
            + ", ".join(f"{arm} {_pct(means[arm])}%" for arm in PAPER_ORDER) + ". Paired steps: "
            + "; ".join(steps) + "."]


def tuning_section(spec: AblationSpec, trial_rows: list[dict[str, str]]) -> list[str]:
    if not trial_rows:
        return []
    metric = spec.tuning.metric
    lines = [f"## Tuning ({spec.tuning.trials} {spec.tuning.search} trials per arm and held-out fold, scored by "
             f"inner-validation {metric.replace('_', ' ')})", "",
             "Each trial trains on the training people minus one more people set and is scored on that set's pairs "
             "(the threshold from the eight folds that are neither the test fold nor the set); the test fold is never "
             "looked at. Chosen values (best trial per arm and fold):", "",
             "| arm | fold | chosen | inner accuracy % | inner MAP@R |", "|---|---|---|---|---|"]
    by_arm_fold: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in trial_rows:
        by_arm_fold[(row["arm"], row["fold"])].append(row)
    curves = []
    for arm in spec.arms:
        for fold in sorted({f for a, f in by_arm_fold if a == arm}, key=int):
            group = sorted(by_arm_fold[(arm, fold)], key=lambda r: int(r["trial"]))
            scored = [(_f(r, f"inner_{metric}"), -int(r["trial"]), r) for r in group if r.get("status") == "ok"]
            if not scored:
                continue
            best = max(scored, key=lambda t: (t[0] if np.isfinite(t[0]) else -np.inf, t[1]))[2]
            lines.append(f"| {arm} | {fold} | `{best['values']}` | {_pct(_f(best, 'inner_accuracy'))} | "
                         f"{_f(best, 'inner_map_at_r'):.3f} |")
        trials = sorted({r["trial"] for r in trial_rows if r["arm"] == arm}, key=int)
        folds = sorted({r["fold"] for r in trial_rows if r["arm"] == arm}, key=int)
        if trials:
            curves += ["", f"Tuning curve of `{arm}` (inner-validation accuracy %, per fold):", "",
                       "| trial | values | " + " | ".join(f"fold {f}" for f in folds) + " |",
                       "|---|---|" + "---|" * len(folds)]
            for trial in trials:
                cells = []
                values = ""
                for fold in folds:
                    row = next((r for r in by_arm_fold[(arm, fold)] if r["trial"] == trial), None)
                    values = values or (row["values"] if row else "")
                    status = "" if row is None else (_pct(_f(row, "inner_accuracy")) if row.get("status") == "ok"
                                                     else "diverged")
                    cells.append(status)
                curves.append(f"| {trial} | `{values}` | " + " | ".join(cells) + " |")
    return lines + curves


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


def timing_line(rows: list[dict[str, str]], trial_rows: list[dict[str, str]]) -> str:
    """Compute time from the rows: training + evaluation of trials and cells, and the wall span."""
    everything = [r for r in rows + trial_rows if r.get("time_utc")]
    seconds = [_f(r, "train_seconds") + _f(r, "eval_seconds") for r in everything]
    seconds = [s for s in seconds if np.isfinite(s)]
    starts = sorted(datetime.strptime(r["time_utc"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
                    for r in everything)
    span = (starts[-1] - starts[0]).total_seconds() if starts else 0.0
    return (f"Time: {sum(seconds) / 60:.1f} min of training and evaluation over {len(rows)} cells and "
            f"{len(trial_rows)} tuning trials; {span / 60:.1f} min from the first row to the last (rows recorded in "
            f"several runs lengthen this span).")


def plot_accuracy(labels: list[str], by_label: dict[str, list[dict[str, str]]], path: Path, title: str,
                  resamples: int) -> None:
    means = [100 * np.nanmean([_f(r, "accuracy") for r in by_label[label]]) for label in labels]
    intervals = [bootstrap_ci([_f(r, "accuracy") for r in by_label[label]], resamples) for label in labels]
    errors = np.array([[m - 100 * lo, 100 * hi - m] for m, (lo, hi) in zip(means, intervals)]).T
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2), 4.2), dpi=120)
    ax.bar(range(len(labels)), means, yerr=errors, capsize=4, color="#4c72b0")
    for i, label in enumerate(labels):  # every cell as a dot, so the spread is visible
        values = [100 * _f(r, "accuracy") for r in by_label[label]]
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


def plot_roc(labels: list[str], by_label: dict[str, list[dict[str, str]]], path: Path, title: str) -> None:
    """One held-out ROC per arm, its cells' fold scores pooled."""
    curves = {}
    for label in labels:
        scores, same = [], []
        for row in by_label[label]:
            file = Path(row.get("cell_file", ""))
            if row.get("cell_file") and file.is_file():
                with np.load(file) as data:
                    if "scores" in data:
                        scores.append(data["scores"])
                        same.append(data["same"])
        if scores and np.concatenate(same).any() and (~np.concatenate(same)).any():
            far, tar, _ = roc_curve(np.concatenate(same), np.concatenate(scores))
            curves[label] = (far, tar)
    if curves:
        plot_curves(curves, path, title=title, floor=1e-3)


def plot_projection(labels: list[str], by_label: dict[str, list[dict[str, str]]], path: Path) -> None:
    shown = []
    for label in labels:
        rows = sorted(by_label[label], key=lambda r: (int(r["seed"]), int(r["fold"])))
        file = Path(rows[0].get("cell_file", ""))
        if rows[0].get("cell_file") and file.is_file():
            with np.load(file) as data:
                if "projection_features" in data:
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
            ax.plot([int(r["trial"]) for r in group], [100 * _f(r, "inner_accuracy") for r in group], marker="o",
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


def _progress_line(spec: AblationSpec, rows: list[dict[str, str]], trial_rows: list[dict[str, str]]) -> list[str]:
    """A line saying the recording is incomplete (cells and trials done of those the spec plans), or nothing."""
    planned_cells = len(spec_cells(spec))
    planned_trials = sum(len(trial_cells(spec, fold)) for fold in held_out_folds(spec))
    if len(rows) >= planned_cells and len(trial_rows) >= planned_trials:
        return []
    return [f"**Incomplete recording**: {len(rows)} of {planned_cells} planned cells and {len(trial_rows)} of "
            f"{planned_trials} tuning trials so far; re-running `faceverify ablate` on the spec continues it "
            "(finished cells are kept). Statistics below cover the finished cells only.", ""]


def write_reports(spec: AblationSpec, csv_path: Path, tuning_path: Path | None = None) -> Path:
    with warnings.catch_warnings():  # a metric no cell has (e.g. MAP@R of a train_source run) reads "n/a"
        warnings.simplefilter("ignore", RuntimeWarning)
        return _write_reports(spec, csv_path, tuning_path)


def _write_reports(spec: AblationSpec, csv_path: Path, tuning_path: Path | None) -> Path:
    stem = csv_path.stem
    out = csv_path.parent
    all_rows, stale = latest_rows(read_rows(csv_path)) if csv_path.is_file() else ([], 0)
    trial_rows, stale_trials = (latest_rows(read_rows(tuning_path)) if tuning_path is not None
                                and tuning_path.is_file() else ([], 0))
    rows = [r for r in all_rows if r.get("status", "ok") == "ok"]
    diverged = [r for r in all_rows if r.get("status") == "diverged"]
    if not rows:
        write_text(out / f"{stem}.md", f"# Ablation `{spec.name}`\n\nNo finished cell yet ({len(trial_rows)} tuning "
                                       f"trial(s) recorded); {len(diverged)} diverged.\n")
        return out / f"{stem}.md"
    by_label: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_label[row["label"]].append(row)
    trials_by_arm: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in trial_rows:
        trials_by_arm[row["arm"]].append(row)
    labels = _labels_in_order(spec, rows)
    commits = sorted({r["commit"] for r in rows})
    devices = sorted({r["device"] for r in rows})
    reference = spec.reference or ("softmax" if "softmax" in by_label else labels[0])
    resamples = spec.bootstrap
    evaluated = ("every LFW fold (threshold from the other folds) and the .bin sets" if spec.train_source else
                 "the held-out fold's pairs (threshold chosen on the other nine folds' pairs; AUC, TAR, Recall@1 and "
                 "MAP@R on the held-out people alone)")
    lines = [
        f"# Ablation `{spec.name}` ({spec.profile} profile)",
        "",
        f"Generated from `{csv_path.name}` by `faceverify ablate`; do not edit by hand. {len(rows)} cell(s) over "
        f"folds {sorted({int(r['fold']) for r in rows})} x seeds {sorted({int(r['seed']) for r in rows})}, "
        f"{len(trial_rows)} tuning trial(s), {len(diverged)} diverged; input {rows[0]['input']}; commit(s) "
        f"{', '.join(commits)}; device(s) {', '.join(devices)}.",
        "",
        *_progress_line(spec, rows, trial_rows),
        ("Protocol: train on " + (f"`{spec.train_source}`" if spec.train_source else
                                  "the people of the other nine people.txt sets with at least two images")
         + f", evaluate on {evaluated}. Every arm sees the same number of images (iterations x batch) through the "
           "same network. Means carry a 95% bootstrap interval over cells; geometry on the held-out people's "
           "L2-normalised embeddings; an embedding is flagged *collapsed* when its effective rank falls below 2 "
           "or its compactness and separation both below 0.01."),
        "",
        *summary_table(labels, by_label, trials_by_arm, resamples),
        "",
        "Held-out accuracy per fold (%, mean over seeds):",
        "",
        *per_fold_table(labels, by_label),
    ]
    if len(labels) > 1 and reference in by_label:  # with one arm there is nothing to pair with
        lines += ["", *paired_differences(labels, by_label, reference, resamples)]
    check = ordering_check(by_label, resamples)
    if check:
        lines += ["", *check]
    if diverged:
        lines += ["", "Cells whose training diverged (non-finite loss; left out of the statistics above):", ""]
        lines += [f"- {r['label']}, fold {r['fold']}, seed {r['seed']}: {r['reason']}" for r in diverged]
    tuning = tuning_section(spec, trial_rows)
    if tuning:
        lines += ["", *tuning]
    sweep = sweep_section(spec, rows)
    if sweep:
        lines += ["", *sweep]
    if stale or stale_trials:
        lines += ["", f"{stale + stale_trials} row(s) of earlier configurations or runs of the same cells stay in the "
                      "CSVs and are not counted above (each cell counts once, with its latest row)."]
    lines += ["", timing_line(rows, trial_rows)]
    lines += ["", f"![accuracy]({stem}_accuracy.png) ![roc]({stem}_roc.png)", "", f"![projection]({stem}_projection.png)"]
    if trial_rows:
        lines += ["", f"![tuning]({stem}_tuning.png)"]
    if sweep:
        lines += ["", f"![sweep]({stem}_sweep.png)"]
    write_text(out / f"{stem}.md", "\n".join(lines) + "\n")
    title = f"{spec.name}: held-out accuracy, mean and 95% interval over cells"
    plot_accuracy(labels, by_label, out / f"{stem}_accuracy.png", title, resamples)
    plot_roc(labels, by_label, out / f"{stem}_roc.png", f"{spec.name}: held-out ROC (pooled cells)")
    plot_projection(labels, by_label, out / f"{stem}_projection.png")
    if trial_rows:
        plot_tuning(spec, trial_rows, out / f"{stem}_tuning.png")
    if spec.sweep_key:
        plot_sweep(spec, rows, out / f"{stem}_sweep.png")
    return out / f"{stem}.md"


__all__ = ["write_reports", "latest_rows"]
