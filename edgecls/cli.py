"""Command line: parses arguments into configs and calls the library. Nothing else lives here.

Every EdgeclsError is printed as one line (`edgecls: error: ...`) with exit status 2; Ctrl-C exits
with status 130 and a note; no traceback reaches the user for a mistake they can fix.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .config import ONNX_INT8_SCHEMES, ExportConfig, TrainConfig

E, T = ExportConfig, TrainConfig  # every default is read from the stage's config
from .errors import ConfigError, EdgeclsError, Interrupted, first_line

log = logging.getLogger("edgecls")


def _cmd_zoo(args) -> int:
    from .zoo import create_model, get_model_info, list_models, model_stats

    rows = []
    for name in list_models():
        info = get_model_info(name)
        stats = model_stats(create_model(name, input_shape=(args.image_size, args.image_size, 3), num_classes=args.classes))
        rows.append({"name": name, "family": info.family, **stats, "description": info.description,
                     "teacher": info.teacher})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<16}{'params':>10}{'MACs':>14}  family / description   (input {args.image_size}x{args.image_size}x3, {args.classes} classes)")
    for r in rows:
        role = " [teacher, not an edge model]" if r["teacher"] else ""
        print(f"{r['name']:<16}{r['params']:>10,}{r['macs']:>14,}  {r['family']}{role}: {r['description']}")
    return 0


def _cmd_train(args) -> int:
    from .config import TrainConfig
    from .training import train

    config = TrainConfig(
        data=args.data, arch=args.arch, out=args.out, epochs=args.epochs, batch_size=args.batch_size,
        recipe=args.recipe, learning_rate=args.lr, weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing, augment=not args.no_augment, cutout=args.cutout, cutmix=args.cutmix, val_fraction=args.val_fraction,
        patience=args.patience, image_size=args.image_size, seed=args.seed, resume=args.resume,
        init_from=args.init, swa_epochs=args.swa_epochs, swa_learning_rate=args.swa_lr, teacher=args.teacher,
        distill_alpha=args.distill_alpha, distill_temperature=args.distill_temperature, verbose=args.verbose,
    )
    result = train(config)
    m = result.metrics
    print(
        f"{config.arch}: test accuracy {m['test_accuracy']:.4f} after {m['epochs_run']} epochs "
        f"({m['mean_epoch_time_s']} s/epoch, {m['images_per_s']} images/s on {m['device']}); wrote {result.out}"
    )
    if m.get("distillation"):
        d = m["distillation"]
        print(f"  distilled from {d['teacher']} (test accuracy {d['teacher_test_accuracy']:.4f}), alpha {d['alpha']:g}, "
              f"temperature {d['temperature']:g}")
    if m.get("swa"):
        print(f"  weight average of {len(m['swa']['averaged_epochs'])} epochs; the last epoch alone: "
              f"{m['swa']['last_epoch_test_accuracy']:.4f}")
    return 0


def _cmd_eval(args) -> int:
    from ._io import atomic_write_json
    from .evaluation import evaluate
    from .outputs import check_output_file

    out = Path(args.out) if args.out else (Path(args.model) if Path(args.model).is_dir() else Path(args.model).parent) / "eval.json"
    check_output_file(out, "eval", inputs=(args.model, args.data))
    result = evaluate(args.model, args.data, split=args.split, safe_mode=not args.unsafe,
                      preprocessing=_preprocessing_arg(args), labels=args.labels)
    print(result.format())
    atomic_write_json(out, result.to_dict())
    print(f"\nwrote {out}")
    return 0


def _number(text: str) -> float:
    """A float, or a fraction such as 1/255 (what preprocessing code usually writes)."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction like 1/255") from None


def _preprocessing_arg(args):
    given = {k: v for k, v in (("scale", args.scale), ("mean", args.mean), ("std", args.std)) if v is not None}
    return given or None


def _number_list(kind, what: str, example: str):
    """An argparse type: comma-separated numbers of `kind` ('100,300,1000')."""
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(t) for t in text.replace(" ", "").split(",") if t)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what} such as {example}, got {text!r}")
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one of the {what}")
        return values
    parse.many = True
    return parse


_sizes = _number_list(int, "image counts", "100,300,1000")

BIG = 10 ** 9
# Every numeric option's range (inclusive; "above": the value must exceed the low bound; "open": it
# must stay strictly between both bounds),
# checked when the command line is parsed, before any work starts. An option missing here gets
# DEFAULT_RANGE: a finite, non-negative number.
RANGES = {
    "--epochs": (1, 100_000), "--prune-epochs": (1, 10_000), "--qat-epochs": (1, 10_000), "--swa-epochs": (0, 10_000),
    "--batch-size": (1, 65_536), "--batch": (1, 65_536), "--calibration-count": (1, BIG), "--calibration-seed": (0, 2 ** 32 - 1),
    "--seed": (0, 2 ** 32 - 1), "--image-size": (8, 2048), "--classes": (2, 1000),
    "--lr": (0, 1e6, "above"), "--prune-lr": (0, 10, "above"), "--qat-lr": (0, 10, "above"), "--swa-lr": (0, 10, "above"),
    "--weight-decay": (0, 1), "--label-smoothing": (0, 0.99), "--cutout": (0, 2048), "--cutmix": (0, 1),
    "--val-fraction": (0, 0.9), "--patience": (0, 100_000), "--distill-alpha": (0, 1),
    "--distill-temperature": (0, 1000, "above"), "--sparsity": (0, 1, "open"), "--sparsities": (0, 1, "open"),
    "--calibration-draws": (1, 100), "--calibration-search": (1, BIG), "--max-drop": (0, 100), "--fine-tuned-max-drop": (0, 100), "--repair-images": (1, BIG), "--micro-images": (1, BIG),
    "--opset": (9, 30), "--max-eval-images": (1, BIG), "--top": (0, BIG), "--top-k": (1, 100_000),
    "--threads": (1, 1024), "--warmup": (0, BIG), "--runs": (1, BIG), "--repeats": (1, 1000), "--max-images": (1, BIG),
    "--max-bytes": (1, 10 ** 15), "--max-latency-ms": (0, 10 ** 9, "above"),
    "--max-ram-kb": (0, 10 ** 9, "above"), "--max-flash-kb": (0, 10 ** 9, "above"), "--validation-images": (1, BIG),
    "--jobs": (1, 64), "--max-test-images": (1, BIG), "--scale": (0, 1e6, "above"), "--mean": (-1e6, 1e6),
    "--std": (0, 1e6, "above"), "--verbose": (0, 2),
}
DEFAULT_RANGE = (0, BIG)


