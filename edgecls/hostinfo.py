"""Host description for reports and manifests (standard library only)."""
from __future__ import annotations

import os
import platform
from importlib import metadata

# The CPU features that decide which int8 kernels onnxruntime and XNNPACK run (and so, for some
# int8 schemes, their results): x86 VNNI variants and AMX, AVX2/AVX-512; arm64 dot product, i8mm, SVE.
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm", "sve")
# An emulator (qemu-user) shows the host's /proc/cpuinfo, not the CPU it emulates: the emulation
# tools point this variable at a file describing the emulated CPU.
CPUINFO_ENV = "EDGECLS_CPUINFO"


def _cpuinfo_path(cpuinfo: str | None) -> str:
    return cpuinfo or os.environ.get(CPUINFO_ENV) or "/proc/cpuinfo"


def _cpuinfo_fields(cpuinfo: str | None) -> dict:
    """Each key of the cpuinfo file with its first non-empty value (the first processor's, on x86)."""
    found = {}
    try:
        with open(_cpuinfo_path(cpuinfo), encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if value.strip():
                    found.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return found


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """The INT8_FLAGS this CPU has, from the first processor's "flags" (x86) or "Features" (arm64) line."""
    found = _cpuinfo_fields(cpuinfo)
    have = set((found.get("flags") or found.get("Features") or "").split())
    return [flag for flag in INT8_FLAGS if flag in have]


def has_vnni(flags) -> bool:
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def int8_class(arch: str, flags) -> str:
    """A short name of the CPU class int8 results depend on."""
    if arch in ("x86_64", "AMD64", "i686", "x86"):
        if has_vnni(flags):
            return "x86 with VNNI"
        if "avx512f" in flags:
            return "x86 AVX-512 without VNNI"
        return "x86 AVX2 without VNNI" if "avx2" in flags else "x86 without AVX2"
    if arch in ("aarch64", "arm64"):
        return "arm64 with dot product" if "asimddp" in flags else "arm64 without dot product"
    return arch


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's name (x86: "model name"); on a Raspberry Pi the board ("Model: Raspberry Pi 4 Model
    B Rev 1.4"), which says more than its "Hardware: BCM2835" line."""
    found = _cpuinfo_fields(cpuinfo)
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
    flags = cpu_flags()
    arch = platform.machine()
    return {
        "hostname": platform.node(),
        "cpu": cpu_model(),
        "cpu_flags": flags,
        "int8_class": int8_class(arch, flags),
        "cores": cpu_count(),
        "arch": arch,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def runtime_versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("numpy", "Pillow", "ai-edge-litert", "tflite-runtime", "onnxruntime"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def validation_host() -> dict:
    """Where an artifact was validated: what a bench on another machine compares itself with."""
    info = host_info()
    return {"cpu": info["cpu"], "arch": info["arch"], "cpu_flags": info["cpu_flags"], "int8_class": info["int8_class"],
            "runtime": runtime_versions()}
