"""Report: one comparison of every variant on every device, from `edgecls bench` JSON files.

    >>> from edgecls.report import Report
    >>> report = Report.load(["workstation.json", "pi.json"])
    >>> report.write("report/")      # report.md, report.csv, report.json, report.html, plots/*.png

Renderers share one row model (`Report.rows`); plots need matplotlib (headless Agg backend).
"""
from __future__ import annotations

import base64
import csv
import html
import io
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

    # -- tables -----------------------------------------------------------------------------------

    @staticmethod
    def _fmt(key, value) -> str:
        if value is None or value == "":
            return "-"
        if key in ("size_bytes", "size_gzip_bytes"):
            return f"{int(value):,}"
        if key in ("accuracy", "agreement"):
            return f"{value:.4f}"
        if key == "sparsity":
            return f"{value:.2f}"
        if key in ("p50", "p99", "load_ms"):
            return f"{value:.3f}"
        if key == "p50_range":
            return f"{value[0]:.3f}-{value[1]:.3f}"
        if key in ("throughput_ips", "peak_rss_mb"):
            return f"{value:,.1f}"
        return str(value)

    @staticmethod
    def _status(row) -> str:
        """The status cell: the error of a failed row, the warning of a row that departs from its
        validation at export (edgecls.bench.crosscheck)."""
        if row.get("status") != "ok" and row.get("error"):
            return f"{row['status']}: {row['error']}"
        if row.get("warning"):
            return f"warning: {row['warning']}"
        return str(row.get("status") or "-")

    def warnings(self) -> list[str]:
        return [f"{r['name']}" + (f" on {r['device']}" if len(self.devices) > 1 else "") + f": {r['warning']}"
                for r in self.rows if r.get("warning")]

    def markdown(self) -> str:
        multi = len(self.devices) > 1
        cols = self.columns
        lines = []
        if not multi:
            r = self.reports[0]
            s = r.get("settings", {})
            rounds = s.get("repeats") or 1
            lines.append(f"Device: {self.devices[0]}; {r['host'].get('cores')} cores; batch-1 latency of "
                         f"runner.predict over {s.get('runs')} runs after {s.get('warmup')} warm-up"
                         + (f" in each of {rounds} processes per variant (p50 of the median one)" if rounds > 1 else "") + "; "
                         f"throughput at batch {s.get('batch')}; data {r.get('data')}")
            lines.append("")
        lines.append("| " + " | ".join(h for _, h in cols) + " |")
        lines.append("|" + "|".join("---" if k in ("device", "name", "format", "precision", "status") else "---:" for k, _ in cols) + "|")
        for row in self.rows:
            cells = [self._fmt(k, row.get(k)) for k, _ in cols]
            cells[-1] = self._status(row)
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        warnings = self.warnings()
        if warnings:
            lines += ["", "Warnings (a variant measured here departs from its validation at export):"]
            lines += [f"- {w}" for w in warnings]
        front = self.pareto()
        if front:
            lines += ["", "Pareto front (no other variant is both faster and more accurate): " + ", ".join(front)]
        if multi:
            lines += ["", self.device_comparison_markdown()]
        return "\n".join(lines) + "\n"

    def device_comparison_markdown(self) -> str:
        devices = self.devices
        base = devices[0]
        by = {(r["device"], r["name"]): r for r in self.rows if r.get("status") == "ok"}
        names = []
        for r in self.rows:
            if r["name"] not in names:
                names.append(r["name"])
        head = "| variant | " + " | ".join(f"p50 ms on {d}" for d in devices) + " | " + \
               " | ".join(f"ratio {d} / {base}" for d in devices[1:]) + " |"
        lines = ["Per-device batch-1 latency (p50):", "", head, "|---|" + "---:|" * (2 * len(devices) - 1)]
        for n in names:
            vals = [by.get((d, n), {}).get("p50") for d in devices]
            ratios = [(f"{v / vals[0]:.2f}" if v and vals[0] else "-") for v in vals[1:]]
            lines.append(f"| {n} | " + " | ".join(self._fmt("p50", v) for v in vals) + " | " + " | ".join(ratios) + " |")
        lines.append("")
        for d in devices:
            ok = [r for r in self.rows if r["device"] == d and r.get("status") == "ok" and r.get("p50") is not None]
            if ok:
                best = min(ok, key=lambda r: r["p50"])
                lines.append(f"Fastest on {d}: {best['name']} ({best['p50']:.3f} ms)")
        return "\n".join(lines)

    def pareto(self, device: str | None = None) -> list[str]:
        device = device or self.devices[0]
        # A variant that departs from its validation is not offered as a choice on this device.
        pts = [r for r in self.rows if r["device"] == device and r.get("status") == "ok" and not r.get("warning")
               and r.get("p50") is not None and r.get("accuracy") is not None]
        pts.sort(key=lambda r: (r["p50"], -r["accuracy"]))
        front, best = [], -1.0
        for r in pts:
            if r["accuracy"] > best:
                front.append(r["name"])
                best = r["accuracy"]
        return front

    def csv(self) -> str:
        buf = io.StringIO()
        shown = {k for k, _ in self.columns} | {"device"}
        keys = [k for k, _ in COLUMNS if k in shown] + ["mean", "threads", "error", "warning"]
        writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: self._fmt(k, row.get(k)) if k == "p50_range" else row.get(k) for k in keys})
        return buf.getvalue()

    def to_json(self) -> dict:
        return {"schema": 1, "kind": "edgecls-report", "devices": self.devices, "pareto": self.pareto(),
                "reports": self.reports}

    # -- plots ------------------------------------------------------------------------------------

    def plots(self) -> dict[str, bytes]:
        """PNG plots by file name."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return {}
        out = {}
        ok = [r for r in self.rows if r.get("status") == "ok"]
        if not ok:
            return out
        scale = latency_scale(r.get("p50") for r in ok)  # one latency axis for both latency plots
        # Accuracy against latency, Pareto front marked, one marker style per device.
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, device in enumerate(self.devices):
            pts = [r for r in ok if r["device"] == device and r.get("accuracy") is not None and r.get("p50") is not None]
            if not pts:
                continue
            front = set(self.pareto(device))
            ax.scatter([r["p50"] for r in pts], [r["accuracy"] for r in pts], marker="os^D"[i % 4], label=device[:60])
            # Names on the first device's points only: a variant scores the same on every device,
            # so its other points sit level with the named one, and doubled names overlap.
            for r in pts if i == 0 else ():
                ax.annotate(r["name"], (r["p50"], r["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            fr = sorted((r for r in pts if r["name"] in front), key=lambda r: r["p50"])
            ax.step([r["p50"] for r in fr], [r["accuracy"] for r in fr], where="post", linestyle="--", linewidth=1,
                    label=f"Pareto front: {device[:60]}")
        ax.set_xscale(scale)
        ax.set_xlabel("batch-1 latency p50 (ms)" + (", log scale" if scale == "log" else ""))
        ax.set_ylabel("top-1 accuracy")
        ax.set_title("Accuracy against latency")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        out["accuracy_vs_latency.png"] = _png(fig, plt)
        # Sizes.
        first = [r for r in ok if r["device"] == self.devices[0]]
        fig, ax = plt.subplots(figsize=(7, 4))
        xs = range(len(first))
        ax.bar([x - 0.2 for x in xs], [r["size_bytes"] / 1024 for r in first], width=0.4, label="bytes")
        ax.bar([x + 0.2 for x in xs], [r["size_gzip_bytes"] / 1024 for r in first], width=0.4, label="gzip bytes")
        ax.set_xticks(list(xs))
        ax.set_xticklabels([r["name"] for r in first], rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("KiB")
        ax.set_title("Artifact size")
        ax.legend()
        fig.tight_layout()
        out["sizes.png"] = _png(fig, plt)
        # Confusion matrix of the most accurate variant.
        with_cm = [r for r in first if r.get("confusion")]
        if with_cm:
            best = max(with_cm, key=lambda r: r["accuracy"])
            import numpy as np

            cm = np.array(best["confusion"], dtype=float)
            norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
            labels = list(best["per_class"]) if best.get("per_class") else [str(i) for i in range(len(cm))]
            fig, ax = plt.subplots(figsize=(6, 5.5))
            im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
            ax.set_xticks(range(len(labels)))
            ax.set_yticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
            ax.set_yticklabels(labels, fontsize=7)
            for i in range(len(cm)):
                for j in range(len(cm)):
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(f"Confusion matrix: {best['name']}")
            fig.colorbar(im, ax=ax, fraction=0.046)
            fig.tight_layout()
            out["confusion.png"] = _png(fig, plt)
        if len(self.devices) > 1:
            names = [r["name"] for r in first]
            fig, ax = plt.subplots(figsize=(7, 4))
            width = 0.8 / len(self.devices)
            for i, device in enumerate(self.devices):
                by = {r["name"]: r.get("p50") for r in ok if r["device"] == device}
                # A variant a device did not measure is a gap, not a zero.
                ax.bar([x + i * width for x in range(len(names))], [by.get(n) or float("nan") for n in names],
                       width=width, label=device[:50])
            ax.set_xticks([x + width * (len(self.devices) - 1) / 2 for x in range(len(names))])
            ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
            ax.set_yscale(scale)
            ax.set_ylabel("p50 ms (batch 1)" + (", log scale" if scale == "log" else ""))
            ax.set_title("Latency per device")
            ax.legend(fontsize=7)
            fig.tight_layout()
            out["devices.png"] = _png(fig, plt)
        return out

    # -- HTML and writing -------------------------------------------------------------------------

    def html(self, plots: dict[str, bytes] | None = None) -> str:
        plots = self.plots() if plots is None else plots
        multi = len(self.devices) > 1
        cols = self.columns
        head = "".join(f"<th>{html.escape(h)}</th>" for _, h in cols)
        body = []
        front = set(self.pareto())
        for row in self.rows:
            cells = [self._fmt(k, row.get(k)) for k, _ in cols]
            cells[-1] = self._status(row)
            cls = ' class="front"' if row["name"] in front and row["device"] == self.devices[0] else ""
            cls = ' class="warning"' if row.get("warning") else cls
            body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        imgs = "".join(
            f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}"/>'
            f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, data in plots.items())
        hosts = "".join(f"<li>{html.escape(device_label(r['host'], r.get('settings')))}: {html.escape(r['host'].get('os', ''))}, "
                        f"{r['host'].get('cores')} cores, Python {html.escape(str(r['host'].get('python')))}, threads "
                        f"{r.get('settings', {}).get('threads')}, data {html.escape(str(r.get('data')))}</li>" for r in self.reports)
        comparison = f"<pre>{html.escape(self.device_comparison_markdown())}</pre>" if multi else ""
        warned = ("<h2>Warnings</h2><p>A variant measured here departs from its validation at export:</p><ul>"
                  + "".join(f"<li>{html.escape(w)}</li>" for w in self.warnings()) + "</ul>") if self.warnings() else ""
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgecls report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;font-size:13px}}
th,td{{border:1px solid #ccc;padding:3px 7px;text-align:right}}td:nth-child(-n+3){{text-align:left}}tr.front{{background:#eef7ee}}tr.warning{{background:#fdecea}}
figure{{display:inline-block;margin:1em}}img{{max-width:560px}}</style></head>
<body><h1>edgecls report</h1><ul>{hosts}</ul>
<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>
{warned}<p>Highlighted: the Pareto front (no other variant is both faster and more accurate): {html.escape(', '.join(self.pareto()))}.</p>
{comparison}{imgs}</body></html>
"""

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


def latency_scale(latencies, spread: float = 20.0) -> str:
    """"log" when the measured latencies span more than `spread` times (a Keras row beside the
    runtime's variants is 20-100x slower and would flatten every other bar), else "linear"."""
    values = [v for v in latencies if isinstance(v, (int, float)) and v > 0]
    if len(values) < 2:
        return "linear"
    return "log" if max(values) / min(values) > spread else "linear"


def _png(fig, plt) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
