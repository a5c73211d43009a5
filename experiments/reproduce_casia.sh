#!/usr/bin/env bash
# Reproduce a CASIA-WebFace recipe end to end and append its LFW result to results/casia/.
#
#   experiments/reproduce_casia.sh RECIPE [CASIA_DIR] [NAMES_TXT]
#   e.g. experiments/reproduce_casia.sh casia_C_center ~/data/CASIA-WebFace ~/data/CASIA-WebFace/names.txt
#
# CASIA-WebFace layout: CASIA_DIR/<identity id>/<NNN>.jpg (494,414 images, 10,575 identities) and the
# release's names.txt ('<id> <name>' per line). LFW comes from $FACEVERIFY_DATA/lfw.
# Every step resumes: re-run the same command after an interruption.
# Expected time on one NVIDIA H200 (bf16): alignment ~1 h (MTCNN, GPU), 28K iterations of
# face_resnet27 at batch 256 well under an hour; on CPUs, days.
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE="${1:?usage: $0 RECIPE [CASIA_DIR] [NAMES_TXT]}"
CASIA="${2:-$HOME/data/CASIA-WebFace}"
NAMES="${3:-$CASIA/names.txt}"
: "${FACEVERIFY_DATA:?set FACEVERIFY_DATA to the folder holding lfw/}"
CONFIG="experiments/configs/$RECIPE.yaml"
[ -f "$CONFIG" ] || { echo "no recipe $CONFIG" >&2; exit 2; }
SIZE="$(grep -q 'casia_packed_112x112' "$CONFIG" && echo 112x112 || echo 112x96)"
PCA_DIM="${PCA_DIM:-0}"   # Wen et al. apply PCA to the concatenated features without giving the dimension

# 1. align CASIA-WebFace (training: images without a detected face are skipped, as in the paper)
faceverify align "$CASIA" "work/casia_aligned_$SIZE" --template "$SIZE" --purpose train
# 2. leave out the CASIA identities that are also in LFW, then pack
faceverify casia-overlap "$NAMES" --out "work/casia_lfw_overlap.txt"
[ -d "work/casia_packed_$SIZE" ] || faceverify pack "work/casia_aligned_$SIZE" "work/casia_packed_$SIZE" \
    --exclude-identities work/casia_lfw_overlap.txt --min-images 2
# 3. align LFW for testing (every image gets a crop: failures use the centre fallback)
faceverify align "$FACEVERIFY_DATA/lfw/lfw-deepfunneled" "work/lfw_aligned_$SIZE" --template "$SIZE" --purpose eval
# 4. train (resumes from runs/<recipe>/checkpoints/last.pt)
faceverify train "$CONFIG"
# 5. evaluate on LFW View 2: flip-concatenated features, optional PCA, cosine, 10 folds
OUTDIR="runs/$RECIPE/lfw_eval"
faceverify eval --checkpoint "runs/$RECIPE/checkpoints/last.pt" --lfw "work/lfw_aligned_$SIZE" \
    --pairs "$FACEVERIFY_DATA/lfw/pairs.txt" --out "$OUTDIR" --flip concat --pca "$PCA_DIM"
# 6. append the row to results/casia/casia.csv and regenerate the table
python experiments/record_casia.py "$RECIPE" "$OUTDIR/metrics.json"
