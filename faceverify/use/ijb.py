"""``faceverify eval --ijb``: a model (a checkpoint, an export, ``dlib``) or an embeddings file
scored on IJB-B / IJB-C, with the preprocessing fingerprint that lets a number be compared with a
published one.

With a model, every face image is aligned from the release's landmarks onto the model's template
and embedded with its mirror into ``OUT/embeddings.npz`` (resumable; :mod:`faceverify.evaluation.ijb_embed`),
then :func:`faceverify.evaluation.ijb_eval.evaluate_ijb` scores it. With ``--embeddings`` the
features come from anywhere (``paths`` = the loose-crop image names).
"""

from __future__ import annotations

from pathlib import Path

from faceverify.data.ijb import IJBRelease, read_ijb
from faceverify.evaluation.ijb_embed import embed_ijb
from faceverify.evaluation.ijb_eval import evaluate_ijb, write_ijb_outputs
from faceverify.evaluation.ijb_protocol import TestMode
from faceverify.evaluation.lfw_eval import EmbeddingSet
from faceverify.io import check_not_an_input
from faceverify.locks import lock_output
from faceverify.provenance import git_commit
from faceverify.use.model import FaceModel
from faceverify.use.photos import model_fingerprint

WARP = ("5-point least-squares similarity from the release's landmarks; cv2.warpAffine bilinear, border 0, after an "
        "INTER_AREA pre-shrink when the face is shrunk more than 2x (faceverify.data.alignment.warp_face)")


def preprocessing_of(model: FaceModel | None, mode: TestMode, embeddings: Path | None = None) -> dict:
    """What decides the IJB number besides the network (the anchors' trackers' usual suspects)."""
    common = {"flip": mode.flip, "test_mode": mode.describe(), "faceverify_commit": git_commit()}
    if model is None:
        return {"embeddings": str(embeddings), "alignment": "not known to faceverify (features computed elsewhere)",
                **common}
    if model.kind == "dlib":
        alignment = "dlib 5-point shape predictor in the box the release's landmarks imply, 150x150 chip"
    else:
        alignment = WARP
    return {"model": model.name, "kind": model.kind, "template": model.template, "input_size": list(model.input_size),
            "normalisation": model.describe()["normalisation"], "alignment": alignment, **common}


def embed_release(model: FaceModel, release: IJBRelease, out: Path, chunk: int = 1024, progress: bool = True) -> dict:
    """Every image of ``release`` through ``model`` into ``out`` (npz), resumable."""
    workers = 1 if model.kind == "dlib" else None  # dlib's predictor is not shared across threads
    return embed_ijb(release, model.crop_from_landmarks, lambda crops: model.embed_crops_split(crops, True),
                     model.embedding_dim, out, model_fingerprint(model), chunk=chunk, workers=workers,
                     progress=progress)


def evaluate_on_ijb(ijb: str | Path | IJBRelease, out: str | Path, mode: TestMode = TestMode(),
                    model: FaceModel | None = None, embeddings: str | Path | None = None, chunk: int = 1024,
                    progress: bool = True) -> dict:
    """Score ``model`` (or ``embeddings``) on an IJB release (its folder, or the release already
    read); writes ``out``'s ``metrics.json``, ``report.md``, ``roc.png`` (and ``embeddings.npz``
    with a model)."""
    if (model is None) == (embeddings is None):
        raise ValueError("give a model or an embeddings file")  # the command line enforces one
    release = ijb if isinstance(ijb, IJBRelease) else read_ijb(ijb)
    out = Path(out)
    check_not_an_input(out, [release.root / "meta", release.image_dir] + ([Path(embeddings)] if embeddings else []),
                       "--out")
    with lock_output(out, "IJB evaluation"):
        if model is not None:
            embeddings = out / "embeddings.npz"
            summary = embed_release(model, release, embeddings, chunk, progress)
        else:
            summary = None
        metrics, curve = evaluate_ijb(release, EmbeddingSet.load(embeddings), mode)
        metrics["preprocessing"] = preprocessing_of(model, mode, None if model else Path(embeddings))
        if summary is not None:
            metrics["embed"] = summary
        write_ijb_outputs(metrics, curve, out)
    return metrics
