"""The trained models shipped in models/: complete, intact, small, and good on real held-out images,
run with the runtime alone (TensorFlow blocked in every process)."""
import json
import os
import subprocess
import sys

import pytest

from edgecls.bundle import load_bundle, sha256_file

from .conftest import ROOT
from .test_runtime import BLOCK_TF

MODELS = ROOT / "models"
SHIPPED = sorted(p.parent.name for p in MODELS.glob("*/manifest.json"))


def test_every_zoo_model_is_shipped():
    """resnet8 above all: the README's main job starts from it. Teachers (models to distill from,
    too large for the devices) are not shipped."""
    from edgecls.zoo import get_model_info, list_models

    edge_models = {m for m in list_models() if not get_model_info(m).teacher}
    assert "resnet8" in SHIPPED and edge_models <= set(SHIPPED) and len(edge_models) >= 3


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_bundle_is_complete_and_intact(name):
    folder = MODELS / name
    bundle = load_bundle(folder)
    for art in bundle.artifacts:
        assert sha256_file(folder / art["file"]) == art["sha256"], art["file"]
        assert art["status"] == "ok" and art["validation"]["status"] == "ok" and art["validation"]["images"] == 10000, art["name"]
    for part in ("model.keras", "labels.json", "preprocessing.json", "train.json", "report.json"):
        assert (folder / part).is_file(), part
    assert sum(p.stat().st_size for p in folder.iterdir()) < 3_000_000  # "under 3 MB", decimal
    train = json.loads((folder / "train.json").read_text())
    assert train["arch"] == name and train["dataset"]["train_images"] == 50000 and train["split"]["test"] == 10000
    report = json.loads((folder / "report.json").read_text())
    assert report["data"].endswith("cifar10-jpeg.zip")
    rows = {v["name"]: v for v in report["variants"]}
    assert set(bundle.names()) <= set(rows) and "keras_fp32" in rows
    assert all(v["status"] == "ok" and v["images"] == 10000 for v in rows.values())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_report_matches_the_manifest(name):
    """The bench report beside each bundle measured the same files, and the same accuracy as the
    export validation on the same 10,000 images (tools/release/check_model_targets.py checks the targets)."""
    folder = MODELS / name
    bundle = load_bundle(folder)
    rows = {v["name"]: v for v in json.loads((folder / "report.json").read_text())["variants"]}
    for art in bundle.artifacts:
        row = rows[art["name"]]
        assert row["size_bytes"] == art["size"]["bytes"]
        assert row["accuracy"] == pytest.approx(art["validation"]["accuracy"], abs=1e-4), art["name"]


@pytest.mark.slow
def test_shipped_resnet8_runs_without_tensorflow(tmp_path):
    """`edgecls bench models/resnet8` with the runtime only, on 500 held-out images of the sample."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_TF)
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "edgecls.cli", "bench", str(MODELS / "resnet8"), "--repeats", "1", "--variants", "tflite_int8",
                           "tflite_fp32", "onnx_int8", "--max-images", "500", "--runs", "10", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {v["name"]: v for v in json.loads(out.read_text())["variants"]}
    assert all(v["status"] == "ok" for v in rows.values())
    # Held-out CIFAR-10 test images: a trained model, far from the 10% of chance.
    assert rows["tflite_int8"]["accuracy"] >= 0.8 and rows["tflite_int8"]["agreement"] >= 0.97
