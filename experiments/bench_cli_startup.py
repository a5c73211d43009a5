"""Benchmark: what a ``faceverify`` command costs before it can print its help or a usage error.

    python experiments/bench_cli_startup.py [--repeats 5] [--out results/benchmarks]

Each command runs as its own process (``python -m faceverify.cli ...``), ``--repeats`` times,
interleaved; the row holds the median wall time and the peak resident memory of each (from
``os.wait4``, the child's own rusage). The baselines, in the same run: a bare interpreter
(``python -c pass``), and an interpreter importing what the commands used to load before they
could answer (torch, torchvision, OpenCV, scikit-learn, matplotlib, facenet-pytorch).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from faceverify.results import provenance, record_rows

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "help": ["--help"],
    "align_help": ["align", "--help"],
    "train_bad_flag": ["train", "--no-such-flag"],
    "eval_bad_flag": ["eval", "--no-such-flag"],
}
BASELINES = {
    "python_bare": ["-c", "pass"],
    "python_heavy_imports": ["-c", "import torch, torchvision, cv2, sklearn.decomposition, matplotlib.pyplot, "
                                   "facenet_pytorch"],
}


def measure(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one ``python ARGS`` process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = parser.parse_args()
    # this process stays small (no torch): on Linux a child's peak RSS counts its parent's from the fork
    row: dict = {**provenance(device=f"cpu: {platform.machine()}, {os.cpu_count()} cores"), "repeats": args.repeats}
    runs = {name: ["-m", "faceverify.cli", *argv] for name, argv in COMMANDS.items()} | BASELINES
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, argv in runs.items():  # interleaved: a busy moment costs every command alike
            samples[name].append(measure(argv))
    for name, values in samples.items():
        row[f"{name}_s"] = statistics.median(v[0] for v in values)
        row[f"{name}_mb"] = statistics.median(v[1] for v in values)
    row["help_over_heavy_imports"] = row["help_s"] / row["python_heavy_imports_s"]
    csv_path = args.out / "cli_startup.csv"
    record_rows(csv_path, [row], args.out / "cli_startup.md", "What a command costs before its help or a usage error",
                note="Produced by `python experiments/bench_cli_startup.py`: each command a fresh process, median "
                     "of the repeats (interleaved), peak RSS from the child's rusage; baselines in the same run: a "
                     "bare interpreter and one importing torch, torchvision, OpenCV, scikit-learn, matplotlib "
                     "and facenet-pytorch (what the commands loaded before).")
    print(row)


if __name__ == "__main__":
    main()
