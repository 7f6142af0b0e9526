"""Hostile and careless inputs, by class, each case generated from what edgecls declares rather than
listed by hand: every string field of the bench report schema carries markup to the HTML page;
every numeric field of every file kind edgecls reads gets non-finite, huge, wrong-type and deeply
nested values; every numeric and path option of every command gets 0, negative, NaN and empty values.
Nothing outside the test's folder is written and no user file changes in any of them."""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from edgecls.cli import Bounded, _text, build_parser, main
from edgecls.errors import ConfigError, EdgeclsError, ModelError
from edgecls.schema import SCHEMAS

from .conftest import FIXTURES, ROOT, TINY_ZIP

BENCH_REPORT = FIXTURES / "reports" / "bench-resnet8-2t.json"
BUNDLE = FIXTURES / "bundles" / "seed_cnn_s8s8"
PAYLOAD = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>$\\frac{a}{b}$ &amp;"
WATCHED = [ROOT / "models", ROOT / "tests" / "fixtures", ROOT / "docs", ROOT / "edgecls"]


def _snapshot():
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for root in WATCHED for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


# -- paths into a schema, and documents built from them ------------------------------------------------
def _types(schema: dict) -> set:
    kinds = schema.get("type", [])
    found = set([kinds] if isinstance(kinds, str) else kinds)
    for option in schema.get("anyOf", []):
        found |= _types(option)
    return found


def schema_fields(schema: dict, want: set, path=()):
    """Paths (tuples; "[]" an array item, "{}" a map value, "{key}" a map key) to every field of
    `schema` whose type is in `want`."""
    if _types(schema) & want:
        yield path
    for option in schema.get("anyOf", []):
        yield from (p for p in schema_fields({k: v for k, v in option.items() if k != "type"}, want, path))
    for key, sub in schema.get("properties", {}).items():
        yield from schema_fields(sub, want, (*path, key))
    if isinstance(schema.get("items"), dict):
        yield from schema_fields(schema["items"], want, (*path, "[]"))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and extra:
        yield from schema_fields(extra, want, (*path, "{}"))
        if "string" in want:
            yield (*path, "{key}")


def put(node, path, value):
    """`node` with `value` at `path` (see schema_fields), making what is missing on the way."""
    if not path:
        return value
    key, rest = path[0], path[1:]
    if key == "[]":
        node = node if isinstance(node, list) and node else [None]
        node[0] = put(node[0], rest, value)
        return node
    if key in ("{}", "{key}"):
        node = node if isinstance(node, dict) and node else {"k": None}
        first = next(iter(node))
        if key == "{key}":
            node[value] = node.pop(first)
        else:
            node[first] = put(node[first], rest, value)
        return node
    node = node if isinstance(node, dict) else {}
    node[key] = put(node.get(key), rest, value)
    return node


# -- 4: markup from a bench report never reaches the page ------------------------------------------
class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.handlers = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]


def _markup(page: str) -> tuple[list, list]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags, parser.handlers


SHORT_PAYLOADS = ("<script>alert(1)</script>", "<i onclick=x>")


def _full_bench_report() -> dict:
    """The recorded bench report with every optional part present (diagnosis, repeats, a warning)."""
    good = json.loads(BENCH_REPORT.read_text())
    good["variants"][0].update(
        diagnosis={"layers": [{"name": "stem", "op": "CONV_2D", "sqnr_db": 30.0, "own_db": 31.0, "scope": "s"}],
                   "against": "float model", "images": 32, "metric": "SQNR"},
        repeats={"rounds": 2, "p50_ms": [0.25, 0.26], "throughput_ips": [5000.0, 5100.0], "load_ms": [9.0, 9.5]},
        warning="departs from its validation", description="d")
    return good


