"""The runtime on real images, including where TensorFlow cannot be imported."""
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from edgecls import runtime
from edgecls.data import load_dataset
from edgecls.errors import ConfigError, DataError, ModelError
from edgecls.preprocess import PreprocessingSpec, load_image

from .conftest import ROOT, TINY_ZIP

pytestmark = pytest.mark.slow

# Makes `import tensorflow` (and Keras) fail in the child process, as on a device without it.
BLOCK_TF = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'tf_keras', 'keras', 'tensorflow_model_optimization', 'tf2onnx'):
            raise ImportError('blocked: ' + name)
        return None
sys.meta_path.insert(0, _Block())
"""


def test_runtime_works_where_tensorflow_cannot_be_imported(sample_bundle, tmp_path):
    with zipfile.ZipFile(TINY_ZIP) as zf:
        image = tmp_path / "cat.jpg"
        image.write_bytes(zf.read("cifar10-tiny/test/cat/0000.jpg"))
    code = BLOCK_TF + f"""
import json
try:
    import tensorflow
    raise SystemExit('tensorflow imported')
except ImportError:
    pass
from edgecls import runtime
out = {{}}
for variant in ("tflite_int8", "tflite_int8_pixels", "onnx_int8", "tflite_fp32"):
    runner = runtime.load({str(sample_bundle.out)!r}, variant=variant, threads=1)
    probs = runner.predict([{str(image)!r}])
    out[variant] = probs.tolist()
print(json.dumps(out))
assert not [m for m in sys.modules if m.startswith('tensorflow')]
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # Same numbers as in this process (where TensorFlow is available).
    for variant, probs in out.items():
        here = runtime.load(sample_bundle.out, variant=variant, threads=1).predict([image])
        np.testing.assert_allclose(np.array(probs), here, rtol=0, atol=1e-6)


def test_runtime_preprocessing_matches_the_training_pipeline(sample_bundle):
    """The runtime's tensor for an image file equals the tf.data pipeline's for the same file."""
    from edgecls.data.pipeline import make_dataset

    runner = runtime.load(sample_bundle.out, variant="tflite_fp32")
    with zipfile.ZipFile(runtime.__file__.replace("runtime/__init__.py", "data/cifar10_sample.zip")) as zf:
        names = [n for n in zf.namelist() if "/test/" in n and n.endswith(".jpg")][:16]
        raw = [zf.read(n) for n in names]
    from_files = runner.preprocess(raw)
    images = np.stack([load_image(r) for r in raw])
    x, _ = next(iter(make_dataset(images, np.zeros(len(images), np.int64), runner.preprocessing, 16, 10)))
    np.testing.assert_array_equal(from_files, x.numpy())


def test_lone_file_and_bundle_file_loading(sample_bundle, tmp_path):
    test = load_dataset("cifar10-sample").test
    inside = runtime.load(sample_bundle.out / "tflite_int8.tflite")  # uses the bundle's manifest
    assert inside.name == "tflite_int8" and inside.labels[0] == "airplane"
    lone = tmp_path / "m.tflite"
    lone.write_bytes((sample_bundle.out / "tflite_int8.tflite").read_bytes())
    with pytest.raises(ConfigError, match="not inside a bundle"):
        runtime.load(lone)
    spec = PreprocessingSpec.load(sample_bundle.out / "preprocessing.json")
    alone = runtime.load(lone, preprocessing=spec)
    np.testing.assert_array_equal(alone.predict(test.images[:50]), inside.predict(test.images[:50]))
    # Batches larger than the model's batch of 1 run in one resized call or in chunks: same result.
    one_by_one = np.concatenate([inside.predict(test.images[i:i + 1]) for i in range(7)])
    np.testing.assert_allclose(inside.predict(test.images[:7]), one_by_one, atol=1e-6)


def test_runtime_bad_input(sample_bundle, tmp_path):
    runner = runtime.load(sample_bundle.out, variant="tflite_fp32")
    with pytest.raises(DataError, match="64x64 but the model takes 32x32"):
        runner.predict(np.zeros((1, 64, 64, 3), np.uint8))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="not a readable image"):
        runner.predict([bad])
    with pytest.raises(ModelError, match="no variant 'tflite_int4'.*available: tflite_fp32"):
        runtime.load(sample_bundle.out, variant="tflite_int4")
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(sample_bundle.out, copy)
    data = bytearray((copy / "tflite_int8.tflite").read_bytes())
    data[-100] ^= 0xFF
    (copy / "tflite_int8.tflite").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the manifest.*refusing"):
        runtime.load(copy, variant="tflite_int8")
    (copy / "onnx_int8.onnx").unlink()
    with pytest.raises(ModelError, match="missing"):
        runtime.load(copy, variant="onnx_int8")


