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
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--data", required=True, help="the data the bundle was exported on (its manifest's reference)")
    parser.add_argument("--formats", nargs="+", required=True)
    parser.add_argument("--onnx-int8-scheme", help="override the bundle's ONNX int8 scheme")
    args = parser.parse_args(argv)

    from edgecls.bundle import load_bundle, replace_artifacts
    from edgecls.config import ExportConfig
    from edgecls.export import export, resolve_formats

    bundle = load_bundle(args.bundle)
    names = resolve_formats(args.formats)
    known = {f.name for f in fields(ExportConfig)}
    settings = {k: v for k, v in bundle.manifest.get("config", {}).items() if k in known}
    settings["formats"] = tuple(names)
    if args.onnx_int8_scheme:
        settings["onnx_int8_scheme"] = args.onnx_int8_scheme
    model = Path(args.bundle) / "model.keras"
    if not model.is_file():
        raise SystemExit(f"replace-variants: {model} not found: the bundle must hold the model it was exported from")
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "staged"
        # The bundle's folder is an edgecls run (model.keras, train.json): its preprocessing and labels come with it.
        result = export(str(args.bundle), data=args.data, out=staged, config=ExportConfig(**settings))
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