def test_a_payload_in_every_string_field_of_the_bench_report_stays_text(tmp_path):
    from edgecls.report import Report

    good = _full_bench_report()
    clean_tags, _ = _markup(Report([good]).html(plots={}))
    fields = sorted(set(schema_fields(SCHEMAS["bench"], {"string"})))
    assert len(fields) >= 30, fields
    rendered = refused = 0
    for path in fields:
        for payload in (PAYLOAD, *SHORT_PAYLOADS):  # the longest that fits the field's length
            doc = put(copy.deepcopy(good), path, payload)
            file = tmp_path / "report.json"
            file.write_text(json.dumps(doc))
            try:
                report = Report.load([file])
                break
            except EdgeclsError:
                continue
        else:
            refused += 1  # a constant: the schema refuses the payload itself
            continue
        tags, handlers = _markup(report.html(plots={}))
        assert "script" not in tags and "img" not in tags and not handlers, path
        assert set(tags) <= set(clean_tags) | {"h2", "h3", "ul", "li", "p", "pre"}, (path, set(tags) - set(clean_tags))
        rendered += 1
    assert rendered >= 30 and refused <= 3, (rendered, refused)  # constants, and correct_bits (base64 only)
    # Every field at once, plots included (names drawn as plain text, never mathtext).
    doc = copy.deepcopy(good)
    for path in fields:
        for payload in (PAYLOAD, *SHORT_PAYLOADS):
            trial = put(copy.deepcopy(doc), path, payload)
            try:
                from edgecls.schema import check

                check(trial, "bench", "x", EdgeclsError)
                doc = trial
                break
            except EdgeclsError:
                continue
    out = tmp_path / "page"
    file = tmp_path / "all.json"
    file.write_text(json.dumps(doc))
    assert main(["report", str(file), "--out", str(out)]) == 0
    tags, handlers = _markup((out / "report.html").read_text())
    assert "script" not in tags and not handlers
    assert (out / "plots" / "sizes.png").stat().st_size > 1000 and (out / "plots" / "accuracy_vs_latency.svg").is_file()


# -- 7: every numeric field of every file kind, and depth ------------------------------------------
BAD_NUMBERS = {"NaN": "NaN", "infinity": "Infinity", "overflow": "1e999", "huge integer": "1" + "0" * 5000,
               "string": '"12"', "list": "[[1]]", "deep": "[" * 200_000 + "]" * 200_000}


def _tune_record():
    from edgecls.tune import KIND, SCHEMA

    return {"kind": KIND, "schema": SCHEMA, "model": "m", "data": "d", "space": {}, "elapsed_s": 1.0,
            "stages": {"tflite": {"bundle": "work/tflite", "why": "x", "seconds": 1.0, "variants": ["tflite_fp32"],
                                  "same_file_as": {}}},
            "candidates": [{"id": "tflite_fp32@1t", "artifact": "tflite_fp32", "stage": "tflite",
                            "variant": "tflite_fp32", "status": "ok", "threads": 1, "accuracy": 0.5, "latency_ms": 1.0}]}


def _loaders(tmp_path):
    """kind -> (a good document, a function reading it from a file as edgecls does)."""
    from edgecls.bundle import load_bundle
    from edgecls.preprocess import PreprocessingSpec
    from edgecls.report import Report
    from edgecls.tune import read_record

    def bundle(doc):
        folder = tmp_path / "bundle"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(BUNDLE, folder)
        (folder / "manifest.json").write_text(doc)
        load_bundle(folder)

    def file_of(read):
        def run(doc):
            path = tmp_path / "doc.json"
            path.write_text(doc)
            read(path)
        return run

    return {
        "manifest": (json.loads((BUNDLE / "manifest.json").read_text()), bundle),
        "bench": (json.loads(BENCH_REPORT.read_text()), file_of(lambda p: Report.load([p]))),
        "tune": (_tune_record(), file_of(read_record)),
        "preprocessing": (json.loads((BUNDLE / "preprocessing.json").read_text()), file_of(PreprocessingSpec.load)),
    }


def test_every_numeric_field_of_every_file_kind_refuses_bad_numbers(tmp_path):
    before = _snapshot()
    cases = 0
    for kind, (good, read) in _loaders(tmp_path).items():
        read(json.dumps(good))  # the good document loads
        fields = sorted(set(schema_fields(SCHEMAS[kind], {"number", "integer"})))
        assert fields, kind
        for path in fields:
            for name, raw in BAD_NUMBERS.items():
                doc = json.dumps(put(copy.deepcopy(good), path, "__BAD__")).replace('"__BAD__"', raw)
                with pytest.raises(EdgeclsError, match=".") as err:
                    try:
                        read(doc)
                    except EdgeclsError:
                        raise
                    else:
                        raise AssertionError(f"{kind} {path} {name}: accepted")
                assert "\n" not in str(err.value), (kind, path, name)
                cases += 1
    assert cases >= 500, cases
    assert _snapshot() == before


