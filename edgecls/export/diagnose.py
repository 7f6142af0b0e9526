"""Where a quantized model loses accuracy: the error of every layer against the float model.

Both files run on the same calibration images with every intermediate tensor kept (LiteRT with
`experimental_preserve_all_tensors`, without the XNNPACK delegate so no layer is fused away;
onnxruntime through its quantization debugger, which makes every node output a graph output).
A layer of the quantized file is matched to the float file's by its output tensor: by name in
TFLite (the converter and LiteRT quantizer keep the float model's names; files with stripped
names match by position when both files have the same operators); in ONNX through its
DequantizeLinear(QuantizeLinear(X)) pair, X being the float model's tensor.

Per layer, two numbers in dB, the signal-to-quantization-noise ratio of onnxruntime's debugger,
`20 log10(|float| / |float - quantized|)` over all images:
  sqnr_db   the layer's output in the quantized model against the float model's: the error so far.
  own_db    the SQNR of the error the layer adds by itself: relative noise powers (10^(-sqnr/10))
            add up when a new error is independent of what reaches the layer, so the layer's own
            noise is its output's minus its inputs' (summed over the inputs of a layer that joins
            branches, such as a residual Add, so the branches' errors are not blamed on the join);
            CAP_DB when it added none.
The ranking is by own_db, lowest (worst) first: an error born early would otherwise show up again in
every layer after it.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ExportError, first_line

DIAGNOSIS_IMAGES = 32
CAP_DB = 120.0  # a tensor reproduced exactly (or to float precision)
METRIC = "SQNR dB: 20*log10(|float| / |float - quantized|) over the calibration images"


def sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    """onnxruntime's compute_signal_to_quantization_noice_ratio, capped at CAP_DB."""
    ref = np.asarray(reference, np.float64).ravel()
    diff = ref - np.asarray(other, np.float64).ravel()
    return _db(float(np.linalg.norm(ref)), float(np.linalg.norm(diff)))


def _db(ref_norm: float, diff_norm: float) -> float:
    eps = np.finfo(np.float32).eps
    return round(min(20 * math.log10(max(ref_norm, eps) / max(diff_norm, eps)), CAP_DB), 2)


class _Sums:
    """`sqnr_db` over many batches without keeping them: per key, the running sums of the float
    tensor's squares and of the difference's squares (the two norms' squares)."""

    def __init__(self):
        self.sums: dict = {}

    def add(self, key, reference: np.ndarray, other: np.ndarray) -> None:
        ref = np.asarray(reference, np.float64).ravel()
        diff = ref - np.asarray(other, np.float64).ravel()
        total = self.sums.setdefault(key, [0.0, 0.0])
        total[0] += float(ref @ ref)
        total[1] += float(diff @ diff)

    def db(self) -> dict:
        return {key: _db(math.sqrt(r), math.sqrt(d)) for key, (r, d) in self.sums.items()}


# Images run through both files at a time: every intermediate tensor of a batch is held, never of
# all the images (a 96x96 MobileNetV2 keeps about 13 MB of them per image and file).
STEP = 4


def diagnose(float_file: str | Path, quantized_file: str | Path, images: np.ndarray, layout: str = "NHWC") -> dict:
    """Per-layer error of `quantized_file` against `float_file` (the same model before
    quantization, same format) on `images` (the float model's input, NHWC; transposed for NCHW).
    Returns {"images", "metric", "layers": [{name, op, sqnr_db, added_db}] in graph order}.

    Runs in a child process (`python -m edgecls.export.diagnose`: numpy and the runtimes, no
    TensorFlow): every intermediate tensor of both files is kept, which for a 96x96 MobileNetV2 is
    hundreds of megabytes that the export's own process would otherwise keep as its peak, and a
    runtime that crashes on an augmented graph fails the diagnosis, not the export."""
    from ..runtime.isolated import run_job, save_float32

    with tempfile.TemporaryDirectory(prefix="edgecls-diagnose-") as tmp:
        given, out = Path(tmp) / "images.npy", Path(tmp) / "diagnosis.json"
        save_float32(given, images)
        payload = {"float": str(float_file), "quantized": str(quantized_file), "images": str(given),
                   "layout": layout, "out": str(out)}
        try:
            run_job(__name__, payload, out, "the per-layer diagnosis", CHILD_TIMEOUT_S)
        except ExportError as exc:
            reason = str(exc)
            raise ExportError(reason if reason.startswith("per-layer diagnosis") else f"per-layer diagnosis failed: {reason}") from None
        import json

        return json.loads(out.read_text())


