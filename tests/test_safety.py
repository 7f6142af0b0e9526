"""Safe mode from the parsed configuration: hostile model files in every container and
serialization style are refused before anything in them runs.

Each hostile model holds a layer (or initializer) whose constructor writes a marker file once the
test arms it: the classes are registered in this process, so Keras *would* build them if edgecls
let the file through. The marker must never appear without --unsafe.
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from edgecls.errors import ModelError

from .conftest import TINY_ZIP, assert_one_line_error, run_cli

pytestmark = pytest.mark.filterwarnings("ignore")
MARKER: dict = {"path": None}
PREPROCESSING = {"scale": 1 / 255}


def _touch_marker():
    if MARKER["path"]:
        Path(MARKER["path"]).write_text("payload ran")


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PAYLOAD_RAN"
    MARKER["path"] = str(path)
    yield path
    MARKER["path"] = None


def _tf_keras_classes():
    from edgecls._deps import keras

    k = keras()
    if not hasattr(_tf_keras_classes, "cache"):
        @k.saving.register_keras_serializable(package="hostile")
        class Payload(k.layers.Layer):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                _touch_marker()

            def call(self, x):
                return x

        @k.saving.register_keras_serializable(package="hostile")
        class PayloadInit(k.initializers.Initializer):
            def __init__(self):
                _touch_marker()

            def __call__(self, shape, dtype=None):
                return k.initializers.GlorotUniform(seed=0)(shape, dtype)

            def get_config(self):
                return {}

        _tf_keras_classes.cache = (k, Payload, PayloadInit)
    return _tf_keras_classes.cache


def _keras3_payload():
    import keras as keras3

    if not hasattr(_keras3_payload, "cache"):
        @keras3.saving.register_keras_serializable(package="hostile3")
        class Payload3(keras3.layers.Layer):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                _touch_marker()

            def call(self, x):
                return x

        _keras3_payload.cache = (keras3, Payload3)
    return _keras3_payload.cache


def _head(k, x):
    x = k.layers.GlobalAveragePooling2D()(x)
    return k.layers.Dense(2, activation="softmax")(x)


def _tf_keras_models():
    """name -> a tf_keras classifier carrying a payload in that position."""
    k, Payload, PayloadInit = _tf_keras_classes()
    models = {}
    inp = k.Input((8, 8, 3))
    models["direct"] = k.Model(inp, _head(k, Payload(name="payload")(k.layers.Conv2D(4, 3)(inp))))
    inner_in = k.Input((8, 8, 3))
    inner = k.Model(inner_in, Payload(name="payload")(k.layers.Conv2D(4, 3)(inner_in)), name="inner")
    inp = k.Input((8, 8, 3))
    models["nested"] = k.Model(inp, _head(k, inner(inp)))
    inp = k.Input((8, 8, 3))
    seq = k.layers.Reshape((8, 24))(inp)
    seq = k.layers.TimeDistributed(k.layers.Dense(4, kernel_initializer=PayloadInit()), name="per_row")(seq)
    models["time_distributed"] = k.Model(inp, k.layers.Dense(2, activation="softmax")(k.layers.Flatten()(seq)))
    inp = k.Input((8, 8, 3))
    seq = k.layers.Reshape((8, 24))(inp)
    seq = k.layers.Bidirectional(k.layers.SimpleRNN(4, kernel_initializer=PayloadInit()), name="bidi")(seq)
    models["bidirectional"] = k.Model(inp, k.layers.Dense(2, activation="softmax")(seq))
    shared = Payload(name="shared_payload")
    inp = k.Input((8, 8, 3))
    a, b = shared(inp), shared(k.layers.Conv2D(3, 1)(inp))
    models["shared"] = k.Model(inp, _head(k, k.layers.Add()([a, b])))
    inp = k.Input((8, 8, 3))
    models["lambda"] = k.Model(inp, _head(k, k.layers.Lambda(lambda t: (_touch_marker(), t)[1], name="code")(inp)))
    return models


def _restyle_zip(path: Path, style: str) -> Path:
    """The same .keras file with its config.json written in another JSON style."""
    out = path.with_name(f"{path.stem}-{style}.keras")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "config.json":
                config = json.loads(data)
                data = (json.dumps(config, indent=2) if style == "pretty" else
                        json.dumps(config, separators=(",", ":"))).encode()
            dst.writestr(info, data)
    return out


def _restyle_h5(path: Path, style: str) -> Path:
    import h5py

    out = path.with_name(f"{path.stem}-{style}.h5")
    shutil.copyfile(path, out)
    with h5py.File(out, "r+") as f:
        raw = f.attrs["model_config"]
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        f.attrs["model_config"] = (json.dumps(config, indent=2) if style == "pretty" else
                                   json.dumps(config, separators=(",", ":")))
    return out


def _refused(path, marker, fragment):
    from edgecls.modelio import load_model as load_source

    with pytest.raises(ModelError, match=fragment) as err:
        load_source(path, PREPROCESSING)
    assert "--unsafe" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists(), f"{path}: the payload ran in safe mode"
    return str(err.value)


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory):
    """Every tf_keras payload model in .keras (as saved, pretty, compact), .h5 (pretty, compact),
    a SavedModel and an edgecls run directory."""
    root = tmp_path_factory.mktemp("hostile")
    files = {}
    MARKER["path"] = None
    for name, model in _tf_keras_models().items():
        keras_file = root / f"{name}.keras"
        model.save(keras_file)
        files[(name, "keras2")] = keras_file
        files[(name, "keras2-pretty")] = _restyle_zip(keras_file, "pretty")
        files[(name, "keras2-compact")] = _restyle_zip(keras_file, "compact")
        h5 = root / f"{name}.h5"
        model.save(h5)
        files[(name, "h5-pretty")] = _restyle_h5(h5, "pretty")
        files[(name, "h5-compact")] = _restyle_h5(h5, "compact")
        if name in ("direct", "nested", "lambda"):
            saved = root / f"{name}_savedmodel"
            model.save(saved, save_format="tf")
            files[(name, "savedmodel")] = saved
            run = root / f"{name}_run"
            run.mkdir()
            shutil.copyfile(keras_file, run / "model.keras")
            (run / "preprocessing.json").write_text(json.dumps({"input_size": [8, 8], "scale": 1 / 255}))
            (run / "labels.json").write_text(json.dumps(["a", "b"]))
            files[(name, "run_dir")] = run
    return files


# The layer path and the class named in the refusal (a custom class is named as the file records it:
# by its module in a .keras file, by its registered name in an .h5 file or a SavedModel).
REFUSAL = {"direct": "'payload' .*Payload", "nested": "'inner' > 'payload' .*Payload",
           "time_distributed": "'per_row' .*PayloadInit", "bidirectional": "'bidi' .*(PayloadInit|SimpleRNN layer, which is not a layer of an image classifier)",
           "shared": "'shared_payload' .*Payload", "lambda": "'code' .*Lambda layer"}


def test_every_container_and_style_is_refused_before_anything_runs(hostile_files, marker):
    tried = 0
    for (name, container), path in hostile_files.items():
        _refused(path, marker, REFUSAL[name])
        tried += 1
    assert tried == len(hostile_files) >= 30


def test_keras3_payloads_are_refused_in_every_style(tmp_path, marker):
    keras3, Payload3 = _keras3_payload()
    MARKER["path"] = None
    inp = keras3.Input((8, 8, 3))
    x = Payload3(name="payload")(keras3.layers.Conv2D(4, 3)(inp))
    direct = keras3.Model(inp, keras3.layers.Dense(2, activation="softmax")(keras3.layers.GlobalAveragePooling2D()(x)))
    inner_in = keras3.Input((8, 8, 3))
    inner = keras3.Model(inner_in, Payload3(name="payload")(inner_in), name="inner")
    inp = keras3.Input((8, 8, 3))
    nested = keras3.Model(inp, keras3.layers.Dense(2)(keras3.layers.GlobalAveragePooling2D()(inner(inp))))
    inp = keras3.Input((8, 8, 3))
    lam = keras3.layers.Lambda(lambda t: (_touch_marker(), t)[1], name="code")(inp)
    lam_model = keras3.Model(inp, keras3.layers.Dense(2)(keras3.layers.GlobalAveragePooling2D()(lam)))
    MARKER["path"] = str(marker)
    for name, model, fragment in (("direct", direct, "'payload' .*Payload3"),
                                  ("nested", nested, "'inner' > 'payload' .*Payload3"),
                                  ("lambda", lam_model, "'code'.*Lambda layer")):
        MARKER["path"] = None
        path = tmp_path / f"{name}.keras"
        model.save(path)
        MARKER["path"] = str(marker)
        for variant in (path, _restyle_zip(path, "pretty"), _restyle_zip(path, "compact")):
            _refused(variant, marker, fragment)


def test_a_savedmodel_graph_calling_python_is_refused(tmp_path, marker):
    import tensorflow as tf

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)])
        def serve(self, x):
            y = tf.py_function(lambda t: (_touch_marker(), t)[1], [x], tf.float32)
            return {"scores": tf.nn.softmax(tf.reshape(y, [-1, 192])[:, :2])}

    module = Module()
    path = tmp_path / "pyfunc_savedmodel"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    _refused(path, marker, "EagerPyFunc.*Python code")


def test_tf_op_layers_may_only_name_math_and_array_functions(tmp_path):
    from edgecls.safety import first_problem

    def config(fn):
        return {"class_name": "Functional", "config": {"name": "m", "layers": [
            {"module": "tf_keras.src.layers.core.tf_op_layer", "class_name": "TFOpLambda", "registered_name": "TFOpLambda",
             "name": "op", "config": {"name": "op", "function": fn}}]}}

    assert first_problem([config("nn.relu")]) is None
    assert first_problem([config("math.add")]) is None
    assert first_problem([config("reshape")]) is None
    for fn in ("io.write_file", "py_function", "numpy_function", "debugging.assert_equal", "compat.v1.io.write_file",
               None, 3):
        where, why = first_problem([config(fn)])
        assert where == ["m", "op"] and "TensorFlow function" in why, fn
    where, why = first_problem([{"class_name": "Conv2D", "module": "os", "config": {"name": "c"}}])
    assert "module 'os'" in why
    assert first_problem([{"class_name": ["Lambda"], "config": {}}])[1].startswith("holds a serialized object")
    assert "not a Keras activation" in first_problem([{"class_name": "function", "module": "keras.activations",
                                                        "config": "exec", "registered_name": "function"}])[1]


def test_built_in_models_pass(tmp_path):
    """No false alarms on Keras's own applications (Keras 3 and tf_keras) and edgecls's zoo."""
    import keras as keras3

    from edgecls._deps import keras
    from edgecls.safety import check_model_file
    from edgecls.zoo import create_model, list_models

    k = keras()
    for name in list_models():
        path = tmp_path / f"{name}.keras"
        create_model(name, input_shape=(32, 32, 3), num_classes=10).save(path)
        check_model_file(path)
    k.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35, classes=2).save(tmp_path / "m2.h5")
    check_model_file(tmp_path / "m2.h5")
    keras3.applications.ConvNeXtTiny(weights=None, input_shape=(32, 32, 3), classes=2).save(tmp_path / "cnx.keras")
    check_model_file(tmp_path / "cnx.keras")


def test_unsafe_runs_the_code_as_documented(hostile_files, marker):
    """--unsafe (safe_mode=False) hands the file to Keras: a Lambda's code runs, a registered class
    is built. Only for files the user trusts."""
    from edgecls.modelio import load_model as load_source

    source = load_source(hostile_files[("lambda", "h5-compact")], PREPROCESSING, safe_mode=False)
    assert source.kind == "h5" and marker.exists()
    marker.unlink()
    source = load_source(hostile_files[("direct", "keras2")], PREPROCESSING, safe_mode=False)
    assert source.kind == "keras2" and marker.exists()


def test_cli_refuses_in_one_line_and_unsafe_explains_what_it_cannot_build(hostile_files, tmp_path):
    """In a fresh process the hostile classes are not defined: safe mode refuses; --unsafe cannot
    build the class and says so in one line. The export never starts either way."""
    out = tmp_path / "bundle"
    path = hostile_files[("nested", "keras2-compact")]
    common = ["--data", TINY_ZIP, "--out", out, "--scale", "0.00392156862745098", "--formats", "tflite_fp32"]
    assert_one_line_error(run_cli("export", path, *common), "'inner' > 'payload'", "--unsafe")
    assert_one_line_error(run_cli("export", path, *common, "--unsafe"), "'inner' > 'payload'",
                          "this Python does not define it")
    assert_one_line_error(run_cli("eval", hostile_files[("lambda", "run_dir")], "--data", TINY_ZIP), "Lambda", "--unsafe")
    assert not out.exists()
    assert not os.listdir(tmp_path)


def _config_with(layer: dict) -> dict:
    return {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "config": {"name": "image", "batch_input_shape": [None, 8, 8, 3]}, "name": "image"},
        {**layer, "name": layer["config"]["name"]}]}}


@pytest.mark.parametrize("layer, why", [
    ({"class_name": "StringLookup", "config": {"name": "lookup", "vocabulary": "/etc/hostname"}}, "StringLookup layer"),
    ({"class_name": "TextVectorization", "config": {"name": "tv", "vocabulary": "vocab.txt"}}, "TextVectorization layer"),
    ({"class_name": "IntegerLookup", "config": {"name": "ids", "vocabulary": "ids.txt"}}, "IntegerLookup layer"),
    ({"class_name": "TFSMLayer", "config": {"name": "sm", "filepath": "/models/other"}}, "TFSMLayer layer"),
    ({"class_name": "Rescaling", "config": {"name": "r", "scale": "/etc/passwd"}}, "names a file .*'/etc/passwd'"),
    ({"class_name": "Normalization", "config": {"name": "n", "mean": "~/stats.npy"}}, "names a file"),
    ({"class_name": "Dense", "config": {"name": "d", "units": 2, "kernel_initializer": {
        "class_name": "Constant", "config": {"value": "file:///etc/shadow"}}}}, "names a file"),
])
def test_layers_outside_the_classifier_allowlist_or_naming_files_are_refused(layer, why):
    """The decision is an allowlist (safety.LAYERS): a built-in layer that reads a vocabulary or a
    model from a path is refused by its class, and any layer argument shaped like a path by its value."""
    from edgecls.safety import first_problem

    where, reason = first_problem([_config_with(layer)])
    assert where[-1] == layer["config"]["name"] or where[-1] == "d"
    assert __import__("re").search(why, reason), reason


def test_a_classifier_layer_with_ordinary_arguments_passes():
    from edgecls.safety import first_problem

    assert first_problem([_config_with({"class_name": "Conv2D", "config": {
        "name": "conv", "filters": 4, "kernel_size": [3, 3], "padding": "same", "data_format": "channels_last",
        "activation": "relu", "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}}}})]) is None


def test_a_savedmodel_reading_an_asset_or_saving_a_file_is_refused(tmp_path):
    """A table initialized from a file (an asset, here an absolute path outside the model) and a
    serving function that writes a checkpoint (SaveV2): both pass a denylist of Python and file
    ops, neither passes the allowlist of a classifier's graph ops."""
    import tensorflow as tf

    from edgecls.safety import check_model_file

    secret = tmp_path / "outside.txt"
    secret.write_text("alpha\nbeta\n")

    class Table(tf.Module):
        def __init__(self):
            super().__init__()
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.TextFileInitializer(str(secret), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                                              tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), -1)

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)])
        def serve(self, x):
            bias = tf.cast(self.table.lookup(tf.constant("beta")), tf.float32)
            return {"scores": tf.nn.softmax(tf.reshape(x, [-1, 192])[:, :2] + bias)}

    table = Table()
    tf.saved_model.save(table, str(tmp_path / "asset_sm"), signatures={"serving_default": table.serve})
    with pytest.raises(ModelError, match="asset files|not an operation of an image classifier"):
        check_model_file(tmp_path / "asset_sm")

    class Saver(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)])
        def serve(self, x):
            tf.raw_ops.SaveV2(prefix=str(tmp_path / "written"), tensor_names=["x"], shape_and_slices=[""], tensors=[x])
            return {"scores": tf.nn.softmax(tf.reshape(x, [-1, 192])[:, :2])}

    saver = Saver()
    tf.saved_model.save(saver, str(tmp_path / "save_sm"), signatures={"serving_default": saver.serve})
    with pytest.raises(ModelError, match="runs SaveV2 .*not an operation of an image classifier"):
        check_model_file(tmp_path / "save_sm")
    assert not list(tmp_path.glob("written*"))


def test_savedmodels_of_real_classifiers_pass(tmp_path):
    """No false alarms from the graph allowlist: the zoo and a Keras application as SavedModels."""
    import tensorflow as tf

    from edgecls._deps import keras
    from edgecls.safety import check_model_file
    from edgecls.zoo import create_model, list_models

    for name in list_models():
        tf.saved_model.save(create_model(name, input_shape=(32, 32, 3), num_classes=10), str(tmp_path / name))
        check_model_file(tmp_path / name)
    app = keras().applications.EfficientNetB0(weights=None, input_shape=(64, 64, 3), classes=3)
    tf.saved_model.save(app, str(tmp_path / "effnet"))
    check_model_file(tmp_path / "effnet")
