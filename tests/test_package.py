"""Packaging promises: importing edgecls is light and prepares Keras 2 for tfmot."""
import subprocess
import sys


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_edgecls_imports_no_tensorflow():
    proc = _run(
        "import sys, edgecls, edgecls.data, edgecls.preprocess, edgecls.cli, edgecls.zoo, edgecls.training, edgecls.evaluation\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras', 'tensorflow_model_optimization'))\n"
        "print(heavy)"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_legacy_keras_is_set_before_tensorflow_is_imported():
    proc = _run(
        "import os; os.environ.pop('TF_USE_LEGACY_KERAS', None)\n"
        "import edgecls; from edgecls._deps import tensorflow\n"
        "tf = tensorflow(); import tensorflow_model_optimization as tfmot\n"
        "print(os.environ['TF_USE_LEGACY_KERAS'], tf.keras.__name__.startswith('tf_keras'))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "True"]


def test_version_and_help():
    proc = subprocess.run([sys.executable, "-m", "edgecls.cli", "--version"], capture_output=True, text=True)
    assert proc.stdout.strip().startswith("edgecls 0.")


def test_command_line_mistakes_are_one_line_errors():
    from .conftest import assert_one_line_error, run_cli

    line = assert_one_line_error(run_cli("export", "m.keras", "--out", "o", "--sparsity-allocation", "global"),
                                 "invalid choice: 'global'", "see 'edgecls export --help'")
    assert "usage:" not in line
    assert_one_line_error(run_cli("bench"), "the following arguments are required: bundle")
    assert_one_line_error(run_cli("frobnicate"), "invalid choice: 'frobnicate'", "see 'edgecls --help'")
    assert_one_line_error(run_cli("train", "--epochs", "ten"), "--epochs: 'ten' is not an integer")


def test_public_functions_are_functions_whatever_was_imported_first():
    proc = _run(
        "import edgecls.training, edgecls.evaluation, edgecls.export\n"
        "from edgecls import train, evaluate, load_dataset, create_model\n"
        "print(all(callable(f) and not hasattr(f, '__path__') and type(f).__name__ == 'function' for f in (train, evaluate, load_dataset, create_model)))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def test_cpu_model_of_a_raspberry_pi_is_its_board(tmp_path):
    from edgecls.hostinfo import cpu_model

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nBogoMIPS\t: 108.00\nCPU part\t: 0xd08\n\nHardware\t: BCM2835\n"
                    "Revision\t: c03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n")
    assert cpu_model(str(info)) == "Raspberry Pi 4 Model B Rev 1.4"
    info.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n")
    assert cpu_model(str(info)) == "Intel(R) Xeon(R) Processor"