def test_int8_lookup_table_path_equals_the_float_path(sample_bundle):
    """predict() on uint8 images fuses preprocessing and input quantization into one table lookup
    written straight into the interpreter; it must give exactly what the step-by-step path gives."""
    test = load_dataset("cifar10-sample").test
    runner = runtime.load(sample_bundle.out, variant="tflite_int8")
    assert runner._lut is not None and runner._lut.shape == (768,)
    for n in (1, 7, 64):
        images = test.images[:n]
        np.testing.assert_array_equal(runner.predict(images), runner.predict_tensor(runner.preprocess(images)))
    np.testing.assert_array_equal(runner.predict(test.images[:14:2]), runner.predict_tensor(runner.preprocess(test.images[:14:2])))
    fp32 = runtime.load(sample_bundle.out, variant="tflite_fp32")
    assert fp32._lut is None


def test_the_bound_call_gives_the_general_paths_answers_and_steps_aside_for_other_batches(sample_bundle, tmp_path):
    """After the first batch of a shape, predict() runs that shape through the backend's bound call
    (TFLiteBackend.bind_fill); a batch of another size in between resizes the interpreter, the
    bound call sees it and steps aside, and every answer is the step-by-step path's."""
    test = load_dataset("cifar10-sample").test
    runner = runtime.load(sample_bundle.out, variant="tflite_int8", threads=1)
    one, three = test.images[:1], test.images[1:4]
    expected_one = runner.predict_tensor(runner.preprocess(one))
    expected_three = runner.predict_tensor(runner.preprocess(three))
    calls = []
    assert runner._bound is None
    np.testing.assert_array_equal(runner.predict(one), expected_one)  # the general path, which binds
    assert runner._bound is not None and runner._bound[0] == one.shape
    bound = runner._bound[1]
    runner._bound = (one.shape, lambda images: calls.append(len(images)) or bound(images))
    np.testing.assert_array_equal(runner.predict(one), expected_one)
    assert calls == [1]
    np.testing.assert_array_equal(runner.predict(three), expected_three)  # another size: general path
    assert calls == [1]
    assert bound(one) is None  # the interpreter now holds a batch of 3
    np.testing.assert_array_equal(runner.predict(one), expected_one)  # stepped aside, resized back
    np.testing.assert_array_equal(runner.predict(one), expected_one)
    assert calls == [1, 1, 1]
    flipped = runtime.load(sample_bundle.out, variant="tflite_int8", tta="flip")
    flipped.predict(one)
    assert flipped._bound is None  # test-time augmentation: never bound
    # A lone file: its first scores say it ends in probabilities, then it is bound too.
    lone = tmp_path / "m.tflite"
    lone.write_bytes((sample_bundle.out / "tflite_int8.tflite").read_bytes())
    alone = runtime.load(lone, preprocessing=PreprocessingSpec.load(sample_bundle.out / "preprocessing.json"))
    np.testing.assert_array_equal(alone.predict(one), expected_one)
    assert alone.outputs == "probabilities" and alone._bound is not None
    np.testing.assert_array_equal(alone.predict(one), expected_one)


def test_a_padded_pixel_input_file_with_float_outputs_is_bound_and_never_returns_non_finite_scores():
    """The shipped resnet8's tflite_int8_pixels pads its input (a folded 'same' convolution) and
    returns float32: the bound call writes the frame and the flipped pixels into the input tensor,
    gives the step-by-step path's answers, and scores that are not all finite leave it for the
    general path (which checks them)."""
    test = load_dataset("cifar10-sample").test
    runner = runtime.load(ROOT / "models" / "resnet8", variant="tflite_int8_pixels", threads=1)
    assert runner._xor and runner._frame is not None and not runner._always_finite
    one, three = test.images[:1], test.images[1:4]
    expected_one = runner.predict_tensor(runner.preprocess(one))
    for _ in range(3):
        np.testing.assert_array_equal(runner.predict(one), expected_one)
        assert runner._bound is not None
        np.testing.assert_array_equal(runner.predict(three), runner.predict_tensor(runner.preprocess(three)))
    broken = runtime.load(ROOT / "models" / "resnet8", variant="tflite_int8_pixels", threads=1)
    broken.backend.bind_fill = lambda n, fill: (lambda images: np.full((n, 10), np.nan, np.float32))
    np.testing.assert_array_equal(broken.predict(one), expected_one)  # binds the NaN call
    assert broken._bound is not None
    np.testing.assert_array_equal(broken.predict(one), expected_one)  # its NaN never comes back


