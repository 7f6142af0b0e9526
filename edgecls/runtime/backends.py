"""Inference backends: LiteRT for .tflite (falling back to tflite_runtime, then TensorFlow's
interpreter), onnxruntime for .onnx. numpy only besides the backend itself; no TensorFlow unless
it is the last-resort TFLite interpreter."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..errors import DependencyError, ModelError, first_line

_RUNTIME_HINT = "install the runtime extra: pip install 'edgecls[runtime]'"


def tflite_interpreter_class():
    """The TFLite interpreter class and the name of the package it came from."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # older Raspberry Pi installs

        return Interpreter, "tflite-runtime"
    except ImportError:
        pass
    try:
        from .._deps import tensorflow

        return tensorflow().lite.Interpreter, "tensorflow"
    except DependencyError:
        raise DependencyError(f"no TFLite interpreter found (ai-edge-litert, tflite-runtime or tensorflow); {_RUNTIME_HINT}") from None


def quantize(x: np.ndarray, dtype, scale: float, zero_point: int) -> np.ndarray:
    """Float values as the integer codes of a quantized tensor (round to nearest, clip to `dtype`)."""
    info = np.iinfo(dtype)
    q = np.round(x / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """A quantized tensor's codes as the float values they stand for."""
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


# Images per interpreter call at most when a model's batch is dynamic: a larger call is split.
MAX_BATCH = 256


class TFLiteBackend:
    """A TFLite model. `run(x)` takes the normalized float32 NHWC batch and returns float32
    outputs, quantizing int8/uint8 inputs and dequantizing outputs with the tensors' scale and
    zero point. A lock serializes calls: one interpreter must not run on two threads at once."""

    format = "tflite"

    def __init__(self, path: str | Path, threads: int | None = None):
        path = Path(path)
        Interpreter, self.package = tflite_interpreter_class()
        from .._deps import native_logs_hidden

        try:
            with native_logs_hidden():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: not a loadable TFLite model ({first_line(exc)})") from None
        self.path = path
        self.threads = threads
        self._lock = threading.Lock()
        inp = self.interpreter.get_input_details()
        out = self.interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ModelError(f"{path}: expected one input and one output tensor, found {len(inp)} and {len(out)}")
        self.input, self.output = inp[0], out[0]
        self.input_shape = tuple(int(v) for v in self.input["shape"])
        signature = self.input.get("shape_signature", self.input["shape"])
        self.dynamic_batch = int(signature[0]) == -1
        self._batch = self.input_shape[0]
        self._input_view = None  # interpreter.tensor() accessor, renewed when tensors are reallocated
        self._output_table = None
        self._float_output = self.output_dtype == np.float32
        if self.output_dtype in (np.int8, np.uint8):
            # Dequantization of a byte is one of 256 values: precompute them (same arithmetic).
            scale, zero = self.output["quantization"]
            codes = np.arange(256, dtype=np.uint8).view(self.output_dtype)
            self._output_table = dequantize(codes, scale, zero)

    @property
    def input_dtype(self):
        return np.dtype(self.input["dtype"])

    @property
    def output_dtype(self):
        return np.dtype(self.output["dtype"])

    @property
    def output_shape(self) -> tuple:
        return tuple(int(v) for v in self.output["shape"])

    @property
    def input_quantization(self):
        return tuple(self.input["quantization"])

    @property
    def output_quantization(self):
        return tuple(self.output["quantization"])

    def prepare(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input_dtype
        if dtype in (np.int8, np.uint8, np.int16):  # int16: int16-activation models (int16x8)
            scale, zero = self.input["quantization"]
            return quantize(x, dtype, scale, zero)
        return x.astype(dtype, copy=False)

    def finish(self, y: np.ndarray) -> np.ndarray:
        if self._output_table is not None:
            return self._output_table.take(y.view(np.uint8))  # take: faster than indexing on small arrays
        if self._float_output:  # get_tensor already returned a fresh float32 copy
            return y
        if self.output_dtype == np.int16:
            scale, zero = self.output["quantization"]
            return dequantize(y, scale, zero)
        return y.astype(np.float32, copy=False)

    def invoke_raw(self, tensor: np.ndarray) -> np.ndarray:
        """set_tensor + invoke + get_tensor on an already prepared (quantized) tensor."""
        interp = self.interpreter
        interp.set_tensor(self.input["index"], tensor)
        interp.invoke()
        return interp.get_tensor(self.output["index"])

    def _ensure_batch(self, n: int) -> None:
        """Resize a dynamic-batch model to batch n (call with the lock held)."""
        if self.dynamic_batch and n != self._batch:
            self.interpreter.resize_tensor_input(self.input["index"], (n, *self.input_shape[1:]))
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self._batch = n
            self._input_view = None

    def run_fill(self, n: int, fill) -> np.ndarray | None:
        """Run n images by letting `fill(buffer)` write the prepared input straight into the
        interpreter's input tensor (no intermediate array, no set_tensor copy). Returns the raw
        output, or None when n does not fit the model's batch (the caller then uses `run`)."""
        with self._lock:
            self._ensure_batch(n)
            if n != self._batch:
                return None
            if self._input_view is None:
                self._input_view = self.interpreter.tensor(self.input["index"])
            fill(self._input_view())
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self.output["index"])

    @property
    def output_table(self) -> np.ndarray | None:
        """The 256 float values an int8/uint8 output byte dequantizes to; None for other outputs."""
        return self._output_table

    def bind_fill(self, n: int, fill):
        """`run_fill` for batches of n, bound once: a function of the images that takes the lock,
        lets `fill(images, buffer)` write the input tensor, invokes, and returns the outputs already
        dequantized (float32). Everything `run_fill` and `finish` decide per call is decided here,
        so a call runs a few lines of Python around the interpreter (that work slows the invoke
        after it too). None when n does not fit the model's batch or the output is neither bytes
        nor float; the bound function returns None once the interpreter's batch has changed (a
        `run` on another batch size), and the caller then takes the general path."""
        with self._lock:
            self._ensure_batch(n)
            if n != self._batch:
                return None
        table = self._output_table
        if table is None and not self._float_output:
            return None
        interp, lock, out_index = self.interpreter, self._lock, self.output["index"]
        view = interp.tensor(self.input["index"])

        def run(images):
            with lock:
                if self._batch != n:
                    return None
                fill(images, view())
                interp.invoke()
                raw = interp.get_tensor(out_index)
            return table.take(raw.view(np.uint8)) if table is not None else raw

        return run

    def run(self, x: np.ndarray, raw: bool = False) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        n = x.shape[0]
        with self._lock:
            self._ensure_batch(min(n, MAX_BATCH))  # activations of every image at once could take gigabytes
            step = self._batch
            outputs = []
            for start in range(0, n, step):
                chunk = x[start:start + step]
                if chunk.shape[0] != step:  # a fixed-batch model: pad the last chunk
                    pad = np.zeros((step - chunk.shape[0], *chunk.shape[1:]), np.float32)
                    y = self.invoke_raw(self.prepare(np.concatenate([chunk, pad])))[: chunk.shape[0]]
                else:
                    y = self.invoke_raw(self.prepare(chunk))
                outputs.append(y.copy())
        y = np.concatenate(outputs)
        return y if raw else self.finish(y)


class ONNXBackend:
    """An ONNX model on onnxruntime's CPU provider. onnxruntime sessions are safe to call from
    several threads."""

    format = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None, layout: str = "NHWC"):
        try:
            import onnxruntime as ort
        except ImportError:
            raise DependencyError(f"onnxruntime is not installed; {_RUNTIME_HINT}") from None
        path = Path(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ModelError(f"{path}: not a loadable ONNX model ({first_line(exc, 200)})") from None
        self.package = f"onnxruntime {ort.__version__}"
        self.path = path
        self.threads = threads
        self.layout = layout
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{path}: expected one input and one output, found {len(inputs)} and {len(outputs)}")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in inputs[0].shape)
        self.output_shape = tuple(d if isinstance(d, int) else -1 for d in outputs[0].shape)
        self.dynamic_batch = self.input_shape[0] == -1

    def invoke_raw(self, tensor: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: tensor})[0]

    def run(self, x: np.ndarray, raw: bool = False) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.layout == "NCHW":
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if self.dynamic_batch:
            return np.concatenate([self.invoke_raw(x[i:i + MAX_BATCH]).astype(np.float32, copy=False)
                                   for i in range(0, x.shape[0], MAX_BATCH)]) if x.shape[0] > MAX_BATCH else \
                self.invoke_raw(x).astype(np.float32, copy=False)
        step = self.input_shape[0]
        outs = []
        for start in range(0, x.shape[0], step):
            chunk = x[start:start + step]
            n = chunk.shape[0]
            if n != step:
                chunk = np.concatenate([chunk, np.zeros((step - n, *chunk.shape[1:]), np.float32)])
            outs.append(self.invoke_raw(chunk)[:n])
        return np.concatenate(outs).astype(np.float32, copy=False)


# Every format the runtime runs: file suffix -> (backend, the runtime's name). The isolated runner and
# the runtime find their backend here.
BACKENDS = {".tflite": (TFLiteBackend, "LiteRT"), ".onnx": (ONNXBackend, "onnxruntime")}


def open_backend(path: str | Path, threads: int | None = None, layout: str = "NHWC"):
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if path.suffix not in BACKENDS:
        raise ModelError(f"{path}: unknown model format {path.suffix!r}; expected {' or '.join(BACKENDS)}")
    backend = BACKENDS[path.suffix][0]
    return backend(path, threads, layout) if backend is ONNXBackend else backend(path, threads)
