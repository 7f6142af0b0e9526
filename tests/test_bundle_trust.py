"""A bundle can only name its own files: manifests with paths leading out of the bundle, edited
labels or preprocessing, and malformed manifests are refused in one line before anything is opened;
the remote receiver applies the same rule."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgecls import runtime
from edgecls.bundle import load_bundle
from edgecls.errors import ModelError

from .conftest import FIXTURES, assert_one_line_error, run_cli

BUNDLE = FIXTURES / "bundles" / "seed_cnn_s8s8"


@pytest.fixture
def bundle(tmp_path):
    path = tmp_path / "bundle"
    shutil.copytree(BUNDLE, path)
    return path


def _edit(path: Path, change) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def secret(tmp_path):
    """A file outside the bundle that a hostile manifest tries to reach; its atime must not move."""
    path = tmp_path / "secret.onnx"
    shutil.copyfile(BUNDLE / "onnx_fp32.onnx", path)
    return path


ESCAPES = {
    "dotdot": lambda m: m["artifacts"][0].update(file="../secret.onnx"),
    "nested_dotdot": lambda m: m["artifacts"][0].update(file="sub/../../secret.onnx"),
    "absolute": lambda m: m["artifacts"][0].update(file="/etc/passwd"),
    "labels_dotdot": lambda m: m.update(labels="../secret.onnx"),
    "preprocessing_absolute": lambda m: m.update(preprocessing="/etc/hostname"),
    "rejected_dotdot": lambda m: m["rejected"].append({"name": "x", "reason": "r", "file": "../../x"}),
    "backslash": lambda m: m["artifacts"][0].update(file="..\\secret.onnx"),
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_paths_leading_out_of_the_bundle_are_refused_before_opening(bundle, secret, case):
    _edit(bundle, ESCAPES[case])
    with pytest.raises(ModelError, match="outside the bundle|relative file name") as err:
        runtime.load(bundle, variant="onnx_fp32")
    assert "\n" not in str(err.value)


def test_symbolic_links_leaving_the_bundle_are_refused(bundle, secret):
    (bundle / "onnx_fp32.onnx").unlink()
    os.symlink(secret, bundle / "onnx_fp32.onnx")
    with pytest.raises(ModelError, match="symbolic link leading outside"):
        load_bundle(bundle)
    # A link to a folder outside, used as a directory component.
    (bundle / "onnx_fp32.onnx").unlink()
    shutil.copyfile(BUNDLE / "onnx_fp32.onnx", bundle / "onnx_fp32.onnx")
    os.symlink(secret.parent, bundle / "elsewhere")
    _edit(bundle, lambda m: m["artifacts"][0].update(file="elsewhere/secret.onnx"))
    with pytest.raises(ModelError, match="symbolic link leading outside"):
        load_bundle(bundle)
    # Labels through a link.
    _edit(bundle, lambda m: m["artifacts"][0].update(file="onnx_fp32.onnx"))
    (bundle / "labels.json").unlink()
    os.symlink(secret, bundle / "labels.json")
    with pytest.raises(ModelError, match="symbolic link leading outside"):
        load_bundle(bundle)


def test_a_link_inside_the_bundle_is_fine(bundle):
    (bundle / "models").mkdir()
    shutil.move(bundle / "onnx_fp32.onnx", bundle / "models" / "fp32.onnx")
    os.symlink("models/fp32.onnx", bundle / "onnx_fp32.onnx")
    assert runtime.load(bundle, variant="onnx_fp32").name == "onnx_fp32"


@pytest.mark.parametrize("name,edit", [
    ("labels.json", lambda t: t.replace('"cat"', '"dog"', 1)),
    ("preprocessing.json", lambda t: t.replace("0.003921", "0.003922", 1)),
])
def test_edited_labels_and_preprocessing_are_refused(bundle, name, edit):
    text = (bundle / name).read_text()
    assert edit(text) != text
    (bundle / name).write_text(edit(text))
    with pytest.raises(ModelError, match=f"{name}: sha256 does not match the manifest"):
        runtime.load(bundle, variant="onnx_fp32")
    from PIL import Image

    image = bundle.parent / "image.png"
    Image.new("RGB", (32, 32), (120, 30, 200)).save(image)
    assert_one_line_error(run_cli("predict", bundle, image), "sha256 does not match")


MALFORMED = {
    "no artifacts": (lambda m: m.pop("artifacts"), "the top level lacks a required key .*'artifacts'"),
    "artifacts a dict": (lambda m: m.update(artifacts={}), "'artifacts' must be a list, got an object"),
    "artifact a string": (lambda m: m["artifacts"].insert(0, "x"), r"'artifacts\[0\]' must be an object, got a string"),
    "no file": (lambda m: m["artifacts"][0].pop("file"), r"'artifacts\[0\]' lacks a required key .*'file'"),
    "file a number": (lambda m: m["artifacts"][0].update(file=3), r"'artifacts\[0\].file' must be a string, got an integer"),
    "no sha256": (lambda m: m["artifacts"][0].pop("sha256"), r"'artifacts\[0\]' lacks a required key .*'sha256'"),
    "sha256 not hex": (lambda m: m["artifacts"][0].update(sha256="zz" * 32), r"'artifacts\[0\].sha256' is not a plain name"),
    "name repeated": (lambda m: m["artifacts"][1].update(name=m["artifacts"][0]["name"]), "repeats the variant"),
    "labels a list": (lambda m: m.update(labels=["a"]), "'labels' must be a string, got a list"),
    "files not digests": (lambda m: m.update(files={"labels.json": 1}), r"'files.labels.json' must be a string, got an integer"),
    "classes a string": (lambda m: m["model"].update(classes="10"), "'model.classes' must be an integer, got a string"),
    "rejected not list": (lambda m: m.update(rejected="x"), "'rejected' must be a list, got a string"),
    "schema": (lambda m: m.update(schema=2), "unsupported manifest schema 2"),
    "not an object": (lambda m: m.clear(), "unsupported manifest schema None"),
    "classes huge": (lambda m: m["model"].update(classes=10 ** 30), r"'model.classes' is 10{30}, out of range"),
    "accuracy a string": (lambda m: m["artifacts"][0]["validation"].update(accuracy="0.9"),
                          r"'artifacts\[0\].validation.accuracy' must be a number or null, got a string"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_manifests_get_one_line_naming_the_key(bundle, case):
    change, message = MALFORMED[case]
    _edit(bundle, change)
    with pytest.raises(ModelError, match=message) as err:
        runtime.load(bundle)
    assert "\n" not in str(err.value)


def test_short_labels_list_and_invalid_json(bundle):
    labels = json.loads((bundle / "labels.json").read_text())[:-1]
    (bundle / "labels.json").write_text(json.dumps(labels))
    from edgecls.bundle import file_hashes

    _edit(bundle, lambda m: m.update(files=file_hashes(bundle, ["labels.json", "preprocessing.json"])))
    with pytest.raises(ModelError, match="lists 9 class names but the model has 10 classes"):
        runtime.load(bundle, variant="onnx_fp32")
    (bundle / "manifest.json").write_text('{"schema": 1, "artifacts": [')
    proc = run_cli("bench", bundle, "--repeats", "1", "--out", bundle.parent / "r.json")
    assert_one_line_error(proc, "manifest", "not valid JSON")
    assert not (bundle.parent / "r.json").exists()


def _receive(base: Path, files):
    from edgecls.bench.remote import _RECEIVE, _sha256

    header = json.dumps([[rel, len(data), _sha256(data)] for rel, data in files]).encode() + b"\n"
    return subprocess.run([sys.executable, "-c", _RECEIVE, str(base)], input=header + b"".join(d for _, d in files),
                          capture_output=True)


def test_the_remote_receiver_writes_only_inside_its_bundle_folder(tmp_path):
    base = tmp_path / "device" / "bundles" / "b"
    base.mkdir(parents=True)
    outside = tmp_path / "device" / "victim.txt"
    outside.write_text("keep me")
    for rel in ("../victim.txt", "../../device/victim.txt", str(outside), "a/../../victim.txt"):
        proc = _receive(base, [(rel, b"overwritten")])
        assert proc.returncode != 0 and b"refused" in proc.stderr, (rel, proc.stderr)
    os.symlink(tmp_path / "device", base / "up")
    proc = _receive(base, [("up/victim.txt", b"overwritten")])
    assert proc.returncode != 0 and b"leads outside" in proc.stderr
    os.symlink(outside, base / "labels.json.part")  # a planted temporary file
    proc = _receive(base, [("labels.json", b"[]")])
    assert proc.returncode == 0, proc.stderr
    assert outside.read_text() == "keep me"
    assert (base / "labels.json").read_bytes() == b"[]"
