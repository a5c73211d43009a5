"""Benchmark: the Trainer's step against a bare PyTorch loop doing the same work, in one run.

    python experiments/bench_trainer.py [--repeats 3] [--device auto] [--out results/benchmarks]

Two settings: the ablation's ``cpu`` profile (sphere20 at width 1/4 on 56x48 crops, 128-d, batch
128) and Wen et al.'s face_resnet27 on 112x96 (batch 32 on a CPU, 256 on a GPU). Both train
softmax + center loss (lambda 0.003, the paper's center update, alpha 0.5) with SGD (momentum 0.9,
weight decay 5e-4) on the same synthetic crops, with random flips on the device.

The baseline does not share the code it judges: the bare loop (:func:`bare_loop`) is what a
researcher writes in twenty lines -- uint8 crops indexed at random from an in-memory tensor,
normalise and flip inline, a plain ``nn.Linear`` head with ``cross_entropy``, the center term and
Eq. 4 written out, ``torch.optim.SGD``. Only the network is shared. The Trainer reads the same crops
from a packed folder through its DataLoader and adds the rest: logging, checkpoint cadence, the NaN
guard (one device read per log step), LR schedule, resumable sampler, per-step flips from the seed.
Each repeat is a pair of runs, in ABBA order (Trainer then bare, then bare then Trainer, ...), so
drift in the machine hits both; each run times ``steps`` steps after ``warmup``, **each in a fresh
process** (``--side``), so neither inherits the other's allocator state, threads or caches (the
Trainer fixes glibc's malloc thresholds for its process, :mod:`faceverify.training.host_memory`; a
researcher's loop runs in a process of its own). Beside the speed each run records its minor page
faults and system time per step (``getrusage``), which do not depend on what else the machine is
doing: they found the Trainer's last gap (its heap trimmed and faulted back in every step). A
shared 2-core virtual machine is noisy (single runs vary by +-10%, and drift by as much over
minutes), so the recorded ratio is the median of the pairs' Trainer / bare ratios (target >=
0.97), with its quartiles and the ratio of the medians beside it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from faceverify.config import Replace, merge
from faceverify.data.packed import write_packed_array
from faceverify.models.backbones import build_backbone
from faceverify.provenance import device_description
from faceverify.results import provenance, record_rows
from faceverify.training.config import TrainConfig
from faceverify.training.distributed import resolve_device
from faceverify.training.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {
    "cpu profile": {"backbone": "sphere20", "width": 0.25, "dim": 128, "size": (56, 48), "channels_last": True,
                    "batch": {"cpu": 128, "cuda": 512}},
    "face_resnet27": {"backbone": "face_resnet27", "width": 1.0, "dim": 512, "size": (112, 96), "channels_last": True,
                      "batch": {"cpu": 32, "cuda": 256}},
}


def synthetic_data(size: tuple[int, int], n: int = 4096, classes: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 ``[n, H, W, 3]`` crops of ``classes`` identities (n / classes each), seeded."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, *size, 3), dtype=np.uint8), np.repeat(np.arange(classes), n // classes)


def synthetic_pack(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    classes = int(labels.max()) + 1
    size = images.shape[1:3]
    return write_packed_array(folder / f"pack_{size[0]}x{size[1]}", images, labels, [str(c) for c in range(classes)])


class Usage:
    """Wall time, minor page faults and system CPU time of this process between :meth:`start` and
    :meth:`stop` (``getrusage``: every thread of the process)."""

    def __init__(self) -> None:
        self.begin: tuple[float, int, float] | None = None
        self.seconds = self.minor_faults = self.system_seconds = 0.0

    @staticmethod
    def _now() -> tuple[float, int, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter(), usage.ru_minflt, usage.ru_stime

    def start(self) -> None:
        self.begin = self._now()

    def stop(self) -> None:
        assert self.begin is not None, "stop() before start()"
        end = self._now()
        self.seconds, self.minor_faults, self.system_seconds = (b - a for a, b in zip(self.begin, end))


LOSSES = {  # the loss of a setting: the Trainer's terms; the bare loop writes the same loss out
    "softmax+center": {"terms": {"softmax": 1.0, "center": 0.003}},
    "arcface": {"terms": Replace({"arcface": 1.0})},
}


def trainer_rate(pack: Path, setting: dict, batch: int, device: str, steps: int, warmup: int, out: Path,
                 amp: str = "none", compile: bool = False, workers: int = 0, usage: Usage | None = None) -> float:
    """Images/s of the whole Trainer step (loader, step, bookkeeping) over ``steps`` steps after
    ``warmup`` (``usage``, if given, gets the same window's page faults and system time)."""
    config = merge(TrainConfig(), {
        "out": str(out), "device": device, "progress": False, "tensorboard": False, "log_every": 50,
        "channels_last": setting["channels_last"], "amp": amp, "compile": compile,
        "checkpoint_every": 100_000, "seed": 0,
        "data": {"source": str(pack), "sampler": "shuffle", "batch_size": batch, "workers": workers},
        "model": {"backbone": setting["backbone"], "width": setting["width"], "embedding_dim": setting["dim"]},
        "loss": LOSSES[setting.get("loss", "softmax+center")],
        "optim": {"lr": 0.01, "max_iters": warmup + steps, "milestones": [100_000], "warmup_iters": 0},
    })
    window = usage or Usage()

    def clock(trainer: Trainer) -> None:
        if trainer.state.step in (warmup, warmup + steps):
            if trainer.info.device.type == "cuda":
                torch.cuda.synchronize()
            window.start() if trainer.state.step == warmup else window.stop()

    trainer = Trainer(config, callbacks=[clock])
    trainer.save = lambda name="last.pt": trainer.check_finite()  # the run is timed, not its final save
    trainer.fit()
    return steps * batch / window.seconds


def bare_rate(images: np.ndarray, labels: np.ndarray, setting: dict, batch: int, device: str, steps: int,
              warmup: int, amp: str = "none", compile: bool = False, usage: Usage | None = None) -> float:
    """The same work in a plain loop written without faceverify's training code (see :func:`bare_loop`)."""
    model = build_backbone(setting["backbone"], setting["dim"], setting["width"], tuple(images.shape[1:3]))
    return bare_loop(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), int(labels.max()) + 1,
                     model, setting["dim"], batch, device, steps, warmup, setting["channels_last"], amp=amp,
                     compile=compile, loss=setting.get("loss", "softmax+center"), usage=usage)


