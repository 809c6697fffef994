"""`bntrain eval` through click.testing.CliRunner: output formats and every error path."""

from __future__ import annotations

import json
import os
import zipfile

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


# ------------------------------------------------------------------ --predictions never destroys


def _refused(result, message):
    assert result.exit_code == 2, result.output
    assert _error(result) == f"Error: {message}"


def test_predictions_refuses_the_checkpoint_however_it_is_named(files, tmp_path):
    ckpt = files["with_stats"]
    before = ckpt.read_bytes()
    (tmp_path / "sym.h5").symlink_to(ckpt)
    os.link(ckpt, tmp_path / "hard.h5")
    (tmp_path / "sub").mkdir()
    detour = tmp_path / "sub" / ".." / "hard.h5"
    for target in (ckpt, tmp_path / "sym.h5", tmp_path / "hard.h5", detour):
        result = run("eval", ckpt, "--data", files["tmp"] / "data.npz", "--predictions", target)
        _refused(
            result,
            f"--predictions: '{target}' is the checkpoint being evaluated; "
            f"write the predictions to a new file",
        )
    assert ckpt.read_bytes() == before


def test_predictions_refuses_the_data_file(files, tmp_path):
    data = files["tmp"] / "data.npz"
    before = data.read_bytes()
    (tmp_path / "d.npz").symlink_to(data)
    for target in (data, tmp_path / "d.npz"):
        result = run("eval", files["with_stats"], "--data", data, "--predictions", target)
        _refused(
            result,
            f"--predictions: '{target}' is the --data file; write the predictions to a new file",
        )
    assert data.read_bytes() == before


def test_predictions_refuses_a_data_file_named_in_the_checkpoints_config(tmp_path):
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "test.npz", X=rng.normal(size=(8, 64)), y=rng.integers(0, 10, 8))
    before = (tmp_path / "test.npz").read_bytes()
    ckpt = tmp_path / "c.h5"
    make_checkpoint(ckpt, mlp_yaml().replace("{builtin: digits, split: test}", "{path: test.npz}"))
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "p.npz"
    link.symlink_to(tmp_path / "test.npz")
    result = run("eval", ckpt, "--predictions", link)
    _refused(
        result,
        f"--predictions: '{link}' is the data.test file; write the predictions to a new file",
    )
    assert (tmp_path / "test.npz").read_bytes() == before


def test_predictions_replace_only_an_earlier_predictions_file(files, tmp_path):
    ckpt, data = files["with_stats"], files["tmp"] / "data.npz"
    foreign = {"notes.txt": b"my notes\n", "other.npz": None, "empty.npz": b""}
    for name, content in foreign.items():
        if content is None:
            np.savez(tmp_path / name, probabilities=np.zeros((2, 10)))
        else:
            (tmp_path / name).write_bytes(content)
    os.mkfifo(tmp_path / "fifo.npz")  # refused without being opened (it would block)
    for name in [*foreign, "fifo.npz"]:
        target = tmp_path / name
        before = None if name == "fifo.npz" else target.read_bytes()
        result = run("eval", ckpt, "--data", data, "--predictions", target)
        _refused(
            result,
            f"--predictions: '{target}' exists and is not a predictions file written by "
            f"bntrain; choose another name or remove the file",
        )
        if before is not None:
            assert target.read_bytes() == before
    out = tmp_path / "p.npz"
    for stats in ("ema", "population"):  # the second run replaces the first one's file
        result = run("eval", ckpt, "--data", data, "--stats", stats, "--predictions", out)
        assert result.exit_code == 0, result.output
        probs, _ = numpy_forward(ckpt, files["x"], yaml_text=mlp_yaml(), stats=stats)
        with np.load(out) as z:
            np.testing.assert_allclose(z["probabilities"], probs, rtol=1e-4, atol=2e-6)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")) == []


def test_is_predictions_file_reads_the_mark(tmp_path):
    from bntrain.evaluate import PREDICTIONS_MARK, is_predictions_file, write_predictions

    write_predictions(tmp_path / "p.npz", np.eye(3, dtype=np.float32), None)
    assert is_predictions_file(tmp_path / "p.npz")
    with zipfile.ZipFile(tmp_path / "p.npz") as zf:
        assert zf.comment == PREDICTIONS_MARK
        assert sorted(zf.namelist()) == ["predicted.npy", "probabilities.npy"]
    np.savez(tmp_path / "plain.npz", probabilities=np.eye(3))
    with zipfile.ZipFile(tmp_path / "plain.npz", "a") as zf:
        zf.comment = b"bntrain predictions 0"  # a near miss is not the mark
    assert not is_predictions_file(tmp_path / "plain.npz")
    assert not is_predictions_file(tmp_path / "missing.npz")
    assert not is_predictions_file(tmp_path)


# ------------------------------------------------------------------ out of memory


@pytest.mark.parametrize(
    "error",
    [MemoryError(), RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")],
)
def test_out_of_memory_names_the_batch_size_option(files, monkeypatch, error):
    import bntrain.metrics

    def exhausted(*args, **kwargs):
        raise error

    monkeypatch.setattr(bntrain.metrics, "predict_dataset", exhausted)
    result = run("eval", files["with_stats"], "--data", files["tmp"] / "data.npz")
    assert result.exit_code == 1
    assert _error(result) == "Error: out of memory; try a smaller --batch-size"


def test_other_runtime_errors_are_not_called_out_of_memory(files, monkeypatch):
    import bntrain.metrics

    def broken(*args, **kwargs):
        raise RuntimeError("something else")

    monkeypatch.setattr(bntrain.metrics, "predict_dataset", broken)
    with pytest.raises(RuntimeError, match="something else"):
        run("eval", files["with_stats"], "--data", files["tmp"] / "data.npz")
