"""The report's model: bench reports loaded and checked, one row per variant and device (rejected
ones too), the recommendation and the front per device (edgecls.selection, shared with tune), every
warning; renderers (tables.py, plots.py, html.py) draw from it."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .._io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from ..config import ReportConfig
from ..errors import ConfigError, DataError, first_line

COLUMNS = [
    ("device", "device"), ("name", "variant"), ("format", "format"), ("precision", "precision"), ("sparsity", "sparsity"),
    ("size_bytes", "bytes"), ("size_gzip_bytes", "gzip bytes"), ("accuracy", "top-1"),
    ("agreement", "agreement with float file"), ("export_agreement", "agreement with source (export)"),
    ("p50", "p50 ms"), ("p50_range", "p50 range ms"), ("p99", "p99 ms"), ("throughput_ips", "images/s"), ("peak_rss_mb", "peak MB"),
    ("load_ms", "load ms"), ("source", "report file"), ("status", "status"),
]
FLOAT_PRECISIONS = ("fp32", "fp16")


def device_label(host: dict, settings: dict | None = None) -> str:
    """A device is a machine at a thread count (and test-time augmentation): the same machine at 1
    and 2 threads compares like two devices."""
    label = f"{host.get('hostname', '?')} ({host.get('arch', '?')}, {host.get('cpu', '?')})"
    threads = (settings or {}).get("threads")
    if threads:
        label += f", {threads} thread{'s' if threads != 1 else ''}"
    if settings and settings.get("tta"):  # another accuracy and cost: compare it like another device
        label += f", {settings['tta']} TTA"
    if settings and settings.get("emulated"):
        label += " [emulated]"
    return label


def _diagnosis_ok(found) -> bool:
    def number(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    return (isinstance(found, dict) and isinstance(found.get("layers"), list) and all(
        isinstance(layer, dict) and isinstance(layer.get("name"), str) and isinstance(layer.get("op"), str)
        and number(layer.get("sqnr_db")) and number(layer.get("own_db")) for layer in found["layers"]))


def _check_report(data: dict, path) -> None:
    """DataError naming the first malformed part of a bench report (read from a file that may have
    been edited or come from elsewhere); then a trial rendering, so a report that loads also renders."""
    def fail(key, what):
        raise DataError(f"{path}: {key} {what}; not a report 'edgecls bench' wrote (re-run the bench)")

    if not isinstance(data.get("host"), dict):
        fail("'host'", "is missing or not an object")
    if not isinstance(data.get("settings", {}), dict):
        fail("'settings'", "is not an object")
    if not isinstance(data["variants"], list):
        fail("'variants'", "is not a list")
    for i, v in enumerate(data["variants"]):
        if not isinstance(v, dict) or not isinstance(v.get("name"), str) or not isinstance(v.get("status"), str):
            fail(f"variants[{i}]", "is not an object with a name and a status")
        for key in ("latency_ms", "size", "memory", "repeats"):
            if v.get(key) is not None and not isinstance(v[key], dict):
                fail(f"variants[{i}].{key}", "is not an object")
        for key, value in (v.get("latency_ms") or {}).items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                fail(f"variants[{i}].latency_ms.{key}", "is not a number")
        if v.get("accuracy") is not None and (isinstance(v["accuracy"], bool) or not isinstance(v["accuracy"], (int, float))):
            fail(f"variants[{i}].accuracy", "is not a number")
        if v.get("correct_bits") is not None:
            from ..bench.local import unpack_correct

            if not isinstance(v.get("images"), int) or isinstance(v["images"], bool):
                fail(f"variants[{i}].images", "is missing beside correct_bits")
            try:
                unpack_correct(v["correct_bits"], v["images"])
            except ValueError as exc:
                fail(f"variants[{i}].correct_bits", f"does not fit: {exc}")
        if "diagnosis" in v and not _diagnosis_ok(v["diagnosis"]):
            fail(f"variants[{i}].diagnosis", "is not a per-layer diagnosis (layers with a name, op, sqnr_db, own_db)")
    try:
        rendered = Report([data])
        rendered.markdown()
        rendered.csv()
        rendered.front()
        rendered.recommendations()
    except (TypeError, KeyError, AttributeError, ValueError, IndexError) as exc:
        raise DataError(f"{path}: malformed report ({exc.__class__.__name__}: {first_line(exc)}); not a report "
                        f"'edgecls bench' wrote (re-run the bench)") from None


@dataclass
class Report:
    reports: list[dict]
    sources: list[str] | None = None  # the file each report was read from
    config: ReportConfig = field(default_factory=ReportConfig)

    @classmethod
    def load(cls, paths, config: ReportConfig | None = None) -> "Report":
        reports = []
        for path in paths:
            data = read_json(path, "report", DataError)
            if not isinstance(data, dict) or data.get("kind") != "edgecls-bench" or "variants" not in data:
                raise DataError(f"{path} is not an 'edgecls bench' report (no kind/variants)")
            if data.get("schema") != 1:
                raise DataError(f"{path}: unsupported report schema {data.get('schema')!r}; expected 1")
            from ..schema import check

            check(data, "bench", str(path), DataError)
            _check_report(data, path)
            reports.append(data)
        if not reports:
            raise ConfigError("no reports given")
        return cls(reports, [Path(p).name for p in paths], config or ReportConfig())

    def source(self, i: int) -> str:
        return self.sources[i] if self.sources and i < len(self.sources) else f"report {i + 1}"

    @cached_property
    def labels(self) -> list[str]:
        """Each report's device: its machine and settings, and where two reports would read the
        same, the file each came from (two benches of one machine are two measurements)."""
        labels = [device_label(r["host"], r.get("settings")) for r in self.reports]
        out = []
        for i, label in enumerate(labels):
            if labels.count(label) > 1:
                label += f" [{self.source(i)}]"
                if label in out:
                    label += f" #{i + 1}"
            out.append(label)
        return out

    @property
    def devices(self) -> list[str]:
        return list(dict.fromkeys(self.labels))

    @cached_property
    def rows(self) -> list[dict]:
        """Every measured variant on every device, then the variants the export rejected (status
        "rejected", with the reason)."""
        rows = []
        for i, r in enumerate(self.reports):
            label = self.labels[i]
            for v in r["variants"]:
                lat = v.get("latency_ms") or {}
                p50s = (v.get("repeats") or {}).get("p50_ms")
                rows.append({**v, "device": label, "p50": lat.get("p50"), "p99": lat.get("p99"), "mean": lat.get("mean"),
                             "p50_range": (min(p50s), max(p50s)) if p50s else None, "source": self.source(i),
                             "report_index": i, "threads": r.get("settings", {}).get("threads")})
            for rej in r.get("rejected") or ():
                rows.append({"name": rej["name"], "status": "rejected", "device": label, "source": self.source(i),
                             "report_index": i, "error": f"rejected at export: {rej.get('reason') or rej.get('status')}"})
        return rows

    @property
    def columns(self) -> list[tuple[str, str]]:
        """The table's columns: the device and report file only when there are several, the p50
        range only when some report measured its variants in several processes, agreement at
        export only when a bundle recorded it."""
        multi = len(self.devices) > 1
        repeated = any(v.get("repeats") for r in self.reports for v in r["variants"])
        exported = any(v.get("export_agreement") is not None for r in self.reports for v in r["variants"])
        return [c for c in COLUMNS if (multi or c[0] not in ("device", "source")) and (repeated or c[0] != "p50_range")
                and (exported or c[0] != "export_agreement")]

    def diagnosed(self) -> list[dict]:
        """The rows with a per-layer diagnosis from their export, one per variant (a variant's file,
        and so its diagnosis, is the same on every device)."""
        seen, out = set(), []
        for r in self.rows:
            if r.get("diagnosis") and r["name"] not in seen:
                seen.add(r["name"])
                out.append(r)
        return out

    def notices(self) -> list[str]:
        """Everything a reader must see before trusting the table, the page's first list: variants
        the export rejected and why, variants that failed here, the export's validation warnings,
        the bench's departures from them, degenerate predictions, latency measured once (no
        interval), emulated devices."""
        multi = len(self.devices) > 1
        on = (lambda r: f" on {r['device']}") if multi else (lambda r: "")
        out, seen = [], set()

        def add(text):
            if text not in seen:
                seen.add(text)
                out.append(text)

        for r in self.rows:
            if r["status"] == "rejected":
                add(f"{r['name']}: {r['error']}; not shipped, not measured")
        for r in self.rows:
            if r["status"] not in ("ok", "rejected"):
                add(f"{r['name']}{on(r)}: {r['status']}: {r.get('error') or 'no reason recorded'}")
            if r.get("export_warning"):
                add(f"{r['name']} (at export): {r['export_warning']}")
            if r.get("warning"):
                add(f"{r['name']}{on(r)}: {r['warning']} (not recommended on this device)")
            if r.get("degenerate"):
                add(f"{r['name']}{on(r)}: {r['degenerate']}")
        for i, r in enumerate(self.reports):
            s = r.get("settings") or {}
            where = f"{self.labels[i]}: " if multi else ""
            if (s.get("repeats") or 1) < 2 and any(v.get("status") == "ok" for v in r["variants"]):
                add(f"{where}each variant was timed in one process, so no latency has an interval and a speed "
                    f"difference may be noise; 'edgecls bench --repeats 5' measures one")
            if s.get("emulated"):
                add(f"{where}measured under a CPU emulator: its latencies are the emulator's, not the device's")
        return out

    # -- choice -------------------------------------------------------------------------------

    def candidates(self, device: str | None = None) -> list[dict]:
        """The device's measured variants as edgecls.selection candidates (a variant that departs
        from its validation on this device is left out)."""
        return self._candidates[device or self.devices[0]]

    @cached_property
    def _candidates(self) -> dict[str, list[dict]]:
        from ..bench.local import unpack_correct

        out: dict[str, list[dict]] = {d: [] for d in self.devices}
        for row in self.rows:
            if (row.get("status") != "ok" or row.get("warning") or row.get("p50") is None or row.get("accuracy") is None
                    or row.get("size_bytes") is None):
                continue
            correct = None
            if row.get("correct_bits") and isinstance(row.get("images"), int):
                correct = unpack_correct(row["correct_bits"], row["images"])
            out[row["device"]].append({
                "id": row["name"], "artifact": row["name"], "status": "ok", "accuracy": row["accuracy"],
                "latency_ms": row["p50"], "latency_rounds_ms": (row.get("repeats") or {}).get("p50_ms"),
                "bytes": row["size_bytes"], "gzip_bytes": row.get("size_gzip_bytes") or row["size_bytes"],
                "precision": row.get("precision"), "format": row.get("format"), "correct": correct,
                "images": row.get("images"), "images_id": row["report_index"], "row": row})
        return out

    @property
    def _cost(self) -> str:
        return "size" if self.config.objective == "size" else "latency"

    @cached_property
    def _fronts(self) -> dict[str, list[dict]]:
        from ..selection import Budgets, robust_front

        return {d: robust_front(self._candidates[d], self._cost, Budgets()) for d in self.devices}

    def front(self, device: str | None = None) -> list[str]:
        """The device's front of accuracy against the objective's cost, by edgecls.selection: a
        variant is off it only when another is cheaper or more accurate beyond what the
        measurement resolves, and not worse on the other count beyond it."""
        return [c["id"] for c in self._fronts[device or self.devices[0]]]

    @cached_property
    def _ties(self) -> dict[str, list[list[str]]]:
        from ..selection import Budgets, tie_groups

        return {d: tie_groups(self._fronts[d], self._cost, Budgets()) for d in self.devices}

    def ties(self, device: str | None = None) -> list[list[str]]:
        """Groups of variants on the device's front that the measurements cannot order on either
        count (edgecls.selection.tie_groups)."""
        return self._ties[device or self.devices[0]]

    @cached_property
    def _recommendations(self) -> list[dict]:
        from .recommend import recommend

        return [recommend(self, device) for device in self.devices]

    def recommendations(self) -> list[dict]:
        """The answer per device (edgecls.report.recommend), computed once."""
        return self._recommendations

    # -- renderers ----------------------------------------------------------------------------

    def markdown(self, lead: bool = True) -> str:
        """The report in Markdown; `lead`: the recommendation and warnings first (a terminal that
        prints them last passes False)."""
        from .tables import markdown

        return markdown(self, lead)

    def recommendation_text(self) -> str:
        from .tables import recommendation_markdown

        return recommendation_markdown(self)

    def device_comparison_markdown(self) -> str:
        from .tables import device_comparison_markdown

        return device_comparison_markdown(self)

    def csv(self) -> str:
        from .tables import csv_text

        return csv_text(self)

    def to_json(self) -> dict:
        recs = [{k: v for k, v in rec.items() if k != "candidates"} for rec in self.recommendations()]
        return {"schema": 1, "kind": "edgecls-report", "devices": self.devices, "rule": {"max_drop": self.config.max_drop,
                "objective": self.config.objective}, "recommendations": recs,
                "front": {d: self.front(d) for d in self.devices}, "ties": {d: self.ties(d) for d in self.devices},
                "notices": self.notices(), "sources": [self.source(i) for i in range(len(self.reports))],
                "reports": self.reports}

    def plots(self) -> dict[str, bytes]:
        """PNG plots by file name (empty without matplotlib)."""
        from .plots import plots

        return plots(self)

    def charts(self) -> dict[str, str]:
        """Accuracy against latency per device as SVG by file name (the page draws the same)."""
        from .html import scatter_svg

        out = {}
        for i, device in enumerate(self.devices, 1):
            drawn = scatter_svg(self, device)
            if drawn is not None:
                out["accuracy_vs_latency.svg" if len(self.devices) == 1 else f"accuracy_vs_latency_{i}.svg"] = drawn[0]
        return out

    def html(self, plots: dict[str, bytes] | None = None) -> str:
        from .html import html_page

        return html_page(self, plots)

    def write(self, out: str | Path) -> list[Path]:
        from ..outputs import check_output_dir

        out = check_output_dir(out, "report")
        out.mkdir(parents=True, exist_ok=True)
        plots = self.plots()
        written = []
        for name, data in plots.items():
            atomic_write_bytes(out / "plots" / name, data)
        for name, text in self.charts().items():
            atomic_write_text(out / "plots" / name, text)
        if plots or (out / "plots").is_dir():
            written.append(out / "plots")
        atomic_write_text(out / "report.md", self.markdown())
        atomic_write_text(out / "report.csv", self.csv())
        atomic_write_json(out / "report.json", self.to_json())
        atomic_write_text(out / "report.html", self.html(plots))
        written += [out / "report.md", out / "report.csv", out / "report.json", out / "report.html"]
        return written
