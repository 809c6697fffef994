"""``bntrain schema``: the config's JSON Schema agrees with the config parser (issue #16)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from bntrain.cli import main
from bntrain.config import (
    LAYER_TYPES,
    OPTIMIZERS,
    SCHEDULES,
    config_json_schema,
    dump_config,
    load_config,
    parse_config,
)
from bntrain.config.loader import load_yaml
from bntrain.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

BASE = textwrap.dedent(
    """\
    data: {train: {builtin: digits, split: train}}
    model:
      layers:
        - {type: dense, units: 8}
        - LAYER
        - {type: dense, units: 10, nonlinearity: softmax}
    training:
      epochs: 1
      batch_size: 8
      optimizer: OPTIMIZER
      schedule: SCHEDULE
    """
)
GOOD_LAYER = "{type: flatten}"
GOOD_OPT = "{name: sgd, lr: 0.1}"
GOOD_SCHEDULE = "{name: constant}"


def config(layer=GOOD_LAYER, optimizer=GOOD_OPT, schedule=GOOD_SCHEDULE) -> str:
    return (
        BASE.replace("LAYER", layer).replace("OPTIMIZER", optimizer).replace("SCHEDULE", schedule)
    )


@pytest.fixture(scope="module")
def validator():
    schema = config_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_accepts(validator, text: str) -> bool:
    data, _ = load_yaml(text, "t.yaml")  # YAML 1.2, as yaml-language-server reads it
    return validator.is_valid(data)


def parser_accepts(text: str) -> bool:
    try:
        parse_config(text, source="t.yaml")
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(validator, path):
    data, _ = load_yaml(path.read_text(), str(path))
    assert list(validator.iter_errors(data)) == []


def test_a_run_folders_stored_config_validates(validator):
    cfg = load_config(CONFIGS / "digits_cnn.yaml")
    text = dump_config(cfg, extra={"run": {"seed": 0, "versions": {"numpy": "2"}, "dir": "r"}})
    assert schema_accepts(validator, text)


GOOD = {
    **{f"layer_{t}": config(layer=f"{{type: {t}}}") for t in ("flatten", "dropout", "batchnorm")},
    "layer_dense_opts": config(layer="{type: dense, units: 3, batch_norm: false, name: d}"),
    "layer_conv": config(layer="{type: conv2d, filters: 2, size: [3, 1], pad: valid}"),
    "layer_pool": config(layer="{type: avgpool2d, size: 2, mode: average_inc_pad}"),
    "layer_nonlin": config(layer="{type: nonlinearity, fn: tanh}"),
    "sgd_clip": config(optimizer="{name: sgd, lr: 0.1, grad_clip_norm: 1.0, weight_decay: 0.1}"),
    "momentum": config(optimizer="{name: momentum, lr: 0.1, momentum: 0.5}"),
    "nesterov": config(optimizer="{name: nesterov, lr: 0.1, momentum: 0.5}"),
    "rmsprop": config(optimizer="{name: rmsprop, lr: 0.1, epsilon: 1.0e-6}"),
    "adam": config(optimizer="{name: adam, lr: 1e-3, beta1: 0.8, beta2: 0.99, epsilon: 1e-7}"),
    "adamw": config(optimizer="{name: adamw, lr: 1e-3, weight_decay: 0.01}"),
    "step": config(schedule="{name: step, step_size: 2, gamma: 0.5, warmup_epochs: 1}"),
    "cosine": config(schedule="{name: cosine, min_lr: 0.001}"),
    "schedule_without_name": config(schedule="{warmup_epochs: 2}"),
    "with_name_output_backend": "name: x\noutput: {dir: out}\nbackend: numba\n" + config(),
}
BAD = {
    "unknown_top_key": config() + "outptu: {}\n",
    "unknown_layer_key": config(layer="{type: dropout, unit: 3}"),
    "unknown_layer_type": config(layer="{type: dropot}"),
    "layer_without_type": config(layer="{p: 0.5}"),
    "wrong_type": config(layer="{type: dense, units: many}"),
    "bool_for_int": config(layer="{type: dense, units: true}"),
    "float_for_int": config(layer="{type: dense, units: 2.5}"),
    "string_for_bool": config(layer="{type: dense, units: 2, batch_norm: 'yes'}"),
    "conv_size_three": config(layer="{type: conv2d, filters: 2, size: [3, 3, 3]}"),
    "conv_size_zero": config(layer="{type: conv2d, filters: 2, size: 0}"),
    "adam_with_momentum": config(optimizer="{name: adam, lr: 0.1, momentum: 0.9}"),
    "sgd_with_beta1": config(optimizer="{name: sgd, lr: 0.1, beta1: 0.9}"),
    "cosine_with_step_size": config(schedule="{name: cosine, step_size: 2}"),
    "step_without_step_size": config(schedule="{name: step}"),
    "negative_lr": config(optimizer="{name: sgd, lr: -0.1}"),
    "zero_lr": config(optimizer="{name: sgd, lr: 0}"),
    "missing_lr": config(optimizer="{name: sgd}"),
    "unknown_optimizer": config(optimizer="{name: adagrad, lr: 0.1}"),
    "momentum_one": config(optimizer="{name: momentum, lr: 0.1, momentum: 1.0}"),
    "missing_training": "data: {train: {builtin: digits, split: train}}\n",
    "bad_backend": "backend: torch\n" + config(),
}


@pytest.mark.parametrize("case", sorted(GOOD))
def test_schema_and_parser_accept(validator, case):
    assert parser_accepts(GOOD[case])
    assert schema_accepts(validator, GOOD[case])


@pytest.mark.parametrize("case", sorted(BAD))
def test_schema_and_parser_refuse(validator, case):
    assert not parser_accepts(BAD[case])
    assert not schema_accepts(validator, BAD[case])


def test_schema_lists_every_choice_with_descriptions():
    schema = config_json_schema()
    defs = schema["$defs"]
    tags = {
        d["properties"][key]["const"]
        for d in defs.values()
        for key in ("type", "name")
        if "const" in d.get("properties", {}).get(key, {})
    }
    assert tags == {*LAYER_TYPES, *OPTIMIZERS, *SCHEDULES}
    assert defs["AdamConfig"]["properties"]["beta2"]["default"] == 0.999
    assert defs["AdamConfig"]["properties"]["lr"]["description"].startswith("Learning rate")
    assert defs["DenseSpec"]["description"] == "`{type: dense, units: N}`: a fully connected layer."
    assert defs["DenseSpec"]["required"] == ["type", "units"]
    assert schema["required"] == ["data", "model", "training"]


def test_schema_command_prints_the_schema():
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == config_json_schema()
    assert result.output.startswith(
        '{\n  "$schema": "https://json-schema.org/draft/2020-12/schema"'
    )


def test_readme_config_with_the_editor_line_is_valid_for_both(validator):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    # the whole-config example (the other YAML blocks are excerpts of one section)
    blocks = [
        b
        for b in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)
        if b.startswith("name: digits_mlp")
    ]
    assert len(blocks) == 1
    assert "# yaml-language-server: $schema=bntrain.schema.json" in readme
    text = "# yaml-language-server: $schema=bntrain.schema.json\n" + blocks[0]
    assert parser_accepts(text) and schema_accepts(validator, text)
