"""Where the Trainer's step spends its time, beside the independent bare loop of bench_trainer.py.

    python experiments/profile_trainer.py [--steps 20] [--warmup 5] [--out results/benchmarks]

Both train the ``cpu profile`` setting of ``bench_trainer.py`` (sphere20 x1/4, 56x48, 128-d, batch 128,
softmax + center loss, SGD) under ``torch.profiler`` for ``steps`` steps after ``warmup``, in ``rounds`` alternating runs each (ABBA), keeping per operator
the least time over a side's rounds (a noisy machine only adds time). Writes
``trainer_profile.csv``: one row per operator (by self CPU time per step) with the Trainer's and the bare
loop's milliseconds and calls per step and their difference, the largest differences first, so the
place where the Trainer loses time is read from a recorded table, not guessed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_trainer  # noqa: E402  (the settings, data and loops being profiled)

from faceverify.config import merge  # noqa: E402
from faceverify.provenance import device_description  # noqa: E402
from faceverify.results import provenance, record_rows  # noqa: E402
from faceverify.training.config import TrainConfig  # noqa: E402
from faceverify.training.trainer import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def per_step(prof: profile, steps: int) -> dict[str, tuple[float, float]]:
    """operator -> (self CPU ms per step, calls per step)."""
    return {e.key: (e.self_cpu_time_total / 1000.0 / steps, e.count / steps) for e in prof.key_averages()}


def fastest(rounds: list[dict[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    """Per operator, the least time over the rounds (a noisy machine only ever adds time)."""
    names = set().union(*rounds)
    return {n: min((r[n] for r in rounds if n in r), key=lambda v: v[0]) for n in names}


def profile_trainer(pack: Path, setting: dict, batch: int, steps: int, warmup: int, out: Path) -> profile:
    config = merge(TrainConfig(), {
        "out": str(out), "device": "cpu", "progress": False, "tensorboard": False, "log_every": 50,
        "channels_last": setting["channels_last"], "checkpoint_every": 100_000, "seed": 0,
        "data": {"source": str(pack), "sampler": "shuffle", "batch_size": batch, "workers": 0},
        "model": {"backbone": setting["backbone"], "width": setting["width"], "embedding_dim": setting["dim"]},
        "loss": {"terms": {"softmax": 1.0, "center": 0.003}},
        "optim": {"lr": 0.01, "max_iters": warmup + steps, "milestones": [100_000], "warmup_iters": 0},
    })
    prof = profile(activities=[ProfilerActivity.CPU], schedule=schedule(wait=warmup - 1, warmup=1, active=steps))
    trainer = Trainer(config, callbacks=[lambda _: prof.step()])
    trainer.save = lambda name="last.pt": trainer.check_finite()
    with prof:
        trainer.fit()
    return prof


def profile_bare(images, labels, setting: dict, batch: int, steps: int, warmup: int) -> profile:
    prof = profile(activities=[ProfilerActivity.CPU], schedule=schedule(wait=warmup - 1, warmup=1, active=steps))
    model = bench_trainer.build_backbone(setting["backbone"], setting["dim"], setting["width"],
                                         tuple(images.shape[1:3]))
    with prof:
        bench_trainer.bare_loop(torch.from_numpy(images), torch.from_numpy(labels.astype("int64")),
                                int(labels.max()) + 1, model, setting["dim"], batch, "cpu", steps, warmup,
                                setting["channels_last"], on_step=prof.step)
    return prof


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = parser.parse_args()
    setting = bench_trainer.SETTINGS["cpu profile"]
    batch = setting["batch"]["cpu"]
    images, labels = bench_trainer.synthetic_data(setting["size"])
    trainer_rounds, bare_rounds = [], []
    with tempfile.TemporaryDirectory(prefix="profile_trainer_") as tmp:
        pack = bench_trainer.synthetic_pack(Path(tmp), images, labels)
        for round_ in range(args.rounds):  # ABBA, as in bench_trainer.py
            run_trainer = lambda: trainer_rounds.append(per_step(profile_trainer(  # noqa: E731
                pack, setting, batch, args.steps, args.warmup, Path(tmp) / f"run{round_}"), args.steps))
            run_bare = lambda: bare_rounds.append(per_step(  # noqa: E731
                profile_bare(images, labels, setting, batch, args.steps, args.warmup), args.steps))
            for run in ((run_trainer, run_bare) if round_ % 2 == 0 else (run_bare, run_trainer)):
                run()
    trainer, bare = fastest(trainer_rounds), fastest(bare_rounds)
    where = provenance(device=device_description("cpu"))
    names = sorted(set(trainer) | set(bare), key=lambda k: -abs(trainer.get(k, (0, 0))[0] - bare.get(k, (0, 0))[0]))
    total_t = sum(v[0] for v in trainer.values())
    total_b = sum(v[0] for v in bare.values())
    rows = [{**where, "operator": "(all operators)", "trainer_ms_per_step": total_t, "bare_ms_per_step": total_b,
             "difference_ms": total_t - total_b, "trainer_calls_per_step": "", "bare_calls_per_step": "",
             "steps": args.steps, "rounds": args.rounds, "setting": "cpu profile", "batch_size": batch}]
    for name in names[: args.top]:
        t_ms, t_calls = trainer.get(name, (0.0, 0.0))
        b_ms, b_calls = bare.get(name, (0.0, 0.0))
        rows.append({**where, "operator": name, "trainer_ms_per_step": t_ms, "bare_ms_per_step": b_ms,
                     "difference_ms": t_ms - b_ms, "trainer_calls_per_step": t_calls, "bare_calls_per_step": b_calls,
                     "steps": args.steps, "rounds": args.rounds, "setting": "cpu profile", "batch_size": batch})
    for row in rows[:15]:
        print(f"{row['operator'][:45]:45s} trainer {row['trainer_ms_per_step']:8.2f} ms  bare "
              f"{row['bare_ms_per_step']:8.2f} ms  diff {row['difference_ms']:+8.2f}")
    record_rows(args.out / "trainer_profile.csv", rows, args.out / "trainer_profile.md",
                "Where the Trainer's step spends its time, beside the independent bare loop",
                note="Produced by `python experiments/profile_trainer.py`: torch.profiler self CPU time per step "
                     "by operator, the cpu profile setting of bench_trainer.py, largest differences first.")


if __name__ == "__main__":
    main()
