"""`bntrain recompute-stats` through click.testing.CliRunner: files written and error paths."""

from __future__ import annotations

import hashlib
import json
import shutil
import textwrap
from datetime import datetime

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from bntrain.checkpoint import read_checkpoint, save_checkpoint
from bntrain.cli import main
from bntrain.config import dump_config, parse_config
from bntrain.data import Preprocessor
from bntrain.model import build_network

SCALE = 0.5  # the stored preprocessing, applied before the network
N_TRAIN = 30  # not a multiple of the batch size (8): the last batch has 6 examples
CONFIG = textwrap.dedent(
    """\
    name: rs
    data:
      train: {path: train.npz}
      preprocess: {scale: 0.5}
    model:
      batch_norm: {insert: INSERT, epsilon: 1.0e-3}
      layers:
        - {type: dense, units: 5}
        - {type: dense, units: 4, nonlinearity: tanh}
        - {type: dense, units: 3, nonlinearity: softmax}
    training:
      epochs: 1
      batch_size: 8
      optimizer: {name: sgd, lr: 0.1}
    """
)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def make_checkpoint(path, insert="auto", seed=5):
    cfg = parse_config(CONFIG.replace("INSERT", insert), source="rs.yaml", base_dir=path.parent)
    network = build_network(cfg.model, (6,), seed=0)
    rng = np.random.default_rng(seed)
    for bn in network.bn_layers:  # moving averages far from the data's statistics
        shape = bn.mean.get_value().shape
        bn.mean.set_value(rng.normal(size=shape).astype(np.float32))
        bn.inv_std.set_value(rng.uniform(0.5, 2, size=shape).astype(np.float32))
        bn.beta.set_value(rng.normal(size=shape).astype(np.float32))
    save_checkpoint(
        path,
        layers=network.layers,
        config_text=dump_config(cfg),
        epoch=1,
        step=4,
        preprocess_state=Preprocessor(scale=SCALE).state(),
    )
    return network


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_recompute")
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(N_TRAIN, 6)) * 3 + 1).astype(np.float32)
    np.savez(tmp / "train.npz", X=x, y=rng.integers(0, 3, N_TRAIN))
    other = rng.normal(size=(10, 2, 3)).astype(np.float32)  # same size as (6,): reshaped
    np.savez(tmp / "other.npz", feats=other)
    np.savez(tmp / "wrong_shape.npz", X=other[:, :, :2])
    source = tmp / "source.h5"
    network = make_checkpoint(source)
    make_checkpoint(tmp / "nobn.h5", insert="none")
    (tmp / "truncated.h5").write_bytes(source.read_bytes()[:3000])
    return {"tmp": tmp, "x": x, "other": other, "source": source, "network": network}


@pytest.fixture
def ckpt(files, tmp_path):
    path = files["tmp"] / f"work_{tmp_path.name}.h5"
    shutil.copyfile(files["source"], path)
    return path


def first_bn_reference(network, x):
    """Population statistics of the first BN layer's input: preprocessed x @ W of dense1."""
    h = SCALE * x.astype(np.float64) @ network.layer("dense1").W.get_value().astype(np.float64)
    return h.mean(axis=0), h.var(axis=0)


EPSILON = 1e-3  # model.batch_norm.epsilon in CONFIG


def _estimate(batches, estimator):
    if estimator == "population":
        h = np.concatenate(batches)
        return h.mean(axis=0), h.var(axis=0)
    return (  # Algorithm 2: unweighted means of batch means and unbiased batch variances
        np.mean([b.mean(axis=0) for b in batches], axis=0),
        np.mean([b.var(axis=0, ddof=1) for b in batches], axis=0),
    )


def second_bn_reference(network, x, mode, batch_size, estimator):
    """Statistics of dense2_bn's input, in float64, from CONFIG's layers (relu, then dense2).

    ``batch``: dense1_bn normalizes each batch with the batch's own statistics;
    ``layerwise``: with the statistics recomputed for it first (same estimator).
    """

    def value(layer, param):
        return getattr(network.layer(layer), param).get_value().astype(np.float64)

    p = {
        "W1": value("dense1", "W"),
        "gamma": value("dense1_bn", "gamma"),
        "beta": value("dense1_bn", "beta"),
        "W2": value("dense2", "W"),
    }
    xs = SCALE * x.astype(np.float64)
    h1 = [xs[i : i + batch_size] @ p["W1"] for i in range(0, len(xs), batch_size)]
    settled = _estimate(h1, estimator) if mode == "layerwise" else None
    h2 = []
    for h in h1:
        mean, var = settled if settled is not None else (h.mean(axis=0), h.var(axis=0))
        z = (h - mean) / np.sqrt(var + EPSILON) * p["gamma"] + p["beta"]
        h2.append(np.maximum(z, 0) @ p["W2"])
    return _estimate(h2, estimator)


