#!/usr/bin/env bash
# The GPU proof (issue 27): every GPU figure from one device call of at most 9 minutes.
#   On the device machine, with the payload built here first (python experiments/gpu_payload.py):
#     experiments/gpu_proof.sh                  # CSVs to $OUT/gpu (or results/gpu where OUT is unset)
#   The same sections on this CPU, tiny, writing into a temporary folder (never into results/):
#     DEVICE=cpu QUICK=1 experiments/gpu_proof.sh
#   GPU_PROOF_SECONDS (default 500): the one deadline; GPU_PROOF_ONLY=1,3: run only those sections.
# The sections and their CSVs are described in experiments/gpu_proof.py. The payload's wheels
# (facenet-pytorch, pytorch-metric-learning: what the device image lacks) are installed into a
# temporary target; the checkout goes on PYTHONPATH; nothing else comes from outside.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${DEVICE:-cuda}"
PYTHON="${PYTHON:-python3}"
QUICK="${QUICK:-0}"
export PYTHONUNBUFFERED=1
if [ "$QUICK" = 1 ]; then
    PAYLOAD="${GPU_PAYLOAD:-$(mktemp -d)/payload}"
    [ -f "$PAYLOAD/payload.json" ] || "$PYTHON" experiments/gpu_payload.py --quick --out "$PAYLOAD" \
        ${GPU_PAYLOAD_WHEELS:+--wheels "$GPU_PAYLOAD_WHEELS"} ${GPU_PAYLOAD_WHEELS:---no-wheels}
else
    PAYLOAD="${GPU_PAYLOAD:-gpu_payload}"
fi
[ -f "$PAYLOAD/payload.json" ] || { echo "gpu_proof: no payload at $PAYLOAD; build it with python experiments/gpu_payload.py" >&2; exit 2; }
if [ "$DEVICE" = cuda ]; then
    RESULTS="${OUT:-results}/gpu"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
else
    RESULTS="$(mktemp -d)/gpu"   # a CPU check of the script records nothing
fi
if ! "$PYTHON" -c "import facenet_pytorch" 2>/dev/null; then
    ls "$PAYLOAD"/wheels/*.whl >/dev/null 2>&1 || { echo "gpu_proof: facenet_pytorch is missing and $PAYLOAD/wheels holds no wheels" >&2; exit 2; }
    SITE="$(mktemp -d)/site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$PAYLOAD"/wheels/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$RESULTS"
QUICK_FLAG=()
[ "$QUICK" = 1 ] && QUICK_FLAG=(--quick)
set +e
"$PYTHON" experiments/gpu_proof.py --device "$DEVICE" "${QUICK_FLAG[@]}" --payload "$PAYLOAD" --out "$RESULTS" \
    --seconds "${GPU_PROOF_SECONDS:-500}" --only "${GPU_PROOF_ONLY:-}" 2>&1 | tee "$RESULTS/proof.log"
status=${PIPESTATUS[0]}
echo "gpu_proof: figures in $RESULTS (exit $status)"
exit "$status"
