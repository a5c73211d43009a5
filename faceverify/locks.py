"""One run per output: an exclusive lock on the folder a command writes.

Two ``faceverify train`` into one ``out`` would interleave ``metrics.jsonl`` and race on the
checkpoint's temporary file; two ``align`` into one DST, two ``ablate`` of one spec or two
``pack`` into one OUT the same. A command that writes a folder first takes
:func:`lock_output`: ``fcntl.flock`` on a lock file (``<folder>/.faceverify.lock``, or
``.<name>.lock`` beside an output that is published by a rename), non-blocking, so a second run
is refused at once with the holder's PID, host, start time and command line. The kernel drops
the lock when its process ends, however it ends, so a killed run never leaves a stale lock: the
file stays behind, but only a held ``flock`` counts.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from faceverify.errors import FaceverifyError

LOCK_NAME = ".faceverify.lock"


class OutputInUseError(FaceverifyError, OSError):
    """Another live process holds the output's lock; the message names it."""

    def __init__(self, message: str):
        super().__init__(errno.EBUSY, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class OutputLock:
    """A held lock on ``path`` (the lock file). ``release()`` (or leaving a ``with``) lets it go;
    so does the end of the process."""

    def __init__(self, path: Path, fd: int, folder: Path):
        self.path, self.folder = path, folder
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "OutputLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _holder(path: Path) -> dict:
    """What the holder wrote into the lock file (it may be writing it right now: retry briefly)."""
    for _ in range(20):
        try:
            text = path.read_text(encoding="utf-8")
            if text.strip():
                return json.loads(text)
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return {}


def lock_output(folder: str | Path, what: str = "run", beside: bool = False, shared: bool = False) -> OutputLock:
    """Take the exclusive lock of output ``folder`` (created if missing) or refuse at once.

    ``beside=True`` locks ``<parent>/.<name>.lock`` instead, for an output written under a
    temporary name and renamed into place (``pack``), which does not exist while it is written.
    ``shared=True`` takes a shared lock: any number of shared holders at once (the shards of one
    ``align``, each of which also locks its own folder exclusively), but none beside an exclusive
    one. A shared holder clears the file's record instead of writing its own (the shards' own locks
    hold theirs); refused, an exclusive request then names the holder as "?".

    Raises:
        OutputInUseError: another process holds it; the message names the holder's PID, host,
            start time and command.
    """
    folder = Path(folder)
    if beside:
        folder.parent.mkdir(parents=True, exist_ok=True)
        path = folder.parent / f".{folder.name}.lock"
    else:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = _holder(path)  # empty when shared holders have it (they clear the record)
        pid, host = holder.get("pid", "?"), holder.get("host", "?")
        elsewhere = " (another machine, on a shared file system)" if host not in ("?", socket.gethostname()) else ""
        raise OutputInUseError(
            f"{folder} is in use by another {holder.get('what', what)}: PID {pid} on {host}{elsewhere}, started "
            f"{holder.get('started', '?')} ({holder.get('command', '?')}); two runs into one output would "
            f"interleave their files. Wait for it to end, or choose another output") from None
    except BaseException:
        os.close(fd)
        raise
    if shared:  # no one record for many holders; an old exclusive holder's would mislead
        os.ftruncate(fd, 0)
        return OutputLock(path, fd, folder)
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv),
              "what": what}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
    return OutputLock(path, fd, folder)
