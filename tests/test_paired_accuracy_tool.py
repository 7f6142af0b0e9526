"""tools/release/paired_accuracy.py: the paired (McNemar) comparison of two models on the same images."""
import json

import numpy as np
import pytest

from .conftest import ROOT, TINY_ZIP, load_tool


@pytest.fixture(scope="module")
def tool():
    return load_tool("paired_accuracy")


def test_mcnemar_exact_is_the_two_sided_binomial_tail(tool):
    assert tool.mcnemar_exact(0, 5) == pytest.approx(2 / 32)        # 5 discordant, all one way
    assert tool.mcnemar_exact(1, 4) == pytest.approx(2 * 6 / 32)    # P(X <= 1) = 6/32, doubled
    assert tool.mcnemar_exact(3, 3) == 1.0 and tool.mcnemar_exact(0, 0) == 1.0
    assert tool.mcnemar_exact(180, 235) == tool.mcnemar_exact(235, 180) == pytest.approx(0.00795, abs=5e-5)


def test_paired_counts_only_the_images_where_correctness_differs(tool):
    a = np.array([1, 1, 0, 0, 1], bool)
    b = np.array([1, 0, 1, 1, 1], bool)
    r = tool.paired(a, b)
    assert (r["images"], r["only_a_right"], r["only_b_right"]) == (5, 1, 2)
    assert (r["top1_a"], r["top1_b"]) == (0.6, 0.8)


def test_a_model_against_itself_on_real_images(tool, tmp_path, capsys):
    out = tmp_path / "paired.json"
    bundle = str(ROOT / "models" / "resnet8")
    assert tool.main([bundle, bundle, "--variant", "tflite_int8", "--data", str(TINY_ZIP), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["images"] == 100 and r["only_a_right"] == r["only_b_right"] == 0 and r["mcnemar_p"] == 1.0
    assert r["top1_a"] == r["top1_b"] > 0.5


def test_an_unknown_variant_is_a_one_line_error(tool, capsys):
    bundle = str(ROOT / "models" / "resnet8")
    assert tool.main([bundle, bundle, "--variant", "nope", "--data", str(TINY_ZIP)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("paired_accuracy: error: no variant 'nope'")


def test_labels_are_matched_by_class_name(tool, tmp_path):
    """A folder of two classes, 'ship' and 'truck' (dataset indices 0 and 1), is scored in the
    model's own class order (8 and 9), as `edgecls bench` scores it: compared index to index, a
    CIFAR-10 model would be right on none of these images."""
    import zipfile

    with zipfile.ZipFile(TINY_ZIP) as z:
        z.extractall(tmp_path, [n for n in z.namelist() if n.split("/")[2] in ("ship", "truck")])
    out = tmp_path / "paired.json"
    bundle = str(ROOT / "models" / "resnet8")
    assert tool.main([bundle, bundle, "--variant", "tflite_int8", "--data", str(tmp_path / "cifar10-tiny"), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["images"] == 20 and r["top1_a"] == r["top1_b"] > 0.5


def test_flip_tta_on_one_side_is_that_runner_on_each_image_and_its_mirror(tool, tmp_path):
    from edgecls import runtime
    from edgecls.data import load_dataset

    out = tmp_path / "paired.json"
    bundle = str(ROOT / "models" / "resnet8")
    assert tool.main([bundle, bundle, "--variant", "tflite_int8", "--tta-b", "flip", "--data", str(TINY_ZIP), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert (r["tta_a"], r["tta_b"]) == (None, "flip")
    test = load_dataset(str(TINY_ZIP)).test
    probs = runtime.load(bundle, variant="tflite_int8", tta="flip").predict(test.images)
    correct_b = probs.argmax(1) == test.labels  # the fixture's classes are CIFAR-10's, in its order
    assert r["top1_b"] == pytest.approx(float(correct_b.mean()), abs=1e-6)
    assert r["top1_a"] - r["only_a_right"] / 100 + r["only_b_right"] / 100 == pytest.approx(r["top1_b"], abs=1e-9)
