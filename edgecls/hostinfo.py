"""Host description for reports (standard library only)."""
from __future__ import annotations

import os
import platform


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's name (x86: "model name"); on a Raspberry Pi the board ("Model: Raspberry Pi 4 Model
    B Rev 1.4"), which says more than its "Hardware: BCM2835" line."""
    found = {}
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if value.strip():
                    found.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    for key in ("model name", "Model", "cpu model", "Hardware"):
        if key in found:
            return found[key]
    return platform.processor() or platform.machine() or "unknown"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def host_info() -> dict:
    return {
        "hostname": platform.node(),
        "cpu": cpu_model(),
        "cores": cpu_count(),
        "arch": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
