"""The GPU proof: every GPU figure of the project from one device call (run by ``gpu_proof.sh``).

    experiments/gpu_proof.sh                      # on the device machine: gpu_payload/ carried, CSVs to $OUT/gpu
    DEVICE=cpu QUICK=1 experiments/gpu_proof.sh   # every section on the CPU, tiny, into a temporary folder

Sections, in this order; each writes its CSV rows (device, commit, torch version and the settings in
every row) to ``--out`` the moment it finishes, so a call cut short keeps everything done before it:

1. ``train.csv``: training throughput of the whole Trainer step -- face_resnet27 and sphere20 at
   112x96 (softmax + center), iresnet50 at 112x112 (ArcFace) -- at batch 256 and 512, bf16 +
   channels_last, without and (at 512) with ``torch.compile``; beside each the same network, loss and
   data in the independent bare loop of ``bench_trainer.py``; peak GPU memory of both. Targets:
   10,000 / 10,000 / 5,000 images/s; Trainer >= 0.95 of the bare loop.
2. ``amp.csv``: 200-step bf16 and fp16 (GradScaler) runs on real LFW crops end without a non-finite
   loss and with the loss falling.
3. ``data.csv``: the packed memmap loader, RecordIO decoded on CPU workers and with nvJPEG
   (``data.decode=gpu``) on this machine's cores: images/s, and whether each feeds section 1's best rate.
4. ``align.csv``: ``align_tree`` with MTCNN on the device over the payload's raw LFW photos against
   bare batched MTCNN on the same photos (the ratio).
5. ``lfw_gpu_losses.csv``: Wen et al.'s three arms (softmax; + contrastive; + center, lambda 0.003,
   alpha 0.5) with face_resnet27 at 112x96 on held-out fold 1 through ``faceverify ablate``, iterations
   sized from section 1's measured rate to fit the time left; accuracy, AUC, time per cell.
6. ``ddp.csv``: a one-GPU torchrun run over NCCL, and Partial FC at 1M identities (r = 0.1) against the
   full head: step time and peak memory.

One deadline for all (``--seconds``, ``GPU_PROOF_SECONDS``, default 500): a section whose estimate does
not fit in the time left is recorded as skipped with its estimate and not started; inside section 1
each measurement is skipped the same way. A section that fails is recorded as failed (its error in
the row) and the next one runs; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT))

import bench_trainer  # noqa: E402  (the Trainer/bare throughput pair)

from faceverify.provenance import device_description, git_commit  # noqa: E402
from faceverify.results import append_rows, provenance  # noqa: E402

MODELS = [  # (name, backbone, input, loss, target images/s on the GPU)
    ("face_resnet27", "face_resnet27", (112, 96), "softmax+center", 10_000),
    ("sphere20", "sphere20", (112, 96), "softmax+center", 10_000),
    ("iresnet50", "iresnet50", (112, 112), "arcface", 5_000),
]
TARGET_RATIO = 0.95


@dataclass
class Proof:
    """What every section shares: where to write, the clock, the payload, section 1's rates."""

    device: str
    quick: bool
    payload: Path
    out: Path
    work: Path
    deadline: float
    where: dict
    workers: int
    rates: dict[tuple[str, int], float] = field(default_factory=dict)  # (model, batch) -> Trainer images/s
    reserve: float = 0.0  # seconds section 1 leaves for the selected sections after it (their estimates)
    failed: list[str] = field(default_factory=list)

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def write(self, name: str, rows: list[dict]) -> None:
        append_rows(self.out / f"{name}.csv", [{**self.where, **row} for row in rows])

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def reset_memory(self) -> None:
        if self.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_memory_mb(self) -> float:
        return torch.cuda.max_memory_allocated() / 2**20 if self.device == "cuda" else float("nan")

    @property
    def amp(self) -> str:
        return "bf16" if self.device == "cuda" else "none"  # bf16 on a 2-core CPU would only slow the check


# ----------------------------------------------------------------------------- the payload's data
def fold1_pack(proof: Proof) -> Path:
    """The packed training set of held-out fold 1 at 112x96 (the ablation's own pack, shared with section 5)."""
    from faceverify.ablation.protocol import ensure_pack, split_for
    from faceverify.data.lfw import read_people

    people = read_people(proof.payload / "lfw" / "people.txt")
    return ensure_pack(proof.payload / "aligned", split_for(people, 1, inner_validation=False), "112x96",
                       proof.work / "ablation")


