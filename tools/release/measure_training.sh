#!/usr/bin/env bash
# Measure epoch time and images/s of every zoo model on full CIFAR-10 (JPEG), and train resnet8
# long enough to quote its test accuracy. Results: runs/full/<arch>/train.json.
#   tools/release/measure_training.sh [DATA] [RESNET8_EPOCHS]
set -euo pipefail
DATA=${1:-../shared/datasets/cifar10-jpeg.zip}
EPOCHS=${2:-30}
EDGECLS=${EDGECLS:-.venv/bin/edgecls}
for arch in seed_cnn mobilenet_tiny; do
  "$EDGECLS" train --data "$DATA" --arch "$arch" --epochs 2 --out "runs/full/$arch" --verbose 2 ${RESUME:+--resume}
done
"$EDGECLS" train --data "$DATA" --arch resnet8 --epochs "$EPOCHS" --out runs/full/resnet8 --verbose 2 ${RESUME:+--resume}
