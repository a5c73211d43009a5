"""Build ``gpu_payload/``: everything ``experiments/gpu_proof.sh`` needs on a device machine that
reaches nothing (no network, no ``../shared``), inside the 64 MiB a device call carries.

    python experiments/gpu_payload.py [--aligned work/lfw_aligned_112x96] [--out gpu_payload]
    python experiments/gpu_payload.py --quick --out /tmp/payload      # the CPU-sized one of QUICK=1

Contents (the folder is ignored by git; name it in the device call's ``carry``):

* ``lfw/pairs.txt``, ``lfw/people.txt``: the View 2 protocol (with ``--quick``: a few pairs per fold);
* ``aligned/``: the crops held-out fold 1 uses (the training people of people sets 2-10 and every
  pair image, :func:`faceverify.ablation.protocol.needed_keys`), re-encoded as JPEG quality 90 at
  112x96, with a ``manifest.csv`` in ``faceverify align``'s format, so the ablation reads it as an
  aligned tree. Crops come from ``--aligned`` (made by ``faceverify align ... --purpose eval``);
  images missing there are aligned here first (MTCNN on this machine);
* ``raw/``: the first ``--raw`` raw LFW photos of ``pairs.txt`` (alignment on the GPU, and the
  RecordIO file section 3 writes on the device from their centres);
* ``wheels/``: the packages the device image lacks (facenet-pytorch, pytorch-metric-learning;
  KINDS.md of the device tool lists what it has), fetched with ``pip download`` once (``--wheels DIR``
  copies them from a folder instead; ``--no-wheels`` leaves them out, for a machine that has them);
* ``payload.json``: the commit it was built from, the counts and the size.

It prints its size and refuses above 60 MiB (the working tree travels beside it). ``--quick``
takes a few people and pairs only: small enough to build and run on two CPU cores in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data_prep.manifest import read_manifest, write_manifest  # noqa: E402
from faceverify.ablation.protocol import needed_keys  # noqa: E402
from faceverify.data.images import read_rgb  # noqa: E402
from faceverify.data.lfw import read_pairs, resolve_image_paths  # noqa: E402
from faceverify.data.locate import locate_lfw  # noqa: E402
from faceverify.provenance import git_commit  # noqa: E402

LIMIT_MIB = 60
WHEELS = ("facenet-pytorch==2.5.3", "pytorch-metric-learning==2.9.0")
JPEG_QUALITY = 90


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def quick_protocol(protocol: Path, out: Path, per_kind: int = 3, max_images: int = 6) -> None:
    """A CPU-sized View 2 protocol in ``out``: ``per_kind`` matched and mismatched pairs of every
    fold (the threshold of fold 1 comes from the others), among people with at most ``max_images``
    images, and a ``people.txt`` whose set k holds fold k's pair people and (k >= 2) a few more
    training people -- the same structure as the real files, a few dozen images in all."""
    from faceverify.data.lfw import identity_of_key, read_people

    pairs = read_pairs(protocol / "pairs.txt")
    people = read_people(protocol / "people.txt")
    counts = {name: n for group in people for name, n in group.items()}
    small = lambda key: counts[identity_of_key(key)] <= max_images  # noqa: E731
    lines, sets = [f"{pairs.n_folds} {per_kind}"], [dict() for _ in people]
    for fold in range(pairs.n_folds):
        for same in (True, False):
            chosen = [i for i in range(len(pairs)) if pairs.fold[i] == fold and pairs.same[i] == same
                      and small(pairs.keys_a[i]) and small(pairs.keys_b[i])][:per_kind]
            for i in chosen:
                (a_name, a_no), (b_name, b_no) = (k.rsplit("_", 1) for k in (pairs.keys_a[i], pairs.keys_b[i]))
                a_name, b_name = a_name.split("/")[0], b_name.split("/")[0]
                lines.append(f"{a_name}\t{int(a_no)}\t{int(b_no)}" if same else
                             f"{a_name}\t{int(a_no)}\t{b_name}\t{int(b_no)}")
                for name in (a_name, b_name):
                    sets[fold][name] = counts[name]
    for k, group in enumerate(people[1:], start=1):
        extra = [n for n, c in group.items() if 2 <= c <= max_images and n not in sets[k]][:2]
        sets[k].update({n: counts[n] for n in extra})
    (out / "pairs.txt").write_text("\n".join(lines) + "\n")
    body = [str(len(sets))]
    for group in sets:
        body += [str(len(group))] + [f"{n}\t{c}" for n, c in group.items()]
    (out / "people.txt").write_text("\n".join(body) + "\n")


def aligned_rows(aligned: Path | None, keys: list[str], raw_root: Path, work: Path) -> tuple[Path, dict[str, dict]]:
    """``(tree, key -> manifest row)`` holding every key: the rows of ``aligned`` where it has them,
    the rest aligned now into ``work`` with the package's own pipeline."""
    rows: dict[str, dict] = {}
    if aligned is not None and (aligned / "manifest.csv").is_file():
        for row in read_manifest(aligned / "manifest.csv"):
            key = os.path.splitext(row["src"])[0]
            if row["status"] in ("ok", "fallback") and key in keys and (aligned / row["dst"]).is_file():
                rows[key] = {**row, "_root": str(aligned)}
    missing = [k for k in keys if k not in rows]
    if missing:
        from data_prep.prepare import AlignConfig, align_tree

        print(f"aligning {len(missing)} image(s) not in {aligned}", flush=True)
        src = work / "src"
        for key, path in resolve_image_paths(raw_root, missing).items():
            (src / key.split("/")[0]).mkdir(parents=True, exist_ok=True)
            os.symlink(path, src / key.split("/")[0] / path.name)
        dst = work / "aligned"
        align_tree(src, dst, AlignConfig(purpose="eval"), progress=False)
        for row in read_manifest(dst / "manifest.csv"):
            key = os.path.splitext(row["src"])[0]
            if row["status"] in ("ok", "fallback"):
                rows[key] = {**row, "_root": str(dst)}
    return work, rows


