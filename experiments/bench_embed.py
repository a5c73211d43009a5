"""Benchmark: how fast a trained model embeds photos on this machine, in one run.

    python experiments/bench_embed.py [--photos 200] [--out results/benchmarks]

For the cpu-profile network (sphere20 at width 1/4 on 56x48, 128-d) and Wen et al.'s face_resnet27
(112x96, 512-d), weights random (speed does not depend on them): images/s of
``FaceModel.embed`` over real LFW photos — MTCNN detection, alignment, the network on the crop and
its mirror — and of ``FaceModel.embed_crops`` over the already-aligned crops, best of two passes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from faceverify.data.images import read_rgb
from faceverify.data.lfw import list_image_tree
from faceverify.data.locate import lfw_images_dir
from faceverify.use.model import FaceModel
from faceverify.models.backbones import build_backbone
from faceverify.provenance import device_description
from faceverify.results import provenance, record_rows

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = {"cpu profile (sphere20 x1/4, 56x48)": ("sphere20", 0.25, 128, (56, 48)),
            "face_resnet27 (112x96)": ("face_resnet27", 1.0, 512, (112, 96))}


def best_rate(count: int, run) -> float:
    run()  # warm-up
    rates = []
    for _ in range(2):
        start = time.perf_counter()
        run()
        rates.append(count / (time.perf_counter() - start))
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    where = provenance(device=device_description(device))
    root = lfw_images_dir()
    photos = [read_rgb(root / rel) for rel in list_image_tree(root)[:: 13233 // args.photos][: args.photos]]
    rows = []
    for label, (backbone, width, dim, size) in NETWORKS.items():
        torch.manual_seed(0)
        network = build_backbone(backbone, dim, width, size, False).to(device).eval()
        model = FaceModel(label, "checkpoint", network, size, dim, device=device)
        crops = [faces[0].crop for faces in model.faces_many(photos) if faces]
        with torch.no_grad():
            photo_rate = best_rate(len(photos), lambda: model.embed_crops([f[0].crop for f in model.faces_many(photos)
                                                                            if f]))
            crop_rate = best_rate(len(crops), lambda: model.embed_crops(crops))
        rows.append({**where, "network": label, "photos": len(photos), "faces_found": len(crops),
                     "photos_images_per_s": photo_rate, "aligned_crops_images_per_s": crop_rate,
                     "flip": model.flip, "torch_threads": torch.get_num_threads()})
        print(rows[-1])
    record_rows(args.out / "embed.csv", rows, args.out / "embed.md", "Embedding throughput of a trained model",
                note="Produced by `python experiments/bench_embed.py`: photos = MTCNN + alignment + the network on "
                     "the crop and its mirror; aligned crops = the network alone (with its mirror). Best of two "
                     "passes after a warm-up.")


if __name__ == "__main__":
    main()
