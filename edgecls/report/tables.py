"""The report's tables: Markdown (one device, or several side by side) and CSV."""
from __future__ import annotations

import csv
import io

from .model import COLUMNS


def fmt(key, value) -> str:
    if value is None or value == "":
        return "-"
    if key in ("size_bytes", "size_gzip_bytes"):
        return f"{int(value):,}"
    if key in ("accuracy", "agreement", "export_agreement"):
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


def cell(key, row) -> str:
    """A table cell: `fmt` of the row's value; sparsity marked "q" when it counts weights of an
    unpruned variant that merely rounded to zero in quantization."""
    text = fmt(key, row.get(key))
    if key == "sparsity" and text != "-" and row.get("sparsity_source") == "quantization":
        text += " q"
    return text


def status(row) -> str:
    """The status cell: the error of a failed or rejected row; the warnings of a measured one (a
    departure from its validation on this device, degenerate predictions, the export's warning)."""
    if row.get("status") != "ok" and row.get("error"):
        return f"{row['status']}: {row['error']}" if not row["error"].startswith(row["status"]) else row["error"]
    notes = [f"{label}: {row[key]}" for key, label in (("warning", "warning"), ("degenerate", "degenerate"),
                                                       ("export_warning", "export warning")) if row.get(key)]
    return "; ".join([str(row.get("status") or "-"), *notes])


def recommendation_markdown(report) -> str:
    """The recommendation per device, then every notice: what a terminal shows first."""
    lines = []
    for rec in report.recommendations():
        lines += rec["lines"]
        lines.append("")
    notices = report.notices()
    if notices:
        lines.append("Warnings and rejected variants:")
        lines += [f"- {n}" for n in notices]
        lines.append("")
    return "\n".join(lines)


def front_text(report, device: str) -> str:
    front, ties = report.front(device), report.ties(device)
    cost = "faster" if report.config.objective == "latency" else "smaller"
    text = (f"Front (no other variant is {cost} or more accurate beyond what the measurement resolves without being "
            f"worse on the other count): " + ", ".join(front))
    if ties:
        text += "; tied, the measurements order them on neither count: " + "; ".join(
            "{" + ", ".join(group) + "}" for group in ties)
    return text


def markdown(report, lead: bool = True) -> str:
    multi = len(report.devices) > 1
    cols = report.columns
    lines = [report.recommendation_text()] if lead else []
    lines += ["Device" + ("s:" if multi else ":")] + [f"- {d}" for d in device_lines(report)] + [""]
    lines.append("| " + " | ".join(h for _, h in cols) + " |")
    lines.append("|" + "|".join("---" if k in ("device", "name", "format", "precision", "status", "source") else "---:"
                                for k, _ in cols) + "|")
    for row in report.rows:
        cells = [cell(k, row) for k, _ in cols]
        cells[-1] = status(row)
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    for device in report.devices:
        if report.front(device):
            lines += ["", (f"{device}: " if multi else "") + front_text(report, device)]
    micro = micro_markdown(report)
    if micro:
        lines += ["", micro]
    if multi:
        lines += ["", report.device_comparison_markdown()]
    return "\n".join(lines) + "\n"


def device_latencies(report) -> list[tuple[str, list[str], list[str]]]:
    """Per variant measured on some device: its p50 on each device and its ratio to the first
    device's, as cells ("-" where a device did not measure it)."""
    devices = report.devices
    by = {(r["device"], r["name"]): r for r in report.rows if r.get("status") == "ok"}
    out = []
    for n in dict.fromkeys(r["name"] for r in report.rows if r["status"] != "rejected"):
        vals = [by.get((d, n), {}).get("p50") for d in devices]
        out.append((n, [fmt("p50", v) for v in vals], [f"{v / vals[0]:.2f}" if v and vals[0] else "-" for v in vals[1:]]))
    return out


