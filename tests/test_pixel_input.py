"""Pixel-input models: the normalization folded into the first convolution (and the runtime side of
it: the padded frame, the flipped bit), or kept in the graph where it cannot be folded."""
import numpy as np
import pytest

from edgecls import runtime
from edgecls.data import load_dataset
from edgecls.errors import ConfigError
from edgecls.preprocess import PixelInput, PreprocessingSpec

pytestmark = pytest.mark.slow

# CIFAR-10's statistics (as edgecls train measures them), so the mean pixel is not an integer.
SPEC = PreprocessingSpec(input_size=(32, 32), mean=(0.4913, 0.4821, 0.4465), std=(0.2452, 0.2428, 0.2606))


@pytest.fixture(scope="module")
def images():
    return load_dataset("cifar10-sample").test.images[:64]


def _model(first, sequential=False, seed=0):
    """A small classifier whose first layer is `first` (a tf_keras layer), with BatchNorm
    statistics that are not the identity, so a wrong fold shows."""
    from edgecls._deps import keras

    k = keras()
    k.utils.set_random_seed(seed)
    body = [first, k.layers.BatchNormalization(name="bn"), k.layers.ReLU(name="relu"),
            k.layers.Conv2D(8, 3, padding="same", name="conv2"), k.layers.GlobalAveragePooling2D(name="pool"),
            k.layers.Dense(10, activation="softmax", name="out")]
    if sequential:
        model = k.Sequential([k.Input(shape=(32, 32, 3)), *body])
    else:
        x = inputs = k.Input(shape=(32, 32, 3), name="image")
        for layer in body:
            x = layer(x)
        model = k.Model(inputs, x)
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn")
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma, beta, rng.normal(0, 0.5, mean.shape), rng.uniform(0.5, 2, var.shape)])
    return model


def _conv(**kw):
    from edgecls._deps import keras

    return keras().layers.Conv2D(8, 3, name="stem", **kw)


def _outputs(model, spec, images):
    return model.predict(spec.apply(images), verbose=0)


@pytest.mark.parametrize("kw, pad", [
    (dict(padding="same", use_bias=False), (1, 1, 1, 1)),
    (dict(padding="same", strides=2), (0, 1, 0, 1)),  # TensorFlow pads an even input asymmetrically
    (dict(padding="valid", activation="relu"), (0, 0, 0, 0)),
])
def test_folded_model_computes_the_original_on_real_images(images, kw, pad):
    from edgecls.export.formats.tflite import pixel_input

    model = _model(_conv(**kw))
    folded = pixel_input(model, SPEC)
    assert folded.how == "folded into stem" and folded.layout.pad == pad
    # The mean pixel, rounded: 125.3, 122.9, 113.9 -> 125, 123, 114; the offset its average.
    assert folded.layout.pad_pixel == (125, 123, 114) and folded.layout.offset == -121
    ref, got = _outputs(model, SPEC, images), folded.model.predict(folded.layout.apply(images), verbose=0)
    # Only the border frame is rounded (by at most 0.3 of a pixel); a border padded with pixel 121
    # instead of each channel's mean differs by ~1e-2 here.
    np.testing.assert_allclose(got, ref, atol=2e-3)
    if pad == (0, 0, 0, 0):  # nothing rounded at all
        np.testing.assert_allclose(got, ref, atol=2e-5)


def test_folded_model_with_integer_mean_pixel_is_exact(images):
    from edgecls.export.formats.tflite import pixel_input

    spec = PreprocessingSpec(input_size=(32, 32), mean=(125 / 255, 123 / 255, 114 / 255), std=SPEC.std)
    for sequential in (False, True):
        model = _model(_conv(padding="same"), sequential=sequential)
        folded = pixel_input(model, spec)
        assert folded.how == "folded into stem"
        np.testing.assert_allclose(folded.model.predict(folded.layout.apply(images), verbose=0),
                                   _outputs(model, spec, images), atol=2e-5)


def test_normalization_stays_in_the_graph_where_it_cannot_be_folded(images):
    from edgecls._deps import keras
    from edgecls.export.formats.tflite import pixel_input

    k = keras()
    depthwise = _model(k.layers.DepthwiseConv2D(3, padding="same", name="stem"))
    inputs = k.Input(shape=(32, 32, 3))
    a = k.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    b = k.layers.Conv2D(4, 1, name="b")(inputs)  # the input feeds two layers
    x = k.layers.GlobalAveragePooling2D()(k.layers.Concatenate()([a, b]))
    shared = k.Model(inputs, k.layers.Dense(10, activation="softmax")(x))
    for model in (depthwise, shared):
        result = pixel_input(model, SPEC)
        assert result.how == "in the graph" and result.layout == PixelInput()
        np.testing.assert_allclose(result.model.predict(result.layout.apply(images), verbose=0),
                                   _outputs(model, SPEC, images), atol=2e-5)


