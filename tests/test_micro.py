"""Microcontroller target: TFLite Micro's verdict, exact arena, C sources, and `export --micro`."""
import json

import numpy as np
import pytest

from edgecls.micro import csource, full_integer, tflm

from .conftest import FIXTURES, ROOT, run_cli

pytest.importorskip("tflite_micro")

RESNET8_INT8 = ROOT / "models" / "resnet8" / "tflite_int8.tflite"
ATAN2 = FIXTURES / "micro" / "atan2_int8.tflite"


def test_the_arena_is_the_smallest_tflm_runs_the_file_in_to_one_step():
    data = RESNET8_INT8.read_bytes()
    arena, fails_at, missing, _ = tflm.minimum_arena(data)
    assert not missing and arena % tflm.ARENA_STEP == 0 and fails_at == arena - tflm.ARENA_STEP
    # Checked again here, independently of the search: runs at the figure, fails one step below.
    assert tflm._runs(data, arena)[0]
    assert not tflm._runs(data, fails_at)[0]
    assert 40_000 < arena < 80_000  # resnet8 int8: about 56 KB under TFLM's reference kernels


def test_an_op_tflm_lacks_is_named_with_the_layer_that_uses_it():
    record = tflm.measure(ATAN2, None)
    assert record["verdict"] == "unsupported" and "arena_bytes" not in record
    (missing,) = record["missing_ops"]
    assert missing["op"] == "ATAN2" and any("angle" in layer for layer in missing["layers"])
    assert "TFLite Micro has no kernel for ATAN2 (used by" in record["reason"]
    assert {o["op"] for o in record["ops"]} >= {"CONV_2D", "ATAN2", "FULLY_CONNECTED", "SOFTMAX"}


def test_c_sources_hold_the_file_and_register_exactly_its_ops():
    data = RESNET8_INT8.read_bytes()
    ops = [o["op"] for o in tflm.file_ops(RESNET8_INT8)]
    labels = ["airplane", 'say "hi"\\', "tri??=graph", "ünïcode", "new\nline"]
    texts = csource.sources(data, prefix="model", ops=ops, arena_bytes=55952,
                            input_detail={"shape": [1, 32, 32, 3], "dtype": "int8", "scale": 0.0162, "zero_point": -5},
                            output_detail={"shape": [1, 10], "dtype": "int8", "scale": 1 / 256, "zero_point": -128},
                            labels=labels, preprocessing={"input_size": [32, 32], "scale": 1 / 255, "mean": [0.49, 0.48, 0.45],
                                                          "std": [0.25, 0.24, 0.26]})
    assert csource.parse_array(texts["model_data.cc"], "model") == data
    assert "alignas(16) const unsigned char model_model[]" in texts["model_data.cc"]
    assert csource.parse_resolver(texts["op_resolver.cc"]) == [csource.resolver_method(op) for op in ops]
    assert sorted(csource.parse_resolver(texts["op_resolver.cc"])) == sorted(
        ["AddConv2D", "AddAdd", "AddMean", "AddFullyConnected", "AddSoftmax"])
    assert f"MicroMutableOpResolver<{len(ops)}>" in texts["model_data.h"]
    assert "constexpr size_t model_arena_bytes = 55952;" in texts["model_data.h"]
    assert "constexpr int model_input_zero_point = -5;" in texts["model_data.h"]
    # Labels are C string literals whatever they hold: no raw quote, backslash, '?' or newline.
    block = texts["model_data.cc"].split("model_labels[5] = {")[1].split("};")[0]
    literals = [line.strip().rstrip(",") for line in block.strip().splitlines()]
    assert len(literals) == 5 and all(lit.startswith('"') and lit.endswith('"') for lit in literals)
    for lit in literals:
        inner = lit[1:-1]
        assert '"' not in inner.replace('\\042', '') and "?" not in inner and "\n" not in inner
    assert literals[1] == '"say \\042hi\\042\\134"'
    assert csource.resolver_method("DEPTHWISE_CONV_2D") == "AddDepthwiseConv2D"
    assert csource.resolver_method("AVERAGE_POOL_2D") == "AddAveragePool2D"
    assert csource.resolver_method("BATCH_MATMUL") == "AddBatchMatMul"
    with pytest.raises(ValueError):
        csource.resolver_method("conv; system(")
    with pytest.raises(ValueError):
        csource.sources(data, prefix="1bad", ops=ops, arena_bytes=1, input_detail={}, output_detail={}, labels=[],
                        preprocessing={})


