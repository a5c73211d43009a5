"""Checkpoints of class-sharded tensors (Partial FC weights and momentum, sharded centers) that
resume on any number of processes.

Each rank writes its rows to ``checkpoints/last.shards/step-<S>/rank-<k>-of-<W>.pt`` (atomically)
with their class range; after a barrier the main rank writes ``last.pt``, whose ``class_shards``
entry names that folder and every file's ``[start, stop)``, and then removes the folders of older
steps. A crash at any point leaves ``last.pt`` naming a complete set of files. On resume each
rank reads (memory-mapped) only the files that overlap its own new range and copies those rows,
so a run saved on 2 processes resumes on 1 or 3 (``W`` is free; ``C`` is fixed by the data).

The output folder must be one folder that every rank sees (a shared filesystem across machines).
``best.pt`` (written by the main rank alone) holds no shards: it is for evaluation and export,
which never need the classification head.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from faceverify.errors import FaceverifyError
from faceverify.io import atomic_write
from faceverify.losses.objective import Objective
from faceverify.training.distributed import DistInfo

FOLDER = "last.shards"


class ShardedCheckpointError(FaceverifyError, ValueError):
    """A checkpoint whose class shards are missing, damaged, or of another number of classes."""


def _shard_range(objective: Objective) -> tuple[int, int, int]:
    shard = objective.losses[objective.sharded[0]].shard
    return shard.start, shard.stop, shard.num_classes


def save_shards(objective: Objective, state: dict, checkpoint_dir: Path, step: int, info: DistInfo) -> dict | None:
    """Move the sharded tensors out of ``state["objective"]`` into this rank's shard file; returns the
    ``class_shards`` entry for ``last.pt`` (on every rank; ``None`` without sharded terms). A collective."""
    keys = objective.sharded_keys()
    if not keys:
        return None
    start, stop, num_classes = _shard_range(objective)
    tensors = {key: state["objective"].pop(key).detach().cpu() for key in keys}
    folder = f"{FOLDER}/step-{step:09d}"
    name = f"rank-{info.rank:04d}-of-{info.world_size:04d}.pt"
    path = checkpoint_dir / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb", durable=True) as handle:
        torch.save({"start": start, "stop": stop, "num_classes": num_classes, "tensors": tensors}, handle)
    ranges = [(start, stop)]
    if info.distributed:
        gathered: list = [None] * info.world_size
        dist.all_gather_object(gathered, (start, stop))
        ranges = gathered
        dist.barrier()  # every shard is on disk before last.pt names them
    files = [{"file": f"rank-{r:04d}-of-{info.world_size:04d}.pt", "start": s, "stop": e}
             for r, (s, e) in enumerate(ranges)]
    return {"folder": folder, "files": files, "num_classes": num_classes, "keys": keys}


def strip_shards(objective: Objective, state: dict) -> None:
    """Leave the sharded tensors out of a checkpoint that keeps none (``best.pt``)."""
    for key in objective.sharded_keys():
        state["objective"].pop(key, None)
    state["class_shards"] = None


def remove_older_shards(checkpoint_dir: Path, entry: dict | None) -> None:
    """After ``last.pt`` names ``entry``'s folder: remove the shard folders of other steps."""
    if entry is None:
        return
    keep = checkpoint_dir / entry["folder"]
    for folder in (checkpoint_dir / FOLDER).glob("step-*"):
        if folder != keep:
            shutil.rmtree(folder, ignore_errors=True)


def load_objective(objective: Objective, state: dict, checkpoint: Path) -> None:
    """Load ``state["objective"]`` and, for sharded terms, this rank's rows from the shard files,
    whatever number of processes wrote them."""
    keys = objective.sharded_keys()
    entry = state.get("class_shards")
    if not keys:
        objective.load_state_dict(state["objective"])
        return
    if not entry:
        raise ShardedCheckpointError(f"{checkpoint} holds no class shards (Partial FC); resume from a last.pt "
                                     "written by a Partial FC run")
    missing, unexpected = objective.load_state_dict(state["objective"], strict=False)
    if unexpected or set(missing) != set(keys):
        raise ShardedCheckpointError(f"{checkpoint}: objective keys do not match this run's (missing "
                                     f"{sorted(set(missing) - set(keys))}, unexpected {sorted(unexpected)})")
    start, stop, num_classes = _shard_range(objective)
    if entry["num_classes"] != num_classes or sorted(entry["keys"]) != sorted(keys):
        raise ShardedCheckpointError(f"{checkpoint}: its class shards hold {entry['num_classes']} classes of "
                                     f"{entry['keys']}, this run has {num_classes} of {keys}")
    targets = objective.state_dict(keep_vars=True)
    filled = torch.zeros(stop - start, dtype=torch.bool)
    for item in entry["files"]:
        lo, hi = max(start, item["start"]), min(stop, item["stop"])
        if lo >= hi:
            continue
        path = checkpoint.parent / entry["folder"] / item["file"]
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # a missing or damaged file: torch raises many types
            raise ShardedCheckpointError(f"cannot read the class shard {path} that {checkpoint} names: {err}") from err
        if (saved["start"], saved["stop"]) != (item["start"], item["stop"]):
            raise ShardedCheckpointError(f"{path} holds classes {saved['start']}..{saved['stop']}, {checkpoint} "
                                         f"says {item['start']}..{item['stop']}")
        for key in keys:
            rows = saved["tensors"][key][lo - item["start"] : hi - item["start"]]
            with torch.no_grad():
                targets[key][lo - start : hi - start].copy_(rows)
        filled[lo - start : hi - start] = True
    if not bool(filled.all()):
        raise ShardedCheckpointError(f"{checkpoint}: the class shards do not cover classes {start}..{stop}")