def small_pack(proof: Proof, n: int = 32) -> Path:
    """The first ``n`` crops of the fold-1 pack as their own pack (QUICK: a few epochs in 20 steps,
    so the loss falls on two CPU cores in seconds, as it does on the whole pack on a GPU)."""
    from faceverify.data.packed import PackedFaces, write_packed_array

    out = proof.work / "small_pack"
    if not (out / "meta.json").is_file():
        full = PackedFaces(fold1_pack(proof))
        labels = np.asarray(full.labels[:n])
        kept, remapped = np.unique(labels, return_inverse=True)
        write_packed_array(out, np.asarray(full.images[:n]), remapped, [full.identities[i] for i in kept])
    return out


# ----------------------------------------------------------------------------- 1. training throughput
def throughput_plan(proof: Proof) -> list[tuple[tuple, int, bool]]:
    """(model, batch, compile) in the order they run: every uncompiled one first."""
    batches = [8] if proof.quick else [256, 512]
    plan = [(model, batch, False) for model in MODELS for batch in batches]
    return plan + [(model, batches[-1], True) for model in MODELS]


def throughput_estimate(proof: Proof, model: tuple, batch: int, compiled: bool, steps: int) -> float:
    """Seconds one Trainer + bare pair takes: set-up, the steps at half the target rate, and with
    ``compiled`` the first compilation (measured on the CPU: 68 s for sphere20 on 2 cores; the bare
    loop's compile of the same graphs then hits inductor's cache, 6 s)."""
    rate = model[4] / 2 if proof.device == "cuda" else 40.0
    compile_s = (75.0 if model[0] == "iresnet50" else 50.0) + 15.0 if compiled else 0.0
    return 2 * (8.0 + steps * batch / rate) + compile_s


def section_throughput(proof: Proof, budget: float) -> None:
    steps, warmup = (2, 1) if proof.quick else (30, 10)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="throughput_", dir=proof.work) as tmp:
        packs: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, Path]] = {}
        for model, batch, compiled in throughput_plan(proof):
            name, backbone, size, loss, target = model
            setting = {"backbone": backbone, "width": 0.25 if proof.quick else 1.0, "dim": 512, "size": size,
                       "channels_last": True, "loss": loss}
            row = {"section": "1 training throughput", "model": name, "input": f"{size[0]}x{size[1]}", "loss": loss,
                   "batch_size": batch, "amp": proof.amp, "channels_last": True, "compile": compiled,
                   "steps": steps, "warmup": warmup, "target_images_per_s": target, "target_ratio": TARGET_RATIO}
            estimate = throughput_estimate(proof, model, batch, compiled, steps + warmup)
            left = min(budget - (time.perf_counter() - started), proof.left())
            if compiled and proof.quick:
                proof.write("train", [{**row, "status": "skipped", "reason": "QUICK: torch.compile is not "
                                       "exercised on the CPU (minutes of compilation on 2 cores)"}])
                continue
            if estimate > left:
                proof.write("train", [{**row, "status": "skipped", "estimate_s": estimate, "left_s": left}])
                continue
            if size not in packs:
                images, labels = bench_trainer.synthetic_data(size, n=512 if proof.quick else 8192, classes=64
                                                              if proof.quick else 1024)
                packs[size] = (images, labels, bench_trainer.synthetic_pack(Path(tmp), images, labels))
            images, labels, pack = packs[size]
            proof.reset_memory()
            trainer = bench_trainer.trainer_rate(pack, setting, batch, proof.device, steps, warmup,
                                                 Path(tmp) / f"run_{name}_{batch}_{compiled}", amp=proof.amp,
                                                 compile=compiled, workers=proof.workers)
            trainer_memory = proof.peak_memory_mb()
            proof.reset_memory()
            bare = bench_trainer.bare_rate(images, labels, setting, batch, proof.device, steps, warmup,
                                           amp=proof.amp, compile=compiled)
            bare_memory = proof.peak_memory_mb()
            if not compiled:
                proof.rates[(name, batch)] = trainer
            ratio = trainer / bare
            proof.write("train", [{**row, "status": "done", "trainer_images_per_s": trainer,
                                   "bare_images_per_s": bare, "ratio": ratio, "meets_target": trainer >= target,
                                   "meets_ratio": ratio >= TARGET_RATIO, "trainer_peak_memory_mb": trainer_memory,
                                   "bare_peak_memory_mb": bare_memory}])
            print(f"  {name} batch {batch} compile {compiled}: Trainer {trainer:.0f}, bare {bare:.0f} images/s "
                  f"({ratio:.3f})", flush=True)


