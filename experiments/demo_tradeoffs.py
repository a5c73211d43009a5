"""Measure the demo's two choices instead of guessing them, and record both.

    python experiments/demo_tradeoffs.py [--align] [--curve] [--fold 1]

``--align``: MTCNN's minimum face size against time and detection rate. For each size, every
LFW View 2 pair image (7,701) is aligned from scratch by the demo's pipeline; the row holds the
images/s and how many got a detected face (the rest the centre fallback). The demo keeps the
largest size whose detection rate stays >= 99.8% -> ``results/demo/alignment_min_face.csv``.

``--curve``: the demo's cell (softmax + center loss, cpu profile, held-out fold 1) trained from an
aligned LFW (``--aligned``) with each schedule length of ``--schedules`` (milestones scaled, as the
demo runs it) and each seed of ``--seeds``; ``--sampler pk`` draws the cpu profile's PK batches
instead of the demo's random ones, ``--batch-norm`` adds BatchNorm to the backbone. Evaluated with
the protocol (threshold from the other nine folds) -> held-out accuracy against training seconds
-> ``results/demo/training_curve.csv`` and ``training_curve.png`` (mean over seeds).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from faceverify.data.locate import locate_lfw  # noqa: E402
from data_prep.prepare import AlignConfig, align_tree  # noqa: E402
from demo_curve import curve_points  # noqa: E402
from faceverify.ablation.runner import run_ablation  # noqa: E402
from faceverify.ablation.spec import Cell, train_config  # noqa: E402
from faceverify.data.lfw import read_pairs, resolve_image_paths  # noqa: E402
from faceverify.demo import DEMO_SAMPLER, demo_spec  # noqa: E402
from faceverify.io import save_figure  # noqa: E402
from faceverify.provenance import device_description  # noqa: E402
from faceverify.results import provenance, read_rows, record_rows  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "demo"


def align_sweep(sizes: list[int], where: dict) -> None:
    location = locate_lfw()
    pairs = read_pairs(location.pairs)
    paths = resolve_image_paths(location.images, pairs.keys)
    needed = {str(paths[k].relative_to(location.images)) for k in pairs.keys}
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="demo_align_") as tmp:
            started = time.perf_counter()
            summary = align_tree(location.images, Path(tmp) / "aligned", AlignConfig(purpose="eval", min_face_size=size),
                                 progress=False, only=needed)
            seconds = time.perf_counter() - started
        counts = summary["counts"]
        rows.append({**where, "min_face_size": size, "images": summary["sources"], "detected": counts["ok"],
                     "fallback": counts["fallback"], "unreadable": counts["unreadable"],
                     "detection_rate": counts["ok"] / summary["sources"], "seconds": seconds,
                     "images_per_s": summary["sources"] / seconds, "meets_rate_target": counts["ok"] / summary["sources"] >= 0.998})
        print(rows[-1], flush=True)
    record_rows(OUT / "alignment_min_face.csv", rows, OUT / "alignment_min_face.md",
                "MTCNN minimum face size: time against detection rate on LFW's 7,701 pair images",
                note="Produced by `python experiments/demo_tradeoffs.py --align`; the demo keeps the largest size "
                     "whose detection rate stays >= 99.8%.")


def training_curve(aligned: Path, fold: int, schedules: list[int], seeds: list[int], sampler: str, batch_norm: bool,
                   where: dict) -> None:
    protocol = locate_lfw().protocol
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="demo_curve_") as tmp:  # one work folder: the pack is built once
        for iters in schedules:  # each length with its own schedule (milestones scaled), run as the demo runs it
            spec = demo_spec(aligned, protocol, Path(tmp), fold, "cpu", max_iters=iters)
            spec.seeds = seeds
            spec.base = {"model": {"batch_norm": batch_norm}}  # no progress bar in a recording
            spec.arms["softmax+center"]["data"]["sampler"] = sampler
            recorded = {int(r["seed"]): r for r in read_rows(run_ablation(spec, log=lambda _: None))}
            for seed in seeds:
                row = recorded[seed]
                config = train_config(spec, Cell("softmax+center", seed, fold), Path(tmp), Path(tmp))
                rows.append({**where, "fold": fold, "iterations": iters, "batch_norm": batch_norm,
                             "images_seen": int(row["images_seen"]), "train_seconds": float(row["train_seconds"]),
                             "accuracy": float(row["accuracy"]), "auc": float(row["auc"]),
                             "milestones": " ".join(map(str, config.optim.milestones)),
                             "sampler": config.data.sampler, "seed": seed})
                print(rows[-1], flush=True)
    record_rows(OUT / "training_curve.csv", rows, OUT / "training_curve.md",
                "The demo's held-out accuracy against training length",
                note="Produced by `python experiments/demo_tradeoffs.py --curve`: the demo's cell trained with "
                     "each schedule length (milestones scaled with it), evaluated on the held-out fold with the "
                     "threshold from the other nine folds. Rows with an empty batch_norm, sampler or seed were "
                     "recorded before that column existed: without BatchNorm, PK batches, seed 0.")
    recorded = read_rows(OUT / "training_curve.csv")
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    points = curve_points(recorded, fold)
    for label in dict.fromkeys(p.label for p in points):  # one line per (sampler, BatchNorm), in order
        line = [p for p in points if p.label == label]
        ax.plot([p.minutes for p in line], [p.accuracy for p in line], marker="o", label=label)
        for p in line:
            seeds = f" ({len(p.accuracies)} seeds)" if len(p.accuracies) > 1 else ""
            ax.annotate(f"{p.iterations} it{seeds}", (p.minutes, p.accuracy), fontsize=7)
    ax.legend(fontsize=8)
    ax.set_xlabel(f"training minutes ({where['device']})")
    ax.set_ylabel(f"held-out accuracy, fold {fold} (%; mean of seeds)")
    ax.set_title("The demo's cell: accuracy against training time", fontsize=10)
    ax.grid(alpha=0.3)
    save_figure(fig, OUT / "training_curve.png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--align", action="store_true")
    parser.add_argument("--sizes", default="20,40,60,80,100,120")
    parser.add_argument("--curve", action="store_true")
    parser.add_argument("--aligned", type=Path, default=ROOT / "work" / "lfw_aligned_112x96")
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--batch-norm", action="store_true", help="BatchNorm in the backbone (rows say which)")
    parser.add_argument("--schedules", default="500,1000,1500", help="training lengths to try (iterations)")
    parser.add_argument("--seeds", default="0", help="seeds of each length (rows say which)")
    parser.add_argument("--sampler", default=DEMO_SAMPLER, choices=["shuffle", "pk"],
                        help="how batches are drawn: at random (the demo's) or PK (the cpu profile's; rows say which)")
    args = parser.parse_args()
    where = provenance(device=device_description("cpu"))
    if args.align:
        align_sweep([int(v) for v in args.sizes.split(",")], where)
    if args.curve:
        training_curve(args.aligned, args.fold, [int(v) for v in args.schedules.split(",")],
                       [int(v) for v in args.seeds.split(",")], args.sampler, args.batch_norm, where)
    if not (args.align or args.curve):
        parser.error("give --align and/or --curve")


if __name__ == "__main__":
    main()
