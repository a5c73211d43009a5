"""Benchmark: the Trainer's step against a bare PyTorch loop doing the same work, in one run.

    python experiments/bench_trainer.py [--repeats 3] [--device auto] [--out results/benchmarks]

Two settings: the ablation's ``cpu`` profile (sphere20 at width 1/4 on 56x48 crops, 128-d, PK
batches of 128) and Wen et al.'s face_resnet27 on 112x96 (batch 32 on a CPU, 256 on a GPU). Both
train softmax + center loss (lambda 0.003, the paper's center update) with SGD (momentum 0.9,
weight decay 5e-4) on the same synthetic packed data read through the same DataLoader, batch
sampler and uint8-to-device path, with random flips on the device.

The bare loop is what a researcher would write in twenty lines: loader, normalise, flip, forward,
cross-entropy + center term, backward, step, center update. The Trainer adds the rest: logging,
checkpoint cadence, the NaN guard (one device read per log step), LR schedule, resumable sampler.
Runs alternate (Trainer, bare, Trainer, bare, ...) so drift in the machine hits both; each run
times ``steps`` steps after ``warmup``. A shared 2-core virtual machine is noisy (single runs vary by
+-10%), so the ratio Trainer / bare is taken of the *medians* of the repeats (the target: >= 0.97);
the best runs are recorded beside it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from faceverify.config import merge
from faceverify.data.packed import PackedFaces, collate_batch, write_packed_array
from faceverify.data.samplers import PKSampler
from faceverify.data.transforms import to_network_input
from faceverify.losses.objective import LossConfig, Objective
from faceverify.models.backbones import build_backbone
from faceverify.provenance import device_description
from faceverify.results import provenance, record_rows
from faceverify.training.config import TrainConfig
from faceverify.training.distributed import resolve_device
from faceverify.training.build import _backbone_parameter_groups
from faceverify.training.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {
    "cpu profile": {"backbone": "sphere20", "width": 0.25, "dim": 128, "size": (56, 48), "channels_last": True,
                    "batch": {"cpu": 128, "cuda": 512}},
    "face_resnet27": {"backbone": "face_resnet27", "width": 1.0, "dim": 512, "size": (112, 96), "channels_last": True,
                      "batch": {"cpu": 32, "cuda": 256}},
}


def synthetic_pack(folder: Path, size: tuple[int, int], n: int = 4096, classes: int = 512) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(classes), n // classes)
    return write_packed_array(folder / f"pack_{size[0]}x{size[1]}", images, labels, [str(c) for c in range(classes)])


def trainer_rate(pack: Path, setting: dict, batch: int, device: str, steps: int, warmup: int, out: Path) -> float:
    config = merge(TrainConfig(), {
        "out": str(out), "device": device, "progress": False, "tensorboard": False, "log_every": 50,
        "channels_last": setting["channels_last"],
        "checkpoint_every": 100_000, "seed": 0,
        "data": {"source": str(pack), "sampler": "pk", "batch_size": batch, "k": 4, "workers": 0},
        "model": {"backbone": setting["backbone"], "width": setting["width"], "embedding_dim": setting["dim"]},
        "loss": {"terms": {"softmax": 1.0, "center": 0.003}},
        "optim": {"lr": 0.01, "max_iters": warmup + steps, "milestones": [100_000], "warmup_iters": 0},
    })
    marks: dict[str, float] = {}

    def clock(trainer: Trainer) -> None:
        if trainer.state.step in (warmup, warmup + steps):
            if trainer.info.device.type == "cuda":
                torch.cuda.synchronize()
            marks[str(trainer.state.step)] = time.perf_counter()

    trainer = Trainer(config, callbacks=[clock])
    trainer.save = lambda name="last.pt": trainer.check_finite()  # the run is timed, not its final save
    trainer.fit()
    return steps * batch / (marks[str(warmup + steps)] - marks[str(warmup)])


def bare_rate(pack: Path, setting: dict, batch: int, device: str, steps: int, warmup: int) -> float:
    """The same work in a plain loop."""
    torch.manual_seed(0)
    dev = resolve_device(device)
    data = PackedFaces(pack)
    model = build_backbone(setting["backbone"], setting["dim"], setting["width"], data.image_size).to(dev)
    layout = torch.channels_last if setting["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=layout)
    objective = Objective(merge(LossConfig(), {"terms": {"softmax": 1.0, "center": 0.003}}), setting["dim"],
                          data.num_classes).to(dev)
    groups = _backbone_parameter_groups(model, merge(TrainConfig(), {})) + objective.parameter_groups(5e-4)
    optimizer = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    loader = DataLoader(data, batch_sampler=PKSampler(data.labels, batch // 4, 4, seed=0), collate_fn=collate_batch)
    head, center = objective.losses["softmax"], objective.losses["center"]
    step, start = 0, 0.0
    while step < warmup + steps:
        for images, labels, _ in loader:
            x = to_network_input(images.to(dev), dev, channels_last=setting["channels_last"])
            flip = torch.rand(x.shape[0], device=dev) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            labels = labels.to(dev)
            features = model(x)
            loss = F.cross_entropy(head.linear(features), labels) + 0.003 * center(features, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            center.update_centers()
            step += 1
            if step == warmup:
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            if step == warmup + steps:
                break
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = parser.parse_args()
    device = str(resolve_device(args.device))
    kind = "cuda" if device.startswith("cuda") else "cpu"
    where = provenance(device=device_description(device))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_trainer_") as tmp:
        for name in args.settings.split(","):
            setting = SETTINGS[name]
            pack = synthetic_pack(Path(tmp), setting["size"])
            batch = setting["batch"][kind]
            steps = args.steps if name == "cpu profile" or kind == "cuda" else max(12, args.steps // 3)
            trainer_runs, bare_runs = [], []
            for repeat in range(args.repeats):
                trainer_runs.append(trainer_rate(pack, setting, batch, device, steps, args.warmup,
                                                 Path(tmp) / f"run_{name}_{repeat}"))
                bare_runs.append(bare_rate(pack, setting, batch, device, steps, args.warmup))
                print(f"{name} repeat {repeat}: Trainer {trainer_runs[-1]:.1f}, bare {bare_runs[-1]:.1f} images/s")
            median_t, median_b = float(np.median(trainer_runs)), float(np.median(bare_runs))
            rows.append({**where, "setting": name, "backbone": setting["backbone"], "width": setting["width"],
                         "input": f"{setting['size'][0]}x{setting['size'][1]}", "batch_size": batch, "steps": steps,
                         "repeats": args.repeats, "trainer_images_per_s": median_t, "bare_images_per_s": median_b,
                         "ratio": median_t / median_b, "target_ratio": 0.97, "meets_target": median_t / median_b >= 0.97,
                         "best_ratio": max(trainer_runs) / max(bare_runs),
                         "trainer_runs": " ".join(f"{v:.1f}" for v in trainer_runs),
                         "bare_runs": " ".join(f"{v:.1f}" for v in bare_runs), "torch_threads": torch.get_num_threads()})
            print(rows[-1])
    record_rows(args.out / "trainer_vs_bare.csv", rows, args.out / "trainer_vs_bare.md",
                "The Trainer against a bare PyTorch loop",
                note="Produced by `python experiments/bench_trainer.py`: softmax + center loss, SGD, device-side "
                     "flips, the same packed data and loader; runs interleaved; images/s and ratio are the medians "
                     "of the repeats.")


if __name__ == "__main__":
    main()
