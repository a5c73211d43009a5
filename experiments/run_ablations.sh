#!/usr/bin/env bash
# The committed cpu-profile ablations, one after the other, with their wall time recorded:
#   experiments/run_ablations.sh            (needs work/lfw_aligned_112x96: experiments/align_lfw.py)
# Resumable: re-running skips finished cells.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p results/ablation
[ -f results/ablation/wall_times.csv ] || echo "spec,commit,finished_utc,wall_seconds" > results/ablation/wall_times.csv
for spec in ablation_lfw_cpu ablation_lambda_cpu; do
    start=$(date +%s)
    faceverify ablate "experiments/configs/$spec.yaml"
    echo "$spec,$(git rev-parse --short=10 HEAD),$(date -u +%Y-%m-%dT%H:%M:%SZ),$(( $(date +%s) - start ))" \
        | tee -a results/ablation/wall_times.csv
done
