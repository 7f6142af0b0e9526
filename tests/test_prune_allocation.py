"""How pruning spreads its target sparsity over the layers: uniform, or by LAMP scores."""
import numpy as np
import pytest

from edgecls.config import ExportConfig, PruneConfig
from edgecls.errors import ConfigError

from .conftest import TINY_ZIP


def test_lamp_scores_are_each_weights_share_of_the_tail():
    from edgecls.optimize.prune import lamp_scores

    # squares in order 1, 4, 9: 1 / (1 + 4 + 9), 4 / (4 + 9), 9 / 9
    np.testing.assert_allclose(lamp_scores(np.array([[3.0, -1.0], [2.0, 0.0]]))[1:], [1 / 14, 4 / 13, 1.0])
    assert lamp_scores(np.zeros(5)).max() == 0.0  # an all-zero kernel: no division by zero


def _kernels(model):
    from edgecls.optimize.common import kernel_layers

    return {layer.name: w.numpy() for layer, w in kernel_layers(model)}


def test_lamp_allocation_reaches_the_target_unevenly_and_ignores_weight_scale(trained_tiny):
    from edgecls.optimize.prune import lamp_allocation

    model = trained_tiny.model
    sizes = {name: k.size for name, k in _kernels(model).items()}
    targets = lamp_allocation(model, 0.75)
    assert set(targets) == set(sizes)
    overall = sum(targets[n] * sizes[n] for n in sizes) / sum(sizes.values())
    assert overall == pytest.approx(0.75, abs=1e-4)
    assert max(targets.values()) - min(targets.values()) > 0.2, targets  # not uniform
    biggest = max(sizes, key=sizes.get)
    assert targets[biggest] > 0.75  # the largest layer gives up more than the average
    assert all(0.0 <= v < 1.0 for v in targets.values())

    # Scores are scale-free: multiplying a layer's kernel (as BatchNorm lets training do) moves nothing.
    layer = model.get_layer(biggest)
    saved = layer.get_weights()
    try:
        layer.set_weights([saved[0] * 25.0, *saved[1:]])
        assert lamp_allocation(model, 0.75) == pytest.approx(targets)
    finally:
        layer.set_weights(saved)

    skip = sorted(sizes, key=sizes.get)[:1]
    kept = lamp_allocation(model, 0.6, skip_layers=skip)
    assert set(kept) == set(sizes) - set(skip)
    rest = [n for n in sizes if n not in skip]
    assert sum(kept[n] * sizes[n] for n in rest) / sum(sizes[n] for n in rest) == pytest.approx(0.6, abs=1e-4)


def test_pruning_with_lamp_allocation_reaches_each_layers_target(trained_tiny):
    from edgecls.data import load_dataset
    from edgecls.optimize import prune
    from edgecls.preprocess import PreprocessingSpec

    spec = PreprocessingSpec.load(trained_tiny.out / "preprocessing.json")
    result = prune(trained_tiny.model, load_dataset(TINY_ZIP), spec, sparsity=0.75, epochs=1, batch_size=32,
                   allocation="lamp")
    d = result.details
    assert d["allocation"] == "lamp" and d["kernel_sparsity"] == pytest.approx(0.75, abs=0.005)
    for name, target in d["target_per_layer"].items():
        assert d["per_layer"][f"{name}/kernel"] == pytest.approx(target, abs=0.01), name
    assert len({round(v, 2) for v in d["target_per_layer"].values()}) > 2
    assert _kernels(trained_tiny.model)  # the caller's model is untouched: still dense
    assert all((k != 0).mean() > 0.99 for k in _kernels(trained_tiny.model).values())


def test_allocation_options():
    from edgecls.cli import build_parser, config_from_args

    args = build_parser().parse_args(["export", "m", "--out", "o", "--sparsity-allocation", "lamp", "--sparsity", "0.75"])
    assert config_from_args(ExportConfig, args).prune.allocation == "lamp"
    assert ExportConfig().prune.allocation == "uniform"
    with pytest.raises(ConfigError, match="sparsity_allocation must be one of uniform, lamp"):
        ExportConfig(prune=PruneConfig(allocation="global"))
    with pytest.raises(ConfigError, match="2:4 structured sparsity is 50% in every layer"):
        ExportConfig(prune=PruneConfig(structured_2x4=True, allocation="lamp"))
