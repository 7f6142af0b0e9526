"""Outputs of every variant of a bundle on a set of images, for comparing two machines.

    python tools/device/arm64_outputs.py BUNDLE IMAGES.npy OUT.npz

Writes, per variant, the model's raw output tensor (int8 for an int8 model, float otherwise) and the
runtime's probabilities. Imports only edgecls.runtime (no TensorFlow): it runs in the arm64 userland.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(bundle: str, images_path: str, out: str) -> None:
    from edgecls import runtime
    from edgecls.bundle import load_bundle

    images = np.load(images_path)
    result, info = {}, {}
    for name in load_bundle(bundle).names():
        runner = runtime.load(bundle, variant=name, threads=1)
        raw = runner.backend.run(runner.preprocess(images), raw=True)
        result[f"{name}.raw"] = raw
        result[f"{name}.probs"] = runner.predict(images)
        info[name] = {"raw_dtype": str(raw.dtype), "backend": runner.backend.package}
    tmp = Path(out).with_suffix(".tmp.npz")
    np.savez(tmp, **result)
    tmp.replace(out)
    print(json.dumps(info))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
