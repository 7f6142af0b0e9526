"""`OUT/tune.html`: the search on one page. Accuracy against latency and against size (inline SVG,
hover for figures), the budget lines drawn, the front in blue, the choice starred, candidates that
miss a budget as grey crosses; then the answer, and every candidate in rank order with what it
misses. One self-contained file: no script, nothing fetched."""
from __future__ import annotations

import html

from ..report.svg import CSS
from ..selection import Budgets, latency_interval, measured, miss_text, misses, signed_points


def _budgets(record: dict) -> Budgets:
    b = record["budgets"]
    return Budgets(b["max_drop"], b["max_bytes"], b["size_measure"], b["max_latency_ms"], b.get("max_ram_bytes"),
                   b.get("max_flash_bytes"), b.get("board"))


def charts(record: dict) -> dict[str, str]:
    """Accuracy against latency and against size as SVG (edgecls.report.svg): the choice starred,
    the front in blue, candidates that miss a budget as grey crosses, each p50's interval over
    processes as a bar, the budgets dashed; hover a point for its figures."""
    from ..report.plots import latency_scale
    from ..report.svg import PALETTE, Chart, Line, Point, render
    from ..selection import front as pareto

    budgets = _budgets(record)
    cands = [c for c in record["candidates"] if measured(c)]
    if not cands:
        return {}
    winner = (record["choice"].get("winner") or {}).get("id")
    near = (record["choice"].get("closest") or {}).get("id")
    ref = record.get("reference", {}).get("accuracy")
    out = {}
    for key, label, limit, name, flag in (
            ("latency_ms", "p50 latency at batch 1 (ms)", budgets.max_latency_ms, "latency", "--max-latency-ms"),
            (budgets.size_key(), f"{budgets.size_measure} bytes", budgets.max_bytes, "size", "--max-bytes")):
        front = set(pareto(cands, budgets, name))  # each chart joins its own front: accuracy against its cost
        points = []
        for c in cands:
            kind = ("pick" if c["id"] == winner else "closest" if c["id"] == near else "misses" if misses(c, budgets)
                    else "front" if c["artifact"] in front else "other")
            hover = (f"{c['id']}: top-1 {100 * c['accuracy']:.2f}% ({signed_points(c.get('drop') or 0.0)} points), p50 {c['latency_ms']:.3f} ms, "
                     f"{c['bytes']:,} bytes ({c['gzip_bytes']:,} gzip); " + (miss_text(c, budgets) or "within budget"))
            points.append(Point(c[key], 100 * c["accuracy"], c["id"], hover, kind,
                                latency_interval(c) if key == "latency_ms" else None,
                                key=str(c.get("rank") or "")))
        lines = []
        if limit is not None:
            lines.append(Line("x", limit, f"{flag} {limit:g}", PALETTE["vermillion"]))
        if budgets.max_drop is not None and ref is not None:
            lines.append(Line("y", 100 * ref - budgets.max_drop, f"--max-drop {budgets.max_drop:g}"))
        log = latency_scale(p.x for p in points) == "log"  # sizes spread the same way
        svg, unlabelled = render(Chart(points, label + (", log scale" if log else ""), "top-1 % (validation split)",
                                       f"Accuracy against {name}", log_x=log, lines=lines), f"tune-{name}")
        note = ("" if not unlabelled else " Not named for lack of room (number = rank in the table): "
                + ", ".join(f"{p.key} {p.name}" for p in unlabelled) + ".")
        out[f"accuracy_vs_{name}"] = (svg, note)
    return out


def html_page(record: dict) -> str:
    b = record["budgets"]
    budgets = _budgets(record)
    choice = record["choice"]
    winner = (choice.get("winner") or {}).get("id")
    rows = sorted(record["candidates"], key=lambda c: (c.get("rank") is None, c.get("rank") or 0, c["id"]))
    body = []
    for c in rows:
        status = c["status"] if c["status"] != "ok" else (miss_text(c, budgets) or "within budget") if measured(c) else "not measured"
        if c["status"] != "ok" and c.get("reason"):
            status += f": {c['reason']}"
        cls = ' class="choice"' if c["id"] == winner else ' class="front"' if c["artifact"] in record.get("front", ()) else ""
        cells = [c.get("rank") or "", c["id"], c.get("engine") or "", c.get("precision") or "",
                 "" if c.get("accuracy") is None else f"{100 * c['accuracy']:.2f}",
                 "" if c.get("drop") is None else f"{c['drop']:+.2f}",
                 "" if c.get("bytes") is None else f"{c['bytes']:,}", "" if c.get("gzip_bytes") is None else f"{c['gzip_bytes']:,}",
                 "" if c.get("latency_ms") is None else f"{c['latency_ms']:.3f}", status]
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in cells) + "</tr>")
    imgs = "".join(f'<figure>{svg}<figcaption>Hover a point for its figures.{html.escape(note)}</figcaption></figure>'
                   for svg, note in charts(record).values())
    answer = "".join(f"<p>{html.escape(line)}</p>" for line in choice.get("answer", ()))
    test = choice.get("test")
    def same(s):
        pairs = (s.get("same_file_as") or {}).items()
        return "; " + ", ".join(f"{a}: the same file as {b}" for a, b in pairs) if pairs else ""

    stages = "".join(f"<li>{html.escape(name)}: {html.escape(s['why'])} ({s['seconds']:.0f} s{html.escape(same(s))})</li>"
                     for name, s in record["stages"].items())
    val = record.get("validation", {})
    devices = "; ".join(f"{name}: {h.get('cpu')} ({h.get('int8_class')}), {h.get('cores')} cores, {h.get('arch')}"
                        for name, h in record.get("devices", {}).items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgecls tune</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;font-size:13px}}
th,td{{border:1px solid #ccc;padding:3px 7px;text-align:right}}td:nth-child(2),td:nth-child(3),td:last-child{{text-align:left}}
tr.choice{{background:#fde9c8;font-weight:bold}}tr.front{{background:#eef7ee}}{CSS}</style></head>
<body><h1>edgecls tune: {html.escape(record['model'])}</h1>
<p>Budgets: {html.escape(budgets.describe())}; objective: {html.escape(b['objective'])}. Accuracy on {html.escape(str(val.get('images', '?')))}
validation images held out of the training data ({html.escape(str(val.get('split', '')))}); the float model scores
{100 * record.get('reference', {}).get('accuracy', float('nan')):.2f}% there.
{'' if not test else f"Test split, read once for the choice: {100 * test['accuracy']:.2f}% on {test['images']:,} images."}</p>
{answer}<p>Latency measured on {html.escape(devices or 'no device')}.</p><ul>{stages}</ul><p>Fine-tuning: {html.escape(str(record.get('fine_tune', '')))}</p>
{imgs}
<table><thead><tr><th>rank</th><th>candidate</th><th>engine</th><th>precision</th><th>top-1 %</th><th>drop (points)</th>
<th>bytes</th><th>gzip</th><th>p50 ms</th><th>budgets</th></tr></thead><tbody>{''.join(body)}</tbody></table>
</body></html>
"""
