"""RecordIO: the dmlc framing against a reference reader written from the spec, both insightface
layouts, split records, rebuilt indexes, corrupt and truncated files, and training from it."""

from __future__ import annotations

import io
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from faceverify.cli import main
from faceverify.data.packed import PackedFaces, collate_batch
from faceverify.data.recordio import (
    MAGIC,
    RecordIOError,
    RecordIOFolder,
    encode_image,
    encode_record,
    pack_ir,
    read_record,
    unpack_ir,
    write_recordio,
)
from faceverify.data.recordio_dataset import RecordFaces, decode_batch_on_gpu
from faceverify.data.samplers import ShuffledBatchSampler
from faceverify.data.transforms import fit_to_input

M = struct.pack("<I", MAGIC)


def reference_records(data: bytes) -> list[bytes]:
    """Every record of a RecordIO byte string, read the slow obvious way from the format's spec."""
    records, position, pending = [], 0, None
    while position < len(data):
        magic, lrec = struct.unpack_from("<II", data, position)
        assert magic == MAGIC
        flag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        payload = data[position + 8 : position + 8 + length]
        position += 8 + length + (4 - length % 4) % 4
        if flag == 0:
            records.append(payload)
        elif flag == 1:
            pending = payload
        elif flag == 2:
            pending += M + payload
        else:
            records.append(pending + M + payload)
            pending = None
    return records


PAYLOADS = [b"", b"a", b"abcd", M, M + M, b"12" + M + b"34", b"1234" + M, M + b"xyz", b"abcd" + M + b"efgh" + M + b"i",
            b"\x0a\x23\xd7\xce" * 5, bytes(range(256)) * 3]


def test_framing_matches_the_reference_reader_and_splits_at_aligned_magic_words():
    stream = b"".join(encode_record(p) for p in PAYLOADS)
    assert reference_records(stream) == PAYLOADS
    handle = io.BytesIO(stream)
    offset = 0
    for payload in PAYLOADS:
        assert read_record(handle, offset) == payload
        offset += len(encode_record(payload))
    # an aligned magic word splits the record into flagged parts; an unaligned one does not
    split = encode_record(b"abcd" + M + b"efgh")
    flags = [struct.unpack_from("<I", split, o)[0] >> 29 for o in (4, 4 + 8 + 4)]
    assert flags == [1, 3] and len(split) == 8 + 4 + 8 + 4
    assert struct.unpack_from("<I", encode_record(b"12" + M + b"34"), 4)[0] >> 29 == 0
    three = encode_record(M + M)  # parts of 0, 0 and 0 bytes: flags 1, 2, 3
    assert [struct.unpack_from("<I", three, 4 + 8 * i)[0] >> 29 for i in range(3)] == [1, 2, 3]


def test_irheader_scalar_and_vector_labels():
    header, image = unpack_ir(pack_ir(7.0, b"jpeg", 3, 4))
    assert (header.flag, header.label, header.id, header.id2, image) == (0, 7.0, 3, 4, b"jpeg")
    header, image = unpack_ir(pack_ir([12.0, 19.0], b"png"))
    assert header.flag == 2 and header.label.tolist() == [12.0, 19.0] and image == b"png"
    with pytest.raises(RecordIOError, match="too short"):
        unpack_ir(b"\x00" * 10, "x.rec", 5)


@pytest.mark.parametrize("layout", ["legacy", "builder"])
def test_both_layouts_round_trip_pixels_and_labels(tmp_path: Path, faces, layout: str):
    images, labels = faces
    write_recordio(tmp_path / "rec", images, labels, layout=layout, encoding="png", progress=False)
    folder = RecordIOFolder(tmp_path / "rec", progress=False, cache_dir=tmp_path / "cache")
    assert folder.layout == layout and len(folder) == 12 and folder.num_classes == 4
    assert folder.labels.tolist() == labels and folder.image_size == (112, 112)
    for i in (0, 5, 11):
        np.testing.assert_array_equal(folder.image(i), images[i])
    assert (tmp_path / "rec" / "property").read_text() == "4,112,112\n"
    raw = (tmp_path / "rec" / "train.rec").read_bytes()
    records = reference_records(raw)
    if layout == "legacy":  # header [N+1, N+1+C], images 1..N, then identity ranges [start, end)
        assert len(records) == 1 + 12 + 4
        assert unpack_ir(records[0])[0].label.tolist() == [13.0, 17.0]
        assert [unpack_ir(r)[0].label.tolist() for r in records[13:]] == [[1, 4], [4, 8], [8, 10], [10, 13]]
    else:
        assert len(records) == 12 and [unpack_ir(r)[0].label for r in records] == [float(v) for v in labels]
    # JPEG records (insightface's packs) decode close to the original
    write_recordio(tmp_path / "jpg", images, labels, layout=layout, progress=False)
    jpeg = RecordIOFolder(tmp_path / "jpg", progress=False, cache_dir=tmp_path / "cache").image(4)
    assert np.abs(jpeg.astype(int) - images[4].astype(int)).mean() < 3


