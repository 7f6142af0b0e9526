#!/usr/bin/env bash
# Epoch time and training images/s of every zoo model on full CIFAR-10 (JPEG), 2 epochs each
# (the first includes graph tracing). Run on an idle machine. Prints one line per model.
#   tools/release/measure_epoch_time.sh [DATA] [OUT]
set -euo pipefail
DATA=${1:-../shared/datasets/cifar10-jpeg.zip}
OUT=${2:-runs/timing}
EDGECLS=${EDGECLS:-.venv/bin/edgecls}
PY=${PY:-.venv/bin/python}
for arch in seed_cnn resnet8 mobilenet_tiny; do
  rm -rf "$OUT/$arch" "$OUT/$arch.partial"
  "$EDGECLS" -q train --data "$DATA" --arch "$arch" --epochs 2 --out "$OUT/$arch" --verbose 0 > /dev/null
  "$PY" - "$OUT/$arch/train.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
h = m["history"]
print(f"{m['arch']:<16} epoch 1 {h[0]['epoch_time_s']:7.1f} s  epoch 2 {h[1]['epoch_time_s']:7.1f} s  "
      f"train images/s (epoch 2) {h[1]['images_per_s']:8.1f}  train images {m['split']['train']}  device {m['device']}")
PY
done
