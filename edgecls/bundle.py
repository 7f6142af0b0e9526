"""Deployment bundles: a directory of validated artifacts with labels.json, preprocessing.json and
manifest.json. Standard library only, so the runtime can read bundles without TensorFlow.

manifest.json (schema 1):
    {"schema": 1, "edgecls_version": ..., "created": ..., "model": {...}, "labels": "labels.json",
     "preprocessing": "preprocessing.json", "reference": {...},
     "artifacts": [{"name", "file", "sha256", "format", "precision", "sparsity", "source",
                    "inputs": [...], "outputs": [...], "size": {...}, "validation": {...}, "tools": {...}}],
     "rejected": [{"name", "reason", "file"?}],
     "files": {"labels.json": sha256, "preprocessing.json": sha256}}
Only artifacts that passed validation are listed under "artifacts"; the others are under
"rejected" with the reason (their files, if any, sit in rejected/).

A bundle is data from whoever made it: `load_bundle` checks the manifest's keys and types and that
every path it names (artifacts, labels, preprocessing) stays inside the bundle directory (no
absolute path, no `..`, no symbolic link leading out) before anything is opened; artifacts,
labels.json and preprocessing.json are checked against their sha256 before they are used.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import ModelError

log = logging.getLogger("edgecls")

MANIFEST = "manifest.json"
LABELS_FILE = "labels.json"
SCHEMA = 1


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gzip_size(data: bytes) -> int:
    """Bytes after gzip at level 9 (what a download or an OTA update would carry)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


