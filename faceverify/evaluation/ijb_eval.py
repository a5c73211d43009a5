"""IJB-B / IJB-C evaluation from image embeddings: 1:1 verification (TAR at FAR under both rules,
:mod:`~faceverify.evaluation.ijb_protocol`) and, where the release has the 1:N files, open-set
identification (:mod:`~faceverify.evaluation.identification`); ``metrics.json``, ``report.md``
and ``roc.png`` (log-FAR axis).

Images without a usable embedding (not in the embeddings file, or marked there as missing or
unreadable) are left out of their templates and named in ``metrics.json``; a template that the
protocol needs and that has no usable image left is an error naming it and its images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceverify.data.ijb import IJBRelease
from faceverify.data.lfw import key_of_path
from faceverify.errors import MissingEntryError
from faceverify.evaluation.identification import identification_metrics, mean_over_galleries
from faceverify.evaluation.ijb_protocol import (
    FAR_TARGETS,
    Roc,
    TestMode,
    auc,
    pair_scores,
    pooled_templates,
    roc,
    tar_at_far,
    tar_at_far_insightface,
)
from faceverify.evaluation.lfw_eval import EmbeddingSet
from faceverify.evaluation.report import plot_roc, write_json
from faceverify.io import atomic_write


def _usable_rows(release: IJBRelease, embeddings: EmbeddingSet) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """(release rows with an embedding, their rows in ``embeddings``, {image: why not} of the rest)."""
    row = {key: i for i, key in enumerate(embeddings.keys)}
    ours, theirs, problems = [], [], {}
    for i, name in enumerate(release.images.tolist()):
        key = key_of_path(name)
        if key in row:
            ours.append(i)
            theirs.append(row[key])
        else:
            problems[name] = embeddings.excluded.get(key, "no embedding")
    return np.array(ours, np.int64), np.array(theirs, np.int64), problems


def _check_templates_usable(release: IJBRelease, needed: np.ndarray, have: np.ndarray, problems: dict[str, str],
                            what: str) -> None:
    lacking = np.setdiff1d(needed, have)
    if lacking.size:
        template = int(lacking[0])
        names = release.images[release.templates == template].tolist()
        shown = ", ".join(f"{n} ({problems.get(n, '?')})" for n in names[:5])
        raise MissingEntryError(f"{len(lacking)} template(s) of {what} have no usable image, e.g. template {template}: "
                                f"{shown}; embed those images or fix the release")


def template_set(release: IJBRelease, embeddings: EmbeddingSet, mode: TestMode
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """(template ids ``[T]``, unit template features ``[T, D]``, {image: why left out})."""
    ours, theirs, problems = _usable_rows(release, embeddings)
    ids, pooled = pooled_templates(embeddings.embeddings, embeddings.embeddings_flip, theirs,
                                   release.detector_scores[ours], release.templates[ours], release.medias[ours], mode)
    return ids, pooled, problems


def _features_of(ids: np.ndarray, pooled: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    return pooled[np.searchsorted(ids, wanted)]


def evaluate_ijb(release: IJBRelease, embeddings: EmbeddingSet, mode: TestMode = TestMode(),
                 fars: tuple[float, ...] = FAR_TARGETS) -> tuple[dict, Roc]:
    """The whole evaluation -> (metrics, the full ROC)."""
    ids, pooled, problems = template_set(release, embeddings, mode)
    pair_file = release.meta("template_pair_label.txt")
    _check_templates_usable(release, np.unique(release.pairs), ids, problems, f"{pair_file}")
    scores = pair_scores(ids, pooled, release.pairs)
    curve = roc(scores, release.labels)
    metrics: dict = {
        "benchmark": release.name, "root": str(release.root),
        "n_images": len(release.images), "n_images_used": len(release.images) - len(problems),
        "n_templates": int(len(np.unique(release.templates))), "n_pairs": len(release.pairs),
        "n_genuine": curve.n_genuine, "n_impostor": curve.n_impostor,
        "images_left_out": problems, "unused_landmark_lines": release.unused_landmark_lines,
        "test_mode": mode.describe(),
        "tar_at_far": tar_at_far(curve, fars),
        "tar_at_far_insightface": tar_at_far_insightface(curve, fars),
        "tar_rules": {"tar_at_far": "strict: the largest TAR whose FAR <= the target, every distinct score a "
                                    "threshold",
                      "tar_at_far_insightface": "sklearn roc_curve (drop_intermediate), reversed, the point with "
                                                "FPR nearest the target (first on ties)"},
        "auc": auc(curve),
    }
    if release.probes is not None:
        _check_templates_usable(release, release.probes.templates, ids, problems, "the 1:N probes")
        probes = _features_of(ids, pooled, release.probes.templates)
        per_gallery = {}
        for name, gallery in release.galleries.items():
            _check_templates_usable(release, gallery.templates, ids, problems, f"gallery {name}")
            per_gallery[name] = identification_metrics(probes, release.probes.subjects,
                                                       _features_of(ids, pooled, gallery.templates), gallery.subjects)
        metrics["identification"] = {**per_gallery, "mean": mean_over_galleries(per_gallery)}
    return metrics, curve


def _plot_points(curve: Roc, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` ROC points spread evenly in log FAR (each the best TAR up to its FAR)."""
    grid = np.unique(np.searchsorted(curve.far, np.logspace(-7, 0, n), side="right") - 1)
    return curve.far[grid], curve.tar[grid]


