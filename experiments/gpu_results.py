"""Take in what a GPU proof run brought back: its CSVs appended to ``results/gpu/``, the tables and
the README regenerated.

    python experiments/gpu_results.py FILES_AT/gpu     # the folder the device tool's files lie in

Every row already carries the device, commit and torch version it was measured with
(``experiments/gpu_proof.py``); nothing here changes a number. ``proof.log`` is kept as
``results/gpu/proof.log`` (the last run's).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from faceverify.results import append_rows, csv_to_markdown, read_rows  # noqa: E402

TITLES = {
    "train": "GPU training throughput: the Trainer against the independent bare loop (gpu_proof section 1)",
    "amp": "GPU AMP correctness: bf16 and fp16 runs (gpu_proof section 2)",
    "data": "GPU machine data path: packed memmap, RecordIO on CPU workers and nvJPEG (gpu_proof section 3)",
    "align": "Alignment on the GPU against bare batched MTCNN (gpu_proof section 4)",
    "lfw_gpu_losses": "Wen et al.'s three arms at full resolution on LFW fold 1 (gpu_proof section 5)",
    "ddp": "DDP over NCCL and Partial FC on the GPU (gpu_proof section 6)",
}


def take_in(folder: Path, results: Path) -> list[Path]:
    written = []
    for name, title in TITLES.items():
        source = folder / f"{name}.csv"
        if not source.is_file():
            continue
        target = append_rows(results / f"{name}.csv", read_rows(source))
        csv_to_markdown(target, results / f"{name}.md", title,
                        note="Produced by `experiments/gpu_proof.sh` on a lent GPU and taken in by "
                             "`experiments/gpu_results.py`; every row names its device, commit and torch.")
        written.append(target)
    if (folder / "proof.log").is_file():
        shutil.copyfile(folder / "proof.log", results / "proof.log")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "gpu")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    written = take_in(args.folder, args.results)
    if not written:
        raise SystemExit(f"gpu_results: no gpu_proof CSV in {args.folder}")
    print("\n".join(f"appended {p}" for p in written))
    if not args.no_readme:
        subprocess.run([sys.executable, str(ROOT / "experiments" / "update_readme.py")], check=True)


if __name__ == "__main__":
    main()
