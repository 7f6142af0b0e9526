"""Where edgecls writes. Every command that writes checks its destination before any work starts:

- a folder edgecls would replace must be new, empty, or an earlier edgecls output of the same kind
  (a bundle is replaced by a bundle, a trained model by a trained model): edgecls never deletes
  or overwrites what it did not write;
- an output file may replace only an earlier edgecls file of the same kind (a bench report);
- the destination cannot be the current folder, a folder above it, the home folder, the root, or
  a folder holding the command's own inputs;
- the nearest existing folder above it must be writable.

The kind of an existing output is read from the record edgecls writes in it (manifest.json,
train.json, optimize.json, report.json, tune.json, a bench report's "kind"), parsed as JSON.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ConfigError

# kind -> (record file, test of its parsed content, what it is)
FOLDER_KINDS = {
    "bundle": ("manifest.json", lambda d: "schema" in d and "artifacts" in d, "a bundle written by 'edgecls export'"),
    "train": ("train.json", lambda d: "arch" in d and "test_accuracy" in d, "a model written by 'edgecls train'"),
    "optimize": ("optimize.json", lambda d: "variants" in d, "models written by 'edgecls optimize'"),
    "report": ("report.json", lambda d: d.get("kind") == "edgecls-report", "a report written by 'edgecls report'"),
    "tune": ("tune.json", lambda d: d.get("kind") == "edgecls-tune", "a search written by 'edgecls tune'"),
}
# kind -> (test of the file's parsed content, what it is)
FILE_KINDS = {
    "bench": (lambda d: d.get("kind") == "edgecls-bench", "a bench report"),
    "eval": (lambda d: "top1" in d and "confusion_matrix" in d, "an eval report"),
}
# What `edgecls pipeline` writes into its folder.
PIPELINE_ENTRIES = {"model": "train", "bundle": "bundle", "report": "report"}


def _record(path: Path):
    from .schema import load

    try:
        data = load(path, "record", ConfigError)
    except (OSError, ConfigError):
        return None
    return data if isinstance(data, dict) else None


def _refuse_odd(out: Path, inputs=()) -> Path:
    """ConfigError for a destination that must never be replaced; returns the resolved path."""
    if str(out) in ("", "."):
        raise ConfigError("--out . is the current folder; name a new folder for the output")
    real = out.resolve()
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise ConfigError(f"--out {out} is the current folder or a folder above it; name a new folder for the output")
    home = Path.home().resolve()
    if real == home or real == Path(real.anchor) or real in home.parents:
        raise ConfigError(f"--out {out} is the home folder or a system folder; name a new folder for the output")
    for given in inputs:
        if given is None:
            continue
        src = Path(given).resolve()
        if real == src or real in src.parents:
            raise ConfigError(f"--out {out} holds this command's input {given}; write the output somewhere else")
    return real


def _writable(real: Path, out: Path) -> None:
    """ConfigError unless the nearest existing folder at or above `real` lets us create files."""
    probe = real if real.is_dir() else real.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"--out {out}: {probe} is a file, not a folder; choose another output path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".edgecls-write-check-", dir=probe)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write in {probe} ({exc.strerror or exc}); choose a writable folder") from None
    os.close(fd)
    os.unlink(tmp)


def check_output_dir(out: str | Path, kind: str, inputs=()) -> Path:
    """Check that edgecls may write the `kind` folder `out` (see the module docstring); returns
    `out` as a Path. Raises ConfigError with the reason and what to do."""
    out = Path(out)
    real = _refuse_odd(out, inputs)
    if out.is_symlink():
        # Replacing it would replace the link, not the folder it names: name the folder itself.
        raise ConfigError(f"--out {out} is a symbolic link (to {real}); give the folder itself, or a new folder")
    if real.exists():
        if not real.is_dir():
            raise ConfigError(f"--out {out} is an existing file; edgecls writes a folder there: choose a new folder")
        entries = [p for p in real.iterdir()]
        if entries and not is_output(real, kind):
            record, _, what = FOLDER_KINDS[kind] if kind in FOLDER_KINDS else (None, None, "an earlier pipeline output")
            hint = f" (no {record} of its own)" if record else ""
            raise ConfigError(f"--out {out} is a folder edgecls did not write{hint} and it is not empty; edgecls only "
                              f"replaces {what}: choose a new or empty folder")
        foreign = foreign_entries(real, kind) if entries else []
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise ConfigError(f"--out {out} is an earlier edgecls output that also holds files edgecls did not write "
                              f"({shown}); replacing it would delete them: move them out, or choose a new folder")
    _writable(real, out)
    return out


# What each kind of output holds when edgecls wrote it, beside the files its record names; an
# output that edgecls replaces as a whole (bundle, trained model, optimize folder) must hold
# nothing else.
OWNED = {"bundle": {"manifest.json", "labels.json", "preprocessing.json", "rejected"},
         "train": {"model.keras", "labels.json", "preprocessing.json", "train.json", "eval.json"},
         "optimize": {"optimize.json"}}


def foreign_entries(folder: Path, kind: str) -> list[str]:
    """Names of the entries in the earlier `kind` output `folder` that edgecls did not write
    (sorted); [] for kinds written in place (report, tune), whose other files are left alone."""
    if kind not in OWNED:
        return []
    owned = set(OWNED[kind])
    data = _record(folder / FOLDER_KINDS[kind][0]) or {}
    if kind == "bundle":
        for key in ("artifacts", "omitted"):
            owned |= {a["file"] for a in data.get(key, []) if isinstance(a, dict) and isinstance(a.get("file"), str)}
        owned |= {data[k] for k in ("labels", "preprocessing") if isinstance(data.get(k), str)}
    if kind == "optimize" and isinstance(data.get("variants"), dict):
        owned |= set(data["variants"])
    micro_foreign = []
    micro = folder / "micro"
    if kind == "bundle" and micro.is_dir() and not micro.is_symlink():
        # The C sources of `export --micro`, each listed with its hash under its artifact's "micro".
        listed = {s["file"] for a in data.get("artifacts", []) if isinstance(a, dict) and isinstance(a.get("micro"), dict)
                  for s in a["micro"].get("sources", []) if isinstance(s, dict) and isinstance(s.get("file"), str)}
        found = {p.relative_to(folder).as_posix() for p in micro.rglob("*") if p.is_symlink() or not p.is_dir()}
        micro_foreign = sorted(found - listed)
        owned.add("micro")
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in owned) + micro_foreign
    rejected = folder / "rejected"
    if kind == "bundle" and rejected.is_dir() and not rejected.is_symlink():
        names = {Path(r["file"]).name for r in data.get("rejected", []) if isinstance(r, dict) and isinstance(r.get("file"), str)}
        foreign += sorted(f"rejected/{p.name}" for p in rejected.iterdir() if p.name not in names)
    return foreign


def is_output(folder: Path, kind: str) -> bool:
    """Whether `folder` is an edgecls output of `kind` (by the record edgecls wrote in it)."""
    if kind == "pipeline":
        entries = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
        known = set(PIPELINE_ENTRIES) | {"bench.json", "model.partial"}
        return bool(entries) and entries <= known and all(
            is_output(folder / name, sub) for name, sub in PIPELINE_ENTRIES.items() if (folder / name).is_dir()
            and any((folder / name).iterdir()))
    record, test, _ = FOLDER_KINDS[kind]
    data = _record(folder / record)
    return data is not None and bool(test(data))


def check_output_file(out: str | Path, kind: str, inputs=()) -> Path:
    """Check that edgecls may write the `kind` file `out`: new, or an earlier edgecls file of the
    same kind; never a folder. Raises ConfigError; returns `out` as a Path."""
    out = Path(out)
    real = _refuse_odd(out, inputs)
    test, what = FILE_KINDS[kind]
    if real.is_dir():
        raise ConfigError(f"--out {out} is a folder; {what} is a file: name a .json file")
    if real.exists():
        data = _record(real)
        if data is None or not test(data):
            raise ConfigError(f"--out {out} exists and is not {what} edgecls wrote; edgecls does not overwrite other "
                              f"files: choose a new file name")
    _writable(real, out)
    return out
