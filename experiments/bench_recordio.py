"""Benchmark: decoding insightface RecordIO against reading the packed memmap, in one run.

    python experiments/bench_recordio.py [--images 3000] [--workers 0,1,2] [--out results/benchmarks]

The same images — 112x112 crops of real LFW photos (the centre of each deep-funneled photo,
resized), JPEG quality 95 as insightface's packs store them — are written once as a RecordIO
folder and once as a packed folder. Each source is read in shuffled batches of 256 through the
trainer's DataLoader path (batch sampler, ``__getitems__``) with each worker count, best of two
passes after a warm-up pass; on CUDA, the RecordIO JPEGs are also decoded in batches on the GPU
(``data.decode=gpu``). The row says whether the loader could feed the issue-13 training targets
(10,000 images/s for face_resnet27) on this machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from faceverify.data.images import read_rgb
from faceverify.data.lfw import list_image_tree
from faceverify.data.locate import lfw_images_dir
from faceverify.data.packed import PackedFaces, collate_batch, write_packed_array
from faceverify.data.recordio import write_recordio
from faceverify.data.recordio_dataset import RecordFaces, decode_batch_on_gpu
from faceverify.data.samplers import ShuffledBatchSampler
from faceverify.provenance import device_description
from faceverify.results import provenance, record_rows

ROOT = Path(__file__).resolve().parent.parent
TARGET = 10_000  # training images/s the H200 targets ask of face_resnet27 (issue 13)


def crops(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 112x112 crops of real LFW photos and one label per person."""
    root = lfw_images_dir()
    files = list_image_tree(root)[:n]
    photos = [read_rgb(root / f) for f in files]
    images = np.stack([cv2.resize(p[50:200, 50:200], (112, 112), interpolation=cv2.INTER_AREA) for p in photos])
    people = {name: i for i, name in enumerate(dict.fromkeys(f.split("/")[0] for f in files))}
    return images, np.array([people[f.split("/")[0]] for f in files])


def rate(dataset, n: int, workers: int, batch: int = 256, gpu: bool = False) -> float:
    def one_pass() -> float:
        loader = DataLoader(dataset, batch_sampler=ShuffledBatchSampler(n, batch, seed=0), collate_fn=collate_batch,
                            num_workers=workers, persistent_workers=False)
        start = time.perf_counter()
        seen = 0
        for images, *_ in loader:
            if gpu:
                images = decode_batch_on_gpu(images, torch.device("cuda"))
                torch.cuda.synchronize()
            seen += len(images)
        return seen / (time.perf_counter() - start)

    one_pass()  # warm the page cache
    return max(one_pass() for _ in range(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = parser.parse_args()
    where = provenance(device=device_description("cuda" if torch.cuda.is_available() else "cpu"))
    images, labels = crops(args.images)
    n = len(images)
    row: dict = {**where, "images": n, "image_size": "112x112", "jpeg_quality": 95, "batch_size": 256,
                 "cpu_cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench_recordio_") as tmp:
        write_recordio(Path(tmp) / "rec", images, labels, layout="legacy", progress=False)
        write_packed_array(Path(tmp) / "packed", images, labels, [str(i) for i in range(labels.max() + 1)])
        record = RecordFaces(Path(tmp) / "rec", progress=False, cache_dir=Path(tmp) / "cache")
        packed = PackedFaces(Path(tmp) / "packed")
        for workers in (int(w) for w in args.workers.split(",")):
            row[f"packed_w{workers}_images_per_s"] = rate(packed, n, workers)
            row[f"recordio_cpu_w{workers}_images_per_s"] = rate(record, n, workers)
        if torch.cuda.is_available():
            encoded = RecordFaces(Path(tmp) / "rec", progress=False, cache_dir=Path(tmp) / "cache", encoded=True)
            row["recordio_gpu_decode_images_per_s"] = rate(encoded, n, 2, gpu=True)
    packed_best = max(v for k, v in row.items() if k.startswith("packed_"))
    record_best = max(v for k, v in row.items() if k.startswith("recordio_"))
    row.update(packed_best_images_per_s=packed_best, recordio_best_images_per_s=record_best,
               packed_over_recordio=packed_best / record_best, target_images_per_s=TARGET,
               recordio_feeds_target=record_best >= TARGET, packed_feeds_target=packed_best >= TARGET)
    csv_path = args.out / "recordio.csv"
    record_rows(csv_path, [row], args.out / "recordio.md", "RecordIO decoding against the packed memmap",
                note="Produced by `python experiments/bench_recordio.py`: the same 112x112 JPEG crops, shuffled "
                     "batches of 256 through the trainer's loader path, best of two passes per worker count.")
    print(row)


if __name__ == "__main__":
    main()
