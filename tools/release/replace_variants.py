"""Re-export some variants of a shipped bundle and put them in place of the old ones.

    .venv/bin/python tools/release/replace_variants.py models/seed_cnn --data ../shared/datasets/cifar10-jpeg.zip \\
        --formats onnx_int8 [--onnx-int8-scheme u8s8_rr]

For a change that touches a few variants (an ONNX int8 scheme, say): the bundle's model.keras is
exported again with the bundle's own export settings (calibration draw, opset, weight scales,
evaluation images), overridden only by what is given here, into a staging folder; each variant is
validated there on the same held-out images as the rest of the bundle, then it replaces the old
file and manifest entry (edgecls.bundle.replace_artifacts). Everything else in the bundle stays as
it was. A variant that fails validation leaves the bundle untouched.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import fields, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# Where each setting of a manifest written before ExportConfig had sections lives now.
FLAT = {"sparsity": "prune.sparsity", "sparsity_allocation": "prune.allocation", "structured_2x4": "prune.structured_2x4",
        "skip_layers": "prune.skip_layers", "prune_epochs": "prune.epochs", "prune_learning_rate": "prune.learning_rate",
        "qat_epochs": "qat.epochs", "qat_learning_rate": "qat.learning_rate", "qat_calibration": "qat.calibrate",
        "distill": "fine_tune.distill", "distill_alpha": "fine_tune.distill_alpha",
        "distill_temperature": "fine_tune.distill_temperature", "fine_tune_batch_size": "fine_tune.batch_size",
        "fine_tuned_max_drop": "fine_tune.max_drop", "calibration_count": "calibration.count",
        "calibration_seed": "calibration.seed", "calibration_data": "calibration.data",
        "calibration_search": "calibration.search", "calibration_draws": "calibration.draws",
        "float_io": "convert.float_io", "int8_weights": "convert.int8_weights", "strip_names": "convert.strip_names",
        "onnx_opset": "convert.onnx_opset", "onnx_int8_method": "convert.onnx_int8_method",
        "onnx_int8_scheme": "convert.onnx_int8_scheme", "nchw": "convert.nchw",
        "max_eval_images": "validation.max_images", "validation_timeout_s": "validation.timeout_s",
        "diagnose": "validation.diagnose", "max_drop": "validation.max_drop", "repair_images": "validation.repair_images",
        "repair_max_layers": "validation.repair_max_layers", "tolerances": "validation.tolerances", "micro": "micro.enabled",
        "micro_images": "micro.images"}


def _bundle_config(recorded: dict):
    """The ExportConfig a bundle's manifest records (sections, or the flat settings of older bundles)."""
    from edgecls.config import ExportConfig

    if any(isinstance(recorded.get(name), dict) for name in ExportConfig.SECTIONS):
        return ExportConfig.from_dict(recorded)
    top = {f.name for f in fields(ExportConfig)} - set(ExportConfig.SECTIONS)
    nested = {k: v for k, v in recorded.items() if k in top}
    for key, path in FLAT.items():
        if key in recorded:
            section, name = path.split(".")
            nested.setdefault(section, {})[name] = recorded[key]
    return ExportConfig.from_dict(nested)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--data", required=True, help="the data the bundle was exported on (its manifest's reference)")
    parser.add_argument("--formats", nargs="+", required=True)
    parser.add_argument("--onnx-int8-scheme", help="override the bundle's ONNX int8 scheme")
    args = parser.parse_args(argv)

    from edgecls.bundle import load_bundle, replace_artifacts
    from edgecls.export import export, resolve_formats

    bundle = load_bundle(args.bundle)
    names = resolve_formats(args.formats)
    config = _bundle_config(bundle.manifest.get("config") or {})
    config = replace(config, formats=tuple(names))
    if args.onnx_int8_scheme:
        config = replace(config, convert=replace(config.convert, onnx_int8_scheme=args.onnx_int8_scheme))
    model = Path(args.bundle) / "model.keras"
    if not model.is_file():
        raise SystemExit(f"replace-variants: {model} not found: the bundle must hold the model it was exported from")
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "staged"
        # The bundle's folder is an edgecls run (model.keras, train.json): its preprocessing and labels come with it.
        result = export(str(args.bundle), data=args.data, out=staged, config=config)
        print(result.format_table())
        bad = [r["name"] for r in result.rows if r["status"] != "ok"]
        if bad:
            print(f"replace-variants: {', '.join(bad)} did not validate; {args.bundle} left as it was", file=sys.stderr)
            return 1
        entries = replace_artifacts(args.bundle, staged, names)
    for entry in entries:
        v = entry["validation"]
        print(f"{entry['name']}: {entry['file']} {entry['size']['bytes']} bytes, accuracy {v['accuracy']:.4f} "
              f"({v['accuracy_delta_vs_fp32_points']:+.2f} points), agreement {v['agreement']:.4f} on {v['images']} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
