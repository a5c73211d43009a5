"""Data commands: ``align``, ``pack``, ``rec check``, ``export``, ``lfw``, ``casia-overlap``."""

from __future__ import annotations

import argparse
from pathlib import Path

from faceverify.cli.shape import UsageError, add_config_flags, config_from_args


def add_align(sub: argparse._SubParsersAction) -> None:
    from data_prep.options import ALIGN_FLAGS, AlignConfig

    p = sub.add_parser(
        "align",
        help="detect (MTCNN) and align faces of SRC/<identity>/<image> into DST",
        description="Detect faces with MTCNN, align five landmarks onto a template with a similarity "
        "transform, write DST/<identity>/<stem>.<ext>, DST/manifest.csv and DST/summary.json. "
        "Resumable: re-run the same command after an interruption; a re-run with other crop settings "
        "refuses (--restart moves DST aside).",
    )
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    add_config_flags(p, AlignConfig, ALIGN_FLAGS)
    p.add_argument("--restart", action="store_true",
                   help="move an existing DST aside (to DST.old-<time>, nothing is deleted) and start over")
    p.add_argument("--shard", metavar="K/N",
                   help="align only shard K of N (by a hash of each photo's path) into DST/.shards/K-of-N; N "
                        "processes or machines may run at once; a plain run afterwards merges them. Under "
                        "torchrun the shard is the rank")
    p.set_defaults(func=run_align, takes_overrides=True)


def run_align(args: argparse.Namespace) -> int:
    from data_prep.prepare import ALIGN_FLAGS, AlignConfig, align_tree
    from data_prep.shards import parse_shard, shard_from_environment

    config = config_from_args(AlignConfig, args, ALIGN_FLAGS)
    shard = parse_shard(args.shard) if args.shard else (shard_from_environment() if config.workers == 1 else None)
    summary = align_tree(args.src, args.dst, config, restart=args.restart, shard=shard)
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    speed = summary["images_per_second"]
    what = f"shard {shard}: aligned {summary['sources']} of its images" if shard else f"aligned {summary['sources']} images"
    print(f"{what}: {counts}" + (f"; {speed:.1f} images/s this run" if speed else "; nothing left to do"))
    if shard is not None:
        folder = shard.folder(args.dst)
        print(f"wrote {folder / 'manifest.csv'} and {folder / 'summary.json'}; when every shard has ended, "
              f"`faceverify align {args.src} {args.dst}` merges them into {args.dst / 'manifest.csv'}")
    else:
        print(f"wrote {args.dst / 'manifest.csv'} and {args.dst / 'summary.json'}")
    return 0


def add_pack(sub: argparse._SubParsersAction) -> None:
    from data_prep.options import PACK_FLAGS, PackConfig

    p = sub.add_parser(
        "pack",
        help="pack aligned crops (or a RecordIO set) into one memory-mapped uint8 array for training",
        description="Write OUT/images.u8 [N, H, W, 3], labels.npy, paths.txt and meta.json from an "
        "aligned folder (its manifest.csv decides which crops are usable), or with --from-rec from an "
        "insightface RecordIO folder.",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="ALIGNED_DIR OUT", help="ALIGNED_DIR OUT, or OUT with --from-rec")
    p.add_argument("--from-rec", type=Path, metavar="REC_DIR",
                   help="convert an insightface RecordIO folder (train.rec, train.idx, property)")
    add_config_flags(p, PackConfig, PACK_FLAGS)
    p.set_defaults(func=run_pack, takes_overrides=True)


def run_pack(args: argparse.Namespace) -> int:
    from data_prep.pack import PACK_FLAGS, PackConfig, pack_aligned, pack_recordio

    config = config_from_args(PackConfig, args, PACK_FLAGS)
    if args.from_rec is not None:
        if len(args.inputs) != 1:
            raise UsageError("usage: faceverify pack --from-rec REC_DIR OUT")
        out = args.inputs[0]
        meta = pack_recordio(args.from_rec, out, config)  # labels cached in the user's cache, not beside OUT
        skipped = meta.get("skipped_records", [])
        print(f"packed {meta['n_images']} images of {meta['n_identities']} identities from {args.from_rec} "
              f"({meta['recordio_layout']} layout) into {out}"
              + (f"; skipped {len(skipped)} undecodable record(s), listed in {out / 'meta.json'}" if skipped else ""))
        return 0
    if len(args.inputs) != 2:
        raise UsageError("usage: faceverify pack ALIGNED_DIR OUT (or --from-rec REC_DIR OUT)")
    aligned, out = args.inputs
    meta = pack_aligned(aligned, out, config)
    print(f"packed {meta['n_images']} images of {meta['n_identities']} identities into {out}; "
          f"left out: {meta['left_out_images'] or 'nothing'}")
    return 0


