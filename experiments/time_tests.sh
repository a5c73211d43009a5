#!/usr/bin/env bash
# Time the README's second quick-start command (`make test`, what CI runs) on a fresh clone of this
# checkout and record it in results/benchmarks/test_suite.csv: setup (venv + install) and the tests.
#   experiments/time_tests.sh       (FACEVERIFY_DATA defaults to ../shared/data beside the checkout)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export FACEVERIFY_DATA="$(cd "${FACEVERIFY_DATA:-$ROOT/../shared/data}" && pwd)"
export FACEVERIFY_REQUIRE_DATA=1
WORK="$(mktemp -d)"
git clone -q "$ROOT" "$WORK/faceverify"
cd "$WORK/faceverify"
t0=$(date +%s.%N)
make setup
t1=$(date +%s.%N)
make test | tee "$WORK/pytest.log"
t2=$(date +%s.%N)
"$WORK/faceverify/.venv/bin/python" - "$t0" "$t1" "$t2" "$WORK/pytest.log" "$ROOT/results/benchmarks" <<'PY'
import re, sys
from pathlib import Path
from faceverify.results import append_rows, csv_to_markdown, provenance
t0, t1, t2 = (float(v) for v in sys.argv[1:4])
summary = Path(sys.argv[4]).read_text().strip().splitlines()[-1]
passed = re.search(r"(\d+) passed", summary)
row = {**provenance(), "command": "make test (fresh clone, FACEVERIFY_REQUIRE_DATA=1)", "tests_passed": int(passed.group(1)),
       "setup_seconds": t1 - t0, "test_seconds": t2 - t1, "total_seconds": t2 - t0, "pytest_summary": summary.strip("= ")}
out = Path(sys.argv[5])
append_rows(out / "test_suite.csv", [row])
csv_to_markdown(out / "test_suite.csv", out / "test_suite.md", "The test suite on a fresh clone",
                note="Produced by `experiments/time_tests.sh` on free cores (nothing else running).")
print(row)
PY
rm -rf "$WORK"
