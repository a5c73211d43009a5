"""Partial FC against the full classification head: step time and head memory per process at 100K,
1M and 2M identities.

Every configuration runs in fresh processes (``--child``; ``world_size`` > 1: that many gloo
processes of ``torch.multiprocessing``), so each one's peak memory is its own. The embedding
network is small on purpose (fixed random inputs [B, 64] -> Linear -> 512-d): the head is measured,
not a backbone. Head memory = the process's peak resident memory (VmHWM, reset after the network
and inputs exist) while the head is built and trained for the timed steps.

The full head is an independent baseline written here with plain PyTorch (a ``[C, D]`` parameter,
CosFace logits, ``F.cross_entropy``, ``torch.optim.SGD``; with several processes a replicated copy
whose gradient is all-reduced, as DDP does); faceverify's Partial FC runs through the Objective
(``loss.partial_fc.sample_rate``, the cosface term). Where a full head would not fit in memory its
row says so and is not run. ``memory_ratio`` and ``step_ratio`` divide by the full head at the same
classes and world size, or (memory) the one-process full head, whose per-process memory a
replicated copy only adds to, or, where no full head fits, :func:`head_estimate_mb` of it (said
so in the row).

    python experiments/bench_partial_fc.py            # -> results/benchmarks/partial_fc.csv / .md

``--part training`` measures the other memory and communication settings of training at scale
(issue 25, 1b) through faceverify's own Trainer, each against the same Trainer without it, in
fresh processes: ``model.gradient_checkpointing`` and ``optim.accumulate`` (peak memory of a step
per image: the process's peak resident memory during the timed steps above its resident memory
before them, divided by the batch) and ``ddp.compress`` (2 gloo processes; step time, and the
bytes one step's gradient all-reduce puts on the wire, counted by a hook around torch's own).
The children allocate every block over 64 KB from mmap (``MALLOC_MMAP_THRESHOLD_``), so freed
tensors leave the resident set and its peak follows the live tensors.
The network is a real backbone (iresnet50 at width 1/4 on 112x112 crops, ArcFace + nothing else),
the data a synthetic pack.

    python experiments/bench_partial_fc.py --part training   # -> results/benchmarks/training_memory.csv / .md
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIM, IN_FEATURES, BATCH = 512, 64, 128
SCALE, MARGIN, LR = 64.0, 0.35, 0.1
CLASSES = (100_000, 1_000_000, 2_000_000)
RATES = (1.0, 0.3, 0.1)


def memory_kb(field: str) -> int:
    for line in open("/proc/self/status", encoding="ascii"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def available_mb() -> float:
    for line in open("/proc/meminfo", encoding="ascii"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def head_estimate_mb(classes: int, world: int, rate: float | None) -> float:
    """Peak head memory per process, from the measured rule of thumb: about six ``[C_k, D]`` float32
    tensors at their largest (weights, momentum, gradient, the normalised copy and its gradient, the
    decayed gradient; ``C_k = C`` for the replicated full head), of which four scale with the sampled
    rows, plus three ``[B, S_k]`` logit-sized ones (the full head: the rank's batch x every class)."""
    if rate is None:
        rows, sampled, batch = classes, classes, BATCH // world
    else:
        rows = math.ceil(classes / world)
        sampled, batch = rows * rate, BATCH
    return ((2 * rows + 4 * sampled) * DIM + 3 * batch * sampled) * 4 / 2**20


def _run(rank: int, setting: dict, out_dir: str) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch import nn

    from faceverify.config import Replace, merge  # imported before the memory baseline: not the head's
    from faceverify.losses.objective import LossConfig, Objective
    from faceverify.losses.partial_fc import RowSGD

    world = setting["world"]
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{out_dir}/init", rank=rank, world_size=world)
    classes, steps = setting["classes"], setting["steps"]
    generator = torch.Generator().manual_seed(0)
    share = BATCH // world
    inputs = torch.randn(steps + 1, BATCH, IN_FEATURES, generator=generator)[:, rank * share:(rank + 1) * share]
    labels = torch.randint(0, classes, (steps + 1, BATCH), generator=generator)[:, rank * share:(rank + 1) * share]
    torch.manual_seed(0)
    network = nn.Linear(IN_FEATURES, DIM)
    network_sgd = torch.optim.SGD(network.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    open("/proc/self/clear_refs", "w").write("5")  # VmHWM from here on: the head's memory
    before = memory_kb("VmRSS")

    def sync_network() -> None:
        if world > 1:
            for p in network.parameters():
                dist.all_reduce(p.grad)
                p.grad /= world

    if setting["head"] == "full":
        weight = nn.Parameter(torch.empty(classes, DIM))
        nn.init.xavier_uniform_(weight)
        head_sgd = torch.optim.SGD([weight], lr=LR, momentum=0.9, weight_decay=5e-4)

        def step(i: int) -> None:
            x = network(inputs[i])
            logits = F.normalize(x) @ F.normalize(weight).T * SCALE
            logits[torch.arange(share), labels[i]] -= SCALE * MARGIN
            loss = F.cross_entropy(logits, labels[i])
            network_sgd.zero_grad(set_to_none=True)
            head_sgd.zero_grad(set_to_none=True)
            loss.backward()
            sync_network()
            if world > 1:
                dist.all_reduce(weight.grad)
                weight.grad /= world
            network_sgd.step()
            head_sgd.step()
    else:
        config = merge(LossConfig(), {"terms": Replace({"cosface": 1.0}), "cosface": {"s": SCALE, "m": MARGIN},
                                      "partial_fc": {"sample_rate": setting["rate"]}})
        objective = Objective(config, DIM, classes, seed=0, rank=rank, world_size=world)
        row_sgd = RowSGD(0.9, 5e-4, False)
        sampled = []

        def step(i: int) -> None:
            output = objective(network(inputs[i]), labels[i])
            network_sgd.zero_grad(set_to_none=True)
            output.total.backward()
            sync_network()
            network_sgd.step()
            objective.after_step(LR, row_sgd)
            sampled.append(objective.losses["cosface"].sampled_classes)

    step(steps)  # warm-up (not timed)
    if world > 1:
        dist.barrier()
    started = time.perf_counter()
    for i in range(steps):
        step(i)
    if world > 1:
        dist.barrier()
    seconds = (time.perf_counter() - started) / steps
    result = {"step_seconds": seconds, "head_peak_memory_mb": (memory_kb("VmHWM") - before) / 1024}
    if setting["head"] != "full":
        result["sampled_classes_per_rank"] = sum(sampled) / len(sampled)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    if world > 1:
        dist.destroy_process_group()


def run_ranks(target, setting: dict) -> list[dict]:  # type: ignore[no-untyped-def]
    """``target(rank, setting, out_dir)`` in this process (a world of one) or in ``setting["world"]``
    spawned processes; each rank writes ``rank<k>.json`` there; returns them in rank order."""
    with tempfile.TemporaryDirectory() as out_dir:
        if setting["world"] == 1:
            target(0, setting, out_dir)
        else:
            import torch.multiprocessing as mp

            mp.spawn(target, args=(setting, out_dir), nprocs=setting["world"], join=True)
        return [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(setting["world"])]


def child(setting: dict) -> None:
    ranks = run_ranks(_run, setting)
    merged = {"step_seconds": ranks[0]["step_seconds"],
              "head_peak_memory_mb": max(r["head_peak_memory_mb"] for r in ranks)}
    if "sampled_classes_per_rank" in ranks[0]:
        merged["sampled_classes_per_rank"] = sum(r["sampled_classes_per_rank"] for r in ranks) / len(ranks)
    print(json.dumps(merged))


TRAINING = {"backbone": "iresnet50", "width": 0.25, "dim": 128, "size": (112, 112), "batch": 64, "classes": 256}
TRAINING_SETTINGS = [  # (feature, its setting, the config changes, processes)
    ("none", "", {}, 1),
    ("gradient_checkpointing", "true", {"model": {"gradient_checkpointing": True}}, 1),
    ("accumulate", "2", {"optim": {"accumulate": 2}}, 1),
    ("accumulate", "4", {"optim": {"accumulate": 4}}, 1),
    ("none", "", {}, 2),
    ("ddp.compress", "fp16", {"ddp": {"compress": "fp16"}}, 2),
    ("ddp.compress", "bf16", {"ddp": {"compress": "bf16"}}, 2),
]


def _train_steps(rank: int, setting: dict, out_dir: str) -> None:
    import torch

    from faceverify.config import merge, merge_tree
    from faceverify.training import trainer as trainer_module
    from faceverify.training.config import TrainConfig

    world = setting["world"]
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(setting["port"]), WORLD_SIZE=str(world),
                          RANK=str(rank), LOCAL_RANK=str(rank))
    wire = {"bytes": 0}
    for name, hook in list(trainer_module.COMPRESS_HOOKS.items()):  # count what the hook sends
        def counting(state, bucket, hook=hook):  # type: ignore[no-untyped-def]
            wire["bytes"] += bucket.buffer().numel() * 2  # cast to a 2-byte type before the all-reduce
            return hook(state, bucket)
        trainer_module.COMPRESS_HOOKS[name] = counting
    config = merge(TrainConfig(), merge_tree({
        "out": str(Path(out_dir) / "run"), "device": "cpu", "progress": False, "tensorboard": False,
        "log_every": 1000, "checkpoint_every": 100000, "keep_best": False,
        "data": {"source": setting["pack"], "batch_size": TRAINING["batch"], "workers": 0, "sampler": "shuffle"},
        "model": {"backbone": TRAINING["backbone"], "width": TRAINING["width"], "embedding_dim": TRAINING["dim"]},
        "optim": {"lr": 0.01, "max_iters": 1000, "milestones": [1000]},
        "loss": {"terms": {"softmax": 0.0, "arcface": 1.0}}}, setting["changes"]))
    trainer = trainer_module.Trainer(config)
    batches = iter(trainer.loader)
    images, labels, *_ = next(batches)
    trainer.train_step(images, labels)  # warm-up: the optimiser's momentum and the allocator's pools
    if world > 1:
        torch.distributed.barrier()
    wire["bytes"] = 0
    open("/proc/self/clear_refs", "w").write("5")
    before = memory_kb("VmRSS")
    started = time.perf_counter()
    for _ in range(setting["steps"]):
        images, labels, *_ = next(batches)
        trainer.train_step(images, labels)
    seconds = (time.perf_counter() - started) / setting["steps"]
    gradient_elements = sum(p.numel() for p in trainer.step_module.parameters() if p.requires_grad)
    result = {"step_seconds": seconds, "step_peak_memory_mb": (memory_kb("VmHWM") - before) / 1024,
              "wire_bytes": wire["bytes"] / setting["steps"] if config.ddp.compress != "none"
              else gradient_elements * 4 * (world > 1)}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    trainer.release()
    if world > 1:
        torch.distributed.destroy_process_group()


def training_child(setting: dict) -> None:
    ranks = run_ranks(_train_steps, setting)
    print(json.dumps({"step_seconds": max(r["step_seconds"] for r in ranks),
                      "step_peak_memory_mb": max(r["step_peak_memory_mb"] for r in ranks),
                      "wire_bytes": ranks[0]["wire_bytes"]}))


def training_part(args: argparse.Namespace) -> None:
    import numpy as np

    from faceverify.data.packed import write_packed_array
    from faceverify.provenance import device_description
    from faceverify.results import provenance, record_rows

    base = {**provenance(device=device_description("cpu")), "backbone": TRAINING["backbone"],
            "width": TRAINING["width"], "input": "{}x{}".format(*TRAINING["size"]), "batch": TRAINING["batch"],
            "timed_steps": args.steps, "cpu_cores": os.cpu_count()}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        n = TRAINING["batch"] * (args.steps + 2)
        pack = write_packed_array(Path(folder) / "pack", rng.integers(0, 256, (n, *TRAINING["size"], 3), dtype=np.uint8),
                                  rng.integers(0, TRAINING["classes"], n).tolist(),
                                  [str(c) for c in range(TRAINING["classes"])])
        plain: dict[int, dict] = {}
        for index, (feature, value, changes, world) in enumerate(TRAINING_SETTINGS):
            setting = {"pack": str(pack), "changes": changes, "world": world, "steps": args.steps,
                       "port": 29610 + index}
            row = {**base, "feature": feature, "setting": value, "world_size": world}
            # large blocks straight from mmap and back to the system when freed: resident memory then
            # follows the live tensors instead of what malloc's pools kept from the warm-up
            done = subprocess.run([sys.executable, __file__, "--training-child", json.dumps(setting)],
                                  capture_output=True, text=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
            if done.returncode:
                raise SystemExit(f"{feature}={value} failed:\n{done.stderr[-3000:]}")
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            row.update(step_seconds=round(measured["step_seconds"], 3),
                       step_peak_memory_mb=round(measured["step_peak_memory_mb"]),
                       memory_per_image_mb=round(measured["step_peak_memory_mb"] / (TRAINING["batch"] / world), 2),
                       wire_mb_per_step=round(measured["wire_bytes"] / 2**20, 2) if world > 1 else "")
            if feature == "none":
                plain[world] = row
            reference = plain[world]
            row["memory_ratio"] = round(row["step_peak_memory_mb"] / reference["step_peak_memory_mb"], 3)
            row["step_ratio"] = round(row["step_seconds"] / reference["step_seconds"], 3)
            if world > 1:
                row["wire_ratio"] = round(row["wire_mb_per_step"] / reference["wire_mb_per_step"], 3)
            rows.append(row)
            print({k: row.get(k) for k in ("feature", "setting", "world_size", "step_seconds", "step_peak_memory_mb",
                                            "memory_ratio", "wire_mb_per_step")}, flush=True)
    columns = ["feature", "setting", "world_size", "step_seconds", "step_ratio", "step_peak_memory_mb",
               "memory_per_image_mb", "memory_ratio", "wire_mb_per_step", "wire_ratio", "commit", "device"]
    md = record_rows(args.out / "training_memory.csv", rows, args.out / "training_memory.md",
                     "Memory and communication settings of training, each against the same Trainer without it",
                     note=f"`python experiments/bench_partial_fc.py --part training`: {TRAINING['backbone']} at width "
                          f"{TRAINING['width']} on {base['input']} synthetic crops, ArcFace, global batch "
                          f"{TRAINING['batch']}, {args.steps} timed steps after a warm-up, fresh processes on the CPU "
                          "(2 = gloo); memory = a step's peak resident memory per process above the memory before "
                          "the timed steps (activations and gradients); memory per image divides it by the "
                          "process's share of the batch; wire = the gradient bytes one all-reduce sends per "
                          "process (counted by a hook around torch's compression hooks; float32 gradients "
                          "without one).", columns=columns)
    print(f"wrote {md}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=list(CLASSES))
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (after one warm-up)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    parser.add_argument("--part", choices=["heads", "training"], default="heads",
                        help="heads: Partial FC against the full head; training: checkpointing, accumulation, "
                             "DDP compression")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--training-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if args.training_child:
        training_child(json.loads(args.training_child))
        return
    if args.part == "training":
        training_part(args)
        return
    from faceverify.provenance import device_description
    from faceverify.results import provenance, record_rows

    base = {**provenance(device=device_description("cpu")), "embedding_dim": DIM, "batch": BATCH,
            "timed_steps": args.steps, "cpu_cores": os.cpu_count()}
    rows = []
    for classes in args.classes:
        full: dict[int, dict] = {}
        for world in args.worlds:
            settings = [{"head": "full", "rate": "", "world": world}] if world <= 2 else []
            settings += [{"head": "partial_fc", "rate": r, "world": world} for r in (RATES if world <= 2 else (0.1,))]
            for setting in settings:
                setting.update(classes=classes, steps=args.steps)
                row = {**base, "classes": classes, "head": setting["head"], "sample_rate": setting["rate"],
                       "world_size": world}
                estimate = head_estimate_mb(classes, world, None if setting["head"] == "full" else setting["rate"])
                if estimate * world > 0.85 * available_mb():
                    row["note"] = (f"{'full head' if setting['head'] == 'full' else 'head'} does not fit: about "
                                   f"{estimate:.0f} MB per process x {world} processes > 85% of the "
                                   f"{available_mb():.0f} MB available")
                    rows.append(row)
                    print(row["note"], flush=True)
                    continue
                done = subprocess.run([sys.executable, __file__, "--child", json.dumps(setting)],
                                      capture_output=True, text=True)
                if done.returncode:
                    row["note"] = f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
                    rows.append(row)
                    print(row["note"], flush=True)
                    continue
                measured = json.loads(done.stdout.strip().splitlines()[-1])
                row.update(step_seconds=round(measured["step_seconds"], 4),
                           head_peak_memory_mb=round(measured["head_peak_memory_mb"]))
                if "sampled_classes_per_rank" in measured:
                    row["sampled_classes_per_rank"] = round(measured["sampled_classes_per_rank"])
                if setting["head"] == "full":
                    full[world] = row
                rows.append(row)
                print({k: row.get(k) for k in ("classes", "head", "sample_rate", "world_size", "step_seconds",
                                                "head_peak_memory_mb")}, flush=True)
        for row in rows:
            if row["classes"] != classes or row["head"] != "partial_fc" or "step_seconds" not in row:
                continue
            same = full.get(row["world_size"])
            reference = same or full.get(1)
            if reference is not None:
                row["memory_ratio"] = round(row["head_peak_memory_mb"] / reference["head_peak_memory_mb"], 3)
                row["memory_reference"] = f"full head, {reference['world_size']} process(es)"
            else:  # no full head fits: against its estimate, said so
                row["memory_ratio"] = round(row["head_peak_memory_mb"] / head_estimate_mb(classes, 1, None), 3)
                row["memory_reference"] = "full head's estimate (it does not fit)"
            if same is not None:
                row["step_ratio"] = round(row["step_seconds"] / same["step_seconds"], 3)
    columns = ["classes", "head", "sample_rate", "world_size", "step_seconds", "step_ratio", "head_peak_memory_mb",
               "memory_ratio", "memory_reference", "sampled_classes_per_rank", "note", "commit", "device"]
    md = record_rows(args.out / "partial_fc.csv", rows, args.out / "partial_fc.md",
                     "Partial FC against the full classification head",
                     note=f"`python experiments/bench_partial_fc.py`: CosFace head, {DIM}-d, global batch {BATCH}, "
                          f"{args.steps} timed steps after a warm-up, each configuration in fresh gloo processes on "
                          "the CPU; memory per process (peak resident memory of the head), ratios against an "
                          "independent plain-PyTorch full head (see the script's docstring).", columns=columns)
    print(f"wrote {md}")


if __name__ == "__main__":
    main()