def add_rec(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rec",
        help="check a RecordIO pack: every defect (framing, index, labels, identity ranges, undecodable images)",
        description="faceverify rec check DIR reads train.rec, train.idx and property once and lists every defect "
        "with its record number and byte offset: corrupt or truncated framing, index lines that are malformed, "
        "duplicated, past the end or between records, records the index leaves out, labels that are not whole "
        "numbers, identity ranges that overlap or leave images out, images that do not decode or differ in "
        "size, a property file that disagrees. Exit status 0: no defect; 1: defects found; 2: error.",
    )
    p.add_argument("action", choices=["check"])
    p.add_argument("dir", type=Path, metavar="DIR", help="folder with train.rec (train.idx, property)")
    p.add_argument("--workers", type=int, default=0, help="threads reading and decoding (0: up to 8, one per core)")
    p.add_argument("--out", type=Path, help="write the whole report (every defect) as JSON")
    p.add_argument("--show", type=int, default=50, help="defects printed (all are in --out)")
    p.set_defaults(func=run_rec)


def run_rec(args: argparse.Namespace) -> int:
    from faceverify.data.recordio_check import check_recordio
    from faceverify.io import check_not_an_input, folder_overlap, write_json

    if args.workers < 0 or args.show < 0:
        raise UsageError("--workers and --show must be >= 0")
    if args.out is not None:
        check_not_an_input(args.out, [args.dir / n for n in ("train.rec", "train.idx", "property")], "--out")
        if folder_overlap(args.dir, args.out.parent) in ("same", "inside"):
            raise UsageError(f"--out {args.out} lies inside the pack {args.dir}; write the report elsewhere")
    report = check_recordio(args.dir, workers=args.workers)
    print(f"{args.dir}: {report.records} records, {report.layout} layout, {report.images} images of "
          f"{report.identities} identities" + (f" at {report.image_size[0]}x{report.image_size[1]}"
                                               if report.image_size else "") + f" ({report.seconds:.1f} s)")
    for defect in report.defects[: args.show]:
        print("  " + defect.line())
    if len(report.defects) > args.show:
        print(f"  ... and {len(report.defects) - args.show} more" + (f" (all in {args.out})" if args.out else
                                                                      " (--out REPORT.json lists all)"))
    if args.out is not None:
        write_json(args.out, report.to_dict())
        print(f"wrote {args.out}")
    if report.ok:
        print("no defects")
        return 0
    counts = ", ".join(f"{kind} {n}" for kind, n in report.counts().items())
    print(f"{len(report.defects)} defect(s): {counts}")
    return 1


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained model (TorchScript or ONNX), or aligned data as RecordIO (rec) or a .bin set (bin)",
        description="faceverify export CKPT OUT --format torchscript|onnx writes the network and its metadata "
        "(input, template, flip, calibrated threshold) in one file and checks it against the checkpoint; "
        "faceverify export rec ALIGNED_TREE OUT [--layout legacy|builder] writes train.rec, train.idx and "
        "property; faceverify export bin ALIGNED_LFW PAIRS OUT.bin writes the pairs' images in file order "
        "(so its 10 consecutive folds are the pairs file's folds).",
    )
    p.add_argument("what", metavar="CKPT|rec|bin", help="a checkpoint to export, or rec / bin for data")
    p.add_argument("paths", nargs="+", type=Path, help="model: OUT; rec: ALIGNED_TREE OUT; bin: ALIGNED_LFW PAIRS OUT.bin")
    p.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript", help="model: file format")
    p.add_argument("--layout", choices=["legacy", "builder"], default="legacy", help="rec: record layout")
    p.add_argument("--encoding", choices=["jpg", "png"], default="jpg",
                   help="rec/bin: image encoding (jpg: quality 95 like insightface's packs; png keeps pixels exact)")
    p.add_argument("--min-images", type=int, default=1, help="rec: leave out identities with fewer images")
    p.add_argument("--force", action="store_true", help="rec: replace a RecordIO pack already in OUT")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    if args.what == "rec":
        from data_prep.export import export_recordio

        if len(args.paths) != 2:
            raise UsageError("usage: faceverify export rec ALIGNED_TREE OUT")
        if args.min_images < 1:
            raise UsageError(f"--min-images must be >= 1, got {args.min_images}")
        summary = export_recordio(args.paths[0], args.paths[1], args.layout, args.encoding, args.min_images,
                                  force=args.force)
        print(f"wrote {summary['images']} images of {summary['identities']} identities ({args.layout} layout) "
              f"to {args.paths[1]}/train.rec, train.idx, property")
        return 0
    if args.what == "bin":
        from data_prep.export import export_bin

        if len(args.paths) != 3:
            raise UsageError("usage: faceverify export bin ALIGNED_LFW PAIRS OUT.bin")
        summary = export_bin(args.paths[0], args.paths[1], args.paths[2], args.encoding)
        print(f"wrote {summary['pairs']} pairs ({summary['images']} images, {summary['folds']} fold(s) in the "
              f"pairs file) to {args.paths[2]}")
        return 0
    from faceverify.use.model_export import export_model

    if len(args.paths) != 1:
        raise UsageError("usage: faceverify export CKPT OUT --format torchscript|onnx")
    result = export_model(Path(args.what), args.paths[0], args.format)
    threshold = result["calibration"]["threshold"] if result["calibration"] else "none (verify needs --threshold)"
    print(f"wrote {result['out']} ({args.format}): input {result['input_size'][0]}x{result['input_size'][1]}, "
          f"template {result['template']}, flip {result['flip']}, threshold {threshold}; largest difference from "
          f"the checkpoint on normalised embeddings {result['max_abs_diff']:.2e}")
    return 0


