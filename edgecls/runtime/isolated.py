"""Run what can crash in a child process: loading an artifact into its runtime and running it.

A native crash (a segfault in an interpreter, an abort), a hang past a timeout or an exception in
the child becomes a one-line reason for the caller, who turns it into a failed row; the calling
process (an export with other variants to build, a bench with other variants to measure) carries
on. `edgecls bench` measures every variant this way; `edgecls export` validates every artifact
this way. numpy and the runtime only: no TensorFlow in the child.

    python -m edgecls.runtime.isolated PAYLOAD_JSON      (the child; PAYLOAD: {"mode": "outputs", ...})
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import EdgeclsError, ExportError


def run_child(module: str, payload: dict, env: dict | None = None, timeout: float | None = None):
    """Run `python -m module PAYLOAD` (under $EDGECLS_EMULATOR when set, so an emulated CPU class
    stays emulated). Returns (exit status, the last JSON line it printed or None, its stderr);
    exit status None when it ran past `timeout` seconds and was killed."""
    prefix = shlex.split(os.environ.get("EDGECLS_EMULATOR", ""))
    try:
        proc = subprocess.run([*prefix, sys.executable, "-m", module, json.dumps(payload)], capture_output=True,
                              text=True, env=env if env is not None else dict(os.environ), timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return None, None, stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, (json.loads(lines[-1]) if lines else None), proc.stderr


def run_job(module: str, payload: dict, result: Path, what: str, timeout: float | None = None) -> None:
    """`run_child` for work that leaves its result in the file `result`: ExportError with one line
    (`failure_reason`) when the child crashes, hangs, fails or writes no result."""
    code, _, stderr = run_child(module, payload, timeout=timeout)
    if code != 0 or not Path(result).is_file():
        raise ExportError(failure_reason(code, stderr, what, timeout))


def failure_reason(code, stderr: str, what: str, timeout: float | None = None) -> str:
    """One line for a child that did not finish: crashed by a signal, hung, or failed with an error."""
    if code is None:
        return f"{what} did not finish within {timeout:g} s (hung); it was stopped"
    if code < 0:
        return f"{what} crashed (signal {-code})"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else f"{what} failed (exit status {code})").removeprefix("edgecls: error: ")


CHUNK = 256  # images per interpreter call in the child


def outputs(path: str | Path, inputs: np.ndarray, layout: str = "NHWC", threads: int | None = 1,
            timeout: float | None = 600.0) -> np.ndarray:
    """The outputs of the model file `path` on `inputs` (the tensor it takes, float32), computed in
    a child process; ExportError with the reason when the child crashes, hangs or fails."""
    path = Path(path)
    from .backends import BACKENDS

    runtime = BACKENDS[path.suffix][1] if path.suffix in BACKENDS else "the runtime"
    with tempfile.TemporaryDirectory(prefix="edgecls-run-") as tmp:
        given, out = Path(tmp) / "inputs.npy", Path(tmp) / "outputs.npy"
        save_float32(given, inputs)
        payload = {"mode": "outputs", "file": str(path), "layout": layout, "threads": threads, "inputs": str(given),
                   "out": str(out)}
        run_job(__name__, payload, out, f"{runtime} while loading or running the converted model", timeout)
        return np.load(out, allow_pickle=False)


def save_float32(path: Path, inputs) -> None:
    """`inputs` (an array, or anything sliced into float32 batches such as edgecls.preprocess.Batches)
    as a float32 .npy file, written CHUNK images at a time: the whole array is never made here."""
    if isinstance(inputs, np.ndarray):
        np.save(path, np.ascontiguousarray(inputs, dtype=np.float32))
        return
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                 "fortran_order": False, "shape": tuple(inputs.shape)})
        for start in range(0, len(inputs), CHUNK):
            fh.write(np.ascontiguousarray(inputs[start:start + CHUNK], dtype=np.float32).tobytes())


def child_main(argv, work) -> int:
    """The child's side of `run_child`: `work(payload)` on the JSON payload in argv[0]. What it returns
    (a dict; {"ok": true} when None) is printed as the last JSON line; an EdgeclsError becomes its
    one line, "edgecls: error: ...", on stderr and exit status 2."""
    payload = json.loads(argv[0])
    try:
        result = work(payload)
    except EdgeclsError as exc:
        print(f"edgecls: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"ok": True} if result is None else result))
    return 0


def _outputs_work(payload: dict) -> None:
    if payload.get("mode") != "outputs":
        raise ExportError(f"unknown mode {payload.get('mode')!r}")
    from .backends import open_backend

    backend = open_backend(payload["file"], payload.get("threads"), layout=payload.get("layout", "NHWC"))
    # In batches of CHUNK, read from the file as they are needed: a model whose batch is dynamic
    # would otherwise be resized to every image at once (gigabytes of activations for 10,000).
    inputs = np.load(payload["inputs"], mmap_mode="r", allow_pickle=False)
    result = np.concatenate([np.asarray(backend.run(np.asarray(inputs[i:i + CHUNK])), dtype=np.float32)
                             for i in range(0, len(inputs), CHUNK)]) if len(inputs) else np.zeros((0,), np.float32)
    np.save(payload["out"], result)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:], _outputs_work))
