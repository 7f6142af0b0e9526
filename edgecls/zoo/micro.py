"""What each shipped zoo model needs on a microcontroller: its int8 file (`tflite_int8`, 32x32x3,
CIFAR-10) under TensorFlow Lite Micro, measured by `tools/release/micro_table.py --zoo-json` and
shipped as micro.json beside this module. `tune` names the ones that fit when nothing of the model
being tuned does (a smaller architecture is the remedy no quantization gives).

The arena depends on the architecture and input size, not on the weights, so the figures hold for
any model of that architecture at that input size; flash grows with the parameter count and the
number of classes (a little).
"""
from __future__ import annotations

import json
from pathlib import Path

TABLE = Path(__file__).with_name("micro.json")
_KEYS = ("arena_bytes", "ram_bytes", "flash_bytes")


def table() -> dict[str, dict]:
    """{zoo model: {arena_bytes, ram_bytes, flash_bytes, tflm_accuracy, input, measured}}; entries of
    another shape are left out (the file ships with edgecls, but is read like any other)."""
    try:
        data = json.loads(TABLE.read_text()) if TABLE.stat().st_size < 1 << 20 else {}
    except (OSError, ValueError, RecursionError):
        return {}
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        return {}
    out = {}
    for name, entry in models.items():
        if (isinstance(name, str) and isinstance(entry, dict)
                and all(type(entry.get(k)) is int and 0 < entry[k] < 1 << 40 for k in _KEYS)):
            out[name] = entry
    return out


def fitting(max_ram_bytes: int | None, max_flash_bytes: int | None, exclude: str | None = None) -> list[tuple[str, dict]]:
    """The shipped zoo models whose int8 file fits both budgets (None: no limit), smallest RAM first."""
    fits = [(name, e) for name, e in table().items() if name != exclude
            and (max_ram_bytes is None or e["ram_bytes"] <= max_ram_bytes)
            and (max_flash_bytes is None or e["flash_bytes"] <= max_flash_bytes)]
    return sorted(fits, key=lambda item: (item[1]["ram_bytes"], item[0]))


def suggestion(max_ram_bytes: int | None, max_flash_bytes: int | None, exclude: str | None = None) -> str:
    """One sentence naming the zoo models that fit, or '' when none does."""
    fits = fitting(max_ram_bytes, max_flash_bytes, exclude)
    if not fits:
        return ""
    parts = [f"{name} (RAM {e['ram_bytes'] / 1024:.1f} KB, flash {e['flash_bytes'] / 1024:.1f} KB"
             + (f", {100 * e['tflm_accuracy']:.1f}% on CIFAR-10 under TFLite Micro" if isinstance(e.get("tflm_accuracy"), float)
                else "") + ")" for name, e in fits]
    return ("smaller architectures of the zoo that fit, as int8 at 32x32: " + ", ".join(parts)
            + f"; train one with `edgecls train --arch {fits[0][0]}`")