def bare_loop(images: torch.Tensor, labels: torch.Tensor, num_classes: int, model: torch.nn.Module, dim: int,
              batch: int, device: str, steps: int, warmup: int, channels_last: bool = True,
              on_step: Callable[[], None] | None = None, amp: str = "none", compile: bool = False,
              loss: str = "softmax+center", usage: Usage | None = None) -> float:
    """Images/s of softmax + center loss (or ArcFace) trained the way a researcher writes it in twenty lines.

    Independent of the code it judges: uint8 ``images [N, H, W, 3]`` indexed from memory at random
    (on the device), normalised ``(p - 127.5) / 128`` and mirrored with probability 1/2 inline;
    ``softmax+center``: a plain ``nn.Linear`` head with ``cross_entropy`` and the center term
    ``lambda/2 * mean ||x_i - c_{y_i}||^2`` (lambda 0.003) with Wen et al.'s Eq. 4 update (alpha 0.5)
    written out; ``arcface``: ``s * cos(t_y + m)`` on the normalised weights (s 64, m 0.5, Deng et
    al. 2019); SGD (momentum 0.9, weight decay 5e-4 on every parameter). ``amp``: the network under
    ``torch.autocast`` (bf16 or fp16 with a GradScaler), the loss in float32; ``compile``: the
    network through ``torch.compile``. Only the network itself is shared with the Trainer (it is
    what both train)."""
    torch.manual_seed(0)
    dev = torch.device(device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(dev).to(memory_format=layout).train()
    network = torch.compile(model) if compile else model
    head = torch.nn.Linear(dim, num_classes, bias=loss != "arcface").to(dev)
    centers = torch.zeros(num_classes, dim, device=dev)
    optimizer = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.01, momentum=0.9,
                                weight_decay=5e-4)
    dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    scaler = torch.amp.GradScaler(dev.type, enabled=amp == "fp16")
    images = images.to(dev)
    labels = labels.to(dev)
    rows = torch.arange(batch, device=dev)
    window = usage or Usage()
    for step in range(warmup + steps):
        if step == warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            window.start()
        index = torch.randint(len(labels), (batch,), device=dev)
        x = images[index].permute(0, 3, 1, 2).float().sub_(127.5).div_(128.0).contiguous(memory_format=layout)
        flip = torch.rand(batch, device=dev) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        y = labels[index]
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            features = network(x)
        features = features.float()
        if loss == "arcface":
            cos = F.linear(F.normalize(features), F.normalize(head.weight)).clamp(-1.0, 1.0)
            target = torch.cos(torch.acos(cos[rows, y]) + 0.5)
            logits = 64.0 * cos.index_put((rows, y), target)
            value = F.cross_entropy(logits, y)
        else:
            c = centers[y]
            value = F.cross_entropy(head(features), y) + 0.003 * 0.5 * ((features - c) ** 2).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(value).backward()
        scaler.step(optimizer)
        scaler.update()
        if loss != "arcface":
            with torch.no_grad():  # Eq. 4: c_j -= alpha * sum_i [y_i = j] (c_j - x_i) / (1 + n_j)
                counts = torch.bincount(y, minlength=num_classes).to(centers.dtype)
                sums = torch.zeros_like(centers).index_add_(0, y, (c - features.detach()))
                centers -= 0.5 * sums / (1.0 + counts[:, None])
        if on_step is not None:
            on_step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    window.stop()
    return steps * batch / window.seconds


