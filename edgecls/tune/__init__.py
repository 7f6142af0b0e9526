"""`edgecls tune`: the best variant for a budget and a device, found by measurement.

    tune(model, data, out, TuneConfig(max_drop=0.5, objective="latency"))

The search, in stages, each an ordinary `edgecls export` into `OUT/work/<stage>/` (validated like
every bundle) followed by latency measurements at each thread count (`edgecls bench`, here or on
`--host` devices over SSH):

1. post-training candidates (no fine-tuning): float, fp16, dynamic range and int8 by every engine,
   TFLite and ONNX; the TFLite and ONNX exports run in parallel when `jobs` allows;
2. selective repair (`--max-drop` given and a post-training int8 file misses it): those int8
   variants again with their most sensitive layers kept in float (edgecls.export.repair);
3. fine-tuned candidates (pruning at each sparsity and allocation, QAT, pruning with QAT), only when
   `select.fine_tune_reason` says the cheap ones cannot meet the budgets or may be beaten; one
   fine-tune per sparsity serves every format and quantization of it.

Choices are made on a validation split drawn from the training data (stratified, `validation_images`)
that neither calibration nor fine-tuning sees; the test split is read once, after the choice, for the
winner and its float model. Every finished stage and measurement is recorded in `OUT/tune.json`, so
an interrupted run resumes where it stopped (the same command; budgets and the objective may change,
the search space may not).
"""
from __future__ import annotations

import logging
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from ..config import ExportConfig, MicroConfig, TuneConfig
from ..errors import ConfigError, DataError
from ..selection import Budgets, choose, explain, fine_tune_reason

log = logging.getLogger("edgecls")

KIND = "edgecls-tune"
SCHEMA = 1
# What a post-training stage exports, by format (the float file of each format is the reference its
# int8 files are diagnosed against).
PTQ_STAGES = {
    "tflite": ("tflite_fp32", "tflite_fp16", "tflite_dynamic", "tflite_dynamic_aeq", "tflite_int8", "tflite_int8_pixels",
               "tflite_int8_aeq", "tflite_int16x8_aeq"),
    "onnx": ("onnx_fp32", "onnx_int8", "onnx_int8_minmax", "onnx_int8_entropy", "onnx_int8_nncf"),
}
PRUNED = ("tflite_pruned_fp32", "tflite_pruned_int8", "tflite_pruned_qat_int8")
QAT = ("tflite_qat_int8",)
# Settings that change what a candidate measures: a resumed run must have the same ones. Each key of
# tune.json's "space" and where it lives in TuneConfig.
SPACE_KEYS = {"variants": "variants", "threads": "threads", "sparsities": "sparsities",
              "sparsity_allocations": "sparsity_allocations", "prune_epochs": "export.prune.epochs",
              "qat_epochs": "export.qat.epochs", "distill": "export.fine_tune.distill",
              "validation_images": "validation_images", "calibration_count": "export.calibration.count",
              "runs": "bench.runs", "warmup": "bench.warmup", "repeats": "bench.repeats", "seed": "seed", "hosts": "hosts"}
# What a record written before a space key existed meant by its absence (every key `_space` adds
# beside SPACE_KEYS needs one).
SPACE_ABSENT = {"micro": False}


class TuneResult:
    def __init__(self, record: dict, out: Path):
        self.record, self.out = record, out

    @property
    def winner(self) -> dict | None:
        return self.record["choice"]["winner"]

    @property
    def answer(self) -> list[str]:
        return self.record["choice"]["answer"]


def _budgets(config: TuneConfig) -> Budgets:
    kb = lambda v: None if v is None else int(round(v * 1024))  # noqa: E731
    return Budgets(config.max_drop, config.max_bytes, config.size_measure, config.max_latency_ms, kb(config.max_ram_kb),
                   kb(config.max_flash_kb), config.board)


def _space(config: TuneConfig) -> dict:
    """What the search covers, as tune.json records it (flat: a stage's export and bench settings
    beside the search's own)."""
    space = {}
    for key, path in SPACE_KEYS.items():
        value = config
        for part in path.split("."):
            value = getattr(value, part)
        space[key] = list(value) if isinstance(value, tuple) else value
    # Microcontroller budgets run every TFLite file under TFLite Micro too: another search space.
    space["micro"] = _budgets(config).micro
    return space


def _stage_name(sparsity: float, allocation: str) -> str:
    return f"pruned{round(100 * sparsity)}" + ("" if allocation == "uniform" else f"-{allocation}")


