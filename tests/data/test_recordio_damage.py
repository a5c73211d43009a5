"""RecordIO packs damaged the ways real ones are: an undecodable record is skipped and counted
(train, pack --from-rec, GPU decoding) and a run stays exactly resumable; indexes, identity
ranges, labels and property files that disagree with the records are refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from faceverify.cli import main
from faceverify.data.packed import PackedFaces
from faceverify.data.recordio import (
    RecordIOError,
    RecordIOFolder,
    encode_image,
    encode_record,
    pack_ir,
    write_index,
    write_recordio,
)
from faceverify.data.recordio_dataset import RecordFaces, decode_batch_skipping
from faceverify.data.samplers import ShuffledBatchSampler

NOT_AN_IMAGE = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4  # a JPEG's first bytes, then noise


def damaged_pack(tmp_path: Path, faces, layout: str, bad: tuple[int, ...] = (2,), name: str = "rec") -> Path:
    """A pack of the 12 faces whose images ``bad`` (0-based) hold bytes no decoder reads."""
    images, labels = faces
    payloads = [NOT_AN_IMAGE if i in bad else encode_image(im, "jpg") for i, im in enumerate(images)]
    return write_recordio(tmp_path / name, payloads, labels, layout=layout, image_size=(112, 112), progress=False)


def write_raw_pack(out: Path, payloads: list[bytes], property_text: str | None = None) -> Path:
    """train.rec / train.idx from raw IR payloads (for forged headers)."""
    out.mkdir(parents=True)
    offsets, data = [], bytearray()
    for payload in payloads:
        offsets.append(len(data))
        data += encode_record(payload)
    (out / "train.rec").write_bytes(bytes(data))
    write_index(out / "train.idx", offsets)
    if property_text is not None:
        (out / "property").write_text(property_text)
    return out


@pytest.mark.parametrize("layout", ["legacy", "builder"])
def test_an_undecodable_record_is_skipped_in_the_batch_and_named(tmp_path: Path, faces, layout: str):
    rec = damaged_pack(tmp_path, faces, layout)
    dataset = RecordFaces(rec, progress=False, cache_dir=tmp_path / "cache")
    images, labels, skipped = dataset.__getitems__([0, 2, 5, 1])
    assert images.shape == (4, 112, 112, 3)  # the batch keeps its size
    assert [s["index"] for s in skipped] == [2]
    record = 3 if layout == "legacy" else 2  # legacy image records start at key 1
    assert skipped[0]["record"] == record and skipped[0]["label"] == 0.0
    assert "not a decodable image" in skipped[0]["reason"] and str(rec) not in skipped[0]["reason"]
    # image 2 (label 0) takes the batch's first good image of the same label: image 0
    assert torch.equal(images[1], images[0]) and labels.tolist() == [0, 0, 1, 0]
    _, _, clean = dataset.__getitems__([0, 1, 3])
    assert clean == []


def test_a_batch_with_no_good_image_is_an_error(tmp_path: Path, faces):
    rec = damaged_pack(tmp_path, faces, "builder", bad=(2, 5))
    dataset = RecordFaces(rec, progress=False, cache_dir=tmp_path / "cache")
    with pytest.raises(RecordIOError, match="no image of a batch of 2 decodes"):
        dataset.__getitems__([2, 5])


def test_training_goes_on_past_a_corrupt_record_counts_it_and_resumes_exactly(tmp_path: Path, faces):
    from faceverify.training.checkpoint import load_checkpoint
    from faceverify.training.trainer import train
    from tests.training.conftest import small_config

    rec = damaged_pack(tmp_path, faces, "legacy", bad=(2, 9))
    common = dict(deterministic=True, model={"input": "56x48", "width": 0.125},
                  data={"batch_size": 6, "workers": 0}, loss={"terms": {"softmax": 1.0, "center": 0.01}})
    straight = train(small_config(rec, tmp_path / "straight", optim={"max_iters": 8, "milestones": [100]}, **common))
    assert straight.step == 8
    summary = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert summary["skipped_count"] == 2
    assert [(s["index"], s["record"], s["label"]) for s in summary["skipped_records"]] == [(2, 3, 0.0), (9, 10, 3.0)]
    # 8 steps of 6 over 12 images = 4 epochs: each bad record met once per epoch
    assert [s["times"] for s in summary["skipped_records"]] == [4, 4]
    assert all("not a decodable image" in s["reason"] for s in summary["skipped_records"])
    assert not (tmp_path / ".recordio-cache").exists()  # labels cached in the user cache, not beside out

    train(small_config(rec, tmp_path / "split", optim={"max_iters": 3, "milestones": [100]}, **common))
    train(small_config(rec, tmp_path / "split", optim={"max_iters": 8, "milestones": [100]}, **common))
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert b["skipped_records"] == a["skipped_records"] == summary["skipped_records"]


def test_a_run_stops_when_more_than_its_share_of_records_is_damaged(tmp_path: Path, faces, monkeypatch):
    from faceverify.training import skipped as skipped_module
    from faceverify.training.trainer import train
    from tests.training.conftest import small_config

    monkeypatch.setattr(skipped_module, "MIN_SKIPPED_LIMIT", 1)
    rec = damaged_pack(tmp_path, faces, "builder", bad=(2, 5, 9))
    config = small_config(rec, tmp_path / "run", model={"input": "56x48", "width": 0.125},
                          data={"batch_size": 12, "workers": 0}, optim={"max_iters": 2, "milestones": [100]})
    with pytest.raises(RecordIOError, match=r"3 records of .* could not be decoded, more than 1: .*rec check"):
        train(config)


def test_gpu_decoding_skips_a_payload_it_cannot_decode(tmp_path: Path, faces):
    images, _ = faces
    payloads = [encode_image(images[0]), NOT_AN_IMAGE, encode_image(images[4]), encode_image(images[5])]
    decoded, labels, failed = decode_batch_skipping(payloads, torch.tensor([0, 1, 1, 1]), "cpu", (112, 112))
    assert [p for p, _ in failed] == [1] and "not a decodable image" in failed[0][1]
    assert labels.tolist() == [0, 1, 1, 1] and torch.equal(decoded[1], decoded[2])  # same label's first good one
    clean, same_labels, none = decode_batch_skipping(payloads[:1] + payloads[2:], torch.tensor([0, 1, 1]), "cpu",
                                                     (112, 112))
    assert none == [] and clean.shape == (3, 112, 112, 3) and same_labels.tolist() == [0, 1, 1]
    encoded = RecordFaces(damaged_pack(tmp_path, faces, "builder"), progress=False, cache_dir=tmp_path / "c",
                          encoded=True)
    batch, _, _ = encoded.__getitems__([1, 2, 3])
    assert batch.indices == [1, 2, 3] and batch.keys == [1, 2, 3] and batch[1] == NOT_AN_IMAGE


def test_pack_from_rec_skips_and_lists_undecodable_records(tmp_path: Path, faces, capsys):
    images, labels = faces
    rec = damaged_pack(tmp_path, faces, "legacy", bad=(2, 7, 8))  # 7 and 8: all of identity 2
    assert main(["pack", "--from-rec", str(rec), str(tmp_path / "packed")]) == 0
    assert "skipped 3 undecodable record(s)" in capsys.readouterr().out
    packed = PackedFaces(tmp_path / "packed")
    meta = json.loads((tmp_path / "packed" / "meta.json").read_text())
    assert [(s["index"], s["record"], s["label"]) for s in meta["skipped_records"]] == [
        (2, 3, 0.0), (7, 8, 2.0), (8, 9, 2.0)]
    assert meta["left_out_images"]["undecodable"] == 3
    assert len(packed) == 9 and packed.num_classes == 3 and meta["identities"] == ["0", "1", "3"]
    kept = [i for i in range(12) if i not in (2, 7, 8)]
    assert np.load(tmp_path / "packed" / "labels.npy").tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert (tmp_path / "packed" / "images.u8").stat().st_size == 9 * 112 * 112 * 3
    for row, i in enumerate(kept):
        difference = np.abs(packed[row][0].numpy().astype(int) - images[i].astype(int)).mean()
        assert difference < 3  # the JPEG of image i, in record order
    assert labels[kept[-1]] == 3


def test_indexes_that_disagree_with_the_file_are_refused(tmp_path: Path, faces):
    images, labels = faces
    rec = write_recordio(tmp_path / "rec", images, labels, layout="builder", encoding="png", progress=False)
    lines = (rec / "train.idx").read_text().splitlines()

    duplicate = tmp_path / "duplicate"
    shutil.copytree(rec, duplicate)
    (duplicate / "train.idx").write_text("\n".join(lines[:5] + [lines[3]] + lines[5:]) + "\n")
    with pytest.raises(RecordIOError, match=r"train.idx line 6: key 3 again \(first on line 4\)"):
        RecordIOFolder(duplicate, progress=False, cache_dir=tmp_path / "c1")

    past_end = tmp_path / "past_end"
    shutil.copytree(rec, past_end)
    size = (rec / "train.rec").stat().st_size
    (past_end / "train.idx").write_text("\n".join(lines[:-1] + [f"11\t{size + 4096}"]) + "\n")
    with pytest.raises(RecordIOError, match=rf"record 11 at byte {size + 4096}, past the end of the {size}-byte"):
        RecordIOFolder(past_end, progress=False, cache_dir=tmp_path / "c2")

    empty = tmp_path / "empty"
    shutil.copytree(rec, empty)
    (empty / "train.rec").write_bytes(b"")
    with pytest.raises(RecordIOError, match=r"train.rec is empty \(0 bytes\)"):
        RecordIOFolder(empty, progress=False, cache_dir=tmp_path / "c3")
    (empty / "train.idx").unlink()
    with pytest.raises(RecordIOError, match="empty"):
        RecordIOFolder(empty, progress=False, cache_dir=tmp_path / "c4")


def test_a_property_file_that_disagrees_with_the_records_is_refused(tmp_path: Path, faces):
    images, labels = faces
    rec = write_recordio(tmp_path / "rec", images, labels, layout="legacy", encoding="png", progress=False)
    assert RecordIOFolder(rec, progress=False, cache_dir=tmp_path / "c0").image_size == (112, 112)
    (rec / "property").write_text("4,96,96\n")
    with pytest.raises(RecordIOError, match=r"property says 96x96 \(HxW\) crops, the records hold 112x112 images"):
        RecordIOFolder(rec, progress=False, cache_dir=tmp_path / "c1")
    (rec / "property").write_text("7,112,112\n")
    with pytest.raises(RecordIOError, match="property says 7 classes, the records hold 4 identities"):
        RecordIOFolder(rec, progress=False, cache_dir=tmp_path / "c2")
    (rec / "property").write_text("4,112,112\n")
    assert RecordIOFolder(rec, progress=False, cache_dir=tmp_path / "c3").num_classes == 4


def test_a_training_on_a_property_of_another_size_is_refused_before_a_step(tmp_path: Path, faces):
    from faceverify.training.trainer import train
    from tests.training.conftest import small_config

    images, labels = faces
    rec = write_recordio(tmp_path / "rec", images, labels, layout="builder", progress=False)
    (rec / "property").write_text("4,112,96\n")
    with pytest.raises(RecordIOError, match=r"112x96 \(HxW\) crops, the records hold 112x112"):
        train(small_config(rec, tmp_path / "run", data={"batch_size": 4, "workers": 0}))
    assert not (tmp_path / "run" / "checkpoints").exists()


def _legacy(tmp_path: Path, faces, ranges: list[tuple[int, int]], name: str) -> Path:
    images, _ = faces
    n = len(images)
    payloads = [pack_ir([n + 1, n + 1 + len(ranges)], b"")]
    payloads += [pack_ir([0.0, float(i)], encode_image(im, "png")) for i, im in enumerate(images)]
    payloads += [pack_ir([float(a), float(b)], b"") for a, b in ranges]
    return write_raw_pack(tmp_path / name, payloads)


def test_legacy_identity_ranges_that_overlap_or_run_past_the_images_are_refused(tmp_path: Path, faces):
    good = _legacy(tmp_path, faces, [(1, 4), (4, 8), (8, 10), (10, 13)], "good")
    assert RecordIOFolder(good, progress=False, cache_dir=tmp_path / "c0").labels.tolist() == \
        [0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3]
    overlap = _legacy(tmp_path, faces, [(1, 5), (4, 8), (8, 10), (10, 13)], "overlap")
    with pytest.raises(RecordIOError, match=r"identity records 13 and 14 both claim image record 4 \(overlapping"):
        RecordIOFolder(overlap, progress=False, cache_dir=tmp_path / "c1")
    past = _legacy(tmp_path, faces, [(1, 4), (4, 8), (8, 10), (10, 20)], "past")
    with pytest.raises(RecordIOError, match=r"identity record 16 claims images \[10, 20\), outside the pack's images "
                                            r"1..12"):
        RecordIOFolder(past, progress=False, cache_dir=tmp_path / "c2")


@pytest.mark.parametrize("bad_label", [0.1, float("nan"), -1.0, float("inf")])
def test_builder_labels_that_are_not_whole_numbers_are_refused(tmp_path: Path, faces, bad_label: float):
    images, labels = faces
    values = [float(v) for v in labels]
    values[4] = bad_label
    payloads = [pack_ir(v, encode_image(im, "png")) for v, im in zip(values, images)]
    rec = write_raw_pack(tmp_path / "rec", payloads)
    with pytest.raises(RecordIOError, match=r"record 4 has label .*; identity labels are whole numbers >= 0"):
        RecordIOFolder(rec, progress=False, cache_dir=tmp_path / "c")


def test_loader_workers_report_the_same_skips(tmp_path: Path, faces):
    from torch.utils.data import DataLoader

    from faceverify.data.packed import collate_batch

    dataset = RecordFaces(damaged_pack(tmp_path, faces, "legacy", bad=(3,)), progress=False, cache_dir=tmp_path / "c")
    seen = []
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_sampler=ShuffledBatchSampler(12, 4, seed=1), collate_fn=collate_batch,
                            num_workers=workers)
        seen.append([(x.clone(), [s["index"] for s in skipped]) for x, _, skipped in loader])
    assert [s for _, s in seen[0]] == [s for _, s in seen[1]] and sum(len(s) for _, s in seen[0]) == 1
    for (x0, _), (x1, _) in zip(*seen):
        assert torch.equal(x0, x1)


def test_rec_check_passes_a_clean_pack(tmp_path: Path, faces, capsys):
    images, labels = faces
    rec = write_recordio(tmp_path / "rec", images, labels, layout="legacy", progress=False)
    assert main(["rec", "check", str(rec), "--out", str(tmp_path / "report.json")]) == 0
    out = capsys.readouterr().out
    assert "17 records, legacy layout, 12 images of 4 identities at 112x112" in out and "no defects" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] and report["defects"] == [] and report["images"] == 12


def test_rec_check_reports_every_defect_with_its_record(tmp_path: Path, faces, capsys):
    images, labels = faces
    rec = damaged_pack(tmp_path, faces, "builder", bad=(2, 9))
    lines = (rec / "train.idx").read_text().splitlines()
    offsets = [int(line.split()[1]) for line in lines]
    data = bytearray((rec / "train.rec").read_bytes())
    data[offsets[5] : offsets[5] + 4] = b"\0\0\0\0"  # record 5's magic word destroyed
    (rec / "train.rec").write_bytes(bytes(data))
    # line 5 names key 3 again; the line of key 7 is gone; property claims another size
    (rec / "train.idx").write_text("\n".join(lines[:4] + [f"3\t{offsets[3]}"] + lines[4:7] + lines[8:]) + "\n")
    (rec / "property").write_text("4,112,96\n")
    assert main(["rec", "check", str(rec), "--out", str(tmp_path / "report.json"), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    found = {(d["kind"], d["record"]) for d in report["defects"]}
    assert {("image", 2), ("image", 9), ("index", 3), ("index", 5)} <= found
    assert any(d["kind"] == "framing" and d["offset"] == offsets[5] for d in report["defects"])
    assert any(d["record"] == 5 and "corrupt header" in d["message"] for d in report["defects"])
    assert any(d["kind"] == "index" and d["offset"] == offsets[7] and "leaves out" in d["message"]
               for d in report["defects"])
    assert any(d["kind"] == "size" and "property file's size is 112x96" in d["message"] for d in report["defects"])
    assert "image: record 2" in out and "not a decodable image" in out and "defect(s):" in out
    assert (tmp_path / "report.json").is_file() and not (rec / "report.json").exists()


def test_rec_check_reports_forged_labels_and_ranges(tmp_path: Path, faces, capsys):
    legacy = _legacy(tmp_path, faces, [(1, 5), (4, 8), (9, 10), (10, 20)], "legacy")
    assert main(["rec", "check", str(legacy), "--out", str(tmp_path / "legacy.json")]) == 1
    defects = json.loads((tmp_path / "legacy.json").read_text())["defects"]
    messages = {(d["record"], d["message"]) for d in defects if d["kind"] == "range"}
    assert (14, "image record 4 also claimed by identity record 13 (overlapping ranges)") in messages
    assert (16, "identity range [10, 20) outside the images 1..12") in messages
    assert (8, "image record belongs to no identity range") in messages
    images, labels = faces
    values = [float(v) for v in labels]
    values[4], values[6] = 0.1, float("nan")
    builder = write_raw_pack(tmp_path / "builder", [pack_ir(v, encode_image(im, "png")) for v, im in zip(values, images)])
    assert main(["rec", "check", str(builder), "--out", str(tmp_path / "builder.json")]) == 1
    labels_bad = [d["record"] for d in json.loads((tmp_path / "builder.json").read_text())["defects"]
                  if d["kind"] == "label"]
    assert labels_bad == [4, 6]
    capsys.readouterr()
    assert main(["rec", "check", str(builder), "--out", str(builder / "r.json")]) == 2
    assert "inside the pack" in capsys.readouterr().err


@pytest.mark.slow
def test_two_gloo_processes_count_the_skipped_records_of_both_ranks(tmp_path: Path, faces):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    rec = damaged_pack(tmp_path, faces, "legacy", bad=(2, 9))
    overrides = [f"data.source={rec}", "model.backbone=sphere20", "model.width=0.125", "model.input=56x48",
                 "model.embedding_dim=32", "data.batch_size=6", "data.workers=0", "data.sampler=shuffle",
                 "optim.max_iters=4", "optim.lr=0.01", "progress=false", "tensorboard=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    summaries = []
    for name, launcher in (("one", [sys.executable, "-m", "faceverify.cli"]),
                           ("two", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                    "--master_port", "29541", "-m", "faceverify.cli"])):
        run = subprocess.run([*launcher, "train", f"out={tmp_path / name}", *overrides], cwd=repo,
                             capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 0, run.stderr
        summaries.append(json.loads((tmp_path / name / "summary.json").read_text()))
    for summary in summaries:  # 4 steps of 6 = 2 epochs of the 12 images: each bad record met twice
        assert [(s["record"], s["times"]) for s in summary["skipped_records"]] == [(3, 2), (10, 2)]
    assert summaries[1]["world_size"] == 2


def test_an_empty_train_rec_without_index_is_refused_and_caches_nothing(tmp_path: Path):
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "train.rec").write_bytes(b"")
    for _ in range(2):  # the same answer twice: no junk index was cached the first time
        with pytest.raises(RecordIOError, match=r"train.rec is empty \(0 bytes\)"):
            RecordIOFolder(tmp_path / "rec", progress=False, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_a_legacy_header_claiming_more_records_than_the_file_holds_says_so(tmp_path: Path, faces):
    images, labels = faces
    rec = write_recordio(tmp_path / "rec", images, labels, layout="legacy", encoding="png", progress=False)
    offsets = [int(line.split()[1]) for line in (rec / "train.idx").read_text().splitlines()]
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "train.rec").write_bytes((rec / "train.rec").read_bytes()[: offsets[14]])  # records 0..13 only
    with pytest.raises(RecordIOError, match=r"header record claims 12 images and 4 identities \(records 1..16\), but "
                                            r"the file holds records 0..13 only: a truncated train.rec"):
        RecordIOFolder(cut, progress=False, cache_dir=tmp_path / "cache")


def test_outputs_inside_a_recordio_folder_are_refused(tmp_path: Path, faces, capsys):
    images, labels = faces
    rec = write_recordio(tmp_path / "rec", images, labels, layout="builder", encoding="png", progress=False)
    before = sorted(p.name for p in rec.rglob("*"))
    for out in (rec / "sub", rec):
        assert main(["pack", "--from-rec", str(rec), str(out)]) == 2
        assert "lies in the RecordIO folder" in capsys.readouterr().err
    for out in (rec, rec / "run"):
        assert main(["reproduce", "casia_C_center", "--train", str(rec), "--out", str(out)]) == 2
        assert "lies in the training data" in capsys.readouterr().err
    assert sorted(p.name for p in rec.rglob("*")) == before
    # the trainer and pack cache labels in the user's cache, never beside their output
    assert main(["pack", "--from-rec", str(rec), str(tmp_path / "packed")]) == 0
    assert not (tmp_path / ".recordio-cache").exists()


def test_export_rec_refuses_an_unaligned_tree_and_an_existing_pack(mini_lfw, tmp_path: Path, faces, capsys):
    photos = tmp_path / "photos"  # LFW's 250x250 photos, no manifest: not crops
    shutil.copytree(mini_lfw.train_tree, photos)
    assert main(["export", "rec", str(photos), str(tmp_path / "rec")]) == 2
    assert "looks unaligned: its images are 250x250" in capsys.readouterr().err
    assert not (tmp_path / "rec").exists()
    crops = tmp_path / "crops"
    images, labels = faces
    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels)):
        (crops / f"p{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(crops / f"p{label}" / f"{i}.png")
    assert main(["export", "rec", str(crops), str(tmp_path / "rec")]) == 0  # 112x112 crops pass
    first = (tmp_path / "rec" / "train.rec").read_bytes()
    assert main(["export", "rec", str(crops), str(tmp_path / "rec"), "--layout", "builder"]) == 2
    assert "already holds a RecordIO pack" in capsys.readouterr().err
    assert (tmp_path / "rec" / "train.rec").read_bytes() == first
    assert main(["export", "rec", str(crops), str(tmp_path / "rec"), "--layout", "builder", "--force"]) == 0
    assert RecordIOFolder(tmp_path / "rec", progress=False, cache_dir=tmp_path / "c").layout == "builder"