def test_an_image_holding_the_magic_word_is_split_and_read_back(tmp_path: Path):
    picture = np.full((20, 20, 3), 77, np.uint8)
    png = encode_image(picture, "png")
    # PNG decoders ignore bytes after IEND: pad to a 4-byte boundary of the record, then two magic words
    pad = b"\0" * ((-(24 + len(png))) % 4)
    image = png + pad + M + b"tail" + M
    write_recordio(tmp_path / "rec", [image, png], [0, 1], layout="builder", progress=False)
    raw = (tmp_path / "rec" / "train.rec").read_bytes()
    flags = []
    position = 0
    while position < len(raw):
        magic, lrec = struct.unpack_from("<II", raw, position)
        flags.append(lrec >> 29)
        length = lrec & ((1 << 29) - 1)
        position += 8 + length + (-length % 4)
    assert flags == [1, 2, 3, 0]  # the first record in three parts, the second whole
    folder = RecordIOFolder(tmp_path / "rec", progress=False, cache_dir=tmp_path / "cache")
    assert folder.image_bytes(0) == image
    np.testing.assert_array_equal(folder.image(0), picture)
    assert folder.labels.tolist() == [0, 1]


def test_missing_index_is_rebuilt_or_refused(tmp_path: Path, faces):
    images, labels = faces
    write_recordio(tmp_path / "rec", images, labels, layout="legacy", encoding="png", progress=False)
    original = (tmp_path / "rec" / "train.idx").read_text()
    (tmp_path / "rec" / "train.idx").unlink()
    with pytest.raises(FileNotFoundError, match="no train.idx"):
        RecordIOFolder(tmp_path / "rec", rebuild_index=False, progress=False, cache_dir=tmp_path / "cache")
    folder = RecordIOFolder(tmp_path / "rec", progress=False, cache_dir=tmp_path / "cache")
    rebuilt = next((tmp_path / "cache").rglob("train.idx")).read_text()
    assert rebuilt == original and folder.labels.tolist() == labels
    assert not (tmp_path / "rec" / "train.idx").exists()  # the data folder is never written to


def test_corrupt_and_truncated_records_name_file_record_and_offset(tmp_path: Path, faces):
    images, labels = faces
    write_recordio(tmp_path / "rec", images, labels, layout="builder", encoding="png", progress=False)
    rec = tmp_path / "rec" / "train.rec"
    offsets = [int(line.split()[1]) for line in (tmp_path / "rec" / "train.idx").read_text().splitlines()]
    data = bytearray(rec.read_bytes())
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tmp_path / "rec", corrupt)
    data[offsets[5]] ^= 0xFF
    (corrupt / "train.rec").write_bytes(bytes(data))
    with pytest.raises(RecordIOError, match=rf"corrupt/train.rec: record 5 at byte {offsets[5]}: found 0x"):
        RecordIOFolder(corrupt, progress=False, cache_dir=tmp_path / "cache1")  # builder labels read every header
    truncated = tmp_path / "truncated"
    shutil.copytree(tmp_path / "rec", truncated)
    (truncated / "train.rec").write_bytes(rec.read_bytes()[: offsets[11] + 30])
    with pytest.raises(RecordIOError, match=r"record 11 at byte \d+: needs \d+ payload bytes.*truncated"):
        RecordIOFolder(truncated, progress=False, cache_dir=tmp_path / "cache2")
    (truncated / "train.idx").unlink()
    with pytest.raises(RecordIOError, match="record 11 at byte .*truncated"):
        RecordIOFolder(truncated, progress=False, cache_dir=tmp_path / "cache3")
    with pytest.raises(FileNotFoundError, match="no train.rec"):
        RecordIOFolder(tmp_path)


