"""Benchmark of a bundle's variants: load time, batch-1 latency, throughput, peak memory, accuracy,
agreement with the fp32 reference, size. numpy + the runtime only: no TensorFlow. With labelled data,
each variant's accuracy and agreement are set beside the figures of its validation at export
(edgecls.bench.crosscheck): a variant this machine computes worse gets a `warning` with the likely cause.

Each variant runs in its own child process, so its peak resident memory is its own (a process's
peak never goes down) and a variant that crashes its backend becomes a failed row instead of ending
the run. The report is written only when every variant is done (atomically): an interrupted bench
leaves no partial report.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from statistics import median_low

import numpy as np

from ..config import BenchConfig
from ..errors import ConfigError, DataError
from ..hostinfo import host_info, runtime_versions

REPORT_SCHEMA = 1


def latency_stats(samples_ms) -> dict:
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "mean": round(float(a.mean()), 4),
        "p50": round(float(np.percentile(a, 50)), 4),
        "p90": round(float(np.percentile(a, 90)), 4),
        "p99": round(float(np.percentile(a, 99)), 4),
        "std": round(float(a.std()), 4),
        "runs": int(a.size),
    }


def time_calls(fn, warmup: int = 20, runs: int = 200) -> dict:
    """Call `fn()` `warmup` times untimed, then `runs` times timed; milliseconds per call."""
    for _ in range(warmup):
        fn()
    samples = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        fn()
        samples[i] = (time.perf_counter() - start) * 1000.0
    return latency_stats(samples)


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    On Linux, VmHWM of /proc/self/status: the high-water mark of this program's own memory.
    getrusage's ru_maxrss would be wrong in a child process: it survives exec and starts at the
    parent's size at fork time."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def _external_data(file: Path, data: bytes, folder: Path, taken=frozenset()) -> list[dict]:
    """Copy the files an ONNX model keeps its weights in (external data, beside it) into `folder`;
    their manifest entries with sha256."""
    import shutil

    from ..bundle import sha256_file
    from ..runtime.onnxfile import external_files

    entries = []
    for name in external_files(data, str(file)):
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise ConfigError(f"{file} keeps weights in {name!r}, not in a file beside it; save the model with its "
                              f"external data beside it (or in the .onnx file itself)")
        if name in taken:
            raise ConfigError(f"{file} keeps its weights in {name}, the name of another file benched with it; copy "
                              f"one of the models under another name")
        source = file.parent / name
        if not source.is_file():
            raise ConfigError(f"{file} keeps its weights in {name}, which is not beside it ({source} is missing); copy "
                              f"that file next to the model")
        shutil.copyfile(source, folder / name)
        entries.append({"file": name, "sha256": sha256_file(folder / name)})
    return entries


def bundle_for_file(file: str | Path, folder: str | Path, preprocessing: dict | None, labels=None,
                    reference: str | Path | None = None) -> Path:
    """A bundle in `folder` around a lone .tflite/.onnx file, so bench measures it like any variant:
    its preprocessing from `preprocessing` (scale/mean/std; the input size and layout are read from
    the file), its labels from `labels` (default: class indices), its precision read from the file.
    `reference`: the float file it was made from (the same input and classes), a second variant
    named `<format>_fp32` that the file's agreement is measured against. No validation is recorded
    (edgecls did not make the files), so no departure from it can be warned about."""
    from ..bundle import write_bundle
    from ..runtime import backend_classes, open_lone_file, spec_for_file

    file, folder = Path(file), Path(folder)
    if preprocessing is None:
        raise ConfigError(f"{file} is not inside a bundle: pass its preprocessing (--scale, --mean, --std)")
    backend, layout = open_lone_file(file)
    spec = spec_for_file(backend, layout, preprocessing)
    classes = backend_classes(backend)
    labels = list(labels) if labels else [str(i) for i in range(classes or 0)]
    if classes is not None and len(labels) != classes:
        raise ConfigError(f"{len(labels)} labels given but {file} outputs {classes} classes")
    folder.mkdir(parents=True, exist_ok=True)
    rows = [_file_row(file, folder, backend, layout, file.stem, "(not made by edgecls)")]
    if reference is not None:
        reference = Path(reference)
        ref_backend, ref_layout = open_lone_file(reference)
        ref_spec = spec_for_file(ref_backend, ref_layout, preprocessing)
        if tuple(ref_spec.input_size) != tuple(spec.input_size) or backend_classes(ref_backend) != classes:
            raise ConfigError(f"--reference {reference} takes {ref_spec.input_size[0]}x{ref_spec.input_size[1]} images "
                              f"and outputs {backend_classes(ref_backend)} classes; {file} takes "
                              f"{spec.input_size[0]}x{spec.input_size[1]} and outputs {classes}: give the float model "
                              f"{file.name} was made from")
        name = f"{reference.suffix.lstrip('.')}_fp32"
        if name == rows[0]["name"]:
            rows[0]["name"] = f"{name}_file"
        taken = {rows[0]["file"], *(e["file"] for e in rows[0].get("external_data", []))}
        if reference.name in taken:
            raise ConfigError(f"--reference {reference} has the file name of {file} (or of its weights); copy one "
                              f"under another name")
        rows.insert(0, _file_row(reference, folder, ref_backend, ref_layout, name,
                                 "(the reference the agreement is measured against)", taken))
    write_bundle(folder, labels=labels, preprocessing=spec, rows=rows,
                 model={"source": str(file), "kind": "file", "classes": len(labels), "output": "auto"})
    return folder


def _file_row(file: Path, folder: Path, backend, layout: str, name: str, what: str, taken=frozenset()) -> dict:
    """A bundle row for a lone model file copied into `folder` (its external data beside it, under
    names not in `taken`)."""
    import shutil

    from ..bundle import gzip_size, sha256_file
    from ..runtime.precision import file_precision

    shutil.copyfile(file, folder / file.name)
    data = (folder / file.name).read_bytes()
    row = {"name": name, "file": file.name, "sha256": sha256_file(folder / file.name),
           "format": file.suffix.lstrip("."), "precision": file_precision(backend), "source": "file", "sparsity": None,
           "status": "ok", "layout": layout, "size": {"bytes": len(data), "gzip_bytes": gzip_size(data)},
           "description": f"{file} {what}"}
    if row["format"] == "onnx":
        extra = _external_data(file, data, folder, taken)
        if extra:
            row["external_data"] = extra
            row["size"]["bytes"] += sum((folder / e["file"]).stat().st_size for e in extra)
    return row


def _labelled_data(data: str | None, input_size, labels, max_images):
    """(uint8 images, label indices in the model's order, dataset name) or None without labels."""
    from ..data import SAMPLE_NAME, load_dataset, sample_indices
    from ..evaluation import align_labels

    source = data or SAMPLE_NAME
    if data is None and (not labels or set(labels) != set(_cifar_labels())):
        # The built-in sample only fits CIFAR-10 classifiers: say what data this one needs.
        shown = ", ".join(list(labels or [])[:4]) + (", ..." if labels and len(labels) > 4 else "")
        raise ConfigError(f"the bundle's classes ({shown or 'unnamed'}) are not CIFAR-10's, so the built-in sample "
                          f"cannot measure its accuracy; pass --data with labelled test images of these classes "
                          f"(a folder of class folders named like them, or a .zip of one)")
    dataset = load_dataset(source, image_size=input_size)
    mapping = align_labels(dataset, labels)
    keep = sample_indices(len(dataset.test), max_images)
    images, y = dataset.test.take(keep), mapping[dataset.test.labels[keep]]
    if len(images) == 0:
        raise DataError(f"{dataset.source}: no test images to measure accuracy on")
    return images, y, dataset.name


def _cifar_labels():
    from ..data.cifar import CIFAR10_CLASSES

    return CIFAR10_CLASSES


def _measure(row: dict, predict, one, images, data_files: dict | None, config: BenchConfig, labels, source: str,
             predictions_out: str | None, accuracy: bool = True) -> None:
    """Latency at batch 1, throughput at config.batch, peak memory, then accuracy on the labelled
    images (when there are any and `accuracy`), into `row`. `predict` maps uint8 images to
    probabilities."""
    from ..evaluation import summarize

    row["latency_ms"] = time_calls(lambda: predict(one), warmup=config.warmup, runs=config.runs)
    if images is not None:
        batch = np.array(images[: config.batch])
        if len(batch) < config.batch:
            batch = np.resize(batch, (config.batch, *batch.shape[1:]))
        predict(batch)  # warm-up at this batch size (a resize reallocates tensors)
        reps = max(3, min(50, config.runs // 10))
        t0 = time.perf_counter()
        for _ in range(reps):
            predict(batch)
        row["throughput_ips"] = round(reps * config.batch / (time.perf_counter() - t0), 1)
    row["peak_rss_mb"] = _peak_rss_mb()  # runtime + model + one batch: what the device must hold
    if images is not None and not accuracy:
        return  # a timing-only round of a repeated bench: the first round measured the accuracy
    if images is not None:
        y = np.load(data_files["labels"])
        probs = np.concatenate([predict(np.array(images[i:i + 256])) for i in range(0, len(images), 256)])
        pred = probs.argmax(1)
        result = summarize(y, pred, labels or [str(i) for i in range(probs.shape[1])], data_files["name"], "test", source)
        row.update(accuracy=round(result.top1, 6), images=result.count, per_class=result.per_class,
                   confusion=result.confusion, data=data_files["name"], correct_bits=pack_correct(pred == y))
        if result.warning:  # one class for most images: the report says so whatever the accuracy
            row["degenerate"] = result.warning
        if predictions_out:
            np.save(predictions_out, pred)
    else:
        row.update(throughput_ips=None, accuracy=None, images=0, per_class=None, confusion=None, data=None)
    row["peak_rss_with_data_mb"] = _peak_rss_mb()


def pack_correct(correct) -> str:
    """Per-image correctness as base64 of its packed bits (1,668 characters for 10,000 images): what
    the report's paired test of two variants' accuracies needs (edgecls.report)."""
    import base64

    return base64.b64encode(np.packbits(np.asarray(correct, bool))).decode("ascii")


def unpack_correct(text: str, images: int) -> np.ndarray:
    """`pack_correct` read back; ValueError when `text` is not that for `images` images."""
    import base64
    import binascii

    try:
        packed = np.frombuffer(base64.b64decode(text, validate=True), np.uint8)
    except (binascii.Error, ValueError):
        raise ValueError("correct_bits is not base64") from None
    if len(packed) != (images + 7) // 8:
        raise ValueError(f"correct_bits holds {len(packed) * 8} bits for {images} images")
    return np.unpackbits(packed)[:images].astype(bool)


def export_fields(art: dict) -> dict:
    """What the export recorded of the variant: its agreement with the model the user gave (the
    bench's own agreement is with the bundle's float file) and its validation warning."""
    validation = art.get("validation") if isinstance(art.get("validation"), dict) else {}
    out = {}
    if isinstance(validation.get("agreement"), (int, float)):
        out["export_agreement"] = validation["agreement"]
    if validation.get("warning"):
        out["export_warning"] = str(validation["warning"])
    return out


def micro_fields(art: dict) -> dict:
    """What `export --micro` measured of the variant under TensorFlow Lite Micro (edgecls.micro), for
    the report's microcontroller table: arena, flash, RAM, agreement with the source model, TFLM's
    host time per image on the export machine (reference kernels: not a microcontroller's latency),
    and the MACs per image (the basis of a first latency estimate on a given MCU)."""
    micro = art.get("micro")
    if not isinstance(micro, dict) or not micro:
        return {}
    out = {"micro_verdict": micro.get("verdict"), "micro_status": micro.get("status"),
           "micro_reason": micro.get("reason") or ""}
    if micro.get("verdict") == "ok":
        out.update(micro_arena_bytes=micro.get("arena_bytes"), micro_flash_bytes=micro.get("flash_bytes"),
                   micro_ram_bytes=micro.get("ram_bytes"), micro_host_ms=micro.get("host_ms_per_image"),
                   micro_agreement=(micro.get("validation") or {}).get("agreement"),
                   micro_litert_agreement=(micro.get("litert") or {}).get("agreement"))
    macs = (art.get("size") or {}).get("macs")
    if isinstance(macs, int):
        out["macs"] = macs
    return out


def bench_variant(bundle: str, variant: str, data_files: dict | None, config: BenchConfig,
                  predictions_out: str | None = None, accuracy: bool = True) -> dict:
    """Measure one variant in this process (called in a child process by `bench`).

    `data_files` names .npy files of the labelled images and labels the parent prepared; they are
    memory-mapped, so the peak memory measured before the accuracy pass is the runtime's and the
    model's own (plus one batch), not the data set's."""
    from .. import runtime
    from ..bundle import load_bundle

    art = load_bundle(bundle).artifact(variant)
    row = {"name": variant, "format": art["format"], "precision": art["precision"], "sparsity": art.get("sparsity"),
           "sparsity_source": art.get("sparsity_source"),
           "size_bytes": art["size"]["bytes"], "size_gzip_bytes": art["size"]["gzip_bytes"], "status": "ok", "error": ""}
    if isinstance(art.get("diagnosis"), dict):  # per-layer error from the export, for the report
        row["diagnosis"] = art["diagnosis"]
    row.update(micro_fields(art))
    row.update(export_fields(art))
    start = time.perf_counter()
    runner = runtime.load(bundle, variant=variant, threads=config.threads, tta=config.tta)
    row["load_ms"] = round((time.perf_counter() - start) * 1000, 3)
    images = np.load(data_files["images"], mmap_mode="r") if data_files else None
    if images is not None:
        one = np.array(images[:1])
    else:
        one = np.zeros((1, *runner.preprocessing.input_size, 3), np.uint8)
    _measure(row, runner.predict, one, images, data_files, config, runner.labels, bundle, predictions_out, accuracy)
    row["backend"] = runner.backend.package
    return row


KERAS_ROW = "keras_fp32"


def bench_keras(bundle: str, model_path: str, data_files: dict | None, config: BenchConfig,
                predictions_out: str | None = None, accuracy: bool = True) -> dict:
    """Measure the Keras model the bundle was exported from, the way a TensorFlow user runs it:
    the bundle's preprocessing, then `model(x, training=False)` (the fast call; `model.predict`,
    which sets up a data pipeline on every call, is timed too, as `latency_predict_ms`)."""
    from ..bundle import gzip_size, load_bundle
    from ..runtime import with_tta

    path = Path(model_path)  # checked by `bench` before any child starts
    raw = path.read_bytes()
    row = {"name": KERAS_ROW, "format": "keras", "precision": "fp32", "sparsity": None, "size_bytes": len(raw),
           "size_gzip_bytes": gzip_size(raw), "status": "ok", "error": ""}
    try:
        from .._deps import tensorflow
        from ..modelio import load_keras_model

        start = time.perf_counter()
        tf = tensorflow()
    except Exception as exc:  # ImportError, or a TensorFlow that cannot start on this machine
        from ..errors import DependencyError

        raise DependencyError(f"the Keras row needs TensorFlow ({exc.__class__.__name__}); install edgecls[train]") from None
    if config.threads:
        tf.config.threading.set_intra_op_parallelism_threads(config.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    model = load_keras_model(path)
    loaded = load_bundle(bundle)
    spec = loaded.preprocessing()
    row["load_ms"] = round((time.perf_counter() - start) * 1000, 3)
    images = np.load(data_files["images"], mmap_mode="r") if data_files else None
    one = np.array(images[:1]) if images is not None else np.zeros((1, *spec.input_size, 3), np.uint8)

    def once(x):
        return np.asarray(model(spec.apply(x), training=False))

    def call(x):  # with the runtime Runner's test-time augmentation
        return with_tta(once, x, config.tta)

    if accuracy:  # a timing-only round's row keeps only the figures combine_rounds takes from it
        row["latency_predict_ms"] = time_calls(lambda: model.predict(spec.apply(one), verbose=0),
                                               warmup=min(config.warmup, 5), runs=max(1, min(config.runs, 30)))
    _measure(row, call, one, images, data_files, config, loaded.labels(), str(path), predictions_out, accuracy)
    row["backend"] = f"tensorflow {tf.__version__}"
    return row


def _child(bundle: str, variant: str, data_files: dict | None, config: BenchConfig, pred_file: str,
           accuracy: bool = True) -> dict:
    from ..runtime.isolated import failure_reason, run_child

    payload = {"bundle": bundle, "variant": variant, "data": data_files, "config": asdict(config), "pred": pred_file,
               "accuracy": accuracy}
    env = dict(os.environ)
    # Each child measures with exactly the requested threads; BLAS pools must not add their own.
    env.setdefault("OMP_NUM_THREADS", str(config.threads or os.cpu_count() or 1))
    if variant == KERAS_ROW:
        env["TF_CPP_MIN_LOG_LEVEL"] = env.get("TF_CPP_MIN_LOG_LEVEL", "2")
    # Under a user-mode CPU emulator (tools/device/cpu_class_check.py runs x86 under `qemu-x86_64 -cpu
    # Haswell`) a child started plainly would run natively: run_child applies EDGECLS_EMULATOR.
    code, row, stderr = run_child("edgecls.bench.local", payload, env=env)
    if code == 0 and row is not None:
        return row
    return {"name": variant, "status": "failed", "error": failure_reason(code, stderr, "the backend")}


def load_prepared(folder: str | Path):
    """Labelled images another machine prepared (images.npy uint8 N x H x W x 3, labels.npy, name.txt):
    how a remote bench measures the very images the workstation measured."""
    folder = Path(folder)
    try:
        images = np.load(folder / "images.npy", allow_pickle=False)
        labels = np.load(folder / "labels.npy", allow_pickle=False)
        name = (folder / "name.txt").read_text().strip()
    except (OSError, ValueError) as exc:
        raise DataError(f"{folder}: not a prepared data folder (images.npy, labels.npy, name.txt): {exc}") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels) or not len(images):
        raise DataError(f"{folder}: images.npy must be non-empty uint8 N x H x W x 3 with one label each")
    return images, labels, name


def combine_rounds(rounds: list[dict]) -> dict:
    """One row from a variant's rounds (BenchConfig.repeats): the first round's row (accuracy, sizes,
    memory) with the latency of the round whose batch-1 p50 is the median (the lower middle for an
    even count), the median throughput and load time, and every round's figures under "repeats".
    A round that failed after a good first round makes the row failed: an unstable variant is not
    reported as measured."""
    first = dict(rounds[0])
    if len(rounds) == 1 or first.get("status") != "ok":
        return first
    bad = next((r for r in rounds[1:] if r.get("status") != "ok"), None)
    if bad is not None:
        return {**first, "status": "failed", "error": f"failed in a later round: {bad.get('error')}"}
    p50s = [r["latency_ms"]["p50"] for r in rounds]
    middle = rounds[p50s.index(median_low(p50s))]
    first["latency_ms"] = middle["latency_ms"]
    through = [r.get("throughput_ips") for r in rounds]
    if all(t is not None for t in through):
        first["throughput_ips"] = median_low(through)
    first["load_ms"] = median_low([r["load_ms"] for r in rounds])
    first["repeats"] = {"rounds": len(rounds), "p50_ms": p50s, "throughput_ips": through,
                        "load_ms": [r["load_ms"] for r in rounds]}
    return first


def bench(bundle: str | Path, data: str | None = None, config: BenchConfig | None = None, progress=None,
          prepared: str | Path | None = None) -> dict:
    """Benchmark the bundle's variants; returns the report dict (schema in the README).

    `prepared` replaces `data` with a folder from `load_prepared` (what a remote bench sends)."""
    import tempfile

    from ..bundle import load_bundle

    config = config or BenchConfig()
    bundle = str(bundle)
    loaded = load_bundle(bundle)
    names = list(config.variants) or loaded.names()
    keras_path = None
    if config.keras:
        keras_path = Path(bundle) / "model.keras" if config.keras == "auto" else Path(config.keras)
        if not keras_path.is_file():
            raise ConfigError(f"no Keras model at {keras_path}; pass --keras PATH to the model the bundle was exported from")
    loaded.check_variants(names)
    # The labelled data is read once, here (an unusable data set fails once, up front), and handed to
    # every child as .npy files.
    spec, labels = loaded.preprocessing(), loaded.labels()
    if prepared is not None:
        labelled = load_prepared(prepared)
        if labelled[0].shape[1:3] != tuple(spec.input_size):
            raise DataError(f"{prepared}: images are {labelled[0].shape[1:3]}, the model takes {tuple(spec.input_size)}")
    else:
        labelled = _labelled_data(data, spec.input_size, labels, config.max_images)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data_files = None
        if labelled is not None:
            data_files = {"images": os.path.join(tmp, "images.npy"), "labels": os.path.join(tmp, "labels.npy"),
                          "name": labelled[2]}
            np.save(data_files["images"], labelled[0])
            np.save(data_files["labels"], labelled[1])
        reference = next((n for n in ("tflite_fp32", "onnx_fp32") if n in loaded.names()), None)
        order = ([reference] if reference else []) + [n for n in names if n != reference]
        if keras_path is not None:
            order.insert(1 if reference else 0, KERAS_ROW)
            names = [KERAS_ROW] + names
            config = BenchConfig(**{**asdict(config), "keras": str(keras_path)})
        preds = {}
        rounds: dict[str, list[dict]] = {name: [] for name in order}
        steps = len(order) * config.repeats
        for r in range(config.repeats):
            for i, name in enumerate(order):
                if progress:
                    progress(r * len(order) + i, steps, name if config.repeats == 1 else f"{name} (round {r + 1}/{config.repeats})")
                if r and rounds[name][0].get("status") != "ok":
                    continue  # it failed in the first round: the same error again tells nothing new
                if r and name == KERAS_ROW:
                    continue  # TensorFlow's start costs seconds a round, and its row is 20-100x slower: once is enough
                pred_file = os.path.join(tmp, f"{name}.npy")
                rounds[name].append(_child(bundle, name, data_files, config, pred_file, accuracy=r == 0))
                if r == 0 and os.path.exists(pred_file):
                    preds[name] = np.load(pred_file)
        if progress:
            progress(steps, steps, "")
        rows = [combine_rounds(rounds[name]) for name in order if name in names]
    for row in rows:
        ref = preds.get(reference)
        mine = preds.get(row["name"])
        row["agreement"] = (round(float((ref == mine).mean()), 6) if ref is not None and mine is not None and len(ref) == len(mine)
                            else None)
        row["agreement_reference"] = reference
        for key in ("latency_ms", "throughput_ips", "load_ms", "peak_rss_mb", "peak_rss_with_data_mb", "accuracy", "sparsity", "size_bytes",
                    "size_gzip_bytes", "format", "precision"):
            row.setdefault(key, None)
    host = host_info()
    host["runtime"] = runtime_versions()
    from .crosscheck import check_rows

    check_rows(rows, loaded.manifest, host)  # a variant that departs from its validation at export gets a warning
    # Variants the export rejected are on record with their reasons: the report shows them too.
    rejected = [{"name": r["name"], "status": r.get("status") or "failed", "reason": r.get("reason") or ""}
                for r in loaded.manifest.get("rejected", [])]
    return {
        "schema": REPORT_SCHEMA,
        "kind": "edgecls-bench",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bundle": bundle,
        "model": loaded.manifest.get("model", {}),
        "data": labelled[2] if prepared is not None else (data or "cifar10-sample"),
        "host": host,
        "settings": {"threads": config.threads, "warmup": config.warmup, "runs": config.runs, "batch": config.batch,
                     "max_images": config.max_images, "keras": str(keras_path) if keras_path else None, "tta": config.tta,
                     "repeats": config.repeats, "emulated": bool(os.environ.get("EDGECLS_EMULATED"))},
        "variants": rows,
        "rejected": rejected,
        "wall_time_s": round(time.perf_counter() - started, 2),
    }


def _child_work(payload: dict) -> dict:
    """One variant's row, in the child `bench` starts (printed as its last JSON line)."""
    if payload["variant"] == KERAS_ROW:
        return bench_keras(payload["bundle"], payload["config"]["keras"], payload["data"],
                           BenchConfig(**payload["config"]), payload["pred"], payload.get("accuracy", True))
    return bench_variant(payload["bundle"], payload["variant"], payload["data"], BenchConfig(**payload["config"]),
                         payload["pred"], payload.get("accuracy", True))


if __name__ == "__main__":
    from ..runtime.isolated import child_main

    sys.exit(child_main(sys.argv[1:], _child_work))