@dataclass
class Bundle:
    path: Path
    manifest: dict

    @property
    def artifacts(self) -> list[dict]:
        return list(self.manifest.get("artifacts", []))

    def names(self) -> list[str]:
        return [a["name"] for a in self.artifacts]

    @property
    def labels_file(self) -> str:
        return self.manifest.get("labels", "labels.json")

    @property
    def preprocessing_file(self) -> str:
        return self.manifest.get("preprocessing", "preprocessing.json")

    def resolve(self, rel, key: str = "file") -> Path:
        """The path of `rel` (a path from the manifest) inside the bundle; ModelError when it is not
        a plain relative path or leads out of the bundle (`..`, absolute, a symbolic link)."""
        return confined(self.path, rel, key)

    def _verified(self, rel: str, key: str) -> Path:
        """`rel`'s path after checking its sha256 against the manifest's "files" record."""
        path = self.resolve(rel, key)
        if not path.is_file():
            raise ModelError(f"{path}: listed in the manifest ({key}) but missing; re-export or re-copy the bundle")
        expected = (self.manifest.get("files") or {}).get(rel)
        if expected is None:
            _warn_unhashed(self.path)
        elif sha256_file(path) != expected:
            raise ModelError(f"{path}: sha256 does not match the manifest; it was edited after export (it changes every "
                             f"prediction): re-export or re-copy the bundle")
        return path

    def preprocessing(self):
        """The bundle's PreprocessingSpec (numpy and Pillow only), after checking its hash."""
        from .errors import ConfigError
        from .preprocess import PreprocessingSpec

        path = self._verified(self.preprocessing_file, "preprocessing")
        try:
            return PreprocessingSpec.load(path)
        except ConfigError as exc:
            raise ModelError(f"{path}: {exc}") from None

    def labels(self) -> list[str] | None:
        """The class names (labels.json, after checking its hash), or None for a bundle without them."""
        from ._io import read_json

        if "labels" not in self.manifest and not (self.path / self.labels_file).exists():
            return None
        path = self._verified(self.labels_file, "labels")
        labels = read_json(path, "labels file", ModelError, "labels")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ModelError(f"{path}: must hold a JSON list of class names (strings)")
        classes = (self.manifest.get("model") or {}).get("classes")
        if isinstance(classes, int) and len(labels) != classes:
            raise ModelError(f"{path}: lists {len(labels)} class names but the model has {classes} classes "
                             f"(manifest model.classes); re-export the bundle")
        return labels

    def check_variants(self, names) -> None:
        """ConfigError naming the variants the bundle has never heard of (a variant rejected at
        export is known: it becomes a failed row with its reason)."""
        from .errors import ConfigError

        known = set(self.names()) | {r["name"] for r in self.manifest.get("rejected", [])}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"unknown variant(s) {unknown}; the bundle has: {', '.join(self.names())}")

    def artifact(self, name: str | None = None) -> dict:
        arts = self.artifacts
        if not arts:
            raise ModelError(f"{self.path}: the bundle holds no validated artifacts")
        if name is None:
            return arts[0]
        for a in arts:
            if a["name"] == name:
                return a
        rejected = {r["name"]: r.get("reason", "") for r in self.manifest.get("rejected", [])}
        if name in rejected:
            raise ModelError(f"variant {name!r} failed validation at export and was not shipped ({rejected[name]})")
        omitted = {r["name"]: r.get("omitted_reason", "") for r in self.manifest.get("omitted", [])}
        if name in omitted:
            raise ModelError(f"variant {name!r} was validated but left out of this bundle ({omitted[name]})")
        raise ModelError(f"no variant {name!r} in {self.path}; available: {', '.join(self.names())}")

    def file_for(self, artifact: dict, verify: bool = True) -> Path:
        """The artifact's path, after checking it exists and matches the manifest's sha256."""
        path = self.resolve(artifact["file"], f"artifact {artifact.get('name')!r} file")
        if not path.is_file():
            raise ModelError(f"{path}: listed in the manifest but missing; re-export the bundle")
        if verify:
            digest = sha256_file(path)
            if digest != artifact["sha256"]:
                raise ModelError(
                    f"{path}: sha256 {digest[:12]}... does not match the manifest ({artifact['sha256'][:12]}...); "
                    f"refusing to run a modified file: re-export or re-copy the bundle"
                )
        return path


    def copy_verified(self, artifact: dict, dest: Path, verify: bool = True) -> Path:
        """Copy the artifact and every file it loads beside it (its manifest's "external_data", each
        with a sha256) into the empty folder `dest`, checking the copies' sha256; returns the copy
        of the artifact. Loaded from there, a model can read no file the manifest does not hash: a
        reference to any other is missing in `dest` and fails to load."""
        import shutil

        source = self.file_for(artifact, verify=False)
        copy = dest / source.name
        shutil.copyfile(source, copy)
        if verify and sha256_file(copy) != artifact["sha256"]:
            raise ModelError(f"{source}: sha256 does not match the manifest; refusing to run a modified file: "
                             f"re-export or re-copy the bundle")
        for i, extra in enumerate(artifact.get("external_data", [])):
            key = f"artifact {artifact['name']!r} external_data[{i}]"
            rel = extra["file"]
            if "/" in rel:
                raise ModelError(f"{self.path / MANIFEST}: {key} {rel!r} must be a file beside the model")
            path = self.resolve(rel, key)
            if not path.is_file():
                raise ModelError(f"{path}: the weights of {artifact['name']!r} (external data) are missing; "
                                 f"re-copy the bundle")
            shutil.copyfile(path, dest / rel)
            if verify and sha256_file(dest / rel) != extra["sha256"]:
                raise ModelError(f"{path}: sha256 does not match the manifest (the weights of {artifact['name']!r}); "
                                 f"it was edited after export: re-export or re-copy the bundle")
        return copy


