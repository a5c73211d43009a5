"""External baseline: dlib's ResNet face descriptor (King, 2017; 99.38% reported on LFW).

Pipeline per image, all from dlib's packaged models (``face_recognition_models``, nothing
downloaded): HOG face detector (one upsampling) -> the face nearest the image centre ->
5-point shape predictor -> 150x150 aligned chip (padding 0.25) -> 128-d descriptor. The
descriptor of the mirrored chip is stored too (``embeddings_flip``) for flip test-time
augmentation. When HOG finds no face, dlib's CNN (MMOD) detector tries; when that finds none
either, a fixed box where LFW faces sit is used and the image is counted as a fallback, never
skipped. dlib's published 99.38% averages 100 jittered crops per image (dlib's
dnn_face_recognition_ex.cpp); this baseline uses one crop and its mirror.

Results are cached in ``<out>.cache.npz`` every ``save_every`` images, so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from faceverify.data.images import read_rgb
from faceverify.errors import MissingInputError
from faceverify.io import atomic_write
from faceverify.progress import progress_bar

# Mean HOG detection box on LFW deep-funneled 250x250 images, as fractions of width/height
# (left, top, right, bottom); the mean of dlib's HOG boxes on the first image of 40 LFW people.
LFW_FALLBACK_BOX = (0.273, 0.316, 0.699, 0.739)


def dlib_model_dir() -> Path:
    """Folder of ``face_recognition_models``' model files, found without importing the package
    (its ``__init__`` imports ``pkg_resources``, which setuptools >= 81 removed)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "face_recognition_models is not installed; install the baselines extra: "
            "pip install -e '.[baselines]'"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    if not folder.is_dir():
        raise MissingInputError(f"face_recognition_models has no models folder at {folder}")
    return folder


