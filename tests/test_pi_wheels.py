"""The runtime extra installs on a Raspberry Pi (64-bit Pi OS Bookworm: aarch64, glibc 2.36): every
runtime dependency, at the version pinned in constraints.txt, must have an aarch64 wheel for Python
3.11 (Bookworm's) and 3.13, and nothing may pull in TensorFlow. Asks the package registry without
installing anything; skips with the reason when the registry cannot be reached."""
import json
import re
import subprocess
import sys

import pytest

from .conftest import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

# Bookworm has glibc 2.36: wheels tagged manylinux_2_17 ... manylinux_2_36 install there.
PLATFORMS = ["manylinux2014_aarch64"] + [f"manylinux_2_{minor}_aarch64" for minor in range(17, 37)]
UNREACHABLE = re.compile(r"(?i)connection|network is unreachable|temporary failure in name resolution|could not fetch url|timed out")


def _runtime_requirements():
    if tomllib is None:
        pytest.skip("reading pyproject.toml needs Python 3.11+ (tomllib)")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["optional-dependencies"]["runtime"]


def _pins():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


@pytest.mark.parametrize("python", ["3.11", "3.13"])
def test_runtime_dependencies_have_aarch64_wheels(python, tmp_path):
    requirements = _runtime_requirements()
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", "--target", str(tmp_path / "target"),
           "--report", str(report), "-c", str(ROOT / "constraints.txt"), *requirements]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        if UNREACHABLE.search(proc.stderr) and "No matching distribution" not in proc.stderr:
            pytest.skip(f"package registry unreachable: {proc.stderr.strip().splitlines()[-1][:200]}")
        pytest.fail(f"no aarch64 wheels for the runtime extra on Python {python}:\n{proc.stderr[-2000:]}")
    resolved = {i["metadata"]["name"].lower().replace("_", "-"): i for i in json.loads(report.read_text())["install"]}
    pins = _pins()
    for requirement in requirements:
        name = re.split(r"[<>=!~\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in resolved, (name, sorted(resolved))
        item = resolved[name]
        wheel = item["download_info"]["url"].rsplit("/", 1)[-1]
        assert wheel.endswith(".whl") and ("aarch64" in wheel or "-none-any" in wheel), wheel
        if name in pins:
            assert item["metadata"]["version"] == pins[name], (name, item["metadata"]["version"], pins[name])
    assert not [n for n in resolved if n.startswith(("tensorflow", "tf-keras", "keras"))]
