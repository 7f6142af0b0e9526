"""Every JSON file edgecls reads is untrusted: it is parsed within bounds, then checked against the
schema of its kind before anything uses it.

Parsing (`load`, `parse`): a size limit fit for the kind, read from a regular file only (a FIFO or
a device never ends); nesting at most `MAX_DEPTH` levels, checked before the parser recurses;
integers of at most `MAX_INT_DIGITS` digits; no NaN or Infinity, and no number that overflows to
them. Checking (`check`): a JSON Schema per kind (jsonschema, Draft 2020-12) bounding types, ranges,
lengths and counts, then the cross-field rules a schema cannot state (a confusion matrix against the
class count). Every failure is one error of the caller's class naming the file, the field and what
was expected.

Kinds: "manifest" (bundle manifest.json), "labels", "preprocessing", "bench" (a bench report),
"tune" (tune.json), "optimize" (optimize.json), "train" (train.json), "history" (history.json),
"eval" (eval.json), "journal" (the export worker's own records).
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path

MAX_DEPTH = 64
MAX_INT_DIGITS = 40
MAX_FLOAT_CHARS = 64
MAX_CLASSES = 1000
MAX_INPUT_SIDE = 2048     # pixels: a small classifier's input side (2048 x 2048 x 3 float32 is 48 MiB)
MIB = 1 << 20
# The largest file of each kind edgecls reads (real ones are far smaller: a manifest of every
# variant with its diagnosis is under 1 MiB, a bench report under 200 KiB).
MAX_BYTES = {"manifest": 32 * MIB, "labels": 4 * MIB, "preprocessing": 64 * 1024, "bench": 32 * MIB,
             "tune": 64 * MIB, "optimize": 4 * MIB, "train": 4 * MIB, "history": 16 * MIB, "run": 1 * MIB, "eval": 16 * MIB,
             "journal": 64 * MIB, "model_config": 64 * MIB, None: 16 * MIB}


class _Bad(ValueError):
    pass


def load(path, what: str, error: type[Exception], kind: str | None = None):
    """The parsed JSON in `path` (and checked against the schema of `kind` when given); `error`
    naming `what` the file should be when it is missing, too large, not a regular file, malformed,
    nested too deep, holds a non-finite or oversized number, or breaks the schema."""
    path = Path(path)
    limit = MAX_BYTES.get(kind, MAX_BYTES[None])
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder, not a file") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{what} {path} is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what} {path} is not a regular file (a device, pipe or socket); give a JSON file")
        if info.st_size > limit:
            raise error(f"{what} {path} is {info.st_size:,} bytes, over the {limit:,} a {what} may have; not a file "
                        f"edgecls wrote")
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = None
            raw = fh.read(limit + 1)
    finally:
        if fd is not None:
            os.close(fd)
    if len(raw) > limit:
        raise error(f"{what} {path} is over the {limit:,} bytes a {what} may have; not a file edgecls wrote")
    data = parse(raw, f"{what} {path}", error)
    if kind is not None:
        check(data, kind, f"{path}", error)
    return data


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(rb"[\[\]{}]")


def depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in the JSON text `raw` (strings skipped)."""
    import numpy as np

    marks = _BRACKETS.findall(_STRINGS.sub(b"", raw))
    if not marks:
        return 0
    steps = np.frombuffer(b"".join(marks), dtype=np.uint8)
    steps = np.where((steps == ord("[")) | (steps == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Bad(f"holds an integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_FLOAT_CHARS:
        raise _Bad(f"holds a number written with {len(text)} characters (at most {MAX_FLOAT_CHARS})")
    value = float(text)
    if not math.isfinite(value):
        raise _Bad(f"holds the number {text[:24]}, which overflows to infinity")
    return value


def _constant(text: str):
    raise _Bad(f"holds {text}, which is not a number JSON allows (non-finite)")


def parse(raw, where: str, error: type[Exception], max_depth: int = MAX_DEPTH):
    """Parse JSON text (bytes or str) within the bounds above; `error` naming `where` otherwise."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    deepest = depth(raw)
    if deepest > max_depth:
        raise error(f"{where} nests {deepest} levels of arrays and objects (at most {max_depth}); not a file edgecls "
                    f"wrote")
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except _Bad as exc:
        raise error(f"{where} {exc}; not a file edgecls wrote") from None
    except UnicodeDecodeError:
        raise error(f"{where} is not UTF-8 text; not a JSON file") from None
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise error(f"{where} is not valid JSON ({str(exc).splitlines()[0][:200]})") from None


# -- schemas ---------------------------------------------------------------------------------------
def _s(n: int = 1000, **kw) -> dict:
    return {"type": "string", "maxLength": n, **kw}


def _n(lo=None, hi=None, integer: bool = False, null: bool = False) -> dict:
    out = {"type": ["integer" if integer else "number"] + (["null"] if null else [])}
    if lo is not None:
        out["minimum"] = lo
    if hi is not None:
        out["maximum"] = hi
    return out


def _i(lo=None, hi=None, null: bool = False) -> dict:
    return _n(lo, hi, integer=True, null=null)


def _a(items: dict, n: int, **kw) -> dict:
    # maxItems before items: `check` stops at a size error without validating every element.
    return {"type": "array", "maxItems": n, "items": items, **kw}


def _o(props: dict, required=(), extra=True, null: bool = False) -> dict:
    out = {"type": ["object", "null"] if null else "object", "properties": props}
    if required:
        out["required"] = list(required)
    if extra is not True:
        out["additionalProperties"] = extra
    return out


def _map(values: dict, n: int = 256, null: bool = False) -> dict:
    return {"type": ["object", "null"] if null else "object", "maxProperties": n, "additionalProperties": values}


def _opt(schema: dict) -> dict:
    """`schema` or null."""
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        return {**schema, "type": [*kinds, "null"] if "null" not in kinds else kinds}
    return {"anyOf": [schema, {"type": "null"}]}


BIG = 1e15                      # bytes, counts and milliseconds stay far below this
NAME = _s(200, minLength=1)     # a variant, layer or class name
SHA256 = _s(64, pattern="^[0-9a-f]{64}$")
FRACTION = _n(0, 1, null=True)
COUNT = _i(0, BIG, null=True)
MS = _n(0, BIG, null=True)
TEXT = _s(20000)                # a reason, a warning, a description
RUNTIME = _map(_s(200), 64)
HOST = _o({"hostname": _s(255), "cpu": _s(255), "cpu_flags": _opt(_a(_s(64), 4096)), "int8_class": _opt(_s(64)),
           "cores": _i(1, 1 << 20, null=True), "arch": _s(64), "os": _s(512), "python": _s(64),
           "runtime": RUNTIME}, extra=True)
LATENCY = _o({k: MS for k in ("mean", "p50", "p90", "p99", "std")} | {"runs": COUNT})
DIAGNOSIS = _o({"layers": _a(_o({"name": _s(1000), "op": _s(200), "sqnr_db": _n(-1e6, 1e6),
                                   "own_db": _n(-1e6, 1e6), "scope": _opt(_s(1000))},
                                  required=("name", "op", "sqnr_db", "own_db")), 100000, minItems=1),
                "against": _s(200), "images": _i(0, BIG), "metric": _opt(_s(200))},
               required=("layers",))
CONFUSION = _a(_a(_i(0, BIG), MAX_CLASSES), MAX_CLASSES)
PER_CLASS = _map(_n(0, 1), MAX_CLASSES)
TENSOR = _o({"name": _s(1000), "shape": _a(_i(-1, 1 << 31, null=True), 8), "dtype": _s(32),
             "quantization": _opt({"type": ["object", "array"]})})
VALIDATION = _o({"agreement": FRACTION, "accuracy": FRACTION, "max_abs_diff": _n(0, null=True), "images": COUNT,
                 "budget_points": _opt(_n(0, 100)),
                 "conversion": _opt(_o({"agreement": FRACTION, "accuracy": FRACTION, "max_abs_diff": _n(0, null=True),
                                        "reason": TEXT, "status": _s(32), "reference": _s(200)})),
                 "reason": TEXT, "host": _opt(_o({"cpu": _s(255), "arch": _s(64), "cpu_flags": _opt(_a(_s(64), 4096)),
                                                  "int8_class": _opt(_s(64)), "runtime": RUNTIME}))})
SIZE = _o({"bytes": COUNT, "gzip_bytes": COUNT})
MICRO = _o({"runtime": _s(200), "verdict": {"enum": ["ok", "unsupported", "error"]}, "status": _s(32), "reason": _opt(TEXT),
            "ops": _a(_o({"op": _s(100), "layers": _a(_s(1000), 100000)}, required=("op",)), 1000),
            "missing_ops": _a(_o({"op": _s(100), "layers": _a(_s(1000), 100000)}, required=("op",)), 1000),
            "arena_bytes": COUNT, "arena_fails_at": COUNT, "flash_bytes": COUNT, "io_bytes": COUNT, "ram_bytes": COUNT,
            "host_ms_per_image": MS, "images": COUNT, "validation": _opt(VALIDATION),
            "litert": _o({"agreement": FRACTION, "max_step_diff": _i(0, 1 << 16), "images_differing": FRACTION}),
            "resolver": _a(_s(100, pattern="^Add[A-Za-z0-9]+$"), 1000),
            "sources": _a(_o({"file": _s(255, minLength=1), "sha256": SHA256}, required=("file", "sha256"), extra=False), 16)},
           required=("verdict",))
ARTIFACT = _o({"name": NAME, "file": _s(255, minLength=1), "sha256": SHA256, "format": _s(32, minLength=1),
               "precision": _s(64), "sparsity": FRACTION, "sparsity_source": _opt(_s(64)), "source": _opt(_s(1000)),
               "engine": _opt(_s(200)), "layout": _opt(_s(16)), "inputs": _a(TENSOR, 64), "outputs": _a(TENSOR, 64),
               "size": SIZE, "validation": _opt(VALIDATION), "diagnosis": _opt(DIAGNOSIS), "diagnosis_error": _opt(TEXT),
               "micro": _opt(MICRO), "description": _opt(TEXT), "reason": _opt(TEXT), "status": _opt(_s(32)),
               "external_data": _a(_o({"file": _s(255, minLength=1), "sha256": SHA256}, required=("file", "sha256"),
                                      extra=False), 64)},
              required=("name", "file", "sha256", "format"))
REJECTED = _o({"name": NAME, "file": _opt(_s(255, minLength=1)), "reason": _opt(TEXT), "status": _opt(_s(32)),
               "validation": _opt(VALIDATION), "diagnosis": _opt(DIAGNOSIS), "diagnosis_error": _opt(TEXT)},
              required=("name",))
MODEL = _o({"classes": _i(1, 100000), "input_shape": _a(_i(-1, 1 << 20, null=True), 8), "source": _opt(_s(4096)),
            "kind": _opt(_s(64)), "name": _opt(_s(1000)), "output": _opt(_s(64))})
SCHEMAS = {
    "manifest": _o({"schema": {"const": 1}, "edgecls_version": _opt(_s(64)), "created": _opt(_s(64)), "model": MODEL,
                    "labels": _s(255, minLength=1), "preprocessing": _s(255, minLength=1),
                    "files": _map(SHA256, 64), "reference": _o({"accuracy": FRACTION, "images": COUNT}, null=True),
                    "artifacts": _a(ARTIFACT, 1000), "rejected": _a(REJECTED, 1000), "omitted": _a(REJECTED, 1000),
                    "export_time_s": MS},
                   required=("schema", "artifacts")),
    "labels": _a(_s(1000), 100000, minItems=1),
    "preprocessing": _o({"input_size": _a(_i(1, MAX_INPUT_SIDE), 2, minItems=2), "scale": _n(1e-9, 1e6),
                         "mean": {"anyOf": [_n(-1e6, 1e6), _a(_n(-1e6, 1e6), 3, minItems=1)]},
                         "std": {"anyOf": [_n(1e-9, 1e6), _a(_n(1e-9, 1e6), 3, minItems=1)]},
                         "resize": _s(32), "layout": _s(8), "channels": _i(1, 4), "extra": _map({}, 64)},
                        extra=False),
    "bench": _o({"schema": {"const": 1}, "kind": {"const": "edgecls-bench"}, "created": _opt(_s(64)),
                 "bundle": _opt(_s(4096)), "model": _opt(_o({"classes": _i(1, 100000, null=True), "source": _opt(_s(4096)),
                                                               "kind": _opt(_s(64)), "name": _opt(_s(1000)),
                                                               "output": _opt(_s(64)),
                                                               "input_shape": _a(_i(-1, 1 << 20, null=True), 8)})),
                 "data": _opt(_s(4096)), "host": HOST,
                 "settings": _o({"threads": _i(0, 4096, null=True), "warmup": COUNT, "runs": COUNT, "batch": COUNT,
                                 "max_images": COUNT, "keras": _opt(_s(4096)), "tta": _opt(_s(32)), "repeats": COUNT,
                                 "emulated": {"type": ["boolean", "null"]}}),
                 "variants": _a(_o({"name": NAME, "status": _s(32), "format": _opt(_s(32)), "precision": _opt(_s(64)),
                                    "sparsity": FRACTION, "sparsity_source": _opt(_s(64)), "size_bytes": COUNT,
                                    "size_gzip_bytes": COUNT, "error": _opt(TEXT), "load_ms": MS, "latency_ms": _opt(LATENCY),
                                    "throughput_ips": MS, "peak_rss_mb": MS, "peak_rss_with_data_mb": MS,
                                    "accuracy": FRACTION, "images": COUNT, "per_class": _opt(PER_CLASS),
                                    "confusion": _opt(CONFUSION), "data": _opt(_s(4096)), "backend": _opt(_s(200)),
                                    "agreement": FRACTION, "agreement_reference": _opt(_s(200)), "warning": _opt(TEXT),
                                    "repeats": _opt(_o({"rounds": COUNT, "p50_ms": _a(_n(0, BIG), 1000),
                                                        "throughput_ips": _a(_n(0, BIG), 1000),
                                                        "load_ms": _a(_n(0, BIG), 1000)})),
                                    "diagnosis": _opt(DIAGNOSIS), "description": _opt(TEXT),
                                    "micro_verdict": _opt({"enum": ["ok", "unsupported", "error"]}),
                                    "micro_status": _opt(_s(32)), "micro_reason": _opt(TEXT),
                                    "micro_arena_bytes": COUNT, "micro_flash_bytes": COUNT, "micro_ram_bytes": COUNT,
                                    "micro_host_ms": MS, "micro_agreement": FRACTION, "micro_litert_agreement": FRACTION,
                                    "macs": COUNT, "export_agreement": FRACTION, "export_warning": _opt(TEXT), "degenerate": _opt(TEXT),
                                    "correct_bits": _opt(_s(1 << 21, pattern="^[A-Za-z0-9+/]*={0,2}$"))},
                                   required=("name", "status")), 1000),
                 "rejected": _a(_o({"name": NAME, "status": _s(32), "reason": _opt(TEXT)}, required=("name",)), 1000),
                 "wall_time_s": MS},
                required=("schema", "kind", "host", "variants")),
    "tune": _o({"kind": {"const": "edgecls-tune"}, "schema": {"const": 1}, "created": _opt(_s(64)),
                "model": _s(4096), "data": _s(4096), "space": _map({}, 64),
                "stages": {"type": "object", "maxProperties": 256,
                           "propertyNames": {"pattern": "^[a-z0-9][a-z0-9-]{0,63}$"},
                           "additionalProperties": _o({"bundle": _s(300), "why": _opt(TEXT), "seconds": MS,
                                                       "variants": _a(NAME, 1000), "same_file_as": _map(_s(300), 1000)})},
                "candidates": _a(_o({"id": _s(300, pattern=r"^[A-Za-z0-9_.:+-]+@[0-9]+t$"),
                                     "artifact": _s(300, pattern=r"^[A-Za-z0-9_]+(:[a-z0-9-]+)?(\+repair)?$"),
                                     "stage": _s(64, pattern="^[a-z0-9][a-z0-9-]{0,63}$"), "variant": _s(200, pattern=r"^[A-Za-z0-9_]+$"),
                                     "format": _opt(_s(32)), "precision": _opt(_s(64)), "engine": _opt(_s(200)),
                                     "sparsity": FRACTION, "file": _opt(_s(255)), "sha256": _opt(SHA256),
                                     "status": _s(32), "reason": _opt(TEXT), "accuracy": FRACTION, "agreement": FRACTION,
                                     "drop": _n(-100, 100, null=True), "bytes": COUNT, "gzip_bytes": COUNT,
                                     "threads": _i(1, 4096), "latency_ms": MS,
                                     "latency_rounds_ms": _a(_n(0, BIG), 1000), "rank": COUNT,
                                     "ram_bytes": COUNT, "flash_bytes": COUNT, "arena_bytes": COUNT,
                                     "micro_status": _opt(_s(32)), "micro_reason": _opt(TEXT)},
                                    required=("id", "artifact", "stage", "variant", "status", "threads")), 20000),
                "elapsed_s": MS, "resumed": COUNT, "reference": _opt(_o({"accuracy": FRACTION, "images": COUNT}))},
               required=("kind", "schema", "model", "data", "stages", "candidates")),
    "optimize": _o({"variants": _map(_o({"accuracy": FRACTION, "kernel_sparsity": FRACTION}), 64),
                    "base_accuracy": FRACTION, "test_images": COUNT}, required=("variants",)),
    "train": _o({"arch": _s(200), "test_accuracy": FRACTION}),
    "history": _a(_o({"epoch": _i(1, 1000000)}, required=("epoch",)), 1000000),
    "run": _o({"arch": _s(200), "epochs": _i(1, 1000000)}, required=("arch",)),
    "eval": _o({"top1": FRACTION, "confusion_matrix": CONFUSION}),
    "journal": {"type": ["object", "array"]},
}


def check(data, kind: str, where: str, error: type[Exception]) -> None:
    """`error` naming the first field of `data` that breaks the schema of `kind`, or a rule across
    fields; returns quietly when `data` is good."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    errors = _validator(kind, Draft202012Validator).iter_errors(data)
    first = next(errors, None)
    # A container over its size limit is reported at once: validating each of its elements first (a
    # 1,500 x 1,500 matrix is 2.25 million) would take a minute to refuse a few megabytes.
    found = first if first is None or first.validator in _SIZE_LIMITS else best_match([first, *errors])
    if found is not None:
        raise error(f"{where}: {field(found.absolute_path)} {_expected(found)}; not a {_WHAT[kind]} edgecls wrote "
                    f"(or it was edited): {_REDO[kind]}")
    for problem in _cross_checks(data, kind):
        raise error(f"{where}: {problem}; not a {_WHAT[kind]} edgecls wrote (or it was edited): {_REDO[kind]}")


_SIZE_LIMITS = ("maxItems", "maxLength", "maxProperties")
_WHAT = {"manifest": "bundle manifest", "labels": "labels file", "preprocessing": "preprocessing spec",
         "bench": "bench report", "tune": "tune record", "optimize": "optimize record", "train": "training record",
         "history": "training history", "run": "run record", "eval": "eval report", "journal": "export journal"}
_REDO = {"manifest": "re-export or re-copy the bundle", "labels": "give a JSON list of class names",
         "preprocessing": "fix it or re-export", "bench": "re-run the bench", "tune": "choose a new --out",
         "optimize": "run 'edgecls optimize' again", "train": "train again", "history": "train again", "run": "delete that folder and train again",
         "eval": "run 'edgecls eval' again", "journal": "export again"}
_validators: dict = {}


def _validator(kind: str, cls):
    if kind not in _validators:
        _validators[kind] = cls(SCHEMAS[kind])
    return _validators[kind]


def field(path) -> str:
    """A JSON path as a reader writes it: variants[0].latency_ms.p50."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return repr(out[:200]) if out else "the top level"


def _expected(err) -> str:
    kind, value = err.validator, err.validator_value
    got = _JSON_TYPES.get(type(err.instance).__name__, type(err.instance).__name__)
    if kind == "type":
        want = " or ".join(_JSON_TYPES[t] for t in ([value] if isinstance(value, str) else value))
        return f"must be {want}, got {got}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"is {err.instance!r:.40}, out of range ({kind} {value})"
    if kind in ("maxLength", "maxItems", "maxProperties"):
        return f"is too long (at most {value})"
    if kind in ("minLength", "minItems"):
        return f"is too short (at least {value})"
    if kind == "required":
        return f"lacks a required key ({str(err.message)[:100]})"
    if kind == "const":
        return f"must be {value!r}, got {err.instance!r:.40}"
    if kind in ("pattern", "propertyNames"):
        return f"is not a plain name ({str(err.message)[:120]})"
    if kind == "additionalProperties":
        return f"has an unknown key ({str(err.message)[:120]})"
    if kind == "anyOf":
        return f"has the wrong type or range (got {got} {err.instance!r:.40})"
    return str(err.message)[:200]


_JSON_TYPES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false", "NoneType": "null",
               "list": "a list", "dict": "an object", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null", "array": "a list", "object": "an object"}


def _cross_checks(data, kind: str):
    """Rules across fields (sizes inside a file checked against each other)."""
    if kind == "bench":
        classes = (data.get("model") or {}).get("classes")
        for i, v in enumerate(data.get("variants", [])):
            cm, per_class = v.get("confusion"), v.get("per_class")
            if cm:
                n = len(cm)
                if any(len(row) != n for row in cm):
                    yield f"variants[{i}].confusion is not a square matrix"
                if per_class and len(per_class) != n:
                    yield f"variants[{i}].confusion has {n} rows but per_class names {len(per_class)} classes"
                if isinstance(classes, int) and n != classes:
                    yield f"variants[{i}].confusion has {n} rows but the model has {classes} classes"
    if kind == "manifest":
        classes = (data.get("model") or {}).get("classes")
        for i, art in enumerate(data.get("artifacts", [])):
            if classes and isinstance(art.get("outputs"), list):
                for t in art["outputs"]:
                    shape = t.get("shape") if isinstance(t, dict) else None
                    if shape and isinstance(shape[-1], int) and shape[-1] > 0 and shape[-1] != classes:
                        yield f"artifacts[{i}].outputs has {shape[-1]} classes but model.classes is {classes}"
