from __future__ import annotations

import pytest

from data_prep.detect import FaceDetector


@pytest.fixture(scope="session")
def detector() -> FaceDetector:
    return FaceDetector("cpu")
