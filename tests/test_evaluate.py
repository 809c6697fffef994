"""bntrain eval (bntrain.commands.eval) against an independent NumPy forward pass of the checkpoint."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import yaml

from bntrain.checkpoint import save_checkpoint, write_bn_stats
from bntrain.commands.eval import evaluate_command
from bntrain.config import dump_config, parse_config
from bntrain.errors import UsageError
from bntrain.model import build_network

MLP_YAML = """
name: tiny
data:
  train: {builtin: digits, split: train}
  test: {builtin: digits, split: test}
  preprocess: {scale: 0.0625}
model:
  input_shape: [64]
  batch_norm: {insert: auto, epsilon: 1.0e-3, alpha: ALPHA}
  layers:
    - {type: dense, units: 16, nonlinearity: relu}
    - {type: dropout, p: 0.3}
    - {type: dense, units: 12, nonlinearity: tanh}
    - {type: dense, units: 10, nonlinearity: softmax}
training:
  epochs: EPOCHS
  batch_size: 32
  optimizer: {name: adam, lr: 0.01}
  recompute_stats: false
  seed: 0
output: {dir: run}
"""


def mlp_yaml(alpha: float = 0.1, epochs: int = 3) -> str:
    return MLP_YAML.replace("ALPHA", str(alpha)).replace("EPOCHS", str(epochs))


# ------------------------------------------------------------------ checkpoint helpers


def make_checkpoint(path, yaml_text: str, seed: int = 0, input_shape=(64,), epoch: int = 3):
    """Build the config's network, give every parameter random values, save it.

    Returns the network (its BN layers name the ``/bn_stats`` entries).
    """
    folder = path.parent
    config = parse_config(yaml_text, source="test.yaml", base_dir=folder)
    network = build_network(config.model, input_shape, seed=config.training.seed)
    rng = np.random.default_rng(seed)
    for layer in network.layers:
        for param in layer.params:
            shape = param.get_value().shape
            short = param.name.rsplit(".", 1)[-1]
            if short == "inv_std":
                value = rng.uniform(0.5, 2.0, shape)
            elif short == "gamma":
                value = rng.uniform(0.5, 1.5, shape)
            else:
                value = rng.normal(0, 0.5, shape)
            param.set_value(value.astype(np.float32))
    text = dump_config(config, extra={"run": {"config_dir": str(folder)}})
    save_checkpoint(
        path,
        layers=network.layers,
        config_text=text,
        epoch=epoch,
        step=10 * epoch,
        preprocess_state={"scale": 0.0625, "standardize": False},
    )
    return network


def add_random_bn_stats(path, network, seed: int = 1, output=None):
    rng = np.random.default_rng(seed)
    stats = {}
    for layer in network.bn_layers:
        shape = layer.mean.get_value().shape
        stats[layer.name] = (rng.normal(0, 0.5, shape), rng.uniform(0.2, 3.0, shape))
    write_bn_stats(path, stats, {"estimator": "population", "mode": "test"}, output=output)
    return {k: (m.astype(np.float32), v.astype(np.float32)) for k, (m, v) in stats.items()}


# ------------------------------------------------------------------ the NumPy oracle


def _act(name: str, x: np.ndarray) -> np.ndarray:
    if name in ("rectify", "relu"):
        return np.maximum(x, 0)
    if name == "tanh":
        return np.tanh(x)
    if name in ("linear", "identity"):
        return x
    if name == "softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise AssertionError(f"nonlinearity {name} not in the oracle")


def _conv(x, W, stride, pad, flip):
    if flip:
        W = W[:, :, ::-1, ::-1]
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    n, _, h, w = x.shape
    f, _, kh, kw = W.shape
    oh, ow = (h - kh) // stride[0] + 1, (w - kw) // stride[1] + 1
    out = np.zeros((n, f, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i : i + stride[0] * oh : stride[0], j : j + stride[1] * ow : stride[1]]
            out += np.einsum("nchw,fc->nfhw", patch, W[:, :, i, j])
    return out


def _maxpool(x, size):
    n, c, h, w = x.shape
    oh, ow = h // size[0], w // size[1]
    x = x[:, :, : oh * size[0], : ow * size[1]].reshape(n, c, oh, size[0], ow, size[1])
    return x.max(axis=(3, 5))


_PREFIX = {"conv2d": "conv", "maxpool2d": "pool", "avgpool2d": "pool"}


def yaml_layers(yaml_text: str) -> list[tuple]:
    """The network a config describes, as ``(op, name, settings)`` steps, from the YAML alone.

    Follows the documented rules (README, docs/checkpoint.md): layers are named ``<type><i>``
    (``conv``/``pool`` for ``conv2d``/``maxpool2d``); ``conv2d`` is a true convolution with
    ``stride`` 1 and ``pad: same`` by default; with ``batch_norm.insert: auto`` every ``dense``
    and ``conv2d`` layer but the output one is followed by ``<name>_bn`` (per channel, the
    model's ``epsilon``, default 1e-4), the bias is dropped and the nonlinearity (default
    ``relu``) moves after the normalization.
    """
    model = yaml.safe_load(yaml_text)["model"]
    bn_cfg = model.get("batch_norm", {})
    epsilon = float(bn_cfg.get("epsilon", 1e-4))
    auto = bn_cfg.get("insert", "auto") == "auto"
    specs = model["layers"]
    weighted = [i for i, spec in enumerate(specs) if spec["type"] in ("dense", "conv2d")]
    counts: dict[str, int] = {}
    steps = []
    for i, spec in enumerate(specs):
        t = spec["type"]
        base = _PREFIX.get(t, t)
        counts[base] = counts.get(base, 0) + 1
        name = spec.get("name", f"{base}{counts[base]}")
        act = spec.get("nonlinearity", "relu")
        if t in ("dense", "conv2d"):
            bn = auto and i != weighted[-1] and spec.get("batch_norm", True)
            settings = {"bias": not bn}
            if t == "conv2d":
                size = _pair(spec["size"])
                pad = spec.get("pad", "same")
                if pad == "same":
                    pad = (size[0] // 2, size[1] // 2)
                elif pad == "valid":
                    pad = (0, 0)
                elif pad == "full":
                    pad = (size[0] - 1, size[1] - 1)
                settings.update(stride=_pair(spec.get("stride", 1)), pad=_pair(pad))
            steps.append((t, name, settings))
            if bn:
                axes = (0,) if t == "dense" else (0, 2, 3)
                steps.append(("bn", f"{name}_bn", {"axes": axes, "epsilon": epsilon}))
            steps.append(("act", name, {"fn": act}))
        elif t == "maxpool2d":
            size = _pair(spec["size"])
            assert _pair(spec.get("stride", size)) == size and not spec.get("pad"), (
                "not in the oracle"
            )
            steps.append(("maxpool", name, {"size": size}))
        elif t == "flatten":
            steps.append(("flatten", name, {}))
        elif t != "dropout":  # dropout does nothing at inference
            raise AssertionError(f"layer type {t} not in the oracle")
    return steps


def _pair(value):
    return tuple(value) if isinstance(value, list | tuple) else (value, value)


def numpy_forward(path, x_raw, *, yaml_text: str, stats: str, batch_size: int | None = None):
    """Forward pass, in float64, of the network ``yaml_text`` describes with the parameters of
    the checkpoint at ``path`` (read with plain h5py).

    Every setting (layers, nonlinearities, pads, strides, epsilon, input scale) comes from the
    YAML; only the learned arrays come from the file.  ``stats``: 'ema' (stored
    mean/inv_std), 'population' (``/bn_stats`` mean/var), 'batch' (each batch of
    ``batch_size``'s own biased statistics), or 'exact' (the statistics of the whole of
    ``x_raw``, layer by layer).  Returns ``(probabilities, {bn layer: (mean, var) seen})``.
    """
    config = yaml.safe_load(yaml_text)
    scale = float(config["data"].get("preprocess", {}).get("scale", 1.0))
    input_shape = config["model"].get("input_shape")
    steps = yaml_layers(yaml_text)
    with h5py.File(path, "r") as f:
        arrays = {
            name: {k: g[k][()].astype(np.float64) for k in g.keys()}
            for name, g in f["model/layers"].items()
        }
        pop = (
            {k: (f["bn_stats"][k]["mean"][()], f["bn_stats"][k]["var"][()]) for k in f["bn_stats"]}
            if "bn_stats" in f
            else {}
        )
    x_all = np.asarray(x_raw, dtype=np.float64) * scale
    if stats == "batch":
        chunks = [x_all[i : i + batch_size] for i in range(0, len(x_all), batch_size)]
    else:
        chunks = [x_all]
    outs, seen = [], {}
    for x in chunks:
        if input_shape is not None:
            x = x.reshape((len(x), *input_shape))
        for op, name, c in steps:
            p = arrays[name] if op != "act" else {}
            if op == "dense":
                x = x.reshape(len(x), -1) @ p["W"] + (p["b"] if c["bias"] else 0)
            elif op == "conv2d":
                x = _conv(x, p["W"], c["stride"], c["pad"], flip=True)
                if c["bias"]:
                    x = x + p["b"][None, :, None, None]
            elif op == "maxpool":
                x = _maxpool(x, c["size"])
            elif op == "flatten":
                x = x.reshape(len(x), -1)
            elif op == "bn":
                axes = c["axes"]
                shape = [1 if a in axes else s for a, s in enumerate(x.shape)]
                if stats == "ema":
                    mean, inv_std = p["mean"], p["inv_std"]
                else:
                    if stats == "population":
                        mean, var = (v.astype(np.float64) for v in pop[name])
                    else:
                        mean, var = x.mean(axis=axes), x.var(axis=axes)
                        seen[name] = (mean, var)
                    inv_std = 1 / np.sqrt(var + c["epsilon"])
                x = (x - mean.reshape(shape)) * (inv_std * p["gamma"]).reshape(shape)
                x = x + p["beta"].reshape(shape)
            else:
                x = _act(c["fn"], x)
        outs.append(x)
    return np.concatenate(outs), seen


# ------------------------------------------------------------------ forward-pass agreement

N_EXAMPLES, BATCH = 70, 32  # the last batch (6 examples) is partial


@pytest.fixture(scope="module")
def mlp_runs(tmp_path_factory):
    """Evaluate one random MLP checkpoint three ways (three compiled functions in all)."""
    tmp = tmp_path_factory.mktemp("mlp")
    plain = tmp / "plain.h5"
    network = make_checkpoint(plain, mlp_yaml())
    with_stats = tmp / "with_stats.h5"
    add_random_bn_stats(plain, network, output=with_stats)
    rng = np.random.default_rng(5)
    x = rng.integers(0, 17, (N_EXAMPLES, 8, 8)).astype(np.float32)  # reshaped to (64,) on load
    y = rng.integers(0, 10, N_EXAMPLES)
    np.savez(tmp / "data.npz", X=x, y=y)
    np.savez(tmp / "nolabels.npz", X=x)
    runs, warnings = {}, {}
    cases = {
        "ema": (plain, None, "data.npz"),
        "population": (with_stats, None, "data.npz"),
        "batch": (with_stats, "batch", "nolabels.npz"),
    }
    for key, (ckpt, stats, data) in cases.items():
        warnings[key] = []
        out = tmp / f"{key}.npz"
        metrics = evaluate_command(
            ckpt,
            data=tmp / data,
            stats=stats,
            batch_size=BATCH,
            predictions=out,
            warn=warnings[key].append,
        )
        with np.load(out) as z:
            runs[key] = (metrics, {k: z[k] for k in z.files})
    return {
        "tmp": tmp,
        "x": x,
        "y": y,
        "runs": runs,
        "warnings": warnings,
        "plain": plain,
        "with_stats": with_stats,
    }


@pytest.mark.parametrize("key", ["ema", "population", "batch"])
def test_predictions_match_numpy_forward(mlp_runs, key):
    metrics, pred = mlp_runs["runs"][key]
    ckpt = mlp_runs["with_stats"] if key != "ema" else mlp_runs["plain"]
    expected, _ = numpy_forward(
        ckpt,
        mlp_runs["x"].reshape(N_EXAMPLES, -1),
        yaml_text=mlp_yaml(),
        stats=key,
        batch_size=BATCH,
    )
    assert pred["probabilities"].dtype == np.float32
    assert pred["probabilities"].shape == (N_EXAMPLES, 10)
    np.testing.assert_allclose(pred["probabilities"], expected, rtol=1e-4, atol=2e-6)
    assert pred["predicted"].dtype == np.int64
    np.testing.assert_array_equal(pred["predicted"], pred["probabilities"].argmax(axis=1))
    assert metrics["stats"] == key
    assert metrics["n_examples"] == N_EXAMPLES
    assert metrics["epoch"] == 3
    assert metrics["batch_size"] == BATCH


def test_batch_stats_depend_on_batch_composition(mlp_runs):
    """The partial last batch is normalized with its own 6 examples, not padding."""
    _, pred = mlp_runs["runs"]["batch"]
    x = mlp_runs["x"].reshape(N_EXAMPLES, -1)
    whole, _ = numpy_forward(
        mlp_runs["with_stats"], x, yaml_text=mlp_yaml(), stats="batch", batch_size=N_EXAMPLES
    )
    assert np.abs(pred["probabilities"] - whole).max() > 1e-3


@pytest.mark.parametrize("key", ["ema", "population"])
def test_metrics_match_numpy(mlp_runs, key):
    metrics, pred = mlp_runs["runs"][key]
    y = mlp_runs["y"]
    p = pred["probabilities"].astype(np.float64)
    np.testing.assert_array_equal(pred["labels"], y)
    assert pred["labels"].dtype == np.int64
    assert metrics["loss"] == pytest.approx(-np.mean(np.log(p[np.arange(len(y)), y])), rel=1e-9)
    assert metrics["accuracy"] == pytest.approx(np.mean(p.argmax(1) == y))
    confusion = np.zeros((10, 10), int)
    for t, q in zip(y, p.argmax(1), strict=True):
        confusion[t, q] += 1
    assert metrics["confusion_matrix"] == confusion.tolist()
    per_class = [
        confusion[i, i] / confusion[i].sum() if confusion[i].sum() else None for i in range(10)
    ]
    assert metrics["per_class_accuracy"] == pytest.approx(per_class)
    assert metrics["has_labels"] is True


def test_default_stats_and_warning(mlp_runs):
    plain = mlp_runs["plain"]
    assert mlp_runs["runs"]["ema"][0]["stats"] == "ema"  # chosen by default: no /bn_stats
    assert mlp_runs["warnings"]["ema"] == [
        f"Warning: '{plain}' has no /bn_stats (recompute-stats has not been run); evaluating "
        f"with training's moving averages (--stats ema); run `bntrain recompute-stats {plain}` "
        f"for whole-training-set statistics"
    ]
    assert mlp_runs["runs"]["population"][0]["stats"] == "population"  # default with /bn_stats
    assert mlp_runs["warnings"]["population"] == []
    assert mlp_runs["warnings"]["batch"] == []


def test_data_without_labels_skips_label_metrics(mlp_runs):
    metrics, pred = mlp_runs["runs"]["batch"]
    assert "labels" not in pred
    assert metrics["has_labels"] is False
    for key in ("loss", "accuracy", "per_class_accuracy", "confusion_matrix"):
        assert metrics[key] is None
    assert metrics["n_examples"] == N_EXAMPLES


def test_population_without_bn_stats_is_an_error(mlp_runs):
    plain = mlp_runs["plain"]
    with pytest.raises(UsageError) as info:
        evaluate_command(plain, data=mlp_runs["tmp"] / "data.npz", stats="population")
    assert str(info.value) == (
        f"--stats population: no /bn_stats in '{plain}'; run `bntrain recompute-stats {plain}` "
        f"first or use --stats ema"
    )
    assert info.value.exit_code == 2


def test_bn_stats_of_wrong_shape_are_an_error(mlp_runs):
    bad = mlp_runs["tmp"] / "bad_stats.h5"
    shutil.copyfile(mlp_runs["plain"], bad)
    write_bn_stats(bad, {"dense1_bn": (np.zeros(3), np.ones(3))}, {})
    with pytest.raises(UsageError) as info:
        evaluate_command(bad, data=mlp_runs["tmp"] / "data.npz")
    assert str(info.value) == f"'{bad}': /bn_stats/dense1_bn/mean has shape [3], expected [16]"


# ------------------------------------------------------- why population statistics matter


def test_population_statistics_match_the_trained_behaviour(tmp_path):
    """Train with alpha=0.9 (EMA ~ the last few batches), then compare on the training set.

    The network's "true" behaviour: its outputs when every BN layer normalizes with the
    exact statistics of the whole training set, layer by layer (what batch-norm training
    computes on average).  Computed twice, independently: by the NumPy oracle ('exact') and
    by bntrain in batch mode with one batch holding the whole training set.
    Measure: mean absolute difference of the class probabilities, and the accuracy gap.
    """
    from bntrain.checkpoint import read_checkpoint
    from bntrain.commands.recompute import recompute_stats_command
    from bntrain.data import open_dataset
    from bntrain.train import fit

    config = parse_config(mlp_yaml(alpha=0.9, epochs=3), source="tiny.yaml", base_dir=tmp_path)
    result = fit(config)
    ckpt = result.run_dir / "last.h5"
    train = open_dataset({"builtin": "digits", "split": "train"}, tmp_path, "data.train")
    x, y = train.read(slice(0, len(train)))
    train.close()
    n = len(x)
    np.savez(tmp_path / "train.npz", X=x, y=y)
    x = np.asarray(x, dtype=np.float64).reshape(n, -1)

    truth, exact_stats = numpy_forward(
        ckpt, x, yaml_text=mlp_yaml(alpha=0.9, epochs=3), stats="exact"
    )
    recompute_stats_command(ckpt, data=tmp_path / "train.npz", mode="layerwise")
    recomputed = read_checkpoint(ckpt).bn_stats
    assert sorted(recomputed) == sorted(exact_stats)
    for name, (mean, var) in exact_stats.items():
        np.testing.assert_allclose(recomputed[name]["mean"], mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(recomputed[name]["var"], var, rtol=1e-4, atol=1e-5)

    data = tmp_path / "train.npz"
    m_pop = evaluate_command(ckpt, data=data, stats="population", predictions=tmp_path / "p.npz")
    m_ema = evaluate_command(ckpt, data=data, stats="ema", predictions=tmp_path / "e.npz")
    m_full = evaluate_command(
        ckpt, data=data, stats="batch", batch_size=n, predictions=tmp_path / "b.npz"
    )
    probs = {k: np.load(tmp_path / f"{k}.npz")["probabilities"] for k in ("p", "e", "b")}
    # bntrain's own full-set batch mode agrees with the NumPy "truth"
    np.testing.assert_allclose(probs["b"], truth, atol=1e-4)
    gap_pop = np.abs(probs["p"] - truth).mean()
    gap_ema = np.abs(probs["e"] - truth).mean()
    acc_true = np.mean(truth.argmax(1) == y)
    assert m_full["accuracy"] == pytest.approx(acc_true)
    assert gap_pop < 1e-5
    assert gap_ema > 1e-3
    assert gap_ema > 100 * gap_pop
    assert abs(m_pop["accuracy"] - acc_true) <= abs(m_ema["accuracy"] - acc_true)
    assert abs(m_pop["accuracy"] - acc_true) < 1e-3


CONV_YAML = (
    MLP_YAML.replace("input_shape: [64]", "input_shape: [1, 8, 8]")
    .replace(
        """    - {type: dense, units: 16, nonlinearity: relu}
    - {type: dropout, p: 0.3}
    - {type: dense, units: 12, nonlinearity: tanh}
