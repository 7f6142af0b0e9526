"""How good a teacher could the models we already have make? Test top-1 of each trained model and
of every ensemble of them (mean of probabilities), on the real held-out images. A student distilled
from a teacher rarely ends above it, so the best ensemble bounds what distilling from these models
can give.

    python experiments/ensemble_accuracy.py runs/ship/resnet8 runs/ship/resnet8_c2 runs/ship/seed_cnn \
        --data ../shared/datasets/cifar10-jpeg.zip

Each model uses its own preprocessing (`edgecls train` directories).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from edgecls.data import load_dataset  # noqa: E402
from edgecls.evaluation import predict_in_batches  # noqa: E402
from edgecls.modelio import load_trained  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="'edgecls train' directories")
    ap.add_argument("--data", required=True)
    args = ap.parse_args()
    if len(args.models) < 2:
        ap.error("give at least two models")
    dataset = load_dataset(args.data, image_size=(32, 32))
    x, y = dataset.test.images, dataset.test.labels
    probs = {}
    for path in args.models:
        trained = load_trained(path)
        if tuple(trained.preprocessing.input_size) != tuple(x.shape[1:3]):
            sys.exit(f"{path}: takes {trained.preprocessing.input_size} images; this tool compares 32x32 models")
        probs[path] = predict_in_batches(trained.model, trained.preprocessing.apply(x))
    print(f"{len(y)} test images of {args.data}\n")
    print("| models | top-1 |\n|---|---:|")
    rows = []
    for r in range(1, len(probs) + 1):
        for combo in itertools.combinations(probs, r):
            mean = sum(probs[m] for m in combo) / r
            rows.append((float((mean.argmax(1) == y).mean()), combo))
    for acc, combo in sorted(rows, key=lambda t: (len(t[1]), -t[0])):
        print(f"| {' + '.join(Path(m).name for m in combo)} | {acc:.2%} |")
    best = max(rows)
    print(f"\nbest: {' + '.join(Path(m).name for m in best[1])} at {best[0]:.2%}")


if __name__ == "__main__":
    main()
