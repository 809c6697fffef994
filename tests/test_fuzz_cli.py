"""Hostile configs through the real CLI: ``bntrain fit``/``check`` on fuzzed files (hypothesis).

Every case must exit 2 with exactly one ``Error:`` line (naming the key path
where there is one), print no traceback and write nothing next to the config.
150 examples in all (see docs/reliability.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bntrain.cli import main

#: tests/conftest.py's BLOCK in block style, so that any value can replace any scalar.
BLOCK = """\
name: tiny
data:
  train:
    builtin: digits
    split: train
  val:
    builtin: digits
    split: val
  preprocess:
    scale: 0.0625
model:
  batch_norm:
    insert: auto
    alpha: 0.1
  layers:
    - type: dense
      units: 16
      nonlinearity: relu
    - type: dropout
      p: 0.2
    - type: dense
      units: 12
      nonlinearity: tanh
    - type: dense
      units: 10
      nonlinearity: softmax
training:
  epochs: 2
  batch_size: 64
  optimizer:
    name: nesterov
    lr: 0.05
    momentum: 0.9
  seed: 3
output:
  dir: run
"""


def fuzz(n: int):
    return settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck))


COMMANDS = st.sampled_from(["fit", "check"])


def invoke(command: str, content: bytes) -> str:
    """Run ``bntrain COMMAND c.yaml`` in a fresh folder; return the single error line."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.yaml"
        path.write_bytes(content)
        result = CliRunner().invoke(main, [command, str(path)])
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(
            result.exception
        )
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        lines = result.output.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
        assert sorted(p.name for p in Path(folder).iterdir()) == ["c.yaml"]  # nothing written
        return lines[0]


@fuzz(40)
@given(COMMANDS, st.binary(max_size=300))
def test_random_bytes(command, content):
    invoke(command, content)


# (text in BLOCK, the key path it sets)
TARGETS = [
    ("lr: 0.05", "training.optimizer.lr"),
    ("momentum: 0.9", "training.optimizer.momentum"),
    ("name: nesterov", "training.optimizer.name"),
    ("p: 0.2", "model.layers[1].p"),
    ("units: 16", "model.layers[0].units"),
    ("nonlinearity: tanh", "model.layers[2].nonlinearity"),
    ("alpha: 0.1", "model.batch_norm.alpha"),
    ("epochs: 2", "training.epochs"),
    ("batch_size: 64", "training.batch_size"),
    ("seed: 3", "training.seed"),
    ("scale: 0.0625", "data.preprocess.scale"),
]
OPTIONAL = {"data.preprocess.scale"}

TAGS = st.sampled_from(
    [
        "!!python/object/apply:os.system ['touch pwned']",
        "!!python/object:builtins.dict {}",
        "!!python/name:os.system",
        "!!binary aGVsbG8=",
        "!!set {a, b}",
        "!!timestamp 2001-12-14",
        "!custom 1",
    ]
)
BOOLEAN_WORDS = st.sampled_from(["NO", "yes", "Yes", "no", "on", "off", "True", "false", "y"])
HUGE = st.one_of(
    st.sampled_from(["1e400", "-1e400", ".inf", "-.inf", ".nan", "1e99999"]),
    st.integers(min_value=20, max_value=400).map(lambda k: f"-{10**k}"),
)
WRONG_TYPE = st.sampled_from(["[1, 2]", "{a: 1}", "~", "[]", "{}", "'zz-not-a-value'"])
NESTED = st.integers(min_value=2, max_value=3000).map(lambda n: "[" * n + "]" * n)
BAD_VALUES = st.one_of(TAGS, BOOLEAN_WORDS, HUGE, WRONG_TYPE, NESTED)


@fuzz(70)
@given(COMMANDS, st.sampled_from(TARGETS), BAD_VALUES)
def test_bad_values_name_their_key_path(command, target, value):
    text, path = target
    # data.preprocess.scale is optional: null (~) is a valid "no scaling", not a bad value
    assume(not (path in OPTIONAL and value == "~"))
    key = text.split(":")[0]
    assert BLOCK.count(text) == 1
    line = invoke(command, BLOCK.replace(text, f"{key}: {value}").encode())
    assert f" {path}: " in line or "nested too deeply" in line, line


TRAINING_KEYS = ["epochs", "batch_size", "seed", "optimizer"]


@fuzz(20)
@given(
    COMMANDS,
    st.sampled_from(TRAINING_KEYS),
    st.integers(min_value=0, max_value=12),
    st.sampled_from("abcxyz_"),
)
def test_typos_name_the_key(command, key, where, char):
    i = where % (len(key) + 1)
    typo = key[:i] + char + key[i:]
    text = BLOCK.replace(f"\n  {key}:", f"\n  {typo}:", 1)
    assert text != BLOCK
    line = invoke(command, text.encode())
    assert f"training.{typo}" in line or f"training.{key}" in line, line


@fuzz(20)
@given(COMMANDS, st.sampled_from(["epochs: 2", "batch_size: 64", "seed: 3"]), st.integers(0, 9))
def test_duplicate_keys(command, text, value):
    key = text.split(":")[0]
    line = invoke(
        command, BLOCK.replace(f"  {text}\n", f"  {text}\n  {key}: {value}\n", 1).encode()
    )
    assert f"duplicate key '{key}' in training" in line, line
