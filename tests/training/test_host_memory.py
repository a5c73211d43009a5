"""keep_freed_host_memory: a step's freed buffers are not trimmed and faulted back in (glibc).

Each case runs in a fresh process, since glibc's malloc state is per process and the setting
cannot be undone."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from faceverify.config import merge
from faceverify.errors import InvalidInputError
from faceverify.training.config import RESUME_NEUTRAL, TrainConfig

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's malloc thresholds: Linux with glibc only")

# The pattern that cost the Trainer ~5,000 faults a step, with glibc's own malloc (no torch, so the
# heap holds nothing else): one 4 MiB block freed early (glibc then raises its mmap threshold to
# ~4 MiB and its trim threshold to ~8 MiB), then every "step" takes eight ~4 MiB blocks from the
# heap top, writes them and frees them together: 32 MiB above the trim threshold.
STEPS = """
import ctypes, resource, sys
from faceverify.training.host_memory import keep_freed_host_memory
if sys.argv[1] == "keep":
    assert keep_freed_host_memory()
    assert keep_freed_host_memory()  # idempotent
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
MiB = 1 << 20

def written(size):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    return block

libc.free(written(4 * MiB))

def step():
    blocks = [written(4 * MiB - 4096) for _ in range(8)]
    for block in reversed(blocks):
        libc.free(block)

step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def faults_per_step(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def test_freed_buffers_stay_with_the_process_instead_of_faulting_back_in():
    default = faults_per_step("default")
    kept = faults_per_step("keep")
    # 32 MiB trimmed and written again is ~8,000 pages a step by default (8,152 measured); kept, none
    assert default > 6000, default
    assert kept < 100, kept


def test_the_setting_is_on_by_default_and_may_change_on_resume():
    assert TrainConfig().keep_host_memory is True
    assert merge(TrainConfig(), {"keep_host_memory": False}).keep_host_memory is False
    assert "keep_host_memory" in RESUME_NEUTRAL  # it changes speed only, never a result


def test_the_trainer_applies_it_when_asked(monkeypatch, tmp_path):
    import faceverify.training.trainer as trainer_module

    calls: list[bool] = []
    monkeypatch.setattr(trainer_module, "keep_freed_host_memory", lambda: calls.append(True) or True)
    config = merge(TrainConfig(), {"out": str(tmp_path / "run"), "device": "cpu", "keep_host_memory": False})
    with pytest.raises(InvalidInputError, match="data.source is empty"):  # setup stops after the allocator step
        trainer_module.Trainer(config)
    assert calls == []
    config = merge(config, {"keep_host_memory": True})
    with pytest.raises(InvalidInputError, match="data.source is empty"):
        trainer_module.Trainer(config)
    assert calls == [True]
