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
from faceverify.io import check_not_an_input


def export_recordio(aligned: str | Path, out: str | Path, layout: Layout = "legacy",
                    encoding: Literal["jpg", "png"] = "jpg", min_images: int = 1, progress: bool = True) -> dict:
    aligned = Path(aligned)
    if not aligned.is_dir():
        raise FileNotFoundError(f"aligned folder {aligned} does not exist")
    check_separate_folders(aligned, Path(out))
    selected, record = select_images(aligned, PackConfig(min_images=min_images))
    if not selected:
        raise ValueError(f"nothing to export from {aligned}: {record['left_out_images']}")
    paths = [p for name in selected for p in selected[name]]
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
