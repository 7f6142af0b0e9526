"""Does a device reproduce the bundle? A bench's accuracy and agreement, set beside the figures its
manifest recorded when each artifact was validated at export.

int8 kernels differ between CPU classes (x86 with or without VNNI, arm64), and for some int8 schemes
so do their results: an artifact validated on one machine can be worse on another. `check_rows`
marks a benched variant that departs from its validation by more than sampling explains with a
`warning` (what differs, and the likely cause). Standard library only: it runs on the device.
"""
from __future__ import annotations

import math

from ..hostinfo import has_vnni

# Departures smaller than this (points) are never flagged: the bench's images are usually not the
# export's, and a point or so between image sets is ordinary.
MIN_POINTS = 2.0
# The rate of disagreement with fp32 a bench may see is taken as this many times the rate at export
# (another image set: the built-in sample against a JPEG test set, say) before it counts as a departure...
RATE_SLACK = 2.0
# ...and even then only when so many disagreements would happen by chance less often than this.
FALSE_ALARM = 1e-3
# An accuracy change from fp32 (paired, on the bench's images) is flagged beyond this many standard errors.
SIGMAS = 4.0
README_SECTION = "README 'int8 on every CPU'"


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
             for i in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def agreement_departs(expected: float, observed: float, images: int) -> bool:
    """Is `observed` agreement on `images` images too low for an artifact that agreed `expected` at export?"""
    if 100 * (expected - observed) <= MIN_POINTS:
        return False
    rate = min(1.0, RATE_SLACK * max(1.0 - expected, 0.5 / images))
    disagreements = round((1.0 - observed) * images)
    return binomial_tail(disagreements, images, rate) < FALSE_ALARM


def _delta_tolerance(disagreement: float, images: int) -> float:
    """Points a paired accuracy difference may move by chance: the difference is decided on the
    images where the two models disagree."""
    return max(MIN_POINTS, SIGMAS * 100 * math.sqrt(max(disagreement, 1.0 / images) / images))


def likely_cause(artifact: dict, host: dict) -> str:
    """Why this machine may compute the artifact differently from the machine that validated it."""
    at = (artifact.get("validation") or {}).get("host") or {}
    here_flags, there_flags = host.get("cpu_flags") or [], at.get("cpu_flags") or []
    onnx_int8 = artifact.get("format") == "onnx" and artifact.get("precision") == "int8"
    x86 = host.get("arch") in ("x86_64", "AMD64")
    if onnx_int8 and x86 and not has_vnni(here_flags) and artifact.get("int8_scheme", "s8s8") in ("s8s8", "u8s8"):
        validated = f" (validated on {at.get('cpu')}, {at.get('int8_class')})" if at else ""
        return (f"this CPU lacks VNNI{validated}: onnxruntime's 16-bit sums saturate with this file's full-range "
                f"int8 weights; re-export with --onnx-int8-scheme u8s8_rr ({README_SECTION})")
    if not at:
        return "the bundle does not record where it was validated (exported by an older edgecls)"
    if at.get("int8_class") and at.get("int8_class") != host.get("int8_class"):
        return f"validated on {at.get('cpu')} ({at['int8_class']}); this CPU is {host.get('int8_class')} ({README_SECTION})"
    if there_flags and here_flags != there_flags and at.get("arch") == host.get("arch"):
        return f"validated on {at.get('cpu')} with {', '.join(there_flags)}; this CPU has {', '.join(here_flags) or 'none of them'}"
    ours, theirs = (host.get("runtime") or {}), (at.get("runtime") or {})
    changed = [f"{pkg} {ours.get(pkg)} here vs {theirs[pkg]} at export" for pkg in ("onnxruntime", "ai-edge-litert")
               if theirs.get(pkg) and ours.get(pkg) and ours[pkg] != theirs[pkg]]
    if changed:
        return "; ".join(changed)
    return "same CPU class and runtime as at export: check that the data matches the model's (labels, preprocessing)"


def departure(row: dict, artifact: dict, reference_row: dict | None, host: dict) -> str | None:
    """The warning for one benched variant, or None when it reproduces its validation."""
    validation = artifact.get("validation") or {}
    images = row.get("images") or 0
    if row.get("status") != "ok" or row.get("accuracy") is None or not images or not validation:
        return None
    problems = []
    agreement = row.get("agreement")
    # The bench's agreement is with the bundle's fp32 file (tflite_fp32 or onnx_fp32: the model the
    # user gave, converted), the manifest's with the model the user gave itself: every variant's
    # (a fine-tuned one's fidelity to its fine-tuned model is apart, under "conversion").
    judged_on_given = artifact.get("source") in ("base", "source") or \
        str(validation.get("reference", "")).startswith("keras base")
    comparable = judged_on_given and row.get("agreement_reference") not in (None, row.get("name"))
    expected = validation.get("agreement")
    if comparable and agreement is not None and expected is not None:
        if agreement_departs(expected, agreement, images):
            problems.append(f"agreement {100 * agreement:.1f}% here vs {100 * expected:.1f}% at export")
    delta_there = validation.get("accuracy_delta_vs_fp32_points")
    if reference_row is not None and reference_row is not row and reference_row.get("accuracy") is not None \
            and delta_there is not None and not problems:
        delta_here = 100 * (row["accuracy"] - reference_row["accuracy"])
        disagreement = 1 - agreement if agreement is not None else 1 - (expected or 0.0)
        if delta_there - delta_here > _delta_tolerance(disagreement, images):
            problems.append(f"accuracy {delta_here:+.1f} points from fp32 here vs {delta_there:+.1f} at export")
    if not problems:
        return None
    return f"{'; '.join(problems)} ({images} images): {likely_cause(artifact, host)}"


def check_rows(rows: list[dict], manifest: dict, host: dict) -> None:
    """Add `warning` to each row (of a bench report) whose variant departs from its manifest's figures."""
    artifacts = {a.get("name"): a for a in manifest.get("artifacts", []) if isinstance(a, dict)}
    by_name = {r.get("name"): r for r in rows}
    for row in rows:
        artifact = artifacts.get(row.get("name"))
        if artifact is None:
            continue
        warning = departure(row, artifact, by_name.get(row.get("agreement_reference")), host)
        if warning:
            row["warning"] = warning