CHILD_TIMEOUT_S = 1800.0


def _child_work(payload: dict) -> None:
    """`diagnose`'s work, in the child."""
    import json

    found = _diagnose_here(payload["float"], payload["quantized"], np.load(payload["images"], allow_pickle=False),
                           payload["layout"])
    Path(payload["out"]).write_text(json.dumps(found))


def _diagnose_here(float_file, quantized_file, images: np.ndarray, layout: str) -> dict:
    images = np.asarray(images, np.float32)
    if layout == "NCHW":
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    suffix = Path(quantized_file).suffix
    try:
        if suffix == ".tflite":
            layers = _tflite_layers(Path(float_file), Path(quantized_file), images)
        elif suffix == ".onnx":
            layers = _onnx_layers(Path(float_file), Path(quantized_file), images)
        else:
            raise ExportError(f"no per-layer diagnosis for {suffix} files")
    except ExportError:
        raise
    except Exception as exc:  # a runtime that cannot keep intermediates of this file
        raise ExportError(f"per-layer diagnosis failed: {first_line(exc)}") from None
    if not layers:
        raise ExportError("per-layer diagnosis found no layer of the quantized file in the float file")
    return {"images": int(len(images)), "metric": METRIC, "layers": layers}


def ranked(diagnosis: dict) -> list[dict]:
    """The layers, the one that added the most error (lowest own_db) first."""
    return sorted(diagnosis.get("layers", []), key=lambda layer: (layer["own_db"], layer["sqnr_db"]))


def _finish(order: list[tuple[str, str, list, object, str]], values: dict, producers: dict) -> list[dict]:
    """Layers in graph order from (name, op, input keys, output key, scope: the name a quantizer
    addresses the layer by, for selective repair), the SQNR of each key and
    each key's producer inputs (to look through tensors without a twin back to ones with one)."""
    def upstream(key, seen) -> list[float]:
        if key in values:
            return [values[key]]
        if key in seen or key not in producers:
            return []  # a constant (weights) or a cycle
        seen.add(key)
        return [v for k in producers[key] for v in upstream(k, seen)]

    layers = []
    for name, op, ins, out, scope in order:
        if out not in values:
            continue
        reaching = []
        for k in dict.fromkeys(ins):  # each distinct input once
            found = upstream(k, set())
            if found:
                reaching.append(min(found))
        layers.append({"name": name, "op": op, "sqnr_db": values[out], "own_db": own_db(reaching, values[out]),
                       "scope": scope})
    return layers


def _noise(db: float) -> float:
    return 10 ** (-min(db, CAP_DB) / 10)


def own_db(inputs: list[float], after: float) -> float:
    """The SQNR of the noise a layer adds, from the SQNRs of what reaches it and of its output."""
    added = _noise(after) - sum(_noise(db) for db in inputs)
    return CAP_DB if added <= _noise(CAP_DB) else round(min(CAP_DB, -10 * math.log10(added)), 2)


# TFLite ---------------------------------------------------------------------------------------

