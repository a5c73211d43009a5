"""The report of an ablation, regenerated from its CSVs (never edited by hand): tables here, the
figures in :mod:`faceverify.ablation.plots`.

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

import numpy as np

from faceverify.ablation.plots import plot_accuracy, plot_projection, plot_roc, plot_sweep, plot_tuning
from faceverify.ablation.rows import KEY, labels_in_order, latest_rows, mean_of, row_value  # noqa: F401 - KEY: API
from faceverify.ablation.spec import AblationSpec, held_out_folds, trial_cells
from faceverify.ablation.spec import cells as spec_cells
from faceverify.ablation.stats import bootstrap_ci, holm, paired_comparison
from faceverify.io import write_text
from faceverify.results import read_rows

PAPER_ORDER = ("softmax", "softmax+contrastive", "softmax+center")


def percent_or_na(x: float) -> str:
    """A fraction as a percentage with two decimals, or n/a."""
    return f"{100 * x:.2f}" if np.isfinite(x) else "n/a"


def formatted_or_na(value: float, spec: str) -> str:
    """A number in ``spec``'s format, or n/a."""
    return format(value, spec) if np.isfinite(value) else "n/a"


def summary_table(labels: list[str], by_label: dict[str, list[dict[str, str]]], trials_by_arm: dict[str, list],
                  resamples: int) -> list[str]:
    lines = [
        "| arm | cells | accuracy % [95% CI] | AUC | TAR@FAR=1e-3 % | Recall@1 % | MAP@R | compactness | "
        "separation | effective rank | collapsed | images seen / cell | wall min (trials + cells) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in labels:
        rows = by_label[label]
        acc = [row_value(r, "accuracy") for r in rows]
        low, high = bootstrap_ci(acc, resamples)
        collapsed = sum(r.get("collapsed") == "True" for r in rows)
        seconds = sum(row_value(r, "train_seconds") + row_value(r, "eval_seconds") for r in rows + trials_by_arm.get(
            rows[0]["arm"], []) if r.get("status") == "ok")
        lines.append(
            f"| {label} | {len(rows)} | {percent_or_na(float(np.nanmean(acc)))} [{percent_or_na(low)}, {percent_or_na(high)}] | "
            f"{formatted_or_na(mean_of(rows, 'auc'), '.4f')} | {percent_or_na(mean_of(rows, 'tar_at_far_1e-3'))} | "
            f"{percent_or_na(mean_of(rows, 'recall_at_1'))} | {formatted_or_na(mean_of(rows, 'map_at_r'), '.3f')} | "
            f"{formatted_or_na(mean_of(rows, 'compactness'), '.3f')} | {formatted_or_na(mean_of(rows, 'separation'), '.3f')} | "
            f"{formatted_or_na(mean_of(rows, 'effective_rank'), '.1f')} | {'**yes**' if collapsed else 'no'}"
            f"{f' ({collapsed}/{len(rows)})' if collapsed else ''} | {int(mean_of(rows, 'images_seen')) if np.isfinite(mean_of(rows, 'images_seen')) else ''} | "
            f"{seconds / 60:.1f} |"
        )
    return lines


def per_fold_table(labels: list[str], by_label: dict[str, list[dict[str, str]]]) -> list[str]:
    folds = sorted({int(r["fold"]) for rows in by_label.values() for r in rows})
    lines = ["| arm | " + " | ".join(f"fold {f}" for f in folds) + " |", "|---|" + "---|" * len(folds)]
    for label in labels:
        cells = []
        for fold in folds:
            values = [row_value(r, "accuracy") for r in by_label[label] if int(r["fold"]) == fold]
            cells.append(percent_or_na(float(np.mean(values))) if values else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def published_table(spec: AblationSpec, by_label: dict[str, list[dict[str, str]]]) -> list[str]:
    """The paper's accuracy beside each measured arm it names (``spec.published``), or nothing."""
    if not spec.published:
        return []
    lines = [f"Beside the paper ({spec.published_source or 'published figures'}). Its training data and network "
             "differ from this recording's: the columns sit side by side, the measured one is no reproduction.", "",
             "| arm | measured accuracy % (mean over cells) | cells | published % |", "|---|---|---|---|"]
    for arm, value in spec.published.items():
        cells = by_label.get(arm, [])
        measured = percent_or_na(float(np.mean([float(r["accuracy"]) for r in cells]))) if cells else "not recorded yet"
        lines.append(f"| {arm} | {measured} | {len(cells)} | {100 * value:.2f} |")
    return lines


def paired_differences(labels: list[str], by_label: dict[str, list[dict[str, str]]], reference: str,
                       resamples: int) -> list[str]:
    """Every arm minus the reference on the same (fold, seed), in accuracy points."""
    ref = {(r["fold"], r["seed"]): row_value(r, "accuracy") for r in by_label[reference]}
    lines = [
        f"Paired differences against `{reference}` (same held-out fold and seed), in accuracy points, with a 95% "
        "bootstrap interval and the Wilcoxon signed-rank test (its p-value, then Holm-adjusted over the table's "
        "comparisons); an arm is called better or worse only when the interval excludes 0, otherwise "
        "**indistinguishable**.",
        "",
        "| arm | pairs | mean difference [95% CI] | Wilcoxon p | Holm p | arm better in | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    compared = []
    for label in labels:
        if label == reference:
            continue
        diffs = [100 * (row_value(r, "accuracy") - ref[(r["fold"], r["seed"])]) for r in by_label[label]
                 if (r["fold"], r["seed"]) in ref]
        stats = paired_comparison(diffs, resamples)
        if stats.n:
            compared.append((label, stats))
    adjusted = holm([stats.p_value for _, stats in compared])
    for (label, stats), holm_p in zip(compared, adjusted):
        p = f"{stats.p_value:.3f}" if np.isfinite(stats.p_value) else "n/a"
        p_holm = f"{holm_p:.3f}" if np.isfinite(holm_p) else "n/a"
        lines.append(f"| {label} | {stats.n} | {stats.mean:+.2f} [{stats.low:+.2f}, {stats.high:+.2f}] | {p} | "
                     f"{p_holm} | {stats.wins} of {stats.n} | {stats.verdict} |")
    return lines


def best_arm_differences(labels: list[str], by_label: dict[str, list[dict[str, str]]], reference: str,
                          resamples: int) -> list[str]:
    """Every arm against the arm with the highest mean accuracy, paired as against the reference: the arms
    whose interval includes 0 are indistinguishable from the best at this budget. Empty when the best arm
    is the reference (its table already says it) or there are fewer than three arms."""
    scored = [label for label in labels if by_label.get(label)]
    if len(scored) < 3:
        return []
    best = max(scored, key=lambda label: mean_of(by_label[label], "accuracy"))
    if best == reference:
        return []
    return [f"The arm with the highest mean accuracy is `{best}`; paired against it, an arm whose interval includes 0 "
            "cannot be told apart from the best at this budget.", "",
            *paired_differences(scored, by_label, best, resamples)]


def ordering_check(by_label: dict[str, list[dict[str, str]]], resamples: int) -> list[str]:
    if not all(arm in by_label for arm in PAPER_ORDER):
        return []
    means = {arm: float(np.mean([row_value(r, "accuracy") for r in by_label[arm]])) for arm in PAPER_ORDER}
    steps = []
    for low_arm, high_arm in zip(PAPER_ORDER, PAPER_ORDER[1:]):
        ref = {(r["fold"], r["seed"]): row_value(r, "accuracy") for r in by_label[low_arm]}
        diffs = [100 * (row_value(r, "accuracy") - ref[(r["fold"], r["seed"])]) for r in by_label[high_arm]
                 if (r["fold"], r["seed"]) in ref]
        stats = paired_comparison(diffs, resamples)
        steps.append(f"{high_arm} vs {low_arm}: {stats.mean:+.2f} points [{stats.low:+.2f}, {stats.high:+.2f}], "
                     f"{stats.verdict}")
    holds = means[PAPER_ORDER[0]] < means[PAPER_ORDER[1]] < means[PAPER_ORDER[2]]
    return ["Wen et al.'s ordering (softmax < softmax+contrastive < softmax+center) "
            + ("holds" if holds else "does not hold") + " in the means: "
            + ", ".join(f"{arm} {percent_or_na(means[arm])}%" for arm in PAPER_ORDER) + ". Paired steps: "
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
            scored = [(row_value(r, f"inner_{metric}"), -int(r["trial"]), r) for r in group if r.get("status") == "ok"]
            if not scored:
                continue
            best = max(scored, key=lambda t: (t[0] if np.isfinite(t[0]) else -np.inf, t[1]))[2]
            lines.append(f"| {arm} | {fold} | `{best['values']}` | {percent_or_na(row_value(best, 'inner_accuracy'))} | "
                         f"{row_value(best, 'inner_map_at_r'):.3f} |")
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
                    status = "" if row is None else (percent_or_na(row_value(row, "inner_accuracy")) if row.get("status") == "ok"
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
        acc = np.array([row_value(r, "accuracy") for r in group])
        inner = np.array([row_value(r, "inner_accuracy") for r in group])
        inner_text = percent_or_na(float(np.nanmean(inner))) if np.isfinite(inner).any() else "n/a"
        lines.append(f"| {value:g} | {len(group)} | {percent_or_na(acc.mean())} ± {percent_or_na(acc.std())} | {inner_text} |")
    if any(np.isfinite(row_value(r, "inner_accuracy")) for r in swept):
        lines += ["", "Choosing the value by inner validation (a people set held out of training, never the "
                  "test fold), per held-out fold and seed:", "",
                  "| fold | seed | chosen value | its inner accuracy % | its held-out accuracy % |", "|---|---|---|---|---|"]
        chosen_acc = []
        for key in sorted({(r["fold"], r["seed"]) for r in swept}):
            group = [r for r in swept if (r["fold"], r["seed"]) == key]
            best = max(group, key=lambda r: (row_value(r, "inner_accuracy"), -float(r["sweep_value"])))
            chosen_acc.append(row_value(best, "accuracy"))
            lines.append(f"| {key[0]} | {key[1]} | {float(best['sweep_value']):g} | "
                         f"{percent_or_na(row_value(best, 'inner_accuracy'))} | {percent_or_na(row_value(best, 'accuracy'))} |")
        lines += ["", f"Held-out accuracy of the inner-validation choice: {percent_or_na(float(np.mean(chosen_acc)))} ± "
                  f"{percent_or_na(float(np.std(chosen_acc)))} %."]
    return lines


def timing_line(rows: list[dict[str, str]], trial_rows: list[dict[str, str]]) -> str:
    """Compute time from the rows: training + evaluation of trials and cells, and the wall span."""
    everything = [r for r in rows + trial_rows if r.get("time_utc")]
    seconds = [row_value(r, "train_seconds") + row_value(r, "eval_seconds") for r in everything]
    seconds = [s for s in seconds if np.isfinite(s)]
    starts = sorted(datetime.strptime(r["time_utc"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
                    for r in everything)
    span = (starts[-1] - starts[0]).total_seconds() if starts else 0.0
    return (f"Time: {sum(seconds) / 60:.1f} min of training and evaluation over {len(rows)} cells and "
            f"{len(trial_rows)} tuning trials; {span / 60:.1f} min from the first row to the last (rows recorded in "
            f"several runs lengthen this span).")


def _progress_line(spec: AblationSpec, rows: list[dict[str, str]], trial_rows: list[dict[str, str]]) -> list[str]:
    """A line saying the recording is incomplete (cells and trials done of those the spec plans), or nothing."""
    planned_cells = len(spec_cells(spec))
    planned_trials = sum(len(trial_cells(spec, fold)) for fold in held_out_folds(spec))
    if len(rows) >= planned_cells and len(trial_rows) >= planned_trials:
        return []
    return [f"**Incomplete recording**: {len(rows)} of {planned_cells} planned cells and {len(trial_rows)} of "
            f"{planned_trials} tuning trials so far; re-running `faceverify ablate` on the spec continues it "
            "(finished cells are kept). Statistics below cover the finished cells only.", ""]


def roc_line(labels: list[str], by_label: dict[str, list[dict[str, str]]], pooled: dict[str, int]) -> str:
    """What the ROC figure pools: every cell, or, when some cells' files are not in this work folder
    (a recording resumed in another checkout, a cleaned work folder), how many of each arm's cells."""
    if all(pooled[label] == len(by_label[label]) for label in labels):
        return "The ROC pools every cell's held-out scores per arm."
    if not any(pooled.values()):
        return ("No cell's file is in the work folder (a recording resumed in another checkout, or a cleaned work "
                "folder): no ROC and no projection are drawn; the tables above use every cell.")
    counts = ", ".join(f"{label} {pooled[label]} of {len(by_label[label])}" for label in labels)
    return ("Only some cells' files are in the work folder (a recording resumed in another checkout, or a cleaned "
            f"work folder): the ROC pools per arm the cells whose files are there ({counts}) and the projection "
            "shows each arm's first such cell; the tables above use every cell.")


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
    labels = labels_in_order(spec, rows)
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
    published = published_table(spec, by_label)
    if published:
        lines += ["", *published]
    if len(labels) > 1 and reference in by_label:  # with one arm there is nothing to pair with
        lines += ["", *paired_differences(labels, by_label, reference, resamples)]
        best = best_arm_differences(labels, by_label, reference, resamples)
        if best:
            lines += ["", *best]
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
    title = f"{spec.name}: held-out accuracy, mean and 95% interval over cells"
    plot_accuracy(labels, by_label, out / f"{stem}_accuracy.png", title, resamples)
    pooled = plot_roc(labels, by_label, out / f"{stem}_roc.png", f"{spec.name}: held-out ROC (pooled cells)")
    lines += ["", roc_line(labels, by_label, pooled)]
    figures = f"![accuracy]({stem}_accuracy.png)" + (f" ![roc]({stem}_roc.png)" if any(pooled.values()) else "")
    lines += ["", figures]
    if plot_projection(labels, by_label, out / f"{stem}_projection.png"):
        lines += ["", f"![projection]({stem}_projection.png)"]
    if trial_rows:
        lines += ["", f"![tuning]({stem}_tuning.png)"]
    if sweep:
        lines += ["", f"![sweep]({stem}_sweep.png)"]
    write_text(out / f"{stem}.md", "\n".join(lines) + "\n")
    if trial_rows:
        plot_tuning(spec, trial_rows, out / f"{stem}_tuning.png")
    if spec.sweep_key:
        plot_sweep(spec, rows, out / f"{stem}_sweep.png")
    return out / f"{stem}.md"


__all__ = ["write_reports", "latest_rows"]
