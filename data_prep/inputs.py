"""What an alignment run reads before it aligns anything: the source images (``SRC/<identity>/
<image>``, with what is left out and why), the check that DST and SRC are separate, the settings
of the previous run into DST (a re-run with other crop settings is refused), and a landmarks file.
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.manifest import AlignmentError
from data_prep.options import AlignConfig
from faceverify.config import changed_keys, to_dict
from faceverify.data.lfw import IMAGE_EXTENSIONS
from faceverify.io import folder_overlap, read_json

RUN_FILE = ".align_run.json"
# AlignConfig keys whose values change the crops; the others (device, batch_size, threads, workers, limit)
# change only speed or how much is done, and may differ between runs into the same DST.
RESULT_SETTINGS = ("template", "scale", "on_fail", "landmarks_for", "policy", "ext", "thresholds",
                   "min_face_size", "max_side")


@dataclass
class Source:
    rel: str  # path relative to SRC, forward slashes
    identity: str
    dst_rel: str
    unusable: str = ""  # why this file cannot be aligned at all (e.g. a line break in its name)

    def fingerprint(self, src: Path) -> tuple[str, str]:
        """(size in bytes, modification time in ns) of the source file: cheap, and changes when
        the file is replaced."""
        try:
            info = os.stat(src / self.rel)
        except OSError:
            return "", ""
        return str(info.st_size), str(info.st_mtime_ns)


def list_sources(src: Path, ext: str) -> tuple[list[Source], dict]:
    """Every image file under ``src/<identity>/`` (sorted) and what was left out, with why."""
    if not src.is_dir():
        raise AlignmentError(f"source folder {src} does not exist")
    sources: list[Source] = []
    ignored: list[str] = []
    unusable: list[str] = []
    empty_identities: list[str] = []
    taken: set[str] = set()
    for identity in sorted(os.listdir(src)):
        folder = src / identity
        if identity.startswith("."):
            continue
        if _dangling(folder):
            unusable.append(f"{identity}: {_dangling(folder)}")
            continue
        if not folder.is_dir():
            ignored.append(identity)
            continue
        files = []
        for f in sorted(os.listdir(folder)):
            if f.startswith("."):
                continue
            if _dangling(folder / f):
                unusable.append(f"{identity}/{f}: {_dangling(folder / f)}")
            elif (folder / f).is_file():
                files.append(f)
        images = [f for f in files if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
        ignored += [f"{identity}/{f}" for f in files if f not in images]
        if not images:
            empty_identities.append(identity)
        for name in images:
            stem, original_ext = os.path.splitext(name)
            dst_rel = f"{identity}/{stem}.{ext}"
            if dst_rel in taken:  # a.jpg and a.png in one folder: keep both, distinctly named
                dst_rel = f"{identity}/{stem}_{original_ext.lstrip('.').lower()}.{ext}"
            taken.add(dst_rel)
            rel = f"{identity}/{name}"
            # crops are listed one per line in packs' paths.txt: a line break cannot be kept
            bad_name = "file name contains a line break; rename it" if "\n" in rel or "\r" in rel else ""
            sources.append(Source(rel, identity, dst_rel, bad_name))
    if not sources:
        raise AlignmentError(
            f"no images found under {src}; expected {src}/<identity>/<image> with one of "
            f"{', '.join(IMAGE_EXTENSIONS)}"
        )
    return sources, {"ignored_files": ignored, "empty_identity_folders": empty_identities,
                     "unusable_entries": unusable}


def _dangling(path: Path) -> str:
    """Why a symbolic link leads nowhere (a loop, a missing target), or ``""``."""
    if not os.path.islink(path):
        return ""
    try:
        os.stat(path)
    except OSError as err:
        return "symbolic link loop" if err.errno == errno.ELOOP else f"broken symbolic link ({err.strerror})"
    return ""


def check_separate(src: Path, dst: Path) -> None:
    """Refuse a DST that is SRC, lies inside SRC, or contains it (before anything is written)."""
    overlap = folder_overlap(src, dst)
    if overlap == "same":
        raise AlignmentError(f"DST {dst} is the source folder itself: the crops would overwrite the photos; "
                             "choose another DST")
    if overlap == "inside":
        raise AlignmentError(f"DST {dst} lies inside the source folder {src}: the crops would mix with the "
                             "photos; choose a DST outside it")
    if overlap == "contains":
        raise AlignmentError(f"the source folder {src} lies inside DST {dst}: the crops would be written "
                             "among the photos; choose a DST outside it")


def result_settings(config: AlignConfig) -> dict:
    """The recorded settings that decide the crops (see ``RESULT_SETTINGS``)."""
    values = to_dict(config)
    settings = {key: values[key] for key in RESULT_SETTINGS if key in values}
    settings["on_fail"] = config.resolved_on_fail()
    if config.landmarks_file:
        settings["landmarks_sha256"] = hashlib.sha256(Path(config.landmarks_file).read_bytes()).hexdigest()
    else:
        settings["landmarks_sha256"] = ""
    return settings


def check_settings(dst: Path, settings: dict) -> None:
    """Refuse to continue a run in ``dst`` that was made with other crop-deciding settings."""
    run_file = dst / RUN_FILE
    recorded: dict | None = None
    if run_file.is_file():
        recorded = read_json(run_file, "alignment settings").get("settings")
    elif (dst / "summary.json").is_file():  # a DST written before settings were recorded
        old = read_json(dst / "summary.json", "alignment summary").get("config", {})
        recorded = {key: old[key] for key in settings if key in old}
        recorded["on_fail"] = old.get("on_fail") if old.get("on_fail") not in (None, "default") else \
            ("skip" if old.get("purpose") == "train" else "center")
    if recorded is None:
        return
    problems = changed_keys(recorded, {k: v for k, v in settings.items() if k in recorded})
    if problems:
        raise AlignmentError(
            f"{dst} holds crops made with other settings, so this run cannot continue it:\n  "
            + "\n  ".join(problems) + "\nRe-run with the old settings, choose another DST, or add --restart "
            f"(Python: restart=True) to move {dst} aside to {dst}.old-<time> and start over."
        )


def read_landmarks_file(path: str | Path) -> dict[str, np.ndarray]:
    """``relpath x1 y1 ... x5 y5`` per line -> ``{relpath: [5, 2]}``; errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise AlignmentError(f"landmarks file {path} does not exist")
    out: dict[str, np.ndarray] = {}
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split()
            if len(fields) != 11:
                raise AlignmentError(
                    f"{path} line {lineno}: expected 'relpath x1 y1 ... x5 y5' (11 fields), got {len(fields)}"
                )
            try:
                values = np.array([float(v) for v in fields[1:]], dtype=np.float64)
            except ValueError:
                raise AlignmentError(f"{path} line {lineno}: landmark coordinates must be numbers") from None
            if not np.all(np.isfinite(values)):
                raise AlignmentError(f"{path} line {lineno}: landmark coordinates must be finite")
            out[fields[0].replace("\\", "/")] = values.reshape(5, 2)
    return out
