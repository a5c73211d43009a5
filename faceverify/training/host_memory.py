"""Keep the host memory a training step frees, so the next step does not fault it back in.

A step frees and re-allocates the same activation and gradient buffers every iteration. With
glibc's malloc, what happens to them depends on two thresholds that start at 128 KiB and move
with the process's history: a block above ``M_MMAP_THRESHOLD`` gets a fresh ``mmap`` (and an
``munmap`` when freed); free space above ``M_TRIM_THRESHOLD`` at the top of the heap goes back to
the kernel (``brk``). glibc raises both the first time a large mmapped block is freed, so
whether a training process keeps its buffers or hands them back and faults them in again, 4 KiB
at a time and zeroed by the kernel, depends on what it allocated before training began.

Measured (``experiments/bench_trainer.py``, ``cpu profile``: sphere20 x1/4 on 56x48, batch 128,
2 cores): the Trainer's backward pass took 4,800-5,400 minor page faults per step, its heap top
growing and trimmed by ``brk`` every step, against about 220 for an independent loop in its own
process; about 10 ms of system time in a 140 ms step, the Trainer's whole gap to that loop.

:func:`keep_freed_host_memory` fixes both thresholds for the process (``mallopt``):
``M_MMAP_THRESHOLD`` at glibc's ceiling of 32 MiB (larger blocks are always mmapped) and
``M_TRIM_THRESHOLD`` at 1 GiB, so the freed buffers stay with the process for the next step. The
cost is that the process keeps up to its peak heap between steps, which the next step needs
anyway. Setting either threshold switches glibc's adjustment off for good, so this cannot be
undone within the process; on a C library other than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest accepted value on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024

_applied = False


def keep_freed_host_memory() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (see the module docstring); returns
    whether they are set (False on other C libraries, or when ``mallopt`` refuses). Idempotent."""
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # the mmap threshold first: setting either one ends glibc's adjustment, and a trim threshold
    # alone would leave every block above 128 KiB to mmap and fault in afresh
    _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _applied
