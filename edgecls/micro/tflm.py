"""A TFLite file under TensorFlow Lite Micro's own kernels, on this host (the `tflite-micro` package:
TFLM's reference kernels built for the host, run through its Python interpreter).

What it measures, in a child process (`python -m edgecls.micro.tflm PAYLOAD`; numpy, LiteRT and
tflite-micro, no TensorFlow), so a TFLM abort costs the row, not the export:
  ops        the file's operators, each with the layers (output tensor names) that use it, read with
             LiteRT's analyzer (no delegate, so every op is listed as it is in the file);
  verdict    "ok", or "unsupported" with the ops TFLM's kernel registry lacks (from TFLM's own
             allocation failure: "Didn't find op for builtin opcode 'ATAN2'");
  arena      the smallest tensor arena, in ARENA_STEP-byte steps, in which TFLM allocates the
             model and runs it: found by doubling, then bisecting on TFLM's own allocation (the
             interpreter is built and invoked at each size); `arena_fails_at` is the largest size
             tried that failed (one step below);
  outputs    TFLM's outputs on the given images (quantized with the file's input scale and zero
             point, dequantized with its output's), with LiteRT's raw outputs on the same inputs
             for the step-by-step comparison;
  host time  the median time of TFLM's invoke per image on this CPU: its reference kernels, not a
             microcontroller's latency.

TFLM prints allocation failures from C++ to the process's standard error: the child redirects that
file descriptor into a file it reads, so nothing reaches the user's terminal.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ARENA_STEP = 16            # TFLM aligns arena allocations to 16 bytes (MicroArenaBufferAlignment)
MAX_ARENA = 256 << 20      # a model that needs more than this is not for a microcontroller
_MISSING = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")


@contextlib.contextmanager
def captured_stderr():
    """Redirect file descriptor 2 (where TFLM's C++ prints) into a temporary file; yields a list
    that holds the captured text once the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    text: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text.append(sink.read().decode(errors="replace"))


def _interpreter(data: bytes, arena: int):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(data, arena_size=int(arena))


def _runs(data: bytes, arena: int) -> tuple[bool, str]:
    """Does TFLM allocate and run the model in an arena of `arena` bytes? (and what it printed)"""
    with captured_stderr() as printed:
        try:
            interp = _interpreter(data, arena)
            detail = interp.get_input_details(0)
            interp.set_input(np.zeros(detail["shape"], detail["dtype"]), 0)
            interp.invoke()
            ok = True
        except Exception as exc:  # TFLM raises RuntimeError/ValueError with its own message
            ok, printed_exc = False, str(exc)
            printed.append(printed_exc)
    return ok, "\n".join(printed)


def minimum_arena(data: bytes) -> tuple[int | None, int, list[str], str]:
    """(smallest arena that works or None, largest that failed, ops TFLM lacks, TFLM's message)."""
    size, failed = 4096, 0
    while True:
        ok, message = _runs(data, size)
        if ok:
            break
        missing = sorted(set(_MISSING.findall(message)))
        if missing:
            return None, size, missing, message
        failed = size
        if size >= MAX_ARENA:
            return None, failed, [], message
        size *= 2
    lo, hi = failed // ARENA_STEP, size // ARENA_STEP  # in steps: lo fails (or is 0), hi works
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _runs(data, mid * ARENA_STEP)[0]:
            hi = mid
        else:
            lo = mid
    return hi * ARENA_STEP, lo * ARENA_STEP, [], ""


def file_ops(path: str | Path) -> list[dict]:
    """[{op, layers}] in the order the file first uses each op (LiteRT's analyzer, no delegate)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from .._deps import native_logs_hidden

    with native_logs_hidden():
        interp = Interpreter(model_path=str(path),
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    ops: dict[str, list[str]] = {}
    for op in interp._get_ops_details():  # noqa: SLF001 (LiteRT's analyzer data)
        ops.setdefault(op["op_name"], []).extend(names.get(int(i), str(i)) for i in op["outputs"] if i >= 0)
    return [{"op": name, "layers": layers} for name, layers in ops.items()]


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    from ..runtime.backends import quantize

    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x.astype(np.float32)
    q = detail["quantization_parameters"]
    return quantize(x, dtype, float(q["scales"][0]), int(q["zero_points"][0]))


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    from ..runtime.backends import dequantize

    if np.dtype(detail["dtype"]) == np.float32:
        return y.astype(np.float32)
    q = detail["quantization_parameters"]
    return dequantize(y, float(q["scales"][0]), int(q["zero_points"][0]))


def run_images(data: bytes, arena: int, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """TFLM's (dequantized outputs, raw outputs, median invoke ms) on `inputs` (normalized NHWC
    float32, one image per invoke)."""
    interp = _interpreter(data, arena)
    detail_in, detail_out = interp.get_input_details(0), interp.get_output_details(0)
    raw, times = [], []
    for i in range(len(inputs)):
        interp.set_input(_quantize(inputs[i:i + 1], detail_in).reshape(detail_in["shape"]), 0)
        t0 = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t0)
        raw.append(np.array(interp.get_output(0)).reshape(1, -1))
    raw_all = np.concatenate(raw) if raw else np.zeros((0, 0))
    return _dequantize(raw_all, detail_out), raw_all, float(np.median(times) * 1000) if times else 0.0


def litert_raw(path: str | Path, inputs: np.ndarray) -> np.ndarray:
    """LiteRT's raw (still quantized) outputs on the same inputs, for the step comparison."""
    from ..runtime.backends import TFLiteBackend

    backend = TFLiteBackend(path, threads=1)
    return np.concatenate([backend.run(inputs[i:i + 256], raw=True).reshape(len(inputs[i:i + 256]), -1)
                           for i in range(0, len(inputs), 256)])


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("tflite-micro")
    except metadata.PackageNotFoundError:
        return "unknown"


