"""Shared fixtures. Data-dependent tests read ``$FACEVERIFY_DATA``.

On a developer machine without the data they skip with a message saying how to enable them.
CI sets ``FACEVERIFY_REQUIRE_DATA=1`` (see ``.ci/run``): then missing data is a failure, and
any skipped test at all turns the run red, because a green run that skipped tests is not green.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REQUIRE_DATA = os.environ.get("FACEVERIFY_REQUIRE_DATA") == "1"
ENABLE_HINT = "set FACEVERIFY_DATA to the shared data folder (e.g. FACEVERIFY_DATA=../shared/data) to run it"


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        message = f"{what} not found at {path}; {ENABLE_HINT}"
        if REQUIRE_DATA:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def data_root() -> Path:
    value = os.environ.get("FACEVERIFY_DATA")
    if not value:
        message = f"this test needs real data; {ENABLE_HINT}"
        if REQUIRE_DATA:
            pytest.fail(message)
        pytest.skip(message)
    return _need(Path(value).resolve(), "FACEVERIFY_DATA folder")


@pytest.fixture(scope="session")
def lfw_dir(data_root: Path) -> Path:
    return _need(data_root / "lfw", "LFW protocol folder")


@pytest.fixture(scope="session")
def lfw_images(lfw_dir: Path) -> Path:
    return _need(lfw_dir / "lfw-deepfunneled", "LFW deep-funneled images")


@pytest.fixture(scope="session")
def faces_dir(data_root: Path) -> Path:
    return _need(data_root / "faces", "small face sets")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not REQUIRE_DATA:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped:
        if reporter:
            reporter.write_line(f"FACEVERIFY_REQUIRE_DATA=1: {skipped} test(s) skipped; failing the run")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
