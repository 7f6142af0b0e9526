"""`edgecls pipeline`: train -> optimize/export (validated) -> bench -> report, end to end.

With no data it runs on the built-in CIFAR-10 sample and finishes in a few minutes on 2 CPU cores.
Every stage is the same public function a Python user calls; each writes its own subdirectory of
`out` atomically: model/, bundle/, bench.json, report/.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .config import CalibrationConfig, ExportConfig, FineTuneConfig

log = logging.getLogger("edgecls")

# Trained CIFAR-10 models shipped in the repository (models/<arch>/: model.keras beside its bundle).
SHIPPED_MODELS = Path(__file__).resolve().parent.parent / "models"


def shipped_model(arch: str) -> Path | None:
    """The shipped trained model for `arch` ($EDGECLS_MODELS/<arch> or the repository's
    models/<arch>), or None when there is none (for example in an installed wheel)."""
    root = Path(os.environ.get("EDGECLS_MODELS") or SHIPPED_MODELS)
    path = root / arch
    return path if (path / "model.keras").is_file() and (path / "preprocessing.json").is_file() else None


@dataclass
class PipelineResult:
    out: Path
    train_metrics: dict | None
    export_rows: list
    export_table: str
    bench: dict
    report_html: Path
    table: str
    reference_name: str = "the Keras model"  # what every variant was validated against
    recommendation: str = ""  # the report's recommendation and warnings, in words


def run_pipeline(data: str | None = None, out: str | Path = "runs/pipeline", arch: str = "resnet8", epochs: int = 15,
                 formats=ExportConfig.formats, threads: int = 1, runs: int | None = None, model: str | Path | None = None,
                 batch_size: int = 64, calibration_count: int | None = None, progress=None,
                 train_new: bool = False, preprocessing=None, labels=None, safe_mode: bool = True) -> PipelineResult:
    """With no `data` and no `model`, start from the shipped CIFAR-10 model of `arch` when there is
    one (its first run shows a real model's accuracy in minutes); `train_new` trains one instead."""
    from ._io import atomic_write_json
    from .bench import BenchConfig, bench
    from .config import TrainConfig
    from .data import SAMPLE_NAME, load_dataset
    from .export import export
    from .report import Report
    from .training import train

    from .outputs import PIPELINE_ENTRIES, check_output_dir

    out = check_output_dir(out, "pipeline", inputs=(model, data))
    if model is None and data is None and not train_new:
        model = shipped_model(arch)
    for name, kind in PIPELINE_ENTRIES.items():  # before any work: each stage checks its own folder again
        if name != "model" or model is None:
            check_output_dir(out / name, kind, inputs=(model, data))
    data = data or SAMPLE_NAME
    dataset = load_dataset(data)
    if calibration_count is None:
        # The export default unless the training split is smaller than that.
        default = ExportConfig.calibration.count
        calibration_count = min(default, len(dataset.train))
        if calibration_count < default:
            log.info("calibrating int8 on all %d training images (fewer than the default %d)", calibration_count, default)
    metrics = None
    if model is None:
        log.info("[1/4] training %s on %s for %d epochs", arch, data, epochs)
        result = train(TrainConfig(data=data, arch=arch, epochs=epochs, batch_size=batch_size, out=str(out / "model"),
                                   verbose=0), dataset=dataset)
        metrics = result.metrics
        log.info("test accuracy %.4f (%s s)", metrics["test_accuracy"], metrics["wall_time_s"])
        model = out / "model"
    else:
        log.info("[1/4] using the trained model %s (no training; --train trains a new one)", model)
    log.info("[2/4] optimizing, exporting and validating: %s", ", ".join(formats))
    exported = export(model, data=data, out=out / "bundle", dataset=dataset, preprocessing=preprocessing,
                      labels=labels, safe_mode=safe_mode, config=ExportConfig(formats=tuple(formats), fine_tune=FineTuneConfig(batch_size=batch_size),
                                          calibration=CalibrationConfig(count=calibration_count)))
    keras_file = Path(model) / "model.keras" if Path(model).is_dir() else None
    bench_config = BenchConfig(threads=threads, keras=str(keras_file) if keras_file and keras_file.is_file() else None,
                               **({"runs": runs} if runs else {}))
    log.info("[3/4] benchmarking (%d thread(s), %d runs per variant in each of %d processes)", threads, bench_config.runs,
             bench_config.repeats)
    report_data = bench(out / "bundle", data=data, progress=progress, config=bench_config)
    atomic_write_json(out / "bench.json", report_data)
    log.info("[4/4] writing the report")
    report = Report([report_data], ["bench.json"])
    report.write(out / "report")
    kind = exported.manifest.get("model", {}).get("kind")
    reference = {"onnx": "your ONNX model (onnxruntime)", "tflite": "your TFLite model (LiteRT)"}.get(kind, "the Keras model")
    return PipelineResult(out, metrics, exported.rows, exported.format_table(), report_data,
                          out / "report" / "report.html", report.markdown(lead=False), reference,
                          report.recommendation_text())