def measure(path: str | Path, inputs: np.ndarray | None, out: Path | None = None) -> dict:
    """Everything of the module docstring for the file at `path` (in this process); outputs are
    saved to `out` (.npz: tflm, tflm_raw, litert_raw) when inputs are given."""
    path = Path(path)
    data = path.read_bytes()
    ops = file_ops(path)
    arena, fails_at, missing, message = minimum_arena(data)
    record = {"runtime": f"tflite-micro {version()} (reference kernels, host)", "ops": ops,
              "verdict": "ok" if arena is not None else "unsupported"}
    if arena is None:
        if missing:
            layers = {o["op"]: o["layers"] for o in ops}
            record["missing_ops"] = [{"op": m, "layers": layers.get(m, [])} for m in missing]
            record["reason"] = ("TFLite Micro has no kernel for " + ", ".join(
                f"{m} (used by {', '.join(layers.get(m, [])[:3]) or 'the graph'})" for m in missing))
        else:
            line = next((ln for ln in message.splitlines() if ln.strip()), "no message")
            record["reason"] = f"TFLite Micro could not allocate or run the model in {fails_at:,} bytes: {line}"
        return record
    record.update(arena_bytes=arena, arena_fails_at=fails_at)
    if inputs is not None and out is not None:
        outputs, raw, ms = run_images(data, arena, inputs)
        np.savez(out, tflm=outputs, tflm_raw=raw, litert_raw=litert_raw(path, inputs))
        record["host_ms_per_image"] = round(ms, 4)
        record["images"] = int(len(inputs))
    return record


CHILD_TIMEOUT_S = 3600.0


def measure_in_child(path: str | Path, inputs: np.ndarray | None) -> tuple[dict, dict | None]:
    """`measure` in a child process: (record, {tflm, tflm_raw, litert_raw} arrays or None)."""
    from ..runtime.isolated import run_job, save_float32

    with tempfile.TemporaryDirectory(prefix="edgecls-micro-") as tmp:
        given, out, result = (Path(tmp) / n for n in ("inputs.npy", "outputs.npz", "record.json"))
        if inputs is not None:
            save_float32(given, inputs)
        payload = {"file": str(path), "inputs": str(given) if inputs is not None else None, "out": str(out),
                   "record": str(result)}
        run_job(__name__, payload, result, "TFLite Micro", CHILD_TIMEOUT_S)
        record = json.loads(result.read_text())
        arrays = None
        if out.is_file():
            with np.load(out, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        return record, arrays


def _child_work(payload: dict) -> None:
    """`measure_in_child`'s work, in the child."""
    from .._deps import optional

    optional("tflite_micro", "micro")  # missing: a one-line reason naming the extra that installs it
    inputs = np.load(payload["inputs"], allow_pickle=False) if payload.get("inputs") else None
    Path(payload["record"]).write_text(json.dumps(measure(payload["file"], inputs, Path(payload["out"]))))


if __name__ == "__main__":
    from ..runtime.isolated import child_main

    sys.exit(child_main(sys.argv[1:], _child_work))
