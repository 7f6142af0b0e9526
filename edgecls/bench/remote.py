"""Remote bench over SSH: copy a bundle to a device, run the runtime bench there, bring the report back.

    edgecls bench models/resnet8 --host pi@raspberrypi.local --out pi.json

It goes through the system's OpenSSH client, so `~/.ssh/config`, keys, the agent and known_hosts
apply exactly as they do for `ssh HOST`. It never asks for or passes a password (BatchMode) and never
turns host key checking off: an unknown or changed host key is an error to resolve with `ssh HOST`.

On the device, under REMOTE_DIR (relative to the remote home; default .cache/edgecls/remote):
  bundles/<bundle name>/   the bundle; a file whose sha256 is already there is not sent again
  data/<sha256>/           the labelled images (uint8 .npy), prepared here so both machines measure
                           the very same images
The device needs Python with `edgecls[runtime]` installed (see tools/device/pi_setup.sh). Only the
runtime runs there: no TensorFlow.
"""
from __future__ import annotations

import hashlib
import io
import json
import secrets
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DEFAULT_REMOTE_DIR, option
from ..errors import ConfigError, DependencyError, EdgeclsError



class RemoteError(EdgeclsError):
    """The device could not be reached or could not run the bench."""


@dataclass(frozen=True)
class RemoteConfig:
    host: str = option(None, "run on this device over SSH ([user@]host, as for 'ssh'): copies the bundle and the "
                             "images, benches there, brings the report back")
    python: str = option("python3", "Python with edgecls[runtime] on the device", flag="--remote-python")
    remote_dir: str = option(DEFAULT_REMOTE_DIR, "working folder on the device, relative to its home")
    ssh_config: str | None = option(None, "an ssh_config file to use instead of ~/.ssh/config")
    connect_timeout: int = 15

    def __post_init__(self):
        if not self.host or self.host.startswith("-") or any(c.isspace() for c in self.host):
            raise ConfigError(f"--host must be [user@]hostname, got {self.host!r}")
        if not self.remote_dir or self.remote_dir.startswith("-"):
            raise ConfigError(f"remote directory must be a path, got {self.remote_dir!r}")


# Receives files on the device: a JSON header line [[relative path, size, sha256], ...], then the
# bytes of each file in that order. Each file is written beside its target, checked against its
# sha256 and renamed into place, so an interrupted transfer never leaves a damaged file, and two
# transfers of the same file into one folder (two device names for one machine) each rename a whole file.
_RECEIVE = r"""
import hashlib, json, os, sys
base = os.path.realpath(sys.argv[1])
inp = sys.stdin.buffer
files = json.loads(inp.readline())
def inside(p):
    return os.path.realpath(p).startswith(base + os.sep)
for rel, size, digest in files:
    # The same rule as edgecls.bundle.confined: a plain relative path that stays in the folder.
    parts = rel.replace("\\", "/").split("/") if isinstance(rel, str) else [".."]
    if not rel or os.path.isabs(rel) or ".." in parts or "\x00" in rel:
        sys.exit("refused: %r is not a file name inside the bundle" % (rel,))
    path = os.path.join(base, rel)
    if not inside(path):
        sys.exit("refused: %r leads outside the bundle (symbolic link)" % (rel,))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = "%s.part-%d" % (path, os.getpid())  # per receiver: two uploads into one folder never share it
    if os.path.lexists(tmp):
        os.unlink(tmp)
    h = hashlib.sha256()
    left = size
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "wb") as fh:
        while left:
            chunk = inp.read(min(left, 1 << 20))
            if not chunk:
                sys.exit("transfer ended early at " + rel)
            h.update(chunk)
            fh.write(chunk)
            left -= len(chunk)
    if h.hexdigest() != digest:
        os.unlink(tmp)
        sys.exit("sha256 mismatch after transfer: " + rel)
    os.replace(tmp, path)
print(json.dumps({"received": len(files)}))
"""