def stage_dir(out: Path, stage: str) -> Path:
    """Where a stage's bundle is: derived from its name, never read from tune.json."""
    return out / "work" / stage


_STAGE_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


def _check_record(record, path: Path) -> None:
    """ConfigError unless `record` has the shape tune writes (stage names plain words, so a stage's
    folder stays inside OUT/work)."""
    ok = (isinstance(record, dict) and record.get("kind") == KIND and record.get("schema") == SCHEMA
          and isinstance(record.get("stages"), dict) and isinstance(record.get("candidates"), list)
          and all(isinstance(k, str) and _STAGE_NAME.fullmatch(k) for k in record["stages"])
          and all(isinstance(c, dict) and c.get("stage") in record["stages"] for c in record["candidates"]))
    if not ok:
        raise ConfigError(f"{path} is not a tune record this edgecls wrote (or it is damaged); choose a new --out")


def read_record(path: Path) -> dict:
    """A tune.json, read within bounds and checked against its schema (names, numbers, types, lists)
    and the rules across it, before anything uses it; ConfigError naming what is wrong otherwise."""
    from .._io import read_json

    record = read_json(path, "tune record", ConfigError, "tune")
    _check_record(record, path)
    return record


def artifact_id(stage: str, variant: str) -> str:
    """The name a candidate file goes by: the variant, with its sparsity for pruned stages and
    '+repair' for repaired ones."""
    if stage.startswith("pruned"):
        return f"{variant}:{stage.removeprefix('pruned')}"
    return f"{variant}+repair" if stage == "repair" else variant


class _State:
    """tune.json: settings, finished stages, every candidate; written atomically after each step."""

    def __init__(self, out: Path, record: dict):
        import threading

        self.out, self.record = out, record
        self.lock = threading.RLock()  # stages finish and measurements land from several threads

    @classmethod
    def open(cls, out: Path, model, data, config: TuneConfig) -> "_State":

        path = out / "tune.json"
        space = _space(config)
        if path.is_file():
            old = read_record(path)
            recorded = old.get("space", {})
            changed = [k for k, value in space.items() if recorded.get(k, SPACE_ABSENT.get(k)) != value]
            if old.get("model") != str(model) or old.get("data") != str(data):
                changed = ["model or data"] + changed
            if changed:
                raise ConfigError(f"--out {out} holds a search with other settings ({', '.join(changed)}); resume it with "
                                  f"the same ones, or choose a new --out")
            done = sum(1 for c in old["candidates"] if c.get("latency_ms") is not None)
            log.info("resuming the search in %s: %d stage(s) and %d measurement(s) already done", out,
                     len(old["stages"]), done)
            old["resumed"] = old.get("resumed", 0) + 1
            return cls(out, old)
        record = {"kind": KIND, "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "model": str(model), "data": str(data), "space": space, "stages": {}, "candidates": [],
                  "elapsed_s": 0.0}
        state = cls(out, record)
        state.save()
        return state

    def save(self) -> None:
        from .._io import atomic_write_json

        with self.lock:
            atomic_write_json(self.out / "tune.json", self.record)

    def candidates(self) -> list[dict]:
        return list(self.record["candidates"])

    def add_stage(self, stage: str, bundle: Path, rows: list[dict], reference: dict, config: TuneConfig,
                  why: str, seconds: float) -> None:
        with self.lock:
            self._add_stage(stage, bundle, rows, reference, config, why, seconds)

    def _add_stage(self, stage, bundle, rows, reference, config, why, seconds) -> None:
        ref = reference["accuracy"]
        known = {c["sha256"]: c["artifact"] for c in self.record["candidates"] if c.get("sha256")}
        same = {}
        for row in rows:
            if row.get("sha256") in known:  # the same bytes as a file already in the search
                same[row["name"]] = known[row["sha256"]]
                continue
            if stage == "repair" and isinstance(row.get("repair"), dict) and not row["repair"].get("kept_float"):
                # The repair met the budget with every layer quantized (on its own split): the plain file again.
                same[row["name"]] = row["name"]
                continue
            v = row.get("validation") or {}
            art = artifact_id(stage, row["name"])
            if row.get("sha256"):
                known[row["sha256"]] = art
            base = {"artifact": art, "stage": stage, "variant": row["name"], "format": row.get("format"),
                    "precision": row.get("precision"), "engine": row.get("engine"), "sparsity": row.get("sparsity"),
                    "file": row.get("file"), "sha256": row.get("sha256"),
                    "status": "ok" if row.get("status") == "ok" else (row.get("status") or "error"),
                    "reason": row.get("reason") or v.get("reason") or "",
                    "accuracy": v.get("accuracy"), "agreement": v.get("agreement"),
                    "drop": None if v.get("accuracy") is None else round(100 * (ref - v["accuracy"]), 4),
                    "bytes": (row.get("size") or {}).get("bytes"), "gzip_bytes": (row.get("size") or {}).get("gzip_bytes"),
                    "repair": row.get("repair")}
            micro = row.get("micro")
            if isinstance(micro, dict) and micro:
                base.update(micro_status=micro.get("status"), micro_reason=micro.get("reason") or "",
                            ram_bytes=micro.get("ram_bytes"), flash_bytes=micro.get("flash_bytes"),
                            arena_bytes=micro.get("arena_bytes"))
            for t in config.threads:
                self.record["candidates"].append({"id": f"{art}@{t}t", **base, "threads": t, "latency_ms": None})
        self.record["stages"][stage] = {"bundle": str(bundle.relative_to(self.out)), "why": why, "seconds": round(seconds, 1),
                                        "variants": [r["name"] for r in rows], "same_file_as": same}
        self.record["reference"] = reference
        self.save()


