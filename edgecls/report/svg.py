"""Scatter plots as inline SVG for the report and tune pages: one self-contained file, readable
offline, with no script and nothing fetched from elsewhere.

- Every point has a hover text (an SVG <title>: the browser shows it as a tooltip) with its name,
  figures and status.
- Labels are placed apart: each tries positions around its point at growing distances (with a
  leader line when away from it) and takes the first that overlaps no other label, no marker and
  stays inside the plot; a label that finds no place is left off the chart and listed under it
  with its number, which the table's first column repeats.
- Log axes get 1-2-5 ticks in plain decimals, thinned until their labels do not touch.
- Colours are the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies),
  and every class of point also has its own shape, so colour is never the only cue.
Standard library only.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

# Okabe & Ito (2008), "Color Universal Design".
PALETTE = {"blue": "#0072B2", "orange": "#E69F00", "green": "#009E73", "vermillion": "#D55E00",
           "purple": "#CC79A7", "sky": "#56B4E9", "yellow": "#F0E442", "black": "#000000", "grey": "#8C8C8C"}
SERIES = [PALETTE[k] for k in ("blue", "orange", "green", "vermillion", "purple", "sky", "black")]

# How each kind of point is drawn: (legend text, colour, shape, filled).
KINDS = {
    "pick": ("recommended", PALETTE["vermillion"], "star", True),
    "front": ("on the front", PALETTE["blue"], "circle", True),
    "tied": ("on the front, tied", PALETTE["sky"], "diamond", True),
    "other": ("dominated", PALETTE["grey"], "circle", False),
    "misses": ("misses a budget", PALETTE["grey"], "cross", False),
    "closest": ("closest (misses)", PALETTE["vermillion"], "cross", True),
}

# The page style the charts expect: a point thickens under the pointer; captions under each chart.
CSS = ("svg.chart .pt:hover circle,svg.chart .pt:hover path{stroke-width:3}svg.chart .pt{cursor:default}"
       "figure{display:inline-block;margin:1em;vertical-align:top}figcaption{font-size:12px;color:#444;max-width:680px}")

FONT = 11  # px, monospace: a character is 0.6 em wide, so a label's box is known before drawing
CHAR_W = 0.6 * FONT
LINE_H = FONT + 3
MARKER = 6  # px: a marker's half-size, and the room kept clear around it


@dataclass
class Point:
    x: float
    y: float
    name: str
    hover: str
    kind: str = "other"
    x_range: tuple[float, float] | None = None
    key: str = ""  # the number the table repeats, shown when the name finds no place


@dataclass
class Line:
    axis: str  # "x": a vertical line at x; "y": a horizontal one at y
    value: float
    text: str
    colour: str = PALETTE["orange"]


@dataclass
class Chart:
    points: list[Point]
    x_label: str
    y_label: str
    title: str
    log_x: bool = False
    lines: list[Line] = field(default_factory=list)
    width: int = 680
    height: int = 420


def _fmt(v: float) -> str:
    """A tick value in plain decimals: 0.05, 0.2, 1, 84.2, 10, 20000 (ticks are 1-2-5 multiples, so
    six significant digits say each exactly)."""
    if v == 0:
        return "0"
    digits = max(0, -math.floor(math.log10(abs(v))) + 5)
    text = f"{v:.{min(digits, 10)}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def ticks(lo: float, hi: float, log: bool, room_px: float, vertical: bool = False) -> list[float]:
    """Tick values over [lo, hi]: 1-2-5 decades on a log axis, a nice step on a linear one; thinned
    until their labels, centred on their ticks, leave a gap (room_px: the axis length)."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    if log:
        out = []
        for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
            for m in (1, 2, 5):
                v = m * 10.0 ** k
                if lo <= v <= hi:
                    out.append(v)
        if len(out) < 3:
            out = sorted({m * 10.0 ** k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
                          for m in range(1, 10) if lo <= m * 10.0 ** k <= hi})
        if len(out) < 3:  # less than a decade: the linear axis's ticks, placed on the log scale
            out = ticks(lo, hi, False, room_px, vertical)
    else:
        raw = (hi - lo) / 6
        mag = 10 ** math.floor(math.log10(raw))
        step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * (1 - 1e-9))
        start = math.ceil(lo / step) * step
        places = max(0, -math.floor(math.log10(step) + 1e-9))  # a 1-2-5 step: its decimals say every tick exactly
        out = [round(start + i * step, places) for i in range(int((hi - start) / step + 1e-9) + 1)]

    def fits(values):
        pos = [_scale(v, lo, hi, log) * room_px for v in values]
        widths = [LINE_H if vertical else len(_fmt(v)) * CHAR_W for v in values]
        return all(pos[i + 1] - pos[i] >= (widths[i] + widths[i + 1]) / 2 + 8 for i in range(len(values) - 1))

    stride = 1
    while len(out[::stride]) > 2 and not fits(out[::stride]):
        stride += 1
    return out[::stride]


