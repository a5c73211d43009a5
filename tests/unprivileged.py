"""Running a command where a folder is really read-only, also when the tests run as root.

Root ignores file permissions, so a ``chmod 555`` folder stops nobody there. As root the
command runs as the unprivileged user ``nobody`` (uid/gid 65534) instead; elsewhere it runs
as the current user. Its scratch folders must then be reachable by that user: make them with
:func:`shared_tmp`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

NOBODY = 65534


def shared_tmp() -> Path:
    """A fresh folder under the system temp dir that every user can enter and read."""
    path = Path(tempfile.mkdtemp(prefix="faceverify-ro-"))
    path.chmod(0o755)
    return path


def make_read_only(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)


def run_cli(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess:
    """``python -m faceverify.cli ARGS`` as an unprivileged user; returns the finished process.

    As root the switch goes through util-linux's ``setpriv`` (an interpreter installed under
    root's home, as pyenv does, still starts that way).
    """
    env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(home / "mpl"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "faceverify.cli", *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise RuntimeError("running as root without util-linux's setpriv: cannot drop privileges for this test")
        command = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