class Bounded:
    """An argparse type: a finite number (or a comma-separated list of them) within a range."""

    def __init__(self, parse, low, high, exclude: str = "", many: bool = False):
        self.parse, self.low, self.high, self.many = parse, low, high, many
        self.open = exclude in ("open", "above")  # the low bound itself is refused
        self.open_high = exclude == "open"

    def __call__(self, text: str):
        value = self.parse(text)
        for v in (value if self.many else (value,)):
            if isinstance(v, float) and not np.isfinite(v):
                raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
            inside = (self.low < v if self.open else self.low <= v) and (v < self.high if self.open_high else v <= self.high)
            if not inside:
                bounds = (f"between {self.low:,} and {self.high:,}, both excluded" if self.open_high else
                          f"above {self.low:,} and at most {self.high:,}" if self.open else
                          f"between {self.low:,} and {self.high:,}")
                raise argparse.ArgumentTypeError(f"{v!r} is out of range: give a value {bounds}")
        return value

    def __repr__(self):
        return f"Bounded({self.low}, {self.high})"


def _text(text: str) -> str:
    """An argparse type for names and paths: not empty, no NUL byte."""
    if not text.strip() or "\x00" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is empty; give a name or a path")
    return text


def _number_or_int(kind):
    def parse(text: str):
        try:
            return kind(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    return parse


def _check_every_option(parser: argparse.ArgumentParser) -> None:
    """Give every numeric option of every command its range (RANGES) and every name or path a
    check that it is not empty, so a meaningless value is refused when the command starts."""
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for sub in subparsers.choices.values():
        for action in sub._actions:
            if action.nargs == 0 or isinstance(action, argparse._SubParsersAction):
                continue  # flags, --help
            flag = next((o for o in action.option_strings if o.startswith("--")), None)
            low, high, *rest = RANGES.get(flag, DEFAULT_RANGE)
            many = getattr(action.type, "many", False)
            exclude = rest[0] if rest else ""
            if action.type in (int, float):
                action.type = Bounded(_number_or_int(action.type), low, high, exclude)
            elif action.type is _number:
                action.type = Bounded(_number, low, high, exclude)
            elif many:
                action.type = Bounded(action.type, low, high, exclude, many=True)
            elif action.type is None and not action.choices:
                action.type = _text


def _export_config(args):
    from .config import ExportConfig

    return ExportConfig(
        formats=tuple(args.formats) if getattr(args, "formats", None) else ExportConfig.formats, sparsity=args.sparsity,
        sparsity_allocation=args.sparsity_allocation, structured_2x4=args.structured_2x4, skip_layers=tuple(args.skip_layers or ()), prune_epochs=args.prune_epochs,
        prune_learning_rate=args.prune_lr, qat_epochs=args.qat_epochs, qat_learning_rate=args.qat_lr,
        qat_calibration=not getattr(args, "no_qat_calibration", False), distill=args.distill,
        distill_alpha=args.distill_alpha, distill_temperature=args.distill_temperature, fine_tune_batch_size=args.batch_size, calibration_count=args.calibration_count,
        calibration_seed=args.calibration_seed, calibration_data=getattr(args, "calibration_data", None),
        float_io=getattr(args, "float_io", False),
        int8_weights=getattr(args, "int8_weights", "per-channel"), strip_names=getattr(args, "strip_names", False),
        onnx_opset=getattr(args, "opset", 17), onnx_int8_method=getattr(args, "onnx_int8", "ort_qdq"),
        onnx_int8_scheme=getattr(args, "onnx_int8_scheme", ExportConfig.onnx_int8_scheme),
        nchw=getattr(args, "nchw", False), max_eval_images=getattr(args, "max_eval_images", None),
        optimized=getattr(args, "optimized", None), seed=args.seed,
        max_drop=getattr(args, "max_drop", None), calibration_search=getattr(args, "calibration_search", ()),
        fine_tuned_max_drop=getattr(args, "fine_tuned_max_drop", ExportConfig.fine_tuned_max_drop),
        calibration_draws=getattr(args, "calibration_draws", ExportConfig.calibration_draws),
        repair_images=getattr(args, "repair_images", ExportConfig.repair_images),
        micro=getattr(args, "micro", ExportConfig.micro), micro_images=getattr(args, "micro_images", ExportConfig.micro_images),
        verbose=args.verbose,
    )


_FORMAT_NAMES = {"keras": "Keras", "onnx": "ONNX", "tflite": "TFLite"}


def _cmd_export(args) -> int:
    from .export import export

    result = export(args.model, data=args.data, out=args.out, config=_export_config(args),
                    preprocessing=_preprocessing_arg(args), labels=args.labels, safe_mode=not args.unsafe)
    print(result.format_table())
    ok = sum(r["status"] == "ok" for r in result.rows)
    ref = result.manifest["reference"]
    print(f"\n{_FORMAT_NAMES.get(ref.get('format'), 'Keras')} fp32 reference accuracy {ref['accuracy']:.4f} on {ref['images']} held-out images; "
          f"{ok} of {len(result.rows)} variants validated; bundle: {result.out}")
    return 0 if ok else 1


def _cmd_tune(args) -> int:
    from dataclasses import replace

    from .config import TuneConfig
    from .tune import tune

    config = TuneConfig(max_drop=args.max_drop, max_bytes=args.max_bytes, size_measure=args.size,
                        max_latency_ms=args.max_latency_ms, max_ram_kb=args.max_ram_kb, max_flash_kb=args.max_flash_kb,
                        board=args.board, objective=args.objective, threads=args.threads,
                        variants=tuple(args.variants) if args.variants else TuneConfig.variants,
                        sparsities=args.sparsities, sparsity_allocations=tuple(args.sparsity_allocations),
                        fine_tune=args.fine_tune, validation_images=args.validation_images,
                        export=replace(TuneConfig.export, prune_epochs=args.prune_epochs, qat_epochs=args.qat_epochs,
                                       distill=args.distill, calibration_count=args.calibration_count),
                        bench=replace(TuneConfig.bench, runs=args.runs, repeats=args.repeats),
                        hosts=tuple(args.host or ()), remote_python=args.remote_python,
                        remote_dir=args.remote_dir, ssh_config=args.ssh_config,
                        jobs=args.jobs, keep_frontier=args.keep_frontier, max_test_images=args.max_test_images,
                        seed=args.seed)
    try:
        result = tune(args.model, data=args.data, out=args.out, config=config, preprocessing=_preprocessing_arg(args),
                      labels=args.labels, safe_mode=not args.unsafe,
                      progress=lambda text: sys.stderr.write(text + "\n"))
    except KeyboardInterrupt as exc:
        exc.message = f"every finished step is in {args.out}/tune.json; run the same command to resume"
        raise
    print(f"\nwrote {result.out}/tune.json, {result.out}/tune.html" + (f", {result.out}/bundle" if result.winner else ""))
    for line in result.answer:
        print(line)
    return 0 if result.winner else 1


def _cmd_optimize(args) -> int:
    from .optimize.run import optimize

    report = optimize(args.model, data=args.data, out=args.out, kinds=tuple(args.variants), config=_export_config(args),
                      preprocessing=_preprocessing_arg(args), labels=args.labels, safe_mode=not args.unsafe)
    print(f"base accuracy {report['base_accuracy']:.4f} on {report['test_images']} held-out images")
    for kind, entry in report["variants"].items():
        print(f"{kind:<12} accuracy {entry['accuracy']:.4f}  kernel sparsity {entry.get('kernel_sparsity', 0):.3f}")
    print(f"wrote {args.out}")
    return 0


def _cmd_inspect(args) -> int:
    from .bundle import load_bundle
    from .export.diagnose import format_diagnosis

    bundle = load_bundle(args.bundle)
    rows = {r["name"]: r for r in bundle.manifest.get("artifacts", []) + bundle.manifest.get("rejected", [])}
    if args.variant:
        if args.variant not in rows:
            raise ConfigError(f"{args.bundle} has no variant {args.variant!r}; it has {', '.join(rows)}")
        chosen = [rows[args.variant]]
    else:
        chosen = [r for r in rows.values() if r.get("diagnosis") or r.get("diagnosis_error")]
        if not chosen:
            raise ConfigError(f"{args.bundle} holds no per-layer diagnosis (exported by an older edgecls, or without "
                              f"post-training quantized variants); re-export it to get one")
    if args.json:
        print(json.dumps({r["name"]: r.get("diagnosis") or {"error": r.get("diagnosis_error")} for r in chosen},
                         indent=2))
        return 0
    print("\n\n".join(format_diagnosis(r, args.top or None) for r in chosen))
    return 0


def _cmd_predict(args) -> int:
    from . import runtime

    given = _preprocessing_arg(args)
    labels = None
    if args.labels:
        from .modelio import load_labels

        labels = load_labels(args.labels)
    runner = runtime.load(args.bundle, variant=args.variant, threads=args.threads, tta=args.tta, preprocessing=given,
                          labels=labels)
    probs = runner.predict(list(args.images))
    labels = runner.labels or [str(i) for i in range(probs.shape[1])]
    k = max(1, min(args.top_k, probs.shape[1]))
    results = []
    for path, p in zip(args.images, probs):
        top = np.argsort(-p, kind="stable")[:k]
        results.append({"image": path, "top": [{"label": labels[i], "score": round(float(p[i]), 6)} for i in top]})
    source = runner.artifact.get("file", runner.name)
    print(f"edgecls: {runner.name} ({runner.format}, {runner.artifact.get('precision', '?')}) from {args.bundle}"
          + (f" ({source})" if source != runner.name else ""), file=sys.stderr)
    if args.json:
        print(json.dumps({"variant": runner.name, "results": results}, indent=2))
    else:
        for r in results:
            print(f"{r['image']}: " + ", ".join(f"{t['label']} {t['score']:.4f}" for t in r["top"]))
    return 0


class _Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal, one line per step otherwise)."""

    def __init__(self, title: str):
        self.title = title
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int, name: str) -> None:
        width = 24
        filled = int(width * done / max(total, 1))
        bar = "#" * filled + "." * (width - filled)
        text = f"{self.title} [{bar}] {done}/{total} {name}"
        if self.tty:
            print("\r" + text.ljust(78), end="" if done < total else "\n", file=sys.stderr, flush=True)
        elif name or done == total:
            print(text, file=sys.stderr, flush=True)


def _cmd_bench(args) -> int:
    from ._io import atomic_write_json
    from .bench import BenchConfig, bench
    from .outputs import check_output_file
    from .report import Report

    check_output_file(args.out, "bench", inputs=(args.bundle,))
    config = BenchConfig(variants=tuple(args.variants or ()), threads=args.threads, warmup=args.warmup, runs=args.runs,
                         batch=args.batch, max_images=args.max_images, keras=args.keras, tta=args.tta,
                         repeats=args.repeats)
    if args.host:
        from .bench.remote import RemoteConfig, remote_bench

        remote = RemoteConfig(host=args.host, python=args.remote_python, remote_dir=args.remote_dir,
                              ssh_config=args.ssh_config)
        result = remote_bench(args.bundle, remote, data=args.data, config=config, progress=True,
                              log=lambda msg: print(f"edgecls: {msg}", file=sys.stderr, flush=True))
    elif Path(args.bundle).is_file() and Path(args.bundle).suffix in (".tflite", ".onnx") and \
            not (Path(args.bundle).parent / "manifest.json").is_file():
        # A lone model file: bench it as a bundle of one variant.
        import tempfile

        from .bench.local import bundle_for_file
        from .modelio import load_labels

        labels = load_labels(args.labels) if args.labels else None
        with tempfile.TemporaryDirectory(prefix="edgecls-file-") as tmp:
            wrapped = bundle_for_file(args.bundle, Path(tmp) / "bundle", _preprocessing_arg(args), labels,
                                      reference=args.reference)
            result = bench(wrapped, data=args.data, config=config, progress=_Progress("bench"))
        result["bundle"] = str(args.bundle)
    else:
        if _preprocessing_arg(args) or args.labels or args.reference:
            raise ConfigError("a bundle carries its own preprocessing, labels and fp32 reference; --scale, --mean, --std, "
                              "--labels and --reference are for a lone .tflite/.onnx file")
        result = bench(args.bundle, data=args.data, config=config, progress=_Progress("bench"), prepared=args.prepared_data)
    atomic_write_json(args.out, result)
    print(Report([result], [Path(args.out).name]).markdown())
    print(f"wrote {args.out}")
    return 0 if any(v["status"] == "ok" for v in result["variants"]) else 1


def _cmd_report(args) -> int:
    from .report import Report

    from .config import ReportConfig

    report = Report.load(args.reports, ReportConfig(max_drop=args.max_drop, objective=args.objective))
    paths = report.write(args.out)
    print(report.markdown())
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def _cmd_pipeline(args) -> int:
    from .pipeline import run_pipeline

    result = run_pipeline(data=args.data, out=args.out, arch=args.arch, epochs=args.epochs,
                          formats=tuple(args.formats or ExportConfig.formats), threads=args.threads, runs=args.runs, model=args.model,
                          progress=_Progress("bench"), train_new=args.train, preprocessing=_preprocessing_arg(args),
                          labels=args.labels, safe_mode=not args.unsafe)
    print(f"Export and validation (against {result.reference_name}, on held-out images):")
    print(result.export_table)
    print("\nBenchmark of the validated variants:")
    print(result.table)
    print(f"HTML report: {result.report_html}\n")
    print(result.recommendation.rstrip())
    return 0


def _add_file_options(p, whose: str = "a lone model file's", labels: str = "a lone model file's class names (JSON list)"):
    """The preprocessing and labels of a model edgecls did not make (for a lone .tflite/.onnx file the
    input size and layout are read from the file)."""
    p.add_argument("--scale", type=_number, help=f"{whose} preprocessing: it sees (pixel * scale - mean) / std "
                                                 "(a number or a fraction such as 1/255)")
    p.add_argument("--mean", type=_number, nargs="+", help="1 or 3 values (RGB)")
    p.add_argument("--std", type=_number, nargs="+", help="1 or 3 values (RGB)")
    p.add_argument("--labels", help=labels)


def _add_preprocessing_options(p):
    """What a model file that is not an edgecls run needs, and the safe-mode switch."""
    _add_file_options(p, "your model's", "JSON list of class names (default: class indices)")
    p.add_argument("--unsafe", action="store_true", help="load a model that safe mode refuses (Lambda layers, custom "
                                                         "classes): runs code stored in or named by the file; only for "
                                                         "files you trust")


def _add_model_options(p):
    p.add_argument("model", help="an 'edgecls train' directory, a .keras or .h5 file, a SavedModel directory, or a float .onnx or .tflite file (with --scale/--mean/--std)")
    p.add_argument("--data", default=T.data, help="labelled data: calibration from its train split, validation on its test split")
    p.add_argument("--out", required=True, help="output directory")
    _add_preprocessing_options(p)
    p.add_argument("--sparsity", type=float, default=E.sparsity, help=f"pruning target sparsity in (0, 1); default {E.sparsity}")
    from .config import SPARSITY_ALLOCATIONS

    p.add_argument("--sparsity-allocation", choices=SPARSITY_ALLOCATIONS, default=E.sparsity_allocation,
                   help="'uniform' (default): every pruned layer to --sparsity; 'lamp': per-layer sparsities from "
                        "layer-adaptive magnitude scores of the trained weights (large layers lose more, small ones "
                        "less), the pruned layers together at --sparsity")
    p.add_argument("--structured-2x4", action="store_true", help="2:4 structured sparsity instead of unstructured")
    p.add_argument("--skip-layers", nargs="+", help="layers to leave unpruned")
    p.add_argument("--prune-epochs", type=int, default=E.prune_epochs, help=f"fine-tuning epochs while pruning (default {E.prune_epochs})")
    p.add_argument("--prune-lr", type=float, default=E.prune_learning_rate, help=f"peak learning rate of the pruning fine-tune (cosine decay; default {E.prune_learning_rate})")
    p.add_argument("--qat-epochs", type=int, default=E.qat_epochs, help=f"quantization-aware fine-tuning epochs (default {E.qat_epochs})")
    p.add_argument("--qat-lr", type=float, default=E.qat_learning_rate, help=f"peak learning rate of the QAT fine-tune (cosine decay; default {E.qat_learning_rate})")
    p.add_argument("--no-qat-calibration", action="store_true",
                   help="start QAT from tfmot's initial activation ranges [-6, 6] instead of ranges calibrated on "
                        "the representative images (for comparison)")
    p.add_argument("--distill", action="store_true",
                   help="pruning and QAT fine-tunes also learn the original model's softened outputs (knowledge "
                        "distillation from the uncompressed model; slower per epoch, recovers more accuracy)")
    p.add_argument("--distill-alpha", type=float, default=E.distill_alpha, help=f"weight of the distillation term (default {E.distill_alpha})")
    p.add_argument("--distill-temperature", type=float, default=E.distill_temperature, help=f"softmax temperature of distillation (default {E.distill_temperature:g})")
    p.add_argument("--batch-size", type=int, default=E.fine_tune_batch_size, help=f"fine-tuning batch size (default {E.fine_tune_batch_size})")
    p.add_argument("--calibration-count", type=int, default=E.calibration_count, help=f"representative training images for int8 (default {E.calibration_count})")
    p.add_argument("--calibration-seed", type=int, default=E.calibration_seed)
    p.add_argument("--calibration-data", metavar="PATH",
                   help="unlabelled images (a folder or .zip, class folders or none) to calibrate int8 on instead of "
                        "--data's training split; --data's labels are then used only to measure accuracy")
    p.add_argument("--seed", type=int, default=E.seed)
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=E.verbose)


class _Parser(argparse.ArgumentParser):
    """A command-line mistake is one line too (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"edgecls: error: {self.prog}: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    import inspect

    from .bench import BenchConfig as B
    from .bench.remote import RemoteConfig as R
    from .pipeline import run_pipeline
    from .runtime import TTA_MODES

    P = {k: v.default for k, v in inspect.signature(run_pipeline).parameters.items()}

    parser = _Parser(prog="edgecls", description="Small image classifiers from training to edge devices.")
    parser.add_argument("--version", action="version", version=f"edgecls {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("-v", "--verbose", dest="native_logs", action="store_true",
                        help="also show what TensorFlow, absl and the converters log (hidden by default)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("zoo", help="list the model zoo with parameters and MACs")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_zoo)

    p = sub.add_parser("train", help="train a zoo model")
    p.add_argument("--data", default=T.data,
                   help="image folder, .zip of one, cifar-10-batches-py folder, 'cifar10' or 'cifar10-sample' (default)")
    p.add_argument("--arch", default=T.arch, help=f"zoo model name (see 'edgecls zoo'); default {T.arch}")
    p.add_argument("--epochs", type=int, default=T.epochs)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--batch-size", type=int, default=T.batch_size)
    p.add_argument("--recipe", default=T.recipe, choices=("edgecls", "tutorial"),
                   help="'edgecls' (default, augmented SGD+cosine) or 'tutorial' (plain Adam baseline)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 0.1 x batch/128 for SGD)")
    p.add_argument("--weight-decay", type=float, default=T.weight_decay)
    p.add_argument("--label-smoothing", type=float, default=T.label_smoothing)
    p.add_argument("--no-augment", action="store_true", help="turn off crop/flip augmentation")
    p.add_argument("--cutout", type=int, default=T.cutout, metavar="N",
                   help="also blank one random N x N square of each training image (cutout; 0: off, the default)")
    p.add_argument("--cutmix", type=float, default=T.cutmix, metavar="P",
                   help="CutMix: with probability P per batch, paste a random box from another image of the batch "
                        "into each image and mix the labels by its area (0: off, the default; the paper's CIFAR "
                        "setting is 0.5)")
    p.add_argument("--val-fraction", type=float, default=T.val_fraction, help="share of training images held out for validation")
    p.add_argument("--patience", type=int, default=T.patience, help="early-stopping patience in epochs (0: off)")
    p.add_argument("--image-size", type=int, default=T.image_size)
    p.add_argument("--seed", type=int, default=T.seed)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--init", metavar="TRAINED_DIR", default=None,
                   help="start from the weights of a finished 'edgecls train' run (same arch and classes) "
                        "with a new learning-rate cycle; its preprocessing is kept")
    p.add_argument("--swa-epochs", type=int, default=T.swa_epochs, metavar="N",
                   help="stochastic weight averaging: train the last N epochs at a constant rate, average their "
                        "weights, recompute BatchNorm statistics (default 0: off; early stopping is off with it)")
    p.add_argument("--swa-lr", type=float, default=None, help="learning rate of the averaging epochs (default: half the peak --lr)")
    p.add_argument("--teacher", metavar="TRAINED_DIR", default=None,
                   help="knowledge distillation: also learn the soft outputs of this finished 'edgecls train' run "
                        "(same classes and image size; usually a larger model, e.g. resnet20); slower per epoch")
    p.add_argument("--distill-alpha", type=float, default=T.distill_alpha, help=f"weight of the teacher's term in the loss (default {T.distill_alpha})")
    p.add_argument("--distill-temperature", type=float, default=None,
                   help="softmax temperature of distillation (default: 1 for a teacher trained with label smoothing, "
                        "as edgecls's recipe trains, else 4)")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None, help="Keras progress: 0 silent, 1 bar, 2 line per epoch")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="top-1, per-class accuracy and confusion matrix of a trained model")
    p.add_argument("model", help="an 'edgecls train' directory, a .keras or .h5 file, a SavedModel directory, or a float .onnx or .tflite file (with --scale/--mean/--std)")
    p.add_argument("--data", default=T.data)
    p.add_argument("--split", default="test", choices=("test", "train"))
    p.add_argument("--out", help="JSON output file (default: eval.json beside the model)")
    _add_preprocessing_options(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("optimize", help="prune and/or quantization-aware-train a model; writes Keras models")
    _add_model_options(p)
    p.add_argument("--variants", nargs="+", default=["pruned", "qat", "pruned_qat"], choices=("pruned", "qat", "pruned_qat"))
    p.set_defaults(func=_cmd_optimize)

    p = sub.add_parser("export", help="optimize, convert to TFLite/ONNX, validate every artifact, write a bundle")
    _add_model_options(p)
    p.add_argument("--formats", nargs="+",
                   help="variants or groups: default (what a bundle ships: every optimization, one int8 engine per "
                        "format), engines (every post-training quantization engine side by side), all, tflite, onnx, "
                        "int8, float; default: default")
    p.add_argument("--float-io", action="store_true", help="int8 TFLite models take and return float32 instead of int8")
    p.add_argument("--int8-weights", default=E.int8_weights, choices=("per-channel", "per-tensor"),
                   help="weight scales of int8 PTQ TFLite models: per-channel (default, accurate) or per-tensor "
                        "(smaller file; check the accuracy it reports)")
    p.add_argument("--strip-names", action="store_true",
                   help="drop tensor names and signatures from TFLite files (smaller; the runtime does not need them)")
    p.add_argument("--onnx-int8", default=E.onnx_int8_method, choices=("ort_qdq", "tflite"),
                   help="ONNX int8 route: onnxruntime static QDQ (default) or tf2onnx from the int8 TFLite")
    p.add_argument("--onnx-int8-scheme", default=E.onnx_int8_scheme, choices=ONNX_INT8_SCHEMES,
                   help="ONNX QDQ types: u8s8_rr (default: uint8 activations, 7-bit weights, the same outputs on "
                        "every CPU), u8u8 (exact everywhere, fp32 speed on x86), s8s8 (exact only on x86 with VNNI "
                        "and on arm64)")
    p.add_argument("--calibration-search", type=_sizes, default=E.calibration_search, metavar="N,N,...",
                   help="choose each int8 variant's calibration size among these (e.g. 100,300,1000), drawing each "
                        "--calibration-draws times, by closeness to the float model's outputs on a validation split of "
                        "the training data; the spread of each size is recorded")
    p.add_argument("--calibration-draws", type=int, default=E.calibration_draws,
                   help=f"random draws per size for --calibration-search (default {E.calibration_draws})")
    p.add_argument("--max-drop", type=float, default=E.max_drop, metavar="POINTS",
                   help="accuracy budget of int8 variants against their Keras model, in points, on a validation "
                        "split of the training data: a variant that misses it keeps its worst layers (per-layer "
                        "diagnosis) in float one at a time until it meets it, or fails saying by how much")
    p.add_argument("--fine-tuned-max-drop", type=float, default=E.fine_tuned_max_drop, metavar="POINTS",
                   help=f"top-1 points a pruned or QAT variant may lose against the model you gave, on the held-out "
                        f"images, before it fails (default {E.fine_tuned_max_drop:g}; --max-drop, when given, instead)")
    p.add_argument("--repair-images", type=int, default=E.repair_images,
                   help=f"training images (not calibration ones) that --max-drop and --calibration-search are judged "
                        f"on (default {E.repair_images})")
    p.add_argument("--micro", action="store_true",
                   help="microcontroller target: run every full-integer TFLite variant under TensorFlow Lite Micro's "
                        "kernels, record its verdict (ops TFLM lacks), exact tensor arena, flash and RAM, its accuracy "
                        "and agreement there, and write C sources (model array, header, op resolver) into micro/")
    p.add_argument("--micro-images", type=int, default=E.micro_images,
                   help=f"held-out images run under TFLite Micro per variant (default {E.micro_images})")
    p.add_argument("--nchw", action="store_true", help="ONNX models take NCHW input")
    p.add_argument("--opset", type=int, default=E.onnx_opset, help=f"ONNX opset (default {E.onnx_opset})")
    p.add_argument("--max-eval-images", type=int, help="validate on at most this many held-out images (default: all)")
    p.add_argument("--optimized", metavar="DIR", help="reuse the pruned and QAT models 'edgecls optimize' wrote in DIR "
                                                      "(from the same MODEL) instead of fine-tuning again")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("inspect", help="where a quantized variant loses accuracy: each layer's error against the "
                                       "float model, worst first (from the bundle's manifest)")
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--variant", help="one variant (default: every diagnosed variant)")
    p.add_argument("--top", type=int, default=5, help="layers shown per variant, worst first (0: all; default 5)")
    p.add_argument("--json", action="store_true", help="the diagnosis as JSON")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("predict", help="classify images with a bundle (runtime only: no TensorFlow)")
    p.add_argument("bundle", help="bundle directory, or a .tflite/.onnx file inside one")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--variant", help="variant name (default: the bundle's first)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--tta", choices=TTA_MODES, help="test-time augmentation: 'flip' averages each image with its "
                                                   "mirror image (twice the inference)")
    _add_file_options(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("bench", help="latency, throughput, memory, accuracy and size of a bundle's variants; "
                                     "warns where a variant departs from its validation at export")
    p.add_argument("bundle")
    p.add_argument("--data", help="labelled data for accuracy (default: the built-in CIFAR-10 sample for CIFAR-10 models)")
    p.add_argument("--variants", nargs="+", help="variants to run (default: all validated)")
    p.add_argument("--threads", type=int, default=B.threads, help=f"inference threads (default {B.threads})")
    p.add_argument("--warmup", type=int, default=B.warmup)
    p.add_argument("--runs", type=int, default=B.runs, help=f"timed batch-1 calls per variant (default {B.runs})")
    p.add_argument("--batch", type=int, default=B.batch, help=f"batch size for the throughput measurement (default {B.batch})")
    p.add_argument("--repeats", type=int, default=B.repeats, metavar="N",
                   help="measure each variant in N fresh processes, the variants taking turns; report the median "
                        "round's latency and every round's p50 (default 1)")
    p.add_argument("--max-images", type=int, help="use at most this many labelled images")
    p.add_argument("--keras", nargs="?", const="auto", metavar="MODEL",
                   help="also measure the Keras fp32 model (row keras_fp32; needs TensorFlow): the bundle's "
                        "model.keras, or the file given")
    p.add_argument("--reference", metavar="FILE", help="a lone file's float model (.tflite or .onnx, the same input): "
                                                       "benched beside it as <format>_fp32, the file's agreement is "
                                                       "measured against it")
    p.add_argument("--tta", choices=TTA_MODES, help="test-time augmentation in every row: 'flip' averages each image "
                                                   "with its mirror image (twice the inference per image)")
    p.add_argument("--host", help="run on this device over SSH ([user@]host, as for 'ssh'): copies the bundle "
                                  "and the images, benches there, brings the report back")
    p.add_argument("--remote-python", default=R.python, help=f"Python with edgecls[runtime] on the device (default {R.python})")
    p.add_argument("--remote-dir", default=R.remote_dir, help="working folder on the device, relative to its home")
    p.add_argument("--ssh-config", help="an ssh_config file to use instead of ~/.ssh/config")
    _add_file_options(p)
    p.add_argument("--prepared-data", help=argparse.SUPPRESS)  # labelled .npy images sent by a remote bench
    p.add_argument("--out", required=True, help="report JSON file")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("report", help="tables (Markdown, CSV, JSON) and an HTML page with plots from bench reports")
    p.add_argument("reports", nargs="+", help="report JSON files from 'edgecls bench' (several devices allowed)")
    p.add_argument("--out", required=True, help="output directory")
    from .config import REPORT_OBJECTIVES, ReportConfig as RC

    p.add_argument("--max-drop", type=float, default=RC.max_drop, metavar="POINTS",
                   help=f"the recommendation's rule: points of top-1 a variant may lose against the most accurate float "
                        f"variant on its device (default {RC.max_drop:g})")
    p.add_argument("--objective", choices=REPORT_OBJECTIVES, default=RC.objective,
                   help=f"what the recommendation minimizes within that rule (default {RC.objective})")
    p.set_defaults(func=_cmd_report)

    from .config import SPARSITY_ALLOCATIONS, TUNE_VARIANTS, TuneConfig as TC

    p = sub.add_parser("tune", help="search the variants for the best one within accuracy, size and latency budgets",
                       description="Export and measure candidate variants (post-training first, fine-tuned ones only "
                                   "where they can win), choose on a validation split held out of the training data, "
                                   "then read the test split once for the winner. Resumes an interrupted search in --out.")
    p.add_argument("model", help="an 'edgecls train' directory, a .keras or .h5 file, a SavedModel directory, or a float .onnx or .tflite file (with --scale/--mean/--std)")
    p.add_argument("--data", default=T.data, help="labelled data: the validation split and calibration from its training "
                                                  "images, the winner's figure from its test split")
    p.add_argument("--out", required=True, help="output directory (tune.json, tune.html, bundle/); resumed if it holds a search")
    _add_preprocessing_options(p)
    p.add_argument("--max-drop", type=float, metavar="POINTS", help="top-1 points a candidate may lose against the float model")
    p.add_argument("--max-bytes", type=int, metavar="N", help="largest file (or gzip size with --size gzip)")
    p.add_argument("--size", choices=("file", "gzip"), default=TC.size_measure,
                   help=f"what --max-bytes and --objective size count (default {TC.size_measure})")
    p.add_argument("--max-latency-ms", type=float, metavar="MS", help="largest p50 batch-1 latency")
    p.add_argument("--max-ram-kb", type=float, metavar="KB",
                   help="microcontroller RAM: the TFLite Micro tensor arena plus one input and one output buffer "
                        "(only full-integer TFLite files TFLite Micro runs are then candidates)")
    p.add_argument("--max-flash-kb", type=float, metavar="KB", help="microcontroller flash for the model array")
    p.add_argument("--board", metavar="NAME", help="the device the RAM and flash budgets describe, named in the answer")
    p.add_argument("--objective", choices=("latency", "size", "accuracy"), default=TC.objective,
                   help=f"what the pick minimizes (or maximizes, accuracy) within the budgets (default {TC.objective})")
    p.add_argument("--threads", type=_number_list(int, "thread counts", "1,2,4"), default=TC.threads, metavar="N[,N...]",
                   help="thread counts to measure each file at (default 1)")
    p.add_argument("--host", action="append", metavar="[USER@]DEVICE",
                   help="measure latency on this device over SSH (repeat for several alike devices: the work is shared)")
    p.add_argument("--remote-python", default=TC.remote_python, help="python on the device (default python3)")
    p.add_argument("--remote-dir", help=f"where bundles go on the devices (default {R.remote_dir})")
    p.add_argument("--ssh-config", help="an ssh_config file (ssh -F) naming the devices")
    p.add_argument("--variants", nargs="+", choices=TUNE_VARIANTS, metavar="VARIANT",
                   help=f"post-training candidates (default all: {', '.join(TUNE_VARIANTS)})")
    p.add_argument("--sparsities", type=_number_list(float, "sparsities", "0.5,0.75"), default=TC.sparsities, metavar="S[,S...]",
                   help="pruning levels of the fine-tuned candidates (default 0.5,0.75)")
    p.add_argument("--sparsity-allocations", nargs="+", choices=SPARSITY_ALLOCATIONS, default=list(TC.sparsity_allocations))
    p.add_argument("--fine-tune", choices=("auto", "always", "never"), default=TC.fine_tune,
                   help="pruning and QAT candidates: only where post-training ones cannot meet the budgets or may be "
                        "beaten (auto, default), always, or never")
    p.add_argument("--prune-epochs", type=int, default=TC.export.prune_epochs)
    p.add_argument("--qat-epochs", type=int, default=TC.export.qat_epochs)
    p.add_argument("--distill", action="store_true", help="pruning and QAT fine-tunes also learn the float model's outputs")
    p.add_argument("--validation-images", type=int, default=TC.validation_images,
                   help="training images held out to choose on (default 2,000, or a fifth of them if fewer)")
    p.add_argument("--calibration-count", type=int, default=TC.export.calibration_count)
    p.add_argument("--runs", type=int, default=TC.bench.runs,
                   help=f"timed batch-1 calls per measurement (default {TC.bench.runs})")
    p.add_argument("--repeats", type=int, default=TC.bench.repeats,
                   help=f"fresh processes per measurement (default {TC.bench.repeats})")
    p.add_argument("--jobs", type=int, default=TC.jobs, help="post-training exports side by side (default 2)")
    p.add_argument("--keep-frontier", action="store_true", help="the bundle holds the whole front, not only the winner")
    p.add_argument("--max-test-images", type=int, help="read at most this many test images for the winner's figure")
    p.add_argument("--seed", type=int, default=TC.seed)
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("pipeline", help="train, export (validated), bench and report in one go")
    p.add_argument("--data", help="training/evaluation data (default: the built-in CIFAR-10 sample)")
    p.add_argument("--out", default=P["out"], help=f"output directory (default {P['out']})")
    p.add_argument("--arch", default=P["arch"])
    p.add_argument("--epochs", type=int, default=P["epochs"])
    p.add_argument("--model", help="skip training: start from this model (an edgecls run, a Keras file, a SavedModel, "
                                   "or a float .onnx or .tflite file with --scale/--mean/--std; default with no --data: "
                                   "the shipped models/<arch> when there is one)")
    p.add_argument("--train", action="store_true", help="train a new model even when a shipped one exists")
    p.add_argument("--formats", nargs="+", help="variants or groups to export (default: default; see export --help)")
    p.add_argument("--threads", type=int, default=P["threads"])
    p.add_argument("--runs", type=int, default=P["runs"], help=f"timed batch-1 calls per variant in each of bench's "
                                                               f"processes (default {B.runs})")
    _add_preprocessing_options(p)
    p.set_defaults(func=_cmd_pipeline)
    _check_every_option(parser)
    return parser


def _interrupt(signum, frame):
    """SIGTERM and SIGHUP stop a run as Ctrl-C does: every stage's cleanup runs, no partial output stays."""
    raise Interrupted(signum=signum)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Root at WARNING keeps TensorFlow's own INFO chatter out; edgecls reports progress at INFO.
    logging.basicConfig(level=logging.WARNING, format="edgecls: %(levelname)s: %(message)s")
    logging.getLogger("edgecls").setLevel(logging.WARNING if args.quiet else logging.INFO)
    if args.native_logs:
        os.environ["EDGECLS_NATIVE_LOGS"] = "1"
    for noisy in ("tensorflow", "tf2onnx", "absl", "h5py"):
        logging.getLogger(noisy).setLevel(logging.INFO if args.native_logs else logging.ERROR)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError):  # not the main thread: leave the handlers alone
            if signal.getsignal(sig) is signal.SIG_IGN:
                continue  # ignored on purpose (nohup ignores SIGHUP): keep it so
            signal.signal(sig, _interrupt)
    try:
        return args.func(args)
    except EdgeclsError as exc:
        print(f"edgecls: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only or missing output folder: the user can fix these
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"edgecls: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except Exception as exc:  # a fault of edgecls itself: one line, the traceback on request
        if os.environ.get("EDGECLS_DEBUG"):
            raise
        print(f"edgecls: internal error: {exc.__class__.__name__}: {first_line(exc)} (a bug in edgecls: please report "
              f"it with the command; EDGECLS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", None) or signal.SIGINT
        what = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated (SIGTERM)", signal.SIGHUP: "hung up (SIGHUP)"}[signum]
        detail = getattr(exc, "message", "") or "nothing was written to the output"
        print(f"edgecls: {what}: {detail}", file=sys.stderr)
        return 128 + int(signum)


if __name__ == "__main__":
    sys.exit(main())
