"""A model's decision threshold and where it came from (:class:`Calibration`), kept beside a
checkpoint in ``<checkpoint>.calibration.json`` and naming that checkpoint by its SHA-256, so that
a checkpoint trained on after it was calibrated no longer uses the old threshold.

The threshold of an LFW-protocol evaluation is the mean of the ten fold thresholds, each chosen
on the other nine folds (:func:`calibration_from_metrics`).
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from faceverify.io import read_json, write_json


@dataclass(frozen=True)
class Calibration:
    """A decision threshold and where it came from.

    ``metric``: ``cosine`` (score = cosine similarity) or ``euclidean`` (score = minus the
    distance); a pair is "same" when ``score > threshold``. ``flip``: how the features were
    combined when the threshold was chosen (the model uses the same).
    """

    threshold: float
    metric: str = "cosine"
    flip: str = "concat"
    accuracy: float | None = None
    source: str = ""
    checkpoint_sha256: str = ""  # the checkpoint file the threshold was chosen for

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        keys = ("threshold", "metric", "flip", "accuracy", "source", "checkpoint_sha256")
        return cls(**{k: data[k] for k in keys if k in data})


def calibration_path(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".calibration.json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_calibration(checkpoint: str | Path, calibration: Calibration) -> Path:
    """``<checkpoint>.calibration.json``, naming the checkpoint by its SHA-256: a checkpoint trained
    on after its calibration no longer matches, and its old threshold is not used."""
    named = replace(calibration, checkpoint_sha256=file_sha256(checkpoint))
    return write_json(calibration_path(checkpoint), named.to_dict())


def read_calibration(checkpoint: Path) -> tuple[Calibration | None, str]:
    """``(calibration, "")`` from beside ``checkpoint``, or ``(None, why not)`` when it was made for
    another state of the file (``""`` when there is none)."""
    path = calibration_path(checkpoint)
    if not path.is_file():
        return None, ""
    calibration = Calibration.from_dict(read_json(path, "calibration"))
    if not calibration.checkpoint_sha256:
        print(f"faceverify: warning: {path} does not name its checkpoint (written before calibrations did); "
              "its threshold is used unchecked. Re-run faceverify eval --checkpoint to calibrate anew",
              file=sys.stderr)
        return calibration, ""
    actual = file_sha256(checkpoint)
    if actual != calibration.checkpoint_sha256:
        return None, (f"the calibration {path} was made for another state of {checkpoint} (SHA-256 "
                      f"{calibration.checkpoint_sha256[:12]}..., the file is now {actual[:12]}...: trained on or "
                      "replaced since), so its threshold does not apply; re-run faceverify eval --checkpoint to "
                      "calibrate it, or give --threshold T")
    return calibration, ""


def calibration_from_metrics(metrics: dict, flip: str, where: str) -> Calibration:
    """The threshold of an LFW-protocol evaluation (cosine, no PCA): the mean of the fold thresholds."""
    thresholds = metrics["fold_thresholds"]
    return Calibration(
        threshold=float(np.mean(thresholds)), metric=metrics.get("metric", "cosine"), flip=flip,
        accuracy=float(metrics["accuracy"]),
        source=f"mean of the {len(thresholds)} fold thresholds of the k-fold protocol on {where} "
               "(each chosen on the other folds)",
    )