def _runner(model, spec, images, tmp_path, calibration=None):
    from edgecls.export.formats.tflite import convert, pixel_input
    from edgecls.runtime import Runner, TFLiteBackend

    result = pixel_input(model, spec)
    if calibration is None:
        calibration = load_dataset("cifar10-sample").train.images[:200]
    path = tmp_path / "m.tflite"
    path.write_bytes(convert(result.model, "int8", result.layout.apply(calibration), uint8_input=not result.folded,
                             float_output=True))
    return Runner(TFLiteBackend(path, threads=1), spec, input_kind="pixels", pixel_input=result.layout), result


def test_runner_writes_the_frame_and_flips_the_top_bit(images, tmp_path):
    model = _model(_conv(padding="same", use_bias=False))
    runner, result = _runner(model, SPEC, images, tmp_path)
    backend = runner.backend
    # Calibrated on real pixels 0..255: input scale 1, so the quantized input is pixel - 128.
    assert backend.input_dtype == np.int8 and backend.input_shape[1:3] == (34, 34)
    assert runner._xor and not runner._identity
    for n in (1, 5):
        got = runner.predict(images[:n])
        np.testing.assert_array_equal(got, runner.predict_tensor(runner.preprocess(images[:n])))
    runner.predict(images[:1])
    tensor = backend.interpreter.get_tensor(backend.input["index"])
    np.testing.assert_array_equal(tensor[:, 1:33, 1:33].view(np.uint8), images[:1] ^ 0x80)
    np.testing.assert_array_equal(tensor[0, 0, 0].astype(int), np.array(result.layout.pad_pixel) - 128)
    np.testing.assert_array_equal(tensor[0, 33, 17].astype(int), np.array(result.layout.pad_pixel) - 128)
    # The int8 model answers like the float original on real images.
    agree = (runner.predict(images).argmax(1) == model.predict(SPEC.apply(images), verbose=0).argmax(1)).mean()
    assert agree >= 0.9


def test_runner_pads_through_the_lookup_table_when_the_input_scale_is_not_one(images, tmp_path):
    """Calibration images that never reach 0 or 255 give an input scale other than 1: no bit flip,
    the general table lookup, written inside the frame."""
    model = _model(_conv(padding="same", use_bias=False))
    calibration = np.clip(load_dataset("cifar10-sample").train.images[:200], 20, 235)
    runner, _ = _runner(model, SPEC, images, tmp_path, calibration=calibration)
    assert not runner._xor and runner._lut is not None and runner._frame is not None
    for n in (1, 4):
        np.testing.assert_array_equal(runner.predict(images[:n]), runner.predict_tensor(runner.preprocess(images[:n])))
    tensor = runner.backend.interpreter.get_tensor(runner.backend.input["index"])
    np.testing.assert_array_equal(tensor[0, 0], np.broadcast_to(runner._frame[0, 0, 0], (34, 3)))


def test_runner_copies_pixels_into_an_in_graph_model(images, tmp_path):
    from edgecls._deps import keras

    model = _model(keras().layers.DepthwiseConv2D(3, padding="same", name="stem"))
    runner, result = _runner(model, SPEC, images, tmp_path)
    assert runner._identity and runner.backend.input_dtype == np.uint8 and runner._frame is None
    np.testing.assert_array_equal(runner.predict(images[:3]), runner.predict_tensor(runner.preprocess(images[:3])))


def test_pixel_input_layout_pads_and_offsets():
    layout = PixelInput(offset=-121, pad=(0, 1, 2, 0), pad_pixel=(1, 2, 3))
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(1, 2, 3, 3)
    x = layout.apply(image)
    assert x.shape == (1, 3, 5, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0, :2, 2:], image[0].astype(np.float32) - 121)
    np.testing.assert_array_equal(x[0, 2, 0], np.array([1, 2, 3], np.float32) - 121)
    np.testing.assert_array_equal(x[0, 0, 1], np.array([1, 2, 3], np.float32) - 121)
    assert PixelInput.from_dict(layout.to_dict()) == layout and PixelInput.from_dict(None) == PixelInput()
    for bad in (dict(pad=(1, 1)), dict(pad=(-1, 0, 0, 0)), dict(pad_pixel=(0, 0, 256)), dict(colour=1)):
        with pytest.raises(ConfigError):
            PixelInput.from_dict(bad)
    with pytest.raises(ConfigError, match="input_kind"):
        runtime.Runner.__init__(object.__new__(runtime.Runner), None, SPEC, pixel_input=layout)