# ----------------------------------------------------------------------------- 2. AMP correctness
def section_amp(proof: Proof) -> None:
    from faceverify.config import merge
    from faceverify.training.config import TrainConfig
    from faceverify.training.logging import read_metrics
    from faceverify.training.trainer import Trainer

    pack = fold1_pack(proof) if not proof.quick else small_pack(proof)
    steps = 20 if proof.quick else 200
    log_every = 2 if proof.quick else 10
    for amp in ("bf16", "fp16"):
        out = proof.work / f"amp_{amp}"
        config = merge(TrainConfig(), {
            "out": str(out), "device": proof.device, "amp": amp, "channels_last": True, "progress": False,
            "tensorboard": False, "log_every": log_every, "checkpoint_every": 100_000, "seed": 0,
            "data": {"source": str(pack), "batch_size": 8 if proof.quick else 256, "workers": proof.workers},
            "model": {"backbone": "sphere20" if proof.quick else "face_resnet27", "width": 0.25 if proof.quick else 1.0,
                      "embedding_dim": 512},
            "loss": {"terms": {"softmax": 1.0, "center": 0.003}},
            "optim": {"lr": 0.05 if proof.quick else 0.1, "max_iters": steps, "milestones": [100_000],
                      "warmup_iters": steps // 10, "clip_grad_norm": 10.0},
        })
        started = time.perf_counter()
        error = ""
        try:
            Trainer(config).fit()
        except Exception as err:  # a non-finite loss is this section's failure, recorded in its row
            error = f"{type(err).__name__}: {err}"[:300]
        losses = [r["loss/total"] for r in read_metrics(out / "metrics.jsonl")] if (out / "metrics.jsonl").is_file() else []
        finite = not error and len(losses) == steps // log_every and all(v is not None and math.isfinite(v)
                                                                         for v in losses)
        first, last = (float(np.mean(losses[:2])), float(np.mean(losses[-2:]))) if finite else (math.nan, math.nan)
        passed = finite and last < first
        proof.write("amp", [{"section": "2 amp correctness", "model": config.model.backbone, "input": "112x96", "amp": amp,
                             "grad_scaler": amp == "fp16", "steps": steps, "batch_size": config.data.batch_size,
                             "first_loss": first, "last_loss": last, "finite": finite, "loss_falls": last < first,
                             "passed": passed, "seconds": time.perf_counter() - started, "error": error}])
        print(f"  amp {amp}: loss {first:.3f} -> {last:.3f}, finite {finite}", flush=True)
        if not passed:
            proof.failed.append(f"amp {amp}")


