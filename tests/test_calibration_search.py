"""--calibration-search: the size whose outputs are closest to the float model's on average (mean
squared difference) is chosen, its closest draw shipped, and every draw's accuracy, agreement and
error kept (exact numbers from scripted candidates)."""
from types import SimpleNamespace

import numpy as np
import pytest

from edgecls.config import CalibrationConfig, ExportConfig
from edgecls.errors import ConfigError
from edgecls.export.calibration import choose, fidelity, search
from edgecls.export.formats.base import Converted

from .conftest import run_cli


class _Format:
    def layout(self, config):
        return "NHWC"

    def convert(self, variant, job):
        return Converted(bytes([len(job.representative)]))


def _search(monkeypatch, flips, noise=None, right=None):
    """Run search() on 100 validation images whose float model predicts class 0 with probability
    0.9 (right on the 50 labelled 0); each (size, seed) flips flips[(size, seed)] of them to class 1,
    right[(size, seed)] of those among the ones labelled 1, and adds noise[(size, seed)] to every
    output."""
    from edgecls.export import calibration as module
    from edgecls.runtime import isolated

    reference = np.tile(np.array([[0.9, 0.1]], np.float32), (100, 1))
    labels = np.zeros(100, np.int64)
    labels[:50] = 1  # the float model is right on the 50 images labelled 0

    def outputs(path, images, layout="NHWC", threads=None, timeout=None):
        key = tuple(map(int, path.stem.split("-")))
        out = reference + (noise or {}).get(key, 0.0)
        gains = (right or {}).get(key, 0)  # flips of images the float model gets wrong (labels 1)
        flipped = np.r_[np.arange(gains), np.arange(50, 50 + flips[key] - gains)]
        out[flipped] = [0.1, 0.9]
        return out

    monkeypatch.setattr(isolated, "outputs", outputs)
    # The job is a stand-in, not a dataclass: replace() copies its attributes.
    monkeypatch.setattr(module, "replace", lambda obj, **kw: SimpleNamespace(**{**vars(obj), **kw}))
    train = np.zeros((500, 4, 4, 3), np.uint8)
    spec = SimpleNamespace(apply=lambda x: x.astype(np.float32))
    candidates = [(count, seed, np.arange(count)) for count, seed in flips]
    job = SimpleNamespace(config=SimpleNamespace(validation=SimpleNamespace(timeout_s=60)), representative=None, calibration=None)
    return search(_Format(), SimpleNamespace(format="tflite"), job, candidates, train, spec,
                  np.zeros((100, 4, 4, 3), np.float32), labels, reference)


def test_the_closest_size_wins_and_its_closest_draw_ships(monkeypatch):
    # Flipped images out of 100 (each flip is the only output difference): size 64 agrees 96.5% on
    # average, size 128 97.5%, and the squared difference follows the flips.
    flips = {(64, 0): 2, (64, 1): 5, (128, 0): 3, (128, 1): 2}
    record, converted, chosen = _search(monkeypatch, flips)
    assert record["by_count"]["64"]["agreement"] == {"mean": 0.965, "min": 0.95, "max": 0.98}
    assert record["by_count"]["128"]["agreement"] == {"mean": 0.975, "min": 0.97, "max": 0.98}
    assert record["chosen"]["count"] == 128 and record["chosen"]["seed"] == 1
    assert record["chosen"]["agreement"] == 0.98
    assert record["chosen"]["mse"] == pytest.approx(2 * 0.8 ** 2 * 2 / 200)
    assert record["criterion"] == "mean squared output difference from float"
    assert len(chosen) == 128 and converted.data == bytes([128])
    assert [c["accuracy"] for c in record["candidates"]] == [0.48, 0.45, 0.47, 0.48]
    assert record["float_accuracy"] == 0.5 and record["images"] == 100


def test_accuracy_does_not_choose_the_lower_error_does_then_the_smaller_size(monkeypatch):
    # Same flips everywhere; (64, 1) is the most accurate (its 3 flips are right), but size 128's
    # outputs are closer to float: the lower mean error wins, then the lower error among its draws.
    flips = {(64, 0): 3, (64, 1): 3, (128, 0): 3, (128, 1): 3}
    noise = {(64, 0): 0.02, (64, 1): 0.02, (128, 0): 0.01, (128, 1): 0.0}
    record, _, chosen = _search(monkeypatch, flips, noise, right={(64, 1): 3})
    top = max(record["candidates"], key=lambda c: c["accuracy"])  # (64, 1): 0.53, the others 0.47
    assert (top["count"], top["seed"], top["accuracy"]) == (64, 1, 0.53)
    assert (record["chosen"]["count"], record["chosen"]["seed"]) == (128, 1) and len(chosen) == 128
    # A full tie goes to the smaller size and the lower seed.
    record, _, chosen = _search(monkeypatch, flips)
    assert (record["chosen"]["count"], record["chosen"]["seed"]) == (64, 0) and len(chosen) == 64