def _scale(v: float, lo: float, hi: float, log: bool) -> float:
    if log:
        return (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    return (v - lo) / (hi - lo)


def _domain(values, log: bool, pad: float = 0.06) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if log:
        a, b = math.log10(lo), math.log10(hi)
        span = (b - a) or 0.5
        return 10 ** (a - pad * span), 10 ** (b + pad * span)
    span = (hi - lo) or (abs(hi) * 0.1 or 1.0)
    return lo - pad * span, hi + pad * span


def _overlap(a, b, gap: float = 1.0) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


# Directions tried around a point, in this order: right, upper right, lower right, above, below,
# left, upper left, lower left.
DIRECTIONS = [(1, 0), (1, -1), (1, 1), (0, -1), (0, 1), (-1, 0), (-1, -1), (-1, 1)]
RADII = (4, 12, 22, 36, 54)


def place_labels(anchors, texts, area, markers, taken=()) -> list[tuple | None]:
    """For each anchor (x, y in px) and its text, a label box (x0, y0, x1, y1) that overlaps no
    other placed box (nor those `taken` already), no marker (a square of MARKER around each point)
    and stays inside `area` (x0, y0, x1, y1); None where no position fits. Anchors are taken in the
    order given."""
    placed, out = list(taken), []
    blocks = [(x - MARKER, y - MARKER, x + MARKER, y + MARKER) for x, y in markers]
    for (x, y), text in zip(anchors, texts):
        w, h = len(text) * CHAR_W, LINE_H
        spot = None
        for r in RADII:
            for dx, dy in DIRECTIONS:
                cx, cy = x + dx * (MARKER + r), y + dy * (MARKER + r)
                x0 = cx if dx > 0 else cx - w if dx < 0 else cx - w / 2
                y0 = cy - h / 2 if dy == 0 else cy if dy > 0 else cy - h
                box = (x0, y0, x0 + w, y0 + h)
                if (box[0] >= area[0] and box[2] <= area[2] and box[1] >= area[1] and box[3] <= area[3]
                        and not any(_overlap(box, b) for b in placed) and not any(_overlap(box, b, 0) for b in blocks)):
                    spot = box
                    break
            if spot:
                break
        out.append(spot)
        if spot:
            placed.append(spot)
    return out


def _marker(shape: str, x: float, y: float, colour: str, filled: bool, size: float = MARKER) -> str:
    fill = colour if filled else "white"
    style = f'fill="{fill}" stroke="{colour}" stroke-width="1.6"'
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{size - 1:.1f}" {style}/>'
    if shape == "diamond":
        s = size
        return f'<path d="M{x:.1f},{y - s:.1f}L{x + s:.1f},{y:.1f}L{x:.1f},{y + s:.1f}L{x - s:.1f},{y:.1f}Z" {style}/>'
    if shape == "cross":
        s = size - 1
        return (f'<path d="M{x - s:.1f},{y - s:.1f}L{x + s:.1f},{y + s:.1f}M{x - s:.1f},{y + s:.1f}L{x + s:.1f},{y - s:.1f}" '
                f'fill="none" stroke="{colour}" stroke-width="2.2"/>')
    # star: five points, twice the size
    s, pts = size * 1.7, []
    for i in range(10):
        r = s if i % 2 == 0 else s * 0.45
        a = -math.pi / 2 + i * math.pi / 5
        pts.append(f"{x + r * math.cos(a):.1f},{y + r * math.sin(a):.1f}")
    return f'<path d="M{"L".join(pts)}Z" {style}/>'


def render(chart: Chart, chart_id: str = "chart") -> tuple[str, list[Point]]:
    """The chart as an <svg> element, and the points whose names found no place on it (listed by
    the caller under the chart, keyed to the table)."""
    esc = lambda s: html.escape(str(s), quote=True)  # noqa: E731
    pts = [p for p in chart.points if _finite(p.x) and _finite(p.y) and (not chart.log_x or p.x > 0)]
    W, H = chart.width, chart.height
    left, right, top, bottom = 64, 16, 34, 74
    area = (left, top, W - right, H - bottom)
    if not pts:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" id="{esc(chart_id)}" width="{W}" height="60" role="img">'
                f'<text x="10" y="30" font-size="13">{esc(chart.title)}: nothing measured</text></svg>'), []
    xs = [p.x for p in pts] + [v for p in pts if p.x_range for v in p.x_range if v > 0 or not chart.log_x]
    xs += [line.value for line in chart.lines if line.axis == "x" and (line.value > 0 or not chart.log_x)]
    ys = [p.y for p in pts] + [line.value for line in chart.lines if line.axis == "y"]
    xlo, xhi = _domain(xs, chart.log_x)
    ylo, yhi = _domain(ys, False, 0.1)

    def px(x):
        return area[0] + _scale(x, xlo, xhi, chart.log_x) * (area[2] - area[0])

    def py(y):
        return area[3] - _scale(y, ylo, yhi, False) * (area[3] - area[1])

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="{esc(chart_id)}" class="chart" width="{W}" height="{H}" '
             f'viewBox="0 0 {W} {H}" role="img" aria-label="{esc(chart.title)}" font-family="system-ui,sans-serif" '
             f'font-size="{FONT}">',
             f'<text x="8" y="18" font-size="13" font-weight="600">{esc(_fit(chart.title, (W - 16) / (13 * 0.6)))}'
             f'<title>{esc(chart.title)}</title></text>',
             f'<rect x="{area[0]}" y="{area[1]}" width="{area[2] - area[0]}" height="{area[3] - area[1]}" fill="none" '
             f'stroke="#444"/>']
    for v in ticks(xlo, xhi, chart.log_x, area[2] - area[0]):
        x = px(v)
        parts.append(f'<line x1="{x:.1f}" y1="{area[1]}" x2="{x:.1f}" y2="{area[3]}" stroke="#e5e5e5"/>'
                     f'<text x="{x:.1f}" y="{area[3] + 15}" text-anchor="middle">{_fmt(v)}</text>')
    for v in ticks(ylo, yhi, False, area[3] - area[1], vertical=True):
        y = py(v)
        parts.append(f'<line x1="{area[0]}" y1="{y:.1f}" x2="{area[2]}" y2="{y:.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{area[0] - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    parts.append(f'<text x="{(area[0] + area[2]) / 2:.0f}" y="{area[3] + 34}" text-anchor="middle">{esc(chart.x_label)}</text>'
                 f'<text transform="translate(16 {(area[1] + area[3]) / 2:.0f}) rotate(-90)" text-anchor="middle">'
                 f'{esc(chart.y_label)}</text>')
    # Budget and rule lines are named in the legend (and on hover), not on the chart: no text of theirs to avoid.
    for line in chart.lines:
        if line.axis == "x" and (line.value > 0 or not chart.log_x):
            x = px(line.value)
            parts.append(f'<line x1="{x:.1f}" y1="{area[1]}" x2="{x:.1f}" y2="{area[3]}" stroke="{line.colour}" '
                         f'stroke-dasharray="5 3" stroke-width="1.5"><title>{esc(line.text)}</title></line>')
        elif line.axis == "y":
            y = py(line.value)
            parts.append(f'<line x1="{area[0]}" y1="{y:.1f}" x2="{area[2]}" y2="{y:.1f}" stroke="{line.colour}" '
                         f'stroke-dasharray="5 3" stroke-width="1.5"><title>{esc(line.text)}</title></line>')
    # Labels: the recommended point first, then the front, then the rest, each nearest the top-left first.
    order = sorted(range(len(pts)), key=lambda i: (["pick", "closest", "front", "tied", "other", "misses"].index(pts[i].kind)
                                                    if pts[i].kind in KINDS else 9, px(pts[i].x), py(pts[i].y)))
    anchors = [(px(pts[i].x), py(pts[i].y)) for i in order]
    boxes = place_labels(anchors, [pts[i].name for i in order], area, anchors)
    missing = [k for k, box in enumerate(boxes) if box is None]
    if missing:  # the ones without room: their short keys instead, clear of the names placed
        keyed = place_labels([anchors[k] for k in missing], [pts[order[k]].key or "?" for k in missing], area, anchors,
                             [b for b in boxes if b])
        for k, box in zip(missing, keyed):
            if box is not None:
                boxes[k] = ("key", box)
    unlabelled = []
    for k, i in enumerate(order):
        p = pts[i]
        _, colour, shape, filled = KINDS.get(p.kind, KINDS["other"])
        x, y = anchors[k]
        g = [f'<g class="pt"><title>{esc(p.hover)}</title>']
        if p.x_range and all(_finite(v) and (v > 0 or not chart.log_x) for v in p.x_range):
            a, b = px(p.x_range[0]), px(p.x_range[1])
            g.append(f'<path d="M{a:.1f},{y - 3:.1f}V{y + 3:.1f}M{a:.1f},{y:.1f}H{b:.1f}M{b:.1f},{y - 3:.1f}V{y + 3:.1f}" '
                     f'stroke="{colour}" stroke-width="1.2" fill="none"/>')
        g.append(_marker(shape, x, y, colour, filled))
        box = boxes[k]
        text = p.name
        if isinstance(box, tuple) and box and box[0] == "key":
            box, text = box[1], p.key or "?"
            unlabelled.append(p)
        if box is None:
            unlabelled.append(p)
        else:
            ex, ey = min(max(x, box[0]), box[2]), min(max(y, box[1]), box[3])  # the box's nearest point
            if math.hypot(ex - x, ey - y) > MARKER + 3:  # away from its point: a leader line shows whose it is
                g.append(f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{ex:.1f}" y2="{ey:.1f}" stroke="#555" stroke-width="0.9"/>')
            g.append(f'<text class="label" x="{box[0]:.1f}" y="{box[3] - 4:.1f}" font-family="ui-monospace,monospace" '
                     f'data-box="{box[0]:.1f},{box[1]:.1f},{box[2]:.1f},{box[3]:.1f}">{esc(text)}</text>')
        g.append("</g>")
        parts.append("".join(g))
    # Legend: the kinds present, under the x-axis label.
    x = area[0]
    for kind in ("pick", "closest", "front", "tied", "other", "misses"):
        if any(p.kind == kind for p in pts):
            text, colour, shape, filled = KINDS[kind]
            parts.append(_marker(shape, x + 6, H - 14, colour, filled, 5) + f'<text x="{x + 16}" y="{H - 10}">{esc(text)}</text>')
            x += 30 + len(text) * CHAR_W
    for line in chart.lines:
        parts.append(f'<path d="M{x},{H - 14}h14" stroke="{line.colour}" stroke-dasharray="5 3" stroke-width="1.5"/>'
                     f'<text x="{x + 18}" y="{H - 10}">{esc(line.text)}</text>')
        x += 30 + len(line.text) * CHAR_W
    parts.append("</svg>")
    return "".join(parts), unlabelled


def _fit(text: str, chars: float) -> str:
    """`text` cut to about `chars` characters, with an ellipsis when cut."""
    chars = int(chars)
    return text if len(text) <= chars else text[:max(1, chars - 1)] + "\u2026"


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
