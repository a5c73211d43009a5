"""Using a trained model: ``load_model(path_or_name) -> FaceModel`` with ``embed`` and ``verify``.

    import faceverify
    model = faceverify.load_model("runs/demo/model.pt")          # or an export, or "dlib"
    verdict = model.verify("a.jpg", "b.jpg")
    print(verdict.similarity, verdict.threshold, verdict.same)
    features = model.embed(["a.jpg", "b.jpg"])                    # [2, D]

A model is one of

* a checkpoint written by ``faceverify train`` (``last.pt``, ``best.pt``, the demo's ``model.pt``);
* a file written by ``faceverify export`` (TorchScript ``.ts``/``.pt`` or ONNX ``.onnx``), which
  carries the same metadata;
* ``dlib``: the dlib ResNet baseline (``faceverify/baselines``), so verification works before
  anything is trained.

It carries what using it needs: the network, its input size and alignment template, the
normalisation ``(p - 127.5) / 128``, the embedding size, the flip policy and, when the model was
evaluated with the LFW protocol, a decision **threshold** with its source and accuracy
(:class:`Calibration`: the mean of the ten fold thresholds, each chosen on the other nine folds).
A checkpoint's calibration sits beside it in ``<checkpoint>.calibration.json`` (written by
``faceverify eval --checkpoint`` and by the demo); an export holds it inside. A model without one
says so and needs an explicit threshold.

Photos go through the same path as training data: MTCNN, the face nearest the centre (larger
wins near-ties; ``policy`` as in ``faceverify align``), the 5-point similarity transform onto the
model's template, the fit to the network input, the network on the crop and on its mirror, the
flip combination, then cosine similarity (dlib: its own detector, chip and euclidean distance).
"""

from __future__ import annotations

import json
import math
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from data_prep.detect import FaceDetector, choose_face
from faceverify.data.alignment import get_template, similarity_transform, template_for_input, warp_face
from faceverify.data.images import read_rgb
from faceverify.data.transforms import fit_array, horizontal_flip, to_network_input
from faceverify.errors import FaceverifyError, MissingInputError
from faceverify.evaluation.embed import combine_flip
from faceverify.use.calibration import (  # noqa: F401 - part of the model API
    Calibration,
    calibration_from_metrics,
    calibration_path,
    file_sha256,
    read_calibration,
    write_calibration,
)

MODEL_FORMAT = "faceverify-model-v1"
PhotoInput = str | Path | np.ndarray
# dlib's own rule for its descriptors (dlib's face recognition example): a euclidean distance below
# 0.6 means the same person; with it dlib reports 99.38% on LFW.
DLIB_THRESHOLD = 0.6


class ModelError(FaceverifyError, ValueError):
    """A file that is not a usable model, or a model used in a way it does not support."""


class NoFaceError(FaceverifyError, ValueError):
    """No face was found in a photo; the message names the photo."""


@dataclass
class Face:
    """One detected face: its box and landmarks in photo pixels, its MTCNN score, the aligned crop."""

    box: np.ndarray
    score: float | None
    landmarks: np.ndarray | None
    crop: np.ndarray


@dataclass
class Verdict:
    similarity: float  # cosine similarity (dlib: minus the euclidean distance)
    threshold: float
    same: bool
    metric: str
    threshold_source: str
    faces_a: int
    faces_b: int
    pairs: list[dict] = field(default_factory=list)  # with all_faces: every face pair's similarity

    def to_dict(self) -> dict:
        return asdict(self)


