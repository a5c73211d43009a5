"""``--help`` and usage errors answer without loading torch, OpenCV, scikit-learn or matplotlib
(they used to cost ~3 s and ~780 MB of imports first); measured by experiments/bench_cli_startup.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "cv2", "sklearn", "matplotlib", "facenet_pytorch", "scipy", "PIL", "numpy")


def test_help_and_usage_errors_of_every_command_load_no_heavy_library():
    code = textwrap.dedent(f"""
        import contextlib, io, json, sys
        from faceverify.cli import build_parser, main
        commands = sorted(build_parser()._subparsers._group_actions[0].choices)
        loaded = {{}}
        for argv in [["--help"], ["no-such-command"]] + [[c, "--help"] for c in commands] + \\
                [[c, "--no-such-flag"] for c in commands]:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                try:
                    status = main(argv)
                except SystemExit as stop:
                    status = stop.code
            loaded[" ".join(argv)] = [status, [m for m in {HEAVY!r} if m in sys.modules]]
        print(json.dumps({{"commands": commands, "loaded": loaded}}))
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"train", "align", "eval", "rec", "verify", "embed"} <= set(report["commands"])
    for argv, (status, modules) in report["loaded"].items():
        assert modules == [], f"faceverify {argv} loaded {modules}"
        assert status == (0 if argv.endswith("--help") else 2), argv
