"""Model zoo: registry, parameters, MACs, error for unknown names."""
import json

import pytest

from edgecls.errors import ModelError
from edgecls.zoo import create_model, list_models, model_stats

from .conftest import assert_one_line_error, run_cli


def test_registry_lists_the_three_families_and_the_teacher():
    from edgecls.zoo import get_model_info

    assert list_models() == ["mobilenet_tiny", "resnet20", "resnet8", "seed_cnn"]
    assert [m for m in list_models() if get_model_info(m).teacher] == ["resnet20"]


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


def test_resnet20_is_he_et_al_size():
    """ResNet-20 for CIFAR: 0.27 M parameters; 19 convolutions of 3x3 plus two 1x1 projections."""
    model = create_model("resnet20")
    stats = model_stats(model)
    assert 270_000 <= stats["params"] <= 275_000 and stats["macs"] == 40_813_184
    convs = [l for l in model.layers if l.__class__.__name__ == "Conv2D"]
    assert sorted(tuple(c.kernel_size) for c in convs).count((3, 3)) == 19 and len(convs) == 21


def test_mobilenet_tiny_is_depthwise_separable_and_qat_friendly():
    model = create_model("mobilenet_tiny", num_classes=5)
    kinds = {l.__class__.__name__ for l in model.layers}
    assert "DepthwiseConv2D" in kinds and "Rescaling" not in kinds
    assert model.output_shape == (None, 5)


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(ModelError, match="unknown architecture 'resnet9'; known architectures: mobilenet_tiny, resnet20, resnet8, seed_cnn"):
        create_model("resnet9")


def test_zoo_cli_lists_params_and_macs():
    proc = run_cli("zoo", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["seed_cnn"]["macs"] == 4_548_608 and rows["resnet8"]["params"] == 78_426
    assert rows["resnet20"]["teacher"] and not rows["resnet8"]["teacher"]
    text = run_cli("zoo").stdout
    assert "resnet8" in text and "12,501,632" in text
    assert [line.split()[0] for line in text.splitlines() if "[teacher" in line] == ["resnet20"]


def test_train_unknown_arch_is_one_line_error(tmp_path):
    proc = run_cli("train", "--arch", "vgg99", "--out", tmp_path / "x", "--epochs", "1")
    assert_one_line_error(proc, "unknown architecture 'vgg99'", "resnet8")
    assert not (tmp_path / "x").exists()
