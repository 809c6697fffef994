"""`bntrain eval` through click.testing.CliRunner: output formats and every error path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from bntrain.cli import main

from .test_evaluate import add_random_bn_stats, make_checkpoint, mlp_yaml, numpy_forward

JSON_KEYS = {
    "n_examples",
    "loss",
    "accuracy",
    "per_class_accuracy",
    "confusion_matrix",
    "stats",
    "checkpoint",
    "epoch",
    "data",
    "batch_size",
    "has_labels",
}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_eval")
    plain = tmp / "plain.h5"
    network = make_checkpoint(plain, mlp_yaml(), epoch=4)
    with_stats = tmp / "with_stats.h5"
    add_random_bn_stats(plain, network, output=with_stats)
    rng = np.random.default_rng(11)
    x = rng.integers(0, 17, (40, 64)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    np.savez(tmp / "data.npz", X=x, y=y)
    np.savez(tmp / "labels_k.npz", inputs=x, target=y)
    np.savez(tmp / "wrong_shape.npz", X=x[:, :10], y=y)
    np.savez(tmp / "nolabels.npz", X=x)
    truncated = tmp / "truncated.h5"
    truncated.write_bytes(plain.read_bytes()[:2000])
    return {
        "tmp": tmp,
        "plain": plain,
        "with_stats": with_stats,
        "x": x,
        "y": y,
        "truncated": truncated,
    }


def test_json_output_and_default_ema_warning(files):
    plain = files["plain"]
    result = run("eval", plain, "--data", files["tmp"] / "data.npz", "--json", "--batch-size", 16)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)  # nothing but the JSON on stdout
    assert set(metrics) == JSON_KEYS
    assert metrics["stats"] == "ema"
    assert metrics["epoch"] == 4
    assert metrics["checkpoint"] == str(plain)
    assert metrics["n_examples"] == 40
    assert metrics["batch_size"] == 16
    assert len(metrics["confusion_matrix"]) == 10
    assert sum(map(sum, metrics["confusion_matrix"])) == 40
    probs, _ = numpy_forward(plain, files["x"], yaml_text=mlp_yaml(), stats="ema")
    assert metrics["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == files["y"]))
    assert result.stderr.splitlines() == [
        f"Warning: '{plain}' has no /bn_stats (recompute-stats has not been run); evaluating "
        f"with training's moving averages (--stats ema); run `bntrain recompute-stats {plain}` "
        f"for whole-training-set statistics"
    ]


def test_human_output_with_population_stats_and_predictions(files):
    ckpt, out = files["with_stats"], files["tmp"] / "pred.npz"
    result = run(
        "eval",
        ckpt,
        "--data",
        files["tmp"] / "labels_k.npz",
        "--x-key",
        "inputs",
        "--y-key",
        "target",
        "--predictions",
        out,
    )
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # /bn_stats present: population, no warning
    probs, _ = numpy_forward(ckpt, files["x"], yaml_text=mlp_yaml(), stats="population")
    p = probs[np.arange(40), files["y"]]
    lines = result.stdout.splitlines()
    assert lines == [
        f"checkpoint: {ckpt} (epoch 4)",
        f"data: {files['tmp'] / 'labels_k.npz'} (40 examples)",
        "stats: population",
        f"loss: {-np.mean(np.log(p)):.4f}",
        f"accuracy: {np.mean(probs.argmax(1) == files['y']):.4f}",
        f"predictions: {out}",
    ]
    with np.load(out) as z:
        assert sorted(z.files) == ["labels", "predicted", "probabilities"]
        np.testing.assert_allclose(z["probabilities"], probs, rtol=1e-4, atol=2e-6)
        np.testing.assert_array_equal(z["labels"], files["y"])


def test_default_data_is_the_config_test_set(files):
    from bntrain.data import open_dataset

    ckpt = files["with_stats"]
    result = run("eval", ckpt, "--json", "--stats", "batch", "--batch-size", 100)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    test = open_dataset({"builtin": "digits", "split": "test"}, None, "data.test")
    x, y = test.read(slice(0, len(test)))
    test.close()
    assert metrics["data"] == "data.test"
    assert metrics["stats"] == "batch"
    assert metrics["n_examples"] == len(y)
    probs, _ = numpy_forward(
        ckpt, x.reshape(len(x), -1), yaml_text=mlp_yaml(), stats="batch", batch_size=100
    )
    assert metrics["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == y))


def test_data_without_labels(files):
    data = files["tmp"] / "nolabels.npz"
    result = run("eval", files["with_stats"], "--data", data)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == [
        f"data: {data} (40 examples)",
        "stats: population",
        "no labels: loss and accuracy not computed",
    ]


# ------------------------------------------------------------------ errors (exit 2, one line)


def _error(result) -> str:
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_checkpoint(files):
    missing = files["tmp"] / "nope.h5"
    result = run("eval", missing)
    assert result.exit_code == 2
    assert _error(result) == f"Error: checkpoint '{missing}' not found"


def test_truncated_checkpoint(files):
    bad = files["truncated"]
    result = run("eval", bad)
    assert result.exit_code == 2
    assert _error(result) == (
        f"Error: '{bad}' is not a readable HDF5 checkpoint "
        f"(truncated, corrupt, or locked by another process?)"
    )


def test_data_shape_mismatch(files):
    data = files["tmp"] / "wrong_shape.npz"
    result = run("eval", files["with_stats"], "--data", data)
    assert result.exit_code == 2
    assert _error(result) == (
        f"Error: --data: '{data}' has examples of shape [10] but the checkpoint's network "
        f"takes examples of shape [64]"
    )


def test_missing_data_file(files):
    missing = files["tmp"] / "absent.npz"
    result = run("eval", files["with_stats"], "--data", missing)
    assert result.exit_code == 2
    assert _error(result) == f"Error: --data: file '{missing}' not found"


def test_population_without_bn_stats(files):
    plain = files["plain"]
    result = run("eval", plain, "--stats", "population", "--data", files["tmp"] / "data.npz")
    assert result.exit_code == 2
    assert _error(result) == (
        f"Error: --stats population: no /bn_stats in '{plain}'; run "
        f"`bntrain recompute-stats {plain}` first or use --stats ema"
    )


def test_bad_option_values(files):
    result = run("eval", files["plain"], "--stats", "median")
    assert result.exit_code == 2
    assert "Invalid value for '--stats': 'median' is not one of" in result.stderr
    result = run("eval", files["plain"], "--batch-size", 0)
    assert result.exit_code == 2
    assert "Invalid value for '--batch-size': 0 is not in the range x>=1." in result.stderr