class _TFLiteAll:
    """A TFLite file run with every op's output kept (no delegate): `values(images)` gives
    {tensor index: float values stacked over the images}."""

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        from .._deps import native_logs_hidden

        with native_logs_hidden():
            self.interp = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                                      experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.ops = self.interp._get_ops_details()
        self.details = {t["index"]: t for t in self.interp.get_tensor_details()}
        self.input_index = self.inp["index"]
        self.wanted = {i for op in self.ops for i in op["outputs"] if i >= 0} | {self.input_index}
        self.shape = list(self.inp["shape"])

    def values(self, images: np.ndarray) -> dict[int, np.ndarray]:
        from ..runtime.backends import dequantize, quantize

        interp, inp, details = self.interp, self.inp, self.details
        collected: dict[int, list[np.ndarray]] = {i: [] for i in self.wanted}
        for k in range(len(images)):
            x = images[k:k + 1]
            if inp["dtype"] != np.float32:
                x = quantize(x, inp["dtype"], *inp["quantization"])  # as the runtime feeds it
            if list(x.shape) != self.shape:
                interp.resize_tensor_input(inp["index"], list(x.shape))
                interp.allocate_tensors()
                self.shape = list(x.shape)
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            for i in self.wanted:
                value = interp.get_tensor(i)
                scale, zero = details[i]["quantization"]
                if value.dtype != np.float32 and scale:
                    value = dequantize(value, scale, zero)
                collected[i].append(np.asarray(value, np.float32).copy())
        return {i: np.concatenate(v) for i, v in collected.items() if v}


def _short(name: str) -> str:
    return name.split(";")[0] if name else name


