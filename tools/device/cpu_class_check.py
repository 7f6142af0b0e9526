"""Run edgecls's runtime on an emulated x86 CPU class and compare it with this machine.

    .venv/bin/python tools/device/cpu_class_check.py [--bundle models/resnet8 ...] [--cpu Haswell] [--images 500]
    .venv/bin/python tools/device/cpu_class_check.py --pytest tests/test_models.py -q    # tests on the emulated class

int8 kernels differ between CPU classes: onnxruntime and XNNPACK pick them from the CPU's features
(AVX2, AVX-512, VNNI), and for some int8 schemes the results differ too (README "int8 on every
CPU"). This check runs the same bundle on the same real held-out images twice: here, and under
`qemu-x86_64-static -cpu Haswell` (an AVX2 CPU without AVX-512 or VNNI: Debian 12's QEMU 7.2
emulates AVX2 but neither AVX-512 nor VNNI, so the VNNI class is covered only when this machine
has it), with only the runtime's packages in use (tools/device/arm64_outputs.py imports edgecls.runtime).

It compares (tools/device/cpu_compare.py), per variant: top-1 identical on every image, float outputs
within 1e-5 (dynamic-range ones within 1e-2), TFLite int8 raw outputs within one quantization step,
ONNX int8 outputs within one step; and, per int8 variant on each class, top-1 agreement with its
fp32 file (with --min-agreement, at least 98%; for a variant without one, QAT say, its agreement
with its Keras model at export, which carries over when the answers are identical). It then runs
`edgecls bench` under emulation (on at most 300 of the images) and requires no variant to depart
from its validation at export (edgecls.bench.crosscheck). Writes <bundles>-cpu-classes-<cpu>.json to --out; exits 1 on any failure,
77 when emulation is impossible here (the reason on stdout with --check-only).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from cpu_compare import MIN_AGREEMENT, class_figures, compare, emulation_gate, judge  # noqa: E402

QEMU = "/usr/bin/qemu-x86_64-static"
# What the emulated CPU reports about itself. qemu-user shows programs the host's /proc/cpuinfo,
# so the check hands edgecls this description instead (EDGECLS_CPUINFO): the flags are those of
# QEMU's Haswell model that its TCG emulates (AVX2, FMA; no AVX-512, no VNNI).
CPU_MODELS = {
    "Haswell": ("QEMU TCG Haswell (emulated AVX2, no AVX-512, no VNNI)",
                "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt aes xsave avx f16c rdrand fma avx2 bmi1 bmi2 movbe"),
}
ORT_INT8_STEPS = 1  # the same x86 code path family: only the dot-product kernel differs
# The emulated bench is there for its warnings (edgecls.bench.crosscheck), not its milliseconds; a few
# hundred labelled images are enough for those, and emulation is slow.
BENCH_IMAGES = 300


def log(msg: str) -> None:
    print(f"cpu-class-check: {msg}", file=sys.stderr, flush=True)


def impossible() -> str | None:
    """Why x86 emulation cannot run here, or None. Installs qemu-user-static when it can."""
    if platform.system() != "Linux":
        return "needs Linux (qemu-user)"
    if platform.machine() != "x86_64":
        return f"emulates x86 CPU classes with the x86-64 Python of an x86-64 host; this is {platform.machine()}"
    if not os.path.exists(QEMU) and shutil.which("apt-get") and os.geteuid() == 0:
        log("installing qemu-user-static from Debian's archive")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        proc = subprocess.run(["apt-get", "install", "-y", "-q", "qemu-user-static"], capture_output=True, env=env)
        if proc.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
            subprocess.run(["apt-get", "install", "-y", "-q", "qemu-user-static"], capture_output=True, env=env)
    if not os.path.exists(QEMU):
        return f"{QEMU} not found (Debian/Ubuntu: apt-get install qemu-user-static)"
    probe = subprocess.run([QEMU, "-cpu", "Haswell", sys.executable, "-c", "import onnxruntime, numpy"],
                           capture_output=True, text=True, timeout=600)
    if probe.returncode != 0:
        return f"this Python does not start under {QEMU}: {(probe.stderr.strip().splitlines() or ['?'])[-1]}"
    return None


def emulated_env(cpu: str, cpuinfo: Path) -> dict:
    name, flags = CPU_MODELS[cpu]
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: {name}\nflags\t\t: {flags}\n\n")
    return {**os.environ, "EDGECLS_EMULATED": "1", "EDGECLS_CPUINFO": str(cpuinfo), "PYTHONWARNINGS": "ignore",
            "EDGECLS_EMULATOR": f"{QEMU} -cpu {cpu}"}


def emulated_python(folder: Path, cpu: str) -> Path:
    """A view of this virtualenv whose `python` runs under the emulator: its sys.executable is the
    wrapper, so every child process a test or edgecls starts with sys.executable is emulated too
    (qemu-user would run a plainly started child natively)."""
    cfg = Path(sys.prefix) / "pyvenv.cfg"
    if sys.prefix == sys.base_prefix or not cfg.is_file():
        raise SystemExit("cpu-class-check: --pytest needs this Python to be a virtualenv's (make setup makes .venv)")
    (folder / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(cfg, folder / "pyvenv.cfg")
    for lib in ("lib", "lib64"):
        if (Path(sys.prefix) / lib).exists() and not (folder / lib).exists():
            (folder / lib).symlink_to(Path(sys.prefix) / lib)
    wrapper = folder / "bin" / "python"
    real = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    wrapper.write_text(f'#!/bin/sh\nexec {QEMU} -cpu {cpu} -0 "{wrapper}" "{real}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def run_pytest(cpu: str, pytest_args: list[str]) -> int:
    """The test suite (or part of it) with every Python process on the emulated CPU class."""
    with tempfile.TemporaryDirectory() as tmp:
        env = emulated_env(cpu, Path(tmp) / "cpuinfo")
        env.pop("EDGECLS_EMULATOR")  # the wrapper already emulates every child
        python = emulated_python(Path(tmp) / "venv", cpu)
        log(f"pytest under qemu -cpu {cpu} ({CPU_MODELS[cpu][0]}); TensorFlow is slow there: choose tests")
        started = time.time()
        code = subprocess.run([str(python), "-m", "pytest", *pytest_args], env=env, cwd=ROOT).returncode
        log(f"pytest exit status {code} in {time.time() - started:.0f} s under qemu -cpu {cpu}")
        return code


def run(cmd, env=None, emulate: str | None = None, timeout: int = 3600) -> subprocess.CompletedProcess:
    full = ([QEMU, "-cpu", emulate] if emulate else []) + [str(c) for c in cmd]
    proc = subprocess.run(full, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        err = [line for line in proc.stderr.splitlines() if "TCG doesn't support" not in line][-15:]
        raise SystemExit(f"cpu-class-check: failed{' under emulation' if emulate else ''}: {' '.join(map(str, cmd))}\n" + "\n".join(err))
    return proc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", action="append", help="bundle(s) to check (default: every models/*/ bundle)")
    parser.add_argument("--cpu", default="Haswell", choices=sorted(CPU_MODELS), help="QEMU CPU model to emulate")
    parser.add_argument("--images", type=int, default=500, help="held-out CIFAR-10 sample images to compare on")
    parser.add_argument("--variants", nargs="+", help="only these variants (default: all of each bundle)")
    parser.add_argument("--bench-variants", nargs="+", metavar="VARIANT",
                        help="variants the emulated bench runs (default: all checked; every variant's outputs are "
                             "compared either way): each is an emulated process of its own")
    parser.add_argument("--min-agreement", type=float, nargs="?", const=MIN_AGREEMENT, metavar="FRACTION",
                        help="fail an int8 variant whose top-1 agreement with its fp32 is below this on either machine "
                             "(alone: the project's bar, 0.98; judge it on --images 1000, not on a handful)")
    parser.add_argument("--out", default="docs/benchmarks/cpu-classes", help="where the comparison goes")
    parser.add_argument("--check-only", action="store_true", help="exit 0 if emulation is possible here, 77 if not")
    parser.add_argument("--pytest", nargs=argparse.REMAINDER, metavar="ARGS",
                        help="instead, run pytest with these arguments on the emulated CPU class (last option)")
    args = parser.parse_args(argv)

    gate = emulation_gate(impossible(), args.check_only, "x86 CPU classes")
    if gate is not None:
        return gate
    if args.pytest is not None:
        return run_pytest(args.cpu, args.pytest)

    from edgecls.data import load_dataset, sample_indices
    from edgecls.hostinfo import host_info

    bundles = [Path(b) for b in (args.bundle or sorted(str(p.parent) for p in (ROOT / "models").glob("*/manifest.json")))]
    if not bundles:
        raise SystemExit("cpu-class-check: no bundle given and none in models/")
    started = time.time()
    test = load_dataset("cifar10-sample").test
    keep = sample_indices(len(test), args.images, seed=1)
    here = host_info()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"host": {k: here[k] for k in ("cpu", "arch", "cpu_flags", "int8_class")},
               "emulated": {"qemu_cpu": args.cpu, "cpu": CPU_MODELS[args.cpu][0], "int8_class": "x86 AVX2 without VNNI"},
               "classes_covered": sorted({here["int8_class"], "x86 AVX2 without VNNI"}),
               "images": int(len(keep)), "data": "cifar10-sample test (real held-out CIFAR-10 images)", "bundles": {}}
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = emulated_env(args.cpu, tmp / "cpuinfo")
        images = tmp / "images.npy"
        np.save(images, test.images[keep])
        labels = test.labels[keep]
        outputs = str(Path(__file__).resolve().parent / "arm64_outputs.py")
        for bundle in bundles:
            name = bundle.resolve().name
            manifest = json.loads((bundle / "manifest.json").read_text())
            if args.variants:
                work = tmp / "bundles" / name
                shutil.copytree(bundle, work, ignore=shutil.ignore_patterns("model.keras", "report*.json", "train.json"))
                manifest["artifacts"] = [a for a in manifest["artifacts"] if a["name"] in args.variants]
                (work / "manifest.json").write_text(json.dumps(manifest))
                bundle = work
            log(f"{name}: outputs here and under qemu -cpu {args.cpu}")
            run([sys.executable, outputs, bundle, images, tmp / f"{name}-host.npz"])
            run([sys.executable, outputs, bundle, images, tmp / f"{name}-emulated.npz"], env=env, emulate=args.cpu)
            host_out, emu_out = np.load(tmp / f"{name}-host.npz"), np.load(tmp / f"{name}-emulated.npz")
            precisions = {a["name"]: a["precision"] for a in manifest["artifacts"]}
            rows = compare(host_out, emu_out, precisions, ort_int8_steps=ORT_INT8_STEPS)
            figures = {"host": class_figures(host_out, labels, manifest), "emulated": class_figures(emu_out, labels, manifest)}
            judge(rows, figures, args.min_agreement)
            log(f"{name}: edgecls bench under qemu -cpu {args.cpu}")
            report_path = tmp / f"{name}-bench.json"
            run([sys.executable, "-m", "edgecls.cli", "--quiet", "bench", bundle, "--data", "cifar10-sample",
                 "--max-images", str(min(args.images, BENCH_IMAGES)), "--runs", "3", "--warmup", "1", "--repeats", "1",
                 *(["--variants", *args.bench_variants] if args.bench_variants else []), "--out", report_path],
                env=env, emulate=args.cpu)
            report = json.loads(report_path.read_text())
            bench = {v["name"]: {"status": v["status"], "warning": v.get("warning"), "accuracy": v.get("accuracy")}
                     for v in report["variants"]}
            summary["bundles"][name] = {"variants": rows, "bench_under_emulation": bench,
                                        "bench_host": report["host"].get("int8_class")}
            for variant, row in rows.items():
                benched = variant in (args.bench_variants or rows)
                if benched and (bench.get(variant, {}).get("status") != "ok" or bench.get(variant, {}).get("warning")):
                    row["ok"] = False
                    row["bench_problem"] = bench.get(variant)
                detail = (f"max output step diff {row['max_raw_step_diff']}" if row.get("max_raw_step_diff") is not None
                          else f"max diff {max(row.get('max_raw_diff', 0.0), row['max_prob_diff']):.1e}")
                detail += f"  {row['agreement']}" if row.get("agreement") else ""
                bad = f"  bench under emulation: {row['bench_problem']}" if "bench_problem" in row else ""
                print(f"{name:16s} {variant:24s} top-1 identical {row['top1_identical']}/{row['images']}  {detail}  "
                      f"{'ok' if row['ok'] else 'MISMATCH'}{bad}")
                failed |= not row["ok"]
    summary["wall_time_s"] = round(time.time() - started)
    summary["ok"] = not failed
    from edgecls._io import atomic_write_json

    final = out / f"{'+'.join(summary['bundles'])}-cpu-classes-{args.cpu}.json"
    atomic_write_json(final, summary)
    print(f"classes covered: {', '.join(summary['classes_covered'])}"
          + ("" if "x86 with VNNI" in summary["classes_covered"] else " (not x86 with VNNI: this machine lacks it)"))
    print(f"{'PASS' if not failed else 'FAIL'}: wrote {final} ({summary['wall_time_s']} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
