"""Sharded alignment: N processes (or N machines on a shared filesystem) align disjoint parts of
one SRC into one DST at the same time, and a plain run merges what they did.

* **Which photos a shard aligns.** Photo ``rel`` (its path relative to SRC) belongs to shard
  ``shard_of(rel, N) + 1`` with ``shard_of(rel, N) = int(sha256(rel)[:8]) mod N``: a hash of the
  path alone, so the same photo lands in the same shard whatever else the folder holds.
* **What a shard writes.** Its crops (into ``DST/<identity>/``, disjoint from every other shard's),
  and, in its own folder ``DST/.shards/K-of-N/``, its journal, its settings, its part of the
  manifest and its summary. It never writes another shard's files nor DST's own ``manifest.csv``,
  ``summary.json``, journal or settings.
* **Locks.** A shard holds its folder's exclusive lock (the same shard twice is refused) and a
  *shared* lock on DST: shards run side by side, while a plain ``align`` into DST, which takes the
  exclusive lock, waits for none of them: it is refused while any shard runs, and a shard is
  refused while a plain run holds DST.
* **Settings.** A shard whose crop settings differ from DST's previous plain run or from another
  shard part is refused, naming the part and each ``key: old -> new``; so is a shard of another
  split (``--shard 1/3`` beside parts of a 2-way split).
* **Merge.** A plain ``align SRC DST`` first folds every part's journal into DST's journal (after
  the same settings check), removes the parts, and then runs as always: whatever no shard aligned
  (a killed shard's rest) is aligned, the centre fallback (which needs every detected face of the
  run) is applied, and ``manifest.csv`` and ``summary.json`` are written. The rows and crops equal
  an unsharded run's.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from data_prep.inputs import RUN_FILE
from data_prep.manifest import AlignmentError
from faceverify.config import changed_keys
from faceverify.io import read_json

SHARDS_DIR = ".shards"
_PART = re.compile(r"^(\d+)-of-(\d+)$")


def shard_of(rel: str, count: int) -> int:
    """0-based shard of the photo at ``rel`` (relative to SRC, forward slashes) among ``count``."""
    digest = hashlib.sha256(rel.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise AlignmentError(f"shard {self.index}/{self.count}: K must be between 1 and N")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def name(self) -> str:
        return f"{self.index}-of-{self.count}"

    def folder(self, dst: Path) -> Path:
        return dst / SHARDS_DIR / self.name

    def holds(self, rel: str) -> bool:
        return shard_of(rel, self.count) == self.index - 1


def parse_shard(text: str) -> Shard:
    """``"K/N"`` (1 <= K <= N) -> :class:`Shard`."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or int(match.group(2)) < 1:
        raise AlignmentError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 1/4")
    return Shard(int(match.group(1)), int(match.group(2)))


def shard_from_environment() -> Shard | None:
    """Under torchrun (``RANK`` and ``WORLD_SIZE`` set, world > 1): the shard of this rank."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    world = int(os.environ["WORLD_SIZE"])
    return Shard(int(os.environ["RANK"]) + 1, world) if world > 1 else None


def shard_parts(dst: Path) -> list[tuple[Shard, Path]]:
    """The shard folders in ``dst`` (sorted by shard)."""
    root = dst / SHARDS_DIR
    if not root.is_dir():
        return []
    parts = []
    for entry in sorted(root.iterdir()):
        match = _PART.match(entry.name)
        if match and entry.is_dir():
            parts.append((Shard(int(match.group(1)), int(match.group(2))), entry))
    return sorted(parts, key=lambda p: (p[0].count, p[0].index))


def check_parts(dst: Path, settings: dict, me: Shard | None = None) -> None:
    """Refuse when a shard part in ``dst`` was aligned with other crop settings than ``settings``
    (naming the part and each key), or, for shard ``me``, when the parts belong to another split."""
    for shard, folder in shard_parts(dst):
        if me is not None and shard.count != me.count:
            raise AlignmentError(
                f"{dst} holds parts of a {shard.count}-way split ({folder.name}); shard {me} would align other "
                f"photos into the same crops. Use --shard K/{shard.count}, or run a plain `faceverify align` "
                "first to merge the parts")
        recorded = read_json(folder / RUN_FILE, "shard settings").get("settings") if (folder / RUN_FILE).is_file() else None
        if recorded is None:
            continue
        changed = changed_keys(recorded, settings)
        if changed:
            raise AlignmentError(
                f"shard {shard} in {folder} aligned with other settings than this run: {'; '.join(changed)}. "
                "Run every shard with the same settings, or start over with a plain run and --restart")


def remove_parts(dst: Path) -> None:
    """Delete the shard folders (after their rows were merged into DST's journal)."""
    for _, folder in shard_parts(dst):
        shutil.rmtree(folder)
    root = dst / SHARDS_DIR
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