def test_only_full_integer_files_are_microcontroller_targets():
    int8 = {"dtype": "int8", "shape": [-1, 32, 32, 3]}
    assert full_integer([int8], [{"dtype": "int8", "shape": [-1, 10]}])
    assert not full_integer([{"dtype": "float32", "shape": [-1, 32, 32, 3]}], [{"dtype": "float32", "shape": [-1, 10]}])
    assert not full_integer([int8], [{"dtype": "float32", "shape": [-1, 10]}])


def test_export_micro_writes_validated_tflm_rows_and_sources(tmp_path):
    out = tmp_path / "b"
    args = ("export", ROOT / "models" / "resnet8", "--formats", "tflite_int8", "tflite_fp32", "--micro",
            "--micro-images", "100", "--max-eval-images", "300", "--out", out)
    proc = run_cli(*args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    rows = {a["name"]: a for a in manifest["artifacts"]}
    assert "micro" not in rows["tflite_fp32"]  # a float file is not a microcontroller target
    micro = rows["tflite_int8"]["micro"]
    assert micro["verdict"] == "ok" and micro["status"] == "ok", micro
    assert micro["flash_bytes"] == (out / "tflite_int8.tflite").stat().st_size
    assert micro["ram_bytes"] == micro["arena_bytes"] + micro["io_bytes"] == micro["arena_bytes"] + 32 * 32 * 3 + 10
    assert micro["arena_fails_at"] == micro["arena_bytes"] - 16
    assert micro["validation"]["images"] == micro["images"] == 100 and micro["validation"]["agreement"] >= 0.9
    assert 0.9 <= micro["litert"]["agreement"] <= 1 and micro["litert"]["max_step_diff"] >= 0
    import hashlib

    files = {s["file"]: s["sha256"] for s in micro["sources"]}
    assert set(files) == {f"micro/tflite_int8/{n}" for n in ("model_data.h", "model_data.cc", "op_resolver.cc")}
    for rel, digest in files.items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest
    cc = (out / "micro" / "tflite_int8" / "model_data.cc").read_text()
    assert csource.parse_array(cc, "tflite_int8") == (out / "tflite_int8.tflite").read_bytes()
    assert "tflite_int8_op_resolver()" in (out / "micro" / "tflite_int8" / "op_resolver.cc").read_text()
    # bench carries the figures into its report, beside LiteRT's rows, labelled as host time.
    proc = run_cli("bench", out, "--repeats", "1", "--max-images", "50", "--runs", "5", "--warmup", "1", "--out", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    bench_rows = {v["name"]: v for v in json.loads((tmp_path / "r.json").read_text())["variants"]}
    assert bench_rows["tflite_int8"]["micro_arena_bytes"] == micro["arena_bytes"]
    assert bench_rows["tflite_int8"]["macs"] == rows["tflite_int8"]["size"]["macs"] > 0
    assert "micro_arena_bytes" not in bench_rows["tflite_fp32"]
    table = proc.stdout[proc.stdout.index("Microcontroller (TensorFlow Lite Micro"):]
    assert "not a microcontroller's latency" in table
    assert f"| tflite_int8 | ok | {micro['arena_bytes']:,} | {micro['flash_bytes']:,} | {micro['ram_bytes']:,} |" in table
    # The bundle loads; a file someone put beside the sources is not edgecls's: an export over the
    # bundle is refused and the file kept ...
    from edgecls.bundle import load_bundle

    load_bundle(out)
    (out / "micro" / "tflite_int8" / "main.cc").write_text("int main() {}\n")
    proc = run_cli(*args, timeout=600)
    assert proc.returncode == 2 and "micro/tflite_int8/main.cc" in proc.stderr, proc.stderr[-2000:]
    assert (out / "micro" / "tflite_int8" / "main.cc").is_file()
    # ... and without it the export replaces the bundle, sources included (they are edgecls's own).
    (out / "micro" / "tflite_int8" / "main.cc").unlink()
    proc = run_cli("export", ROOT / "models" / "resnet8", "--formats", "tflite_fp32", "--max-eval-images", "100",
                   "--out", out, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (out / "micro").exists()


def test_the_zoo_table_names_the_architectures_that_fit_a_budget(tmp_path, monkeypatch):
    from edgecls.zoo import list_models, micro as zoo_micro

    shipped = zoo_micro.table()
    assert shipped and set(shipped) <= set(list_models())
    for ram in sorted({e["ram_bytes"] for e in shipped.values()}):
        names = [n for n, _ in zoo_micro.fitting(ram, None)]
        assert names == sorted((n for n, e in shipped.items() if e["ram_bytes"] <= ram),
                               key=lambda n: (shipped[n]["ram_bytes"], n))
        text = zoo_micro.suggestion(ram, None)
        assert all(n in text for n in names) and f"edgecls train --arch {names[0]}" in text
    smallest = min(e["ram_bytes"] for e in shipped.values())
    assert zoo_micro.fitting(smallest - 1, None) == [] and zoo_micro.suggestion(smallest - 1, None) == ""
    # The table is read like any file: entries of another shape are left out, a damaged file is no table.
    bad = tmp_path / "micro.json"
    bad.write_text(json.dumps({"models": {"seed_cnn": {"arena_bytes": "1", "ram_bytes": 2, "flash_bytes": 3},
                                          "resnet8": {"arena_bytes": 1, "ram_bytes": 2, "flash_bytes": 3}}}))
    monkeypatch.setattr(zoo_micro, "TABLE", bad)
    assert list(zoo_micro.table()) == ["resnet8"]
    bad.write_text("[" * 100000)
    assert zoo_micro.table() == {}


@pytest.mark.skipif(__import__("shutil").which("g++") is None, reason="no C++ compiler here")
def test_the_c_sources_compile_against_the_resolver_interface(tmp_path):
    """The sources are valid C++17 (array, labels however odd, constants, resolver), checked by g++
    against a stand-in for TFLM's resolver header (TFLM's own headers are not on the registries)."""
    import subprocess

    data = RESNET8_INT8.read_bytes()
    ops = [o["op"] for o in tflm.file_ops(RESNET8_INT8)]
    texts = csource.sources(data, prefix="tflite_int8", ops=ops, arena_bytes=55952,
                            input_detail={"shape": [1, 32, 32, 3], "dtype": "int8", "scale": 0.0162, "zero_point": -5},
                            output_detail={"shape": [1, 10], "dtype": "int8", "scale": 1 / 256, "zero_point": -128},
                            labels=["cat", 'a "quoted" \\ label??=', "naïve\ttab"],
                            preprocessing={"input_size": [32, 32], "scale": 1 / 255, "mean": [0.5, 0.5, 0.5],
                                           "std": [0.25, 0.25, 0.25]})
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "main.cc").write_text(
        '#include "model_data.h"\n'
        "alignas(16) static unsigned char arena[tflite_int8_arena_bytes];\n"
        "int main() {\n"
        "  tflite_int8_op_resolver();\n"
        "  return (tflite_int8_model_len > 0 && tflite_int8_num_labels == 3 && arena[0] == 0 &&\n"
        "          tflite_int8_input_shape[3] == 3) ? 0 : 1;\n"
        "}\n")
    stub = FIXTURES / "micro" / "stub"
    binary = tmp_path / "check"
    proc = subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-I", str(stub), "-I", str(tmp_path), "-o", str(binary),
                           *(str(tmp_path / n) for n in ("main.cc", "model_data.cc", "op_resolver.cc"))],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert subprocess.run([str(binary)], timeout=60).returncode == 0