def test_labels_need_not_be_contiguous(tmp_path: Path, faces):
    images, labels = faces
    write_recordio(tmp_path / "rec", images, [10 + 3 * v for v in labels], layout="builder", encoding="png",
                   progress=False)
    folder = RecordIOFolder(tmp_path / "rec", progress=False, cache_dir=tmp_path / "cache")
    assert folder.labels.tolist() == labels and folder.label_values.tolist() == [10.0, 13.0, 16.0, 19.0]


def test_loader_workers_serve_the_same_batches_and_gpu_decoding_matches(tmp_path: Path, faces):
    images, labels = faces
    write_recordio(tmp_path / "rec", images, labels, layout="legacy", progress=False)
    dataset = RecordFaces(tmp_path / "rec", progress=False, cache_dir=tmp_path / "cache")
    batches = []
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_sampler=ShuffledBatchSampler(12, 4, seed=3), collate_fn=collate_batch,
                            num_workers=workers)
        batches.append([(x.clone(), y.clone()) for x, y, _ in loader])
    for (x0, y0), (x1, y1) in zip(*batches):
        assert torch.equal(x0, x1) and torch.equal(y0, y1) and x0.shape == (4, 112, 112, 3)
    encoded = RecordFaces(tmp_path / "rec", progress=False, cache_dir=tmp_path / "cache", encoded=True)
    payloads, _, _ = encoded.__getitems__([0, 7, 3])
    on_device = decode_batch_on_gpu(payloads, "cpu")  # the CUDA path, run on the CPU
    reference = torch.stack([dataset[i][0] for i in (0, 7, 3)])
    assert on_device.shape == reference.shape
    assert (on_device.int() - reference.int()).abs().float().mean() < 1.0


def test_pack_from_rec_keeps_record_order_and_labels(tmp_path: Path, faces):
    images, labels = faces
    write_recordio(tmp_path / "rec", images, labels, layout="legacy", encoding="png", progress=False)
    assert main(["pack", "--from-rec", str(tmp_path / "rec"), str(tmp_path / "packed")]) == 0
    packed = PackedFaces(tmp_path / "packed")
    assert np.load(tmp_path / "packed" / "labels.npy").tolist() == labels
    for i in (0, 6, 11):
        np.testing.assert_array_equal(packed[i][0].numpy(), images[i])
    assert main(["pack", "--from-rec", str(tmp_path / "rec"), str(tmp_path / "small"), "--min-images", "3",
                 "--size", "56x56"]) == 0
    small = PackedFaces(tmp_path / "small")
    assert len(small) == 10 and small.num_classes == 3 and small.image_size == (56, 56)


def test_the_112x96_template_crop_is_columns_8_to_103():
    batch = torch.arange(2 * 112 * 112 * 3, dtype=torch.int64).remainder(251).to(torch.uint8).reshape(2, 112, 112, 3)
    assert torch.equal(fit_to_input(batch, (112, 96)), batch[:, :, 8:104])
    big = torch.zeros(1, 224, 224, 3, dtype=torch.uint8)
    big[:, :, 16:208] = 200
    assert fit_to_input(big, (112, 96)).float().mean() == 200  # the scaled crop, then a 2x area resize
    with pytest.raises(ValueError, match="cannot feed a network taking 112x112"):
        fit_to_input(torch.zeros(1, 112, 96, 3, dtype=torch.uint8), (112, 112))


def test_training_on_recordio_112x112_with_a_112x96_network(tmp_path: Path, faces):
    from faceverify.training.trainer import train
    from tests.training.conftest import small_config

    images, labels = faces
    write_recordio(tmp_path / "rec", images, labels, layout="legacy", progress=False)
    config = small_config(tmp_path / "rec", tmp_path / "run", model={"input": "112x96", "width": 0.125},
                          data={"batch_size": 4, "workers": 0}, optim={"max_iters": 3, "milestones": [100]})
    result = train(config)
    assert result.step == 3
    from faceverify.training.checkpoint import load_checkpoint

    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["input_size"] == [112, 96] and state["config"]["data"]["source"] == str(tmp_path / "rec")