# ----------------------------------------------------------------------------- 3. data path
def section_data(proof: Proof) -> None:
    import cv2
    from bench_recordio import rate

    from faceverify.data.images import read_rgb
    from faceverify.data.lfw import list_image_tree
    from faceverify.data.packed import PackedFaces
    from faceverify.data.recordio import write_recordio
    from faceverify.data.recordio_dataset import RecordFaces

    packed = PackedFaces(fold1_pack(proof))
    files = list_image_tree(proof.payload / "raw")
    photos = [read_rgb(proof.payload / "raw" / f) for f in files]
    crops = np.stack([cv2.resize(p[50:200, 50:200], (112, 112), interpolation=cv2.INTER_AREA) for p in photos])
    repeat = max(1, (256 if proof.quick else 8192) // len(crops))  # the same photos again: decoding costs the same
    crops = np.concatenate([crops] * repeat)
    labels = np.arange(len(crops)) * 64 // len(crops)  # sorted: the legacy layout holds identity ranges
    record_dir = proof.work / "recordio"
    write_recordio(record_dir, crops, labels, layout="legacy", progress=False)
    record = RecordFaces(record_dir, progress=False, cache_dir=proof.work / "recordio_cache")
    best = max(proof.rates.values(), default=math.nan)
    worker_counts = [0, 1] if proof.quick else sorted({4, 8, proof.workers, os.cpu_count() or 1})
    batch = 16 if proof.quick else 256
    base = {"section": "3 data path", "batch_size": batch, "cpu_cores": os.cpu_count(), "best_training_images_per_s": best}
    rows = []
    for workers in worker_counts:
        for source, dataset, n in (("packed memmap", packed, len(packed)), ("recordio, cpu decode", record, len(record))):
            value = rate(dataset, n, workers, batch=batch)
            rows.append({**base, "source": source, "workers": workers, "images": n, "images_per_s": value,
                         "feeds_best_training_rate": value >= best if best == best else ""})
    if proof.device == "cuda":
        encoded = RecordFaces(record_dir, progress=False, cache_dir=proof.work / "recordio_cache", encoded=True)
        value = rate(encoded, len(encoded), 4, batch=batch, gpu=True)
        rows.append({**base, "source": "recordio, nvjpeg decode (data.decode=gpu)", "workers": 4,
                     "images": len(encoded), "images_per_s": value,
                     "feeds_best_training_rate": value >= best if best == best else ""})
    proof.write("data", rows)
    for row in rows:
        print(f"  {row['source']}, {row['workers']} workers: {row['images_per_s']:.0f} images/s", flush=True)


# ----------------------------------------------------------------------------- 4. alignment
def section_align(proof: Proof) -> None:
    import shutil

    from data_prep.detect import FaceDetector
    from data_prep.prepare import AlignConfig, align_tree
    from faceverify.data.images import read_rgb
    from faceverify.data.lfw import list_image_tree

    src = proof.payload / "raw"
    files = list_image_tree(src)
    images = [read_rgb(src / f) for f in files]
    batch = 8 if proof.quick else 64
    detector = FaceDetector(proof.device)
    detector.detect(images[:batch])  # warm-up
    proof.sync()

    def bare() -> float:
        start = time.perf_counter()
        for i in range(0, len(images), batch):
            detector.detect(images[i:i + batch])
        proof.sync()
        return time.perf_counter() - start

    def ours(run: int) -> float:
        dst = proof.work / f"aligned_{run}"
        config = AlignConfig(purpose="eval", batch_size=batch, threads=2 if proof.quick else 8, device=proof.device)
        start = time.perf_counter()
        summary = align_tree(src, dst, config, detector=detector, progress=False)
        elapsed = time.perf_counter() - start
        if summary["sources"] != len(images):
            raise RuntimeError(f"align_tree saw {summary['sources']} of {len(images)} photos")
        shutil.rmtree(dst)
        return elapsed

    bare_times, ours_times = [], []
    for run in range(2):
        bare_times.append(bare())
        ours_times.append(ours(run))
    bare_rate, ours_rate = len(images) / min(bare_times), len(images) / min(ours_times)
    proof.write("align", [{"section": "4 alignment", "images": len(images), "batch_size": batch,
                           "bare_mtcnn_images_per_s": bare_rate, "pipeline_images_per_s": ours_rate,
                           "ratio": ours_rate / bare_rate, "target_ratio": 0.85,
                           "meets_target": ours_rate / bare_rate >= 0.85, "repeats": 2}])
    print(f"  align: pipeline {ours_rate:.0f}, bare MTCNN {bare_rate:.0f} images/s", flush=True)


# ----------------------------------------------------------------------------- 5. full-resolution LFW training
ARMS = {  # Wen et al. 2016, Table 2's models A, B, C
    "softmax": {"loss": {"terms": {"softmax": 1.0}}},
    "softmax+contrastive": {"loss": {"terms": {"softmax": 1.0, "contrastive": 0.1},
                                     "contrastive": {"margin": 1.0, "normalize": True, "reduction": "pos_neg_mean"}}},
    "softmax+center": {"loss": {"terms": {"softmax": 1.0, "center": 0.003}, "center": {"alpha": 0.5}}},
}
CELL_OVERHEAD_S = 25.0  # start-up, packing once, embedding and scoring of one cell


def lfw_iterations(proof: Proof, budget: float, batch: int) -> int:
    """Iterations per arm that fit ``budget`` seconds at section 1's face_resnet27 rate."""
    rate = proof.rates.get(("face_resnet27", 256)) or proof.rates.get(("face_resnet27", 8)) or 2_000.0
    per_arm = max(0.0, budget / len(ARMS) - CELL_OVERHEAD_S)
    return max(20, int(per_arm * rate / batch) // 10 * 10)


def section_lfw(proof: Proof, budget: float) -> None:
    import yaml

    from faceverify.ablation.runner import run_ablation
    from faceverify.ablation.spec import load_spec
    from faceverify.results import read_rows

    batch = 16 if proof.quick else 256
    iterations = 4 if proof.quick else lfw_iterations(proof, budget, batch)
    base: dict = {"data": {"sampler": "auto", "batch_size": batch, "workers": proof.workers}}
    if proof.quick:
        base.update(amp="none", model={"width": 0.25})
    spec_path = proof.work / "lfw_gpu_losses.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "lfw_gpu_losses", "profile": "gpu", "folds": [1], "seeds": [0], "max_iters": iterations,
        "lfw_aligned": str(proof.payload / "aligned"), "lfw_protocol": str(proof.payload / "lfw"),
        "work": str(proof.work / "ablation"), "results": str(proof.work / "ablation_results"),
        "bootstrap": 1000, "base": base, "arms": ARMS, "reference": "softmax",
    }))
    started = time.perf_counter()
    csv_path = run_ablation(load_spec(spec_path), log=lambda line: print("  " + line, flush=True))
    rows = read_rows(csv_path)
    proof.write("lfw_gpu_losses", [{"section": "5 lfw full resolution", "iterations_sized_for_s": budget,
                                    "section_seconds": time.perf_counter() - started,
                                    **{k: v for k, v in row.items() if k not in ("commit", "device", "time_utc")}}
                                   for row in rows])


