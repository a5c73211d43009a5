"""Append a CASIA-WebFace recipe's LFW result to results/casia/casia.csv (and regenerate casia.md).

    python experiments/record_casia.py RECIPE runs/RECIPE/lfw_eval/metrics.json

Called by experiments/reproduce_casia.sh; the row names the recipe, the published figure it is
compared with, the commit and the device.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from faceverify.results import append_rows, csv_to_markdown, provenance
from faceverify.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
# LFW accuracy (%) published for each recipe: Wen et al. 2016 Table 2 (A, B, C); Deng et al. 2019
# (ArcFace, ResNet-50 trained on CASIA-WebFace).
PUBLISHED = {"casia_A_softmax": 97.37, "casia_B_contrastive": 99.10, "casia_C_center": 99.28,
             "casia_arcface": 99.53}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("metrics", type=Path)
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "casia")
    args = parser.parse_args()
    metrics = json.loads(args.metrics.read_text())
    checkpoint = load_checkpoint(Path(metrics["source"]["checkpoint"]))
    row = {
        **provenance(), "recipe": args.recipe, "config": f"experiments/configs/{args.recipe}.yaml",
        "trained_commit": checkpoint.get("commit", ""), "iterations": checkpoint["train_state"]["step"],
        "train_hours": checkpoint["train_state"]["seconds"] / 3600,
        "accuracy": metrics["accuracy"], "accuracy_std": metrics["accuracy_std"], "auc": metrics["auc"],
        "tar_at_far_1e-3": metrics["tar_at_far"]["0.001"], "flip": metrics["flip"], "pca": metrics["pca"],
        "published_accuracy_percent": PUBLISHED.get(args.recipe, ""),
    }
    csv_path = args.results / "casia.csv"
    append_rows(csv_path, [row])
    csv_to_markdown(csv_path, args.results / "casia.md", "CASIA-WebFace recipes on LFW",
                    note="Rows appended by experiments/reproduce_casia.sh.")
    print(row)


if __name__ == "__main__":
    main()
