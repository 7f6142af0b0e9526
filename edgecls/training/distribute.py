"""Choosing where training runs: several machines (TF_CONFIG), several GPUs, one GPU (with mixed
precision) or the CPU."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from ..errors import ConfigError
from ..hostinfo import cpu_count, cpu_model

log = logging.getLogger("edgecls")


@dataclass
class Placement:
    strategy: object
    kind: str  # "multi-worker", "mirrored", "gpu", "cpu"
    replicas: int
    device: str
    mixed_precision: bool
    is_chief: bool


def _split_cpu(tf, count: int) -> list[str]:
    """Expose the CPU as `count` logical devices (a way to run the mirrored code path without GPUs)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        pass  # already configured in this process
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def select_placement(tf, mixed_precision: bool | None = None) -> Placement:
    """Pick the distribution strategy from the environment.

    - TF_CONFIG set: MultiWorkerMirroredStrategy across the machines it lists;
    - more than one GPU: MirroredStrategy over all of them;
    - one GPU: that GPU;
    - otherwise the CPU. EDGECLS_CPU_DEVICES=N splits the CPU into N logical devices and mirrors
      over them, which exercises the multi-replica path on a machine without GPUs.
    Mixed precision (float16 compute, float32 weights) is used on GPUs unless disabled.
    """
    tf_config = os.environ.get("TF_CONFIG")
    cpu_devices = int(os.environ.get("EDGECLS_CPU_DEVICES", "0") or 0)
    gpus = tf.config.list_physical_devices("GPU")
    if cpu_devices > 1:
        _split_cpu(tf, cpu_devices)
    gpu_names = []
    for gpu in gpus:
        try:
            gpu_names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
        except Exception:
            gpu_names.append(gpu.name)
    use_mixed = bool(gpus) if mixed_precision is None else (mixed_precision and bool(gpus))
    cpu_desc = f"CPU ({cpu_model()}, {cpu_count()} cores)"
    device = f"{len(gpus)} x GPU ({', '.join(sorted(set(gpu_names)))})" if gpus else cpu_desc
    if tf_config:
        try:
            cluster = json.loads(tf_config)
            task = cluster["task"]
        except (ValueError, KeyError, TypeError):
            raise ConfigError("TF_CONFIG is set but is not valid JSON with 'cluster' and 'task'; fix or unset it") from None
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        workers = len(cluster.get("cluster", {}).get("worker", [])) + len(cluster.get("cluster", {}).get("chief", []))
        has_chief = "chief" in cluster.get("cluster", {})
        is_chief = task.get("type") == "chief" or (not has_chief and task.get("type") == "worker" and int(task.get("index", 0)) == 0)
        return Placement(strategy, "multi-worker", strategy.num_replicas_in_sync,
                         f"{workers} workers x {device}", use_mixed, is_chief)
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        return Placement(strategy, "mirrored", strategy.num_replicas_in_sync, device, use_mixed, True)
    if gpus:
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0")
        return Placement(strategy, "gpu", 1, device, use_mixed, True)
    if cpu_devices > 1:
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_devices)])
        return Placement(strategy, "mirrored", strategy.num_replicas_in_sync,
                         f"{cpu_devices} logical devices on {cpu_desc}", False, True)
    return Placement(tf.distribute.get_strategy(), "cpu", 1, cpu_desc, False, True)
