"""The benchmark stage: local.py measures a bundle's variants here (each in its own child process),
remote.py runs the same bench on another machine over SSH, crosscheck.py sets a bench's figures
beside the manifest's validation and warns where a device departs from it. numpy and the runtime
only: no TensorFlow."""
from .local import REPORT_SCHEMA, BenchConfig, bench, combine_rounds, latency_stats, time_calls  # noqa: F401

__all__ = ["BenchConfig", "bench", "REPORT_SCHEMA"]
