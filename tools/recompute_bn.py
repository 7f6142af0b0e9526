"""Recompute a trained model's BatchNorm statistics with one pass over its training stream and
report test top-1 before and after (what `edgecls train --swa-epochs` does for the averaged
weights). Writes nothing unless --save is given.

    python tools/recompute_bn.py runs/ship/resnet8_c2 --data ../shared/datasets/cifar10-jpeg.zip
    python tools/recompute_bn.py runs/ship/resnet8_c2 --data ../shared/datasets/cifar10-jpeg.zip --plain

--plain feeds the unaugmented training images instead of the augmented stream (padded crops and
flips, as in training): the comparison that showed why the pass must see augmented images.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edgecls.data import load_dataset  # noqa: E402
from edgecls.data.pipeline import make_dataset  # noqa: E402
from edgecls.modelio import load_trained, save_model_file  # noqa: E402
from edgecls.swa import recompute_batch_norm  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="an 'edgecls train' directory")
    ap.add_argument("--data", required=True)
    ap.add_argument("--plain", action="store_true", help="unaugmented training images (for comparison)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--save", help="write the model with the recomputed statistics to this .keras file")
    args = ap.parse_args()

    trained = load_trained(args.model)
    model, spec = trained.model, trained.preprocessing
    data = load_dataset(args.data, image_size=spec.input_size)
    x, y = spec.apply(data.test.images), data.test.labels

    def top1():
        return float((model.predict(x, batch_size=500, verbose=0).argmax(1) == y).mean())

    before = top1()
    stream = make_dataset(data.train.images, data.train.labels, spec, 128, data.num_classes, training=True,
                          augment=not args.plain, seed=args.seed, cache=False)
    seen = recompute_batch_norm(model, stream)
    after = top1()
    print(f"{args.model}: test top-1 {before:.4f} with its own BatchNorm statistics, {after:.4f} after one pass "
          f"over {seen} {'plain' if args.plain else 'augmented'} training images ({len(y)} test images of {args.data})")
    if args.save:
        save_model_file(model, args.save)
        print(f"wrote {args.save}")
    return 0 if np.isfinite(after) else 1


if __name__ == "__main__":
    sys.exit(main())
