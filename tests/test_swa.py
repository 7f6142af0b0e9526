"""Stochastic weight averaging: the average, its persistence across a resume, the BatchNorm
statistics recomputed for it, and the learning-rate schedule around it, on real images."""
import numpy as np
import pytest

from edgecls import TrainConfig, train
from edgecls.errors import ConfigError
from edgecls.training.swa import STATE_FILE, WeightAverage, mean_weights, recompute_batch_norm

from .conftest import TINY_ZIP, assert_one_line_error, run_cli


def test_weight_average_is_the_running_mean_and_survives_a_restart(tmp_path):
    rng = np.random.default_rng(0)
    epochs = {e: [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=5).astype(np.float32)] for e in range(6)}
    path = tmp_path / STATE_FILE
    avg = WeightAverage(path, first_epoch=3)
    assert not avg.update(2, epochs[2])  # before the window
    assert avg.update(3, epochs[3]) and avg.update(4, epochs[4])
    # A restarted process picks the average up from disk; an epoch it already counted is not
    # counted again (a resumed run repeats the epoch whose checkpoint was not written).
    again = WeightAverage(path, first_epoch=3)
    assert again.count == 2 and again.epochs == [3, 4]
    assert not again.update(4, epochs[0])
    assert again.update(5, epochs[5])
    got = again.weights(epochs[0])
    for i in range(2):
        np.testing.assert_allclose(got[i], np.mean([epochs[e][i] for e in (3, 4, 5)], axis=0), rtol=1e-6)
        assert got[i].dtype == np.float32
    assert not list(tmp_path.glob("*.tmp*"))


def _bn_model(k):
    inp = k.Input((32, 32, 3))
    x = k.layers.Conv2D(8, 3, use_bias=False, name="conv")(inp)
    x = k.layers.BatchNormalization(name="bn1", momentum=0.9)(x)
    x = k.layers.ReLU()(x)
    x = k.layers.Conv2D(8, 3, use_bias=False, name="conv2")(x)
    x = k.layers.BatchNormalization(name="bn2", momentum=0.9)(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    return k.Model(inp, k.layers.Dense(10)(x))


def test_mean_weights_is_the_element_wise_mean_and_refuses_other_architectures():
    from edgecls._deps import keras

    k = keras()
    a, b, c = _bn_model(k), _bn_model(k), _bn_model(k)
    rng = np.random.default_rng(0)
    for m in (a, b, c):
        m.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in m.get_weights()])
    mean = mean_weights([a, b, c])
    for got, wa, wb, wc in zip(mean, a.get_weights(), b.get_weights(), c.get_weights()):
        assert got.dtype == wa.dtype
        np.testing.assert_allclose(got, (wa.astype(np.float64) + wb + wc) / 3, rtol=1e-6, atol=1e-6)
    inp = k.Input((32, 32, 3))
    other = k.Model(inp, k.layers.Dense(10)(k.layers.GlobalAveragePooling2D()(k.layers.Conv2D(4, 3)(inp))))
    with pytest.raises(ConfigError, match="model 2 .*same architecture"):
        mean_weights([a, other])
    with pytest.raises(ConfigError, match="at least two"):
        mean_weights([a])


def test_batch_norm_statistics_are_the_size_weighted_mean_of_the_batch_statistics():
    from edgecls._deps import keras
    from edgecls.data import load_dataset

    k = keras()
    k.utils.set_random_seed(0)
    model = _bn_model(k)
    images = load_dataset(TINY_ZIP).train.images.astype(np.float32) / 255.0
    batches = [images[i:i + 48] for i in range(0, len(images), 48)]
    assert len(batches[-1]) != 48  # the uneven last batch must weigh less
    trainable_before = [w.numpy().copy() for w in model.trainable_weights]

    seen = recompute_batch_norm(model, batches)
    assert seen == len(images)
    for name in ("bn1", "bn2"):
        bn = model.get_layer(name)
        feed = k.Model(model.input, bn.input)
        stats = [(len(b), feed(b, training=True).numpy().reshape(-1, 8)) for b in batches]
        n = sum(size for size, _ in stats)
        mean = sum(size * f.mean(0) for size, f in stats) / n
        var = sum(size * f.var(0) for size, f in stats) / n
        np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-3)
        assert bn.momentum == 0.9
    for before, w in zip(trainable_before, model.trainable_weights):
        np.testing.assert_array_equal(before, w.numpy())


def _plain(model):
    """The weights averaging acts on: everything but BatchNorm's moving statistics."""
    return {w.name: v for w, v in zip(model.weights, model.get_weights()) if "moving_" not in w.name}


