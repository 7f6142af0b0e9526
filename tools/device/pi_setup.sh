#!/bin/sh
# Set up edgecls's runtime on a Raspberry Pi (Raspberry Pi OS Bookworm 64-bit, Python 3.11).
# Run it ON the Pi, from a copy of this repository:
#
#   git clone <this repository> edgecls && cd edgecls && tools/device/pi_setup.sh
#
# It installs only the runtime (numpy, Pillow, ai-edge-litert, onnxruntime; no TensorFlow) into a
# virtualenv (default ~/.venvs/edgecls, or $EDGECLS_VENV), then checks it on the shipped model.
# Afterwards, from the workstation:
#
#   edgecls bench models/resnet8 --host pi@raspberrypi.local \
#       --remote-python '~/.venvs/edgecls/bin/python' --out pi.json    (quote the ~: it is the Pi's)
set -eu
cd "$(dirname "$0")/../.."
VENV=${EDGECLS_VENV:-$HOME/.venvs/edgecls}
PYTHON=${PYTHON:-python3}

arch=$(uname -m)
if [ "$arch" != aarch64 ] && [ -z "${EDGECLS_PI_SETUP_ANY_ARCH:-}" ]; then
    if [ "$arch" = armv7l ] || [ "$arch" = armv6l ]; then
        echo "pi_setup: this is 32-bit Raspberry Pi OS ($arch): LiteRT publishes no 32-bit ARM wheels." >&2
        echo "pi_setup: flash the 64-bit Raspberry Pi OS (any Pi 3, 4, 5 or Zero 2 W runs it) and run this again." >&2
    else
        echo "pi_setup: expected a 64-bit Raspberry Pi (aarch64), this is $arch (set EDGECLS_PI_SETUP_ANY_ARCH=1 to go on)" >&2
    fi
    exit 1
fi
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "pi_setup: edgecls needs Python 3.10 or newer")'
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    echo "pi_setup: installing python3-venv (sudo apt-get)" >&2
    sudo apt-get install -y python3-venv
fi

echo "pi_setup: creating $VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# Only the runtime extra, at the versions the project pins.
"$VENV/bin/python" -m pip install --quiet -c constraints.txt ".[runtime]"
if "$VENV/bin/python" -m pip freeze | grep -qiE '^(tensorflow|tf-keras|keras)=='; then
    echo "pi_setup: TensorFlow got installed into the runtime environment; please report this" >&2
    exit 1
fi

echo "pi_setup: checking the runtime"
"$VENV/bin/python" -c 'import edgecls.runtime, edgecls.bench; print("edgecls", edgecls.__version__, "runtime ok")'
MODEL=${EDGECLS_CHECK_MODEL:-models/resnet8}
if [ -f "$MODEL/manifest.json" ]; then
    "$VENV/bin/edgecls" bench "$MODEL" --variants tflite_int8 --runs 50 --max-images 200 --out "${TMPDIR:-/tmp}/edgecls-pi-check.json"
fi
echo "pi_setup: done. Remote Python for 'edgecls bench --host': $VENV/bin/python"
