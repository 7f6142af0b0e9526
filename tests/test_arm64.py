"""The runtime on an emulated Raspberry Pi: a Debian 12 arm64 userland under qemu-user with only
edgecls[runtime] installed runs `predict` and `bench` on the shipped resnet8 bundle, and its outputs match
this machine's on real held-out images (tools/device/arm64_check.py does the work; the first run builds and
caches the userland, later runs reuse it)."""
import json
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.arm64]

TOOL = ROOT / "tools" / "device" / "arm64_check.py"


def test_emulated_pi_runs_the_shipped_bundle_like_this_machine(tmp_path):
    """Every variant of the shipped resnet8 bundle (emulation is slow: one bundle, 50 images, a bench
    of 2 timed calls of four variants; BENCHMARKS.md section 4 runs all three on 1,000 images)."""
    bundles = [ROOT / "models" / "resnet8"]
    check = subprocess.run([sys.executable, str(TOOL), "--check-only"], capture_output=True, text=True, timeout=900)
    if check.returncode == 77:
        pytest.skip(f"arm64 emulation impossible here: {check.stdout.strip()}")
    assert check.returncode == 0, check.stderr[-2000:]
    # The emulated bench: one variant per backend and input kind (each is an emulated process);
    # every variant's outputs are compared.
    benched = ["tflite_fp32", "tflite_int8", "tflite_int8_pixels", "onnx_int8"]
    args = [sys.executable, str(TOOL), "--images", "50", "--runs", "2", "--out", str(tmp_path),
            "--bench-variants", *benched]
    for bundle in bundles:
        args += ["--bundle", str(bundle)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=5400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "resnet8-comparison-cortex-a72.json").read_text())
    assert summary["ok"] and summary["python"].endswith("aarch64") and summary["python"].startswith("3.11")
    assert not [p for p in summary["runtime_packages"] if p.lower().startswith(("tensorflow", "keras", "tf-keras"))]
    for name, result in summary["bundles"].items():
        manifest = json.loads((ROOT / "models" / name / "manifest.json").read_text())
        assert set(result["variants"]) == {a["name"] for a in manifest["artifacts"]}
        for variant, row in result["variants"].items():
            assert row["top1_identical"] == row["images"] == 50, (name, variant)
        assert set(result["bench_status"]) == set(benched) and set(result["bench_status"].values()) == {"ok"}
        report = json.loads((tmp_path / f"{name}-bench-emulated-cortex-a72.json").read_text())
        assert report["settings"]["emulated"] is True and report["host"]["arch"] == "aarch64"