class FaceModel:
    """A model ready to embed and verify photos (see the module docstring)."""

    def __init__(self, name: str, kind: str, embed_batch: Callable[[torch.Tensor], torch.Tensor] | None,
                 input_size: tuple[int, int], embedding_dim: int, flip: str = "concat",
                 calibration: Calibration | None = None, device: str | torch.device = "cpu",
                 metadata: dict | None = None, policy: str = "center"):
        self.name = name
        self.kind = kind
        self._embed_batch = embed_batch
        self.input_size = tuple(int(v) for v in input_size)
        self.template = "dlib" if kind == "dlib" else template_for_input(self.input_size)
        self.embedding_dim = embedding_dim
        self.calibration = calibration
        self.calibration_problem = ""  # why a calibration found beside the model was not used
        self.flip = calibration.flip if calibration is not None else flip
        self.metric = calibration.metric if calibration is not None else ("euclidean" if kind == "dlib" else "cosine")
        self.device = torch.device(device)
        self.metadata = metadata or {}
        self.policy = policy
        self._detector: FaceDetector | None = None
        self._dlib = None

    def _dlib_embedder(self):
        if self._dlib is None:
            from faceverify.baselines.dlib_resnet import DlibEmbedder

            self._dlib = DlibEmbedder()
        return self._dlib

    # ------------------------------------------------------------------ description
    def describe(self) -> dict:
        return {
            "model": self.name, "kind": self.kind, "input_size": list(self.input_size), "template": self.template,
            "normalisation": "(p - 127.5) / 128" if self.kind != "dlib" else "dlib", "embedding_dim": self.embedding_dim,
            "flip": self.flip, "metric": self.metric,
            "calibration": self.calibration.to_dict() if self.calibration else None,
        }

    # ------------------------------------------------------------------ faces
    def faces(self, photo: np.ndarray) -> list[Face]:
        """Every face of an RGB photo, aligned for this model (the chosen one first, see ``choose_face``)."""
        return self.faces_many([photo])[0]

    def faces_many(self, photos: Sequence[np.ndarray]) -> list[list[Face]]:
        """:meth:`faces` of several photos, detected in batches (MTCNN groups equal sizes)."""
        if self.kind == "dlib":
            return [self._dlib_faces(photo) for photo in photos]
        if self._detector is None:
            self._detector = FaceDetector(self.device if self.device.type == "cuda" else "cpu")
        template = get_template(self.template)
        out: list[list[Face]] = []
        for photo, detections in zip(photos, self._detector.detect(list(photos))):
            if len(detections) == 0:
                out.append([])
                continue
            first = choose_face(detections, photo.shape[:2], self.policy)
            order = [first] + [i for i in range(len(detections)) if i != first]
            faces = []
            for i in order:
                matrix = similarity_transform(detections.landmarks[i], template.points)
                crop = fit_array(warp_face(photo, matrix, template), self.input_size)
                faces.append(Face(detections.boxes[i], float(detections.scores[i]), detections.landmarks[i], crop))
            out.append(faces)
        return out

    def _dlib_faces(self, photo: np.ndarray) -> list[Face]:
        dlib = self._dlib_embedder()
        faces = []
        for rect in dlib.faces(photo):
            chip = dlib.chip(photo, rect)
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float64)
            faces.append(Face(box, None, None, chip))
        return faces

    def crop_from_landmarks(self, photo: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The crop this model embeds for a face whose 5 landmarks ``[5, 2]`` are known (an IJB
        release lists them): the similarity transform onto the model's template, fitted to its
        input; dlib: its shape predictor and chip inside the box those points imply."""
        if self.kind == "dlib":
            dlib = self._dlib_embedder()
            return dlib.chip(photo, dlib.rect_from_landmarks(landmarks))
        template = get_template(self.template)
        matrix = similarity_transform(np.asarray(landmarks, np.float64), template.points)
        return fit_array(warp_face(photo, matrix, template), self.input_size)

    # ------------------------------------------------------------------ embeddings
    @torch.no_grad()
    def embed_crops_split(self, crops: Sequence[np.ndarray], with_flip: bool = True,
                          batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """Aligned crops (uint8 ``[h, w, 3]`` each) -> ``(features [N, D], features of the mirrors or None)``."""
        if self.kind == "dlib":
            dlib = self._dlib_embedder()
            plain = np.array([dlib.descriptor(c) for c in crops], dtype=np.float64).reshape(-1, 128)
            if not with_flip:
                return plain, None
            return plain, np.array([dlib.descriptor(c[:, ::-1]) for c in crops], dtype=np.float64).reshape(-1, 128)
        fitted = [fit_array(np.asarray(c), self.input_size) for c in crops]
        plain, flipped = [], []
        for start in range(0, len(fitted), batch_size):
            chunk = np.stack(fitted[start : start + batch_size])
            batch = to_network_input(torch.from_numpy(chunk), self.device)
            plain.append(self._embed_batch(batch).float().cpu().numpy())
            if with_flip:
                flipped.append(self._embed_batch(horizontal_flip(batch)).float().cpu().numpy())
        if not plain:
            empty = np.zeros((0, self.embedding_dim))
            return empty, (empty.copy() if with_flip else None)
        return (np.concatenate(plain).astype(np.float64),
                np.concatenate(flipped).astype(np.float64) if with_flip else None)

    def embed_crops(self, crops: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Aligned crops -> features ``[N, D']``, flip-combined as the model says (what it compares)."""
        plain, flipped = self.embed_crops_split(crops, self.flip != "none", batch_size)
        return combine_flip(plain, flipped, self.flip)

    def read(self, photo: PhotoInput) -> np.ndarray:
        """A photo from a path (any format ``faceverify align`` reads) or an RGB uint8 array."""
        if isinstance(photo, np.ndarray):
            if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
                raise ModelError(f"a photo array must be RGB uint8 [H, W, 3], got {photo.dtype} {photo.shape}")
            return photo
        return read_rgb(photo)

    def face_of(self, photo: PhotoInput, name: str | None = None) -> tuple[Face, int]:
        """The chosen face of a photo and how many faces it has; NoFaceError names the photo."""
        image = self.read(photo)
        faces = self.faces(image)
        if not faces:
            raise NoFaceError(f"no face found in {name or photo if not isinstance(photo, np.ndarray) else 'the photo'}")
        return faces[0], len(faces)

    def embed(self, photos: PhotoInput | Sequence[PhotoInput]) -> np.ndarray:
        """Features of the chosen face of each photo -> ``[N, D']`` (one photo -> ``[1, D']``)."""
        items = [photos] if isinstance(photos, (str, Path, np.ndarray)) else list(photos)
        return self.embed_crops([self.face_of(item)[0].crop for item in items])

    # ------------------------------------------------------------------ decisions
    def score(self, a: np.ndarray, b: np.ndarray) -> float:
        """cosine similarity of two feature vectors, or minus their euclidean distance (dlib)."""
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if self.metric == "euclidean":
            return -float(np.linalg.norm(a - b))
        return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), np.finfo(np.float64).tiny))

    def decision_threshold(self, threshold: float | None = None) -> tuple[float, str]:
        """``(threshold, where it came from)``: the given one (finite; outside the score's range it
        decides every pair alike, which is said on stderr), else the calibrated one."""
        if threshold is not None:
            threshold = float(threshold)
            if not math.isfinite(threshold):
                raise ModelError(f"--threshold {threshold}: a threshold must be a finite number")
            low, high = (-1.0, 1.0) if self.metric == "cosine" else (-math.inf, 0.0)
            if not low <= threshold <= high:
                decision = "different" if threshold >= high else "the same person"
                print(f"faceverify: warning: --threshold {threshold:g} is outside the range of {self.metric} scores "
                      f"[{low:g}, {high:g}]: every pair will be {decision}", file=sys.stderr)
            return threshold, "given (--threshold)"
        if self.calibration is None and self.calibration_problem:
            raise ModelError(self.calibration_problem)
        if self.calibration is None:
            raise ModelError(f"{self.name} has no calibrated threshold (evaluate it with faceverify eval --checkpoint "
                             "on LFW to calibrate one); give --threshold T")
        return self.calibration.threshold, self.calibration.source

    def verify(self, a: PhotoInput, b: PhotoInput, threshold: float | None = None, all_faces: bool = False) -> Verdict:
        """Same person or not: the chosen face of each photo (``all_faces``: the best-matching pair of
        faces, every pair's similarity listed)."""
        limit, source = self.decision_threshold(threshold)
        image_a, image_b = self.read(a), self.read(b)
        faces_a, faces_b = self.faces(image_a), self.faces(image_b)
        for faces, photo in ((faces_a, a), (faces_b, b)):
            if not faces:
                raise NoFaceError(f"no face found in {photo if not isinstance(photo, np.ndarray) else 'the photo'}")
        used_a = faces_a if all_faces else faces_a[:1]
        used_b = faces_b if all_faces else faces_b[:1]
        features = self.embed_crops([f.crop for f in used_a + used_b])
        fa, fb = features[: len(used_a)], features[len(used_a) :]
        pairs = [{"face_a": i, "face_b": j, "similarity": self.score(fa[i], fb[j])}
                 for i in range(len(used_a)) for j in range(len(used_b))]
        best = max(pairs, key=lambda p: p["similarity"])
        return Verdict(best["similarity"], limit, best["similarity"] > limit, self.metric, source,
                       len(faces_a), len(faces_b), pairs if all_faces else [])