def _interrupt_children() -> None:
    """Pass Ctrl-C on to this process's children (export workers run from threads)."""
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            try:
                os.kill(int(stat.parent.name), signal.SIGINT)
            except OSError:
                pass


def _split(dataset, count: int, seed: int):
    """(dataset whose test split is the validation split, its train split the rest of the training
    images) — what every export of the search sees."""
    from ..data import Dataset, stratified_split

    n = len(dataset.train)
    if count is None:
        count = max(min(2000, n // 5), min(100, n // 2))
    if count > n // 2:
        raise DataError(f"--validation-images {count}: {dataset.source} has {n} training images; the validation split "
                        f"may take at most half of them")
    keep, held = stratified_split(dataset.train.labels, count / n, seed)
    return Dataset(name=dataset.name, source=f"validation split of {dataset.source} ({len(held)} training images)",
                   class_names=dataset.class_names, train=dataset.train.subset(keep), test=dataset.train.subset(held),
                   split=f"tune validation: {len(held)} of {n} training images held out (seed {seed})")


class _Search:
    def __init__(self, model, data, out: Path, config: TuneConfig, state: _State, source, dataset, val, progress):
        self.model, self.data, self.out, self.config, self.state = model, data, out, config, state
        self.source, self.dataset, self.val, self.progress = source, dataset, val, progress
        self.started = time.perf_counter()
        self.before = state.record["elapsed_s"]  # search time of the earlier, interrupted runs
        # A model given as an ONNX or TFLite file (edgecls.sources) has no Keras layer graph: its
        # candidates are the post-training files of its float files (repaired too); no fine-tuning.
        self.keras = getattr(source, "model", None) is not None

    # -- stages -----------------------------------------------------------------------------------
    def export_stage(self, stage: str, variants, why: str, **settings) -> None:
        from ..export import export

        if stage in self.state.record["stages"]:
            return
        bundle = stage_dir(self.out, stage)
        self.say(f"{stage}: exporting {len(variants)} variant(s) ({why})")
        # A fine-tuned candidate's loss against the float model is the search's to judge (--max-drop,
        # on the validation split): the export only checks that its conversion is faithful.
        if _budgets(self.config).micro:  # every full-integer TFLite file also under TFLite Micro
            settings = {"micro": MicroConfig(enabled=True, images=min(ExportConfig.micro.images, len(self.val.test))),
                        **settings}
        config = replace(self.config.export, formats=tuple(variants), seed=self.config.seed,
                         fine_tune=replace(self.config.export.fine_tune, max_drop=100.0), **settings)
        t0 = time.perf_counter()
        result = export(self.model, data=self.data, out=bundle, config=config, dataset=self.val,
                        preprocessing=self.source.preprocessing, labels=list(self.source.labels))
        seconds = time.perf_counter() - t0
        ok = sum(r["status"] == "ok" for r in result.rows)
        self.say(f"{stage}: {ok} of {len(result.rows)} variant(s) validated in {seconds:.0f} s")
        self.state.add_stage(stage, bundle, result.rows, result.manifest["reference"], self.config, why, seconds)

    def post_training(self) -> None:
        # Under microcontroller budgets only full-integer TFLite files are candidates: no ONNX stage.
        formats = ("tflite",) if _budgets(self.config).micro else tuple(PTQ_STAGES)
        stages = [(name, [v for v in names if v in self.config.variants]) for name, names in PTQ_STAGES.items()
                  if name in formats]
        stages = [(n, v) for n, v in stages if v and n not in self.state.record["stages"]]
        if self.config.jobs > 1 and len(stages) > 1:
            with ThreadPoolExecutor(max_workers=min(self.config.jobs, len(stages))) as pool:
                futures = [pool.submit(self.export_stage, n, v, "post-training: no fine-tuning") for n, v in stages]
                try:
                    for f in futures:
                        f.result()
                except KeyboardInterrupt:
                    _interrupt_children()
                    raise
        else:
            for n, v in stages:
                self.export_stage(n, v, "post-training: no fine-tuning")

    def repair(self, budgets: Budgets) -> None:
        if budgets.max_drop is None:
            return
        missing = sorted({c["variant"] for c in self.state.candidates() if c["stage"] in PTQ_STAGES and c["status"] == "ok"
                          and c["precision"] == "int8" and c["drop"] is not None and c["drop"] > budgets.max_drop})
        if missing:
            self.export_stage("repair", missing, f"int8 files over --max-drop {budgets.max_drop:g}: keep their most "
                                                 f"sensitive layers in float",
                              validation=replace(self.config.export.validation, max_drop=budgets.max_drop))

    def fine_tuned(self, why: str) -> None:
        prune = self.config.export.prune
        plan = [("qat", QAT, {})] + [(_stage_name(s, a), PRUNED, {"prune": replace(prune, sparsity=s, allocation=a)})
                                     for a in self.config.sparsity_allocations for s in self.config.sparsities]
        for i, (stage, variants, settings) in enumerate(plan):
            if stage in self.state.record["stages"]:
                continue
            self.export_stage(stage, variants, why, **settings)
            pruned = [self.state.record["stages"][n]["seconds"] for n, _, _ in plan[1:] if n in self.state.record["stages"]]
            left = len(plan) - i - 1
            if left and pruned:  # every pruned stage fine-tunes alike: the mean so far estimates the rest
                self.say(f"fine-tuning: {i + 1} of {len(plan)} stages done, ~{left * sum(pruned) / len(pruned) / 60:.0f} min "
                         f"left before their latency")

    # -- latency ----------------------------------------------------------------------------------
    def measure(self) -> None:
        """p50 batch-1 latency of every validated candidate not measured yet, at each thread count;
        several hosts share the work (each host measures whole bundles at one thread count)."""
        jobs = []
        for stage in self.state.record["stages"]:
            for t in self.config.threads:
                names = sorted({c["variant"] for c in self.state.candidates() if c["stage"] == stage and c["threads"] == t
                                and c["status"] == "ok" and c["latency_ms"] is None})
                if names:
                    jobs.append((stage, stage_dir(self.out, stage), t, names))
        if not jobs:
            return
        total = sum(len(j[3]) for j in jobs)
        done = [0]
        t0 = time.perf_counter()
        hosts = list(self.config.hosts) or [None]

        def run(host, job):
            stage, bundle, threads, names = job
            rows = self._bench(host, bundle, threads, names)
            with self.state.lock:
                self._record_latency(stage, threads, host, rows)
                done[0] += len(names)
                self.state.save()
                rate = (time.perf_counter() - t0) / done[0]
                self.say(f"latency: {done[0]}/{total} measured, ~{rate * (total - done[0]):.0f} s left")

        if len(hosts) == 1:
            for job in jobs:
                run(hosts[0], job)
            return
        import queue

        todo: queue.Queue = queue.Queue()
        for job in jobs:
            todo.put(job)

        def worker(host):
            while True:
                try:
                    job = todo.get_nowait()
                except queue.Empty:
                    return
                run(host, job)

        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            for f in [pool.submit(worker, h) for h in hosts]:
                f.result()

    def _record_latency(self, stage: str, threads: int, host, rows) -> None:
        for row in rows:
            cand = next(c for c in self.state.candidates() if c["stage"] == stage and c["variant"] == row["name"]
                        and c["threads"] == threads)
            if row.get("status") == "ok":
                cand["latency_ms"] = row["latency_ms"]["p50"]
                cand["latency_p90_ms"] = row["latency_ms"]["p90"]
                cand["latency_rounds_ms"] = (row.get("repeats") or {}).get("p50_ms") or [row["latency_ms"]["p50"]]
                cand["peak_rss_mb"] = row.get("peak_rss_mb")
                cand["device"] = host or "local"
            else:
                cand["status"], cand["reason"] = "failed", f"bench: {row.get('error', '')}"

    def _bench(self, host, bundle: Path, threads: int, names) -> list[dict]:

        config = replace(self.config.bench, variants=tuple(names), threads=threads)
        if host is None:
            from ..bench import bench

            report = bench(bundle, None, config)
        else:
            from ..bench.remote import RemoteConfig, remote_bench

            remote = RemoteConfig(host, python=self.config.remote_python, ssh_config=self.config.ssh_config,
                                  **({"remote_dir": self.config.remote_dir} if self.config.remote_dir else {}))
            report = remote_bench(bundle, remote, None, config, log=lambda msg: self.say(f"{host}: {msg}"))
        # Where the latencies were measured: CPU, flags, cores, runtime versions.
        with self.state.lock:
            self.state.record.setdefault("devices", {})[host or "local"] = report["host"]
        return report["variants"]

    def say(self, text: str) -> None:
        elapsed = self.elapsed()
        if self.progress:
            self.progress(f"tune [{elapsed / 60:5.1f} min] {text}")
        else:
            log.info("%s", text)

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.started


def tune(model, data="cifar10-sample", out="runs/tune", config: TuneConfig | None = None, preprocessing=None,
         labels=None, safe_mode: bool = True, progress=None, **overrides) -> TuneResult:
    """Search the variants of `model` for the best one within the budgets (see the module docstring)."""
    config = replace(config, **overrides) if config and overrides else (config or TuneConfig(**overrides))
    from ..data import load_dataset
    from ..modelio import load_model
    from ..outputs import check_output_dir
    from ..sources import load_source

    out = check_output_dir(out, "tune", inputs=(model, data if isinstance(data, (str, Path)) else None))
    source = (load_source(model, preprocessing, labels) if isinstance(model, (str, Path)) else None) or \
        load_model(model, preprocessing, labels, safe_mode=safe_mode)
    dataset = load_dataset(data, image_size=source.preprocessing.input_size, seed=config.seed)
    val = _split(dataset, config.validation_images, config.seed)
    out.mkdir(parents=True, exist_ok=True)  # only once the model, the data and the split are known good
    state = _State.open(out, model, data, config)
    state.record["validation"] = {"images": len(val.test), "split": val.split, "train_images_left": len(val.train)}
    state.save()
    search = _Search(str(model), data, out, config, state, source, dataset, val, progress)
    budgets = _budgets(config)
    try:
        search.post_training()
        search.measure()
        search.repair(budgets)
        search.measure()
        reason = None if config.fine_tune == "never" or not search.keras else (
            "asked for (--fine-tune always)" if config.fine_tune == "always" else
            fine_tune_reason(state.candidates(), budgets, config.objective))
        state.record["fine_tune"] = reason or (
            f"not possible: {dict(onnx='an ONNX', tflite='a TFLite').get(source.kind, 'this')} model has no Keras layer graph to prune or train with quantization "
            f"(give the Keras model to fine-tune)" if not search.keras else
            "not tried: every file TFLite Micro runs misses the RAM or flash budget, and pruning and QAT change "
            "neither its arena nor its dense file's size" if config.fine_tune == "auto" and budgets.micro
            and choose(state.candidates(), budgets, config.objective).winner is None else
            "not needed: nothing fine-tuned can beat the best post-training candidate on "
            f"{config.objective} within the budgets" if config.fine_tune == "auto" else "skipped (--fine-tune never)")
        if reason:
            search.say(f"fine-tuned candidates: {reason}")
            search.fine_tuned(reason)
            search.measure()
        from .finish import finish

        state.record["elapsed_s"] = round(search.elapsed(), 1)
        record = finish(state, search, budgets)
    except BaseException:  # Ctrl-C or a failure: the time spent so far stays on record for the resumed run
        state.record["elapsed_s"] = round(search.elapsed(), 1)
        state.save()
        raise
    return TuneResult(record, out)


__all__ = ["tune", "TuneResult", "TuneConfig", "Budgets", "choose", "explain"]
