"""Recompute a trained model's BatchNorm statistics with one pass over its training stream and
report test top-1 before and after (what `edgecls train --swa-epochs` does for the averaged
weights). Writes nothing unless --save is given.

    python experiments/recompute_bn.py runs/ship/resnet8_c2 --data ../shared/datasets/cifar10-jpeg.zip
    python experiments/recompute_bn.py runs/ship/resnet8_c2 --data ../shared/datasets/cifar10-jpeg.zip --plain

The augmented stream is the one the first run was trained on: padded crops and flips, plus the
cutout and CutMix its train.json records (`--cutout N` / `--cutmix P` override them). --plain feeds
the unaugmented training images instead: the comparison that showed why the pass must see
augmented images.

Given several runs of the same architecture (e.g. the ends of successive `--init` cycles), it
averages their weights first and recomputes the statistics of the average:

    python experiments/recompute_bn.py runs/ship/resnet8_cut runs/ship/resnet8_c6 --data ../shared/datasets/cifar10-jpeg.zip
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
from edgecls.modelio import load_trained, require_same_classes_and_inputs, save_model_file  # noqa: E402
from edgecls.errors import EdgeclsError  # noqa: E402
from edgecls.training.swa import mean_weights, recompute_batch_norm  # noqa: E402
from edgecls.modelio import read_run_record  # noqa: E402


def training_augmentation(about: dict) -> dict:
    """The cutout and CutMix settings a run's train.json records (0 when it predates them)."""
    config = about.get("config") or {}
    return {"cutout": int(config.get("cutout") or 0), "cutmix": float(config.get("cutmix") or 0.0)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="+", help="an 'edgecls train' directory; several: average their weights first")
    ap.add_argument("--data", required=True)
    ap.add_argument("--plain", action="store_true", help="unaugmented training images (for comparison)")
    ap.add_argument("--cutout", type=int, help="cutout square size in the pass (default: the run's own, from train.json)")
    ap.add_argument("--cutmix", type=float, help="CutMix probability in the pass (default: the run's own, from train.json)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--save", help="write the model with the recomputed statistics to this .keras file")
    args = ap.parse_args(argv)
    if args.cutout is not None and args.cutout < 0:
        ap.error(f"--cutout {args.cutout}: must be 0 (off) or a square size in pixels")
    if args.cutmix is not None and not 0.0 <= args.cutmix <= 1.0:
        ap.error(f"--cutmix {args.cutmix}: must be a probability in [0, 1]")
    if args.plain and (args.cutout or args.cutmix):
        ap.error("--plain feeds unaugmented images: drop --cutout/--cutmix, or drop --plain")

    try:
        runs = [load_trained(m) for m in args.model]
        augmentation = training_augmentation(read_run_record(args.model[0], "model"))
        require_same_classes_and_inputs(args.model, runs, "runs averaged together")
        if len(runs) > 1:
            runs[0].model.set_weights(mean_weights([r.model for r in runs]))
        data = load_dataset(args.data, image_size=runs[0].preprocessing.input_size)
    except EdgeclsError as e:
        print(f"recompute_bn: error: {e}", file=sys.stderr)
        return 2
    if args.plain:
        augmentation = {"cutout": 0, "cutmix": 0.0}
    else:  # the run's own, unless overridden
        augmentation.update({k: getattr(args, k) for k in augmentation if getattr(args, k) is not None})
    trained = runs[0]
    model, spec = trained.model, trained.preprocessing
    name = args.model[0] if len(runs) == 1 else "mean of " + " + ".join(args.model)
    x, y = spec.apply(data.test.images), data.test.labels

    def top1():
        return float((model.predict(x, batch_size=500, verbose=0).argmax(1) == y).mean())

    before = top1()
    stream = make_dataset(data.train.images, data.train.labels, spec, 128, data.num_classes, training=True,
                          augment=not args.plain, seed=args.seed, cache=False, **augmentation)
    seen = recompute_batch_norm(model, stream)
    after = top1()
    how = "plain" if args.plain else "augmented (cutout {cutout}, cutmix {cutmix})".format(**augmentation)
    print(f"{name}: test top-1 {before:.4f} with its own BatchNorm statistics, {after:.4f} after one pass "
          f"over {seen} {how} training images ({len(y)} test images of {args.data})")
    if args.save:
        save_model_file(model, args.save)
        print(f"wrote {args.save}")
    return 0 if np.isfinite(after) else 1


if __name__ == "__main__":
    sys.exit(main())
