"""Run edgecls's runtime on an emulated Raspberry Pi and compare it with this machine.

    sudo .venv/bin/python tools/device/arm64_check.py [--bundle models/resnet8 ...] [--cpu cortex-a72] [--images 200]

What it does (needs root for debootstrap and chroot, and Linux binfmt_misc for qemu-user):
1. once, builds and caches a Debian 12 (bookworm) arm64 userland with Python 3.11 from Debian's
   archive (debootstrap; qemu-user-static runs its arm64 programs) in ~/.cache/edgecls/arm64-bookworm
   ($EDGECLS_ARM64_ROOT), and in it a virtualenv with only `edgecls[runtime]` installed from
   aarch64 wheels (pip, the host's CA certificates trusted), again whenever pyproject.toml or
   constraints.txt change; later runs reuse both and refresh edgecls's own files from this checkout;
2. emulates a Pi CPU (QEMU_CPU=cortex-a72, a Pi 4; cortex-a76 for a Pi 5): QEMU's default CPU has
   SVE, which a Pi lacks and which changes int8 results; the userland sees a Pi-like /proc/cpuinfo
   and /sys CPU topology (plain files), never the host's /proc or /sys (LiteRT and onnxruntime
   crash on those under emulation; with no /sys at all XNNPACK stays off and LiteRT runs other
   int8 kernels than a Pi does, whose outputs differ from XNNPACK's by several steps);
3. runs `edgecls predict` and `edgecls bench` (on at most 300 images) in the userland on each
   bundle, and tools/device/arm64_outputs.py both there and here on the same real held-out images;
4. compares (tools/device/cpu_compare.py): float outputs within 1e-5 (dynamic-range ones within 1e-2),
   TFLite int8 raw outputs within one quantization step, ONNX int8 outputs within 4 steps
   (onnxruntime's int8 kernels differ across the two architectures), top-1 identical on every
   image, and with --min-agreement every int8 variant's top-1 agreement with its fp32 model at
   least 98% on both machines. Writes the comparison (<bundle>-comparison-<cpu>.json)
   and each emulated bench report (labelled emulated: its latency is not a Pi's) to --out; exits 1 on any mismatch.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_compare import MIN_AGREEMENT, class_figures, compare, emulation_gate, judge  # noqa: E402

# The emulated bench shows the runtime runs there and raises no warning (edgecls.bench.crosscheck); its
# milliseconds are QEMU's, and a few hundred labelled images are enough for the rest.
BENCH_IMAGES = 300
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
VENV = "/opt/edgecls-venv"
BINFMT = "/proc/sys/fs/binfmt_misc"
# The ELF header of an aarch64 executable, as Debian's qemu-user-static registers it; F: the
# interpreter is opened now, so it also runs inside a chroot that does not contain it.
QEMU_AARCH64 = (r":qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:"
                r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:"
                r"/usr/bin/qemu-aarch64-static:F")
CPUINFO = {
    # What a Raspberry Pi 4 (BCM2711, Cortex-A72) and a Pi 5 (BCM2712, Cortex-A76) show, four cores.
    "cortex-a72": ("0xd08", "3", "fp asimd evtstrm crc32 cpuid", "Raspberry Pi 4 Model B Rev 1.4"),
    "cortex-a76": ("0xd0b", "1", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
                   "Raspberry Pi 5 Model B Rev 1.0"),
}


def log(msg: str) -> None:
    print(f"arm64-check: {msg}", file=sys.stderr, flush=True)


def userland_dir() -> Path:
    return Path(os.environ.get("EDGECLS_ARM64_ROOT") or Path.home() / ".cache" / "edgecls" / f"arm64-{SUITE}")


def impossible() -> str | None:
    """Why emulation cannot run here, or None. Installs qemu-user-static and debootstrap from
    Debian's archive and registers qemu for aarch64 when it can."""
    if platform.system() != "Linux":
        return "needs Linux (debootstrap, chroot, binfmt_misc)"
    if platform.machine() == "aarch64":
        return "this machine is already aarch64: run the tests natively"
    if os.geteuid() != 0:
        return "needs root (debootstrap and chroot)"
    tools = (("debootstrap", "/usr/sbin/debootstrap"), ("qemu-user-static", "/usr/bin/qemu-aarch64-static"))
    missing = [tool for tool, path in tools if not os.path.exists(path)]
    if missing and shutil.which("apt-get"):
        log(f"installing {' '.join(missing)} from Debian's archive")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        proc = subprocess.run(["apt-get", "install", "-y", "-q", *missing], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
            subprocess.run(["apt-get", "install", "-y", "-q", *missing], capture_output=True, env=env)
    missing = [tool for tool, path in tools if not os.path.exists(path)]
    if missing:
        return f"{', '.join(missing)} not installed and apt-get could not install it"
    if not os.path.exists(f"{BINFMT}/register"):
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", BINFMT], capture_output=True)
    if not os.path.exists(f"{BINFMT}/register"):
        return "binfmt_misc is not available (cannot mount it in this container)"
    entry = Path(BINFMT) / "qemu-aarch64"
    if not entry.exists():
        try:
            Path(BINFMT, "register").write_text(QEMU_AARCH64)  # the kernel decodes the \x escapes itself
        except OSError as exc:
            return f"cannot register qemu-aarch64 with binfmt_misc: {exc}"
    text = entry.read_text()
    if "enabled" not in text or "F" not in text.split("flags:")[-1].splitlines()[0]:
        return f"qemu-aarch64 is registered without the F flag or disabled ({entry}); re-register it with F"
    return None


def chroot(root: Path, cpu: str, *cmd: str, check: bool = True, capture: bool = True, timeout: int = 3600):
    env = {"PATH": f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "QEMU_CPU": cpu,
           "EDGECLS_EMULATED": "1", "PIP_CERT": "/etc/ssl/certs/host-ca-certificates.crt",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_DEFAULT_TIMEOUT": "180", "PYTHONDONTWRITEBYTECODE": "1"}
    # The host's chroot, found on the host's PATH (env holds the userland's).
    chroot_bin = shutil.which("chroot") or "/usr/sbin/chroot"
    proc = subprocess.run([chroot_bin, str(root), *cmd], env=env, capture_output=capture, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        err = (proc.stderr or "").strip().splitlines()[-15:] if capture else []
        raise SystemExit(f"arm64-check: failed in the userland: {' '.join(cmd)}\n" + "\n".join(err))
    return proc


def build_userland(root: Path) -> None:
    if (root / ".edgecls-userland").exists():
        return
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    log(f"building the Debian {SUITE} arm64 userland in {root} (once; several minutes under emulation)")
    start = time.time()
    proc = subprocess.run(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={PACKAGES}", SUITE,
                           str(partial), MIRROR], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit("arm64-check: debootstrap failed: " + "\n".join(proc.stdout.strip().splitlines()[-10:]))
    (partial / ".edgecls-userland").write_text(json.dumps({"suite": SUITE, "mirror": MIRROR, "packages": PACKAGES,
                                                           "built_s": round(time.time() - start)}))
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    log(f"userland built in {time.time() - start:.0f} s")


def prepare_userland(root: Path, cpu: str) -> None:
    """The Pi-like view of the machine, and what pip needs to reach the package registry."""
    for name in ("proc", "sys"):
        path = root / name
        if path.is_mount():
            raise SystemExit(f"arm64-check: {path} is mounted; unmount it (the userland must not see the host's)")
    part, rev, features, model = CPUINFO[cpu]
    cores = "".join(f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
                    f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: {rev}\n\n" for i in range(4))
    (root / "proc" / "cpuinfo").write_text(cores + f"Hardware\t: BCM2835\nRevision\t: c03114\nModel\t\t: {model}\n")
    # A Pi-like CPU topology in /sys (plain files). Without one, cpuinfo (used by XNNPACK and
    # onnxruntime) cannot list the processors, XNNPACK stays off, and LiteRT runs its other
    # kernels: not what a Pi runs.
    shutil.rmtree(root / "sys", ignore_errors=True)
    cpu = root / "sys" / "devices" / "system" / "cpu"
    cpu.mkdir(parents=True)
    for name in ("possible", "present", "online"):
        (cpu / name).write_text("0-3\n")
    for i in range(4):
        for rel, value in (("topology/physical_package_id", 0), ("topology/core_id", i), ("topology/core_siblings_list", "0-3"),
                           ("topology/thread_siblings_list", i), ("cpufreq/cpuinfo_max_freq", 1800000),
                           ("cpufreq/cpuinfo_min_freq", 600000)):
            (cpu / f"cpu{i}" / rel).parent.mkdir(parents=True, exist_ok=True)
            (cpu / f"cpu{i}" / rel).write_text(f"{value}\n")
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs/host-ca-certificates.crt")
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")


def install_edgecls(root: Path, cpu: str) -> dict:
    """A venv with edgecls[runtime] only, installed by pip from this checkout whenever pyproject.toml or
    constraints.txt changed; on other runs edgecls's own files are refreshed from this checkout."""
    src = root / "opt" / "edgecls-src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "constraints.txt", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "edgecls", src / "edgecls", ignore=shutil.ignore_patterns("__pycache__"))
    stamp = root / "opt" / ".edgecls-venv-deps"
    deps_key = (ROOT / "pyproject.toml").read_text() + (ROOT / "constraints.txt").read_text()
    if not stamp.exists() or stamp.read_text() != deps_key:
        log("installing edgecls[runtime] in the userland from aarch64 wheels (pip under emulation: minutes)")
        shutil.rmtree(root / VENV.lstrip("/"), ignore_errors=True)
        chroot(root, cpu, "/usr/bin/python3", "-m", "venv", VENV)
        chroot(root, cpu, f"{VENV}/bin/pip", "install", "-q", "--only-binary=numpy,pillow,ai-edge-litert,onnxruntime",
               "-c", "/opt/edgecls-src/constraints.txt", "/opt/edgecls-src[runtime]", "wheel", "setuptools>=77")
        stamp.write_text(deps_key)
    else:
        # The dependencies are the ones the stamp recorded a real `pip install edgecls[runtime]` for;
        # only edgecls's own code can differ, and it is pure Python: its files replace the installed
        # package's (pip rebuilding it under emulation took minutes of every run).
        site = chroot(root, cpu, f"{VENV}/bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        dest = root / site.stdout.strip().lstrip("/") / "edgecls"
        if not dest.is_dir():
            raise SystemExit(f"arm64-check: no installed edgecls at {dest}; delete {stamp} to reinstall")
        shutil.rmtree(dest)
        shutil.copytree(ROOT / "edgecls", dest, ignore=shutil.ignore_patterns("__pycache__"))
    frozen = chroot(root, cpu, f"{VENV}/bin/pip", "freeze").stdout.splitlines()
    heavy = [p for p in frozen if p.lower().startswith(("tensorflow", "tf-keras", "tf_keras", "keras", "tf2onnx"))]
    if heavy:
        raise SystemExit(f"arm64-check: the runtime-only install pulled in {heavy}")
    python = chroot(root, cpu, f"{VENV}/bin/python", "-c", "import platform; print(platform.python_version(), platform.machine())")
    return {"packages": frozen, "python": python.stdout.strip()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", action="append", help="bundle(s) to check (default: every models/*/ bundle)")
    parser.add_argument("--cpu", default="cortex-a72", choices=sorted(CPUINFO), help="Pi 4: cortex-a72; Pi 5: cortex-a76")
    parser.add_argument("--images", type=int, default=200, help="held-out CIFAR-10 sample images to compare on")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per variant in the emulated bench")
    parser.add_argument("--bench-variants", nargs="+", metavar="VARIANT",
                        help="variants the emulated bench runs (default: all; every variant's outputs are compared "
                             "either way). Each is an emulated process of its own: the suite benches one per format "
                             "and input kind")
    parser.add_argument("--min-agreement", type=float, nargs="?", const=MIN_AGREEMENT, metavar="FRACTION",
                        help="fail an int8 variant whose top-1 agreement with its fp32 is below this on either machine "
                             "(alone: the project's bar, 0.98; judge it on --images 1000, not on a handful)")
    parser.add_argument("--out", default="docs/benchmarks/arm64", help="where the comparison and reports go")
    parser.add_argument("--check-only", action="store_true", help="exit 0 if emulation is possible here, 77 if not")
    args = parser.parse_args(argv)

    gate = emulation_gate(impossible(), args.check_only, "arm64")
    if gate is not None:
        return gate
    bundles = [Path(b) for b in (args.bundle or sorted(str(p.parent) for p in (ROOT / "models").glob("*/manifest.json")))]
    if not bundles:
        raise SystemExit("arm64-check: no bundle given and none in models/")
    root = userland_dir()
    started = time.time()
    build_userland(root)
    prepare_userland(root, args.cpu)
    installed = install_edgecls(root, args.cpu)
    log(f"userland ready: Python {installed['python']}, QEMU_CPU={args.cpu}")

    from edgecls.data import load_dataset, sample_indices

    test = load_dataset("cifar10-sample").test
    keep = sample_indices(len(test), args.images, seed=1)
    work = root / "opt" / "edgecls-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    np.save(work / "images.npy", test.images[keep])
    shutil.copy(Path(__file__).resolve().parent / "arm64_outputs.py", work / "arm64_outputs.py")
    from PIL import Image

    image_files = []
    for i in range(3):  # real image files for `edgecls predict`
        Image.fromarray(test.images[keep[i]]).save(work / f"image{i}.png")
        image_files.append(f"/opt/edgecls-work/image{i}.png")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"cpu": args.cpu, "userland": f"Debian {SUITE} arm64 (qemu-user-static, QEMU_CPU={args.cpu})",
               "python": installed["python"], "runtime_packages": installed["packages"],
               "images": int(len(keep)), "data": "cifar10-sample test (real held-out CIFAR-10 images)", "bundles": {}}
    failed = False
    for bundle in bundles:
        name = bundle.resolve().name
        dest = work / "bundles" / name
        shutil.copytree(bundle, dest, ignore=shutil.ignore_patterns("model.keras", "report*.json", "train.json"))
        inner = f"/opt/edgecls-work/bundles/{name}"
        log(f"{name}: predict, outputs and bench in the userland")
        predict = chroot(root, args.cpu, f"{VENV}/bin/edgecls", "predict", inner, *image_files, "--json")
        chroot(root, args.cpu, f"{VENV}/bin/python", "/opt/edgecls-work/arm64_outputs.py", inner,
               "/opt/edgecls-work/images.npy", f"/opt/edgecls-work/{name}-arm64.npz")
        report_inner = f"/opt/edgecls-work/{name}-bench.json"
        chroot(root, args.cpu, f"{VENV}/bin/edgecls", "--quiet", "bench", inner, "--data", "cifar10-sample",
               "--max-images", str(min(args.images, BENCH_IMAGES)), "--runs", str(args.runs), "--warmup", "3", "--repeats", "1",
               *(["--variants", *args.bench_variants] if args.bench_variants else []), "--out", report_inner)
        host_npz = work / f"{name}-x86.npz"
        subprocess.run([sys.executable, str(Path(__file__).resolve().parent / "arm64_outputs.py"), str(bundle), str(work / "images.npy"),
                        str(host_npz)], check=True, capture_output=True)
        manifest = json.loads((bundle / "manifest.json").read_text())
        host_out, arm_out = np.load(host_npz), np.load(work / f"{name}-arm64.npz")
        rows = compare(host_out, arm_out, {a["name"]: a["precision"] for a in manifest["artifacts"]})
        figures = {"host": class_figures(host_out, test.labels[keep], manifest),
                   "arm64": class_figures(arm_out, test.labels[keep], manifest)}
        judge(rows, figures, args.min_agreement)
        report = json.loads((work / f"{name}-bench.json").read_text())
        assert report["settings"]["emulated"], "the emulated bench must be labelled emulated"
        shutil.copy(work / f"{name}-bench.json", out / f"{name}-bench-emulated-{args.cpu}.json")
        summary["bundles"][name] = {"variants": rows, "predict": json.loads(predict.stdout[: predict.stdout.rindex("}") + 1]),
                                    "bench_status": {v["name"]: v["status"] for v in report["variants"]},
                                    "bench_warnings": {v["name"]: v["warning"] for v in report["variants"] if v.get("warning")}}
        for variant, row in rows.items():
            mark = "ok" if row["ok"] else "MISMATCH"
            detail = (f"max output step diff {row['max_raw_step_diff']} (equal {100 * row['raw_equal_fraction']:.1f}%)"
                      if "max_raw_step_diff" in row else f"max diff {max(row['max_raw_diff'], row['max_prob_diff']):.2e}")
            detail += f"  {row['agreement']}" if row.get("agreement") else ""
            print(f"{name:16s} {variant:24s} top-1 identical {row['top1_identical']}/{row['images']}  {detail}  {mark}")
            failed |= not row["ok"]
        bad = [v for v, s in summary["bundles"][name]["bench_status"].items() if s != "ok"]
        if bad:
            print(f"{name}: emulated bench failed for {bad}")
            failed = True
        for variant, warning in summary["bundles"][name]["bench_warnings"].items():
            print(f"{name}: the emulated bench warns about {variant}: {warning}")
            failed = True
    summary["wall_time_s"] = round(time.time() - started)
    summary["ok"] = not failed
    from edgecls._io import atomic_write_json

    # named after the bundles, so checks of different bundles into one folder do not overwrite each other
    final = out / f"{'+'.join(summary['bundles'])}-comparison-{args.cpu}.json"
    atomic_write_json(final, summary)
    print(f"{'PASS' if not failed else 'FAIL'}: wrote {final} ({summary['wall_time_s']} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