def run_side(side: str, name: str, batch: int, device: str, steps: int, warmup: int, pack: Path, out: Path) -> dict:
    """One timed run of ``side`` (``trainer`` or ``bare``) in this process -> images/s, minor page
    faults and system milliseconds per step."""
    setting = SETTINGS[name]
    usage = Usage()
    if side == "trainer":
        rate = trainer_rate(pack, setting, batch, device, steps, warmup, out, usage=usage)
    else:
        images, labels = synthetic_data(setting["size"])
        rate = bare_rate(images, labels, setting, batch, device, steps, warmup, usage=usage)
    return {"images_per_s": rate, "minor_faults_per_step": usage.minor_faults / steps,
            "system_ms_per_step": 1000.0 * usage.system_seconds / steps}


def run_side_in_new_process(side: str, name: str, batch: int, device: str, steps: int, warmup: int, pack: Path,
                            out: Path) -> dict:
    """:func:`run_side` in a fresh Python process (its result is the last line it prints)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--settings", name, "--batch",
               str(batch), "--device", device, "--steps", str(steps), "--warmup", str(warmup), "--pack", str(pack),
               "--run-out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{side} run of {name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    # one run of one side, in the process main() starts for it
    parser.add_argument("--side", choices=["trainer", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pack", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = str(resolve_device(args.device))
    if args.side:
        print(json.dumps(run_side(args.side, args.settings, args.batch, device, args.steps, args.warmup, args.pack,
                                  args.run_out)))
        return
    kind = "cuda" if device.startswith("cuda") else "cpu"
    where = provenance(device=device_description(device))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_trainer_") as tmp:
        for name in args.settings.split(","):
            setting = SETTINGS[name]
            images, labels = synthetic_data(setting["size"])
            pack = synthetic_pack(Path(tmp), images, labels)
            batch = setting["batch"][kind]
            steps = args.steps if name == "cpu profile" or kind == "cuda" else max(12, args.steps // 3)
            runs: dict[str, list[dict]] = {"trainer": [], "bare": []}
            for repeat in range(args.repeats):
                # ABBA: the pair's order alternates, so a machine that drifts within a pair favours neither
                for side in (("trainer", "bare") if repeat % 2 == 0 else ("bare", "trainer")):
                    runs[side].append(run_side_in_new_process(side, name, batch, device, steps, args.warmup, pack,
                                                              Path(tmp) / f"run_{name}_{repeat}"))
                print(f"{name} repeat {repeat}: " + ", ".join(
                    f"{side} {runs[side][-1]['images_per_s']:.1f} images/s, "
                    f"{runs[side][-1]['minor_faults_per_step']:.0f} faults/step" for side in ("trainer", "bare")))
            trainer_runs = [r["images_per_s"] for r in runs["trainer"]]
            bare_runs = [r["images_per_s"] for r in runs["bare"]]
            pair_ratios = [t / b for t, b in zip(trainer_runs, bare_runs)]
            median_t, median_b = float(np.median(trainer_runs)), float(np.median(bare_runs))
            ratio = float(np.median(pair_ratios))
            median = lambda side, key: float(np.median([r[key] for r in runs[side]]))  # noqa: E731
            rows.append({**where, "setting": name, "backbone": setting["backbone"], "width": setting["width"],
                         "input": f"{setting['size'][0]}x{setting['size'][1]}", "batch_size": batch, "steps": steps,
                         "repeats": args.repeats, "trainer_images_per_s": median_t, "bare_images_per_s": median_b,
                         "ratio": ratio, "ratio_q1": float(np.quantile(pair_ratios, 0.25)),
                         "ratio_q3": float(np.quantile(pair_ratios, 0.75)), "ratio_of_medians": median_t / median_b,
                         "target_ratio": 0.97, "meets_target": ratio >= 0.97,
                         "trainer_runs": " ".join(f"{v:.1f}" for v in trainer_runs),
                         "bare_runs": " ".join(f"{v:.1f}" for v in bare_runs), "baseline": "independent",
                         "processes": "one per run",
                         "trainer_minor_faults_per_step": median("trainer", "minor_faults_per_step"),
                         "bare_minor_faults_per_step": median("bare", "minor_faults_per_step"),
                         "trainer_system_ms_per_step": median("trainer", "system_ms_per_step"),
                         "bare_system_ms_per_step": median("bare", "system_ms_per_step"),
                         "torch_threads": torch.get_num_threads()})
            print(rows[-1])
    record_rows(args.out / "trainer_vs_bare.csv", rows, args.out / "trainer_vs_bare.md",
                "The Trainer against a bare PyTorch loop",
                note="Produced by `python experiments/bench_trainer.py`: softmax + center loss, SGD, device-side "
                     "flips on the same crops; rows with baseline=independent compare with a bare loop that shares "
                     "only the network (older rows: a bare loop built from the Trainer's own loader and objective). "
                     "Pairs run in ABBA order; ratio = median of the pairs' Trainer/bare ratios (q1-q3 beside it), "
                     "images/s = medians of the repeats. Rows with processes = one per run time each run in a "
                     "fresh process and give the medians of its minor page faults and system time per step "
                     "(earlier rows ran both loops in one process).")


if __name__ == "__main__":
    main()