# ----------------------------------------------------------------------------- 6. DDP and Partial FC
def section_ddp(proof: Proof) -> None:
    pack = fold1_pack(proof)
    steps = 4 if proof.quick else 50
    out = proof.work / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "-m", "faceverify.cli", "train", f"out={out}", f"data.source={pack}", f"device={proof.device}",
               f"amp={proof.amp}", "channels_last=true", "model.backbone=face_resnet27",
               f"model.width={0.25 if proof.quick else 1.0}", f"data.batch_size={8 if proof.quick else 256}",
               f"data.workers={proof.workers}", f"optim.max_iters={steps}", "log_every=10", "progress=false",
               "tensorboard=false", "loss.terms={softmax: 1.0, center: 0.003}"]
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    summary = json.loads((out / "summary.json").read_text())
    expected = "nccl" if proof.device == "cuda" else "gloo"
    rows = [{"section": "6 ddp", "check": f"torchrun --nproc_per_node 1, DDP over {expected}",
             "backend": summary["backend"], "world_size": summary["world_size"], "steps": summary["step"],
             "images_per_s": summary["images_per_second"], "final_total_loss": summary["last_values"]["total"],
             "seconds": time.perf_counter() - started,
             "passed": summary["backend"] == expected and summary["step"] == steps}]
    if not rows[0]["passed"]:
        proof.failed.append("ddp")
    rows += partial_fc_rows(proof)
    proof.write("ddp", rows)
    for row in rows:
        print("  " + ", ".join(f"{k}={v}" for k, v in row.items() if k not in proof.where), flush=True)


