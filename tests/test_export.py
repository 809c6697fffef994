"""`bntrain export`: ONNX and NPZ files that reproduce `bntrain eval --predictions`.

The oracle is `eval --predictions` on the same raw data: onnxruntime's output
(and a NumPy interpreter of the NPZ format written here, independent of the
exporter) must equal it within 1e-5, with batch norm folded and unfolded, with
population and moving-average statistics.
"""

from __future__ import annotations

import json
import textwrap

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from bntrain.cli import main
from bntrain.data import load_digits

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

MLP = """\
data:
  train: {builtin: digits, split: train}
  val: {builtin: digits, split: val}
  preprocess: {scale: 0.0625, standardize: true}
model:
  batch_norm: {epsilon: 1.0e-3, alpha: 0.3}
  layers:
    - {type: dense, units: 16, nonlinearity: relu}
    - {type: dropout, p: 0.2}
    - {type: dense, units: 12, nonlinearity: tanh}
    - {type: dense, units: 10, nonlinearity: softmax}
training: {epochs: 1, batch_size: 64, optimizer: {name: adam, lr: 0.01}, seed: 5}
output: {dir: run_mlp}
"""

CNN = """\
data:
  train: {builtin: digits, split: train}
  val: {builtin: digits, split: val}
  preprocess: {scale: 0.0625}
model:
  input_shape: [1, 8, 8]
  layers:
    - {type: conv2d, filters: 4, size: 3, pad: same, nonlinearity: relu}
    - {type: maxpool2d, size: 2}
    - {type: conv2d, filters: 6, size: [3, 2], stride: [1, 2], pad: valid, nonlinearity: elu}
    - {type: avgpool2d, size: 2, stride: 1, pad: 1, mode: average_inc_pad}
    - {type: batchnorm, nonlinearity: sigmoid}
    - {type: flatten}
    - {type: dense, units: 10, nonlinearity: softmax}
training: {epochs: 1, batch_size: 64, optimizer: {name: adam, lr: 0.01}, seed: 6}
output: {dir: run_cnn}
"""


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Fit the MLP and CNN for one epoch (fit recomputes /bn_stats in best.h5)."""
    tmp = tmp_path_factory.mktemp("export")
    ds = load_digits("test")
    x, y = ds.read_x(slice(0, len(ds))), ds.read_y(slice(0, len(ds)))
    np.savez(tmp / "test.npz", X=x, y=y)
    out = {"tmp": tmp, "data": tmp / "test.npz", "x": x}
    for name, text in (("mlp", MLP), ("cnn", CNN)):
        (tmp / f"{name}.yaml").write_text(text)
        r = run("fit", tmp / f"{name}.yaml", "--quiet")
        assert r.exit_code == 0, r.output
        out[name] = tmp / f"run_{name}" / "best.h5"
    return out


def net_input(trained, net):
    """The raw examples in the network's input shape (eval reshapes flat data itself)."""
    x = trained["x"]
    return x.reshape(-1, 1, 8, 8) if net == "cnn" else x


def eval_probabilities(ckpt, data, stats, tmp):
    pred = tmp / f"pred-{ckpt.parent.name}-{stats}.npz"
    r = run("eval", ckpt, "--data", data, "--stats", stats, "--predictions", pred, "--json")
    assert r.exit_code == 0, r.output
    return np.load(pred)["probabilities"]


def export(ckpt, out, *args):
    r = run("export", ckpt, "-o", out, *args)
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("net", ["mlp", "cnn"])
@pytest.mark.parametrize("stats", ["population", "ema"])
@pytest.mark.parametrize("fold", ["--fold-bn", "--no-fold-bn"])
def test_onnxruntime_equals_eval_predictions(trained, net, stats, fold):
    ckpt, tmp = trained[net], trained["tmp"]
    expected = eval_probabilities(ckpt, trained["data"], stats, tmp)
    path = tmp / f"{net}-{stats}{fold}.onnx"
    said = export(ckpt, path, "--stats", stats, fold)
    assert f"{stats} statistics" in said
    assert ("folded" in said) == (fold == "--fold-bn")
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = net_input(trained, net)
    (got,) = session.run(["probabilities"], {"input": x.astype(np.float32)})
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    n_bn_ops = sum(node.name.endswith(".mul") for node in model.graph.node)
    if fold == "--no-fold-bn":
        assert n_bn_ops == {"mlp": 2, "cnn": 3}[net]
    else:  # only the CNN's explicit batchnorm after a pooling layer stays
        assert n_bn_ops == {"mlp": 0, "cnn": 1}[net]


