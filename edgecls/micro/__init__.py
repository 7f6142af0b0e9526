"""Microcontroller target: a full-integer TFLite variant checked under TensorFlow Lite Micro.

`export --micro` calls `micro_target` for every validated TFLite file whose input and output are
integer tensors. It records, under the artifact's "micro" entry in the manifest:
  verdict      "ok", or "unsupported" with the ops TFLM lacks and the layers that use them
  arena_bytes  the smallest tensor arena TFLM's reference kernels run the file in (edgecls.micro.tflm),
               and arena_fails_at, one 16-byte step below, where they do not
  flash_bytes  the model array (the file's bytes; TFLM's own code is not counted)
  ram_bytes    arena_bytes plus one input and one output buffer of the application (io_bytes)
  validation   accuracy and agreement of TFLM's outputs against the source model on the held-out
               images, judged with the same tolerance as the LiteRT file
  litert       how TFLM's int8 outputs differ from LiteRT's (XNNPACK) on the same inputs: top-1
               agreement, the largest difference in quantization steps, the share of images with any
  host_ms_per_image  TFLM's reference kernels on this CPU: not a microcontroller's latency
  sources      micro/<variant>/model_data.{h,cc} and op_resolver.cc (edgecls.micro.csource), hashed
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

MICRO_DIR = "micro"


def full_integer(inputs: list[dict], outputs: list[dict]) -> bool:
    """A file whose one input and one output are integer tensors (what TFLM targets run)."""
    kinds = [t.get("dtype") for t in (*inputs, *outputs)]
    return len(inputs) == 1 and len(outputs) == 1 and all(k in ("int8", "uint8", "int16") for k in kinds)


def _detail(tensor: dict) -> dict:
    """A row's tensor description (export.formats.tflite.describe) as the C header takes it."""
    q = tensor.get("quantization") or {}
    return {"shape": _shape(tensor), "dtype": tensor["dtype"], "scale": float(q.get("scale", 0.0)),
            "zero_point": int(q.get("zero_point", 0))}


def _shape(tensor: dict) -> list[int]:
    """The tensor's shape for one image (a dynamic batch dimension, -1, counts as 1)."""
    return [1 if v is None or int(v) < 0 else int(v) for v in tensor["shape"]]


def micro_target(file: Path, name: str, inputs: np.ndarray, labels: np.ndarray, reference: np.ndarray, tolerance,
                 tensors: tuple[list[dict], list[dict]], class_names: list[str], preprocessing: dict,
                 bundle: Path) -> dict:
    """The "micro" record of the variant `name` whose file is `file` (see the module docstring);
    `inputs` are the normalized held-out images, `reference` the source model's outputs on them.
    Writes the C sources into bundle/micro/<name>/ when TFLM runs the file."""
    from ..export.validate import compare
    from . import csource, tflm

    record, arrays = tflm.measure_in_child(file, inputs)
    data = file.read_bytes()
    io_bytes = sum(int(np.prod(_shape(t))) * np.dtype(t["dtype"]).itemsize for t in (*tensors[0], *tensors[1]))
    record.update(flash_bytes=len(data), io_bytes=int(io_bytes))
    if record["verdict"] != "ok":
        record["status"] = "failed"
        return record
    record["ram_bytes"] = int(record["arena_bytes"] + io_bytes)
    validation = compare(arrays["tflm"], reference, labels, tolerance)
    validation["reference"] = "the source model"
    record["validation"] = validation
    record["status"] = validation["status"]
    if validation["status"] != "ok":
        record["reason"] = f"under TFLite Micro: {validation.get('reason', '')}"
    raw, lite = arrays["tflm_raw"].astype(np.int32), arrays["litert_raw"].reshape(arrays["tflm_raw"].shape).astype(np.int32)
    steps = np.abs(raw - lite).max(axis=1) if len(raw) else np.zeros(0)
    record["litert"] = {"agreement": round(float((raw.argmax(1) == lite.argmax(1)).mean()), 6) if len(raw) else None,
                        "max_step_diff": int(steps.max()) if len(steps) else 0,
                        "images_differing": round(float((steps > 0).mean()), 6) if len(steps) else 0.0}
    prefix = re.sub(r"\W", "_", name, flags=re.ASCII)
    prefix = prefix if re.match(r"[A-Za-z_]", prefix) else f"v_{prefix}"  # C identifiers: variant names
    texts = csource.sources(data, prefix=prefix, ops=[o["op"] for o in record["ops"]],
                            arena_bytes=record["arena_bytes"], input_detail=_detail(tensors[0][0]),
                            output_detail=_detail(tensors[1][0]), labels=list(class_names), preprocessing=preprocessing)
    folder = Path(bundle) / MICRO_DIR / name
    folder.mkdir(parents=True, exist_ok=True)
    record["sources"] = []
    for fname, text in texts.items():
        (folder / fname).write_text(text)
        record["sources"].append({"file": f"{MICRO_DIR}/{name}/{fname}",
                                  "sha256": hashlib.sha256(text.encode()).hexdigest()})
    record["resolver"] = [csource.resolver_method(o["op"]) for o in record["ops"]]
    return record