def _tflite_layers(float_path: Path, quant_path: Path, images: np.ndarray) -> list[dict]:
    f_run, q_run = _TFLiteAll(float_path), _TFLiteAll(quant_path)
    f_ops, f_details, f_input = f_run.ops, f_run.details, f_run.input_index
    q_ops, q_details, q_input = q_run.ops, q_run.details, q_run.input_index
    by_name = {f_details[i]["name"]: i for op in f_ops for i in op["outputs"] if i >= 0 and f_details[i]["name"]}
    # Float twin of each quantized tensor: the input's is the input; QUANTIZE/DEQUANTIZE outputs
    # are their input's (re-rounded) value; others by name, else by position when the operators
    # line up.
    twin: dict[int, int] = {q_input: f_input}
    compute_ops = [op for op in q_ops if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE")]
    same_ops = [op["op_name"] for op in compute_ops] == [op["op_name"] for op in f_ops]
    position = 0
    for op in q_ops:
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            if op["inputs"][0] in twin:
                twin[op["outputs"][0]] = twin[op["inputs"][0]]
            continue
        for j, i in enumerate(op["outputs"]):
            name = q_details[i]["name"]
            if name and name in by_name:
                twin[i] = by_name[name]
            elif same_ops:
                twin[i] = f_ops[position]["outputs"][j]
        position += 1
    sums = _Sums()
    for start in range(0, len(images), STEP):
        f_values, q_values = f_run.values(images[start:start + STEP]), q_run.values(images[start:start + STEP])
        for i, f in twin.items():
            if f in f_values and i in q_values and f_values[f].shape == q_values[i].shape:
                sums.add(i, f_values[f], q_values[i])
    values = sums.db()
    producers = {i: [k for k in op["inputs"] if k >= 0] for op in q_ops for i in op["outputs"]}
    order = []
    for position, op in enumerate(compute_ops):
        out = op["outputs"][0]
        name = _short(q_details[out]["name"]) or f"{op['op_name'].lower()}_{position}"
        order.append((name, op["op_name"], [i for i in op["inputs"] if i >= 0], out, q_details[out]["name"]))
    return _finish(order, values, producers)


# ONNX -----------------------------------------------------------------------------------------

class _ONNXAll:
    """An ONNX file with every node output made a graph output (onnxruntime's quantization
    debugger): `values(images)` gives {tensor name: float values stacked over the images}."""

    def __init__(self, path: Path, augmented: Path):
        import onnx
        import onnxruntime as ort
        from onnxruntime.quantization import qdq_loss_debug as debug

        self.input_name = onnx.load(str(path), load_external_data=False).graph.input[0].name
        debug.modify_model_output_intermediate_tensors(str(path), str(augmented))
        options = ort.SessionOptions()  # as the debugger's collect_activations runs it: no fusion
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(str(augmented), sess_options=options, providers=["CPUExecutionProvider"])
        postfix = debug._TENSOR_SAVE_POSTFIX
        self.saved = {i: o.name[:-len(postfix)] for i, o in enumerate(self.session.get_outputs())
                      if o.name.endswith(postfix)}

    def values(self, images: np.ndarray) -> dict[str, np.ndarray]:
        collected: dict[str, list] = {}
        for k in range(len(images)):
            outputs = self.session.run(None, {self.input_name: images[k:k + 1]})
            for i, name in self.saved.items():
                collected.setdefault(name, []).append(np.asarray(outputs[i], np.float32))
        values = {k: np.concatenate(vs) for k, vs in collected.items() if vs}
        values.setdefault(self.input_name, np.asarray(images, np.float32))  # the input as given
        return values


def _onnx_layers(float_path: Path, quant_path: Path, images: np.ndarray) -> list[dict]:
    import onnx

    q_model = onnx.load(str(quant_path))
    produced_by = {out: node for node in q_model.graph.node for out in node.output}
    sums = _Sums()
    with tempfile.TemporaryDirectory(prefix="edgecls-diagnose-") as tmp:
        f_run, q_run = _ONNXAll(float_path, Path(tmp) / "float.onnx"), _ONNXAll(quant_path, Path(tmp) / "quantized.onnx")
        quantized_of: dict[str, str] | None = None
        for start in range(0, len(images), STEP):
            f_values = f_run.values(images[start:start + STEP])
            q_values = q_run.values(images[start:start + STEP])
            if quantized_of is None:  # the same tensors every batch: matched once
                # The quantized version of float tensor X: the output of DequantizeLinear(QuantizeLinear(X)).
                quantized_of = {}
                for node in q_model.graph.node:
                    if node.op_type == "DequantizeLinear":
                        q = produced_by.get(node.input[0])
                        if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in f_values:
                            quantized_of[q.input[0]] = node.output[0]
            for tensor, f in f_values.items():
                key = quantized_of.get(tensor, tensor)
                if key in q_values and q_values[key].shape == f.shape:
                    sums.add(tensor, f, q_values[key])
    values = sums.db()
    f_model = onnx.load(str(float_path))
    order = [(node.name or node.output[0], node.op_type, list(node.input), node.output[0], node.name)
             for node in f_model.graph.node if node.op_type not in ("Transpose", "Reshape", "Identity", "Flatten")]
    producers = {out: list(node.input) for node in f_model.graph.node for out in node.output}
    return _finish(order, values, producers)


def format_diagnosis(row: dict, top: int | None = None) -> str:
    """A variant's layers as text, the one that added the most error first."""
    found = row.get("diagnosis")
    if not found:
        why = row.get("diagnosis_error") or "not diagnosed (only post-training quantized variants are)"
        return f"{row['name']}: {why}"
    layers = ranked(found)
    shown = layers[:top] if top else layers
    width = max([len(layer["name"]) for layer in shown] + [5])
    lines = [f"{row['name']} ({row.get('description', '')}): per-layer error against the "
             f"{found.get('against', 'float model')}, on {found.get('images', '?')} calibration images; worst first",
             f"  {'layer':<{width}}  {'op':<18}{'own dB':>9}{'SQNR dB':>9}"]
    lines += [f"  {layer['name']:<{width}}  {layer['op']:<18}{layer['own_db']:>9.2f}{layer['sqnr_db']:>9.2f}"
              for layer in shown]
    if top and len(layers) > top:
        lines.append(f"  ... {len(layers) - top} more layers (--top 0 shows all)")
    output = found["layers"][-1]
    lines.append(f"  output SQNR {output['sqnr_db']:.2f} dB. SQNR: the layer's output against float so far; own: "
                 f"the error the layer adds by itself. Higher is closer to float; {CAP_DB:g} is exact.")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    from ..runtime.isolated import child_main

    sys.exit(child_main(sys.argv[1:], _child_work))
