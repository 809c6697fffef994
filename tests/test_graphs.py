"""Networks that are graphs: ``input:`` names, ``add``/``concat``, block templates, ResNet-20."""

import csv

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from bntrain.cli import main
from bntrain.config import load_config, parse_config
from bntrain.errors import ConfigError
from bntrain.model import build_network, residual_branch_ends
from bntrain.nn import layers as L
from bntrain.train import fit

from .conftest import h5_datasets
from .test_evaluate import _conv


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# A residual network with every graph feature: a block repeated (identity shortcuts), a block
# with a projection shortcut, an add, a concat of two branches, and a layer named as input.
RESNET = """\
data:
  train: {path: data.npz}
model:
  batch_norm: {epsilon: 0.001, zero_init_residual: true}
  blocks:
    basic:
      - {type: conv2d, filters: '${filters}', size: 3, name: conv1}
      - {type: conv2d, filters: '${filters}', size: 3, nonlinearity: identity, name: conv2}
      - {type: add, input: [conv2, in], name: sum}
      - {type: nonlinearity, fn: relu}
    proj:
      - {type: conv2d, filters: '${filters}', size: 3, stride: '${stride}', name: conv1}
      - {type: conv2d, filters: '${filters}', size: 3, nonlinearity: identity, name: conv2}
      - {type: conv2d, filters: '${filters}', size: 1, stride: '${stride}', input: in, name: proj,
         nonlinearity: identity}
      - {type: add, input: [conv2, proj], coeffs: [1.0, 0.5], name: sum}
      - {type: nonlinearity, fn: relu}
  layers:
    - {type: conv2d, filters: 4, size: 3, name: stem}
    - {type: block, use: basic, repeat: 2, with: {filters: 4}}
    - {type: block, use: proj, with: {filters: 6, stride: 2}}
    - {type: global_avgpool, name: gap}
    - {type: global_avgpool, input: stage1, name: gap1}
    - {type: concat, input: [gap, gap1], name: both}
    - {type: dense, units: 5, nonlinearity: softmax, name: out}
training:
  epochs: 2
  batch_size: 16
  optimizer: {name: momentum, lr: 0.05, momentum: 0.9}
  schedule: {name: multistep, milestones: [5], unit: steps}
  recompute_stats: false
"""


