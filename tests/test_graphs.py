"""Networks that are graphs: ``input:`` names, ``add``/``concat``, block templates, ResNet-20."""

import textwrap

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
