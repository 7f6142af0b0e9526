"""The command line is built from the configs' fields: one declaration per option (default, help,
choices, range), no default written twice."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from edgecls.bench.remote import RemoteConfig
from edgecls.cli import _Parser, add_config_options, build_parser, config_from_args
from edgecls.config import (BenchConfig, CalibrationConfig, ExportConfig, PruneConfig, ReportConfig, TrainConfig,
                            TuneConfig, option)
from edgecls.errors import ConfigError


def _actions(command: str) -> dict:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {a.dest: a for a in sub._actions}


def _option_paths(cls, defaults=None, prefix=""):
    """Every (dotted path, field, default) of `cls` that option() declared, sections followed."""
    for f in dataclasses.fields(cls):
        default = getattr(defaults, f.name) if defaults is not None else f.default
        if dataclasses.is_dataclass(default):
            yield from _option_paths(type(default), default, prefix + f.name + ".")
        elif "help" in f.metadata:
            yield prefix + f.name, f, default


@pytest.mark.parametrize("command, cls, argv, defaults", [
    ("export", ExportConfig, ["m", "--out", "o"], ExportConfig()),
    ("train", TrainConfig, ["--out", "runs/train"], TrainConfig()),
    ("bench", BenchConfig, ["b", "--out", "r.json"], BenchConfig()),
    ("report", ReportConfig, ["r.json", "--out", "o"], ReportConfig()),
    ("tune", TuneConfig, ["m", "--out", "o"], TuneConfig()),
])
def test_nothing_given_is_the_configs_own_default(command, cls, argv, defaults):
    args = build_parser().parse_args([command, *argv])
    assert config_from_args(cls, args, defaults if cls is TuneConfig else None) == defaults


def test_every_export_field_declared_as_an_option_is_one_on_export_with_its_help_and_range():
    actions = _actions("export")
    paths = list(_option_paths(ExportConfig))
    assert len(paths) >= 30
    for path, f, default in paths:
        action = actions[path]
        assert f.metadata["help"].replace("%", "%%") in action.help, path
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            assert action.default == default and f"(default {default:g})" in action.help, path
        if f.metadata["range"]:
            assert (action.type.low, action.type.high) == f.metadata["range"][:2], path
        if f.metadata["choices"]:
            assert tuple(action.choices) == tuple(f.metadata["choices"]), path


def test_values_given_reach_the_right_section():
    args = build_parser().parse_args(["export", "m", "--out", "o", "--calibration-count", "64", "--prune-epochs", "3",
                                      "--no-qat-calibration", "--skip-layers", "a", "b", "--calibration-search", "64,128",
                                      "--micro", "--max-drop", "0.5", "--onnx-int8-scheme", "u8u8"])
    config = config_from_args(ExportConfig, args)
    assert config.calibration == CalibrationConfig(count=64, search=(64, 128))
    assert config.prune == PruneConfig(epochs=3, skip_layers=("a", "b"))
    assert not config.qat.calibrate and config.micro.enabled and config.validation.max_drop == 0.5
    assert config.convert.onnx_int8_scheme == "u8u8" and config.formats == ExportConfig.formats
    tune = config_from_args(TuneConfig, build_parser().parse_args(
        ["tune", "m", "--out", "o", "--qat-epochs", "4", "--runs", "50", "--host", "a", "--host", "b", "c"]), TuneConfig())
    assert tune.export.qat.epochs == 4 and tune.bench.runs == 50 and tune.bench.repeats == TuneConfig().bench.repeats
    assert tune.hosts == ("a", "b", "c")
    bench_args = build_parser().parse_args(["bench", "b", "--out", "r.json", "--host", "pi@board", "--remote-dir", "x"])
    assert config_from_args(RemoteConfig, bench_args, dest="remote.") == RemoteConfig(host="pi@board", remote_dir="x")


@dataclasses.dataclass(frozen=True)
class _Inner:
    count: int = option(3, "how many", range=(1, 10))
    mode: str = option("a", "which mode", choices=("a", "b"))


@dataclasses.dataclass(frozen=True)
class _Outer:
    names: tuple[str, ...] = option(("x",), "names")
    sizes: tuple[int, ...] = option((1, 2), "sizes", metavar="N,N")
    keep: bool = option(True, "drop it", flag="--no-keep")
    inner: _Inner = _Inner()
    hidden: float = 0.5  # not an option

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(self.names))
        if self.inner.count == 7:
            raise ConfigError("count 7 is refused by the config itself")


def test_a_new_field_is_an_option_with_no_other_edit():
    parser = _Parser(prog="t")
    add_config_options(parser, _Outer)
    assert config_from_args(_Outer, parser.parse_args([])) == _Outer()
    got = config_from_args(_Outer, parser.parse_args(["--names", "p", "q", "--sizes", "4,5", "--no-keep", "--count", "9",
                                                      "--mode", "b"]))
    assert got == _Outer(names=("p", "q"), sizes=(4, 5), keep=False, inner=_Inner(count=9, mode="b"))
    text = parser.format_help()
    assert "which mode (default a)" in text and "how many (default 3)" in text and "--hidden" not in text
    for bad in (["--count", "11"], ["--count", "nan"], ["--mode", "c"], ["--sizes", "1,x"]):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(bad)
        assert exit_.value.code == 2
    with pytest.raises(ConfigError, match="count 7"):
        config_from_args(_Outer, parser.parse_args(["--count", "7"]))
