"""Deployment bundles: a directory of validated artifacts with labels.json, preprocessing.json and
manifest.json. Standard library only, so the runtime can read bundles without TensorFlow.

manifest.json (schema 1):
    {"schema": 1, "edgecls_version": ..., "created": ..., "model": {...}, "labels": "labels.json",
     "preprocessing": "preprocessing.json", "reference": {...},
     "artifacts": [{"name", "file", "sha256", "format", "precision", "sparsity", "source",
                    "inputs": [...], "outputs": [...], "size": {...}, "validation": {...}, "tools": {...}}],
     "rejected": [{"name", "reason", "file"?}]}
Only artifacts that passed validation are listed under "artifacts"; the others are under
"rejected" with the reason (their files, if any, sit in rejected/).
"""
from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError

MANIFEST = "manifest.json"
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

    def preprocessing(self):
        """The bundle's PreprocessingSpec (numpy and Pillow only)."""
        from .preprocess import PreprocessingSpec

        return PreprocessingSpec.load(self.path / self.preprocessing_file)

    def labels(self) -> list[str] | None:
        path = self.path / self.labels_file
        return json.loads(path.read_text()) if path.exists() else None

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
        path = self.path / artifact["file"]
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
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ModelError(f"{path}: not a bundle (no {MANIFEST}); pass a directory written by 'edgecls export'")
    from ._io import read_json

    manifest = read_json(manifest_path, "bundle manifest", ModelError)
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise ModelError(f"{manifest_path}: unsupported manifest schema {manifest.get('schema') if isinstance(manifest, dict) else None!r}; expected {SCHEMA}")
    return Bundle(path, manifest)


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
