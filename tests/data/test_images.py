"""Reading any photo as uint8 RGB: modes, EXIF, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceverify.data.images import UnreadableImageError, read_rgb


def test_real_gray_pgm_and_rgba_png(faces_dir: Path):
    gray = read_rgb(faces_dir / "att_faces" / "s1" / "1.pgm")
    assert gray.shape == (112, 92, 3) and gray.dtype == np.uint8
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    rgba = read_rgb(faces_dir / "face_recognition_samples" / "tests" / "test_images" / "32bit.png")
    assert rgba.shape == (1200, 626, 3)


def test_alpha_is_composited_over_white(tmp_path: Path):
    pixels = np.zeros((4, 4, 4), np.uint8)
    pixels[..., 0] = 200
    pixels[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    out = read_rgb(tmp_path / "a.png")
    assert out[0, 0].tolist() == [200, 0, 0]
    assert out[3, 3].tolist() == [255, 255, 255]


def test_cmyk_palette_and_16_bit(tmp_path: Path):
    Image.new("CMYK", (5, 3), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    cmyk = read_rgb(tmp_path / "c.jpg")
    assert cmyk.shape == (3, 5, 3) and cmyk[1, 1, 0] > 200 and cmyk[1, 1, 1] < 60
    Image.new("P", (4, 4), 3).save(tmp_path / "p.gif")
    assert read_rgb(tmp_path / "p.gif").shape == (4, 4, 3)
    deep = Image.fromarray(np.full((3, 3), 65535, np.uint16))
    deep.save(tmp_path / "d.png")
    assert read_rgb(tmp_path / "d.png")[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied(tmp_path: Path):
    pixels = np.zeros((10, 20, 3), np.uint8)  # wide image
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert read_rgb(tmp_path / "r.jpg").shape == (20, 10, 3)


def test_bad_files_raise_unreadable_with_a_reason(tmp_path: Path, faces_dir: Path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image at all")
    whole = (faces_dir / "facenet_pytorch_samples" / "multiface.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    for name, fragment in [("zero.jpg", "zero-byte"), ("text.jpg", "not a recognised image"),
                           ("cut.jpg", "truncated")]:
        with pytest.raises(UnreadableImageError, match=fragment) as info:
            read_rgb(tmp_path / name)
        assert info.value.path.name == name
    with pytest.raises(FileNotFoundError):
        read_rgb(tmp_path / "absent.jpg")
