"""``faceverify export rec|bin``: faceverify-aligned data in the forms other tools read.

* :func:`export_recordio`: an aligned tree (its manifest decides which crops count, as for
  ``pack``) -> ``train.rec`` / ``train.idx`` / ``property`` in insightface's legacy layout (header
  record, identity ranges) or the builder layout; identities in sorted order get labels 0..C-1.
* :func:`export_bin`: an aligned LFW tree and a pairs file -> a ``.bin`` verification set, the two
  images of every pair in file order (so its 10 consecutive folds are the pairs file's folds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from data_prep.pack import PackConfig, check_separate_folders, select_images
from faceverify.data.binsets import write_bin
from faceverify.data.images import read_rgb
from faceverify.data.lfw import read_pairs, resolve_image_paths
from faceverify.data.recordio import Layout, iter_images, write_recordio
from faceverify.errors import InvalidInputError, MissingInputError, OutputExistsError
from faceverify.io import check_not_an_input


# the crop shapes of the two 5-point templates (height / width), and how far a crop may be scaled
TEMPLATE_ASPECTS = (112 / 112, 112 / 96)
MAX_TEMPLATE_SCALE = 2.2


def check_looks_aligned(aligned: Path, first: Path) -> None:
    """A tree without faceverify's ``manifest.csv`` is exported only if its first image has a
    template crop's shape (1:1 or 7:6 within 10%, at most 2.2 times 112 px on a side): 250x250 LFW
    photos would otherwise become a training pack of unaligned faces."""
    height, width = read_rgb(first).shape[:2]
    aspect_ok = any(abs(height / width - a) <= 0.1 * a for a in TEMPLATE_ASPECTS)
    if not aspect_ok or (height > MAX_TEMPLATE_SCALE * 112 and width > MAX_TEMPLATE_SCALE * 96):
        raise InvalidInputError(f"{aligned} looks unaligned: its images are {width}x{height} (WxH, e.g. {first}), not "
                         "112x112 or 112x96 template crops, and there is no manifest.csv from faceverify align. "
                         f"Align it first: faceverify align {aligned} ALIGNED_DIR --template 112x112")


def export_recordio(aligned: str | Path, out: str | Path, layout: Layout = "legacy",
                    encoding: Literal["jpg", "png"] = "jpg", min_images: int = 1, progress: bool = True,
                    force: bool = False) -> dict:
    """An aligned tree -> ``out/train.rec``, ``train.idx``, ``property``. An existing pack in
    ``out`` is replaced only with ``force``."""
    aligned, out = Path(aligned), Path(out)
    if not aligned.is_dir():
        raise MissingInputError(f"aligned folder {aligned} does not exist")
    check_separate_folders(aligned, out)
    existing = [n for n in ("train.rec", "train.idx", "property") if (out / n).exists()]
    if existing and not force:
        raise OutputExistsError(f"{out} already holds a RecordIO pack ({', '.join(existing)}); choose another OUT, or "
                              "give --force to replace it")
    selected, record = select_images(aligned, PackConfig(min_images=min_images))
    if not selected:
        raise InvalidInputError(f"nothing to export from {aligned}: {record['left_out_images']}")
    paths = [p for name in selected for p in selected[name]]
    if not (aligned / "manifest.csv").is_file():
        check_looks_aligned(aligned, paths[0])
    labels = [i for i, name in enumerate(selected) for _ in selected[name]]
    write_recordio(out, iter_images(paths), labels, layout=layout, encoding=encoding, progress=progress)
    return {"images": len(paths), "identities": len(selected), "layout": layout, "encoding": encoding,
            "identity_order": list(selected), **record}


def export_bin(aligned_lfw: str | Path, pairs_path: str | Path, out: str | Path,
               encoding: Literal["jpg", "png"] = "jpg", progress: bool = True) -> dict:
    pairs = read_pairs(pairs_path)
    paths = resolve_image_paths(aligned_lfw, pairs.keys)
    check_not_an_input(out, [pairs_path, *paths.values()])
    cache: dict[str, object] = {}

    def image(key: str):
        if key not in cache:
            cache[key] = read_rgb(paths[key])
        return cache[key]

    images = []
    for a, b in zip(pairs.keys_a, pairs.keys_b):
        images += [image(a), image(b)]
    write_bin(out, images, pairs.same.tolist(), encoding=encoding)
    return {"pairs": len(pairs), "images": len(images), "folds": pairs.n_folds, "encoding": encoding}