def test_folding_changes_the_weights_by_gamma_inv_std(trained, tmp_path):
    """W' = W * gamma * inv_std per output unit; b' = beta - mean * gamma * inv_std."""
    ckpt = trained["mlp"]
    export(ckpt, tmp_path / "f.npz", "--format", "npz", "--stats", "ema")
    with h5py.File(ckpt, "r") as f:
        bn = f["model/layers/dense1_bn"]
        W = f["model/layers/dense1/W"][()].astype(np.float64)
        mean, inv_std = bn["mean"][()], bn["inv_std"][()]
        gamma, beta = bn["gamma"][()], bn["beta"][()]
    z = np.load(tmp_path / "f.npz")
    scale = gamma.astype(np.float64) * inv_std
    np.testing.assert_allclose(z["dense1_bn/W"], W * scale, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(z["dense1_bn/b"], beta - mean * scale, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------- the NPZ format, read by NumPy


def _conv(x, W, stride, pad):
    n, c, h, w = x.shape
    f, _, kh, kw = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - kh) // stride[0] + 1
    ow = (w + 2 * pad[1] - kw) // stride[1] + 1
    out = np.zeros((n, f, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride[0] : i * stride[0] + kh, j * stride[1] : j * stride[1] + kw]
            out[:, :, i, j] = np.einsum("nchw,fchw->nf", patch, W)
    return out


def _pool(x, size, stride, pad, mode):
    n, c, h, w = x.shape
    fill = -np.inf if mode == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])), constant_values=fill)
    ones = np.pad(np.ones((h, w)), ((pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - size[0]) // stride[0] + 1
    ow = (w + 2 * pad[1] - size[1]) // stride[1] + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            rows = slice(i * stride[0], i * stride[0] + size[0])
            cols = slice(j * stride[1], j * stride[1] + size[1])
            win = xp[:, :, rows, cols]
            if mode == "max":
                out[:, :, i, j] = win.max(axis=(2, 3))
            elif mode == "average_inc_pad":
                out[:, :, i, j] = win.sum(axis=(2, 3)) / (size[0] * size[1])
            else:
                out[:, :, i, j] = win.sum(axis=(2, 3)) / ones[rows, cols].sum()
    return out


_FN = {
    "linear": lambda x: x,
    "rectify": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "selu": lambda x: (
        1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0)))
    ),
    "softmax": lambda x: (
        np.exp(x - x.max(1, keepdims=True))
        / np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)
    ),
}


def npz_forward(path, x):
    """Run an exported NPZ file in float64 by walking its JSON architecture."""
    z = np.load(path)  # allow_pickle=False: the format needs none
    arch = json.loads(str(z["architecture.json"]))
    assert arch["format"] == "bntrain-export-npz"
    vals = {}
    for node in arch["nodes"]:
        a = {k: z[f"{node['name']}/{k}"].astype(np.float64) for k in node["arrays"]}
        ins = [vals[i] for i in node["inputs"]]
        op, at = node["op"], node["attrs"]
        if op == "input":
            y = x.astype(np.float64)
        elif op == "preprocess":
            y = ins[0] * a["scale"]
            if "mean" in a:
                y = (y - a["mean"]) / a["std"]
        elif op == "dense":
            y = ins[0].reshape(len(ins[0]), -1) @ a["W"] + a.get("b", 0.0)
        elif op == "conv2d":
            y = _conv(ins[0], a["W"], at["stride"], at["pad"])
            if "b" in a:
                b = a["b"]
                y = y + (b[:, None, None] if b.ndim == 1 else b)
        elif op == "pool2d":
            y = _pool(ins[0], at["pool_size"], at["stride"], at["pad"], at["mode"])
        elif op == "global_avgpool":
            y = ins[0].mean(axis=(2, 3))
        elif op == "reshape":
            y = ins[0].reshape(len(ins[0]), *at["shape"][1:])
        elif op == "affine":
            y = ins[0] * a["scale"] + a["shift"]
        elif op == "nonlinearity":
            y = _FN[at["fn"]](ins[0])
        elif op == "add":
            y = sum(c * v for c, v in zip(at["coeffs"], ins, strict=True))
        elif op == "concat":
            y = np.concatenate(ins, axis=at["axis"])
        else:
            raise AssertionError(f"unknown op {op}")
        vals[node["name"]] = y
    return vals[arch["output"]]


@pytest.mark.parametrize("net", ["mlp", "cnn"])
@pytest.mark.parametrize("fold", ["--fold-bn", "--no-fold-bn"])
def test_npz_export_read_by_numpy_equals_eval(trained, net, fold, tmp_path):
    ckpt = trained[net]
    expected = eval_probabilities(ckpt, trained["data"], "population", trained["tmp"])
    path = tmp_path / "model.npz"
    export(ckpt, path, "--format", "npz", fold)
    got = npz_forward(path, net_input(trained, net))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


# ----------------------------------------------------------------- errors


def _error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_a_layer_without_exporter_is_named(tmp_path):
    cfg = textwrap.dedent(CNN).replace(
        "{type: maxpool2d, size: 2}", "{type: maxpool2d, size: 2, ignore_border: false}"
    )
    (tmp_path / "c.yaml").write_text(cfg.replace("epochs: 1", "epochs: 1, recompute_stats: false"))
    assert run("fit", tmp_path / "c.yaml", "--quiet").exit_code == 0
    ckpt = tmp_path / "run_cnn" / "best.h5"
    r = run("export", ckpt, "-o", tmp_path / "x.onnx")
    assert r.exit_code == 2
    assert _error(r) == (
        f"Error: '{ckpt}': cannot export layer 'pool1': ignore_border false has no ONNX equivalent"
    )
    assert not (tmp_path / "x.onnx").exists()
    r = run("export", ckpt, "--stats", "population", "-o", tmp_path / "x.onnx")
    assert r.exit_code == 2
    assert "lacks /bn_stats/" in _error(r) and "--stats ema" in _error(r)


def test_refuses_to_overwrite_the_checkpoint(trained):
    ckpt = trained["mlp"]
    before = ckpt.read_bytes()
    r = run("export", ckpt, "-o", ckpt)
    assert r.exit_code == 2
    assert _error(r) == f"Error: -o: '{ckpt}' is the checkpoint being exported; choose another path"
    assert ckpt.read_bytes() == before


def test_missing_checkpoint_is_one_line(tmp_path):
    r = run("export", tmp_path / "nope.h5", "-o", tmp_path / "x.onnx")
    assert r.exit_code == 2
    assert "nope.h5" in _error(r)
