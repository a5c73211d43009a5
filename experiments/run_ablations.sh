#!/usr/bin/env bash
# The committed cpu-profile ablations, one after the other, with their wall time recorded:
#   experiments/run_ablations.sh            (needs work/lfw_aligned_112x96: experiments/align_lfw.py)
# Resumable: re-running skips finished cells.
set -euo pipefail
cd "$(dirname "$0")/.."
for spec in ablation_lfw_cpu ablation_lambda_cpu; do
    start=$(date +%s)
    faceverify ablate "experiments/configs/$spec.yaml"
    echo "$spec: $(( $(date +%s) - start )) s wall" | tee -a "work/ablation_wall_times.txt"
done