def markdown_report(metrics: dict) -> str:
    """``report.md``: both TAR rules side by side, the test mode, 1:N and the fingerprint."""
    mode = metrics["test_mode"]
    lines = [f"# {metrics['benchmark']} 1:1 verification", "",
             f"- templates: {metrics['n_templates']}; pairs: {metrics['n_pairs']} ({metrics['n_genuine']} genuine, "
             f"{metrics['n_impostor']} impostor); images used: {metrics['n_images_used']} of {metrics['n_images']}",
             f"- test mode: flip {mode['flip']}, feature norm {mode['feature_norm']}, detector score "
             f"{'multiplied' if mode['detector_score'] else 'not used'}"
             f"{' (the papers default)' if mode['is_paper_default'] else ''}",
             f"- AUC: {metrics['auc']:.6f}", "",
             "| FAR | TAR (strict: FAR <= target) | TAR (insightface: nearest FPR) |", "|---|---|---|"]
    for key, strict in metrics["tar_at_far"].items():
        lines.append(f"| {key} | {100 * strict:.2f}% | {100 * metrics['tar_at_far_insightface'][key]:.2f}% |")
    if "identification" in metrics:
        lines += ["", "## 1:N identification", "",
                  "| gallery | rank-1 | rank-5 | rank-10 | TPIR @ FPIR 1e-2 | TPIR @ FPIR 1e-1 |",
                  "|---|---|---|---|---|---|"]
        for name, g in metrics["identification"].items():
            tpir = [("n/a" if v is None else f"{100 * v:.2f}%") for v in g["tpir_at_fpir"].values()]
            lines.append(f"| {name} | {100 * g['rank_1']:.2f}% | {100 * g['rank_5']:.2f}% | {100 * g['rank_10']:.2f}% "
                         f"| {' | '.join(tpir)} |")
    left_out = metrics["images_left_out"]
    if left_out:
        shown = ", ".join(f"{k} ({v})" for k, v in list(left_out.items())[:10])
        lines += ["", f"{len(left_out)} image(s) left out of their templates: {shown}"]
    if metrics.get("preprocessing"):
        lines += ["", "Preprocessing: " + ", ".join(f"{k} = `{v}`" for k, v in metrics["preprocessing"].items())]
    return "\n".join(lines) + "\n"


def write_ijb_outputs(metrics: dict, curve: Roc, out: Path) -> None:
    """``metrics.json``, ``report.md`` and ``roc.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(metrics, out / "metrics.json")
    with atomic_write(out / "report.md") as handle:
        handle.write(markdown_report(metrics))
    plot_roc({f"{metrics['benchmark']} (AUC {metrics['auc']:.4f})": _plot_points(curve)}, out / "roc.png",
             title=f"{metrics['benchmark']} 1:1 verification", floor=1e-6)
