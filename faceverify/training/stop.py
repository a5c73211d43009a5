"""A run stopped by the user is not a result.

``train`` treats SIGINT / SIGTERM as "finish this step, save a checkpoint, return". Commands that
train and then *use* the network (``ablate``, ``demo``, ``reproduce``) must not go on to score an
unfinished network, record it, or start the next cell: they call :func:`raise_if_stopped`, and the
CLI turns :class:`StoppedBySignal` into one line on stderr and exit status 130. Kept free of torch
so that the CLI can name it without importing the trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class StoppedBySignal(RuntimeError):
    """A run that trains and then uses what it trained (an ablation cell, the demo, a reproduction)
    was stopped by SIGINT / SIGTERM: the checkpoint is saved, nothing was evaluated or recorded from
    the unfinished network, and the same command resumes."""


class StoppableResult(Protocol):
    stopped_by_signal: bool
    step: int
    out_dir: Path


def raise_if_stopped(result: StoppableResult, max_iters: int) -> None:
    """Raise :class:`StoppedBySignal` when ``result`` is a run stopped by a signal: its network is
    unfinished (or the user asked to stop before anything more happens) and must not be scored."""
    if result.stopped_by_signal:
        raise StoppedBySignal(f"stopped by signal at step {result.step} of {max_iters}; the checkpoint in "
                              f"{result.out_dir} is saved and nothing was evaluated or recorded from it. "
                              "Re-run the same command to resume")