def write_bundle(folder: str | Path, *, labels, preprocessing, rows: list[dict], **sections) -> dict:
    """Write labels.json, preprocessing.json and manifest.json into `folder` (the artifacts are already
    there) and return the manifest. `rows` are the variants: those with status "ok" are listed under
    "artifacts", the others under "rejected". `sections` are the manifest's other top-level entries
    (model, reference, calibration, optimization, config, tools, export_time_s)."""
    import time

    from . import __version__
    from ._io import atomic_write_json
    from .preprocess import SPEC_FILE

    folder = Path(folder)
    atomic_write_json(folder / LABELS_FILE, list(labels))
    preprocessing.save(folder / SPEC_FILE)
    manifest = {"schema": SCHEMA, "edgecls_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "model": sections.pop("model"), "labels": LABELS_FILE, "preprocessing": SPEC_FILE,
                "files": file_hashes(folder, [LABELS_FILE, SPEC_FILE])}
    manifest.update(sections)
    manifest["artifacts"] = [r for r in rows if r["status"] == "ok"]
    manifest["rejected"] = [r for r in rows if r["status"] != "ok"]
    manifest["export_time_s"] = manifest.pop("export_time_s", None)
    check_manifest(manifest, folder)
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def omit_artifact(path: str | Path, name: str, reason: str) -> None:
    """Take a validated artifact out of a bundle, keeping its manifest entry (sizes, validation,
    accuracy) under "omitted" with the reason: the record stays, the file goes."""
    from ._io import atomic_write_json

    bundle = load_bundle(path)
    entry = bundle.artifact(name)
    manifest = dict(bundle.manifest)
    manifest["artifacts"] = [a for a in bundle.artifacts if a["name"] != name]
    manifest["omitted"] = [*manifest.get("omitted", []), {**entry, "omitted_reason": reason}]
    atomic_write_json(bundle.path / MANIFEST, manifest)
    (bundle.path / entry["file"]).unlink(missing_ok=True)


def replace_artifacts(path: str | Path, staged: str | Path, names) -> list[dict]:
    """Put the artifacts `names` of the bundle `staged` (exported from the same model on the same
    data) in place of the bundle's own: their files, and their manifest entries where the old ones
    stood; the rest of the bundle is untouched. Refuses a staged bundle whose reference (the Keras
    model's accuracy on the same images) differs. Returns the new entries."""
    from ._io import atomic_write_json

    bundle, new = load_bundle(path), load_bundle(staged)
    ref_old, ref_new = bundle.manifest.get("reference", {}), new.manifest.get("reference", {})
    if ref_old != ref_new:
        raise ModelError(f"{staged} was not exported from {path}'s model on its data (reference {ref_new} vs {ref_old})")
    entries = {name: new.artifact(name) for name in names}
    for name, entry in entries.items():
        data = new.file_for(entry).read_bytes()
        tmp = bundle.path / f".{entry['file']}.tmp"
        tmp.write_bytes(data)
        entry["exported"] = {"created": new.manifest.get("created"), "edgecls_version": new.manifest.get("edgecls_version"),
                             "config": new.manifest.get("config"), "tools": new.manifest.get("tools")}
        old = next((a for a in bundle.artifacts if a["name"] == name), None)
        if old is not None and old["file"] != entry["file"]:
            (bundle.path / old["file"]).unlink(missing_ok=True)
        tmp.replace(bundle.path / entry["file"])
    manifest = dict(bundle.manifest)
    arts = [entries.pop(a["name"], a) for a in bundle.artifacts]
    manifest["artifacts"] = arts + list(entries.values())
    atomic_write_json(bundle.path / MANIFEST, manifest)
    return [a for a in manifest["artifacts"] if a["name"] in names]


