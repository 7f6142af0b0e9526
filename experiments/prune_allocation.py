"""Which sparsity allocation keeps more of a trained model before any fine-tuning? Prune a model in
one shot (each layer by weight magnitude to its allocated sparsity), recompute the BatchNorm
statistics on training images (the pruned weights change every layer's activation statistics),
and measure top-1 on other training images: no test image is used for this design question.

    python experiments/prune_allocation.py runs/ship/resnet8_c2 --data ../shared/datasets/cifar10-jpeg.zip \
        --sparsity 0.5 0.75

Allocations compared: "uniform" (every layer to the sparsity, as `edgecls export` prunes by
default), "uniform, first and last dense" (the common recipe: the first convolution and the
classifier stay dense, the rest pruned a little more so the total is the same) and "lamp"
(`--sparsity-allocation lamp`). One-shot accuracy is a proxy: fine-tuning recovers most of the
gap, so it ranks allocations; it does not predict the fine-tuned accuracy.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edgecls.data import load_dataset  # noqa: E402
from edgecls.modelio import load_trained  # noqa: E402
from edgecls.optimize.common import kernel_layers  # noqa: E402
from edgecls.optimize.prune import lamp_allocation  # noqa: E402
from edgecls.training.swa import recompute_batch_norm  # noqa: E402


def prune_one_shot(model, kernels, targets: dict[str, float]) -> float:
    """Zero the smallest-magnitude weights of each layer's kernel to its target; overall kernel sparsity."""
    zeros = total = 0
    for layer, w in kernels:
        v = w.numpy()
        count = int(round(targets.get(layer.name, 0.0) * v.size))
        if count:
            order = np.argsort(np.abs(v).ravel(), kind="stable")
            flat = v.ravel().copy()
            flat[order[:count]] = 0.0
            v = flat.reshape(v.shape)
            w.assign(v)
        zeros += int((v == 0).sum())
        total += v.size
    return zeros / total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="an 'edgecls train' directory")
    ap.add_argument("--data", required=True, help="the labelled data the model was trained on")
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.75])
    ap.add_argument("--images", type=int, default=5000, help="training images to measure top-1 on")
    ap.add_argument("--bn-images", type=int, default=4096, help="other training images for the BatchNorm statistics")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()

    trained = load_trained(args.model)
    model, spec = trained.model, trained.preprocessing
    data = load_dataset(args.data)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(data.train.labels))
    measure, calibrate = order[:args.images], order[args.images:args.images + args.bn_images]
    x, y = spec.apply(data.train.images[measure]), data.train.labels[measure]
    bn_batches = [spec.apply(data.train.images[calibrate[i:i + 256]]) for i in range(0, len(calibrate), 256)]
    original = model.get_weights()
    kernels = list(kernel_layers(model))
    names = [layer.name for layer, _ in kernels]
    sizes = {layer.name: int(w.numpy().size) for layer, w in kernels}

    def top1() -> float:
        return float((model.predict(x, verbose=0, batch_size=500).argmax(1) == y).mean())

    rows = [{"allocation": "dense", "sparsity": 0.0, "top1": top1()}]
    for sparsity in args.sparsity:
        ends = {names[0], names[-1]}
        inner = sum(sizes[n] for n in names if n not in ends)
        inner_target = min(0.99, sparsity * sum(sizes.values()) / inner)
        allocations = {
            "uniform": {n: sparsity for n in names},
            "uniform, first and last dense": {n: inner_target for n in names if n not in ends},
            "lamp": lamp_allocation(model, sparsity),
        }
        for name, targets in allocations.items():
            model.set_weights(original)
            reached = prune_one_shot(model, kernels, targets)
            before = top1()
            recompute_batch_norm(model, bn_batches)
            row = {"allocation": name, "sparsity": round(reached, 4), "top1_pruned": before, "top1": top1(),
                   "per_layer": {n: round(targets.get(n, 0.0), 3) for n in names}}
            rows.append(row)
            print(f"{sparsity:.2f}  {name:<30} sparsity {reached:.4f}  top-1 {before:.4f}, "
                  f"after BatchNorm recomputed {row['top1']:.4f}", flush=True)
    model.set_weights(original)
    print(f"dense top-1 {rows[0]['top1']:.4f} on {len(y)} training images ({data.source}); "
          f"BatchNorm statistics from {len(calibrate)} other training images")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "data": str(data.source), "images": len(y),
                                               "bn_images": int(len(calibrate)), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
