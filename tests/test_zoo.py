"""Model zoo: registry, parameters, MACs, error for unknown names."""
import json

import pytest

from edgecls.errors import ModelError
from edgecls.zoo import create_model, list_models, model_stats

from .conftest import assert_one_line_error, run_cli


def test_registry_lists_the_three_families():
    assert list_models() == ["mobilenet_tiny", "resnet8", "seed_cnn"]


def test_seed_cnn_matches_the_keras_tutorial_network():
    model = create_model("seed_cnn")
    kinds = [l.__class__.__name__ for l in model.layers]
    assert kinds == ["InputLayer", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Conv2D", "Flatten", "Dense", "Dense", "Activation"]
    # Hand count: conv1 30*30*27*32 + conv2 13*13*288*64 + conv3 4*4*576*64 + 1024*64 + 64*10.
    assert model_stats(model) == {"params": 122_570, "trainable_params": 122_570,
                                  "macs": 777_600 + 3_115_008 + 589_824 + 65_536 + 640}


def test_resnet8_is_mlperf_tiny_size():
    stats = model_stats(create_model("resnet8"))
    assert 77_000 <= stats["params"] <= 79_000
    assert stats["macs"] == 12_501_632


def test_mobilenet_tiny_is_depthwise_separable_and_qat_friendly():
    model = create_model("mobilenet_tiny", num_classes=5)
    kinds = {l.__class__.__name__ for l in model.layers}
    assert "DepthwiseConv2D" in kinds and "Rescaling" not in kinds
    assert model.output_shape == (None, 5)


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(ModelError, match="unknown architecture 'resnet9'; known architectures: mobilenet_tiny, resnet8, seed_cnn"):
        create_model("resnet9")


def test_zoo_cli_lists_params_and_macs():
    proc = run_cli("zoo", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["seed_cnn"]["macs"] == 4_548_608 and rows["resnet8"]["params"] == 78_426
    text = run_cli("zoo").stdout
    assert "resnet8" in text and "12,501,632" in text


def test_train_unknown_arch_is_one_line_error(tmp_path):
    proc = run_cli("train", "--arch", "vgg99", "--out", tmp_path / "x", "--epochs", "1")
    assert_one_line_error(proc, "unknown architecture 'vgg99'", "resnet8")
    assert not (tmp_path / "x").exists()
