"""Walk ``SRC/<identity>/<image>``, detect, align and write ``DST/<identity>/<stem>.<ext>``.

Outputs:

* the aligned crops;
* ``DST/manifest.csv``: one row per source image (sorted by ``src``) with its status
  (``ok``, ``fallback``, ``no_face``, ``unreadable``), the reason, the chosen face's MTCNN score,
  the number of faces, the five landmarks used (source pixels, template order) and the
  alignment residual;
* ``DST/summary.json``: counts per status, throughput, the fallback landmarks and the config.

Resumable and exact: sources are processed in fixed batches of the sorted file list, every image
is written atomically (temporary file + rename) before its row is appended to
``DST/.journal.csv``, and a re-run skips every batch whose images are all recorded. A batch
that was cut short is detected again as a whole, so MTCNN sees the same batch composition and
the outputs equal those of an uninterrupted run, bit for bit.

Safety and resume checks, all made before anything is written:

* DST may not be SRC, nor lie inside it, nor contain it (the crops would overwrite or mix with
  the photos);
* the settings that change the crops (``RESULT_SETTINGS``: template, scale, policy, thresholds,
  ...; the landmarks file by its SHA-256) are recorded in ``DST/.align_run.json``; re-running
  into DST with other values refuses, naming each ``key: old -> new`` (``restart=True`` /
  ``--restart`` moves the old DST aside and starts over);
* each source's size and modification time are recorded with its row; a source that changed
  since is aligned again, and the crops of sources no longer under SRC are removed.

Failures: with ``on_fail=center`` the images without a face are aligned, after all detections,
with the mean landmarks (relative to image size) of every detected face of the same run, and
recorded as ``fallback``; with ``skip`` they stay ``no_face`` and get no crop. A landmarks file
(``relpath x1 y1 ... x5 y5`` per line) can supply landmarks for every image or only for failures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import cv2
import numpy as np

from faceverify.data.alignment import Template, alignment_residual, get_template, similarity_transform, warp_face
from data_prep.faces import choose_face
from data_prep.inputs import (  # noqa: F401 - part of the alignment API
    RESULT_SETTINGS,
    RUN_FILE,
    Source,
    check_separate,
    check_settings,
    list_sources,
    read_landmarks_file,
    result_settings,
)
from data_prep.journal import Journal, read_journal
from data_prep.shards import Shard, check_parts, remove_parts, shard_parts
from data_prep.manifest import (  # noqa: F401 - read_manifest, MANIFEST_COLUMNS: part of the alignment API
    LANDMARK_COLUMNS,
    MANIFEST_COLUMNS,
    STATUSES,
    AlignmentError,
    read_manifest,
    write_manifest,
)
from data_prep.options import ALIGN_FLAGS, AlignConfig  # noqa: F401 - the options live there
from faceverify.config import to_dict
from faceverify.data.images import UnreadableImageError, read_rgb
from faceverify.locks import OutputInUseError, OutputLock, lock_output
from faceverify.io import check_writable_dir, move_aside, write_bytes, write_json
from faceverify.progress import progress_bar

if TYPE_CHECKING:  # the detector (and torch) load only where photos are detected: see _detector
    from data_prep.detect import FaceDetector

JOURNAL = ".journal.csv"
def _row(source: Source, status: str, reason: str, **values: object) -> dict[str, str]:
    row = {c: "" for c in MANIFEST_COLUMNS}
    row.update(src=source.rel, identity=source.identity, status=status, reason=reason)
    for key, value in values.items():
        row[key] = value if isinstance(value, str) else _num(value)
    return row


def _num(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(round(float(value), 4))
    return str(value)


def _landmark_fields(landmarks: np.ndarray) -> dict[str, str]:
    flat = np.asarray(landmarks, dtype=np.float64).reshape(-1)
    return {column: _num(value) for column, value in zip(LANDMARK_COLUMNS, flat)}


def _write_image_atomic(path: Path, rgb: np.ndarray, ext: str) -> None:
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1] if ext == "png" else [cv2.IMWRITE_JPEG_QUALITY, 95]
    ok, encoded = cv2.imencode(f".{ext}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"could not encode {path}")
    write_bytes(path, encoded.tobytes())


def _done(row: dict[str, str] | None, dst: Path, fingerprint: tuple[str, str]) -> bool:
    """Whether ``row`` records this very source file (same size and time) as finished."""
    if row is None or (row["src_bytes"], row["src_mtime_ns"]) != fingerprint:
        return False
    if row["status"] in ("ok", "fallback"):
        return (dst / row["dst"]).is_file()
    return True


def _batches(items: list[Source], size: int) -> Iterator[list[Source]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _decode(path: Path, unusable: str = "") -> np.ndarray | UnreadableImageError:
    if unusable:
        return UnreadableImageError(path, unusable)
    try:
        return read_rgb(path)
    except (UnreadableImageError, FileNotFoundError) as err:
        # a file deleted since the listing is recorded like any other unreadable one
        return err if isinstance(err, UnreadableImageError) else UnreadableImageError(path, "file vanished")


def align_tree(
    src: str | Path,
    dst: str | Path,
    config: AlignConfig | None = None,
    detector: FaceDetector | None = None,
    progress: bool = True,
    only: set[str] | None = None,
    restart: bool = False,
    shard: Shard | None = None,
) -> dict:
    """Align every image under ``src`` into ``dst``; returns the summary (also ``summary.json``).

    ``only`` restricts the run to those source paths (relative, e.g. ``Name/Name_0001.jpg``).
    ``restart`` moves an existing ``dst`` aside (``dst.old-<time>``) and starts over.
    ``shard`` aligns only that shard's photos, into its own part of ``dst``
    (:mod:`data_prep.shards`; the summary is the part's). ``config.workers > 1`` runs that many
    shard processes side by side and then merges them (the summary is the merged run's).
    """
    config = config or AlignConfig()
    src, dst = Path(src), Path(dst)
    if shard is not None and restart:
        raise AlignmentError("--restart moves the whole DST aside, other shards' work included: run it as a "
                             "plain `faceverify align SRC DST --restart`, then start the shards")
    if config.workers > 1:
        if shard is not None:
            raise AlignmentError(f"--workers {config.workers} splits the run into shards itself; give --shard or "
                                 "--workers, not both")
        return _align_in_processes(src, dst, config, detector, progress, only, restart)
    check_separate(src, dst)
    template = get_template(config.template, config.scale)
    on_fail = config.resolved_on_fail()
    sources, listing = list_sources(src, config.ext)
    listed = {s.rel for s in sources}  # every source, also those outside ``only``
    if only is not None:
        missing = sorted(only - {s.rel for s in sources})
        if missing:
            raise AlignmentError(f"{len(missing)} requested image(s) are not under {src}, e.g. {missing[:3]}")
        sources = [s for s in sources if s.rel in only]
    if config.limit:
        sources = sources[: config.limit]
    if shard is not None:  # after the limit: the shards of a limited run split the same photos
        sources = [s for s in sources if shard.holds(s.rel)]
    supplied = read_landmarks_file(config.landmarks_file) if config.landmarks_file else {}
    settings = result_settings(config)
    check_writable_dir(dst, "DST")
    existed = dst.exists()
    if shard is None:
        lock = _lock_whole(dst)  # one plain align per DST and no shard beside it, until this returns
        part_lock = None
    else:  # shards share DST; each holds its own part
        lock = lock_output(dst, f"align (shard {shard})", shared=True)
        try:
            part_lock = lock_output(shard.folder(dst), f"align shard {shard}")
        except BaseException:
            lock.release()
            raise
    moved = None
    try:
        if restart and existed:
            moved = move_aside(dst)  # the moved folder's lock goes with it, still held
            fresh = lock_output(dst, "align")
            lock.release()
            lock = fresh
        return _align_locked(src, dst, config, detector, progress, sources, listed, listing, supplied, settings,
                             template, on_fail, moved, shard)
    finally:
        if part_lock is not None:
            part_lock.release()
        lock.release()


def _detector(config: AlignConfig) -> "FaceDetector":
    """MTCNN for ``config``, imported here: a run with nothing left to detect, and the parent of
    ``--workers`` shards before they start, never load torch."""
    from data_prep.detect import FaceDetector

    return FaceDetector(config.device, config.thresholds, config.min_face_size, config.max_side)


def _lock_whole(dst: Path) -> OutputLock:
    """DST's exclusive lock for a plain run; refused while another plain run or any shard runs."""
    try:
        return lock_output(dst, "align")
    except OutputInUseError as err:
        running = []
        for shard, folder in shard_parts(dst):
            try:
                lock_output(folder, "probe").release()
            except OutputInUseError:
                running.append(str(shard))
        if running:
            raise OutputInUseError(
                f"{dst} is being aligned by shard(s) {', '.join(running)} right now; a plain align merges the "
                "shards' parts, so run it when they have ended") from None
        raise err


def _align_locked(src: Path, dst: Path, config: AlignConfig, detector: FaceDetector | None, progress: bool,
                  sources: list[Source], listed: set[str], listing: dict, supplied: dict, settings: dict,
                  template: Template, on_fail: str, moved: Path | None, shard: Shard | None = None) -> dict:
    """:func:`align_tree`'s work, once it holds DST's lock (``listed``: every source's path; ``listing``:
    what :func:`list_sources` counted). A shard keeps its journal, settings, manifest and summary in
    its own folder and reads DST's journal without writing it; a plain run first merges the parts."""
    check_settings(dst, settings)
    check_parts(dst, settings, shard)
    home = dst if shard is None else shard.folder(dst)
    home.mkdir(parents=True, exist_ok=True)
    write_json(home / RUN_FILE, {"settings": settings, "src": str(src.resolve())})
    journal = Journal(home / JOURNAL)
    merged = _merge_parts(journal, dst) if shard is None else 0
    earlier = read_journal(dst / JOURNAL) if shard is not None else {}  # a plain run's rows: read only
    removed = _remove_gone(journal, listed, dst)

    def known(rel: str) -> dict[str, str] | None:
        return journal.rows.get(rel) or earlier.get(rel)

    fingerprints = {s.rel: s.fingerprint(src) for s in sources}
    started = time.perf_counter()
    processed = 0
    try:
        pending = [b for b in _batches(sources, config.batch_size)
                   if not all(_done(known(s.rel), dst, fingerprints[s.rel]) for s in b)]
        if pending:
            detector = detector or _detector(config)
        total = sum(len(b) for b in pending)
        with ThreadPoolExecutor(max(config.threads, 1)) as pool, progress_bar(
            total=total, desc="align", unit="img", enabled=progress
        ) as bar:
            decoded: dict[int, list[Future]] = {}

            def prefetch(index: int) -> None:
                if index < len(pending) and index not in decoded:
                    decoded[index] = [pool.submit(_decode, src / s.rel, s.unusable) for s in pending[index]]

            writes: list[Future] = []
            for index, batch in enumerate(pending):
                prefetch(index)
                prefetch(index + 1)
                prefetch(index + 2)
                images = [f.result() for f in decoded.pop(index)]
                readable = [i for i, im in enumerate(images) if isinstance(im, np.ndarray)]
                detections = detector.detect([images[i] for i in readable]) if readable else []
                found = dict(zip(readable, detections))
                for i, source in enumerate(batch):
                    if _done(known(source.rel), dst, fingerprints[source.rel]):
                        continue  # finished before an interruption; identical if redone
                    writes.append(pool.submit(
                        _finish_one, source, images[i], found.get(i), supplied, config, template, dst,
                        fingerprints[source.rel]
                    ))
                # drain finished writes in order, keeping the journal close behind the detector
                while writes and (writes[0].done() or len(writes) > 4 * config.batch_size):
                    journal.append(writes.pop(0).result())
                    bar.update(1)
                    processed += 1
            for future in writes:
                journal.append(future.result())
                bar.update(1)
                processed += 1
        detect_seconds = time.perf_counter() - started
        if shard is None:
            fallback = _apply_fallback(sources, journal, on_fail, template, src, dst, config)
        else:  # the mean landmarks need every shard's detections
            fallback = {"applied": 0, "note": "deferred to the plain align that merges the shards"}
    finally:
        journal.close()
    rows = [known(s.rel) for s in sources]
    write_manifest(home / "manifest.csv", rows)
    listing["removed_crops_of_vanished_sources"] = removed
    if shard is not None:
        listing["shard"] = str(shard)
    if merged:
        listing["rows_merged_from_shards"] = merged
    if moved is not None:
        listing["previous_run_moved_to"] = str(moved)
    counts = Counter(r["status"] for r in rows)
    residuals = [float(r["residual"]) for r in rows if r["status"] == "ok" and r["residual"] not in ("", "nan")]
    summary = {
        "sources": len(sources),
        "counts": {s: counts.get(s, 0) for s in STATUSES},
        "processed_this_run": processed,
        "seconds_this_run": detect_seconds,
        "images_per_second": processed / detect_seconds if processed and detect_seconds > 0 else None,
        "mean_residual_px": float(np.mean(residuals)) if residuals else None,
        "template": template.name,
        "crop_size": list(template.size),
        "on_fail": on_fail,
        "fallback": fallback,
        **listing,
        "config": to_dict(config),
    }
    write_json(home / "summary.json", summary)
    return summary


def _merge_parts(journal: Journal, dst: Path) -> int:
    """Fold every shard part's rows into DST's journal (a shard's row is newer than DST's), then
    remove the parts; returns how many rows came in. Killed in between, the next run merges the
    same rows again."""
    parts = shard_parts(dst)
    count = 0
    for _, folder in parts:
        for rel, row in read_journal(folder / JOURNAL).items():
            journal.rows[rel] = row
            count += 1
    if parts:
        journal.rewrite_open()
        remove_parts(dst)
    return count


def _align_in_processes(src: Path, dst: Path, config: AlignConfig, detector: FaceDetector | None, progress: bool,
                        only: set[str] | None, restart: bool) -> dict:
    """``config.workers`` shards side by side, each with its share of the cores: shards 2..N in
    processes of their own (``data_prep.shard_worker``), started first, and shard 1 in this process
    meanwhile (so its start-up, torch and MTCNN loading, overlaps theirs instead of preceding it);
    then the plain run that merges them (and aligns what a failed shard left). A failed shard is
    named; its work so far is kept."""
    count = config.workers
    one = replace(config, workers=1)
    check_separate(src, dst)
    if restart:  # move DST aside once, before any shard starts
        _lock_whole(dst).release()
        if dst.exists():
            move_aside(dst)
    threads = max(1, (os.cpu_count() or 1) // count)
    processes = []
    for k in range(2, count + 1):
        spec = {"src": str(src), "dst": str(dst), "config": to_dict(one), "shard": k, "count": count,
                "threads": threads, "progress": False, "only": sorted(only) if only is not None else None}
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        processes.append((k, subprocess.Popen([sys.executable, "-m", "data_prep.shard_worker", json.dumps(spec)],
                                              env=env)))
    try:
        with _torch_threads(threads):
            align_tree(src, dst, one, detector, progress, only, shard=Shard(1, count))
    finally:  # also when shard 1 failed: the others finish (or fail) on their own, and are waited for
        codes = [(k, process.wait()) for k, process in processes]
    failed = [f"shard {k}/{count} (exit code {code})" for k, code in codes if code != 0]
    if failed:
        raise AlignmentError(f"{', '.join(failed)} failed (see above); what the shards finished is kept: re-run "
                             "the same command to resume")
    return align_tree(src, dst, one, detector, progress, only)


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` inside the block (a shard's share of the cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _remove_gone(journal: Journal, listed: set[str], dst: Path) -> int:
    """Forget the rows of sources no longer under SRC and delete their crops; returns how many."""
    gone = [rel for rel in journal.rows if rel not in listed]
    for rel in gone:
        row = journal.rows.pop(rel)
        if row["dst"]:
            (dst / row["dst"]).unlink(missing_ok=True)
    if gone:
        journal.rewrite_open()
    return len(gone)


def _finish_one(
    source: Source,
    image: np.ndarray | UnreadableImageError,
    detections,
    supplied: dict[str, np.ndarray],
    config: AlignConfig,
    template: Template,
    dst: Path,
    fingerprint: tuple[str, str],
) -> dict[str, str]:
    """Choose the face, warp, write; return the manifest row (runs in a worker thread).

    A source that gets no crop this time loses any crop an earlier run made of an older version
    of it, so DST never holds a crop the manifest does not vouch for."""
    row = _align_one(source, image, detections, supplied, config, template, dst)
    row["src_bytes"], row["src_mtime_ns"] = fingerprint
    if not row["dst"]:
        (dst / source.dst_rel).unlink(missing_ok=True)
    return row


def _align_one(source, image, detections, supplied, config, template, dst) -> dict[str, str]:
    if isinstance(image, UnreadableImageError):
        return _row(source, "unreadable", image.reason)
    height, width = image.shape[:2]
    size = {"width": width, "height": height}
    given = supplied.get(source.rel)
    n_faces = len(detections) if detections is not None else 0
    if given is not None and config.landmarks_for == "all":
        return _warp_row(source, image, given, template, dst, config.ext, "ok", "supplied landmarks",
                         score="", n_faces=n_faces, **size)
    chosen = choose_face(detections, (height, width), config.policy) if detections is not None else None
    if chosen is None:
        if given is not None:
            return _warp_row(source, image, given, template, dst, config.ext, "fallback",
                             "no face detected; supplied landmarks", score="", n_faces=0, **size)
        reason = detections.note if detections is not None and detections.note else "no face detected"
        return _row(source, "no_face", reason, n_faces=0, **size)
    return _warp_row(source, image, detections.landmarks[chosen], template, dst, config.ext, "ok",
                     "" if n_faces == 1 else f"{n_faces} faces; chose by {config.policy}",
                     score=float(detections.scores[chosen]), n_faces=n_faces, **size)


def _warp_row(source, image, landmarks, template, dst, ext, status, reason, **values) -> dict[str, str]:
    matrix = similarity_transform(landmarks, template.points)
    _write_image_atomic(dst / source.dst_rel, warp_face(image, matrix, template), ext)
    row = _row(source, status, reason, residual=alignment_residual(landmarks, template), **values)
    row["dst"] = source.dst_rel
    row.update(_landmark_fields(landmarks))
    return row


def _apply_fallback(sources, journal: Journal, on_fail: str, template: Template, src: Path, dst: Path,
                    config: AlignConfig) -> dict:
    """Second pass for ``on_fail=center``: align no-face images with the mean detected landmarks."""
    if on_fail != "center":
        return {"applied": 0}
    detected = [journal.rows[s.rel] for s in sources
                if journal.rows[s.rel]["status"] == "ok" and journal.rows[s.rel]["score"] != ""]
    waiting = [s for s in sources if journal.rows[s.rel]["status"] == "no_face"
               or (journal.rows[s.rel]["status"] == "fallback" and "mean landmarks" in journal.rows[s.rel]["reason"])]
    if not detected:
        return {"applied": 0, "note": "no detected face to derive fallback landmarks from"}
    relative = np.stack([
        np.array([float(r[c]) for c in LANDMARK_COLUMNS]).reshape(5, 2)
        / np.array([float(r["width"]), float(r["height"])])
        for r in detected
    ])
    mean_relative = relative.mean(axis=0)
    reason = f"no face detected; mean landmarks of {len(detected)} detected faces"
    applied = 0
    for source in waiting:
        row = journal.rows[source.rel]
        width, height = float(row["width"]), float(row["height"])
        landmarks = np.round(mean_relative * np.array([width, height]), 4)
        wanted = _landmark_fields(landmarks)
        if row["status"] == "fallback" and all(row[c] == wanted[c] for c in LANDMARK_COLUMNS) \
                and row["reason"] == reason and (dst / row["dst"]).is_file():
            continue  # already done with the same mean
        image = read_rgb(src / source.rel)
        fallback_row = _warp_row(source, image, landmarks, template, dst, config.ext, "fallback", reason,
                                 score="", n_faces=0, width=int(width), height=int(height))
        fallback_row["src_bytes"], fallback_row["src_mtime_ns"] = row["src_bytes"], row["src_mtime_ns"]
        journal.append(fallback_row)
        applied += 1
    return {
        "applied_this_run": applied,
        "images": len(waiting),
        "mean_relative_landmarks": mean_relative.round(5).tolist(),
        "from_detected_faces": len(detected),
    }
