"""Config mistakes through the CLI: one exact ``Error:`` line, exit 2, nothing written (issue #11 A.6/A.7)."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from bntrain.cli import main
from bntrain.config import parse_config

from .conftest import TINY_MLP

OPT = "optimizer: {name: nesterov, lr: 0.05, momentum: 0.9, weight_decay: 1.0e-4}"
LONG = "is 300 bytes long; a file or folder name may have at most 255 bytes"

# (text in TINY_MLP, its replacement, the error line) -- TINY_MLP's line numbers matter
CASES = {
    "nul_in_name": (
        "name: tiny",
        'name: "ti\\0ny"',
        "Error: c.yaml:1: name: must not contain a NUL byte (\\x00)",
    ),
    "nul_in_output_dir": (
        "output: {dir: run}",
        'output: {dir: "r\\0un"}',
        "Error: c.yaml:20: output.dir: must not contain a NUL byte (\\x00)",
    ),
    "long_name": (
        "name: tiny",
        "name: " + "a" * 300,
        f"Error: c.yaml:1: name: 'aaaaaaaaaaaaaaaaaaaaa...' {LONG}",
    ),
    "long_output_dir_component": (
        "output: {dir: run}",
        "output: {dir: runs/" + "d" * 300 + "/x}",
        f"Error: c.yaml:20: output.dir: 'ddddddddddddddddddddd...' {LONG}",
    ),
    "long_data_path_component": (
        "train: {builtin: digits, split: train}",
        "train: {path: " + "t" * 297 + ".h5}",
        f"Error: c.yaml:3: data.train.path: 'ttttttttttttttttttttt...' {LONG}",
    ),
    "long_name_in_utf8_bytes": (
        "name: tiny",
        "name: " + "\u00e9" * 150,  # 150 characters, 300 bytes
        "Error: c.yaml:1: name: '" + "\u00e9" * 21 + f"...' {LONG}",
    ),
    "adam_with_momentum": (
        OPT,
        "optimizer: {name: adam, lr: 0.05, momentum: 0.9}",
        "Error: c.yaml:17: training.optimizer.momentum: unknown key for name 'adam' "
        "(used with name: momentum, nesterov)",
    ),
    "sgd_with_beta1": (
        OPT,
        "optimizer: {name: sgd, lr: 0.05, beta1: 0.9}",
        "Error: c.yaml:17: training.optimizer.beta1: unknown key for name 'sgd' "
        "(used with name: adam, adamw)",
    ),
    "rmsprop_with_momentum": (
        OPT,
        "optimizer: {name: rmsprop, lr: 0.05, momentum: 0.9}",
        "Error: c.yaml:17: training.optimizer.momentum: unknown key for name 'rmsprop' "
        "(used with name: momentum, nesterov)",
    ),
    "adam_typo": (
        OPT,
        "optimizer: {name: adam, lr: 0.05, betaa1: 0.9}",
        "Error: c.yaml:17: training.optimizer.betaa1: unknown key (did you mean 'beta1'?)",
    ),
    "cosine_with_step_size": (
        "schedule: {name: cosine}",
        "schedule: {name: cosine, step_size: 3}",
        "Error: c.yaml:18: training.schedule.step_size: unknown key for name 'cosine' "
        "(used with name: step)",
    ),
    "step_with_min_lr": (
        "schedule: {name: cosine}",
        "schedule: {name: step, step_size: 3, min_lr: 0.01}",
        "Error: c.yaml:18: training.schedule.min_lr: unknown key for name 'step' "
        "(used with name: cosine)",
    ),
    "constant_by_default_with_gamma": (
        "schedule: {name: cosine}",
        "schedule: {gamma: 0.5}",
        "Error: c.yaml:18: training.schedule.gamma: unknown key for name 'constant' "
        "(used with name: step, multistep)",
    ),
    "lr_zero_in_float32": (
        "lr: 0.05",
        "lr: 1e-50",
        "Error: c.yaml:17: training.optimizer.lr: must be at least 1.4e-45 "
        "(smaller is 0 in float32), got 1e-50",
    ),
    "lr_infinite_in_float32": (
        "lr: 0.05",
        "lr: 1e39",
        "Error: c.yaml:17: training.optimizer.lr: must be at most 3.4e+38 "
        "(larger is infinite in float32), got 1e39",
    ),
    "adam_eps_zero_in_float32": (
        OPT,
        "optimizer: {name: adam, lr: 0.05, epsilon: 1.0e-50}",
        "Error: c.yaml:17: training.optimizer.epsilon: must be at least 1.4e-45 "
        "(smaller is 0 in float32), got 1.0e-50",
    ),
    "bn_eps_zero_in_float32": (
        "epsilon: 1.0e-4",
        "epsilon: 1e-46",
        "Error: c.yaml:8: model.batch_norm.epsilon: must be at least 1.4e-45 "
        "(smaller is 0 in float32), got 1e-46",
    ),
    "bn_layer_eps_zero_in_float32": (
        "{type: dropout, p: 0.2}",
        "{type: batchnorm, epsilon: 1e-300}",
        "Error: c.yaml:11: model.layers[1].epsilon: must be at least 1.4e-45 "
        "(smaller is 0 in float32), got 1e-300",
    ),
}


def _fit(tmp_path, monkeypatch, text: str, *args: str) -> str:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(text)
    result = CliRunner().invoke(main, ["fit", "c.yaml", *args])
    assert result.exit_code == 2, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # nothing written
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_mistake_is_one_error_line_and_exit_2(case, tmp_path, monkeypatch):
    old, new, expected = CASES[case]
    assert TINY_MLP.count(old) == 1
    assert _fit(tmp_path, monkeypatch, TINY_MLP.replace(old, new)) == expected


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "training.optimizer.beta1=0.5",
            "Error: --set training.optimizer.beta1=0.5: unknown key for name 'nesterov' "
            "(used with name: adam, adamw)",
        ),
        (
            "training.schedule.step_size=2",
            "Error: --set training.schedule.step_size=2: unknown key for name 'cosine' "
            "(used with name: step)",
        ),
        (
            'name="a\\0"',
            'Error: --set name="a\\0": must not contain a NUL byte (\\x00)',
        ),
    ],
)
def test_override_mistake_is_one_error_line(override, expected, tmp_path, monkeypatch):
    assert _fit(tmp_path, monkeypatch, TINY_MLP, "--set", override) == expected


@pytest.mark.parametrize(
    ("optimizer", "keys"),
    [
        ("{name: sgd, lr: 0.1}", ["name", "lr", "weight_decay", "grad_clip_norm"]),
        ("{name: momentum, lr: 0.1}", ["name", "lr", "weight_decay", "grad_clip_norm", "momentum"]),
        ("{name: nesterov, lr: 0.1}", ["name", "lr", "weight_decay", "grad_clip_norm", "momentum"]),
        ("{name: rmsprop, lr: 0.1}", ["name", "lr", "weight_decay", "grad_clip_norm", "epsilon"]),
        (
            "{name: adam, lr: 0.1}",
            ["name", "lr", "weight_decay", "grad_clip_norm", "beta1", "beta2", "epsilon"],
        ),
        (
            "{name: adamw, lr: 0.1}",
            ["name", "lr", "weight_decay", "grad_clip_norm", "beta1", "beta2", "epsilon"],
        ),
    ],
)
def test_print_config_shows_the_chosen_optimizers_keys(optimizer, keys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(TINY_MLP.replace(OPT, f"optimizer: {optimizer}"))
    result = CliRunner().invoke(main, ["fit", "c.yaml", "--print-config"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert list(printed["training"]["optimizer"]) == keys
    # today's defaults
    defaults = {"momentum": 0.9, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}
    for key, value in defaults.items():
        if key in keys:
            assert printed["training"]["optimizer"][key] == value
    again = parse_config(result.output, source="c.yaml", base_dir=tmp_path)
    assert again == parse_config(
        TINY_MLP.replace(OPT, f"optimizer: {optimizer}"), "c.yaml", tmp_path
    )


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (None, {"name": "constant", "warmup_epochs": 0}),
        ("{name: constant}", {"name": "constant", "warmup_epochs": 0}),
        (
            "{name: step, step_size: 2}",
            {"name": "step", "warmup_epochs": 0, "step_size": 2, "gamma": 0.1},
        ),
        ("{name: cosine}", {"name": "cosine", "warmup_epochs": 0, "min_lr": 0.0}),
    ],
)
def test_print_config_shows_the_chosen_schedules_keys(schedule, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = "" if schedule is None else f"  schedule: {schedule}\n"
    (tmp_path / "c.yaml").write_text(TINY_MLP.replace("  schedule: {name: cosine}\n", line))
    result = CliRunner().invoke(main, ["fit", "c.yaml", "--print-config"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["training"]["schedule"] == expected