# Lists sha256 of the files under a directory on the device (relative paths), and what runs there.
_PROBE = r"""
import hashlib, json, os, platform, sys
out = {"python": platform.python_version(), "machine": platform.machine(), "files": {}}
try:
    import edgecls, edgecls.runtime
    out["edgecls"] = edgecls.__version__
except Exception as exc:
    out["edgecls_error"] = "%s: %s" % (exc.__class__.__name__, str(exc).splitlines()[0] if str(exc) else "")
base = sys.argv[1]
for root, _, names in os.walk(base):
    for name in names:
        path = os.path.join(root, name)
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out["files"][os.path.relpath(path, base)] = h.hexdigest()
print(json.dumps(out))
"""


class SSH:
    """Runs commands on HOST through the system's `ssh`."""

    def __init__(self, config: RemoteConfig):
        if shutil.which("ssh") is None:
            raise DependencyError("no 'ssh' command on this machine; install the OpenSSH client (apt-get install openssh-client)")
        self.config = config
        self.base = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={config.connect_timeout}"]
        if config.ssh_config:
            if not Path(config.ssh_config).is_file():
                raise ConfigError(f"ssh config file not found: {config.ssh_config}")
            self.base += ["-F", str(config.ssh_config)]

    def command(self, args: list[str]) -> list[str]:
        return [*self.base, self.config.host, " ".join(shlex.quote(a) for a in args)]

    def run(self, args: list[str], input: bytes | None = None, what: str = "command") -> bytes:
        proc = subprocess.run(self.command(args), input=input, capture_output=True)
        if proc.returncode != 0:
            raise self.error(proc.returncode, proc.stderr.decode(errors="replace"), what)
        return proc.stdout

    def error(self, code: int, stderr: str, what: str) -> RemoteError:
        host = self.config.host
        lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("Warning: Permanently added")]
        text = "\n".join(lines)
        if code == 255:
            if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Host key verification failed" in text:
                return RemoteError(f"host key verification failed for {host}: its key is unknown or does not match "
                                   "known_hosts; check the device, then connect once with 'ssh " + host + "' to accept it")
            if "Permission denied" in text:
                return RemoteError(f"{host} refused the login (Permission denied): set up key authentication "
                                   "(ssh-copy-id " + host + "); edgecls never sends passwords")
            reason = next((line for line in reversed(lines) if "ssh:" in line or "connect" in line.lower()),
                          lines[-1] if lines else "ssh failed")
            return RemoteError(f"cannot reach {host} over SSH: {reason.removeprefix('ssh: ')}")
        if code == 127 or "not found" in text and what == "probe":
            return RemoteError(f"{host}: cannot run {self.config.python!r} there (command not found); "
                               "pass --remote-python with the device's Python")
        last = lines[-1] if lines else f"exit status {code}"
        return RemoteError(f"{host}: {what} failed: {last.removeprefix('edgecls: error: ')}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _send(ssh: SSH, base: str, files: list[tuple[str, bytes]], python: str) -> None:
    if not files:
        return
    header = json.dumps([[rel, len(data), _sha256(data)] for rel, data in files]).encode() + b"\n"
    ssh.run([python, "-c", _RECEIVE, base], input=header + b"".join(data for _, data in files), what="upload")


def remote_bench(bundle: str | Path, remote: RemoteConfig, data: str | None = None, config=None, progress=None,
                 log=None) -> dict:
    """Run `edgecls bench` for `bundle` on `remote.host`; returns the device's report, tagged."""
    from ..bundle import load_bundle
    from .local import BenchConfig, _labelled_data

    config = config or BenchConfig()
    if config.keras:
        raise ConfigError("--keras cannot run on a remote device (TensorFlow stays off it); bench Keras locally")
    say = log or (lambda msg: None)
    bundle = Path(bundle)
    loaded = load_bundle(bundle)
    loaded.check_variants(config.variants)
    spec, labels = loaded.preprocessing(), loaded.labels()

    ssh = SSH(remote)
    root = remote.remote_dir.rstrip("/")
    rbundle = f"{root}/bundles/{bundle.resolve().name}"
    say(f"connecting to {remote.host}")
    probe = json.loads(ssh.run([remote.python, "-c", _PROBE, rbundle], what="probe").decode().strip().splitlines()[-1])
    if "edgecls" not in probe:
        raise RemoteError(f"{remote.host}: edgecls is not installed for {remote.python} ({probe.get('edgecls_error')}); "
                          "install it there: pip install 'edgecls[runtime]' (see tools/device/pi_setup.sh)")

    # The bundle: manifest, labels, preprocessing and every artifact, minus what is already there.
    names = ["manifest.json", loaded.labels_file, loaded.preprocessing_file]
    names += [a["file"] for a in loaded.artifacts] + [e["file"] for a in loaded.artifacts for e in a.get("external_data", [])]
    have = probe["files"]
    upload = []
    for name in dict.fromkeys(names):
        path = bundle / name
        if not path.is_file():
            continue
        content = path.read_bytes()
        if have.get(name) != _sha256(content):
            upload.append((name, content))
    say(f"{remote.host}: sending {len(upload)} of {len(set(names))} bundle files "
        f"({sum(len(c) for _, c in upload):,} bytes); the others are already there")
    # Manifest last: the device never sees a manifest whose artifacts have not arrived.
    upload.sort(key=lambda item: item[0] == "manifest.json")
    _send(ssh, rbundle, upload, remote.python)

    # The labelled images, prepared here: both machines measure the same pixels.
    rdata = None
    labelled = _labelled_data(data, spec.input_size, labels, config.max_images)
    if labelled is not None:
        images, y, name = labelled
        files = [("images.npy", _npy_bytes(np.ascontiguousarray(images))), ("labels.npy", _npy_bytes(y.astype(np.int64))),
                 ("name.txt", name.encode())]
        key = _sha256(b"".join(_sha256(c).encode() for _, c in files))[:16]
        rdata = f"{root}/data/{key}"
        probe_data = json.loads(ssh.run([remote.python, "-c", _PROBE, rdata], what="probe").decode().strip().splitlines()[-1])
        missing = [(n, c) for n, c in files if probe_data["files"].get(n) != _sha256(c)]
        if missing:
            say(f"{remote.host}: sending {len(images)} labelled images ({sum(len(c) for _, c in missing):,} bytes)")
        _send(ssh, rdata, missing, remote.python)

    rreport = f"{root}/reports/bench-{secrets.token_hex(6)}.json"
    args = [remote.python, "-m", "edgecls.cli", "--quiet", "bench", rbundle, "--out", rreport,
            "--threads", str(config.threads or 1), "--warmup", str(config.warmup), "--runs", str(config.runs),
            "--batch", str(config.batch)]
    if config.variants:
        args += ["--variants", *config.variants]
    if config.tta:
        args += ["--tta", config.tta]
    args += ["--repeats", str(config.repeats)]  # always: the device's default may differ from this machine's
    if rdata:
        args += ["--prepared-data", rdata]
    say(f"{remote.host}: running the bench (edgecls {probe['edgecls']}, Python {probe['python']}, {probe['machine']})")
    mkdir = [remote.python, "-c", "import os, sys; os.makedirs(sys.argv[1], exist_ok=True)", f"{root}/reports"]
    ssh.run(mkdir, what="mkdir")
    proc = subprocess.Popen(ssh.command(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tail = []
    for raw in proc.stderr:
        line = raw.decode(errors="replace").rstrip()
        if line.startswith("bench ["):
            if progress:
                sys.stderr.write(f"{remote.host}: {line}\n")
                sys.stderr.flush()
        elif line:
            tail.append(line)
    code = proc.wait()
    if code not in (0, 1):  # 1: every variant failed, still a report worth bringing back
        if any("unrecognized arguments: --prepared-data" in line for line in tail):
            raise RemoteError(f"{remote.host}: edgecls {probe['edgecls']} there is too old for remote bench; upgrade it")
        raise ssh.error(code, "\n".join(tail), "bench")
    report = json.loads(ssh.run([remote.python, "-c",
                                 "import os, sys; p = sys.argv[1]; sys.stdout.write(open(p).read()); os.unlink(p)", rreport],
                                what="fetching the report"))
    report["remote"] = {"host": remote.host, "via": "ssh", "bundle_dir": rbundle, "python": remote.python,
                        "sent_files": [n for n, _ in upload]}
    report["bundle"] = str(bundle)
    report["data"] = data or "cifar10-sample"
    return report
