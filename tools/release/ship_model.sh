#!/bin/sh
# Turn a model trained with `edgecls train` on full CIFAR-10 into the shipped bundle models/<name>/
# and its measured benchmarks (docs/benchmarks/models/<name>/). Every number it writes comes from
# the commands below, on the real held-out images:
#
#   tools/release/ship_model.sh NAME TRAINED_DIR [export options...]
#   tools/release/ship_model.sh resnet8 runs/ship/resnet8 --prune-epochs 5 --qat-epochs 2
#
# STEPS=export or STEPS=bench runs only steps 1 or 2-5 (export while other work loads the machine;
# bench when it is idle: latency measured on a busy machine is not worth shipping).
#
# 1. export (every variant, validated on the 10,000 JPEG test images) into models/NAME/,
#    with model.keras and train.json from the training run beside the bundle;
# 2. bench at 1 thread (models/NAME/report.json) and at 2 threads, Keras row included, each variant
#    in REPEATS processes (default 5) taking turns, so one slow process does not rank the variants;
# 3. bench on the 1,017 lossless test images of the python-pickle subset;
# 4. edgecls report over the 1- and 2-thread runs (tables, HTML, PNG plots);
# 5. the BENCHMARKS.md table (tools/release/model_table.py).
set -eu
[ $# -ge 2 ] || { echo "usage: $0 NAME TRAINED_DIR [export options...]" >&2; exit 2; }
NAME=$1; TRAINED=$2; shift 2
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
E=${EDGECLS:-.venv/bin/edgecls}
PY=${PYTHON:-.venv/bin/python}
DATA=${CIFAR10_JPEG:-../shared/datasets/cifar10-jpeg.zip}
LOSSLESS=${CIFAR10_LOSSLESS:-../shared/datasets/cifar-10-batches-py-subset}
RUNS=${RUNS:-300}
REPEATS=${REPEATS:-5}
OUT=models/$NAME
DOCS=docs/benchmarks/models/$NAME
STAGE=runs/ship/$NAME-bundle
mkdir -p runs/ship "$DOCS"

STEPS=${STEPS:-all}
if [ "$STEPS" != bench ]; then
    if [ "$STEPS" != assemble ]; then
        echo "[1/5] export $TRAINED -> $STAGE"
        "$E" export "$TRAINED" --data "$DATA" --out "$STAGE" "$@"
    fi
    echo "[1/5] assemble $OUT"
    rm -rf "$OUT.new" && cp -r "$STAGE" "$OUT.new" && cp "$TRAINED/train.json" "$OUT.new/"
    # OMIT="variant ..." leaves validated variants out (manifest keeps their record under "omitted");
    # KERAS=0 leaves model.keras out. Both only to keep a bundle under 3 MB.
    for v in ${OMIT:-}; do
        "$PY" -c "import sys; from edgecls.bundle import omit_artifact; omit_artifact(sys.argv[1], sys.argv[2], 'left out of the shipped bundle to keep it under 3 MB; re-export with tools/release/ship_model.sh to get it')" "$OUT.new" "$v"
    done
    if [ "${KERAS:-1}" = 1 ]; then  # loaded uncompiled, so saved without optimizer state
        "$PY" -c "import sys; from edgecls.modelio import load_keras_model, save_model_file; save_model_file(load_keras_model(sys.argv[1]), sys.argv[2])" \
            "$TRAINED/model.keras" "$OUT.new/model.keras"
    fi
    rm -rf "$OUT" && mv "$OUT.new" "$OUT"
    du -sb "$OUT"
fi
[ "$STEPS" = all ] || [ "$STEPS" = bench ] || exit 0
if [ -f "$OUT/model.keras" ]; then KFLAG=--keras; else KFLAG="--keras $TRAINED/model.keras"; fi

echo "[2/5] bench at 1 and 2 threads on $DATA"
"$E" bench "$OUT" --data "$DATA" $KFLAG --threads 1 --runs "$RUNS" --repeats "$REPEATS" --out "$OUT/report.json" > /dev/null
"$E" bench "$OUT" --data "$DATA" $KFLAG --threads 2 --runs "$RUNS" --repeats "$REPEATS" --out "$DOCS/bench-2threads.json" > /dev/null
cp "$OUT/report.json" "$DOCS/bench-1thread.json"

echo "[3/5] accuracy on the lossless test images ($LOSSLESS)"
"$E" bench "$OUT" --data "$LOSSLESS" $KFLAG --threads 2 --runs 20 --out "$DOCS/bench-lossless.json" > /dev/null

echo "[4/5] report"
"$E" report "$DOCS/bench-1thread.json" "$DOCS/bench-2threads.json" --out "$DOCS/report" > /dev/null

echo "[5/5] table"
"$PY" tools/release/model_table.py "$DOCS" | tee "$DOCS/table.md"
du -sh "$OUT"