def partial_fc_rows(proof: Proof) -> list[dict]:
    """Partial FC (faceverify's Objective, r = 0.1) against a plain full CosFace head written here,
    at 1M identities on the GPU (10K on the CPU): step time and peak memory of head + network."""
    import torch.nn.functional as F
    from torch import nn

    from faceverify.config import Replace, merge
    from faceverify.losses.objective import LossConfig, Objective
    from faceverify.losses.partial_fc import RowSGD

    classes = 10_000 if proof.quick else 1_000_000
    dim, batch, steps, scale, margin = 512, 512, 3 if proof.quick else 20, 64.0, 0.35
    dev = torch.device(proof.device)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch, 64, generator=generator).to(dev)
    labels = torch.randint(0, classes, (steps + 1, batch), generator=generator).to(dev)
    rows = []
    for head, rate in (("full", 1.0), ("partial_fc", 0.1)):
        proof.reset_memory()
        torch.manual_seed(0)
        network = nn.Linear(64, dim).to(dev)
        network_sgd = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        if head == "full":
            weight = nn.Parameter(torch.empty(classes, dim, device=dev))
            nn.init.xavier_uniform_(weight)
            head_sgd = torch.optim.SGD([weight], lr=0.1, momentum=0.9, weight_decay=5e-4)

            def step(i: int) -> None:
                logits = F.normalize(network(inputs)) @ F.normalize(weight).T * scale
                logits[torch.arange(batch, device=dev), labels[i]] -= scale * margin
                network_sgd.zero_grad(set_to_none=True)
                head_sgd.zero_grad(set_to_none=True)
                F.cross_entropy(logits, labels[i]).backward()
                network_sgd.step()
                head_sgd.step()
        else:
            config = merge(LossConfig(), {"terms": Replace({"cosface": 1.0}), "cosface": {"s": scale, "m": margin},
                                          "partial_fc": {"sample_rate": rate}})
            objective = Objective(config, dim, classes, seed=0).to(dev)
            row_sgd = RowSGD(0.9, 5e-4, False)

            def step(i: int) -> None:
                output = objective(network(inputs), labels[i])
                network_sgd.zero_grad(set_to_none=True)
                output.total.backward()
                network_sgd.step()
                objective.after_step(0.1, row_sgd)

        step(steps)  # warm-up
        proof.sync()
        started = time.perf_counter()
        for i in range(steps):
            step(i)
        proof.sync()
        rows.append({"section": "6 partial fc", "check": f"{head} head, {classes} identities",
                     "classes": classes, "sample_rate": rate, "batch_size": batch, "embedding_dim": dim,
                     "step_seconds": (time.perf_counter() - started) / steps, "peak_memory_mb": proof.peak_memory_mb()})
        del step
    full, partial = rows
    partial.update(step_ratio=partial["step_seconds"] / full["step_seconds"],
                   memory_ratio=partial["peak_memory_mb"] / full["peak_memory_mb"])
    return rows


# ----------------------------------------------------------------------------- the run
@dataclass
class Section:
    name: str
    csv: str
    estimate: Callable[[Proof], float]  # seconds it needs to start at all
    run: Callable[[Proof], None]


DDP_ESTIMATE_S = 60.0


def sections(quick: bool) -> list[Section]:
    """The six sections; section 1 measures until only the estimates of the selected later ones
    are left (``Proof.reserve``), so a longer deadline buys the compiled pairs first."""
    return [
        Section("1 training throughput", "train", lambda p: 30.0,
                lambda p: section_throughput(p, p.left() - p.reserve)),
        Section("2 amp correctness", "amp", lambda p: 10.0 if quick else 50.0, section_amp),
        Section("3 data path", "data", lambda p: 10.0 if quick else 40.0, section_data),
        Section("4 alignment", "align", lambda p: 10.0 if quick else 45.0, section_align),
        Section("5 lfw full resolution", "lfw_gpu_losses", lambda p: 20.0 if quick else 3 * CELL_OVERHEAD_S + 45.0,
                lambda p: section_lfw(p, p.left() - DDP_ESTIMATE_S - 15.0)),
        Section("6 ddp and partial fc", "ddp", lambda p: 15.0 if quick else DDP_ESTIMATE_S, section_ddp),
    ]


