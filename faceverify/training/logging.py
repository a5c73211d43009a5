"""Training logs: JSON lines (``metrics.jsonl``), TensorBoard scalars and a progress report.

Only the main process writes; the others get a logger that does nothing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from faceverify.io import write_text
from faceverify.progress import progress_bar as make_progress


class MetricsLogger:
    """One JSON line per logged step in ``metrics.jsonl`` (and TensorBoard scalars).

    ``resume_step``: the step a resumed run starts from. Rows of later steps, written by the
    interrupted run after its last checkpoint, are dropped (the resumed run logs those steps
    again), so the file keeps exactly one row per step.
    """

    def __init__(self, out_dir: str | Path, enabled: bool = True, tensorboard: bool = True, resume_step: int = 0):
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self._writer = None
        if enabled and self.path.is_file():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and _step_of(line) is not None and _step_of(line) <= resume_step]
            write_text(self.path, "".join(line + "\n" for line in kept))
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step drops the interrupted run's events after the checkpoint, as above
                self._writer = SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=resume_step + 1)
            except ImportError:  # tensorboard is a dependency, but a missing one must not stop training
                self._writer = None

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                   for k, v in values.items()}}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(float(value)):
                    self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line torn by a kill


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def progress_bar(total: int, initial: int, enabled: bool) -> Any:
    """The training loop's report: a bar on a terminal, plain lines (with the loss terms) in a log."""
    return make_progress(total=total, initial=initial, desc="train", unit="it", enabled=enabled)
