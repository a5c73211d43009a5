"""``faceverify demo``: a small real end-to-end run, from LFW photos to a held-out accuracy.

1. Locate LFW (``--lfw``, ``$FACEVERIFY_DATA/lfw``, a previous download) or download it.
2. Align, with MTCNN, only the images it needs: every image of the View 2 pairs (the threshold
   is chosen on the nine other folds) and of the people with at least two images (training
   people of the other nine people.txt sets; the held-out set's for the geometry).
3. Train softmax + center loss (Wen et al.) on batches drawn at random, with the ``cpu`` ablation
   profile's network and schedule, or the ``gpu`` one when CUDA is available.
4. Evaluate on the held-out fold's 600 pairs; print and save the result, with one line saying
   what the figure means next to the paper's.
5. Save the model (``model.pt`` + its threshold, calibrated on the other nine folds) and print
   ``faceverify verify`` commands on two held-out photos of one person and of two people.

Everything is resumable: a second run reuses the alignment, the pack and the trained model.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data_prep.datasets import download_lfw
from faceverify.data.locate import DatasetError, locate_lfw
from data_prep.prepare import AlignConfig, align_tree
from faceverify.ablation.protocol import needed_keys
from faceverify.ablation.runner import run_ablation
from faceverify.ablation.spec import AblationSpec, validate
from faceverify.data.lfw import read_pairs, resolve_image_paths
from faceverify.io import atomic_write, write_json
from faceverify.use.model import Calibration, write_calibration
from faceverify.results import read_rows, record_rows
from faceverify.locks import lock_output

# MTCNN's smallest face for the demo's alignment: LFW faces are about 100 px in 250x250 photos, and
# a larger minimum means fewer pyramid levels. Chosen from results/demo/alignment_min_face.csv
# (experiments/demo_tradeoffs.py --align): the largest size measured whose detection rate on all
# 7,701 pair images stays >= 99.8% (120 px: 99.96%, 80 images/s against 25 at 20 px). It is a size
# for LFW's 250x250 photos; photos of another size get it scaled to their shorter side.
DEMO_MIN_FACE_SIZE = 120
LFW_PHOTO_SIDE = 250
# How the demo's batches are drawn: at random from the training images ("shuffle"), as Wen et al.
# train softmax + center loss, not the cpu profile's PK batches (32 people x 4 images, which every
# arm of an ablation shares so that the pair losses find positives). PK batches weigh a person with
# two photos as much as one with five hundred. Measured in results/demo/training_curve.csv
# (experiments/demo_tradeoffs.py --curve, fold 1): at 1,200 iterations random batches reached
# 89.33-90.00% over three seeds, PK batches 85.83% (seed 0).
DEMO_SAMPLER = "shuffle"
# Training length of the demo (cpu profile), from the same curve with random batches: 1,000
# iterations reached 89.61% on fold 1 (mean of three seeds, 4.4 min of training on a 2-core machine)
# against 89.72% for 1,200 (5.5 min); the shorter one keeps the demo well inside 10 minutes.
DEMO_ITERATIONS = 1000


def demo_align_config(sample: Path | None = None) -> AlignConfig:
    """The demo's alignment settings; ``sample`` (one of the photos) scales the minimum face size
    when the photos are not LFW's 250x250 (never below MTCNN's usual 20 px)."""
    min_face = DEMO_MIN_FACE_SIZE
    if sample is not None:
        with Image.open(sample) as image:
            shorter = min(image.size)
        if shorter != LFW_PHOTO_SIDE:
            min_face = max(20, round(DEMO_MIN_FACE_SIZE * shorter / LFW_PHOTO_SIDE))
    return AlignConfig(purpose="eval", min_face_size=min_face)


def demo_spec(aligned: Path, protocol: Path, out: Path, fold: int = 1, profile: str = "cpu",
              max_iters: int = 0) -> AblationSpec:
    """The demo's one cell: softmax + center loss (Wen et al., lambda 0.003) on batches drawn at random
    (``DEMO_SAMPLER``), held-out ``fold``."""
    return AblationSpec(
        name="demo", profile=profile, folds=[fold], seeds=[0], lfw_aligned=str(aligned),
        lfw_protocol=str(protocol), work=str(out / "work"), results=str(out),
        arms={"softmax+center": {"loss": {"terms": {"softmax": 1.0, "center": 0.003}},
                                 "data": {"sampler": DEMO_SAMPLER}}},
        max_iters=max_iters or (DEMO_ITERATIONS if profile == "cpu" else 0),
        base={"progress": True},  # a progress bar while it trains
    )


def demo_images(images: Path, protocol: Path, fold: int) -> set[str]:
    """The photos the demo's cell uses (:func:`~faceverify.ablation.protocol.needed_keys`): every
    View 2 pair image, the held-out people's, and the training people's."""
    keys = needed_keys(protocol, fold)
    paths = resolve_image_paths(images, keys)
    return {str(paths[k].relative_to(images)) for k in keys}


def save_model(row: dict[str, str], out: Path, flip: str) -> Path:
    """The trained cell as ``out/model.pt`` with its calibrated threshold beside it."""
    checkpoint = Path(row["run_dir"]) / "checkpoints" / "last.pt"
    model_path = out / "model.pt"
    with atomic_write(model_path, "wb") as handle, open(checkpoint, "rb") as source:
        shutil.copyfileobj(source, handle)
    write_calibration(model_path, Calibration(
        threshold=float(row["threshold"]), metric="cosine", flip=flip, accuracy=float(row["accuracy"]),
        source=f"LFW View 2: threshold chosen on the nine folds other than fold {row['fold']} (whose people were "
               f"trained on), accuracy on fold {row['fold']}'s held-out people"))
    return model_path


def example_pairs(location, fold: int, cell_file: Path, threshold: float, model: Path,
                  margin: float = 0.1) -> list[str]:
    """``faceverify verify`` commands on a matched and a mismatched held-out pair the model decides
    correctly (so the command shows a clear decision; it decides 1 in 8 or so wrongly): the first
    pair beyond the threshold by ``margin``, else the most confidently correct one."""
    pairs = read_pairs(location.protocol / "pairs.txt")
    test = np.flatnonzero(pairs.fold == fold - 1)
    with np.load(cell_file) as data:
        scores, same = data["scores"], data["same"]
    commands = []
    for wanted, label in ((True, "same person: exit status 0"), (False, "different people: exit status 1")):
        beyond = (scores - threshold) if wanted else (threshold - scores)  # > 0: decided correctly
        candidates = np.flatnonzero((same == wanted) & (beyond > 0))
        if candidates.size == 0:
            continue  # the model decides none of these correctly; no command to show
        clear = candidates[beyond[candidates] > margin]
        chosen = clear[0] if clear.size else candidates[np.argmax(beyond[candidates])]
        index = test[chosen]
        paths = resolve_image_paths(location.images, [pairs.keys_a[index], pairs.keys_b[index]])
        a, b = (paths[k] for k in (pairs.keys_a[index], pairs.keys_b[index]))
        commands.append(f"faceverify verify {a} {b} --model {model}   # {label}")
    return commands


def context_line(row: dict[str, str], profile: str) -> str:
    width = "a quarter-width sphere20 on 56x48 crops" if profile == "cpu" else "Face-ResNet on 112x96 crops"
    return (f"In context: trained on LFW alone ({row['train_images']} images, {row['iterations']} iterations, {width}); "
            "Wen et al.'s 99.28% comes from 0.49M CASIA-WebFace images and the full network for 28K iterations at "
            "batch 256 — this run checks the whole pipeline, it does not reproduce the paper (faceverify reproduce does).")


def run_demo(lfw: str | None, out: Path, fold: int = 1, profile: str | None = None, download_to: Path | None = None,
             record: Path | None = None, max_iters: int = 0) -> dict:
    """The quick-start job into ``out`` (one demo per ``out``: a second is refused while the first runs)."""
    with lock_output(out, "demo"):
        return _run_demo(lfw, Path(out), fold, profile, download_to, record, max_iters)


def _run_demo(lfw: str | None, out: Path, fold: int, profile: str | None, download_to: Path | None,
              record: Path | None, max_iters: int) -> dict:
    started = time.perf_counter()
    try:
        location = locate_lfw(lfw)
    except DatasetError:
        if download_to is None:
            raise
        print(f"LFW not found locally; downloading it into {download_to} (needs internet)")
        location = download_lfw(download_to)
    profile = profile or ("gpu" if torch.cuda.is_available() else "cpu")
    print(f"LFW: {location.images}; held-out fold {fold}; profile {profile}")
    aligned = out / "aligned"
    spec = demo_spec(aligned, location.protocol, out, fold, profile, max_iters)
    validate(spec)  # a bad fold or setting fails now, before minutes of alignment
    needed = demo_images(location.images, location.protocol, fold)
    t0 = time.perf_counter()
    config = demo_align_config(location.images / min(needed))
    summary = align_tree(location.images, aligned, config, only=needed)
    align_seconds = time.perf_counter() - t0
    print(f"aligned {summary['sources']} images ({summary['counts']}; MTCNN minimum face {config.min_face_size} px)")
    csv_path = run_ablation(spec)
    row = read_rows(csv_path)[-1]
    model_path = save_model(row, out, spec.eval_flip)
    examples = example_pairs(location, fold, Path(row["cell_file"]),
                             float(row["threshold"]), model_path)
    result = {
        "held_out_fold": fold, "accuracy": float(row["accuracy"]), "auc": float(row["auc"]),
        "tar_at_far_1e-3": float(row["tar_at_far_1e-3"]), "compactness_over_separation": float(row["ratio"]),
        "train_images": int(row["train_images"]), "iterations": int(row["iterations"]), "profile": profile,
        "align_seconds": align_seconds, "train_seconds": float(row["train_seconds"]),
        "eval_seconds": float(row["eval_seconds"]),
        "total_seconds": time.perf_counter() - started, "commit": row["commit"], "device": row["device"],
        "model": str(model_path), "threshold": float(row["threshold"]),
        "context": context_line(row, profile),
    }
    write_json(out / "result.json", result)
    with np.load(row["cell_file"]) as cell:
        n_pairs = int(cell["scores"].size)
    print(f"\nsoftmax + center loss, trained on LFW people outside fold {fold}: held-out accuracy "
          f"{100 * result['accuracy']:.2f}% (AUC {result['auc']:.4f}) on fold {fold}'s {n_pairs} pairs; "
          f"{result['total_seconds'] / 60:.1f} min in all")
    print(result["context"])
    print(f"saved {out / 'result.json'}, {out / 'demo.md'} and the model {model_path} "
          f"(threshold {result['threshold']:.4f}, calibrated on the other nine folds)")
    print("\nTry it on two photos of a held-out person (never trained on), and on two different people:")
    for command in examples:
        print(f"  {command}")
    if record is not None:
        record_rows(record / "demo.csv", [result], record / "demo.md", "The quick-start demo",
                    note="Rows appended by `faceverify demo --record results/demo` (see "
                         "experiments/time_demo.sh, which runs the README's first command on a fresh clone).")
    return result