def device_comparison_markdown(report) -> str:
    devices = report.devices
    base = devices[0]
    head = "| variant | " + " | ".join(f"p50 ms on {d}" for d in devices) + " | " + \
           " | ".join(f"ratio {d} / {base}" for d in devices[1:]) + " |"
    lines = ["Per-device batch-1 latency (p50):", "", head, "|---|" + "---:|" * (2 * len(devices) - 1)]
    for n, vals, ratios in device_latencies(report):
        lines.append(f"| {n} | " + " | ".join(vals) + " | " + " | ".join(ratios) + " |")
    lines.append("")
    for d in devices:
        ok = [r for r in report.rows if r["device"] == d and r.get("status") == "ok" and r.get("p50") is not None]
        if ok:
            best = min(ok, key=lambda r: r["p50"])
            lines.append(f"Fastest on {d}: {best['name']} ({best['p50']:.3f} ms)")
    return "\n".join(lines)


def device_lines(report) -> list[str]:
    """Each device in full: machine, CPU and its int8 class and flags, threads, runtime versions,
    how latency was measured, and the report file it came from."""
    from ..hostinfo import INT8_FLAGS

    out = []
    for i, r in enumerate(report.reports):
        h, s = r["host"], r.get("settings") or {}
        runtime = ", ".join(f"{k} {v}" for k, v in (h.get("runtime") or {}).items() if k != "python")
        flags = " ".join(f for f in (h.get("cpu_flags") or []) if f in INT8_FLAGS)
        rounds = s.get("repeats") or 1
        ref = next((v.get("agreement_reference") for v in r["variants"] if v.get("agreement_reference")), None)
        out.append(f"{report.labels[i]}: {h.get('cpu', '?')} ({h.get('int8_class') or '?'}"
                   + (f"; {flags}" if flags else "") + f"), {h.get('cores', '?')} cores, {h.get('os', '')}, Python "
                   f"{h.get('python', '?')}" + (f", {runtime}" if runtime else "") + f"; {s.get('threads') or 'default'} "
                   f"thread(s); batch-1 latency over {s.get('runs')} runs after {s.get('warmup')} warm-up in each of "
                   f"{rounds} process{'es' if rounds > 1 else ''} per variant; data {r.get('data')}"
                   + (f"; agreement with {ref}" if ref else "") + f"; from {report.source(i)}")
    return out


def csv_text(report) -> str:
    buf = io.StringIO()
    shown = {k for k, _ in report.columns} | {"device"}
    keys = [k for k, _ in COLUMNS if k in shown] + ["mean", "threads", "error", "warning", "degenerate", "export_warning"]
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for row in report.rows:
        writer.writerow({k: fmt(k, row.get(k)) if k == "p50_range" else row.get(k) for k in keys})
    return buf.getvalue()


def micro_markdown(report) -> str:
    """The microcontroller table: variants `export --micro` ran under TensorFlow Lite Micro."""
    seen, lines = set(), []
    for r in report.rows:
        if not r.get("micro_verdict") or r["name"] in seen:
            continue
        seen.add(r["name"])
        if r["micro_verdict"] != "ok":
            cells = [r["name"], f"{r['micro_verdict']}: {r.get('micro_reason', '')}"] + [""] * 7
        else:
            macs, host = r.get("macs"), r.get("micro_host_ms")
            cells = [r["name"], str(r.get("micro_status")), *(fmt("size_bytes", r.get(k)) for k in (
                         "micro_arena_bytes", "micro_flash_bytes", "micro_ram_bytes")),
                     fmt("accuracy", r.get("micro_agreement")),
                     fmt("accuracy", r.get("micro_litert_agreement")), "-" if host is None else f"{host:.2f}",
                     "-" if macs is None else f"{macs:,}"]
        lines.append("| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in cells) + " |")
    if not lines:
        return ""
    head = ["Microcontroller (TensorFlow Lite Micro, from `export --micro`): the tensor arena its reference kernels "
            "need, flash for the model array, RAM (arena plus one input and one output buffer), agreement of TFLM's "
            "answers with the source model and with LiteRT's; TFLM host ms is its reference kernels on the export "
            "machine, not a microcontroller's latency; MACs per image are the basis of an estimate for a given MCU.",
            "",
            "| variant | TFLM | arena bytes | flash bytes | RAM bytes | agreement with source | agreement with LiteRT | "
            "TFLM host ms/image | MACs |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    return "\n".join(head + lines)