# ----------------------------------------------------------------------------- loading
def load_model(path_or_name: str | Path, device: str | torch.device = "auto", policy: str = "center") -> FaceModel:
    """A checkpoint, an exported file or ``dlib`` as a :class:`FaceModel` (see the module docstring)."""
    from faceverify.training.distributed import resolve_device

    target = resolve_device(str(device))
    if str(path_or_name) == "dlib":
        calibration = Calibration(-DLIB_THRESHOLD, "euclidean", "none", None,
                                  "dlib's documented rule: euclidean distance below 0.6 means the same person")
        return FaceModel("dlib", "dlib", None, (150, 150), 128, "none", calibration, "cpu", policy=policy)
    path = Path(path_or_name)
    if not path.is_file():
        raise MissingInputError(f"model {path} does not exist (give a checkpoint, an exported model or 'dlib')")
    head = path.read_bytes()[:8] if path.stat().st_size else b""
    if not head:
        raise ModelError(f"model {path} is empty (0 bytes)")
    if path.suffix == ".onnx" or not head.startswith(b"PK"):
        return _load_onnx(path, policy)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ModelError(f"model {path} ({path.stat().st_size} bytes) is damaged or truncated: a checkpoint or "
                         f"TorchScript export is a zip archive, and this one cannot be read ({err}); copy it "
                         "again") from None
    if any(n.endswith("extra/faceverify.json") for n in names):
        return _load_torchscript(path, target, policy)
    return _load_checkpoint(path, target, policy)


