"""The report's PNG plots: sizes, the confusion matrix of the most accurate variant, latency per
device, the per-layer error of quantized variants. Needs matplotlib (Agg backend). Accuracy against
latency, the chart the recommendation is read from, is SVG (svg.py): labels placed apart, hover."""
from __future__ import annotations

import io

# Names and labels come from report files: drawn as plain text, never parsed as mathtext ($...$).
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


def _style() -> dict:
    """Plain text, and the Okabe-Ito colours (colour-blind safe) for every series."""
    from cycler import cycler

    from .svg import SERIES

    return {**PLAIN_TEXT, "axes.prop_cycle": cycler(color=SERIES)}


def plots(report) -> dict[str, bytes]:
    """PNG plots by file name."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    with matplotlib.rc_context(_style()):
        return _plots(report, plt)


def _plots(report, plt) -> dict[str, bytes]:
    out = {}
    ok = [r for r in report.rows if r.get("status") == "ok"]
    if not ok:
        return out
    scale = latency_scale(r.get("p50") for r in ok)  # one latency axis for both latency plots
    # Sizes.
    first = [r for r in ok if r["device"] == report.devices[0]]
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
    out["sizes.png"] = png_bytes(fig, plt)
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
        out["confusion.png"] = png_bytes(fig, plt)
    if len(report.devices) > 1:
        names = [r["name"] for r in first]
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.8 / len(report.devices)
        for i, device in enumerate(report.devices):
            by = {r["name"]: r.get("p50") for r in ok if r["device"] == device}
            # A variant a device did not measure is a gap, not a zero.
            ax.bar([x + i * width for x in range(len(names))], [by.get(n) or float("nan") for n in names],
                   width=width, label=device[:50])
        ax.set_xticks([x + width * (len(report.devices) - 1) / 2 for x in range(len(names))])
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
        ax.set_yscale(scale)
        if scale == "log":  # plain decimals on the major ticks, none on the minor ones
            from matplotlib.ticker import FuncFormatter, NullFormatter

            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel("p50 ms (batch 1)" + (", log scale" if scale == "log" else ""))
        ax.set_title("Latency per device")
        ax.legend(fontsize=7)
        fig.tight_layout()
        out["devices.png"] = png_bytes(fig, plt)
    fig = _layer_error_plot(report, plt)
    if fig is not None:
        out["layer_error.png"] = png_bytes(fig, plt)
    return out

# -- HTML and writing -------------------------------------------------------------------------


def _layer_error_plot(report, plt):
    """SQNR of every layer's output, in graph order, one line per diagnosed variant: where the
    quantized model drifts from float."""
    rows = report.diagnosed()
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        layers = r["diagnosis"]["layers"]
        ax.plot(range(1, len(layers) + 1), [layer["sqnr_db"] for layer in layers], marker=".", label=r["name"])
        worst = min(range(len(layers)), key=lambda i: layers[i]["own_db"])
        ax.annotate(layers[worst]["name"][-30:], (worst + 1, layers[worst]["sqnr_db"]), fontsize=6, xytext=(3, -9),
                    textcoords="offset points")
    ax.set_xlabel("layer (graph order)")
    ax.set_ylabel("SQNR against float (dB)")
    ax.set_title("Per-layer error of the quantized variants (worst layer named)")
    ax.legend(fontsize=7)
    return fig


def latency_scale(latencies, spread: float = 20.0) -> str:
    """"log" when the measured latencies span more than `spread` times (a Keras row beside the
    runtime's variants is 20-100x slower and would flatten every other bar), else "linear"."""
    values = [v for v in latencies if isinstance(v, (int, float)) and v > 0]
    if len(values) < 2:
        return "linear"
    return "log" if max(values) / min(values) > spread else "linear"


def png_bytes(fig, plt) -> bytes:
    """A matplotlib figure as PNG bytes (closed afterwards)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
