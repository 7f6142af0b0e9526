"""Command line: parses arguments into configs and calls the library. Nothing else lives here.

Every EdgeclsError is printed as one line (`edgecls: error: ...`) with exit status 2; Ctrl-C exits
with status 130 and a note; no traceback reaches the user for a mistake they can fix.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import types
import typing
from pathlib import Path

import numpy as np

from . import __version__
from .config import BIG, BenchConfig, ExportConfig, ReportConfig, TrainConfig, TuneConfig
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
    from .training import train

    config = config_from_args(TrainConfig, args)
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
    """An argparse type: comma-separated numbers of `kind` ('100,300,1000'); `example` shows the form."""
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(t) for t in text.replace(" ", "").split(",") if t)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what} ({example}), got {text!r}")
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one of the {what}")
        return values
    return parse


def _range(cls, name: str) -> tuple:
    return next(f.metadata["range"] for f in dataclasses.fields(cls) if f.name == name)


# The range of each numeric option written here rather than built from a config field (inclusive;
# "above": the value must exceed the low bound; "open": it must stay strictly between both bounds),
# checked when the command line is parsed, before any work starts. An option missing here gets
# DEFAULT_RANGE: a finite, non-negative number. Options built from config fields carry their own
# (edgecls.config.option).
RANGES = {
    "--image-size": _range(TrainConfig, "image_size"), "--epochs": _range(TrainConfig, "epochs"),
    "--threads": _range(BenchConfig, "threads"), "--runs": _range(BenchConfig, "runs"), "--classes": (2, 1000),
    "--top": (0, BIG), "--top-k": (1, 100_000), "--scale": (0, 1e6, "above"), "--mean": (-1e6, 1e6),
    "--std": (0, 1e6, "above"),
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
            if action.nargs == 0 or isinstance(action, argparse._SubParsersAction) or isinstance(action.type, Bounded):
                continue  # flags, --help, options built from config fields
            flag = next((o for o in action.option_strings if o.startswith("--")), None)
            low, high, *rest = RANGES.get(flag, DEFAULT_RANGE)
            exclude = rest[0] if rest else ""
            if action.type in (int, float):
                action.type = Bounded(_number_or_int(action.type), low, high, exclude)
            elif action.type is _number:
                action.type = Bounded(_number, low, high, exclude)
            elif action.type is None and not action.choices:
                action.type = _text


def _shown(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(_shown(v) for v in value) if all(isinstance(v, (int, float)) for v in value) else " ".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _plain_type(hint):
    """`int | None` -> int; other hints as they are."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint


def _wanted(path: str, sections) -> bool:
    return sections is None or any(path == s or path.startswith(s + ".") or s.startswith(path + ".") for s in sections)


def add_config_options(parser, cls, *, defaults=None, sections=None, skip=(), dest: str = "") -> None:
    """One option per field of the config class `cls` that edgecls.config.option() made an option:
    its flag, help, choices and range from the field, its default from `defaults` (an instance; the
    class's own defaults otherwise). Section fields (a config inside a config) are followed: all of
    them, or only the paths in `sections`. Each option's dest is the field's dotted path, which
    `config_from_args` reads back."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = dest + f.name
        default = getattr(defaults, f.name) if defaults is not None else f.default
        hint = _plain_type(hints[f.name])
        if path in skip:
            continue
        if dataclasses.is_dataclass(hint):
            if _wanted(path, sections):
                add_config_options(parser, hint, defaults=default, sections=sections, skip=skip, dest=path + ".")
            continue
        meta = f.metadata
        if "help" not in meta or (dest and not _wanted(path, sections)):
            continue
        help_text = meta["help"]
        if hint is not bool and default is not None and default != () and "(default" not in help_text:
            help_text += f" (default {_shown(default)})"
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        kw = {"dest": path, "help": help_text.replace("%", "%%"), "default": default,
              "metavar": meta["metavar"] or (None if meta["choices"] else flag[2:].upper().replace("-", "_"))}
        low, high, *rest = meta["range"] or DEFAULT_RANGE
        exclude = rest[0] if rest else ""
        if hint is bool:
            kw["action"] = "store_false" if default else "store_true"
            kw.pop("metavar", None)
        elif typing.get_origin(hint) is tuple:
            item = typing.get_args(hint)[0]
            if item is str:  # `--flag a b` or `--flag a --flag b`; not given: the default
                kw.update(nargs="+", action="extend", default=None, choices=meta["choices"])
            else:
                what = "integers" if item is int else "numbers"
                kw["type"] = Bounded(_number_list(item, what, kw["metavar"]), low, high, exclude, many=True)
        else:
            if meta["const"] is not None:
                kw.update(nargs="?", const=meta["const"])
            if hint in (int, float):
                kw["type"] = Bounded(_number_or_int(hint), low, high, exclude)
            elif meta["choices"]:
                kw["type"] = type(meta["choices"][0])
            else:
                kw["type"] = _text
            if meta["choices"]:
                kw["choices"] = meta["choices"]
        parser.add_argument(flag, **kw)


def config_from_args(cls, args, defaults=None, dest: str = ""):
    """The config `add_config_options` described, from the parsed `args`: each field whose dotted
    path is an attribute of `args` takes that value; every other field keeps `defaults`' value (or
    the class default)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        path, hint = dest + f.name, _plain_type(hints[f.name])
        if dataclasses.is_dataclass(hint):
            inner = getattr(defaults, f.name) if defaults is not None else f.default
            values[f.name] = config_from_args(hint, args, inner, path + ".")
        elif getattr(args, path, None) is not None:  # None: not given (a None default stays None)
            value = getattr(args, path)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(defaults, **values) if defaults is not None else cls(**values)


