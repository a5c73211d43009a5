"""Running a command where a folder is really read-only, also when the tests run as root.

Root ignores file permissions through its capabilities, so a ``chmod 555`` folder stops nobody
there. As root the command therefore runs through util-linux's ``setpriv`` without the
capabilities that bypass permission checks (``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``,
``CAP_FOWNER``): still uid 0, so it reads the checkout and the virtual environment wherever they
are, but a read-only folder is read-only to it. Other users run the command as they are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def make_read_only(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m faceverify.cli ARGS`` without permission-bypassing capabilities."""
    command = [sys.executable, "-m", "faceverify.cli", *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise RuntimeError("running as root without util-linux's setpriv: cannot drop the capabilities "
                               "that bypass permissions, so a read-only folder cannot be tested")
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", *command]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