def test_in_place_writes_stats_attributes_and_report(files, ckpt):
    before = read_checkpoint(ckpt)
    result = run("recompute-stats", ckpt)
    assert result.exit_code == 0, result.output
    after = read_checkpoint(ckpt)
    names = ["dense1_bn", "dense2_bn"]
    assert list(after.bn_stats) == names
    mean, var = first_bn_reference(files["network"], files["x"])
    got = after.bn_stats["dense1_bn"]
    assert got["mean"].dtype == np.float32 and got["var"].dtype == np.float32
    assert got["mean"].shape == (5,) and after.bn_stats["dense2_bn"]["var"].shape == (4,)
    np.testing.assert_allclose(got["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["var"], var, rtol=1e-5)
    mean2, var2 = second_bn_reference(files["network"], files["x"], "batch", 8, "population")
    np.testing.assert_allclose(after.bn_stats["dense2_bn"]["mean"], mean2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after.bn_stats["dense2_bn"]["var"], var2, rtol=1e-5, atol=1e-7)
    # where the second layer's statistics tell the modes apart
    _, var2_layerwise = second_bn_reference(
        files["network"], files["x"], "layerwise", 8, "population"
    )
    assert not np.allclose(var2, var2_layerwise, rtol=1e-3)
    # the moving averages (and every other parameter) are untouched
    for name in before.params:
        for key, value in before.params[name].items():
            np.testing.assert_array_equal(after.params[name][key], value)
    a = after.bn_stats_attrs
    assert a["estimator"] == "population" and a["mode"] == "batch"
    assert a["n_examples"] == N_TRAIN and a["batch_size"] == 8 and a["passes"] == 1
    assert a["data_sha256"] == hashlib.sha256(files["x"].tobytes()).hexdigest()
    assert a["source"] == str(ckpt.resolve()) and a["data"] == "config:data.train"
    assert datetime.fromisoformat(a["computed_at"]).utcoffset().total_seconds() == 0
    with h5py.File(ckpt, "r") as f:
        assert f["bn_stats/dense2_bn"].attrs["estimator"] == "population"
    report = json.loads((ckpt.parent / f"{ckpt.stem}.bn_stats.json").read_text())
    assert report["attrs"] == a and report["passes"] == 1
    assert [row["name"] for row in report["layers"]] == names
    assert [row["count"] for row in report["layers"]] == [N_TRAIN, N_TRAIN]
    bn = files["network"].layer("dense1_bn")
    std = np.sqrt(var + 1e-3)
    dm = np.abs(bn.mean.get_value() - mean) / std
    row = report["layers"][0]
    assert row["mean_rel_diff_max"] == pytest.approx(dm.max(), rel=1e-4)
    assert row["mean_rel_diff_mean"] == pytest.approx(dm.mean(), rel=1e-4)
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "layer",
        "values/ch",
        "mean",
        "diff",
        "max",
        "mean",
        "std",
        "diff",
        "max",
        "mean",
    ]
    assert lines[1].split()[:2] == ["dense1_bn", "30"]
    assert lines[-1] == (
        f"wrote /bn_stats (population, batch mode, 30 examples, 1 pass) to {ckpt}; "
        f"report: {ckpt.parent / (ckpt.stem + '.bn_stats.json')}"
    )
    assert result.stderr == ""  # no progress bar when stderr is not a terminal


def test_output_leaves_the_source_unchanged(files, ckpt):
    digest = sha(ckpt)
    out = files["tmp"] / "out_layerwise.h5"
    result = run(
        "recompute-stats",
        ckpt,
        "--output",
        out,
        "--mode",
        "layerwise",
        "--estimator",
        "batch-mean",
        "--batch-size",
        7,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert sha(ckpt) == digest
    assert not (ckpt.parent / f"{ckpt.stem}.bn_stats.json").exists()
    written = read_checkpoint(out)
    a = written.bn_stats_attrs
    assert (a["mode"], a["estimator"], a["batch_size"], a["passes"]) == (
        "layerwise",
        "batch-mean",
        7,
        2,
    )
    assert a["source"] == str(ckpt.resolve())
    # batch-mean of the first layer: mean of batch means, unbiased batch variances
    h = SCALE * files["x"].astype(np.float64) @ files["network"].layer("dense1").W.get_value()
    batches = [h[s : s + 7] for s in range(0, N_TRAIN, 7)]
    mean = np.mean([b.mean(0) for b in batches], axis=0)
    var = np.mean([b.var(0, ddof=1) for b in batches], axis=0)
    np.testing.assert_allclose(written.bn_stats["dense1_bn"]["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(written.bn_stats["dense1_bn"]["var"], var, rtol=1e-5)
    mean2, var2 = second_bn_reference(files["network"], files["x"], "layerwise", 7, "batch-mean")
    np.testing.assert_allclose(written.bn_stats["dense2_bn"]["mean"], mean2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(written.bn_stats["dense2_bn"]["var"], var2, rtol=1e-5, atol=1e-7)
    assert a["data"] == "config:data.train"
    assert json.loads((out.parent / "out_layerwise.bn_stats.json").read_text())["passes"] == 2
    assert result.stdout.splitlines() == [
        f"wrote /bn_stats (batch-mean, layerwise mode, 30 examples, 2 passes) to {out}; "
        f"report: {out.parent / 'out_layerwise.bn_stats.json'}"
    ]


def test_data_option_with_x_key_reshapes_same_size_examples(files, ckpt):
    result = run("recompute-stats", ckpt, "--data", files["tmp"] / "other.npz", "--x-key", "feats")
    assert result.exit_code == 0, result.output
    after = read_checkpoint(ckpt)
    x = files["other"].reshape(10, 6)
    mean, var = first_bn_reference(files["network"], x)
    np.testing.assert_allclose(after.bn_stats["dense1_bn"]["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after.bn_stats["dense1_bn"]["var"], var, rtol=1e-5)
    a = after.bn_stats_attrs
    assert a["n_examples"] == 10
    assert a["data"] == str(files["tmp"] / "other.npz")  # provenance: the file, not the config
    assert a["data_sha256"] == hashlib.sha256(files["other"].tobytes()).hexdigest()


def _assert_nothing_written(folder, before):
    assert sorted(p.name for p in folder.iterdir()) == before


def test_checkpoint_without_batch_norm(files):
    path = files["tmp"] / "nobn.h5"
    listing = sorted(p.name for p in files["tmp"].iterdir())
    result = run("recompute-stats", path)
    assert result.exit_code == 2
    assert result.stderr == f"Error: '{path}' has no batch-norm layers; nothing to recompute\n"
    _assert_nothing_written(files["tmp"], listing)


def test_data_of_the_wrong_shape(files, ckpt):
    digest = sha(ckpt)
    data = files["tmp"] / "wrong_shape.npz"
    result = run("recompute-stats", ckpt, "--data", data)
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: --data: '{data}' has examples of shape [2, 2] but the checkpoint's network "
        f"takes examples of shape [6]\n"
    )
    assert sha(ckpt) == digest


def test_data_without_the_x_array(files, ckpt):
    digest = sha(ckpt)
    data = files["tmp"] / "other.npz"
    result = run("recompute-stats", ckpt, "--data", data)
    assert result.exit_code == 2
    # the rest of the line is bntrain.data's hint
    assert result.stderr.startswith(f"Error: --data: '{data}' has no array 'X' (arrays: feats)")
    assert len(result.stderr.splitlines()) == 1
    missing = files["tmp"] / "nope.npz"
    result = run("recompute-stats", ckpt, "--data", missing)
    assert result.exit_code == 2
    assert result.stderr == f"Error: --data: file '{missing}' not found\n"
    assert sha(ckpt) == digest
    assert not (ckpt.parent / f"{ckpt.stem}.bn_stats.json").exists()


def test_truncated_and_missing_checkpoints(files):
    path = files["tmp"] / "truncated.h5"
    result = run("recompute-stats", path)
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: '{path}' is not a readable HDF5 checkpoint (truncated, corrupt, or locked by "
        f"another process?)\n"
    )
    missing = files["tmp"] / "missing.h5"
    result = run("recompute-stats", missing)
    assert result.exit_code == 2
    assert result.stderr == f"Error: checkpoint '{missing}' not found\n"


def test_bad_option_values(ckpt):
    result = run("recompute-stats", ckpt, "--batch-size", 0)
    assert result.exit_code == 2 and "--batch-size" in result.stderr
    result = run("recompute-stats", ckpt, "--estimator", "median")
    assert result.exit_code == 2 and "'median' is not one of 'population', 'batch-mean'" in (
        result.stderr
    )