def load_bundle(path: str | Path) -> Bundle:
    """Read and check a bundle's manifest (keys, types, paths confined to the bundle)."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ModelError(f"{path}: not a bundle (no {MANIFEST}); pass a directory written by 'edgecls export'")
    from ._io import read_json

    manifest = read_json(manifest_path, "bundle manifest", ModelError)
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise ModelError(f"{manifest_path}: unsupported manifest schema {manifest.get('schema') if isinstance(manifest, dict) else None!r}; expected {SCHEMA}")
    check_manifest(manifest, path)
    return Bundle(path, manifest)


_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_manifest(manifest: dict, path: Path) -> None:
    """ModelError naming the first key of `manifest` that is missing, of the wrong type, or names a
    path outside the bundle directory `path`."""
    where = path / MANIFEST

    def fail(key, what):
        raise ModelError(f"{where}: {key} {what}; the manifest is damaged or was edited: re-export or re-copy the bundle")

    from .schema import check

    check(manifest, "manifest", str(where), ModelError)
    arts = manifest.get("artifacts")
    if not isinstance(arts, list):
        fail("'artifacts'", "is missing or not a list")
    for key in ("labels", "preprocessing"):
        if key in manifest:
            if not isinstance(manifest[key], str):
                fail(f"'{key}'", "must be a file name (a string)")
            confined(path, manifest[key], key)
    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) and _SHA256.fullmatch(v)
                                              for k, v in files.items()):
        fail("'files'", "must map file names to sha256 digests")
    model = manifest.get("model", {})
    if not isinstance(model, dict) or not isinstance(model.get("classes", 2), int) or isinstance(model.get("classes"), bool):
        fail("'model.classes'", "must be an integer")
    seen = set()
    for i, art in enumerate(arts):
        if not isinstance(art, dict):
            fail(f"artifacts[{i}]", "is not an object")
        for key, kind in (("name", str), ("file", str), ("sha256", str), ("format", str)):
            if not isinstance(art.get(key), kind) or not art.get(key):
                fail(f"artifacts[{i}].{key}", "is missing or not a string")
        if not _SHA256.fullmatch(art["sha256"]):
            fail(f"artifacts[{i}].sha256", "is not a sha256 digest (64 hex digits)")
        if art["name"] in seen:
            fail(f"artifacts[{i}].name", f"repeats the variant {art['name']!r}")
        seen.add(art["name"])
        confined(path, art["file"], f"artifacts[{i}].file")
        for j, src in enumerate((art.get("micro") or {}).get("sources", [])):
            if not src["file"].startswith("micro/"):
                fail(f"artifacts[{i}].micro.sources[{j}].file", "must lie under micro/")
            confined(path, src["file"], f"artifacts[{i}].micro.sources[{j}].file")
    for key in ("rejected", "omitted"):
        entries = manifest.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in entries):
            fail(f"'{key}'", "must be a list of objects with a name")
        for i, e in enumerate(entries):
            if e.get("file") is not None:
                if not isinstance(e["file"], str):
                    fail(f"{key}[{i}].file", "must be a string")
                confined(path, e["file"], f"{key}[{i}].file")


def confined(root: Path, rel, key: str = "file") -> Path:
    """`root / rel` when `rel` is a plain relative path that stays inside `root` once symbolic links
    are followed; ModelError naming `key` otherwise. Nothing is opened."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel:
        raise ModelError(f"{root / MANIFEST}: {key} must be a relative file name inside the bundle, got {rel!r}")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", rel):
        raise ModelError(f"{root / MANIFEST}: {key} {rel!r} points outside the bundle (absolute or '..'); refused")
    full = root / pure
    base = root.resolve()
    if not full.resolve().is_relative_to(base):
        raise ModelError(f"{root / MANIFEST}: {key} {rel!r} is a symbolic link leading outside the bundle; refused")
    return full


_warned: set = set()


def _warn_unhashed(path: Path) -> None:
    if str(path) not in _warned:
        _warned.add(str(path))
        log.warning("%s: the manifest has no sha256 for labels.json and preprocessing.json (written by an older "
                    "edgecls); they are used unchecked: re-export the bundle to cover them", path)


def file_hashes(folder: Path, names) -> dict:
    """{name: sha256} of the files `names` in `folder`: the manifest's "files" record."""
    return {name: sha256_file(folder / name) for name in names}


def find_bundle_for(file: str | Path) -> tuple[Bundle, dict] | None:
    """If `file` lies in a bundle directory, that bundle and the file's manifest entry."""
    file = Path(file)
    manifest_path = file.parent / MANIFEST
    if not manifest_path.is_file():
        return None
    bundle = load_bundle(file.parent)
    for a in bundle.artifacts:
        if a["file"] == file.name:
            return bundle, a
    return None
