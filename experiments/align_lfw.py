"""Align all of LFW with MTCNN and record how well it went.

    python experiments/align_lfw.py [--lfw DIR] [--out work/lfw_aligned_112x96] [--template 112x96]

Runs ``align_tree`` (purpose ``eval``: images without a detected face get the centre fallback)
over every LFW image, then reports for the 7,701 images referenced by pairs.txt how many were
detected and how many fell back, the alignment residual (mean distance between the transformed
landmarks and the template, crop pixels), and writes a montage of aligned pair images and one of
every fallback. Appends to ``results/alignment/lfw_alignment.csv`` and regenerates the .md.
Resumable: rerunning continues an interrupted alignment.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

from faceverify.data.alignment import get_template
from faceverify.data.locate import locate_lfw
from data_prep.montage import montage
from data_prep.prepare import AlignConfig, align_tree, read_manifest
from faceverify.data.lfw import key_of_path, read_pairs
from faceverify.results import provenance, record_rows

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, help="LFW folder (default: located via $FACEVERIFY_DATA)")
    parser.add_argument("--out", type=Path, default=ROOT / "work" / "lfw_aligned_112x96")
    parser.add_argument("--template", default="112x96", choices=["112x96", "112x112"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "alignment")
    args = parser.parse_args()

    where = provenance()  # the commit and device this run starts from
    location = locate_lfw(args.lfw)
    config = AlignConfig(template=args.template, purpose="eval", batch_size=args.batch_size)
    started = time.perf_counter()
    summary = align_tree(location.images, args.out, config)
    wall = time.perf_counter() - started
    rows = {key_of_path(r["src"]): r for r in read_manifest(args.out / "manifest.csv")}
    pair_keys = read_pairs(location.pairs).keys
    pair_rows = [rows[k] for k in pair_keys]
    status = {s: sum(r["status"] == s for r in pair_rows) for s in ("ok", "fallback", "no_face", "unreadable")}
    residual = np.array([float(r["residual"]) for r in pair_rows if r["status"] == "ok"])
    multi = sum(r["status"] == "ok" and int(r["n_faces"]) > 1 for r in pair_rows)
    template = get_template(args.template)

    args.results.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    sample = rng.sample([r for r in pair_rows if r["status"] == "ok"], 96)
    montage([args.out / r["dst"] for r in sample], args.results / f"lfw_montage_{args.template}.png", columns=16)
    fallbacks = [r for r in rows.values() if r["status"] == "fallback"]
    if fallbacks:
        montage([args.out / r["dst"] for r in fallbacks[:64]],
                args.results / f"lfw_fallbacks_{args.template}.png", columns=16)
    row = {
        **where,
        "template": args.template,
        "crop": f"{template.height}x{template.width}",
        "all_images": summary["sources"],
        "all_ok": summary["counts"]["ok"],
        "all_fallback": summary["counts"]["fallback"],
        "pair_images": len(pair_rows),
        "pair_detected": status["ok"],
        "pair_detected_fraction": status["ok"] / len(pair_rows),
        "pair_fallback": status["fallback"],
        "pair_no_face": status["no_face"],
        "pair_unreadable": status["unreadable"],
        "pair_multi_face_photos": multi,
        "residual_mean_px": float(residual.mean()),
        "residual_median_px": float(np.median(residual)),
        "residual_p95_px": float(np.percentile(residual, 95)),
        "images_per_second_this_run": summary["images_per_second"] or "",
        "wall_seconds_this_run": wall,
        "command": "python experiments/align_lfw.py " + " ".join(sys.argv[1:]),
    }
    csv_path = args.results / "lfw_alignment.csv"
    record_rows(csv_path, [row], args.results / "lfw_alignment.md", "MTCNN alignment of LFW",
                note="Produced by the command in each row. Detection counts refer to the 7,701 "
                     "images referenced by pairs.txt; residuals are in crop pixels.")
    for key, value in row.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
