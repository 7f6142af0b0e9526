"""Is model B really more accurate than model A on the same images? A paired comparison.

    python tools/release/paired_accuracy.py models/resnet8 runs/kd-int8 --variant tflite_int8 \
        --data ../shared/datasets/cifar10-jpeg.zip

Both models run (through edgecls.runtime, no TensorFlow) on every test image of --data. Two top-1
figures on one test set are not independent samples: most images are right (or wrong) for both, and
only the images where the models disagree about correctness say which is better. This counts them
(only A right, only B right) and gives the exact two-sided McNemar p-value: the chance of a split at
least this uneven if either model were equally likely to be the one that is right.
A and B are bundle directories (with --variant, or --variant-a/--variant-b) or model files inside bundles.
--tta-a/--tta-b flip run that side with test-time augmentation (edgecls.runtime: each image averaged
with its mirror image), e.g. a model against itself with and without it:

    python tools/release/paired_accuracy.py models/resnet8 models/resnet8 --variant tflite_int8 --tta-b flip \
        --data ../shared/datasets/cifar10-jpeg.zip
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edgecls.evaluation import mcnemar_exact, paired  # noqa: E402,F401


def correct(runner, dataset, batch: int = 500) -> np.ndarray:
    """Per test image: is the runner's top-1 the label? (edgecls.evaluation.runner_correct on the test split)"""
    from edgecls.evaluation import runner_correct

    return runner_correct(runner, dataset, dataset.test.images, dataset.test.labels, batch)


def main(argv=None) -> int:
    from edgecls.runtime import TTA_MODES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--variant", help="the variant of both bundles (e.g. tflite_int8)")
    ap.add_argument("--variant-a")
    ap.add_argument("--variant-b")
    ap.add_argument("--tta-a", choices=TTA_MODES, help="test-time augmentation for A")
    ap.add_argument("--tta-b", choices=TTA_MODES, help="test-time augmentation for B")
    ap.add_argument("--data", default="cifar10-sample", help="labelled data; its test split is used")
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args(argv)

    from edgecls._io import atomic_write_json
    from edgecls.data import load_dataset
    from edgecls.errors import EdgeclsError

    variant_a, variant_b = args.variant_a or args.variant, args.variant_b or args.variant
    try:
        from edgecls import runtime

        runner_a, runner_b = (runtime.load(args.a, variant=variant_a, tta=args.tta_a),
                              runtime.load(args.b, variant=variant_b, tta=args.tta_b))
        size_a, size_b = runner_a.preprocessing.input_size, runner_b.preprocessing.input_size
        data_a = load_dataset(args.data, image_size=size_a)
        data_b = data_a if size_b == size_a else load_dataset(args.data, image_size=size_b)  # same images, same order
        correct_a, correct_b = correct(runner_a, data_a), correct(runner_b, data_b)
    except EdgeclsError as e:
        print(f"paired_accuracy: error: {e}", file=sys.stderr)
        return 2
    result = {"a": args.a, "b": args.b, "variant_a": variant_a, "variant_b": variant_b,
              "tta_a": args.tta_a, "tta_b": args.tta_b, "data": args.data, **paired(correct_a, correct_b)}
    tta_a, tta_b = (f", {t} TTA" if t else "" for t in (args.tta_a, args.tta_b))
    print(f"A {result['a']} ({result['variant_a']}{tta_a}): top-1 {100 * result['top1_a']:.2f}%\n"
          f"B {result['b']} ({result['variant_b']}{tta_b}): top-1 {100 * result['top1_b']:.2f}%\n"
          f"on {result['images']:,} test images of {args.data}: only A right on {result['only_a_right']}, only B right on "
          f"{result['only_b_right']}; exact McNemar two-sided p = {result['mcnemar_p']:.3g}")
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