_FORMAT_NAMES = {"keras": "Keras", "onnx": "ONNX", "tflite": "TFLite"}


def _cmd_export(args) -> int:
    from .export import export

    result = export(args.model, data=args.data, out=args.out, config=config_from_args(ExportConfig, args),
                    preprocessing=_preprocessing_arg(args), labels=args.labels, safe_mode=not args.unsafe)
    print(result.format_table())
    ok = sum(r["status"] == "ok" for r in result.rows)
    ref = result.manifest["reference"]
    print(f"\n{_FORMAT_NAMES.get(ref.get('format'), 'Keras')} fp32 reference accuracy {ref['accuracy']:.4f} on {ref['images']} held-out images; "
          f"{ok} of {len(result.rows)} variants validated; bundle: {result.out}")
    return 0 if ok else 1


def _cmd_tune(args) -> int:
    from .tune import tune

    config = config_from_args(TuneConfig, args, TuneConfig())
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

    report = optimize(args.model, data=args.data, out=args.out, kinds=tuple(args.variants), config=config_from_args(ExportConfig, args),
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
    from .bench import bench
    from .bench.remote import RemoteConfig, remote_bench
    from .outputs import check_output_file
    from .report import Report

    check_output_file(args.out, "bench", inputs=(args.bundle,))
    config = config_from_args(BenchConfig, args)
    remote = config_from_args(RemoteConfig, args, dest="remote.") if getattr(args, "remote.host") else None
    if remote:
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

    report = Report.load(args.reports, config_from_args(ReportConfig, args))
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


MODEL_HELP = ("an 'edgecls train' directory, a .keras or .h5 file, a SavedModel directory, or a float .onnx or .tflite "
              "file (with --scale/--mean/--std)")


def _add_model_options(p):
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--data", default=TrainConfig.data,
                   help="labelled data: calibration from its train split, validation on its test split")
    p.add_argument("--out", required=True, help="output directory")
    _add_preprocessing_options(p)


class _Parser(argparse.ArgumentParser):
    """A command-line mistake is one line too (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"edgecls: error: {self.prog}: {message}; see '{self.prog} --help'\n")


# What `edgecls optimize` takes of the export options: the fine-tunes and their calibration.
OPTIMIZE_SECTIONS = ("prune", "qat", "fine_tune", "calibration")
OPTIMIZE_SKIP = ("formats", "optimized", "fine_tune.max_drop", "calibration.search", "calibration.draws")
# What `edgecls tune` takes of each stage's export and bench settings (the rest it sets itself).
TUNE_SECTIONS = ("export.prune.epochs", "export.qat.epochs", "export.fine_tune.distill", "export.calibration.count",
                 "bench.runs", "bench.repeats")


def build_parser() -> argparse.ArgumentParser:
    import inspect

    from .bench.remote import RemoteConfig
    from .config import TTA_MODES
    from .pipeline import run_pipeline

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
    p.add_argument("--out", required=True, help="output directory")
    add_config_options(p, TrainConfig)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="top-1, per-class accuracy and confusion matrix of a trained model")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--data", default=TrainConfig.data)
    p.add_argument("--split", default="test", choices=("test", "train"))
    p.add_argument("--out", help="JSON output file (default: eval.json beside the model)")
    _add_preprocessing_options(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("optimize", help="prune and/or quantization-aware-train a model; writes Keras models")
    _add_model_options(p)
    add_config_options(p, ExportConfig, sections=OPTIMIZE_SECTIONS, skip=OPTIMIZE_SKIP)
    p.add_argument("--variants", nargs="+", default=["pruned", "qat", "pruned_qat"], choices=("pruned", "qat", "pruned_qat"))
    p.set_defaults(func=_cmd_optimize)

    p = sub.add_parser("export", help="optimize, convert to TFLite/ONNX, validate every artifact, write a bundle")
    _add_model_options(p)
    add_config_options(p, ExportConfig)
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
    add_config_options(p, BenchConfig)
    p.add_argument("--reference", metavar="FILE", help="a lone file's float model (.tflite or .onnx, the same input): "
                                                       "benched beside it as <format>_fp32, the file's agreement is "
                                                       "measured against it")
    add_config_options(p, RemoteConfig, dest="remote.")
    _add_file_options(p)
    p.add_argument("--prepared-data", help=argparse.SUPPRESS)  # labelled .npy images sent by a remote bench
    p.add_argument("--out", required=True, help="report JSON file")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("report", help="tables (Markdown, CSV, JSON) and an HTML page with plots from bench reports")
    p.add_argument("reports", nargs="+", help="report JSON files from 'edgecls bench' (several devices allowed)")
    p.add_argument("--out", required=True, help="output directory")
    add_config_options(p, ReportConfig)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("tune", help="search the variants for the best one within accuracy, size and latency budgets",
                       description="Export and measure candidate variants (post-training first, fine-tuned ones only "
                                   "where they can win), choose on a validation split held out of the training data, "
                                   "then read the test split once for the winner. Resumes an interrupted search in --out.")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--data", default=TrainConfig.data, help="labelled data: the validation split and calibration from its "
                                                            "training images, the winner's figure from its test split")
    p.add_argument("--out", required=True, help="output directory (tune.json, tune.html, bundle/); resumed if it holds a search")
    _add_preprocessing_options(p)
    add_config_options(p, TuneConfig, defaults=TuneConfig(), sections=TUNE_SECTIONS)
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
                                                               f"processes (default {BenchConfig.runs})")
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
