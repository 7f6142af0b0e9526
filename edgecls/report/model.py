"""The report's model: bench reports loaded and checked, one row per variant and device, the Pareto
front; renderers (tables.py, plots.py, html.py) draw from it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from ..errors import ConfigError, DataError, first_line

COLUMNS = [
    ("device", "device"), ("name", "variant"), ("format", "format"), ("precision", "precision"), ("sparsity", "sparsity"),
    ("size_bytes", "bytes"), ("size_gzip_bytes", "gzip bytes"), ("accuracy", "top-1"), ("agreement", "agreement"),
    ("p50", "p50 ms"), ("p50_range", "p50 range ms"), ("p99", "p99 ms"), ("throughput_ips", "images/s"), ("peak_rss_mb", "peak MB"),
    ("load_ms", "load ms"), ("status", "status"),
]


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
        if "diagnosis" in v and not _diagnosis_ok(v["diagnosis"]):
            fail(f"variants[{i}].diagnosis", "is not a per-layer diagnosis (layers with a name, op, sqnr_db, own_db)")
    try:
        rendered = Report([data])
        rendered.markdown()
        rendered.csv()
        rendered.pareto()
    except (TypeError, KeyError, AttributeError, ValueError, IndexError) as exc:
        raise DataError(f"{path}: malformed report ({exc.__class__.__name__}: {first_line(exc)}); not a report "
                        f"'edgecls bench' wrote (re-run the bench)") from None


@dataclass
class Report:
    reports: list[dict]

    @classmethod
    def load(cls, paths) -> "Report":
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
        return cls(reports)

    @property
    def devices(self) -> list[str]:
        seen = []
        for r in self.reports:
            label = device_label(r["host"], r.get("settings"))
            if label not in seen:
                seen.append(label)
        return seen

    @property
    def rows(self) -> list[dict]:
        rows = []
        for r in self.reports:
            label = device_label(r["host"], r.get("settings"))
            for v in r["variants"]:
                lat = v.get("latency_ms") or {}
                p50s = (v.get("repeats") or {}).get("p50_ms")
                rows.append({**v, "device": label, "p50": lat.get("p50"), "p99": lat.get("p99"), "mean": lat.get("mean"),
                             "p50_range": (min(p50s), max(p50s)) if p50s else None,
                             "threads": r.get("settings", {}).get("threads")})
        return rows

    @property
    def columns(self) -> list[tuple[str, str]]:
        """The table's columns: the device only when there are several, the p50 range only when
        some report measured its variants in several processes (`edgecls bench --repeats`)."""
        multi = len(self.devices) > 1
        repeated = any(v.get("repeats") for r in self.reports for v in r["variants"])
        return [c for c in COLUMNS if (multi or c[0] != "device") and (repeated or c[0] != "p50_range")]

    def diagnosed(self) -> list[dict]:
        """The rows with a per-layer diagnosis from their export, one per variant (a variant's file,
        and so its diagnosis, is the same on every device)."""
        seen, out = set(), []
        for r in self.rows:
            if r.get("diagnosis") and r["name"] not in seen:
                seen.add(r["name"])
                out.append(r)
        return out

    def warnings(self) -> list[str]:
        return [f"{r['name']}" + (f" on {r['device']}" if len(self.devices) > 1 else "") + f": {r['warning']}"
                for r in self.rows if r.get("warning")]

    def markdown(self) -> str:
        from .tables import markdown

        return markdown(self)

    def device_comparison_markdown(self) -> str:
        from .tables import device_comparison_markdown

        return device_comparison_markdown(self)

    def pareto(self, device: str | None = None) -> list[str]:
        device = device or self.devices[0]
        # A variant that departs from its validation is not offered as a choice on this device.
        pts = [r for r in self.rows if r["device"] == device and r.get("status") == "ok" and not r.get("warning")
               and r.get("p50") is not None and r.get("accuracy") is not None]
        from ..evaluation import pareto_front

        return [r["name"] for r in pareto_front(pts, lambda r: r["p50"], lambda r: r["accuracy"])]

    def csv(self) -> str:
        from .tables import csv_text

        return csv_text(self)

    def to_json(self) -> dict:
        return {"schema": 1, "kind": "edgecls-report", "devices": self.devices, "pareto": self.pareto(),
                "reports": self.reports}

    def plots(self) -> dict[str, bytes]:
        """PNG plots by file name (empty without matplotlib)."""
        from .plots import plots

        return plots(self)

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
        if plots:
            written.append(out / "plots")
        atomic_write_text(out / "report.md", self.markdown())
        atomic_write_text(out / "report.csv", self.csv())
        atomic_write_json(out / "report.json", self.to_json())
        atomic_write_text(out / "report.html", self.html(plots))
        written += [out / "report.md", out / "report.csv", out / "report.json", out / "report.html"]
        return written
