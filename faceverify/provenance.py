"""Where a result came from: the git commit, the device and the time, for every results row."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def git_commit(short: bool = True, root: Path = PACKAGE_ROOT) -> str:
    """The commit of the checkout this package runs from, with ``+dirty`` if its code has changes.

    Changes under ``results/`` do not count: a recording writes its own tracked result files as it
    goes, and would otherwise mark every row after its first as dirty."""
    try:
        args = ["git", "rev-parse", "--short=10" if short else "--verify", "HEAD"]
        commit = subprocess.run(
            args, cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
            cwd=root, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_description(device: str | torch.device | None = None) -> str:
    """Human-readable name of the device a computation ran on, e.g. ``cpu: x86_64, 2 threads``."""
    import torch  # here, so that writing a results row (faceverify.results) does not load torch

    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    cpu = platform.processor() or platform.machine()
    return f"cpu: {cpu}, {torch.get_num_threads()} threads, {os.cpu_count()} cores"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
