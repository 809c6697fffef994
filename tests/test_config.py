"""Tests for bntrain.config: schema, one-line error messages, overrides, dump round-trip."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bntrain.config import (
    LAYER_TYPES,
    NONLINEARITIES,
    AdamConfig,
    AvgPool2DSpec,
    Config,
    Conv2DSpec,
    CosineSchedule,
    DenseSpec,
    DropoutSpec,
    dump_config,
    load_config,
    parse_config,
    parse_stored_config,
)
from bntrain.errors import ConfigError, UsageError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# Line numbers matter: the expected messages below name them.
BASE = textwrap.dedent(
    """\
    name: digits_mlp
    data:
      train: {builtin: digits, split: train}
      val: {builtin: digits, split: val}
      test: {builtin: digits, split: test}
      preprocess: {scale: 0.0625}
    model:
      input_shape: [64]
      batch_norm: {insert: auto, epsilon: 1.0e-4, alpha: 0.1}
      layers:
        - {type: dense, units: 100, nonlinearity: relu}
        - {type: dropout, p: 0.2}
        - {type: dense, units: 10, nonlinearity: softmax}
    training:
      epochs: 20
      batch_size: 64
      optimizer: {name: nesterov, lr: 0.1, momentum: 0.9, weight_decay: 1.0e-4}
      schedule: {name: cosine}
      seed: 0
    output: {dir: runs/digits_mlp}
    """
)


def sub(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def error(text: str, overrides=(), source: str = "file.yaml") -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source=source, overrides=overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------------
# Valid configs
# ------------------------------------------------------------------------------------------------


def test_example_config_parses_into_typed_objects():
    cfg = load_config(CONFIGS / "digits_mlp.yaml")
    assert cfg.name == "digits_mlp"
    assert cfg.base_dir == CONFIGS
    assert cfg.data.train.builtin == "digits" and cfg.data.train.split == "train"
    assert cfg.data.val.split == "val" and cfg.data.test.split == "test"
    assert cfg.data.preprocess.scale == 0.0625 and cfg.data.preprocess.standardize is False
    assert cfg.model.input_shape == [64]
    bn = cfg.model.batch_norm
    assert (bn.insert, bn.epsilon, bn.alpha) == ("auto", 1e-4, 0.1)
    assert [layer.type for layer in cfg.model.layers] == ["dense", "dropout", "dense"]
    first, drop, last = cfg.model.layers
    assert isinstance(first, DenseSpec) and first.units == 256 and first.batch_norm is True
    assert isinstance(drop, DropoutSpec) and drop.p == 0.2
    assert last.nonlinearity == "softmax"
    t = cfg.training
    assert (t.epochs, t.batch_size, t.seed) == (30, 64, 0)
    opt = t.optimizer
    assert (opt.name, opt.lr, opt.momentum, opt.weight_decay) == ("nesterov", 0.1, 0.9, 1e-4)
    assert isinstance(opt.lr, float) and opt.grad_clip_norm is None
    assert t.schedule.name == "cosine" and t.schedule.warmup_epochs == 0
    assert (t.recompute_stats, t.best_metric, t.nan_policy, t.max_consecutive_nan, t.shuffle) == (
        True,
        "val_loss",
        "stop",
        10,
        True,
    )
    assert cfg.output.dir == "../runs/digits_mlp" and (cfg.backend, cfg.device) == ("auto", "auto")
    assert cfg.run is None


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_parses_and_round_trips(path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    assert cfg.model.layers[-1].type == "dense" and cfg.model.layers[-1].nonlinearity == "softmax"
    again = parse_config(dump_config(cfg), source=str(path), base_dir=path.parent)
    assert again == cfg


def test_shipped_configs_match_their_brief():
    cnn = load_config(CONFIGS / "digits_cnn.yaml")
    assert cnn.model.input_shape == [1, 8, 8]
    assert [la.type for la in cnn.model.layers] == [
        "conv2d",
        "maxpool2d",
        "conv2d",
        "global_avgpool",
        "dense",
    ]
    ioffe = load_config(CONFIGS / "mnist_mlp_ioffe.yaml")
    assert ioffe.model.input_shape == [784] and ioffe.training.batch_size == 60
    assert ioffe.training.optimizer.name == "sgd"
    assert [(la.units, la.nonlinearity) for la in ioffe.model.layers] == [
        (100, "sigmoid"),
        (100, "sigmoid"),
        (100, "sigmoid"),
        (10, "softmax"),
    ]
    assert (ioffe.data.train.builtin, ioffe.data.train.split) == ("mnist", "train")
    assert (ioffe.data.test.builtin, ioffe.data.test.split) == ("mnist", "test")
    assert abs(ioffe.data.preprocess.scale * 255 - 1) < 1e-12
    cifar = load_config(CONFIGS / "cifar10_cnn.yaml")
    assert cifar.model.input_shape == [3, 32, 32] and cifar.data.preprocess.standardize is True
    assert (cifar.data.train.builtin, cifar.data.train.split) == ("cifar10", "train")
    assert (cifar.data.test.builtin, cifar.data.test.split) == ("cifar10", "test")


def test_minimal_config_gets_defaults_and_name_from_source():
    text = textwrap.dedent(
        """\
        data: {train: {path: d/train.npz, y: null}}
        model: {layers: [{type: dense, units: 3}]}
        training: {epochs: 1, batch_size: 1, optimizer: {name: adam, lr: 1}}
        """
    )
    cfg = parse_config(text, source="some/dir/exp1.yaml", base_dir="/tmp/cfgs")
    assert cfg.name == "exp1"
    assert cfg.output.dir == "runs/exp1"
    assert cfg.output_dir == Path("/tmp/cfgs/runs/exp1")
    assert cfg.data.train.x == "X" and cfg.data.train.y is None
    assert cfg.data.val is None and cfg.data.val_split is None and cfg.data.test is None
    assert cfg.model.input_shape is None and cfg.model.batch_norm.insert == "auto"
    assert cfg.training.optimizer.lr == 1.0 and isinstance(cfg.training.optimizer.lr, float)
    assert cfg.training.schedule.name == "constant"
    assert parse_config(text).name == "config"  # no file name to take a stem from


def test_resolve_path_against_base_dir():
    cfg = parse_config(BASE, base_dir=Path("/x/configs"))
    assert cfg.base_dir == Path("/x/configs")
    assert cfg.resolve_path("data/a.h5") == Path("/x/configs/data/a.h5")
    assert cfg.resolve_path("/abs/a.h5") == Path("/abs/a.h5")
    assert cfg.output_dir == Path("/x/configs/runs/digits_mlp")
    cfg.base_dir = "/elsewhere"
    assert cfg.resolve_path("a") == Path("/elsewhere/a")


def test_yaml_12_numbers_and_no_timestamps():
    text = sub("lr: 0.1", "lr: 1e-3")
    text = sub("momentum: 0.9", "momentum: .5", text)
    text = sub("weight_decay: 1.0e-4", "weight_decay: 2E-4", text)
    text = sub("epochs: 20", "epochs: 010", text)  # YAML 1.1 would read octal 8
    text = sub("batch_size: 64", "batch_size: 0x20", text)
    text = sub("name: digits_mlp", "name: 2020-01-01", text)  # stays a string
    cfg = parse_config(text)
    opt = cfg.training.optimizer
    assert (opt.lr, opt.momentum, opt.weight_decay) == (1e-3, 0.5, 2e-4)
    assert (cfg.training.epochs, cfg.training.batch_size) == (10, 32)
    assert cfg.name == "2020-01-01"


def test_yes_no_are_booleans_where_booleans_are_expected():
    cfg = parse_config(sub("  seed: 0", "  seed: 0\n  shuffle: no\n  recompute_stats: Off"))
    assert cfg.training.shuffle is False and cfg.training.recompute_stats is False


def test_layer_specs_and_defaults():
    text = sub(
        "    - {type: dropout, p: 0.2}\n",
        "    - {type: conv2d, filters: 8, size: [3, 5], stride: 2, pad: [1, 2], name: c}\n"
        "    - {type: maxpool2d, size: 2}\n"
        "    - {type: avgpool2d, size: 3, stride: 1, pad: 1, mode: average_inc_pad}\n"
        "    - {type: batchnorm, alpha: 0.5}\n"
        "    - {type: nonlinearity, fn: elu}\n"
        "    - {type: global_avgpool}\n"
        "    - {type: flatten}\n"
        "    - {type: dropout}\n",
    )
    layers = parse_config(text).model.layers
    assert [la.type for la in layers] == [
        "dense",
        "conv2d",
        "maxpool2d",
        "avgpool2d",
        "batchnorm",
        "nonlinearity",
        "global_avgpool",
        "flatten",
        "dropout",
        "dense",
    ]
    conv, mp, ap, bn, nl = layers[1:6]
    assert (conv.filters, conv.size, conv.stride, conv.pad, conv.name) == (
        8,
        (3, 5),
        2,
        (1, 2),
        "c",
    )
    assert (conv.nonlinearity, conv.batch_norm) == ("relu", True)
    assert (mp.size, mp.stride, mp.pad, mp.ignore_border) == (2, None, 0, True)
    assert (ap.mode, ap.pad) == ("average_inc_pad", 1)
    assert (bn.alpha, bn.epsilon, bn.nonlinearity) == (0.5, None, None)
    assert nl.fn == "elu" and layers[8].p == 0.5
    assert Conv2DSpec(filters=1, size=3).pad == "same"
    assert AvgPool2DSpec(size=2).mode == "average_exc_pad"
    assert set(LAYER_TYPES) == {
        "dense",
        "conv2d",
        "maxpool2d",
        "avgpool2d",
        "global_avgpool",
        "dropout",
        "flatten",
        "batchnorm",
        "nonlinearity",
        "add",
        "concat",
        "block",
    }
    assert "relu" in NONLINEARITIES and "leaky_rectify" in NONLINEARITIES


def test_merge_keys_and_aliases_work():
    text = sub(
        "  layers:\n    - {type: dense, units: 100, nonlinearity: relu}",
        "  layers:\n"
        "    - &h {type: dense, units: 100, nonlinearity: tanh}\n"
        "    - {<<: *h, units: 7}",
    )
    layers = parse_config(text).model.layers
    assert (layers[0].units, layers[1].units, layers[1].nonlinearity) == (100, 7, "tanh")


def test_python_construction_is_strict():
    assert DenseSpec(units=3).type == "dense"
    with pytest.raises(ValueError):
        DenseSpec(units=True)  # a bool is not an int
    with pytest.raises(ValueError):
        DenseSpec(units=3, nonlinearity="relu6")


# ------------------------------------------------------------------------------------------------
# Error messages (full strings)
# ------------------------------------------------------------------------------------------------

TOP = "file.yaml:1: the top level must be a mapping of keys (data:, model:, training:, ...), "
ERRORS = {
    "duplicate": (
        sub("  seed: 0", "  seed: 0\n  seed: 1"),
        "file.yaml:20: duplicate key 'seed' in training",
    ),
    "duplicate_flow": (
        sub("lr: 0.1,", "lr: 0.1, lr: 0.2,"),
        "file.yaml:17: duplicate key 'lr' in training.optimizer",
    ),
    "duplicate_top": (BASE + "name: x\n", "file.yaml:21: duplicate key 'name' at the top level"),
    "unknown_key": (
        sub("  optimizer:", "  optimzer:"),
        "file.yaml:17: training.optimzer: unknown key (did you mean 'optimizer'?)",
    ),
    "unknown_layer_key": (
        sub("units: 100,", "unit: 100,"),
        "file.yaml:11: model.layers[0].unit: unknown key (did you mean 'units'?)",
    ),
    "unknown_top_key": (
        BASE + "outptu: {}\n",
        "file.yaml:21: outptu: unknown key (did you mean 'output'?)",
    ),
    "range": (sub("lr: 0.1", "lr: -1"), "file.yaml:17: training.optimizer.lr: must be > 0, got -1"),
    "range_ge": (sub("seed: 0", "seed: -3"), "file.yaml:19: training.seed: must be >= 0, got -3"),
    "range_lt": (
        sub("p: 0.2", "p: 1.0"),
        "file.yaml:12: model.layers[1].p: must be < 1, got 1.0",
    ),
    "not_a_number": (
        sub("lr: 0.1", "lr: fast"),
        "file.yaml:17: training.optimizer.lr: must be a number, got 'fast'",
    ),
    "bool_for_int": (
        sub("epochs: 20", "epochs: yes"),
        "file.yaml:15: training.epochs: must be an integer, got yes (a boolean)",
    ),
    "bool_for_float": (
        sub("lr: 0.1", "lr: NO"),
        "file.yaml:17: training.optimizer.lr: must be a number, got NO (a boolean)",
    ),
    "bool_for_string": (
        sub("nonlinearity: relu", "nonlinearity: no"),
        "file.yaml:11: model.layers[0].nonlinearity: must be a string, got no (a boolean); "
        "quote it to use it as a string",
    ),
    "float_for_int": (
        sub("epochs: 20", "epochs: 2.5"),
        "file.yaml:15: training.epochs: must be an integer, got 2.5",
    ),
    "number_for_string": (
        sub("name: digits_mlp", "name: 12"),
        "file.yaml:1: name: must be a string, got 12",
    ),
    "mapping_expected": (
        sub("  schedule: {name: cosine}", "  schedule: cosine"),
        "file.yaml:18: training.schedule: must be a mapping, got 'cosine'",
    ),
    "list_expected": (
        sub("input_shape: [64]", "input_shape: 64"),
        "file.yaml:8: model.input_shape: must be a list, got 64",
    ),
    "list_item": (
        sub("input_shape: [64]", "input_shape: [1, 0]"),
        "file.yaml:8: model.input_shape[1]: must be > 0, got 0",
    ),
    "choice": (
        sub("name: nesterov", "name: nesterof"),
        "file.yaml:17: training.optimizer.name: must be one of sgd, momentum, nesterov, adam, "
        "adamw, rmsprop; got 'nesterof' (did you mean 'nesterov'?)",
    ),
    "nonlinearity": (
        sub("nonlinearity: relu", "nonlinearity: rleu"),
        "file.yaml:11: model.layers[0].nonlinearity: unknown nonlinearity 'rleu' (did you mean "
        "'relu'?); expected one of relu, rectify, sigmoid, tanh, softmax, identity, linear, "
        "leaky_relu, leaky_rectify, elu",
    ),
    "layer_type": (
        sub("type: dropout", "type: dropot"),
        "file.yaml:12: model.layers[1].type: unknown layer type 'dropot' (did you mean "
        "'dropout'?); expected one of dense, conv2d, maxpool2d, avgpool2d, global_avgpool, "
        "dropout, flatten, batchnorm, nonlinearity, add, concat, block",
    ),
    "layer_without_type": (
        sub("{type: dropout, p: 0.2}", "{p: 0.2}"),
        "file.yaml:12: model.layers[1]: missing required key 'type' (one of dense, conv2d, "
        "maxpool2d, avgpool2d, global_avgpool, dropout, flatten, batchnorm, nonlinearity, add, "
        "concat, block)",
    ),
    "layer_not_mapping": (
        sub("{type: dropout, p: 0.2}", "dropout"),
        "file.yaml:12: model.layers[1]: must be a mapping, got 'dropout'",
    ),
    "no_layers": (
        sub(
            "  layers:\n"
            "    - {type: dense, units: 100, nonlinearity: relu}\n"
            "    - {type: dropout, p: 0.2}\n"
            "    - {type: dense, units: 10, nonlinearity: softmax}\n",
            "  layers: []\n",
        ),
        "file.yaml:10: model.layers: must have at least 1 entry",
    ),
    "missing": (sub("  epochs: 20\n", ""), "file.yaml:14: training.epochs: missing required key"),
    "missing_section": (
        sub(
            "training:\n  epochs: 20\n  batch_size: 64\n",
            "xtraining:\n  epochs: 20\n  batch_size: 64\n",
        ),
        "file.yaml:14: xtraining: unknown key (did you mean 'training'?)",
    ),
    "missing_top": ("name: a\n", "file.yaml: data: missing required key (and 2 more errors)"),
    "infinite": (
        sub("lr: 0.1", "lr: .inf"),
        "file.yaml:17: training.optimizer.lr: must be a finite number, got .inf",
    ),
    "huge_float": (
        sub("lr: 0.1", "lr: 1e999"),
        "file.yaml:17: training.optimizer.lr: must be a finite number, got 1e999",
    ),
    "huge_float_for_int": (
        sub("epochs: 20", "epochs: 1e400"),
        "file.yaml:15: training.epochs: must be an integer, got 1e400",
    ),
    "huge_int": (
        sub("epochs: 20", "epochs: " + "9" * 5000),
        "file.yaml:15: training.epochs: number too large",
    ),
    "nan": (
        sub("alpha: 0.1", "alpha: .nan"),
        "file.yaml:9: model.batch_norm.alpha: must be a finite number, got .nan",
    ),
    "python_tag": (
        sub("seed: 0", "seed: !!python/object/apply:os.system ['exit 3']"),
        "file.yaml:19: training.seed: YAML tag '!!python/object/apply:os.system' is not allowed",
    ),
    "python_tag_mapping": (
        sub("output: {dir: runs/digits_mlp}", "output: !!python/object:pathlib.Path {}"),
        "file.yaml:20: output: YAML tag '!!python/object:pathlib.Path' is not allowed",
    ),
    "local_tag": (
        sub("epochs: 20", "epochs: !env EPOCHS"),
        "file.yaml:15: training.epochs: YAML tag '!env' is not allowed",
    ),
    "bad_explicit_int": (
        sub("epochs: 20", "epochs: !!int twenty"),
        "file.yaml:15: training.epochs: cannot read 'twenty' as !!int",
    ),
    "syntax": (
        sub("seed: 0", "seed: [0"),
        "file.yaml:20: invalid YAML: expected ',' or ']', but got ':'",
    ),
    "tab_indent": (
        "data:\n\t train: 1\n",
        "file.yaml:2: invalid YAML: found character '\\t' that cannot start any token",
    ),
    "two_documents": (
        "a: 1\n---\nb: 2\n",
        "file.yaml:2: invalid YAML: expected a single document in the stream "
        "but found another document",
    ),
    "empty": ("", "file.yaml: the config is empty"),
    "only_comments": ("# nothing\n", "file.yaml: the config is empty"),
    "top_list": (
        "- a\n- b\n",
        TOP + "got a list",
    ),
    "top_scalar": (
        "hello",
        TOP + "got 'hello'",
    ),
    "nul_byte": (
        "a: 1\nb: \x00\n",
        "file.yaml:2: not a text config: character U+0000 is not allowed in YAML",
    ),
    "complex_key": ("? [a, b]\n: 1\n", "file.yaml:1: mapping keys must be plain names"),
    "deep_nesting": ("a: " + "[" * 3000 + "]" * 3000, "file.yaml: the config is nested too deeply"),
    "alias_bomb": (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n"
            for p, n in zip("abcde", "bcdef", strict=True)
        ),
        "file.yaml: the config is too large (more than 100000 values)",
    ),
    "exactly_one_source": (
        sub("{builtin: digits, split: test}", "{builtin: digits, split: test, path: t.h5}"),
        "file.yaml:5: data.test: give exactly one of 'builtin' or 'path'",
    ),
    "no_source": (
        sub("{builtin: digits, split: test}", "{x: X}"),
        "file.yaml:5: data.test: give exactly one of 'builtin' or 'path'",
    ),
    "split_needed": (
        sub("{builtin: digits, split: test}", "{builtin: digits}"),
        "file.yaml:5: data.test.split: missing required key (needed with 'builtin')",
    ),
    "split_with_path": (
        sub("{builtin: digits, split: test}", "{path: t.h5, split: test}"),
        "file.yaml:5: data.test.split: only allowed with 'builtin', not with 'path'",
    ),
    "path_suffix": (
        sub("{builtin: digits, split: test}", "{path: t.csv}"),
        "file.yaml:5: data.test.path: must be a file name ending in .h5, .hdf5 or .npz, "
        "got 't.csv'",
    ),
    "val_and_val_split": (
        sub("  preprocess:", "  val_split: 0.1\n  preprocess:"),
        "file.yaml:6: data.val_split: not allowed together with 'val'",
    ),
    "val_split_range": (
        sub("  val: {builtin: digits, split: val}", "  val_split: 1.5"),
        "file.yaml:4: data.val_split: must be < 1, got 1.5",
    ),
    "step_needs_size": (
        sub("{name: cosine}", "{name: step}"),
        "file.yaml:18: training.schedule.step_size: missing required key "
        "(needed when name is 'step')",
    ),
    "conv_size": (
        sub("{type: dropout, p: 0.2}", "{type: conv2d, filters: 4, size: [3, 3, 3]}"),
        "file.yaml:12: model.layers[1].size: must be a positive integer or a list of two, "
        "got a list",
    ),
    "conv_pad": (
        sub("{type: dropout, p: 0.2}", "{type: conv2d, filters: 4, size: 3, pad: sme}"),
        "file.yaml:12: model.layers[1].pad: must be a non-negative integer or a list of two or one "
        "of 'same', 'valid', 'full', got 'sme'",
    ),
    "pool_stride": (
        sub("{type: dropout, p: 0.2}", "{type: maxpool2d, size: 2, stride: 0}"),
        "file.yaml:12: model.layers[1].stride: must be a positive integer or a list of two, got 0",
    ),
    "bn_alpha": (
        sub("alpha: 0.1", "alpha: 0"),
        "file.yaml:9: model.batch_norm.alpha: must be > 0, got 0",
    ),
    "run_not_mapping": (BASE + "run: 5\n", "file.yaml:21: run: must be a mapping, got 5"),
    "more_errors": (
        sub("lr: 0.1", "lr: -1", sub("epochs: 20", "epochs: 0")),
        "file.yaml:15: training.epochs: must be >= 1, got 0 (and 1 more error)",
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_error_message(case):
    text, expected = ERRORS[case]
    assert error(text) == expected


def test_config_error_is_a_usage_error():
    assert issubclass(ConfigError, UsageError) and ConfigError.exit_code == 2


def test_python_tag_is_never_constructed(monkeypatch):
    called = []
    monkeypatch.setattr("os.system", lambda *a: called.append(a))
    error(sub("seed: 0", "seed: !!python/object/apply:os.system ['true']"))
    assert called == []


def test_load_config_file_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("x.yaml")
    assert str(info.value) == "config file 'x.yaml' not found"
    Path("d.yaml").mkdir()
    with pytest.raises(ConfigError) as info:
        load_config("d.yaml")
    assert str(info.value) == "config file 'd.yaml' is a folder, not a file"
    Path("bin.yaml").write_bytes(b"name: a\n\xff\xfe\x00garbage")
    with pytest.raises(ConfigError) as info:
        load_config("bin.yaml")
    assert str(info.value) == "bin.yaml:2: not a text config (invalid UTF-8 byte 0xff)"
    Path("bad.yaml").write_text(sub("lr: 0.1", "lr: -1"))
    with pytest.raises(ConfigError) as info:
        load_config("bad.yaml")
    assert str(info.value) == "bad.yaml:17: training.optimizer.lr: must be > 0, got -1"


# ------------------------------------------------------------------------------------------------
# Overrides
# ------------------------------------------------------------------------------------------------


def test_overrides_apply_before_validation():
    cfg = parse_config(
        BASE,
        overrides=[
            "training.optimizer.lr=0.05",
            "model.layers[0].units=50",
            "model.layers.2.name=out",
            "model.input_shape=[1, 8, 8]",
            "training.optimizer.weight_decay=1e-3",
            "data.val_split=0.2",
            "data.val=null",
            "training.schedule={name: step, step_size: 5}",
            "model.layers[1]={type: batchnorm, nonlinearity: relu}",
            "run.note=hello",
        ],
    )
    assert cfg.training.optimizer.lr == 0.05 and cfg.training.optimizer.weight_decay == 1e-3
    assert cfg.model.layers[0].units == 50 and cfg.model.layers[2].name == "out"
    assert cfg.model.input_shape == [1, 8, 8]
    assert cfg.data.val is None and cfg.data.val_split == 0.2
    assert (cfg.training.schedule.name, cfg.training.schedule.step_size) == ("step", 5)
    assert cfg.model.layers[1].type == "batchnorm" and cfg.model.layers[1].nonlinearity == "relu"
    assert cfg.run == {"note": "hello"}


def test_override_creates_missing_sections():
    text = sub("  schedule: {name: cosine}\n", "")
    cfg = parse_config(text, overrides=["training.schedule.warmup_epochs=2"])
    assert cfg.training.schedule.warmup_epochs == 2 and cfg.training.schedule.name == "constant"


OVERRIDE_ERRORS = {
    "training.optimizer.lrr=0.05": (
        "--set training.optimizer.lrr=0.05: unknown key (did you mean 'lr'?)"
    ),
    "model.layers[0].unitz=5": "--set model.layers[0].unitz=5: unknown key (did you mean 'units'?)",
    "trainign.epochs=3": "--set trainign.epochs=3: unknown key (did you mean 'training'?)",
    "training.epochs": "--set training.epochs: expected KEY=VALUE, e.g. training.optimizer.lr=0.05",
    "=3": "--set =3: expected KEY=VALUE, e.g. training.optimizer.lr=0.05",
    "a..b=1": "--set a..b=1: expected KEY=VALUE, e.g. training.optimizer.lr=0.05",
    "model.layers[3].units=5": (
        "--set model.layers[3].units=5: index 3 out of range (model.layers has 3 entries)"
    ),
    "training.epochs.x=1": "--set training.epochs.x=1: training.epochs is not a mapping",
    "model.batch_norm[0]=1": "--set model.batch_norm[0]=1: model.batch_norm is not a list",
    "training.epochs=[": (
        "--set training.epochs=[: invalid value: invalid YAML: expected the node content, but "
        "found '<stream end>'"
    ),
    "training.seed=!!python/name:os.system": (
        "--set training.seed=!!python/name:os.system: invalid value: "
        "YAML tag '!!python/name:os.system' is not allowed"
    ),
    "training.optimizer.lr=-2": "--set training.optimizer.lr=-2: must be > 0, got -2",
    "training.optimizer={name: adam}": (
        "--set training.optimizer={name: adam}: training.optimizer.lr: missing required key"
    ),
    "training.epochs=yes": "--set training.epochs=yes: must be an integer, got true (a boolean)",
}


@pytest.mark.parametrize("override", sorted(OVERRIDE_ERRORS))
def test_override_errors(override):
    assert error(BASE, overrides=[override]) == OVERRIDE_ERRORS[override]


# ------------------------------------------------------------------------------------------------
# Dump
# ------------------------------------------------------------------------------------------------


def test_dump_fills_defaults_in_schema_order_and_round_trips():
    cfg = parse_config(BASE, source="file.yaml", base_dir="/b")
    text = dump_config(cfg)
    data = yaml.safe_load(text)
    assert list(data) == [
        "name",
        "data",
        "model",
        "training",
        "output",
        "backend",
        "device",
        "devices",
    ]
    assert list(data["training"]) == list(type(cfg.training).model_fields)
    # only the chosen optimizer's keys, its defaults filled in (no adam beta2 for nesterov)
    assert data["training"]["optimizer"] == {
        "name": "nesterov",
        "lr": 0.1,
        "weight_decay": 1e-4,
        "grad_clip_norm": None,
        "momentum": 0.9,
    }
    assert data["training"]["schedule"] == {"name": "cosine", "warmup_epochs": 0, "min_lr": 0.0}
    assert data["training"]["max_consecutive_nan"] == 10
    assert data["model"]["layers"][0] == {
        "type": "dense",
        "units": 100,
        "nonlinearity": "relu",
        "batch_norm": True,
        "name": None,
        "input": None,
        "trainable": True,
    }
    assert parse_config(text, base_dir="/b") == cfg


def test_dump_round_trips_tricky_values():
    text = sub("name: digits_mlp", "name: '1e-3'")
    text = sub(
        "{type: dropout, p: 0.2}", "{type: conv2d, filters: 2, size: [2, 3], name: 'yes'}", text
    )
    cfg = parse_config(text, overrides=["training.optimizer={name: adam, lr: 1, epsilon: 1e-12}"])
    dumped = dump_config(cfg)
    again = parse_config(dumped)
    assert again == cfg and again.name == "1e-3" and again.model.layers[1].name == "yes"
    assert again.training.optimizer.epsilon == 1e-12


def test_dump_with_run_section_loads_again(tmp_path):
    cfg = load_config(CONFIGS / "digits_mlp.yaml")
    run = {"seed": 0, "versions": {"pytensor": "3.3.8"}, "backend": "numba", "dir": Path("r")}
    text = dump_config(cfg, extra={"run": run})
    assert yaml.safe_load(text)["run"] == {
        "seed": 0,
        "versions": {"pytensor": "3.3.8"},
        "backend": "numba",
        "dir": "r",
    }
    path = tmp_path / "config.yaml"
    path.write_text(text)
    again = load_config(path)
    assert again.run["versions"] == {"pytensor": "3.3.8"}
    assert again.base_dir == tmp_path
    again.base_dir = cfg.base_dir
    assert again.model_copy(update={"run": None}) == cfg
    assert "run:" in dump_config(again) and again.training == cfg.training
    with pytest.raises(ValueError, match="extra key 'training'"):
        dump_config(cfg, extra={"training": {}})


# ------------------------------------------------------------------------------------------------
# Fuzzing: nothing but ConfigError, always one line
# ------------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_config_errors(text: str) -> None:
    try:
        cfg = parse_config(text, source="f.yaml")
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("f.yaml") and "\n" not in message
        assert "Traceback" not in message and "object at 0x" not in message
    else:
        assert isinstance(cfg, Config)


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data):
    _only_config_errors(data.decode("latin-1"))


@FUZZ
@given(
    st.text(alphabet=" \t\n-:[]{},#&*!|>'\"%@`?<=.0123456789abcdeyn_~\\/\x00\u00e9", max_size=120)
)
def test_fuzz_yamlish_text(text):
    _only_config_errors(text)


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


_BASE_DATA = yaml.safe_load(BASE)
_BASE_PATHS = [p for p in _paths(_BASE_DATA) if p]


@FUZZ
@given(st.sampled_from(_BASE_PATHS), _VALUES)
def test_fuzz_mutated_config(path, value):
    data = yaml.safe_load(BASE)
    cur = data
    for key in path[:-1]:
        cur = cur[key]
    cur[path[-1]] = value
    _only_config_errors(yaml.safe_dump(data))


def test_checkpoint_every_steps_defaults_to_none_and_must_be_positive():
    from bntrain.config import parse_config

    base = yaml.safe_load(BASE)
    assert parse_config(yaml.safe_dump(base)).training.checkpoint_every_steps is None
    base["training"]["checkpoint_every_steps"] = 5
    assert parse_config(yaml.safe_dump(base)).training.checkpoint_every_steps == 5
    base["training"]["checkpoint_every_steps"] = 0
    with pytest.raises(ConfigError, match=r"training\.checkpoint_every_steps: must be >= 1"):
        parse_config(yaml.safe_dump(base))


# ------------------------------------------------------------------------------------------------
# Stored configs (run folders, checkpoints): the one parser
# ------------------------------------------------------------------------------------------------


def _stored(optimizer: dict, schedule: dict) -> str:
    """A run folder's config.yaml with the given optimizer and schedule mappings."""
    data = yaml.safe_load(dump_config(parse_config(BASE), extra={"run": {"seed": 0}}))
    data["training"]["optimizer"] = optimizer
    data["training"]["schedule"] = schedule
    return yaml.safe_dump(data, sort_keys=False)


