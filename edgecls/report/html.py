"""The report as one self-contained HTML page: the recommendation per device first, then every
warning and rejected variant, the devices in full, accuracy against latency per device (inline SVG:
hover a point for its figures), the table, the comparison between devices and the other plots (PNG,
embedded). No script, nothing fetched from elsewhere: it works offline."""
from __future__ import annotations

import base64
import html

from .svg import CSS
from .tables import cell, device_latencies, device_lines, front_text, micro_markdown, status


def esc(value) -> str:
    """Any value from a report file, as text in the page (never markup)."""
    return html.escape(str(value), quote=True)


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1250px;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}td{white-space:nowrap}td.l:last-child{white-space:normal}
td.l,th.l{text-align:left}tr.front td{background:#e8f1f8}tr.pick td{background:#fbe3d6;font-weight:600}
tr.warning td,tr.failed td,tr.rejected td{background:#f3f3f3;color:#555}
section.rec{border-left:5px solid #D55E00;padding:.3em 1em;margin:1em 0;background:#fdf4ee}
section.rec p.pick{font-size:1.15em;font-weight:600}#notices li{margin:.2em 0}
img{max-width:560px}"""


def row_keys(report) -> dict:
    """(device, variant) -> the row's number in the table, which the charts use for labels that find
    no room."""
    return {(row["device"], row["name"]): n for n, row in enumerate(report.rows, 1)}


def scatter_svg(report, device: str, keys: dict | None = None):
    """Accuracy against latency on one device as SVG, and the points not named on it: the
    recommendation starred, the front in blue, the others hollow, each p50's interval over
    processes as a bar, the rule's accuracy floor dashed. None when nothing was measured there."""
    from .svg import Chart, Line, Point, render

    keys = row_keys(report) if keys is None else keys
    cands = report.candidates(device)
    if not cands:
        return None
    rec = next(r for r in report.recommendations() if r["device"] == device)
    front = set(report.front(device))
    tied = {x for group in report.ties(device) for x in group}
    latencies = [c["latency_ms"] for c in cands]
    from .plots import latency_scale

    log = latency_scale(latencies) == "log"
    points = []
    for c in cands:
        row = c["row"]
        kind = "pick" if c["id"] == rec["winner"] else ("tied" if c["id"] in tied else "front") if c["id"] in front else "other"
        iv = row.get("p50_range")
        hover = (f"{c['id']} ({row.get('format')}, {row.get('precision')}): top-1 {100 * c['accuracy']:.2f}%, p50 "
                 f"{c['latency_ms']:.3f} ms" + (f" ({iv[0]:.3f}-{iv[1]:.3f} over processes)" if iv else "") +
                 f", {c['bytes']:,} bytes; {status(row)}" + ("; recommended" if kind == "pick" else
                                                             "; on the front" if c["id"] in front else ""))
        points.append(Point(c["latency_ms"], 100 * c["accuracy"], c["id"], hover, kind, tuple(iv) if iv else None,
                            key=str(keys.get((device, c["id"]), ""))))
    lines = []
    base = rec.get("baseline")
    if base:
        floor = 100 * base["accuracy"] - report.config.max_drop
        lines.append(Line("y", floor, f"{report.config.max_drop:g} point{'s' if report.config.max_drop != 1 else ''} "
                                      f"below {base['name']}"))
    chart = Chart(points, "batch-1 latency p50 (ms)" + (", log scale" if log else ""), "top-1 accuracy (%)",
                  f"Accuracy against latency: {device}"[:110], log_x=log, lines=lines)
    return render(chart, f"scatter-{list(report.devices).index(device) + 1}")


def scatter(report, device: str, keys: dict) -> str:
    drawn = scatter_svg(report, device, keys)
    if drawn is None:
        return ""
    svg, unlabelled = drawn
    note = ""
    if unlabelled:
        note = (" Not named on the chart for lack of room (number = the table's #): "
                + ", ".join(f"{p.key} {p.name}" for p in unlabelled) + ".")
    return (f"<figure>{svg}<figcaption>Hover a point for its figures. Bars: the range of p50 over the processes that "
            f"measured it.{esc(note)}</figcaption></figure>")


def html_page(report, plots: dict[str, bytes] | None = None) -> str:
    plots = report.plots() if plots is None else plots
    multi = len(report.devices) > 1
    cols = report.columns
    recs = report.recommendations()
    picks = {(r["device"], r["winner"]) for r in recs if r.get("winner")}
    fronts = {d: set(report.front(d)) for d in report.devices}
    keys, body = row_keys(report), []
    left = {"device", "name", "format", "precision", "status", "source"}
    for n, row in enumerate(report.rows, 1):
        cells = [cell(k, row) for k, _ in cols]
        cells[-1] = status(row)
        cls = ("pick" if (row["device"], row["name"]) in picks else "front" if row["name"] in fronts.get(row["device"], ())
               and row.get("status") == "ok" else row["status"] if row.get("status") in ("failed", "rejected") else
               "warning" if row.get("warning") else "")
        body.append(f'<tr class="{cls}"><td>{n}</td>' + "".join(
            f'<td class="{"l" if k in left else ""}">{esc(c)}</td>' for (k, _), c in zip(cols, cells)) + "</tr>")
    head = '<th>#</th>' + "".join(f'<th class="{"l" if k in ("device", "name", "status") else ""}">{esc(h)}</th>'
                                  for k, h in cols)
    rec_html = "".join(
        f'<section class="rec" data-device="{esc(r["device"])}">' + "".join(
            f'<p class="{"pick" if i == 0 else ""}">{esc(line)}</p>' for i, line in enumerate(r["lines"])) + "</section>"
        for r in recs)
    notices = report.notices()
    notice_html = (f'<section id="notices"><h2>Warnings and rejected variants ({len(notices)})</h2><ul>'
                   + "".join(f"<li>{esc(n)}</li>" for n in notices) + "</ul></section>") if notices else ""
    devices = "<ul>" + "".join(f"<li>{esc(d)}</li>" for d in device_lines(report)) + "</ul>"
    scatters = "".join(scatter(report, d, keys) for d in report.devices)
    fronts_html = "".join(f"<p>{esc((d + ': ') if multi else '')}{esc(front_text(report, d))}</p>" for d in report.devices
                          if report.front(d))
    comparison = _device_table(report) if multi else ""
    imgs = "".join(
        f'<figure><img alt="{esc(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}"/>'
        f"<figcaption>{esc(name)}</figcaption></figure>" for name, data in plots.items())
    micro = micro_markdown(report)
    micro = f"<h2>Microcontroller (TensorFlow Lite Micro)</h2><pre>{esc(micro)}</pre>" if micro else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgecls report</title>
<style>{STYLE}{CSS}</style></head>
<body><h1>edgecls report</h1>
<div id="recommendation"><h2>What to ship</h2>{rec_html}</div>
{notice_html}
<h2>Device{'s' if multi else ''}</h2>{devices}
<div id="plots">{scatters}</div>
<h2>Every variant</h2>
<table id="variants"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>
<p>Rows: the recommendation in orange, the rest of the front in blue, failed, rejected and warned rows in grey.</p>
{fronts_html}{comparison}{micro}<div id="other-plots">{imgs}</div>{_diagnosis_section(report)}</body></html>
"""


def _device_table(report) -> str:
    """Per-variant p50 on each device and its ratio to the first device."""
    devices = report.devices
    head = "<th class=\"l\">variant</th>" + "".join(f"<th>p50 ms on {esc(d)}</th>" for d in devices) + "".join(
        f"<th>ratio {esc(d)} / {esc(devices[0])}</th>" for d in devices[1:])
    body = [f'<tr><td class="l">{esc(n)}</td>' + "".join(f"<td>{esc(c)}</td>" for c in vals + ratios) + "</tr>"
            for n, vals, ratios in device_latencies(report)]
    return (f'<h2>Latency between devices</h2><table id="devices"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}'
            f"</tbody></table>")


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
