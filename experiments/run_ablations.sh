#!/usr/bin/env bash
# The committed cpu-profile ablations, one after the other, with their wall time recorded:
#   experiments/run_ablations.sh                     (both: the loss comparison, then the lambda sweep)
#   experiments/run_ablations.sh ablation_lfw_cpu    (one spec of experiments/configs)
# Needs work/lfw_aligned_112x96 (experiments/align_lfw.py). Resumable: re-running skips finished cells.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p results/ablation
[ -f results/ablation/wall_times.csv ] || echo "spec,commit,device,finished_utc,wall_seconds" > results/ablation/wall_times.csv
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(ablation_lfw_cpu ablation_lambda_cpu)
for spec in "${specs[@]}"; do
    start=$(date +%s)
    faceverify ablate "experiments/configs/$spec.yaml"
    device=$(python -c "from faceverify.provenance import device_description; print(device_description())")
    echo "$spec,$(git rev-parse --short=10 HEAD),\"$device\",$(date -u +%Y-%m-%dT%H:%M:%SZ),$(( $(date +%s) - start ))" \
        | tee -a results/ablation/wall_times.csv
done
