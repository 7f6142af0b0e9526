"""The end of a search: the choice and its explanation, the paired comparison of the winner with the
runner-up on the validation split, the winner's one reading of the test split, the winner's bundle
(`OUT/bundle`), `OUT/tune.json` and `OUT/tune.html`."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from . import stage_dir
from ..selection import Budgets, choose, explain, front, ranked, speed_tie


def _correct(bundle: Path, variant: str, dataset, images, labels) -> np.ndarray:
    from .. import runtime
    from ..evaluation import runner_correct

    return runner_correct(runtime.load(bundle, variant=variant, threads=1), dataset, images, labels)


def finish(state, search, budgets: Budgets) -> dict:
    from .._io import atomic_write_json, atomic_write_text

    config, record = search.config, state.record
    cands = record["candidates"]
    choice = choose(cands, budgets, config.objective)
    answer = explain(choice, budgets, config.objective)
    if choice.winner is None and budgets.micro:  # no quantization makes the arena smaller: name smaller architectures
        from ..zoo.micro import suggestion

        hint = suggestion(budgets.max_ram_bytes, budgets.max_flash_bytes)
        if hint:
            answer[0] += f"; {hint}"
    record["budgets"] = {"max_drop": budgets.max_drop, "max_bytes": budgets.max_bytes, "size_measure": budgets.size_measure,
                         "max_latency_ms": budgets.max_latency_ms, "max_ram_bytes": budgets.max_ram_bytes,
                         "max_flash_bytes": budgets.max_flash_bytes, "board": budgets.board, "objective": config.objective}
    record["front"] = front(cands, budgets, config.objective)
    chosen = {"compared": choice.compared, "feasible": choice.feasible, "bound_by": choice.bound_by,
              "better_but_excluded": choice.better_excluded, "message": choice.message,
              "tied_with": choice.tied_with, "measured_best": choice.measured_best}
    for c in cands:
        c["rank"] = None
    for i, c in enumerate(ranked(cands, config.objective, budgets), 1):
        c["rank"] = i
    if choice.winner is not None:
        w = choice.winner
        wbundle = stage_dir(search.out, w["stage"])
        val = search.val
        if choice.runner_up is not None:
            from ..evaluation import paired

            r = choice.runner_up
            mine = _correct(wbundle, w["variant"], val, val.test.images, val.test.labels)
            theirs = _correct(stage_dir(search.out, r["stage"]), r["variant"], val, val.test.images,
                              val.test.labels)
            chosen["paired_vs_runner_up"] = {"runner_up": r["id"], **paired(mine, theirs)}
            p = chosen["paired_vs_runner_up"]
            chosen["indistinguishable"] = p["mcnemar_p"] >= 0.05
            answer[1] += (f"; against it on {p['images']:,} validation images: only the pick right on {p['only_a_right']}, "
                          f"only it on {p['only_b_right']} (McNemar p = {p['mcnemar_p']:.2g}"
                          f"{': not distinguishable' if chosen['indistinguishable'] else ''})")
        if choice.runner_up is not None and config.objective == "latency":
            # Repeated processes give each p50 a spread: two files whose spreads overlap are not ranked by speed.
            chosen["latency_rounds_overlap"] = speed_tie(choice.winner, choice.runner_up)
            if chosen["latency_rounds_overlap"]:
                a, b = choice.winner["latency_rounds_ms"], choice.runner_up["latency_rounds_ms"]
                answer[1] += (f"; their p50s over {len(a)} processes overlap ({min(a):.3f}-{max(a):.3f} ms against "
                              f"{min(b):.3f}-{max(b):.3f} ms): as fast as each other on this machine")
        if config.test:
            from ..data import sample_indices

            data = search.dataset
            keep = sample_indices(len(data.test), config.max_test_images, config.seed)
            images, labels = data.test.take(keep), data.test.labels[keep]
            test = {"images": int(len(keep)), "data": str(search.data),
                    "accuracy": round(float(_correct(wbundle, w["variant"], data, images, labels).mean()), 6)}
            float_name = f"{w['format']}_fp32"
            if any(c["stage"] == w["format"] and c["variant"] == float_name and c["status"] == "ok" for c in cands):
                fbundle = stage_dir(search.out, w["format"])
                test["float_variant"] = float_name
                test["float_accuracy"] = round(float(_correct(fbundle, float_name, data, images, labels).mean()), 6)
                test["drop"] = round(100 * (test["float_accuracy"] - test["accuracy"]), 4)
            chosen["test"] = test
            answer[0] += (f"; test split (read once, after the choice): {100 * test['accuracy']:.2f}%" +
                          (f" against {100 * test['float_accuracy']:.2f}% for {float_name}" if "float_accuracy" in test else ""))
        keep_names = [w["artifact"]] + ([a for a in record["front"] if a != w["artifact"]] if config.keep_frontier else [])
        _write_bundle(search.out / "bundle", record, keep_names, w, chosen)
    elif (search.out / "bundle").is_dir():
        from ..outputs import is_output

        if is_output(search.out / "bundle", "bundle"):  # an earlier run's winner, under budgets no longer asked for
            shutil.rmtree(search.out / "bundle")
    record["choice"] = {**chosen, "winner": choice.winner, "runner_up": choice.runner_up, "closest": choice.closest,
                        "answer": answer}
    atomic_write_json(search.out / "tune.json", record)
    from .page import html_page

    atomic_write_text(search.out / "tune.html", html_page(record))
    return record


_SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}


def bundle_name(artifact: str) -> str:
    """The name a candidate goes by in the winner's bundle, made here from its id: letters, digits
    and underscores only, so its file stays in the bundle whatever the record said."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", artifact.replace(":", "_s").replace("+", "_"))
    return name[:100] or "candidate"


def _write_bundle(dest: Path, record: dict, artifacts, winner: dict, chosen: dict) -> None:
    """A normal bundle holding the winner (and the front's other files): their files and manifest
    entries from the search's bundles, renamed where two stages share a variant name."""
    from .._io import atomic_write_json, make_staging_dir, replace_dir
    from ..bundle import MANIFEST, load_bundle
    from ..outputs import check_output_dir

    out = dest.parent
    check_output_dir(dest, "bundle")
    staging = make_staging_dir(dest)
    try:
        cands = {c["artifact"]: c for c in record["candidates"]}
        manifest, entries = None, []
        for art in artifacts:
            c = cands[art]
            src = load_bundle(stage_dir(out, c["stage"]))
            if manifest is None:
                manifest = json.loads(json.dumps(src.manifest))
                for name in ("labels.json", "preprocessing.json"):
                    shutil.copy2(src.path / name, staging / name)
            entry = json.loads(json.dumps(src.artifact(c["variant"])))
            name, suffix = bundle_name(art), _SUFFIXES.get(entry["format"])
            if suffix is None:
                raise ConfigError(f"{src.path}: variant {c['variant']!r} has the format {entry['format']!r}, which a "
                                  f"search does not produce; choose a new --out")
            shutil.copy2(src.file_for(entry), staging / f"{name}{suffix}")
            entry.update(name=name, file=f"{name}{suffix}", tune={"candidate": art, "stage": c["stage"],
                                                                 "threads": c["threads"] if art == winner["artifact"] else None})
            entries.append(entry)
        manifest["artifacts"], manifest["rejected"] = entries, []
        manifest["tune"] = {"winner": entries[0]["name"], "threads": winner["threads"], "objective": record["budgets"],
                            "test": chosen.get("test"), "validation_split": record.get("validation")}
        atomic_write_json(staging / MANIFEST, manifest)
        load_bundle(staging)  # checked as any bundle is
        replace_dir(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