# What bntrain wrote before each optimizer and schedule had its own schema: every key.
_OLD_ADAM = {
    "name": "adam",
    "lr": 0.001,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "beta1": 0.9,
    "beta2": 0.999,
    "epsilon": 1e-08,
    "grad_clip_norm": None,
}
_OLD_COSINE = {"name": "cosine", "step_size": None, "gamma": 0.1, "warmup_epochs": 0, "min_lr": 0.0}


def test_stored_config_of_an_older_bntrain_still_loads(tmp_path):
    cfg = parse_stored_config(_stored(_OLD_ADAM, _OLD_COSINE), "old/config.yaml", tmp_path)
    assert cfg.training.optimizer == AdamConfig(name="adam", lr=0.001)
    assert cfg.training.schedule == CosineSchedule(name="cosine")
    # a value the old bntrain would not have written is still an unknown key ...
    with pytest.raises(ConfigError, match=r"training.optimizer.momentum: unknown key for name"):
        parse_stored_config(_stored({**_OLD_ADAM, "momentum": 0.5}, _OLD_COSINE), "c", tmp_path)
    # ... and so is a default-valued one in a config a person wrote (no run: section)
    data = yaml.safe_load(_stored(_OLD_ADAM, _OLD_COSINE))
    del data["run"]
    with pytest.raises(ConfigError, match=r"training.optimizer.momentum: unknown key for name"):
        parse_config(yaml.safe_dump(data))


def test_stored_config_resolves_paths_where_the_run_read_them(tmp_path):
    text = dump_config(parse_config(BASE), extra={"run": {"config_dir": "/the/configs"}})
    assert parse_stored_config(text, "ck.h5:/config", tmp_path).base_dir == Path("/the/configs")
    text = dump_config(parse_config(BASE), extra={"run": {"seed": 0}})
    assert parse_stored_config(text, "ck.h5:/config", tmp_path).base_dir == tmp_path


def test_restore_has_no_yaml_parser_of_its_own():
    import bntrain.restore

    source = Path(bntrain.restore.__file__).read_text()
    assert "yaml" not in source and "parse_stored_config" in source