def test_choose_and_fidelity_on_exact_numbers():
    measured = [{"count": 100, "seed": 0, "agreement": 0.99, "mse": 2e-5},
                {"count": 100, "seed": 1, "agreement": 0.97, "mse": 1e-5},
                {"count": 300, "seed": 0, "agreement": 0.99, "mse": 3e-5},
                {"count": 300, "seed": 1, "agreement": 0.99, "mse": 1e-5}]
    # Mean error 1.5e-5 for 100, 2e-5 for 300 (which agrees more): 100 wins, and its closest draw.
    count, best = choose(measured)
    assert count == 100 and best is measured[1]
    measured[1]["mse"], measured[2]["mse"] = 2e-5, 4e-5  # 100 still the closer size; its draws tie
    assert choose(measured) == (100, measured[0])  # ... and the one agreeing more ships
    measured[2]["mse"] = 2e-5  # now 300's mean error (1.5e-5) is the lower
    assert choose(measured) == (300, measured[3])
    out = np.array([[0.6, 0.4], [0.2, 0.8]], np.float32)
    ref = np.array([[0.7, 0.3], [0.6, 0.4]], np.float32)
    got = fidelity(out, ref, np.array([0, 0]))
    assert got["accuracy"] == 0.5 and got["agreement"] == 0.5
    assert got["mse"] == pytest.approx((0.01 + 0.01 + 0.16 + 0.16) / 4)
    assert got["max_abs_diff"] == pytest.approx(0.4)


def test_a_candidate_outside_the_tolerance_is_not_chosen_while_another_is_within():
    from edgecls.export.validate import Tolerance

    tolerance = Tolerance(min_agreement=0.95, max_abs_diff=0.5, max_accuracy_drop=2.0)
    measured = [{"count": 100, "seed": 0, "agreement": 0.99, "mse": 1e-5, "max_abs_diff": 0.55},
                {"count": 100, "seed": 1, "agreement": 0.98, "mse": 2e-5, "max_abs_diff": 0.45},
                {"count": 300, "seed": 0, "agreement": 0.97, "mse": 2e-5, "max_abs_diff": 0.30}]
    count, best = choose(measured, tolerance)  # without (100, 0): a tie on error, 100 agrees more
    assert (count, best["seed"]) == (100, 1)
    assert choose(measured)[1]["seed"] == 0  # no tolerance given: the lowest error
    measured[1]["max_abs_diff"] = measured[2]["max_abs_diff"] = 0.9  # none within: the choice stands
    assert choose(measured, tolerance)[1] is measured[0]


def test_calibration_search_options_are_checked():
    with pytest.raises(ConfigError, match="at least 32 images each"):
        ExportConfig(calibration=CalibrationConfig(search=(10, 300)))
    with pytest.raises(ConfigError, match="drop calibration_data"):
        ExportConfig(calibration=CalibrationConfig(search=(100,), data="photos/"))
    proc = run_cli("export", "x", "--calibration-search", "100,lots")
    assert proc.returncode == 2 and "expected comma-separated integers" in proc.stderr


@pytest.mark.slow
def test_calibration_search_on_real_images(trained_tiny, tmp_path):
    from edgecls.export import export

    from .conftest import TINY_ZIP

    result = export(trained_tiny.out, data=TINY_ZIP, out=tmp_path / "b", formats=("tflite_int8", "tflite_fp32"),
                    isolate=False, calibration=CalibrationConfig(count=32, search=(32, 48), draws=2))
    rows = {r["name"]: r for r in result.rows}
    record = rows["tflite_int8"]["calibration_search"]
    assert [(c["count"], c["seed"]) for c in record["candidates"]] == [(32, 0), (32, 1), (48, 0), (48, 1)]
    assert all(0.0 <= c["accuracy"] <= 1.0 and 0.0 <= c["agreement"] <= 1.0 and c["mse"] >= 0.0
               for c in record["candidates"])
    count, best = choose(record["candidates"])
    assert (record["chosen"]["count"], record["chosen"]["seed"]) == (count, best["seed"])
    assert record["split"] == "validation (training data)"
    assert "calibration_search" not in rows["tflite_fp32"]