def test_pixel_input_variant_takes_raw_pixels(sample_bundle):
    """tflite_int8_pixels has the normalization folded into seed_cnn's first ('valid') convolution:
    its int8 input is `pixel - 128` (scale 1), so the runner only flips each byte's top bit; its
    output is float32. It agrees with the normalized-input int8 on real images."""
    test = load_dataset("cifar10-sample").test
    pixels = runtime.load(sample_bundle.out, variant="tflite_int8_pixels")
    artifact = pixels.artifact
    assert artifact["normalization"] == "folded into conv1" and artifact["pixel_input"]["pad"] == [0, 0, 0, 0]
    assert pixels.input_kind == "pixels" and pixels._xor and pixels._frame is None
    scale, zero = pixels.backend.input_quantization
    assert pixels.backend.input_dtype == np.int8 and scale == 1.0 and zero == -128 - artifact["pixel_input"]["offset"]
    assert pixels.backend.output_dtype == np.float32
    np.testing.assert_array_equal(pixels.preprocess(test.images[:2]),
                                  test.images[:2].astype(np.float32) + artifact["pixel_input"]["offset"])
    np.testing.assert_array_equal(pixels.predict(test.images[:9]), pixels.predict_tensor(pixels.preprocess(test.images[:9])))
    normalized = runtime.load(sample_bundle.out, variant="tflite_int8")
    agree = (pixels.predict(test.images).argmax(1) == normalized.predict(test.images).argmax(1)).mean()
    assert agree >= 0.95


def test_one_runner_shared_by_threads_gives_the_sequential_answers(sample_bundle):
    from concurrent.futures import ThreadPoolExecutor

    test = load_dataset("cifar10-sample").test
    for variant in ("tflite_int8", "tflite_int8_pixels", "onnx_int8"):
        runner = runtime.load(sample_bundle.out, variant=variant)
        chunks = [test.images[i:i + 5] for i in range(0, 200, 5)]
        expected = [runner.predict(c) for c in chunks]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(runner.predict, chunks))
        for a, b in zip(expected, got):
            np.testing.assert_array_equal(a, b)


def test_omitted_variant_keeps_its_record_but_not_its_file(sample_bundle, tmp_path):
    import shutil

    from edgecls.bundle import load_bundle, omit_artifact
    from edgecls.errors import ModelError

    copy = tmp_path / "b"
    shutil.copytree(sample_bundle.out, copy)
    before = load_bundle(copy).artifact("tflite_pruned_fp32")
    omit_artifact(copy, "tflite_pruned_fp32", "left out to keep it small")
    bundle = load_bundle(copy)
    assert "tflite_pruned_fp32" not in bundle.names() and not (copy / before["file"]).exists()
    record = bundle.manifest["omitted"][0]
    assert record["validation"] == before["validation"] and record["omitted_reason"] == "left out to keep it small"
    with pytest.raises(ModelError, match="left out of this bundle"):
        runtime.load(copy, variant="tflite_pruned_fp32")
    runtime.load(copy, variant="tflite_int8").predict(np.zeros((1, 32, 32, 3), np.uint8))


def test_flip_tta_averages_each_image_with_its_mirror_image(sample_bundle):
    """tta="flip" is the mean of the probabilities for the images and their left-right mirrors, on
    every input path (float, int8 lookup table, folded pixel input, ONNX) and for image files."""
    test = load_dataset("cifar10-sample").test
    images = test.images[:9]
    for variant in ("tflite_fp32", "tflite_int8", "tflite_int8_pixels", "onnx_int8"):
        plain = runtime.load(sample_bundle.out, variant=variant)
        tta = runtime.load(sample_bundle.out, variant=variant, tta="flip")
        assert plain.tta is None and tta.tta == "flip"
        expected = (plain.predict(images) + plain.predict(images[:, :, ::-1].copy())) / 2
        np.testing.assert_allclose(tta.predict(images), expected, rtol=1e-6, atol=1e-7, err_msg=variant)
        assert not np.allclose(tta.predict(images), plain.predict(images)), variant  # the mirror images count
    with zipfile.ZipFile(TINY_ZIP) as zf:
        data = zf.read("cifar10-tiny/test/ship/0003.jpg")
    image = load_image(data, (32, 32))[None]
    np.testing.assert_allclose(tta.predict([data]), tta.predict(image), rtol=1e-6)
    with pytest.raises(ConfigError, match="unknown test-time augmentation 'rotate'"):
        runtime.load(sample_bundle.out, variant="tflite_int8", tta="rotate")


