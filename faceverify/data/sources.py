"""Training data from wherever it is: a packed folder (``faceverify pack``) or a RecordIO folder.

Both datasets serve whole batches through ``__getitems__`` as ``(uint8 [B, H, W, 3], labels [B])``
and expose ``labels``, ``num_classes``, ``image_size``, ``fingerprint`` and ``describe()``, which
is all the trainer and the samplers use.
"""

from __future__ import annotations

from pathlib import Path

from faceverify.data.packed import PackedFaces
from faceverify.data.recordio import RecordFaces, is_recordio_folder


def open_training_data(source: str | Path, cache_dir: str | Path | None = None, encoded: bool = False,
                       progress: bool = True) -> PackedFaces | RecordFaces:
    """A :class:`PackedFaces` or :class:`RecordFaces` for ``source``; anything else is an error that
    says what a source must be. ``encoded`` (RecordIO only) serves JPEG bytes for GPU decoding."""
    if not source:
        raise ValueError("data.source is empty: point it at a folder written by `faceverify pack` or at a "
                         "RecordIO folder (train.rec, train.idx, property)")
    root = Path(source)
    if not root.is_dir():
        raise FileNotFoundError(f"data.source {root} does not exist")
    if is_recordio_folder(root):
        return RecordFaces(root, progress=progress, cache_dir=cache_dir, encoded=encoded)
    if encoded:
        raise ValueError(f"data.decode=gpu needs RecordIO data (JPEG records); {root} is a packed folder of raw "
                         "pixels, which needs no decoding")
    if (root / "meta.json").is_file():
        return PackedFaces(root)
    raise FileNotFoundError(f"data.source {root} is neither a packed folder (meta.json, images.u8) nor a "
                            "RecordIO folder (train.rec); pack an aligned tree with `faceverify pack` or "
                            "convert with `faceverify pack --from-rec`")
