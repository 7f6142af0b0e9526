"""The microcontroller table of README "On a microcontroller" and BENCHMARKS: each shipped model's
full-integer TFLite variants exported with `--micro` on real held-out images.

    python tools/release/micro_table.py --data ../datasets/cifar10-jpeg.zip --out runs/micro

Per model it runs `edgecls export models/NAME --formats tflite_int8 tflite_int8_pixels
--micro --micro-images N --data DATA --out OUT/NAME` and prints one markdown row per variant from its
manifest: the arena TFLite Micro's reference kernels need (and the size one step below that fails),
flash (the model array), RAM (arena plus one input and one output buffer), top-1 under TFLM and
the source model's on the same images, TFLM's agreement with the source model and with LiteRT's
file, the largest difference in output quantization steps, and TFLM's host time per image.
Writes OUT/micro.json with the rows.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("seed_cnn", "resnet8", "mobilenet_tiny")
VARIANTS = ("tflite_int8", "tflite_int8_pixels")  # post-training: no fine-tuning to repeat


def rows_of(manifest: dict, model: str) -> list[dict]:
    rows = []
    for art in manifest["artifacts"]:
        micro = art.get("micro")
        if not micro:
            continue
        v = micro.get("validation") or {}
        rows.append({"model": model, "variant": art["name"], "verdict": micro["verdict"], "status": micro.get("status"),
                     "arena_bytes": micro.get("arena_bytes"), "arena_fails_at": micro.get("arena_fails_at"),
                     "flash_bytes": micro.get("flash_bytes"), "ram_bytes": micro.get("ram_bytes"),
                     "images": micro.get("images"), "tflm_accuracy": v.get("accuracy"),
                     "reference_accuracy": v.get("reference_accuracy"), "agreement": v.get("agreement"),
                     "litert_agreement": (micro.get("litert") or {}).get("agreement"),
                     "max_step_diff": (micro.get("litert") or {}).get("max_step_diff"),
                     "images_differing": (micro.get("litert") or {}).get("images_differing"),
                     "host_ms_per_image": micro.get("host_ms_per_image"), "ops": [o["op"] for o in micro.get("ops", [])]})
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| model | variant | arena bytes (fails at) | flash bytes | RAM bytes | top-1 TFLM | top-1 source | agreement "
            "with source | agreement with LiteRT | max step diff (images differing) | TFLM host ms/image |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        if r["verdict"] != "ok":
            lines.append(f"| {r['model']} | {r['variant']} | {r['verdict']} |  |  |  |  |  |  |  |  |")
            continue
        lines.append(f"| {r['model']} | {r['variant']} | {r['arena_bytes']:,} ({r['arena_fails_at']:,}) | "
                     f"{r['flash_bytes']:,} | {r['ram_bytes']:,} | {100 * r['tflm_accuracy']:.2f}% | "
                     f"{100 * r['reference_accuracy']:.2f}% | {100 * r['agreement']:.1f}% | "
                     f"{100 * r['litert_agreement']:.1f}% | {r['max_step_diff']} ({100 * r['images_differing']:.0f}%) | "
                     f"{r['host_ms_per_image']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--micro-images", type=int, default=1000)
    parser.add_argument("--zoo-json", type=Path, help="also write each model's tflite_int8 figures here "
                                                      "(edgecls/zoo/micro.json: what `tune` suggests when nothing fits)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in args.models:
        bundle = args.out / model
        cmd = [sys.executable, "-m", "edgecls.cli", "export", str(ROOT / "models" / model), "--data", args.data,
               "--formats", *VARIANTS, "--micro", "--micro-images", str(args.micro_images), "--out", str(bundle)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode not in (0, 1):
            print(proc.stderr[-2000:], file=sys.stderr)
            return proc.returncode
        rows += rows_of(json.loads((bundle / "manifest.json").read_text()), model)
    (args.out / "micro.json").write_text(json.dumps(rows, indent=2) + "\n")
    if args.zoo_json:
        from importlib import metadata

        zoo = {r["model"]: {"variant": r["variant"], "input": [32, 32, 3], "arena_bytes": r["arena_bytes"],
                            "ram_bytes": r["ram_bytes"], "flash_bytes": r["flash_bytes"],
                            "tflm_accuracy": r["tflm_accuracy"], "images": r["images"]}
               for r in rows if r["variant"] == "tflite_int8" and r["verdict"] == "ok"}
        args.zoo_json.write_text(json.dumps({
            "measured": {"command": "python tools/release/micro_table.py --data " + Path(args.data).name
                                    + f" --micro-images {args.micro_images} --zoo-json edgecls/zoo/micro.json",
                         "tflite-micro": metadata.version("tflite-micro")},
            "models": zoo}, indent=2) + "\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