def test_training_with_averaging_ships_the_average_and_resumes_with_it(tmp_path, monkeypatch):
    import edgecls.training.swa
    from edgecls._deps import keras
    from edgecls.preprocess import PreprocessingSpec

    k = keras()
    # BatchNorm statistics must come from the stream training saw (augmented: padded crops with
    # black borders), not from the plain images.
    fed, original = [], edgecls.training.swa.recompute_batch_norm

    def watched(model, batches):
        batches = [tuple(np.asarray(t) for t in b) for b in batches]
        fed.extend(b[0] for b in batches)
        return original(model, batches)

    monkeypatch.setattr(edgecls.training.swa, "recompute_batch_norm", watched)
    seen, rates = {}, {}

    class Watch(k.callbacks.Callback):
        def __init__(self, stop_at=None):
            super().__init__()
            self.stop_at = stop_at

        def on_epoch_end(self, epoch, logs=None):
            # The optimizer reports the rate of the last step it took: this epoch's last.
            rates[epoch] = float(self.model.optimizer.learning_rate)
            seen[epoch] = _plain(self.model)
            if epoch == self.stop_at:
                raise KeyboardInterrupt

    out = tmp_path / "run"
    config = TrainConfig(data=str(TINY_ZIP), arch="resnet8", epochs=5, swa_epochs=2, learning_rate=0.08,
                         swa_learning_rate=0.03, warmup_epochs=1, batch_size=64, out=str(out), verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[Watch(stop_at=3)])  # after the first averaged epoch
    state = WeightAverage(tmp_path / "run.partial" / STATE_FILE, first_epoch=3)
    assert state.count == 1 and state.epochs == [3]
    result = train(config, resume=True, callbacks=[Watch()])

    m = result.metrics
    black = PreprocessingSpec.load(out / "preprocessing.json").apply(np.zeros((1, 1, 1, 3), np.uint8))[0, 0, 0]
    x = np.concatenate(fed)
    bordered = np.mean([np.allclose(img[0], black) or np.allclose(img[-1], black) or np.allclose(img[:, 0], black)
                        or np.allclose(img[:, -1], black) for img in x])
    assert len(x) == m["split"]["train"] and bordered > 0.5 and m["swa"]["batch_norm_augmented"]
    assert m["swa"]["averaged_epochs"] == [4, 5] and m["swa"]["lr"] == 0.03
    assert m["swa"]["batch_norm_images"] == m["split"]["train"]
    assert 0.0 <= m["swa"]["last_epoch_test_accuracy"] <= 1.0
    assert m["config"]["swa_lr"] == 0.03
    # The rate decays to the averaging rate by the first averaged epoch and stays there.
    assert sorted(rates) == [0, 1, 2, 3, 4]
    assert rates[3] == pytest.approx(0.03) and rates[4] == pytest.approx(0.03)
    assert rates[1] > rates[2] > 0.03
    shipped = _plain(result.model)
    for name, value in shipped.items():
        np.testing.assert_allclose(value, (seen[3][name] + seen[4][name]) / 2, rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(shipped[n], seen[4][n]) for n in shipped)
    # What was saved is the average too.
    from edgecls.modelio import load_trained

    saved = _plain(load_trained(out).model)
    for name, value in shipped.items():
        np.testing.assert_allclose(saved[name], value, rtol=1e-6)


@pytest.mark.parametrize("kw,message", [
    (dict(epochs=3, swa_epochs=3), "less than epochs"),
    (dict(epochs=5, swa_epochs=1), "at least 2"),
    (dict(epochs=5, swa_epochs=2, recipe="tutorial"), "'edgecls' recipe"),
    (dict(epochs=5, swa_epochs=2, swa_learning_rate=0.0), "swa_learning_rate must be positive"),
])
def test_invalid_averaging_options_fail_when_built(kw, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kw)


def test_averaging_rate_defaults_to_half_the_peak():
    assert TrainConfig(arch="resnet8", epochs=10, swa_epochs=4).swa_lr == pytest.approx(0.05)
    assert TrainConfig(arch="resnet8", epochs=10, swa_epochs=4, learning_rate=0.04).swa_lr == pytest.approx(0.02)


def test_cli_swa_bad_option_is_a_one_line_error(tmp_path):
    proc = run_cli("train", "--data", TINY_ZIP, "--epochs", "2", "--swa-epochs", "5", "--out", tmp_path / "o")
    assert_one_line_error(proc, "swa_epochs must be at least 2 and less than epochs (2)")
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()