""",
        """    - {type: conv2d, filters: 3, size: 3}
    - {type: maxpool2d, size: 2}
    - {type: conv2d, filters: 4, size: 3, stride: 2, pad: 1, nonlinearity: tanh}
    - {type: flatten}
""",
    )
    .replace("ALPHA", "0.1")
    .replace("EPOCHS", "1")
)


@pytest.mark.parametrize("stats", ["population", "batch"])
def test_conv_net_matches_numpy_forward(tmp_path, stats):
    ckpt = tmp_path / "conv.h5"
    network = make_checkpoint(ckpt, CONV_YAML, seed=3, input_shape=(1, 8, 8))
    assert [type(layer).__name__ for layer in network.layers].count("BatchNormLayer") == 2
    add_random_bn_stats(ckpt, network, seed=4)
    x = np.random.default_rng(6).integers(0, 17, (25, 64)).astype(np.float32)
    np.savez(tmp_path / "x.npz", X=x)
    out = tmp_path / "p.npz"
    evaluate_command(ckpt, data=tmp_path / "x.npz", stats=stats, batch_size=10, predictions=out)
    expected, _ = numpy_forward(ckpt, x, yaml_text=CONV_YAML, stats=stats, batch_size=10)
    np.testing.assert_allclose(np.load(out)["probabilities"], expected, rtol=1e-4, atol=2e-6)
