"""Using a trained model: ``verify`` (two photos, or a CSV of pairs) and ``embed`` (a folder)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from faceverify.cli.shape import UsageError

SAME, DIFFERENT = 0, 1  # verify's exit status; 2 is every error, as for every command


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True,
                   help="a checkpoint of faceverify train, a file of faceverify export, or dlib")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--policy", choices=["center", "largest", "most-confident"], default="center",
                   help="which face of a photo with several (as in faceverify align)")
    p.add_argument("--template", choices=["112x96", "112x112"],
                   help="refuse a model aligned to another template (a safety check for scripts)")


def _load(args: argparse.Namespace):
    from faceverify.use.model import load_model

    model = load_model(args.model, device=args.device, policy=args.policy)
    if args.template and model.kind != "dlib" and model.template != args.template:
        raise UsageError(f"--template {args.template}: {args.model} was trained on {model.template} crops")
    return model


def add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="same person or not: two photos (exit 0 same, 1 different, 2 error), or a CSV of pairs",
        description="Detect and align each photo with MTCNN to the model's template (the face nearest the centre; "
        "--all-faces compares every face pair), embed it and its mirror, compare by cosine similarity with the "
        "model's calibrated threshold (or --threshold). Exit status 0 = same person, 1 = different, 2 = error. "
        "With --pairs PAIRS.csv (columns a,b) every pair is decided into --out, each photo embedded once.",
    )
    p.add_argument("photos", nargs="*", type=Path, metavar="PHOTO", help="two photos (or use --pairs)")
    _add_model_options(p)
    p.add_argument("--threshold", type=float, help="decide with this threshold instead of the model's")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--all-faces", action="store_true", help="compare every face of A with every face of B")
    p.add_argument("--pairs", type=Path, help="CSV with columns a,b (paths; extra columns kept)")
    p.add_argument("--out", type=Path, help="with --pairs: RESULTS.csv to write")
    p.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    if args.pairs is not None:
        from faceverify.use.photos import verify_pairs

        if args.photos or args.out is None:
            raise UsageError("usage: faceverify verify --pairs PAIRS.csv --model M --out RESULTS.csv")
        summary = verify_pairs(_load(args), args.pairs, args.out, args.threshold)
        print(json.dumps(summary) if args.json else
              f"{summary['pairs']} pairs: {summary['same']} same, {summary['different']} different, "
              f"{summary['failed']} failed (see the status column); wrote {summary['out']}"
              + "".join(f"; its column {c} is kept as {n}" for c, n in summary["renamed_columns"].items()))
        return 0
    if len(args.photos) != 2:
        raise UsageError("usage: faceverify verify A B --model M (two photos), or --pairs PAIRS.csv")
    a, b = args.photos
    model = _load(args)
    verdict = model.verify(a, b, threshold=args.threshold, all_faces=args.all_faces)
    if args.json:
        print(json.dumps({"a": str(a), "b": str(b), "model": model.name, **verdict.to_dict()}))
    else:
        relation = ">" if verdict.same else "<="
        name = "cosine similarity" if verdict.metric == "cosine" else "minus euclidean distance"
        print(f"{'same person' if verdict.same else 'different people'}: {name} {verdict.similarity:.4f} "
              f"{relation} threshold {verdict.threshold:.4f} ({verdict.threshold_source})")
        chosen = "best-matching pair of faces" if args.all_faces else f"the {args.policy} face of each"
        print(f"faces found: {verdict.faces_a} in {a}, {verdict.faces_b} in {b}; compared {chosen}")
    return SAME if verdict.same else DIFFERENT


def add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="embed every photo of a folder (or a list file) into EMB.npz (resumable)",
        description="Detect, align and embed each photo (the face nearest the centre) -> EMB.npz with paths, "
        "embeddings, embeddings_flip and status (ok, or why not). Readable by faceverify eval --embeddings. "
        "Work is done in chunks kept in EMB.npz.partial/, so an interrupted run resumes.",
    )
    p.add_argument("src", type=Path, help="a folder (searched recursively) or a file listing photo paths")
    _add_model_options(p)
    p.add_argument("--out", type=Path, required=True, help="EMB.npz to write")
    p.add_argument("--chunk", type=int, default=256, help="photos per resumable chunk")
    p.set_defaults(func=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    from faceverify.io import check_writable_dir
    from faceverify.use.photos import embed_photos

    if args.chunk < 1:
        raise UsageError(f"--chunk must be >= 1, got {args.chunk}")
    check_writable_dir(args.out.parent, "--out folder")
    summary = embed_photos(_load(args), args.src, args.out, chunk=args.chunk)
    failed = ", ".join(f"{n} {s}" for s, n in summary["failed"].items()) or "none"
    print(f"embedded {summary['ok']} of {summary['photos']} photos (failed: {failed}) into {summary['out']}")
    return 0
