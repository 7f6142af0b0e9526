"""--calibration-search: the size with the best mean validation accuracy is chosen, its best draw
shipped, and every draw's accuracy kept (exact numbers from scripted candidates)."""
from types import SimpleNamespace

import numpy as np
import pytest

from edgecls.config import ExportConfig
from edgecls.errors import ConfigError
from edgecls.export.calibration import search
from edgecls.export.formats.base import Converted

from .conftest import run_cli


class _Format:
    def layout(self, config):
        return "NHWC"

    def convert(self, variant, job):
        return Converted(bytes([len(job.representative)]))


def test_the_best_mean_size_wins_and_its_best_draw_ships(monkeypatch):
    from edgecls.runtime import isolated

    labels = np.zeros(100, np.int64)
    # Correct answers out of 100 per (size, seed): size 64 averages 90.5, size 128 averages 91.0.
    correct = {(64, 0): 92, (64, 1): 89, (128, 0): 90, (128, 1): 92}

    def outputs(path, images, layout="NHWC", threads=None, timeout=None):
        count, seed = map(int, path.stem.split("-"))
        out = np.zeros((100, 2), np.float32)
        out[correct[(count, seed)]:, 1] = 1.0  # the rest predicted as class 1: wrong
        return out

    monkeypatch.setattr(isolated, "outputs", outputs)
    train = np.zeros((500, 4, 4, 3), np.uint8)
    spec = SimpleNamespace(apply=lambda x: x.astype(np.float32))
    candidates = [(64, 0, np.arange(64)), (64, 1, np.arange(64)), (128, 0, np.arange(128)), (128, 1, np.arange(128))]
    job = SimpleNamespace(config=SimpleNamespace(validation_timeout_s=60), representative=None, calibration=None)
    from edgecls.export import calibration as module

    # The job is a stand-in, not a dataclass: replace() copies its attributes.
    monkeypatch.setattr(module, "replace", lambda obj, **kw: SimpleNamespace(**{**vars(obj), **kw}))
    variant = SimpleNamespace(format="tflite")
    record, converted, chosen = search(_Format(), variant, job, candidates, train, spec, None, labels, 0.93)
    assert record["by_count"] == {"64": {"draws": 2, "mean": 0.905, "min": 0.89, "max": 0.92},
                                  "128": {"draws": 2, "mean": 0.91, "min": 0.9, "max": 0.92}}
    assert record["chosen"] == {"count": 128, "seed": 1, "accuracy": 0.92}
    assert len(chosen) == 128 and converted.data == bytes([128])
    assert [c["accuracy"] for c in record["candidates"]] == [0.92, 0.89, 0.9, 0.92]
    # A tie on the mean goes to the smaller set.
    correct[(128, 1)] = 91
    record, _, chosen = search(_Format(), variant, job, candidates, train, spec, None, labels, 0.93)
    assert record["chosen"]["count"] == 64 and record["chosen"]["seed"] == 0 and len(chosen) == 64


def test_calibration_search_options_are_checked():
    with pytest.raises(ConfigError, match="at least 32 images each"):
        ExportConfig(calibration_search=(10, 300))
    with pytest.raises(ConfigError, match="drop calibration_data"):
        ExportConfig(calibration_search=(100,), calibration_data="photos/")
    proc = run_cli("export", "x", "--calibration-search", "100,lots")
    assert proc.returncode == 2 and "expected comma-separated image counts" in proc.stderr


@pytest.mark.slow
def test_calibration_search_on_real_images(trained_tiny, tmp_path):
    from edgecls.export import export

    from .conftest import TINY_ZIP

    result = export(trained_tiny.out, data=TINY_ZIP, out=tmp_path / "b", formats=("tflite_int8", "tflite_fp32"),
                    calibration_count=32, calibration_search=(32, 48), calibration_draws=2, isolate=False)
    rows = {r["name"]: r for r in result.rows}
    record = rows["tflite_int8"]["calibration_search"]
    assert [(c["count"], c["seed"]) for c in record["candidates"]] == [(32, 0), (32, 1), (48, 0), (48, 1)]
    assert all(0.0 <= c["accuracy"] <= 1.0 for c in record["candidates"])
    best = max(record["by_count"], key=lambda c: (record["by_count"][c]["mean"], -int(c)))
    assert record["chosen"]["count"] == int(best) and record["split"] == "validation (training data)"
    assert "calibration_search" not in rows["tflite_fp32"]
