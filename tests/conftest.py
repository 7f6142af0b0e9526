import os
import subprocess
import sys
from pathlib import Path

import pytest
from edgecls.config import CalibrationConfig, FineTuneConfig, PruneConfig, QATConfig

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
TINY_ZIP = FIXTURES / "cifar10_tiny.zip"
TINY_BATCHES = FIXTURES / "cifar-10-batches-py-tiny"
SHARED = ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # Tests never read or fill the user's decode cache.
    os.environ["EDGECLS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    yield


def tool_path(name: str) -> Path:
    """A maintainer script by name: tools/release/, tools/device/ or experiments/."""
    for folder in (ROOT / "tools" / "release", ROOT / "tools" / "device", ROOT / "experiments"):
        if (folder / f"{name}.py").is_file():
            return folder / f"{name}.py"
    raise FileNotFoundError(name)


def load_tool(name: str):
    """A script of tools/ imported as a module (tools/ is not a package)."""
    import importlib.util

    path = tool_path(name)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(*args, env=None, timeout=300, cwd=None):
    """Run `python -m edgecls.cli ...` in a subprocess; return the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "edgecls.cli", *map(str, args)],
        capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd or ROOT,
    )


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("edgecls: error:")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory):
    """A seed_cnn trained for 3 epochs on the tiny real fixture (seconds), shared by tests."""
    from edgecls import TrainConfig, train

    out = tmp_path_factory.mktemp("trained") / "seed"
    result = train(TrainConfig(data=str(TINY_ZIP), arch="seed_cnn", epochs=3, batch_size=32, out=str(out), verbose=0))
    return result


@pytest.fixture(scope="session")
def sample_model(tmp_path_factory):
    """seed_cnn trained for 6 epochs on the built-in CIFAR-10 sample (2,000 real images; ~10 s)."""
    from edgecls import TrainConfig, train

    out = tmp_path_factory.mktemp("sample_model") / "seed"
    return train(TrainConfig(data="cifar10-sample", arch="seed_cnn", epochs=6, batch_size=64, out=str(out), verbose=0))


@pytest.fixture(scope="session")
def sample_bundle(sample_model, tmp_path_factory):
    """Every variant exported from `sample_model` and validated on the sample's 1,000 test images."""
    from edgecls.export import export

    out = tmp_path_factory.mktemp("bundles") / "seed"
    return export(sample_model.out, data="cifar10-sample", out=out, prune=PruneConfig(epochs=1), qat=QATConfig(epochs=1), fine_tune=FineTuneConfig(batch_size=64), calibration=CalibrationConfig(count=200))
