"""Regenerate the README's results section from the CSV-backed tables in results/.

    python experiments/update_readme.py

Replaces the text between ``<!-- results:start -->`` and ``<!-- results:end -->`` with the
summary tables, so no number in the README is typed by hand.
"""

from __future__ import annotations

import csv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _pct(value: str) -> str:
    try:
        return f"{100 * float(value):.2f}"
    except ValueError:
        return value


def dlib_section() -> str:
    rows = _rows(ROOT / "results" / "baselines" / "dlib_lfw.csv")
    if not rows:
        return ""
    latest: dict[tuple[str, str, str], dict[str, str]] = {}
    for row in rows:
        latest[(row["folds"], row["metric"], row["flip"])] = row
    lines = [
        "### External baseline: dlib ResNet through our evaluator",
        "",
        "dlib publishes 99.38%. Rows from `results/baselines/dlib_lfw.csv` (latest run per setting).",
        "",
        "| folds | metric | flip | accuracy % | ± std | AUC | TAR@FAR=1e-3 % | commit | device |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in latest.values():
        lines.append(
            f"| {row['folds']} | {row['metric']} | {row['flip']} | {_pct(row['accuracy'])} | "
            f"{_pct(row['accuracy_std'])} | {float(row['auc']):.4f} | {_pct(row['tar_at_far_1e-3'])} | "
            f"{row['commit']} | {row['device']} |"
        )
    return "\n".join(lines) + "\n"


def benchmark_section() -> str:
    rows = _rows(ROOT / "results" / "benchmarks" / "protocol.csv")
    if not rows:
        return ""
    row = rows[-1]
    return (
        "### Evaluator speed\n\n"
        f"10-fold protocol on {row['n_pairs']} pairs: {float(row['exact_protocol_ms']):.1f} ms "
        f"({float(row['exact_with_cosine_scores_ms']):.1f} ms with the cosine scores), "
        f"{float(row['speedup_vs_grid']):.1f}x faster than a 400-threshold grid search "
        f"(`results/benchmarks/protocol.csv`, commit {row['commit']}, {row['device']}).\n"
    )


SECTIONS = [dlib_section, benchmark_section]


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"README.md lacks the markers {START} / {END}")
    body = "\n".join(s for s in (section() for section in SECTIONS) if s)
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    readme.write_text(f"{before}{START}\n{body or '(no results recorded yet)'}\n{END}{after}", encoding="utf-8")
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