def test_predict_and_bench_take_a_lone_model_file_with_its_preprocessing(tmp_path):
    """A .tflite/.onnx file edgecls did not make: the CLI takes its preprocessing and labels; the input
    size and layout come from the file."""
    import shutil

    from PIL import Image

    from .conftest import FIXTURES, TINY_ZIP, assert_one_line_error, run_cli

    lone = tmp_path / "their_model.onnx"
    shutil.copyfile(FIXTURES / "bundles" / "seed_cnn_s8s8" / "onnx_fp32.onnx", lone)
    spec = json.loads((FIXTURES / "bundles" / "seed_cnn_s8s8" / "preprocessing.json").read_text())
    labels = tmp_path / "labels.json"
    shutil.copyfile(FIXTURES / "bundles" / "seed_cnn_s8s8" / "labels.json", labels)
    image = tmp_path / "cat.png"
    Image.new("RGB", (48, 40), (90, 60, 30)).save(image)
    flags = ["--scale", "1/255", "--mean", *map(str, spec["mean"]), "--std", *map(str, spec["std"]), "--labels", labels]
    lone_run = run_cli("predict", lone, image, *flags, "--json")
    assert lone_run.returncode == 0, lone_run.stderr
    bundled = run_cli("predict", FIXTURES / "bundles" / "seed_cnn_s8s8", image, "--variant", "onnx_fp32", "--json")
    top = json.loads(lone_run.stdout)["results"][0]["top"]
    assert [t["label"] for t in top] == [t["label"] for t in json.loads(bundled.stdout)["results"][0]["top"]]
    assert top[0]["score"] == pytest.approx(json.loads(bundled.stdout)["results"][0]["top"][0]["score"], abs=1e-5)
    assert_one_line_error(run_cli("predict", lone, image), "not inside a bundle", "--scale")
    assert_one_line_error(run_cli("predict", FIXTURES / "bundles" / "seed_cnn_s8s8", image, "--scale", "1/255"),
                          "a bundle carries its own preprocessing")
    out = tmp_path / "bench.json"
    proc = run_cli("bench", lone, "--repeats", "1", *flags, "--data", TINY_ZIP, "--runs", "5", "--warmup", "1", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    row = report["variants"][0]
    assert row["name"] == "their_model" and row["status"] == "ok" and row["images"] == 100
    assert report["bundle"] == str(lone) and 0.0 < row["accuracy"] <= 1.0


def test_a_lone_file_ending_in_logits_gets_probabilities(tmp_path):
    """A model file outside a bundle says nothing about its outputs: its first scores decide, and
    logits get the softmax (predict prints probabilities, not raw scores)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgecls import runtime

    scale = numpy_helper.from_array(np.array([[10.0, -10.0, 3.0]], np.float32), "scale")
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2], keepdims=0), helper.make_node("Mul", ["m", "scale"], ["y"])]
    graph = helper.make_graph(nodes, "logits", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 32, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [scale])
    path = tmp_path / "logits.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    runner = runtime.load(path, preprocessing={"scale": 1 / 255})
    probs = runner.predict(images)
    assert runner.outputs == "logits"
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    means = images.astype(np.float32).mean(axis=(1, 2)) / 255 * np.array([10.0, -10.0, 3.0], np.float32)
    expected = np.exp(means - means.max(1, keepdims=True))
    np.testing.assert_allclose(probs, expected / expected.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_a_lone_files_precision_is_read_from_the_file(tmp_path):
    """bench's row for a file edgecls did not make says its precision, read from its tensors and
    operators (runtime extras only), not "as given"."""
    from edgecls.bench.local import bundle_for_file
    from edgecls.runtime.backends import open_backend
    from edgecls.runtime.precision import file_precision

    models = ROOT / "models" / "resnet8"
    expected = {"tflite_fp32": "fp32", "tflite_fp16": "fp16", "tflite_dynamic": "dynamic", "tflite_int8": "int8",
                "tflite_qat_int8": "int8", "onnx_fp32": "fp32", "onnx_int8": "int8"}
    for name, precision in expected.items():
        path = next(models.glob(f"{name}.*"))
        assert file_precision(open_backend(path)) == precision, name
    folder = bundle_for_file(models / "tflite_dynamic.tflite", tmp_path / "b", {"scale": 1 / 255})
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["artifacts"][0]["precision"] == "dynamic"


def test_a_dynamic_batch_model_runs_large_inputs_in_bounded_batches():
    """A model whose batch is dynamic is not resized to every image at once (10,000 images of a 32x32
    MobileNet took 7 GB of activations): the runtime splits large inputs, with the same outputs."""
    from edgecls.runtime.backends import MAX_BATCH, open_backend

    rng = np.random.default_rng(0)
    x = rng.normal(size=(MAX_BATCH + 44, 32, 32, 3)).astype(np.float32)
    for name in ("tflite_fp32.tflite", "onnx_fp32.onnx"):
        backend = open_backend(ROOT / "models" / "resnet8" / name)
        assert backend.dynamic_batch, name
        whole = backend.run(x)
        if name.endswith(".tflite"):
            assert backend._batch <= MAX_BATCH
        parts = np.concatenate([backend.run(x[:100]), backend.run(x[100:])])
        np.testing.assert_allclose(whole, parts, rtol=1e-5, atol=1e-6)
        assert whole.shape == (len(x), 10)