def _data(folder, n=48, shape=(1, 8, 8), classes=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    y = rng.integers(0, classes, n)
    np.savez(folder / "data.npz", X=x, y=y)
    return x, y


def _cfg(text, source="net.yaml"):
    return parse_config(text, source=source)


# ------------------------------------------------------------------ structure


def test_blocks_expand_with_generated_names_and_inputs():
    cfg = _cfg(RESNET)
    graph = {n.name: n.inputs for n in cfg.model.graph()}
    assert graph["stage1.block1.conv1"] == ("stem",)
    assert graph["stage1.block1.sum"] == ("stage1.block1.conv2", "stem")
    assert graph["stage1.block2.conv1"] == ("stage1.block1.nonlinearity1",)
    assert graph["stage1.block2.sum"] == ("stage1.block2.conv2", "stage1.block1.nonlinearity1")
    assert graph["stage2.block1.proj"] == ("stage1.block2.nonlinearity1",)
    assert graph["stage2.block1.sum"] == ("stage2.block1.conv2", "stage2.block1.proj")
    assert graph["gap"] == ("stage2.block1.nonlinearity1",)
    assert graph["gap1"] == ("stage1.block2.nonlinearity1",)  # a block's name: its output
    assert graph["both"] == ("gap", "gap1")
    conv1 = next(n for n in cfg.model.graph() if n.name == "stage2.block1.conv1")
    assert (conv1.spec.filters, conv1.spec.stride) == (6, 2)  # ${...} keeps the value's type


def test_bn_after_every_weighted_layer_but_the_output_and_zero_init_residual():
    net = build_network(_cfg(RESNET).model, (1, 8, 8), seed=0)
    convs = [l for l in net.layers if isinstance(l, L.Conv2DLayer)]
    assert len(convs) == 8 and len(net.bn_layers) == 8
    for conv in convs:  # each conv feeds its own batch norm
        assert [l for l in net.layers if getattr(l, "input_layer", None) is conv] == [
            net.layer(f"{conv.name}_bn")
        ]
    assert net.layer("out").b is not None and "out_bn" not in [l.name for l in net.layers]
    ends = ["stage1.block1.conv2_bn", "stage1.block2.conv2_bn", "stage2.block1.conv2_bn"]
    assert [b.name for b in residual_branch_ends(net.layers)] == ends
    for bn in net.bn_layers:  # the projection shortcut's batch norm keeps gamma 1
        want = 0.0 if bn.name in ends else 1.0
        np.testing.assert_array_equal(bn.gamma.get_value(), want, err_msg=bn.name)
    off = build_network(
        _cfg(RESNET.replace("zero_init_residual: true", "alpha: 0.1")).model, (1, 8, 8), seed=0
    )
    assert all(np.all(bn.gamma.get_value() == 1) for bn in off.bn_layers)


def test_template_string_parameters_and_concat_axis():
    text = RESNET.replace(
        "name: sum}\n      - {type: nonlinearity",
        "name: 'sum_${filters}'}\n      - {type: nonlinearity",
        1,
    )
    names = [n.name for n in _cfg(text).model.graph()]
    assert "stage1.block1.sum_4" in names


# ------------------------------------------------------------------ errors (exit 2, one line)


def _sub(old, new, count=1):
    assert old in RESNET
    return RESNET.replace(old, new, count)


ERRORS = {
    "unknown_input": (
        _sub("input: [gap, gap1]", "input: [gap, gpa1]"),
        "net.yaml:24: model.layers[5].input: unknown layer 'gpa1' (did you mean 'gap1'?) in input",
    ),
    "forward_input": (
        _sub("{type: global_avgpool, name: gap}", "{type: global_avgpool, name: gap, input: gap1}"),
        "net.yaml:22: model.layers[3].input: 'gap1' is defined later (model.layers[4]); a layer can "
        "only take input from layers above it",
    ),
    "cycle": (
        _sub("{type: global_avgpool, name: gap}", "{type: global_avgpool, name: gap, input: both}"),
        "net.yaml:22: model.layers[3].input: the inputs form a cycle: gap <- both <- gap; a layer "
        "can only take input from layers above it",
    ),
    "unknown_in_block": (
        _sub("input: [conv2, in]", "input: [conv3, in]"),
        "net.yaml:9: model.blocks.basic[2].input: unknown layer 'conv3' (did you mean 'conv2'?) "
        "in input: inside a block, inputs name layers of the same block or 'in' (its input): in, "
        "conv1, conv2, sum, nonlinearity1",
    ),
    "missing_parameter": (
        _sub("with: {filters: 6, stride: 2}", "with: {filters: 6}"),
        "net.yaml:21: model.layers[2].with: block 'proj' needs parameter 'stride' (used in "
        "model.blocks.proj[0]); add it to 'with:'",
    ),
    "unknown_parameter": (
        _sub("with: {filters: 4}", "with: {filters: 4, strid: 1}"),
        "net.yaml:20: model.layers[1].with.strid: block 'basic' has no parameter 'strid' (its "
        "parameters: filters)",
    ),
    "unknown_block": (
        _sub("use: basic", "use: basik"),
        "net.yaml:20: model.layers[1].use: unknown block 'basik' (did you mean 'basic'?); "
        "model.blocks defines: basic, proj",
    ),
    "bad_template_value": (
        _sub("with: {filters: 4}", "with: {filters: four}"),
        "net.yaml:7: model.blocks.basic[0].filters: must be an integer, got 'four' (in "
        "stage1.block1, model.layers[1])",
    ),
    "unused_layer": (
        _sub(
            "{type: concat, input: [gap, gap1], name: both}",
            "{type: concat, input: [gap], name: both}",
        ),
        "net.yaml:23: model.layers[4]: layer 'gap1' does not lead to the output (the last layer); "
        "give it as the input of a later layer or remove it",
    ),
    "two_inputs_to_a_plain_layer": (
        _sub(
            "{type: global_avgpool, name: gap}",
            "{type: global_avgpool, name: gap, input: [stem, stage1]}",
        ),
        "net.yaml:22: model.layers[3].input: a global_avgpool layer takes one input, got 2; use an "
        "add or concat layer to join layers",
    ),
}

BUILD_ERRORS = {
    "add_shapes": (
        _sub("size: 1, stride: '${stride}', input: in", "size: 1, input: in"),
        "net.yaml:16: model.blocks.proj[3].input: add needs inputs of the same shape; "
        "'stage2.block1.conv2_bn_nonlin' gives [6, 4, 4], 'stage2.block1.proj_bn_nonlin' gives "
        "[6, 8, 8]",
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_graph_errors_are_one_line_with_file_line(case, tmp_path):
    text, message = ERRORS[case]
    with pytest.raises(ConfigError) as e:
        _cfg(text)
    assert str(e.value) == message
    (tmp_path / "net.yaml").write_text(text)
    _data(tmp_path)
    result = run("check", tmp_path / "net.yaml")
    assert result.exit_code == 2
    assert result.output == f"Error: {tmp_path / 'net.yaml'}{message[len('net.yaml') :]}\n"


def test_shape_mismatch_at_add_and_concat_names_the_entry(tmp_path):
    text, message = BUILD_ERRORS["add_shapes"]
    with pytest.raises(ConfigError) as e:
        build_network(_cfg(text).model, (1, 8, 8), seed=0)
    assert str(e.value) == message
    concat = RESNET.replace("input: [gap, gap1]", "input: [gap, gap1, stage1]")
    with pytest.raises(ConfigError) as e:
        build_network(_cfg(concat).model, (1, 8, 8), seed=0)
    assert str(e.value) == (
        "net.yaml:24: model.layers[5].input: concat needs inputs of the same shape (but for axis "
        "1); 'gap' gives [6], 'stage1.block2.nonlinearity1' gives [4, 8, 8]"
    )


# ------------------------------------------------------------------ end to end


def _graph_forward(path, x_raw, epsilon):
    """Float64 forward pass of a checkpoint, walking the graph by each layer's ``incoming``.

    The structure, weights and layer attributes come from the file (plain h5py); the
    batch-norm epsilon from the test's YAML; batch norm uses ``/bn_stats`` (population).
    """
    out = {}
    with h5py.File(path, "r") as f:
        names = [n.decode() for n in f["model/layer_names"][()]]
        groups = f["model/layers"]
        for name in names:
            g = groups[name]
            kind = g.attrs["type"]
            p = {k: g[k][()].astype(np.float64) for k in g.keys()}
            incoming = g.attrs.get("incoming")
            if incoming is None:
                out[name] = np.asarray(x_raw, np.float64)
                continue
            ins = [incoming] if isinstance(incoming, str) else [str(s) for s in incoming]
            ins = [i.decode() if isinstance(i, bytes) else i for i in ins]
            x = out[ins[0]]
            if kind == "Conv2DLayer":
                x = _conv(
                    x, p["W"], g.attrs["stride"], g.attrs["pad"], bool(g.attrs["flip_filters"])
                )
                x = x + p["b"][None, :, None, None] if "b" in p else x
            elif kind == "BatchNormLayer":
                mean = f["bn_stats"][name]["mean"][()].astype(np.float64)
                var = f["bn_stats"][name]["var"][()].astype(np.float64)
                scale = p["gamma"] / np.sqrt(var + epsilon)
                x = (x - mean[None, :, None, None]) * scale[None, :, None, None]
                x = x + p["beta"][None, :, None, None]
            elif kind == "NonlinearityLayer":
                x = np.maximum(x, 0) if g.attrs["nonlinearity"] == "rectify" else x
            elif kind == "ElemwiseSumLayer":
                x = sum(c * out[i] for c, i in zip(g.attrs["coeffs"], ins, strict=True))
            elif kind == "ConcatLayer":
                x = np.concatenate([out[i] for i in ins], axis=int(g.attrs["axis"]))
            elif kind == "GlobalPoolLayer":
                x = x.mean(axis=(2, 3))
            elif kind == "DenseLayer":
                assert g.attrs["nonlinearity"] == "softmax"
                z = x.reshape(len(x), -1) @ p["W"] + p["b"]
                z = np.exp(z - z.max(axis=1, keepdims=True))
                x = z / z.sum(axis=1, keepdims=True)
            else:
                raise AssertionError(f"unexpected layer type {kind}")
            out[name] = x
    return out[names[-1]]


def _arrays(path):
    with h5py.File(path, "r") as f:
        step = int(f.attrs["step"])
    return {**h5_datasets(path), "step": step}


@pytest.fixture(scope="module")
def residual(tmp_path_factory):
    """The residual network trained 2 epochs, its stats recomputed, evaluated with --predictions."""
    tmp = tmp_path_factory.mktemp("residual")
    x, _ = _data(tmp)
    (tmp / "net.yaml").write_text(RESNET)
    fit(load_config(tmp / "net.yaml", [f"output.dir={tmp / 'straight'}"]))
    ckpt = tmp / "straight/last.h5"
    before = _arrays(ckpt)
    result = run("recompute-stats", ckpt, "--quiet")
    assert result.exit_code == 0, result.output
    pred = tmp / "pred.npz"
    result = run("eval", ckpt, "--data", tmp / "data.npz", "--predictions", pred)
    assert result.exit_code == 0, result.output
    with np.load(pred) as z:
        probs = z["probabilities"]
    return {"tmp": tmp, "x": x, "ckpt": ckpt, "before": before, "probs": probs}


@pytest.mark.slow
def test_residual_network_trains_resumes_recomputes_and_matches_numpy(residual, monkeypatch):
    tmp = residual["tmp"]
    monkeypatch.chdir(tmp)

    def stop_after_epoch_1(line):
        if line.startswith("epoch 1/2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(load_config(tmp / "net.yaml", ["output.dir=broken"]), log=stop_after_epoch_1)
    result = run("fit", "net.yaml", "--quiet", "--set", "output.dir=broken", "--resume", "broken")
    assert result.exit_code == 0, result.output
    a, b = residual["before"], _arrays(tmp / "broken/last.h5")
    assert sorted(a) == sorted(b) and a["step"] == 6
    for key in a:  # bit for bit, the multistep schedule's milestone (step 5) crossed after resume
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    with h5py.File(residual["ckpt"], "r") as f:
        sums = f["model/layers/stage2.block1.sum"]
        assert [s.decode() if isinstance(s, bytes) else s for s in sums.attrs["incoming"]] == [
            "stage2.block1.conv2_bn_nonlin",
            "stage2.block1.proj_bn_nonlin",
        ]
        np.testing.assert_array_equal(sums.attrs["coeffs"], [1.0, 0.5])
        gamma = f["model/layers/stage1.block1.conv2_bn/gamma"][()]
        assert np.any(gamma != 0)  # zero-initialized, then trained
    epsilon = yaml.safe_load(RESNET)["model"]["batch_norm"]["epsilon"]
    want = _graph_forward(residual["ckpt"], residual["x"], epsilon=epsilon)
    np.testing.assert_allclose(residual["probs"], want, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("fold", [True, False])
def test_onnx_export_of_the_residual_network_equals_eval(residual, fold):
    from bntrain.commands.export import export_command

    ort = pytest.importorskip("onnxruntime")
    out = residual["tmp"] / f"net-{fold}.onnx"
    export_command(residual["ckpt"], out, fmt="onnx", stats="population", fold_bn=fold)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(["probabilities"], {"input": residual["x"]})
    np.testing.assert_allclose(got, residual["probs"], rtol=0, atol=1e-5)


# ------------------------------------------------------------------ ResNet-20


def _resnet20_counts():
    """Trainable parameters of He et al.'s ResNet-20 with option A shortcuts, by hand."""
    convs = 3 * 16 * 9 + 6 * 16 * 16 * 9  # first conv, stage 1
    convs += 16 * 32 * 9 + 5 * 32 * 32 * 9 + 32 * 64 * 9 + 5 * 64 * 64 * 9  # stages 2, 3
    bn_channels = 16 + 6 * 16 + 6 * 32 + 6 * 64  # gamma and beta per channel
    return convs + 2 * bn_channels + 64 * 10 + 10, convs + 4 * bn_channels + 64 * 10 + 10


RESNET20 = "configs/cifar10_resnet20.yaml"


def _cifar_sets(tmp_path, n=24):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "c.npz", X=x, y=rng.integers(0, 10, n))
    return [
        f"--set=data.train.path={tmp_path / 'c.npz'}",
        f"--set=data.test.path={tmp_path / 'c.npz'}",
        f"--set=output.dir={tmp_path / 'run'}",
        "--set=training.batch_size=8",
        "--set=data.val_split=0.25",
        "--set=training.recompute_stats=false",
    ]


def test_resnet20_config_has_the_papers_parameter_count(tmp_path):
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    result = run("check", root / RESNET20, *_cifar_sets(tmp_path))
    assert result.exit_code == 0, result.output
    trainable, total = _resnet20_counts()
    assert trainable == 269_722  # He et al. 2016, table 6: 0.27M
    assert result.output.splitlines()[-1] == (
        f"total parameters: {total} (0.27M); trainable: {trainable} (0.27M)"
    )
    cfg = load_config(root / RESNET20)
    sched, opt = cfg.training.schedule, cfg.training.optimizer
    assert (sched.name, sched.milestones, sched.unit, sched.gamma) == (
        "multistep",
        [32000, 48000],
        "steps",
        0.1,
    )
    assert (opt.name, opt.lr, opt.momentum, opt.weight_decay) == ("momentum", 0.1, 0.9, 1e-4)
    assert cfg.training.batch_size == 128
    assert cfg.training.epochs * (45000 // 128) >= 64000  # 64k iterations on the 45k split
    assert (cfg.training.epochs - 1) * (45000 // 128) < 64000


@pytest.mark.slow
def test_resnet20_config_trains_a_few_steps_on_cifar_shaped_data(tmp_path):
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    result = run(
        "fit", root / RESNET20, "--quiet", *_cifar_sets(tmp_path), "--set=training.epochs=1"
    )
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "run/last.h5", "r") as f:
        assert int(f.attrs["step"]) == 2  # 18 training examples, batches of 8
    with open(tmp_path / "run/metrics.csv") as fh:
        row = next(csv.DictReader(fh))
    assert np.isfinite(float(row["train_loss"]))


def test_set_reaches_a_blocks_parameters():
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    cfg = load_config(root / RESNET20, ["model.layers[1].with.filters=8"])
    conv = next(n for n in cfg.model.graph() if n.name == "stage1.block3.conv2")
    assert conv.spec.filters == 8
    with pytest.raises(ConfigError) as e:
        load_config(root / RESNET20, ["model.layers[1].wth.filters=8"])
    assert str(e.value) == "--set model.layers[1].wth.filters=8: unknown key (did you mean 'with'?)"
    with pytest.raises(ConfigError) as e:
        load_config(root / RESNET20, ["model.layers[1].with.filtrs=8"])
    assert str(e.value) == (
        "--set model.layers[1].with.filtrs=8: block 'basic' has no parameter 'filtrs' (did you "
        "mean 'filters'?) (its parameters: filters)"
    )


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "input: [gap, gap1]",
            "input: [gap, gap1], axis: 0",
            "net.yaml:24: model.layers[5].axis: 0 is not an axis to join along for inputs of shape "
            "[6]; use 1 to 1 (0 is the batch axis)",
        ),
        (
            "coeffs: [1.0, 0.5]",
            "coeffs: [1.0, 0.5, 2.0]",
            "net.yaml:16: model.blocks.proj[3].coeffs: 3 coefficients for 2 inputs; give one per "
            "input or a single number",
        ),
    ],
)
def test_merge_layer_settings_that_do_not_fit_their_inputs(old, new, message):
    with pytest.raises(ConfigError) as e:
        build_network(_cfg(_sub(old, new)).model, (1, 8, 8), seed=0)
    assert str(e.value) == message


def test_concat_and_add_compute_what_numpy_does():
    import pytensor

    text = _sub("coeffs: [1.0, 0.5]", "coeffs: [2.0, -0.5]")
    net = build_network(_cfg(text).model, (1, 8, 8), seed=3)
    x = np.random.default_rng(4).standard_normal((5, 1, 8, 8)).astype(np.float32)
    names = ["stage2.block1.conv2_bn_nonlin", "stage2.block1.proj_bn_nonlin", "stage2.block1.sum"]
    names += ["gap", "gap1", "both"]
    outs = L.get_output([net.layer(n) for n in names], deterministic=True)
    fn = pytensor.function([net.input_layer.input_var], outs)
    conv2, proj, total, gap, gap1, both = fn(x)
    np.testing.assert_allclose(total, 2.0 * conv2 - 0.5 * proj, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(both, np.concatenate([gap, gap1], axis=1))