def plan(seconds: float) -> list[dict]:
    """The GPU run as the deadline would schedule it if every step took its estimate (section 1 at
    half its target rates): one row per measurement or section with its start and estimate, and the
    iterations section 5 would get. ``--plan`` prints it; a test keeps the budget honest."""
    proof = Proof("cuda", False, Path("."), Path("."), Path("."), 0.0, {}, workers=12)
    clock, rows = 0.0, []
    later = sections(False)[1:]
    throughput_budget = seconds - sum(s.estimate(proof) for s in later)
    for model, batch, compiled in throughput_plan(proof):
        estimate = throughput_estimate(proof, model, batch, compiled, 40)
        runs = clock + estimate <= min(throughput_budget, seconds)
        rows.append({"section": "1", "what": f"{model[0]} batch {batch}{' compiled' if compiled else ''}",
                     "start_s": clock, "estimate_s": estimate, "runs": runs})
        if runs:
            clock += estimate
            if not compiled:
                proof.rates[(model[0], batch)] = model[4] / 2
    for number, estimate in ((s.name[0], s.estimate(proof)) for s in later[:3]):
        runs = estimate <= seconds - clock
        rows.append({"section": number, "what": "", "start_s": clock, "estimate_s": estimate, "runs": runs})
        clock += estimate if runs else 0.0
    budget = seconds - clock - DDP_ESTIMATE_S - 15.0
    rows.append({"section": "5", "what": f"{lfw_iterations(proof, budget, 256)} iterations per arm",
                 "start_s": clock, "estimate_s": budget, "runs": budget >= 3 * CELL_OVERHEAD_S + 45.0})
    clock += budget
    rows.append({"section": "6", "what": "", "start_s": clock, "estimate_s": DDP_ESTIMATE_S,
                 "runs": DDP_ESTIMATE_S <= seconds - clock})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="tiny batches and few steps (the CPU check)")
    parser.add_argument("--payload", type=Path, default=ROOT / "gpu_payload")
    parser.add_argument("--out", type=Path, default=None, help="folder for the sections' CSVs (required to run)")
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("GPU_PROOF_SECONDS", 500)))
    parser.add_argument("--only", default="", help="comma-separated section numbers to run (default: all)")
    parser.add_argument("--plan", action="store_true", help="print the GPU schedule the deadline gives, run nothing")
    args = parser.parse_args()
    if args.plan:
        for row in plan(args.seconds):
            print(f"section {row['section']} {row['what']:34s} at {row['start_s']:5.0f} s, about "
                  f"{row['estimate_s']:4.0f} s{'' if row['runs'] else '  (skipped: no time left)'}")
        return 0
    start = time.perf_counter()
    if args.out is None:
        parser.error("--out is required (unless --plan)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_proof: no CUDA device; use --device cpu --quick to check the script on a CPU")
    payload_info = json.loads((args.payload / "payload.json").read_text())
    commit = git_commit()
    if commit == "unknown":  # the device gets the working tree without .git: the payload's commit says it
        commit = payload_info["commit"]
    where = {**provenance(device=device_description(args.device)), "commit": commit,
             "torch": torch.__version__, "payload_quick": payload_info["quick"]}
    where["run"] = where["time_utc"]  # one id for every row of this run (the README reads the last run)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu_proof_") as work:
        proof = Proof(args.device, args.quick, args.payload, args.out, Path(work), start + args.seconds, where,
                      workers=0 if args.quick else min(12, os.cpu_count() or 1))
        only = {s.strip() for s in args.only.split(",") if s.strip()}
        selected = [s for s in sections(args.quick) if not only or s.name.split()[0] in only]
        proof.reserve = sum(s.estimate(proof) for s in selected if not s.name.startswith("1 "))
        for section in selected:
            estimate, left = section.estimate(proof), proof.left()
            print(f"== section {section.name} ({left:.0f} s left, needs about {estimate:.0f} s)", flush=True)
            if estimate > left:
                proof.write(section.csv, [{"section": section.name, "status": "skipped", "estimate_s": estimate,
                                           "left_s": left}])
                continue
            started = time.perf_counter()
            try:
                section.run(proof)
            except Exception as err:  # recorded; the next section still runs
                traceback.print_exc()
                proof.failed.append(section.name)
                proof.write(section.csv, [{"section": section.name, "status": "failed",
                                           "error": f"{type(err).__name__}: {err}"[:500]}])
            print(f"   {section.name}: {time.perf_counter() - started:.0f} s", flush=True)
    print(f"gpu_proof: {time.perf_counter() - start:.0f} s; CSVs in {args.out}"
          + (f"; FAILED: {', '.join(proof.failed)}" if proof.failed else ""), flush=True)
    return 1 if proof.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
