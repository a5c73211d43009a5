"""Benchmark: training images/s per backbone, and the packed loader against decoding files.

    python experiments/bench_train.py [--device auto] [--backbones face_resnet27,sphere20,...]
                                      [--batch-size 32] [--iters 6] [--warmup 2] [--amp none]
                                      [--aligned work/lfw_aligned_112x96] [--loader-images 3000]

1. Training throughput: the real Trainer (packed data, loader, device-side normalisation and
   flips, softmax + center loss, SGD) on a synthetic packed set of the backbone's input size;
   images/s over the iterations after the warm-up.
2. Data loading: one pass over the same aligned crops, (a) from the packed uint8 memmap with
   batched reads and (b) decoding the PNG/JPEG files with a DataLoader, same batch size and
   workers, in the same run. Target: packed >= 10x files on a 2-core machine.

Appends to results/benchmarks/train.csv and loader.csv (with the device) and regenerates the .md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from data_prep.pack import PackConfig, pack_aligned
from faceverify.config import merge
from faceverify.data.packed import PackedFaces, collate_batch, write_packed_array
from faceverify.data.samplers import ShuffledBatchSampler
from faceverify.evaluation.embed import ImageFiles
from faceverify.models.backbones import BACKBONES, DEFAULT_INPUT
from faceverify.provenance import device_description
from faceverify.results import provenance, record_rows
from faceverify.training.config import TrainConfig
from faceverify.training.distributed import resolve_device
from faceverify.training.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


def synthetic_pack(folder: Path, size: tuple[int, int], n: int = 2048, identities: int = 256) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)
    labels = np.arange(n) % identities
    return write_packed_array(folder / f"synthetic_{size[0]}x{size[1]}", images, labels,
                              [f"id{i}" for i in range(identities)])


def training_throughput(name: str, packed: Path, args: argparse.Namespace, work: Path) -> dict:
    config = merge(TrainConfig(), {
        "out": str(work / f"run_{name}"), "device": args.device, "amp": args.amp,
        "channels_last": args.channels_last, "compile": args.compile, "progress": False, "tensorboard": False,
        "log_every": 10_000, "checkpoint_every": 10_000_000,
        "data": {"source": str(packed), "batch_size": args.batch_size, "workers": args.workers},
        "model": {"backbone": name},
        "optim": {"max_iters": args.warmup + args.iters, "lr": 0.01},
        "loss": {"terms": {"softmax": 1.0, "center": 0.003}},
    })
    marks: dict[str, float] = {}

    def clock(trainer: Trainer) -> None:
        if trainer.info.device.type == "cuda":
            torch.cuda.synchronize()
        if trainer.state.step == args.warmup:
            marks["start"] = time.perf_counter()
        if trainer.state.step == args.warmup + args.iters:
            marks["end"] = time.perf_counter()

    trainer = Trainer(config, callbacks=[clock])
    trainer.fit()
    seconds = marks["end"] - marks["start"]
    return {"images_per_s": args.iters * args.batch_size / seconds, "seconds_per_iter": seconds / args.iters}


def loader_throughput(aligned: Path, args: argparse.Namespace, work: Path) -> dict:
    packed = work / "lfw_packed"
    pack_aligned(aligned, packed, PackConfig(), progress=False)
    dataset = PackedFaces(packed)
    n = min(args.loader_images, len(dataset))
    files = [aligned / p for p in (packed / "paths.txt").read_text().splitlines()[:n]]
    batch = 256

    def packed_pass(workers: int) -> float:
        sampler = ShuffledBatchSampler(n, batch, seed=0)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_batch, num_workers=workers)
        start = time.perf_counter()
        seen = sum(batch[0].shape[0] for batch in loader)
        return seen / (time.perf_counter() - start)

    def files_pass(workers: int) -> float:
        loader = DataLoader(ImageFiles(files), batch_size=batch, shuffle=True, num_workers=workers,
                            drop_last=True, generator=torch.Generator().manual_seed(0))
        start = time.perf_counter()
        seen = sum(images.shape[0] for images in loader)
        return seen / (time.perf_counter() - start)

    row: dict = {"images": n, "batch_size": batch}
    for workers in sorted({0, args.workers}):
        packed_pass(workers), files_pass(workers)  # warm the page cache for both
        row[f"packed_w{workers}_images_per_s"] = max(packed_pass(workers) for _ in range(2))
        row[f"files_w{workers}_images_per_s"] = max(files_pass(workers) for _ in range(2))
    packed_best = max(v for k, v in row.items() if k.startswith("packed_"))
    files_best = max(v for k, v in row.items() if k.startswith("files_"))
    # each format at its best worker count: in-process memmap reads beat worker IPC for packed
    # data, while file decoding gains from parallel workers
    row.update(packed_images_per_s=packed_best, files_images_per_s=files_best, speedup=packed_best / files_best,
               target_speedup=10, meets_target=packed_best / files_best >= 10)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--aligned", default=str(ROOT / "work" / "lfw_aligned_112x96"),
                        help="aligned crops for the loader comparison ('' to skip it)")
    parser.add_argument("--loader-images", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = parser.parse_args()
    where = provenance(device=device_description(resolve_device(args.device)))
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        rows = []
        packs: dict[tuple[int, int], Path] = {}
        for name in args.backbones.split(","):
            size = DEFAULT_INPUT[name]
            if size not in packs:
                packs[size] = synthetic_pack(work, size)
            figures = training_throughput(name, packs[size], args, work)
            rows.append({**where, "backbone": name, "input": f"{size[0]}x{size[1]}", "batch_size": args.batch_size,
                         "amp": args.amp, "channels_last": args.channels_last, "compile": args.compile,
                         "loss": "softmax+center", **figures})
            print(f"{name:14s} {figures['images_per_s']:9.1f} images/s")
        record_rows(args.out / "train.csv", rows, args.out / "train.md", "Training throughput per backbone",
                    note="Produced by `python experiments/bench_train.py`: the full Trainer step "
                         "(loader, device-side normalisation and flip, forward, softmax + center, "
                         "backward, SGD) on synthetic packed data, after a warm-up.")
        if args.aligned:
            aligned = Path(args.aligned)
            loader = {**where, "source": aligned.name, **loader_throughput(aligned, args, work)}
            record_rows(args.out / "loader.csv", [loader], args.out / "loader.md", "Packed memmap vs image files",
                        note="Produced by `python experiments/bench_train.py`: one shuffled pass over the "
                             "same aligned crops, batch 256, with 0 and N loader workers each, page cache "
                             "warm; the speedup compares each format at its best worker count.")
            print(f"loader: packed {loader['packed_images_per_s']:.0f} images/s, files "
                  f"{loader['files_images_per_s']:.0f} images/s, speedup {loader['speedup']:.1f}x")


if __name__ == "__main__":
    main()