@pytest.mark.parametrize("kind", ["manifest", "bench", "tune", "preprocessing"])
def test_deep_nesting_and_oversized_files_are_refused_before_parsing(tmp_path, kind):
    good, read = _loaders(tmp_path)[kind]
    with pytest.raises(EdgeclsError, match="nests 100000 levels|over the"):
        read("[" * 100_000 + "]" * 100_000)
    with pytest.raises(EdgeclsError, match="over the"):
        read(json.dumps(good) + " " * (64 << 20))


def test_endless_and_special_files_are_not_read(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    for path in ("/dev/zero", "/dev/urandom", str(fifo)):
        assert main(["report", path, "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()


def test_a_confusion_matrix_must_match_the_class_count(tmp_path):
    from edgecls.errors import DataError
    from edgecls.report import Report

    report = json.loads(BENCH_REPORT.read_text())
    report["variants"][0]["confusion"] = [[0] * 11 for _ in range(11)]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    with pytest.raises(DataError, match="confusion has 11 rows but per_class names 10 classes"):
        Report.load([path])
    report["variants"][0]["confusion"] = [[0] * 1500 for _ in range(1500)]
    path.write_text(json.dumps(report))
    with pytest.raises(DataError, match="confusion' is too long"):
        Report.load([path])


@pytest.mark.parametrize("config", [b"[1, 2]", b"7", b"\"text\"", b"{\"class_name\": " + b"[" * 1000 + b"]" * 1000 + b"}"])
def test_an_h5_whose_configuration_is_not_an_object_is_refused(tmp_path, config):
    import h5py

    from edgecls.safety import check_model_file

    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = config
    with pytest.raises(ModelError, match="not a model configuration|nests"):
        check_model_file(path)
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = 7
    with pytest.raises(ModelError, match="is a int64, not a model configuration"):
        check_model_file(path)


# -- 9: every numeric and path option of every command ---------------------------------------------
def _commands():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices


def _argv(command, sub, action, value):
    """A command line reaching `action` with `value`: every other required argument filled."""
    argv = [command]
    for other in sub._actions:
        if other.nargs == 0 or (other is action and action.option_strings):
            continue
        if other is action:
            argv.append(value)
        elif other.required and other.option_strings:
            argv += [other.option_strings[0], "x"]
        elif not other.option_strings:
            argv.append("x")
    if action.option_strings:
        argv += [action.option_strings[0], value]
    return argv


def test_every_numeric_and_path_option_refuses_meaningless_values(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = _snapshot()
    numeric = texts = 0
    for command, sub in _commands().items():
        for action in sub._actions:
            if action.nargs == 0 or action.choices:
                continue
            assert isinstance(action.type, Bounded) or action.type is _text, (command, action.dest, action.type)
            if isinstance(action.type, Bounded):
                low = action.type.low
                values = ["nan", "inf", "-inf", "", "x"]
                values += ["0"] if low > 0 or action.type.open else []
                values += ["-1"] if low >= 0 else []
                values += [str(action.type.high * 10 + 10)]
                numeric += 1
            else:
                values = ["", "   "]
                texts += 1
            for value in values:
                with pytest.raises(SystemExit) as exit_:
                    main(_argv(command, sub, action, value))
                err = capsys.readouterr().err
                lines = [line for line in err.splitlines() if line.startswith("edgecls: error:")]
                assert exit_.value.code == 2 and len(lines) == 1 and "Traceback" not in err, (command, action.dest, value, err)
    assert numeric >= 80 and texts >= 40, (numeric, texts)
    assert _snapshot() == before and not list(tmp_path.iterdir())


# -- 1, 2, 3, 10: nothing written outside --out, nothing of the user's deleted ----------------------------
def test_a_tune_record_naming_paths_is_refused_before_any_work(tmp_path):
    from edgecls.tune import read_record
    from edgecls.tune.finish import bundle_name

    user = tmp_path / "mine.tflite"
    user.write_bytes(b"user's file")
    for change in (lambda r: r["candidates"][0].update(artifact="../../mine"),
                   lambda r: r["candidates"][0].update(variant="../x"),
                   lambda r: r["candidates"][0].update(stage="../../etc"),
                   lambda r: r["stages"].update({"../up": r["stages"]["tflite"]}),
                   lambda r: r["candidates"][0].update(threads="2"),
                   lambda r: r["candidates"][0].update(accuracy=[0.5]),
                   lambda r: r.update(candidates={"a": 1})):
        record = _tune_record()
        change(record)
        path = tmp_path / "out" / "tune.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(record))
        with pytest.raises(ConfigError, match="tune.json"):
            read_record(path)
    assert user.read_bytes() == b"user's file"
    assert re.fullmatch(r"[A-Za-z0-9_]+", bundle_name("../../x:50+repair"))


def test_a_partial_folder_edgecls_did_not_make_is_neither_resumed_nor_deleted(tmp_path):
    from edgecls import TrainConfig, train

    partial = tmp_path / "trX.partial"
    partial.mkdir()
    (partial / "notes.txt").write_text("mine")
    for resume in (False, True):
        with pytest.raises(ConfigError, match="trX.partial is in the way: it is not a run edgecls started"):
            train(TrainConfig(data=str(TINY_ZIP), arch="seed_cnn", epochs=1, out=str(tmp_path / "trX"), resume=resume))
    assert (partial / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "trX").exists()


def test_an_earlier_output_holding_the_users_files_is_refused_not_replaced(tmp_path, capsys):
    from edgecls.outputs import check_output_dir

    earlier = tmp_path / "bundle"
    shutil.copytree(BUNDLE, earlier)
    check_output_dir(earlier, "bundle")  # edgecls's own files only: may be replaced
    (earlier / "notes.md").write_text("mine")
    (earlier / "rejected").mkdir()
    (earlier / "rejected" / "keep.txt").write_text("mine too")
    with pytest.raises(ConfigError, match=r"holds files edgecls did not write \(notes.md, rejected/keep.txt\)"):
        check_output_dir(earlier, "bundle")
    model = tmp_path / "model.keras"
    model.write_bytes(b"x")
    assert main(["export", str(model), "--data", str(TINY_ZIP), "--out", str(earlier), "--scale", "1/255"]) == 2
    assert "edgecls did not write" in capsys.readouterr().err
    assert (earlier / "notes.md").read_text() == "mine" and (earlier / "rejected" / "keep.txt").exists()


def test_out_naming_a_symlink_is_refused_and_leaves_no_litter(tmp_path):
    from edgecls.report import Report

    target = tmp_path / "empty"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="is a symbolic link"):
        Report.load([BENCH_REPORT]).write(link)
    assert main(["report", str(BENCH_REPORT), "--out", str(link)]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "link"] and link.is_symlink()
    assert not any(target.iterdir())


# -- 5: every file an artifact loads is hashed ------------------------------------------------------------
def test_onnx_external_data_is_loaded_only_when_the_manifest_hashes_it(tmp_path):
    import numpy as np
    import onnx

    from edgecls import runtime
    from edgecls.bundle import sha256_file

    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle)
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    before = runtime.load(bundle, variant="onnx_fp32").predict(images)
    model = onnx.load(str(bundle / "onnx_fp32.onnx"))
    onnx.save_model(model, str(bundle / "onnx_fp32.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=256)
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["name"] == "onnx_fp32")
    entry["sha256"] = sha256_file(bundle / "onnx_fp32.onnx")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    # Not listed: the file it names is not there to load, whatever the working folder holds.
    cwd = os.getcwd()
    os.chdir(bundle)
    try:
        with pytest.raises(ModelError, match="not a loadable ONNX model"):
            runtime.load(bundle, variant="onnx_fp32")
    finally:
        os.chdir(cwd)
    entry["external_data"] = [{"file": "weights.bin", "sha256": sha256_file(bundle / "weights.bin")}]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    np.testing.assert_array_equal(runtime.load(bundle, variant="onnx_fp32").predict(images), before)
    data = bytearray((bundle / "weights.bin").read_bytes())
    data[100] ^= 0x40
    (bundle / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="weights.bin: sha256 does not match"):
        runtime.load(bundle, variant="onnx_fp32")
    entry["external_data"] = [{"file": "../weights.bin", "sha256": "0" * 64}]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="must be a file beside the model|outside the bundle"):
        runtime.load(bundle, variant="onnx_fp32")


# -- 8: unbounded reads --------------------------------------------------------------------------------
def test_symlinks_leading_out_of_a_dataset_are_skipped_and_counted(tmp_path):
    import zipfile

    from edgecls.data.folder import read_image_folder

    data = tmp_path / "data"
    with zipfile.ZipFile(TINY_ZIP) as zf:
        zf.extractall(data)
    roots = [p for p in data.rglob("*") if p.is_dir() and (p / "train").is_dir()] or [data]
    root = roots[0]
    outside = tmp_path / "outside"
    shutil.copytree(root / "train" / "cat", outside / "cat")
    before = read_image_folder(root, (32, 32))
    (root / "train" / "cat" / "linked.png").symlink_to(next((outside / "cat").iterdir()))
    (root / "train" / "dog" / "inside.png").symlink_to(next((root / "train" / "dog").iterdir()))
    x, y, *_, skipped, _ = read_image_folder(root, (32, 32))
    assert skipped == before[5] + 1  # the outside link, counted
    assert len(x) == len(before[0]) + 1  # the inside link, read
    (root / "train" / "elsewhere").symlink_to(outside / "cat")
    x2, *_, skipped2, _ = read_image_folder(root, (32, 32))
    assert skipped2 == skipped + 1 and len(x2) == len(x)


def test_non_finite_scores_are_an_error(tmp_path):
    """A model whose scores are NaN (0/0 here) is an error, not a prediction."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from edgecls import runtime

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2], keepdims=0),
             helper.make_node("Sub", ["m", "m"], ["z"]), helper.make_node("Div", ["z", "z"], ["y"])]
    graph = helper.make_graph(nodes, "nan", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 32, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), tmp_path / "nan.onnx")
    runner = runtime.load(tmp_path / "nan.onnx", preprocessing={"scale": 1 / 255})
    with pytest.raises(ModelError, match="non-finite scores"):
        runner.predict(np.full((2, 32, 32, 3), 255, np.uint8))


def test_a_model_files_kind_is_read_from_its_content(tmp_path, capsys):
    """The loader decides by content, so a TFLite file or a bundle (whatever its name) gets the
    message that fits it, not a complaint about a damaged .keras file; an ONNX or TFLite file (even
    one named .keras) goes to its source kind, which asks for its preprocessing; a bundle is a source
    too (tests/test_tflite_source.py)."""
    from edgecls.modelio.kinds import model_kind

    onnx_file = BUNDLE / "onnx_fp32.onnx"
    tflite = ROOT / "models" / "seed_cnn" / "tflite_fp32.tflite"
    assert model_kind(onnx_file) == "onnx" and model_kind(tflite) == "tflite" and model_kind(BUNDLE) == "bundle"
    disguised = tmp_path / "model.keras"
    disguised.write_bytes(tflite.read_bytes())
    for path, says in ((tflite, "a TFLite model needs its preprocessing"),
                       (disguised, "a TFLite model needs its preprocessing"),
                       (onnx_file, "needs its preprocessing")):
        for command in (["eval", str(path), "--data", str(TINY_ZIP)],
                        ["export", str(path), "--data", str(TINY_ZIP), "--out", str(tmp_path / "o")]):
            assert main(command) == 2
            err = capsys.readouterr().err
            assert says in err and "Traceback" not in err, (command, err)
    assert not (tmp_path / "o").exists()


def test_a_lone_onnx_file_with_external_data_is_benched_with_its_weights_hashed(tmp_path):
    """torch.onnx.export's default writes the weights beside the model (MODEL.onnx.data): bench and
    predict take such a file, the weights travel into the bench's bundle with their sha256."""
    import onnx

    from edgecls.bench.local import bundle_for_file
    from edgecls.bundle import load_bundle

    model = onnx.load(str(BUNDLE / "onnx_fp32.onnx"))
    path = tmp_path / "net.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="net.onnx.data", size_threshold=256)
    wrapped = bundle_for_file(path, tmp_path / "b", {"scale": 1 / 255})
    entry = load_bundle(wrapped).artifact()
    assert [e["file"] for e in entry["external_data"]] == ["net.onnx.data"]
    out = tmp_path / "bench.json"
    assert main(["bench", str(path), "--repeats", "1", "--scale", "1/255", "--data", str(TINY_ZIP), "--runs", "5", "--warmup", "1",
                 "--out", str(out)]) == 0
    row = json.loads(out.read_text())["variants"][0]
    assert row["status"] == "ok" and row["accuracy"] is not None
    (tmp_path / "net.onnx.data").unlink()
    assert main(["bench", str(path), "--repeats", "1", "--scale", "1/255", "--out", str(tmp_path / "b2.json")]) == 2