def _load_checkpoint(path: Path, device: torch.device, policy: str) -> FaceModel:
    from faceverify.training.checkpoint import CheckpointError
    from faceverify.training.checkpoint_eval import load_backbone

    try:
        network, input_size, config = load_backbone(path, device)
    except CheckpointError as err:
        raise ModelError(f"{path} is not a faceverify model (a checkpoint of faceverify train, an export of "
                         f"faceverify export, or 'dlib'): {err}") from None
    calibration, stale = read_calibration(path)
    model = FaceModel(str(path), "checkpoint", network, input_size, config.model.embedding_dim,
                      calibration=calibration, device=device, metadata={"backbone": config.model.backbone},
                      policy=policy)
    model.calibration_problem = stale
    return model


def _metadata_model(path: Path, kind: str, embed: Callable, metadata: dict, device, policy: str) -> FaceModel:
    if metadata.get("format") != MODEL_FORMAT:
        raise ModelError(f"{path} is not a faceverify export (metadata format {metadata.get('format')!r})")
    calibration = Calibration.from_dict(metadata["calibration"]) if metadata.get("calibration") else None
    return FaceModel(str(path), kind, embed, tuple(metadata["input_size"]), int(metadata["embedding_dim"]),
                     metadata.get("flip", "concat"), calibration, device, metadata, policy)


def _load_torchscript(path: Path, device: torch.device, policy: str) -> FaceModel:
    import warnings

    extra = {"faceverify.json": ""}
    try:
        with warnings.catch_warnings():  # torch 2.9+ announces TorchScript's deprecation
            warnings.simplefilter("ignore", FutureWarning)
            network = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except RuntimeError as err:
        raise ModelError(f"{path} is not a loadable TorchScript model: {str(err).splitlines()[0]}") from None
    metadata = json.loads(extra["faceverify.json"] or "{}")
    return _metadata_model(path, "torchscript", network.eval(), metadata, device, policy)


def _load_onnx(path: Path, policy: str) -> FaceModel:
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise ModelError(f"{path}: ONNX models need the onnx extra: pip install -e '.[onnx]' ({err})") from None
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError and others for a file of another kind
        raise ModelError(f"{path} is not a faceverify model (a checkpoint of faceverify train, an export of "
                         f"faceverify export, or 'dlib'): not a readable ONNX file ({type(err).__name__})") from None
    metadata = json.loads({p.key: p.value for p in proto.metadata_props}.get("faceverify", "{}"))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def embed(batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {input_name: batch.cpu().numpy().astype(np.float32)})[0])

    return _metadata_model(path, "onnx", embed, metadata, "cpu", policy)


def export_metadata(model: FaceModel, checkpoint: Path, extra: dict[str, Any] | None = None) -> dict:
    from faceverify.provenance import git_commit

    return {"format": MODEL_FORMAT, **model.describe(), "backbone": model.metadata.get("backbone", ""),
            "source_checkpoint": str(checkpoint), "commit": git_commit(), **(extra or {})}
