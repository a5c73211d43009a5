"""``faceverify export CKPT OUT --format torchscript|onnx``: the network and its metadata in one file.

The metadata (``faceverify.use.model.MODEL_FORMAT``: input size, template, normalisation, embedding
size, flip policy, calibration, source checkpoint, commit) travels inside the file — a TorchScript
extra file ``faceverify.json``, or the ONNX model's ``metadata_props["faceverify"]`` — so
``faceverify verify --model OUT`` and ``faceverify.load_model(OUT)`` use an export exactly as the
checkpoint. After writing, the export is loaded back and its L2-normalised embeddings of real
face crops (and random inputs) are compared with the checkpoint's; the largest absolute
difference is printed and stored, and an export differing by more than ``tolerance`` is removed
and refused.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from faceverify.errors import InvalidInputError
from faceverify.io import atomic_write, check_not_an_input
from faceverify.use.model import FaceModel, ModelError, calibration_path, export_metadata, load_model

Format = Literal["torchscript", "onnx"]


def _normalised(features: np.ndarray) -> np.ndarray:
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def export_model(checkpoint: str | Path, out: str | Path, fmt: Format = "torchscript",
                 check_crops: np.ndarray | None = None, tolerance: float = 1e-4) -> dict:
    """Write the export and return ``{"out", "format", "max_abs_diff", ...}``; see the module docstring."""
    checkpoint, out = Path(checkpoint), Path(out)
    check_not_an_input(out, [checkpoint, calibration_path(checkpoint)])
    if out.is_dir():
        suffix = ".onnx" if fmt == "onnx" else ".ts"
        raise InvalidInputError(f"OUT {out} is a folder; give the export's file name, e.g. {out / ('model' + suffix)}")
    model = load_model(checkpoint, device="cpu")
    if model.calibration_problem:
        print(f"faceverify export: warning: no threshold exported: {model.calibration_problem}", file=sys.stderr)
    if model.kind != "checkpoint":
        raise ModelError(f"{checkpoint} is a {model.kind} model; export takes a checkpoint of faceverify train")
    network = model._embed_batch
    height, width = model.input_size
    example = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    metadata = export_metadata(model, checkpoint, {"export_format": fmt})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript and the ONNX exporter announce their deprecations
        if fmt == "torchscript":
            traced = torch.jit.trace(network, example)
            with atomic_write(out, "wb") as handle:
                torch.jit.save(traced, handle, _extra_files={"faceverify.json": json.dumps(metadata)})
        elif fmt == "onnx":
            _export_onnx(network, example, out, metadata)
        else:
            raise InvalidInputError(f"unknown export format {fmt!r}; valid: torchscript, onnx")
    exported = load_model(out, device="cpu")
    difference = compare(model, exported, check_crops)
    if difference > tolerance:
        out.unlink(missing_ok=True)
        raise ModelError(f"the {fmt} export differs from the checkpoint by {difference:.2e} (> {tolerance:g}) on "
                         "normalised embeddings; nothing was kept")
    return {"out": str(out), "format": fmt, "max_abs_diff": difference, **{k: metadata[k] for k in (
        "input_size", "template", "embedding_dim", "flip", "calibration")}}


def _export_onnx(network: torch.nn.Module, example: torch.Tensor, out: Path, metadata: dict) -> None:
    try:
        import onnx
    except ImportError as err:
        raise ModelError(f"ONNX export needs the onnx extra: pip install -e '.[onnx]' ({err})") from None
    tmp = out.with_name(f".{out.name}.export")
    try:
        program = torch.onnx.export(network, (example,), dynamo=True, input_names=["images"],
                                    output_names=["embeddings"],
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), verbose=False)
        program.save(str(tmp))
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = "faceverify", json.dumps(metadata)
        with atomic_write(out, "wb") as handle:
            handle.write(proto.SerializeToString())
    finally:
        tmp.unlink(missing_ok=True)


def compare(reference: FaceModel, candidate: FaceModel, crops: np.ndarray | None = None) -> float:
    """Largest absolute difference of the two models' L2-normalised embeddings (flip-combined as the
    models say) on ``crops`` and on eight random crops."""
    height, width = reference.input_size
    batch = list(np.random.default_rng(0).integers(0, 256, (8, height, width, 3), dtype=np.uint8))
    batch += list(crops) if crops is not None else []
    a = _normalised(reference.embed_crops(batch))
    b = _normalised(candidate.embed_crops(batch))
    return float(np.abs(a - b).max())
