"""The export runs in a worker process that a light supervisor restarts after a native crash.

Converters and runtimes are native code: a TFLite converter abort, a tf2onnx segfault or an
interpreter crash on a damaged model ends the process that hosts it, with no Python exception to
catch. So `export()` (by default, `ExportConfig.isolate`) runs the whole stage in a child process
(`python -m edgecls.export.worker JOB_DIR`) and only waits for it. The child writes a journal into
the staging folder as it goes: the variant and step it is in, each finished row, each fine-tuned
model's details. When the child dies by a signal, the supervisor reads the journal, records the
variant it was working on as an error row with the reason ("the export process crashed (signal
11) while converting it"), and starts a fresh child that keeps every finished row and artifact and
exports the remaining variants. A crash while fine-tuning the pruned or QAT model loses every
variant built from that model, without retrying it. A crash outside any variant (loading the model,
writing the bundle) ends the export with that reason.

Validation already runs each converted file in its own child (edgecls.runtime.isolated); this
worker covers the rest: conversion, reading the converted file, fine-tuning.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .. import errors
from .._io import atomic_write_json, read_json
from ..config import ExportConfig

log = logging.getLogger("edgecls")

CURRENT = ".export-current.json"
ROWS = ".export-rows.jsonl"
BUILT = ".export-built.json"
JOURNAL_FILES = (CURRENT, ROWS, BUILT)


class Journal:
    """What a worker did so far, in the staging folder (see the module docstring)."""

    def __init__(self, staging: str | Path):
        self.dir = Path(staging)
        self.rows: dict[str, dict] = {}
        for line in (self.dir / ROWS).read_text().splitlines() if (self.dir / ROWS).is_file() else ():
            if line.strip():
                row = json.loads(line)
                self.rows[row["name"]] = row
        built = read_json(self.dir / BUILT, "export journal", errors.ExportError) if (self.dir / BUILT).is_file() else {}
        self.details: dict[str, dict] = built.get("details", {})
        self.lost_sources: dict[str, str] = built.get("lost", {})
        self.restarted = bool(self.rows or self.lost_sources)

    def step(self, name: str | None, what: str, **extra) -> None:
        atomic_write_json(self.dir / CURRENT, {"name": name, "step": what, **extra})

    def finished(self, row: dict) -> None:
        self.rows[row["name"]] = row
        with open(self.dir / ROWS, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    def built(self, kind: str, details: dict) -> None:
        self.details[kind] = details
        self._save_built()

    def lose_source(self, kind: str, reason: str) -> None:
        self.lost_sources[kind] = reason
        self._save_built()

    def _save_built(self) -> None:
        atomic_write_json(self.dir / BUILT, {"details": self.details, "lost": self.lost_sources})

    def current(self) -> dict | None:
        path = self.dir / CURRENT
        return read_json(path, "export journal", errors.ExportError) if path.is_file() else None

    def clear(self) -> None:
        for name in JOURNAL_FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()


def _signal_name(code: int) -> str:
    with contextlib.suppress(ValueError):
        return f"signal {-code}, {signal.Signals(-code).name}"
    return f"signal {-code}"


def export_supervised(staging: Path, out: Path, model, data, config: ExportConfig, preprocessing=None, labels=None,
                      safe_mode: bool = True, dataset=None):
    """Run `export_into` in worker processes, restarting after each native crash (at most once
    per variant). Returns the ExportResult; raises the worker's own error class for a user error."""
    from . import ExportResult, resolve_formats

    names = resolve_formats(config.formats)
    journal = Journal(staging)
    with tempfile.TemporaryDirectory(prefix="edgecls-export-") as tmp:
        job = Path(tmp)
        payload = {
            "staging": str(staging), "out": str(out), "model": str(model),
            "data": str(data) if isinstance(data, (str, Path)) else None,
            "config": config.to_dict(), "safe_mode": safe_mode,
            "preprocessing": preprocessing.to_dict() if hasattr(preprocessing, "to_dict") else preprocessing,
            "preprocessing_is_spec": hasattr(preprocessing, "to_dict"),
            "labels": str(labels) if isinstance(labels, (str, Path)) else labels,
            "log_level": log.getEffectiveLevel(),
        }
        if dataset is not None:
            payload["dataset"] = _save_dataset(dataset, job)
        atomic_write_json(job / "job.json", payload)
        for _attempt in range(len(names) + 1):
            code = _run_worker(job)
            result = read_json(job / "result.json", "export result", errors.ExportError) \
                if (job / "result.json").is_file() else None
            if code == 0 and result and "manifest" in result:
                journal.clear()
                return ExportResult(out, result["manifest"], result["rows"])
            if result and "error" in result:
                cls = getattr(errors, result["error"], None)
                if isinstance(cls, type) and issubclass(cls, errors.EdgeclsError):
                    raise cls(result["message"])
                raise RuntimeError(result["message"])
            if code is not None and code > 0:
                raise errors.ExportError(f"the export process failed (exit status {code}); see the messages above")
            _record_crash(journal, code, names)
    raise errors.ExportError("the export process kept crashing; see the messages above")


