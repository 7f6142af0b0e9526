"""`OUT/tune.html`: the search on one page. Accuracy against latency and against size, the budget
lines drawn, the front joined, the choice starred, candidates that miss a budget in grey; then the
answer, and every candidate in rank order with what it misses."""
from __future__ import annotations

import base64
import html

from ..report.plots import png_bytes
from .select import Budgets, measured, miss_text, misses


def _budgets(record: dict) -> Budgets:
    b = record["budgets"]
    return Budgets(b["max_drop"], b["max_bytes"], b["size_measure"], b["max_latency_ms"], b.get("max_ram_bytes"),
                   b.get("max_flash_bytes"), b.get("board"))


def _plots(record: dict) -> dict[str, bytes]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    from ..report.plots import PLAIN_TEXT

    with matplotlib.rc_context(PLAIN_TEXT):
        return _draw(record, plt)


def _draw(record: dict, plt) -> dict[str, bytes]:
    budgets = _budgets(record)
    cands = [c for c in record["candidates"] if measured(c)]
    if not cands:
        return {}
    from .finish import front as pareto

    winner = (record["choice"].get("winner") or {}).get("id")
    near = (record["choice"].get("closest") or {}).get("id")
    ref = record.get("reference", {}).get("accuracy")
    out = {}
    for key, label, limit, name in (("latency_ms", "p50 latency at batch 1 (ms)", budgets.max_latency_ms, "latency"),
                                    (budgets.size_key(), f"{budgets.size_measure} bytes", budgets.max_bytes, "size")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        front = set(pareto(cands, budgets, name))  # each plot joins its own front: accuracy against its cost
        ok = [c for c in cands if not misses(c, budgets)]
        bad = [c for c in cands if misses(c, budgets)]
        ax.scatter([c[key] for c in bad], [100 * c["accuracy"] for c in bad], c="#bbbbbb", s=18, label="misses a budget")
        ax.scatter([c[key] for c in ok], [100 * c["accuracy"] for c in ok], c="#1f77b4", s=22, label="within budget")
        fr = sorted((min((c for c in cands if c["artifact"] == a), key=lambda c: c[key]) for a in front), key=lambda c: c[key])
        if fr:
            ax.plot([c[key] for c in fr], [100 * c["accuracy"] for c in fr], "--", c="#2ca02c", lw=1, label="front")
        for c in cands:
            if c["artifact"] in front and c["threads"] == min(x["threads"] for x in cands if x["artifact"] == c["artifact"]) \
                    or c["id"] == winner:
                ax.annotate(c["id"], (c[key], 100 * c["accuracy"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        w = next((c for c in cands if c["id"] == winner), None)
        if w is not None:
            ax.scatter([w[key]], [100 * w["accuracy"]], marker="*", s=220, c="#d62728", label="choice", zorder=5)
        n = next((c for c in cands if c["id"] == near), None)
        if n is not None:  # nothing met the budgets: the closest candidate
            ax.scatter([n[key]], [100 * n["accuracy"]], marker="X", s=120, c="#d62728", label="closest (misses)", zorder=5)
            ax.annotate(n["id"], (n[key], 100 * n["accuracy"]), fontsize=6, xytext=(3, -9), textcoords="offset points")
        if limit is not None:
            ax.axvline(limit, c="#d62728", lw=1, ls=":", label=f"--max-{'latency-ms' if name == 'latency' else 'bytes'}")
        if budgets.max_drop is not None and ref is not None:
            ax.axhline(100 * ref - budgets.max_drop, c="#ff7f0e", lw=1, ls=":", label="--max-drop")
        ax.set_xscale("log")
        ax.set_xlabel(label + ", log scale")
        ax.set_ylabel("top-1 % (validation split)")
        ax.set_title(f"Accuracy against {name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        out[f"accuracy_vs_{name}.png"] = png_bytes(fig, plt)
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
    imgs = "".join(f'<figure><img alt="{html.escape(n)}" src="data:image/png;base64,{base64.b64encode(d).decode()}"/></figure>'
                   for n, d in _plots(record).items())
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
tr.choice{{background:#fde9c8;font-weight:bold}}tr.front{{background:#eef7ee}}figure{{display:inline-block;margin:1em}}img{{max-width:560px}}</style></head>
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
