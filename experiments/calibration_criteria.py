"""Which measurement on a validation split can choose an int8 file's calibration draw? A criterion
is only worth choosing on if it ranks the candidate files the same way on other images.

    python experiments/calibration_criteria.py models/resnet8 --data ../shared/datasets/cifar10-jpeg.zip \
        --variant tflite_int8 --sizes 100,300,1000 --draws 4 --out runs/criteria-resnet8.json

Every size is drawn --draws times from the training split (stratified, seeds 0, 1, ...) and the
variant is quantized with each draw by its engine (as `edgecls export --calibration-search` does).
Each file runs on two disjoint sets of training images no draw uses (A: --images-a, B: --images-b)
beside the float Keras model. Per set and file: the accuracy change against float (points), the
images whose top-1 differs from float (flips), the mean KL divergence of the outputs from float's and
the mean squared output difference. For each criterion, the Spearman rank correlation between its
values on A and on B over the files: near 0 means choosing on it picks noise. No test image is read.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

CRITERIA = ("delta", "flips", "kl", "mse")


def spearman(a, b) -> float:
    from scipy.stats import spearmanr  # a dependency of the train extra (constraints.txt)

    return float(spearmanr(a, b).statistic)


def measures(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
    pred, ref = outputs.argmax(1), reference.argmax(1)
    kl = np.sum(reference * (np.log(np.clip(reference, 1e-7, 1)) - np.log(np.clip(outputs, 1e-7, 1))), axis=1)
    return {"delta": round(100 * float((pred == labels).mean() - (ref == labels).mean()), 4),
            "flips": int((pred != ref).sum()), "kl": float(kl.mean()), "mse": float(((outputs - reference) ** 2).mean())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an edgecls run or bundle folder with model.keras")
    parser.add_argument("--data", required=True)
    parser.add_argument("--variant", default="tflite_int8")
    parser.add_argument("--sizes", default="100,300,1000")
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--images-a", type=int, default=4000)
    parser.add_argument("--images-b", type=int, default=6000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from edgecls.config import ExportConfig
    from edgecls.data import calibration_indices, load_dataset, sample_indices
    from edgecls.evaluation import align_labels, predict_in_batches
    from edgecls.export.formats.base import VARIANTS, ConvertJob, formats
    from edgecls.modelio import load_model
    from edgecls.runtime import isolated

    source = load_model(args.model)
    spec = source.preprocessing
    dataset = load_dataset(args.data, image_size=spec.input_size, seed=0)
    mapping = align_labels(dataset, source.labels)
    sizes = [int(s) for s in args.sizes.split(",")]
    candidates = [(size, seed, calibration_indices(dataset, size, seed)) for size in sizes for seed in range(args.draws)]
    used = set()
    for _, _, index in candidates:
        used.update(index.tolist())
    free = np.array([i for i in range(len(dataset.train)) if i not in used], dtype=np.int64)
    need = args.images_a + args.images_b
    if len(free) < need:
        raise SystemExit(f"{args.data}: {len(free)} training images besides the draws, {need} needed")
    pick = free[sample_indices(len(free), need, 1)]
    sets = {"A": pick[:args.images_a], "B": pick[args.images_a:]}
    x = {k: spec.apply(dataset.train.images[v]) for k, v in sets.items()}
    y = {k: mapping[dataset.train.labels[v]] for k, v in sets.items()}
    ref = {k: predict_in_batches(source.model, x[k]) for k in sets}
    variant = VARIANTS[args.variant]
    fmt = formats()[variant.format]
    config = ExportConfig(formats=(args.variant,))
    rows = []
    for size, seed, index in candidates:
        job = ConvertJob(model=source.model, base=source.model, spec=spec, config=config,
                         representative=spec.apply(dataset.train.images[index]),
                         calibration=dataset.train.images[index], shared={})
        converted = fmt.convert(variant, job)
        row = {"size": size, "seed": seed}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"candidate.{variant.format}"
            path.write_bytes(converted.data)
            for k in sets:
                inputs = converted.pixel_layout.apply(dataset.train.images[sets[k]]) if converted.pixel_layout else x[k]
                out = np.asarray(isolated.outputs(path, inputs, layout=fmt.layout(config), threads=None), np.float32)
                row[k] = measures(out, ref[k], y[k])
        rows.append(row)
        print(json.dumps(row), flush=True)
    correlation = {c: round(spearman([r["A"][c] for r in rows], [r["B"][c] for r in rows]), 2) for c in CRITERIA}
    result = {"model": args.model, "variant": args.variant, "data": args.data, "sizes": sizes, "draws": args.draws,
              "images": {"A": args.images_a, "B": args.images_b},
              "float_accuracy": {k: round(float((ref[k].argmax(1) == y[k]).mean()), 6) for k in sets},
              "candidates": rows, "spearman_a_b": correlation}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("\n| criterion | rank correlation between A and B |\n|---|---:|")
    for c in CRITERIA:
        print(f"| {c} | {correlation[c]:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
