"""``faceverify pack``: choose the aligned crops to train on and write the packed format.

Selection, in order: the rows of ``ALIGNED_DIR/manifest.csv`` with status ``ok`` (and
``fallback`` unless ``only_detected``) — or every image of the tree when there is no manifest —
minus excluded identities (e.g. CASIA-WebFace people who are also in LFW), minus identities
left with fewer than ``min_images`` images. Everything left out is counted in ``meta.json``.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from data_prep.options import PACK_FLAGS, PackConfig, parse_size  # noqa: F401 - the options live there
from data_prep.manifest import read_manifest
from faceverify.data.lfw import IMAGE_EXTENSIONS
from faceverify.data.packed import write_packed
from faceverify.errors import InvalidInputError, MissingInputError
from faceverify.io import folder_overlap


def read_identity_list(path: str | Path) -> set[str]:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"identity list {path} does not exist")
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.add(line.split()[0])
    return names


def select_images(aligned: Path, config: PackConfig, identities: set[str] | None = None) -> tuple[dict[str, list[Path]], dict]:
    """``{identity: [aligned image paths]}`` to pack and a record of what was left out.

    ``identities``, if given, restricts the selection to those people (e.g. a set of LFW folds).
    """
    left_out: Counter = Counter()
    by_identity: dict[str, list[Path]] = defaultdict(list)
    manifest = aligned / "manifest.csv"
    if manifest.is_file():
        for row in read_manifest(manifest):
            status = row["status"]
            if status == "ok" or (status == "fallback" and not config.only_detected):
                by_identity[row["identity"]].append(aligned / row["dst"])
            else:
                left_out[f"status_{status}"] += 1
    else:
        for identity in sorted(os.listdir(aligned)):
            folder = aligned / identity
            if folder.is_dir():
                for name in sorted(os.listdir(folder)):
                    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                        by_identity[identity].append(folder / name)
    if identities is not None:
        for name in list(by_identity):
            if name not in identities:
                left_out["images_outside_requested_identities"] += len(by_identity.pop(name))
    excluded = read_identity_list(config.exclude_identities) if config.exclude_identities else set()
    excluded_found = sorted(set(by_identity) & excluded)
    for name in excluded_found:
        left_out["images_of_excluded_identities"] += len(by_identity.pop(name))
    few = sorted(name for name, paths in by_identity.items() if len(paths) < config.min_images)
    for name in few:
        left_out["images_of_identities_below_min_images"] += len(by_identity.pop(name))
    record = {
        "left_out_images": dict(left_out),
        "excluded_identities": len(excluded_found),
        "identities_below_min_images": len(few),
    }
    return dict(sorted(by_identity.items())), record


def check_separate_folders(aligned: Path, out: Path) -> None:
    """Refuse an OUT folder that is the aligned tree, lies inside it or contains it (``pack`` and
    ``export rec``): the files would be written among the crops, and a later read of the tree
    would meet them."""
    if folder_overlap(aligned, out):
        raise InvalidInputError(f"OUT {out} and the aligned folder {aligned} must be separate (neither inside the "
                         "other): the output would be written among the crops")


def pack_aligned(
    aligned: str | Path,
    out: str | Path,
    config: PackConfig | None = None,
    identities: set[str] | None = None,
    progress: bool = True,
) -> dict:
    """Pack ``aligned`` into ``out``; returns the meta record."""
    config = config or PackConfig()
    aligned, out = Path(aligned), Path(out)
    if not aligned.is_dir():
        raise MissingInputError(f"aligned folder {aligned} does not exist")
    check_separate_folders(aligned, out)
    selected, record = select_images(aligned, config, identities)
    if not selected:
        raise InvalidInputError(
            f"nothing to pack from {aligned}: every image was left out ({record['left_out_images']})"
        )
    names = list(selected)
    paths = [p for name in names for p in selected[name]]
    labels = [i for i, name in enumerate(names) for _ in selected[name]]
    meta = {
        "source": str(aligned),
        "min_images": config.min_images,
        "exclude_identities_file": config.exclude_identities,
        "only_detected": config.only_detected,
        **record,
    }
    write_packed(out, paths, labels, names, parse_size(config.size), meta, config.workers,
                 progress, relative_to=aligned)
    return meta | {"n_images": len(paths), "n_identities": len(names)}


def pack_recordio(rec_dir: str | Path, out: str | Path, config: PackConfig | None = None,
                  progress: bool = True, cache_dir: str | Path | None = None) -> dict:
    """``faceverify pack --from-rec``: a RecordIO folder -> the packed format, images in record
    order, ``labels.npy`` equal to the records' labels (made contiguous ``0..C-1``; ``meta.json``
    keeps each class's original label value). ``--size`` resizes; ``--min-images`` and
    ``--exclude-identities`` (by original label value) filter as for trees."""
    from faceverify.data.packed import SkipImage, write_packed_from
    from faceverify.data.recordio import RecordIOError, RecordIOFolder

    config = config or PackConfig()
    if folder_overlap(rec_dir, out) in ("same", "inside"):
        raise InvalidInputError(f"OUT {out} lies in the RecordIO folder {rec_dir}: the pack would be written among the data; "
                         "choose an OUT outside it")
    folder = RecordIOFolder(rec_dir, progress=progress, cache_dir=cache_dir)
    values = folder.label_values
    keep = np.ones(len(folder), dtype=bool)
    excluded = read_identity_list(config.exclude_identities) if config.exclude_identities else set()
    if excluded:
        names = np.array([f"{v:g}" for v in values])
        keep &= ~np.isin(names[folder.labels], sorted(excluded))
    counts = np.bincount(folder.labels[keep], minlength=folder.num_classes)
    keep &= counts[folder.labels] >= config.min_images
    indices = np.flatnonzero(keep)
    classes, labels = np.unique(folder.labels[indices], return_inverse=True)
    identities = [f"{values[c]:g}" for c in classes]
    meta = {
        "source": str(rec_dir), "source_kind": "recordio", "recordio_layout": folder.layout,
        "min_images": config.min_images, "exclude_identities_file": config.exclude_identities,
        "left_out_images": {"excluded_or_below_min_images": int(len(folder) - indices.size)},
    }
    names = [f"record {int(folder.image_keys[i])}" for i in indices]

    def load(j: int) -> np.ndarray:
        # an unreadable record (or one of another size, without --size) is left out and listed
        i = int(indices[j])
        try:
            return folder.image(i) if config.size else folder.checked_image(i)
        except RecordIOError as err:
            raise SkipImage(folder.skip_note(i, str(err))) from None

    write_packed_from(out, int(indices.size), load, labels.tolist(), identities, names, parse_size(config.size),
                      meta, config.workers, progress)
    written = json.loads((Path(out) / "meta.json").read_text(encoding="utf-8"))
    return written | {"n_images": int(written["n_images"]), "n_identities": int(written["n_identities"])}