def build(out: Path, aligned: Path | None, raw_count: int, quick: bool, wheels: Path | None,
          fetch_wheels: bool = True) -> dict:
    location = locate_lfw(None)
    protocol = location.pairs.parent
    if out.exists():
        shutil.rmtree(out)
    (out / "lfw").mkdir(parents=True)
    if quick:
        quick_protocol(protocol, out / "lfw")
    else:
        for name in ("pairs.txt", "people.txt"):
            shutil.copyfile(protocol / name, out / "lfw" / name)
    keys = needed_keys(out / "lfw", 1)
    with tempfile.TemporaryDirectory(prefix="gpu_payload_") as tmp:
        _, rows = aligned_rows(aligned, keys, location.images, Path(tmp))
        manifest = []
        for key in keys:
            if key not in rows:
                continue  # no face and no fallback: the ablation records it as missing, as with any tree
            row = dict(rows[key])
            image = cv2.imread(str(Path(row.pop("_root")) / row["dst"]), cv2.IMREAD_COLOR)
            row["dst"] = key + ".jpg"
            (out / "aligned" / key).parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(out / "aligned" / row["dst"]), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                raise OSError(f"could not write {out / 'aligned' / row['dst']}")
            manifest.append(row)
        write_manifest(out / "aligned" / "manifest.csv", manifest)
    pair_keys = list(dict.fromkeys(read_pairs(out / "lfw" / "pairs.txt").keys))[:raw_count]
    for key, path in resolve_image_paths(location.images, pair_keys).items():
        read_rgb(path)  # a damaged photo fails here, not on the device
        (out / "raw" / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / "raw" / key.split("/")[0] / path.name)
    (out / "wheels").mkdir()
    if wheels is not None:
        for wheel in sorted(wheels.glob("*.whl")):
            shutil.copyfile(wheel, out / "wheels" / wheel.name)
    elif fetch_wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "-d", str(out / "wheels"), *WHEELS], check=True)
    info = {"commit": git_commit(), "crops": len(manifest), "crops_wanted": len(keys), "raw_photos": len(pair_keys),
            "wheels": sorted(p.name for p in (out / "wheels").glob("*.whl")), "quick": quick,
            "jpeg_quality": JPEG_QUALITY}
    info["bytes"] = folder_bytes(out)
    (out / "payload.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aligned", type=Path, default=ROOT / "work" / "lfw_aligned_112x96")
    parser.add_argument("--out", type=Path, default=ROOT / "gpu_payload")
    parser.add_argument("--raw", type=int, default=1000, help="raw LFW photos for the alignment section")
    parser.add_argument("--wheels", type=Path, help="a folder of wheels to copy instead of pip download")
    parser.add_argument("--no-wheels", action="store_true",
                        help="no wheels (for a machine that has the packages, as the CPU check does)")
    parser.add_argument("--quick", action="store_true", help="a CPU-sized payload for DEVICE=cpu QUICK=1")
    args = parser.parse_args()
    raw = min(args.raw, 24) if args.quick else args.raw
    info = build(args.out, args.aligned, raw, args.quick, args.wheels, fetch_wheels=not args.no_wheels)
    mib = info["bytes"] / 2**20
    print(f"{args.out}: {info['crops']} crops, {info['raw_photos']} raw photos, {len(info['wheels'])} wheels, "
          f"{mib:.1f} MiB (commit {info['commit']})")
    if mib > LIMIT_MIB:
        shutil.rmtree(args.out)
        raise SystemExit(f"gpu_payload: {mib:.1f} MiB is above the {LIMIT_MIB} MiB a device call can carry beside "
                         "the working tree; removed")


if __name__ == "__main__":
    main()