@dataclass
class DlibEmbedder:
    """dlib HOG detector + 5-point shape predictor + ResNet descriptor."""

    upsample: int = 1
    padding: float = 0.25
    cnn_max_side: int = 500  # photos are downscaled to this for the CNN detector (HOG misses only)

    def __post_init__(self) -> None:
        try:
            import dlib
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ModuleNotFoundError(
                "dlib is not installed; install the baselines extra: pip install -e '.[baselines]'"
            ) from err
        models = dlib_model_dir()
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shape_predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.model = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self._cnn_path = str(models / "mmod_human_face_detector.dat")
        self._cnn = None  # loaded on first need: only HOG misses use it

    def faces(self, image: np.ndarray) -> list[object]:
        """Every face box (HOG, or the CNN detector when HOG finds none), the one nearest the image
        centre first (larger first among equal distances)."""
        height, width = image.shape[:2]
        faces = list(self.detector(image, self.upsample))
        if not faces:
            faces = self._cnn_faces(image)
        cx, cy = width / 2.0, height / 2.0

        def centre_distance(rect: object) -> tuple[float, float]:
            c = rect.center()
            return ((c.x - cx) ** 2 + (c.y - cy) ** 2, -rect.area())

        return sorted(faces, key=centre_distance)

    def _cnn_faces(self, image: np.ndarray) -> list[object]:
        """dlib's CNN (MMOD) detector, on a copy whose longer side is at most ``cnn_max_side`` (its cost
        grows with the area: minutes on a 12-megapixel photo), boxes mapped back to full size."""
        if self._cnn is None:
            self._cnn = self._dlib.cnn_face_detection_model_v1(self._cnn_path)
        height, width = image.shape[:2]
        factor = min(1.0, self.cnn_max_side / max(height, width))
        small = image if factor == 1.0 else cv2.resize(
            image, (max(1, round(width * factor)), max(1, round(height * factor))), interpolation=cv2.INTER_AREA)
        rects = [d.rect for d in self._cnn(np.ascontiguousarray(small), self.upsample)]
        if factor == 1.0:
            return rects
        return [self._dlib.rectangle(round(r.left() / factor), round(r.top() / factor), round(r.right() / factor),
                                     round(r.bottom() / factor)) for r in rects]

    def chip(self, image: np.ndarray, rect: object) -> np.ndarray:
        """The 150x150 aligned chip of the face in ``rect`` (5-point shape predictor)."""
        shape = self.shape_predictor(image, rect)
        return np.asarray(self._dlib.get_face_chip(image, shape, size=150, padding=self.padding))

    def rect_from_landmarks(self, landmarks: np.ndarray) -> object:
        """A box like the one dlib's detector gives a face with these 5 points ``[5, 2]`` (eyes,
        nose, mouth corners): centred on their mean, 2.2 eye-to-mouth distances wide. The factor
        is a choice made by looking at dlib's HOG boxes on a few LFW photos, not a recorded
        measurement; dlib's shape predictor then finds its own landmarks inside it, and the IJB
        release test checks that dlib scores far above chance with it."""
        points = np.asarray(landmarks, np.float64).reshape(5, 2)
        eye_to_mouth = float(np.linalg.norm(points[3:].mean(axis=0) - points[:2].mean(axis=0)))
        cx, cy = points.mean(axis=0)
        half = 1.1 * max(eye_to_mouth, 1.0)
        return self._dlib.rectangle(int(round(cx - half)), int(round(cy - half)), int(round(cx + half)),
                                    int(round(cy + half)))

    def descriptor(self, chip: np.ndarray) -> np.ndarray:
        """The 128-d descriptor of a chip."""
        return np.asarray(self.model.compute_face_descriptor(np.ascontiguousarray(chip)), dtype=np.float32)

    def choose_face(self, image: np.ndarray) -> tuple[object, bool]:
        """The detected box nearest the image centre, or the LFW fallback box -> (rect, detected)."""
        height, width = image.shape[:2]
        faces = self.faces(image)
        if not faces:
            left, top, right, bottom = LFW_FALLBACK_BOX
            rect = self._dlib.rectangle(
                int(left * width), int(top * height), int(right * width), int(bottom * height)
            )
            return rect, False
        return faces[0], True

    def embed(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """RGB uint8 image -> (descriptor [128], descriptor of the mirrored chip [128], detected)."""
        rect, detected = self.choose_face(image)
        chip = self.chip(image, rect)
        return self.descriptor(chip), self.descriptor(chip[:, ::-1]), detected


def _load_cache(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {
            str(p): (e, f, bool(d))
            for p, e, f, d in zip(data["paths"], data["embeddings"], data["embeddings_flip"], data["detected"])
        }


def _save_cache(path: Path, cache: dict[str, tuple[np.ndarray, np.ndarray, bool]]) -> None:
    paths = list(cache)
    with atomic_write(path, "wb") as handle:
        np.savez(
            handle,
            paths=np.array(paths),
            embeddings=np.stack([cache[p][0] for p in paths]),
            embeddings_flip=np.stack([cache[p][1] for p in paths]),
            detected=np.array([cache[p][2] for p in paths]),
        )


def embed_lfw_with_dlib(
    lfw_root: str | Path,
    relpaths: Sequence[str],
    out_path: str | Path,
    save_every: int = 200,
    progress: bool = True,
) -> dict:
    """Embed ``relpaths`` (relative to ``lfw_root``) and write ``out_path`` (``EMB.npz``).

    Returns a summary: images, detected, fallbacks, seconds, images per second.
    """
    lfw_root = Path(lfw_root)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path = out_path.with_name(out_path.name + ".cache.npz")
    cache = _load_cache(cache_path)
    # undetected images are retried, so a better detector chain improves an existing cache
    todo = [p for p in relpaths if p not in cache or not cache[p][2]]
    embedder = DlibEmbedder() if todo else None
    started = time.perf_counter()
    for count, rel in enumerate(progress_bar(todo, desc="dlib", unit="img", enabled=progress), start=1):
        cache[rel] = embedder.embed(read_rgb(lfw_root / rel))
        if count % save_every == 0:
            _save_cache(cache_path, cache)
    elapsed = time.perf_counter() - started
    if todo:
        _save_cache(cache_path, cache)
    ordered = list(relpaths)
    detected = np.array([cache[p][2] for p in ordered])
    np.savez(
        out_path,
        paths=np.array(ordered),
        embeddings=np.stack([cache[p][0] for p in ordered]),
        embeddings_flip=np.stack([cache[p][1] for p in ordered]),
        detected=detected,
    )
    return {
        "images": len(ordered),
        "embedded_this_run": len(todo),
        "detected": int(detected.sum()),
        "fallback": int((~detected).sum()),
        "seconds": elapsed,
        "images_per_second": len(todo) / elapsed if todo and elapsed > 0 else None,
    }
