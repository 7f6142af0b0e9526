"""Latency measurement (no TensorFlow): warm-up, then timed single-batch calls."""
from __future__ import annotations

import time

import numpy as np


def latency_stats(samples_ms) -> dict:
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "mean": round(float(a.mean()), 4),
        "p50": round(float(np.percentile(a, 50)), 4),
        "p90": round(float(np.percentile(a, 90)), 4),
        "p99": round(float(np.percentile(a, 99)), 4),
        "std": round(float(a.std()), 4),
        "runs": int(a.size),
    }


def time_calls(fn, warmup: int = 20, runs: int = 200) -> dict:
    """Call `fn()` `warmup` times untimed, then `runs` times timed; milliseconds per call."""
    for _ in range(warmup):
        fn()
    samples = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        fn()
        samples[i] = (time.perf_counter() - start) * 1000.0
    return latency_stats(samples)