def add_lfw(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lfw", help="locate, verify or download LFW")
    p.add_argument("action", choices=["verify", "download"])
    p.add_argument("path", nargs="?", type=Path,
                   help="verify: LFW folder (default: located); download: data home folder")
    p.add_argument("--manifest", type=Path, help="verify: TSV of path, sha256, bytes to check every file")
    p.add_argument("--original", action="store_true", help="download: the original (not funneled) images")
    p.set_defaults(func=run_lfw)


def run_lfw(args: argparse.Namespace) -> int:
    from data_prep.datasets import download_lfw, verify_lfw
    from faceverify.data.locate import locate_lfw

    if args.action == "download":
        if args.path is None:
            raise UsageError("faceverify lfw download needs a target folder")
        location = download_lfw(args.path, funneled=not args.original)
    else:
        location = locate_lfw(args.path)
    report = verify_lfw(location.images, args.manifest)
    print(f"LFW images {location.images}, protocol files {location.protocol}: {report}")
    return 0


def add_casia_overlap(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("casia-overlap", help="list CASIA-WebFace identities that are also in LFW")
    p.add_argument("names", type=Path, help="CASIA-WebFace names.txt ('<id> <name>' per line)")
    p.add_argument("--lfw-people", type=Path, help="LFW people.txt (default $FACEVERIFY_DATA/lfw/people.txt)")
    p.add_argument("--out", type=Path, required=True, help="identity list for pack --exclude-identities")
    p.set_defaults(func=run_casia_overlap)


def run_casia_overlap(args: argparse.Namespace) -> int:
    from data_prep.datasets import casia_lfw_overlap, lfw_people_names
    from faceverify.data.locate import lfw_protocol_dir
    from faceverify.io import write_text

    people = args.lfw_people or lfw_protocol_dir() / "people.txt"
    overlap = casia_lfw_overlap(args.names, lfw_people_names(people))
    write_text(args.out, "".join(f"{i}\n" for i in overlap))
    print(f"{len(overlap)} CASIA-WebFace identities also in LFW; wrote {args.out}")
    return 0