def _record_crash(journal: Journal, code: int, names) -> None:
    """Turn the variant (or fine-tuned model) the crashed worker was on into error rows."""
    from . import VARIANTS

    journal = Journal(journal.dir)  # re-read what the worker recorded
    where = journal.current() or {}
    name, step = where.get("name"), where.get("step", "starting")
    crash = f"the export process crashed ({_signal_name(code)}) while {step}"
    if name is None or name in journal.rows:
        raise errors.ExportError(f"{crash}; nothing was written to the output (EDGECLS_NATIVE_LOGS=1 shows the "
                                 f"native messages)")
    source = where.get("source")
    if source:  # a fine-tune crashed: every variant built from that model is lost, without retrying it
        journal.lose_source(source, f"{crash} (the {source} model could not be built)")
        log.warning("%s; variants from the %s model are skipped, the others are exported in a fresh process",
                    crash, source)
        return
    variant = VARIANTS[name]
    row = {"name": name, "format": variant.format, "precision": variant.precision, "source": variant.source,
           "description": variant.description, "status": "error", "reason": crash}
    if where.get("file"):  # written before the crash: never leave it in the bundle
        with contextlib.suppress(FileNotFoundError):
            (journal.dir / where["file"]).unlink()
    journal.finished(row)
    log.warning("%s: %s; exporting the remaining variants in a fresh process", name, crash)


def worker_env() -> dict:
    """The worker's environment: this one, with glibc's malloc held to two arenas (MALLOC_ARENA_MAX,
    unless set): TensorFlow's threads otherwise each keep an arena of freed memory, and exporting a
    96x96 MobileNetV2 peaked 300 MB higher (2,198 MB against 1,898 MB). Other C libraries ignore it."""
    return {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}


def _run_worker(job: Path) -> int | None:
    """Run one worker to its end; its messages go to this process's stderr as they come."""
    with contextlib.suppress(FileNotFoundError):
        (job / "result.json").unlink()
    proc = subprocess.Popen([sys.executable, "-m", __name__, str(job)], stdin=subprocess.DEVNULL, env=worker_env())
    try:
        return proc.wait()
    except BaseException:
        # Ctrl-C reaches the worker too (same process group); SIGTERM or SIGHUP reach only us.
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def _save_dataset(dataset, job: Path) -> dict:
    """A Dataset given in memory, as plain .npy files and JSON (read back with allow_pickle=False)."""
    folder = job / "dataset"
    folder.mkdir()
    for split in ("train", "test"):
        part = getattr(dataset, split)
        np.save(folder / f"{split}_images.npy", part.images)
        np.save(folder / f"{split}_labels.npy", part.labels)
    return {"name": dataset.name, "source": dataset.source, "class_names": list(dataset.class_names),
            "skipped": dataset.skipped, "split": dataset.split, "folder": str(folder)}


def _load_dataset(meta: dict):
    from ..data import Dataset, ImageSet

    folder = Path(meta["folder"])
    parts = {split: ImageSet(np.load(folder / f"{split}_images.npy", allow_pickle=False),
                             np.load(folder / f"{split}_labels.npy", allow_pickle=False)) for split in ("train", "test")}
    return Dataset(meta["name"], meta["source"], tuple(meta["class_names"]), parts["train"], parts["test"],
                   skipped=meta["skipped"], split=meta["split"])


def _main(argv) -> int:
    job = Path(argv[0])
    payload = json.loads((job / "job.json").read_text())
    logging.basicConfig(level=logging.WARNING, format="edgecls: %(levelname)s: %(message)s")
    log.setLevel(payload.get("log_level", logging.INFO))
    for noisy in ("tensorflow", "tf2onnx", "absl", "h5py"):
        logging.getLogger(noisy).setLevel(logging.INFO if os.environ.get("EDGECLS_NATIVE_LOGS") else logging.ERROR)
    result: dict
    try:
        from . import export_into

        config = ExportConfig.from_dict(payload["config"])
        preprocessing = payload["preprocessing"]
        if payload.get("preprocessing_is_spec"):
            from ..preprocess import PreprocessingSpec

            preprocessing = PreprocessingSpec.from_dict(preprocessing)
        dataset = _load_dataset(payload["dataset"]) if payload.get("dataset") else None
        staging = Path(payload["staging"])
        exported = export_into(staging, Path(payload["out"]), payload["model"], payload["data"], config,
                               preprocessing, payload["labels"], payload["safe_mode"], dataset,
                               journal=Journal(staging))
        result = {"manifest": exported.manifest, "rows": exported.rows}
        code = 0
    except errors.EdgeclsError as exc:
        result, code = {"error": type(exc).__name__, "message": str(exc)}, 2
    except OSError as exc:
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        result, code = {"error": "ExportError", "message": f"{exc.strerror or exc}{where}"}, 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("EDGECLS_DEBUG"):
            import traceback

            traceback.print_exc()
        result, code = {"error": "internal", "message": f"{exc.__class__.__name__}: {errors.first_line(exc)}"}, 1
    atomic_write_json(job / "result.json", result)
    return code


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
