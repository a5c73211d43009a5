"""Writing evaluation outputs: ``metrics.json``, ``report.md`` and ``roc.png``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

from faceverify import io
from faceverify.io import save_figure

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) else value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    """``data`` (NumPy values made plain) as indented JSON, written atomically."""
    return io.write_json(path, _jsonable(data))


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "ROC",
             floor: float = 1e-4) -> Path:
    """ROC curves (TAR against FAR on a log axis from ``floor`` to 1); ``curves`` maps a label to
    (far, tar)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    for index, (label, (far, tar)) in enumerate(curves.items()):
        keep = far > 0
        style = ("-", "--", ":")[index // 10 % 3]  # the colour cycle has ten colours: more curves change the line
        ax.plot(np.clip(far[keep], floor, 1.0), tar[keep], label=label, linewidth=1.4, linestyle=style)
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate (log)")
    ax.set_ylabel("true accept rate")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=7 if len(curves) > 4 else 8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def plot_erc(erc: dict[str, Any], path: str | Path, title: str = "error versus reject") -> Path:
    """The error-versus-reject curve: FNMR at the fixed FMR against the share of pairs rejected
    for the lowest quality (:mod:`faceverify.evaluation.quality`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    ax.plot(100 * np.asarray(erc["reject_fractions"]), 100 * np.asarray(erc["fnmr"]), marker="o", linewidth=1.4,
            label=f"{erc.get('quality', 'quality')}, FMR {erc['fmr']:g}")
    ax.set_xlabel("pairs rejected for the lowest quality (%)")
    ax.set_ylabel(f"FNMR at FMR {erc['fmr']:g} (%)")
    ax.set_ylim(bottom=0.0)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}%"


def markdown_report(metrics: dict[str, Any], title: str = "LFW verification") -> str:
    """A human-readable summary of ``metrics.json``."""
    lines = [
        f"# {title}",
        "",
        f"- pairs: {metrics['n_pairs']} in {metrics['n_folds']} fold(s); threshold chosen on "
        f"{metrics['threshold_selection']}",
        f"- metric: {metrics['metric']}; flip: {metrics['flip']}; PCA: {metrics['pca'] or 'none'}; "
        f"mean subtraction: {metrics.get('subtract_mean', False)}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| accuracy | {_pct(metrics['accuracy'])} ± {_pct(metrics['accuracy_std'])} |",
        f"| ROC AUC | {metrics['auc']:.5f} |" if metrics.get("auc") is not None else "| ROC AUC | n/a |",
        f"| EER | {_pct(metrics['eer'])} |",
    ]
    for far, tar in metrics["tar_at_far"].items():
        lines.append(f"| TAR @ FAR={far} | {_pct(tar)} |")
    for k, value in metrics.get("recall_at_k", {}).items():
        if k != "n_queries":
            lines.append(f"| Recall@{k} | {_pct(value)} |")
    erc = metrics.get("erc")
    if erc:
        cells = ", ".join(f"{100 * f:.0f}%: {_pct(e)}" for f, e in zip(erc["reject_fractions"], erc["fnmr"]))
        lines += ["", f"Error versus reject ({erc.get('quality', 'quality')} as the quality score; FNMR at FMR "
                      f"{erc['fmr']:g}, threshold fixed on all pairs, as the lowest-quality pairs are rejected): {cells}"]
    lines += ["", "| fold | accuracy | threshold |", "|---|---|---|"]
    for i, (acc, thr) in enumerate(zip(metrics["fold_accuracies"], metrics["fold_thresholds"])):
        lines.append(f"| {i + 1} | {_pct(acc)} | {thr:.5f} |")
    source = metrics.get("source")
    if source:
        lines += ["", "Source: " + ", ".join(f"{k} = `{v}`" for k, v in source.items())]
    return "\n".join(lines) + "\n"
