#!/usr/bin/env bash
# Every GPU check of the trainer in one prepared script (run once per lease, on an NVIDIA GPU):
#   1. training images/s, bf16 + channels_last: sphere20 @ 112x96 (target >= 8,000 images/s)
#      and iresnet50 @ 112x112 (target >= 4,000 images/s), the full Trainer step;
#   2. loss forward+backward times against pytorch-metric-learning on the GPU (if installed);
#   3. a one-GPU torchrun smoke run of DDP over NCCL.
# Figures go to $OUT/gpu (on the device machine) or results/gpu (elsewhere), with the device named.
#   usage: experiments/gpu_check.sh            (needs torch with CUDA, numpy, PyYAML, tqdm,
#                                               scikit-learn, opencv, matplotlib, Pillow)
#   DEVICE=cpu QUICK=1 experiments/gpu_check.sh   checks the script itself on a CPU (gloo, tiny runs)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DEVICE="${DEVICE:-cuda}"
if [ "${QUICK:-0}" = 1 ]; then ITERS=2; WARMUP=1; BATCH=8; STEPS=4; N=256; else ITERS=40; WARMUP=15; BATCH=512; STEPS=50; N=4096; fi
RESULTS="${OUT:-results}/gpu"
[ "$DEVICE" = cuda ] || RESULTS="$(mktemp -d)/gpu"   # a CPU check of the script records nothing
mkdir -p "$RESULTS"
WORK="$(mktemp -d)"
if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$RESULTS/nvidia-smi.csv"
fi

echo "== 1. training throughput (bf16, channels_last)"
python experiments/bench_train.py --device "$DEVICE" --backbones sphere20,iresnet50 --batch-size "$BATCH" \
    --iters "$ITERS" --warmup "$WARMUP" --workers 12 --amp bf16 --channels-last --aligned '' --out "$RESULTS"

echo "== 2. losses on the GPU"
if [ "$DEVICE" != cuda ]; then
    echo "CPU check: loss benchmark skipped (experiments/bench_losses.py covers the CPU)"
elif python -c "import pytorch_metric_learning" 2>/dev/null; then
    python experiments/bench_losses.py --device cuda --out "$RESULTS"
else
    echo "pytorch-metric-learning not installed: loss comparison skipped" | tee "$RESULTS/losses_skipped.txt"
fi

echo "== 3. one-GPU torchrun (NCCL) smoke run"
python - "$WORK" "$N" <<'PY'
import sys, numpy as np
from pathlib import Path
from faceverify.data.packed import write_packed_array
n = int(sys.argv[2])
rng = np.random.default_rng(0)
write_packed_array(Path(sys.argv[1]) / "packed", rng.integers(0, 256, (n, 112, 96, 3), dtype=np.uint8),
                   np.arange(n) % (n // 8), [f"id{i}" for i in range(n // 8)])
PY
python -m torch.distributed.run --standalone --nproc_per_node 1 -m faceverify.cli train out="$WORK/ddp" \
    data.source="$WORK/packed" device="$DEVICE" amp=bf16 channels_last=true model.backbone=sphere20 \
    data.batch_size="$((BATCH < 256 ? BATCH : 256))" data.workers=8 optim.max_iters="$STEPS" log_every=10 \
    progress=false tensorboard=false "loss.terms={softmax: 1.0, center: 0.003}"
python - "$WORK/ddp/summary.json" "$RESULTS" "$DEVICE" "$STEPS" <<'PY'
import json, sys
from pathlib import Path
from faceverify.results import append_rows, csv_to_markdown, provenance
from faceverify.provenance import device_description
summary = json.loads(Path(sys.argv[1]).read_text())
expected = "nccl" if sys.argv[3] == "cuda" else "gloo"
assert summary["backend"] == expected and summary["step"] == int(sys.argv[4]), summary
row = {**provenance(device=device_description(sys.argv[3])), "check": f"torchrun --nproc_per_node 1, DDP over {expected}",
       "backend": summary["backend"], "world_size": summary["world_size"], "steps": summary["step"],
       "images_per_s": summary["images_per_second"], "final_total_loss": summary["last_values"]["total"]}
out = Path(sys.argv[2])
append_rows(out / "ddp.csv", [row])
csv_to_markdown(out / "ddp.csv", out / "ddp.md", "One-GPU torchrun smoke run",
                note="Produced by `experiments/gpu_check.sh`.")
print(row)
PY
rm -rf "$WORK"
echo "done: $RESULTS"
