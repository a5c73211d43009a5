"""MTCNN on real photos: the face policies, no-face images, gray and RGBA input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_prep.detect import Detections, FaceDetector, choose_face
from faceverify.data.images import read_rgb


def centre_of(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def test_multiface_photo_policies(faces_dir: Path, detector: FaceDetector):
    image = read_rgb(faces_dir / "facenet_pytorch_samples" / "multiface.jpg")
    found = detector.detect([image])[0]
    assert len(found) == 6
    height, width = image.shape[:2]
    # brute force: distances of every box centre to the image centre, areas of every box
    distances = [np.linalg.norm(centre_of(b) - [width / 2, height / 2]) for b in found.boxes]
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in found.boxes]
    centre = choose_face(found, (height, width), "center")
    assert centre == int(np.argmin(distances))
    # the face just right of and above the centre of this 1200x630 photo
    assert 620 < found.boxes[centre][0] < 640 and 190 < found.boxes[centre][1] < 210
    largest = choose_face(found, (height, width), "largest")
    assert largest == int(np.argmax(areas))
    assert found.boxes[largest][0] > 850 and found.boxes[largest][1] > 430  # bottom-right face
    assert choose_face(found, (height, width), "most-confident") == int(np.argmax(found.scores))


def test_centre_policy_follows_the_face_a_crop_is_centred_on(faces_dir: Path, detector: FaceDetector):
    image = read_rgb(faces_dir / "facenet_pytorch_samples" / "multiface.jpg")
    found = detector.detect([image])[0]
    for box in found.boxes:
        cx, cy = centre_of(box).round().astype(int)
        half = 260
        x0, y0 = max(cx - half, 0), max(cy - half, 0)
        crop = np.ascontiguousarray(image[y0 : cy + half, x0 : cx + half])
        in_crop = detector.detect([crop])[0]
        chosen = choose_face(in_crop, crop.shape[:2], "center")
        # the chosen face in the crop is this face, mapped back to the full photo
        np.testing.assert_allclose(centre_of(in_crop.boxes[chosen]) + [x0, y0], centre_of(box), atol=12)


def test_near_ties_go_to_the_larger_face():
    boxes = np.array([[40, 40, 60, 60], [38, 35, 68, 70], [0, 0, 5, 5]], dtype=float)
    found = Detections(boxes, np.array([0.9, 0.8, 0.99]), np.zeros((3, 5, 2)))
    assert choose_face(found, (100, 100), "center") == 1
    assert choose_face(found, (100, 100), "center", near_tie=0.0) == 0
    assert choose_face(Detections.empty(), (100, 100)) is None
    with pytest.raises(ValueError, match="valid: center, largest, most-confident"):
        choose_face(found, (100, 100), "biggest")


@pytest.mark.parametrize("relpath", ["facenet_pytorch_samples/test_images/noise/1.jpg", "dlib_faces/dogs.jpg"])
def test_images_without_a_human_face(faces_dir: Path, detector: FaceDetector, relpath: str):
    assert len(detector.detect([read_rgb(faces_dir / relpath)])[0]) == 0


def test_batches_of_mixed_sizes_and_large_photos(faces_dir: Path):
    small_side = FaceDetector("cpu", max_side=400)
    images = [
        read_rgb(faces_dir / "att_faces" / "s1" / "1.pgm"),
        read_rgb(faces_dir / "face_recognition_samples" / "tests" / "test_images" / "32bit.png"),
        read_rgb(faces_dir / "att_faces" / "s2" / "1.pgm"),
    ]
    found = small_side.detect(images)
    assert [len(f) for f in found] == [1, 1, 1]
    # the RGBA photo (1200 px high) was detected at 400 px and mapped back to full resolution
    full = FaceDetector("cpu").detect([images[1]])[0]
    face_width = full.boxes[0][2] - full.boxes[0][0]
    # within 4% of the face width (the detector saw a third of the pixels)
    np.testing.assert_allclose(found[1].landmarks[0], full.landmarks[0], atol=0.04 * face_width)


def test_a_photo_detects_the_same_whatever_its_batch_holds(lfw_images: Path):
    """The same landmarks, bit for bit, for a photo batched with any others at any position: what
    makes a sharded or resumed alignment equal an unsharded one. One torch thread, as each shard
    process has on 2 cores; on an AVX-512/AMX Xeon the R-/O-nets' float32 rows moved by 1.5e-5 px
    with the number of boxes until they were scored in fixed chunks."""
    import torch

    names = ["Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0002.jpg",
             "Abdoulaye_Wade/Abdoulaye_Wade_0003.jpg", "Abel_Pacheco/Abel_Pacheco_0001.jpg",
             "Aaron_Sorkin/Aaron_Sorkin_0001.jpg"]
    photos = [read_rgb(lfw_images / name) for name in names]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        detector = FaceDetector(device="cpu")
        alone = detector.detect([photos[0]])[0].landmarks
        for batch, at in (([0, 1], 0), ([0, 2], 0), ([1, 0], 1), ([2, 3, 0], 2), ([4, 0, 1], 1),
                          ([3, 2, 1, 4, 0], 4)):
            found = detector.detect([photos[i] for i in batch])[at].landmarks
            assert np.array_equal(found, alone), (batch, float(np.abs(found - alone).max()))
    finally:
        torch.set_num_threads(threads)
