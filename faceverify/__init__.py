"""faceverify: reproducible deep face verification (Wen et al. 2016 and metric-learning losses).

    import faceverify
    model = faceverify.load_model("runs/demo/model.pt")   # a checkpoint, an export, or "dlib"
    verdict = model.verify("a.jpg", "b.jpg")              # .similarity, .threshold, .same
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["load_model", "FaceModel", "Verdict", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from faceverify.use.model import FaceModel, Verdict, load_model


def __getattr__(name: str) -> Any:
    # torch and MTCNN load only when the model API is used, not on `import faceverify`
    if name in ("load_model", "FaceModel", "Verdict"):
        from faceverify.use import model

        return getattr(model, name)
    raise AttributeError(f"module 'faceverify' has no attribute {name!r}")
