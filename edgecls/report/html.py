"""The report as one self-contained HTML page (plots embedded)."""
from __future__ import annotations

import base64
import html

from .model import device_label
from .tables import cell, micro_markdown, status


def esc(value) -> str:
    """Any value from a report file, as text in the page (never markup)."""
    return html.escape(str(value), quote=True)


def html_page(report, plots: dict[str, bytes] | None = None) -> str:
    plots = report.plots() if plots is None else plots
    multi = len(report.devices) > 1
    cols = report.columns
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in cols)
    body = []
    front = set(report.pareto())
    for row in report.rows:
        cells = [cell(k, row) for k, _ in cols]
        cells[-1] = status(row)
        cls = ' class="front"' if row["name"] in front and row["device"] == report.devices[0] else ""
        cls = ' class="warning"' if row.get("warning") else cls
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    imgs = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}"/>'
        f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, data in plots.items())
    hosts = "".join(f"<li>{esc(device_label(r['host'], r.get('settings')))}: {esc(r['host'].get('os', ''))}, "
                    f"{esc(r['host'].get('cores'))} cores, Python {esc(r['host'].get('python'))}, threads "
                    f"{esc(r.get('settings', {}).get('threads'))}, data {esc(r.get('data'))}</li>" for r in report.reports)
    comparison = f"<pre>{html.escape(report.device_comparison_markdown())}</pre>" if multi else ""
    diagnosis = _diagnosis_section(report)
    micro = micro_markdown(report)
    micro = f"<h2>Microcontroller (TensorFlow Lite Micro)</h2><pre>{esc(micro)}</pre>" if micro else ""
    warned = ("<h2>Warnings</h2><p>A variant measured here departs from its validation at export:</p><ul>"
              + "".join(f"<li>{html.escape(w)}</li>" for w in report.warnings()) + "</ul>") if report.warnings() else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgecls report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;font-size:13px}}
th,td{{border:1px solid #ccc;padding:3px 7px;text-align:right}}td:nth-child(-n+3){{text-align:left}}tr.front{{background:#eef7ee}}tr.warning{{background:#fdecea}}
figure{{display:inline-block;margin:1em}}img{{max-width:560px}}</style></head>
<body><h1>edgecls report</h1><ul>{hosts}</ul>
<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>
{warned}<p>Highlighted: the Pareto front (no other variant is both faster and more accurate): {html.escape(', '.join(report.pareto()))}.</p>
{comparison}{micro}{imgs}{diagnosis}</body></html>
"""


def _finite(value) -> float:
    return float("inf") if value is None else value


def _db(value) -> str:
    return "" if value is None else f"{value:.2f}"


def _diagnosis_section(report, top: int = 5) -> str:
    """Where each quantized variant loses accuracy: its worst layers by the error they add."""
    rows = report.diagnosed()
    if not rows:
        return ""
    parts = ["<h2>Where quantized variants lose accuracy</h2><p>Per-layer error against the float model of the "
             "same format, on calibration images (from the export). SQNR: the layer's output against float so far; "
             "own: the error the layer adds by itself (dB, higher is closer to float). Worst first; "
             "<code>edgecls inspect BUNDLE --variant NAME</code> lists every layer.</p>"]
    for r in rows:
        layers = sorted(r["diagnosis"]["layers"], key=lambda layer: (_finite(layer["own_db"]), _finite(layer["sqnr_db"])))[:top]
        cells = "".join(f"<tr><td>{html.escape(layer['name'])}</td><td>{html.escape(layer['op'])}</td>"
                        f"<td>{esc(_db(layer['own_db']))}</td><td>{esc(_db(layer['sqnr_db']))}</td></tr>" for layer in layers)
        parts.append(f"<h3>{html.escape(r['name'])}</h3><table><thead><tr><th>layer</th><th>op</th><th>own dB</th>"
                     f"<th>SQNR dB</th></tr></thead><tbody>{cells}</tbody></table>")
    return "".join(parts)
