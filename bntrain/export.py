"""Export a trained checkpoint for deployment: ONNX, or plain arrays with a JSON architecture.

The exporter reads only the checkpoint (the ``/model`` layers with their
``incoming`` names and hyperparameters, the parameters, ``/preprocess`` and
``/bn_stats``), so it needs neither the config nor a compiled graph.  The
exported model takes the raw input (the stored preprocessing is its first
operation) and returns the class probabilities, as ``bntrain eval`` computes
them.

Batch normalization at inference is an affine map per channel,
``y = x * scale + shift`` with ``scale = gamma * inv_std`` and
``shift = beta - mean * scale``.  With ``fold_bn`` a batch-norm layer whose
input is a linear ``DenseLayer`` or ``Conv2DLayer`` feeding nothing else is
folded into that layer's weights (``W' = W * scale`` per output unit or
filter, ``b' = b * scale + shift``); every other batch-norm layer is written
as a multiply and an add.

Statistics: ``population`` uses the whole-training-set statistics of
``/bn_stats`` (``inv_std = 1 / sqrt(var + epsilon)`` computed in float64, as
``bntrain eval`` does), ``ema`` the moving averages training kept.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint
from .errors import CheckpointError, UsageError
from .fileio import atomic_open

__all__ = [
    "ONNX_OPSET",
    "EXPORT_FORMATS",
    "Node",
    "ExportGraph",
    "graph_from_checkpoint",
    "fold_batch_norm",
    "to_onnx",
    "write_npz",
    "write_onnx",
]

#: The ONNX operator set the exporter writes.
ONNX_OPSET = 17
EXPORT_FORMATS = ("onnx", "npz")
STATS_CHOICES = ("population", "ema")

#: Nonlinearities the exporter writes, by their registry name.
NONLINEARITIES = (
    "linear",
    "rectify",
    "sigmoid",
    "tanh",
    "softmax",
    "leaky_rectify",
    "elu",
    "selu",
    "softplus",
)
_SELU_SCALE = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717


@dataclass
class Node:
    """One operation of the exported graph.

    Attributes
    ----------
    name : str
        The checkpoint layer it comes from (folded layers keep the conv/dense name).
    op : str
        ``input``, ``preprocess``, ``dense``, ``conv2d``, ``pool2d``, ``global_avgpool``,
        ``reshape``, ``affine`` (batch norm), ``nonlinearity``, ``add``, ``concat``.
    inputs : list of str
        Names of the nodes it reads.
    attrs : dict
        JSON-able hyperparameters.
    arrays : dict
        float32 parameters.
    """

    name: str
    op: str
    inputs: list[str]
    attrs: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)


@dataclass
class ExportGraph:
    """A checkpoint's network as a list of :class:`Node` in topological order."""

    nodes: list[Node]
    input_shape: tuple[int, ...]
    output: str
    stats: str

    def node(self, name: str) -> Node:
        """The node called ``name``."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def consumers(self, name: str) -> list[Node]:
        """The nodes that read ``name``."""
        return [n for n in self.nodes if name in n.inputs]


# --------------------------------------------------------------------------- reading


def _fail(ckpt: Checkpoint, layer: str, why: str) -> CheckpointError:
    return CheckpointError(f"'{ckpt.path}': cannot export layer {layer!r}: {why}")


def _ints(value) -> list[int]:
    return [int(v) for v in np.atleast_1d(value)]


def _incoming(attrs: dict) -> list[str]:
    value = attrs.get("incoming")
    if value is None:
        return []
    if isinstance(value, str | bytes):
        value = [value]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in value]


def _nonlin(ckpt: Checkpoint, name: str, attrs: dict) -> str:
    fn = str(attrs.get("nonlinearity", "linear"))
    fn = "linear" if fn == "identity" else fn
    if fn not in NONLINEARITIES:
        raise _fail(ckpt, name, f"nonlinearity {fn!r} has no exporter")
    return fn


def _bn_affine(ckpt: Checkpoint, name: str, attrs: dict, params: dict, stats: str):
    """Per-channel ``scale`` and ``shift`` (float64) of a batch-norm layer."""
    eps = float(attrs["epsilon"])
    if stats == "population":
        entry = (ckpt.bn_stats or {}).get(name)
        if entry is None:
            raise CheckpointError(
                f"'{ckpt.path}' lacks /bn_stats/{name}; run `bntrain recompute-stats "
                f"{ckpt.path}` or export with --stats ema"
            )
        mean = np.asarray(entry["mean"], dtype=np.float64)
        var = np.asarray(entry["var"], dtype=np.float64)
        # as bntrain eval: inv_std computed in float64, held in float32
        inv_std = (1.0 / np.sqrt(var + eps)).astype(np.float32).astype(np.float64)
        mean = mean.astype(np.float32).astype(np.float64)
    else:
        mean = np.asarray(params["mean"], dtype=np.float64)
        inv_std = np.asarray(params["inv_std"], dtype=np.float64)
    gamma = np.asarray(params["gamma"], dtype=np.float64) if "gamma" in params else 1.0
    beta = np.asarray(params["beta"], dtype=np.float64) if "beta" in params else 0.0
    scale = gamma * inv_std
    shift = beta - mean * scale
    return scale * np.ones_like(mean), shift * np.ones_like(mean)


def _layer_node(ckpt: Checkpoint, name: str, stats: str) -> list[Node]:
    attrs = ckpt.layer_attrs[name]
    params = ckpt.params[name]
    kind = ckpt.layer_types[name]
    inputs = _incoming(attrs)
    shape = [None if d < 0 else d for d in _ints(attrs["output_shape"])]
    f32 = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
    nodes: list[Node] = []
    nl = "linear"
    if kind == "DenseLayer":
        if int(attrs.get("num_leading_axes", 1)) != 1:
            raise _fail(ckpt, name, "num_leading_axes other than 1")
        nodes.append(Node(name, "dense", inputs, {}, {"W": f32["W"], **_opt(f32, "b")}))
        nl = _nonlin(ckpt, name, attrs)
    elif kind == "Conv2DLayer":
        W = f32["W"]
        if bool(attrs.get("flip_filters", True)):
            W = np.ascontiguousarray(W[:, :, ::-1, ::-1])  # a true convolution -> correlation
        a = {"stride": _ints(attrs["stride"]), "pad": _ints(attrs["pad"])}
        nodes.append(Node(name, "conv2d", inputs, a, {"W": W, **_opt(f32, "b")}))
        nl = _nonlin(ckpt, name, attrs)
    elif kind in ("Pool2DLayer", "MaxPool2DLayer"):
        if not bool(attrs.get("ignore_border", True)):
            raise _fail(ckpt, name, "ignore_border false has no ONNX equivalent")
        pool = _ints(attrs["pool_size"])
        stride = _ints(attrs["stride"]) if "stride" in attrs else pool
        a = {
            "pool_size": pool,
            "stride": stride,
            "pad": _ints(attrs.get("pad", 0)) * (2 if np.size(attrs.get("pad", 0)) == 1 else 1),
            "mode": str(attrs.get("mode", "max")),
        }
        nodes.append(Node(name, "pool2d", inputs, a))
    elif kind == "GlobalPoolLayer":
        if str(attrs.get("pool_function", "mean")) != "mean":
            raise _fail(ckpt, name, f"pool_function {attrs.get('pool_function')!r}")
        nodes.append(Node(name, "global_avgpool", inputs))
    elif kind == "DropoutLayer":
        nodes.append(Node(name, "reshape", inputs, {"shape": shape}))  # identity at inference
    elif kind in ("FlattenLayer", "ReshapeLayer"):
        nodes.append(Node(name, "reshape", inputs, {"shape": shape}))
    elif kind in ("BatchNormLayer", "BatchReNormLayer", "GhostBatchNormLayer"):  # alike at test
        axes = _ints(attrs["axes"])
        if 0 not in axes:
            raise _fail(ckpt, name, "batch norm that does not normalize over the batch axis")
        scale, shift = _bn_affine(ckpt, name, attrs, params, stats)
        bshape = [1 if ax in axes else d for ax, d in enumerate(shape)][1:]
        nodes.append(
            Node(
                name,
                "affine",
                inputs,
                {"axes": axes, "param_shape": list(scale.shape)},
                {"scale": scale.reshape(bshape), "shift": shift.reshape(bshape)},
            )
        )
    elif kind == "NonlinearityLayer":
        nodes.append(Node(name, "nonlinearity", inputs, {"fn": _nonlin(ckpt, name, attrs)}))
    elif kind == "ElemwiseSumLayer":
        coeffs = attrs.get("coeffs")
        coeffs = (
            [1.0] * len(inputs) if coeffs is None else [float(c) for c in np.atleast_1d(coeffs)]
        )
        nodes.append(Node(name, "add", inputs, {"coeffs": coeffs}))
    elif kind == "ConcatLayer":
        nodes.append(Node(name, "concat", inputs, {"axis": int(attrs.get("axis", 1))}))
    else:
        raise _fail(ckpt, name, f"layer type {kind} has no exporter")
    if nl != "linear":
        base = nodes[-1]
        base.name = f"{name}__linear"
        nodes.append(Node(name, "nonlinearity", [base.name], {"fn": nl}))
    return nodes


def _opt(arrays: dict, key: str) -> dict:
    return {key: arrays[key]} if key in arrays else {}


def graph_from_checkpoint(ckpt: Checkpoint, stats: str | None = None) -> ExportGraph:
    """Translate a checkpoint's network into an :class:`ExportGraph`.

    Parameters
    ----------
    ckpt : Checkpoint
        A checkpoint read with :func:`bntrain.checkpoint.read_checkpoint`.
    stats : {'population', 'ema'} or None
        Batch-norm statistics; None picks ``population`` when the checkpoint has
        ``/bn_stats`` and ``ema`` otherwise.

    Raises
    ------
    CheckpointError
        Naming the first layer the exporter cannot write, or missing statistics.
    UsageError
        For an unknown ``stats``.
    """
    if stats is None:
        stats = "population" if ckpt.bn_stats is not None else "ema"
    if stats not in STATS_CHOICES:
        raise UsageError(f"--stats must be one of {', '.join(STATS_CHOICES)}; got {stats!r}")
    first = ckpt.layer_names[0]
    if ckpt.layer_types[first] != "InputLayer":
        raise _fail(ckpt, first, "the first layer is not an InputLayer")
    input_shape = tuple(_ints(ckpt.layer_attrs[first]["output_shape"])[1:])
    pre = ckpt.preprocess or {}
    pre_arrays = {"scale": np.float32(pre.get("scale", 1.0))}
    if pre.get("standardize") and "mean" in pre:
        pre_arrays["mean"] = np.asarray(pre["mean"], dtype=np.float32)
        pre_arrays["std"] = np.asarray(pre["std"], dtype=np.float32)
    nodes = [Node("input", "input", []), Node(first, "preprocess", ["input"], {}, pre_arrays)]
    for name in ckpt.layer_names[1:]:
        nodes.extend(_layer_node(ckpt, name, stats))
    return ExportGraph(nodes, input_shape, ckpt.layer_names[-1], stats)


def fold_batch_norm(graph: ExportGraph) -> list[str]:
    """Fold every foldable batch-norm node into its conv/dense node, in place.

    A batch-norm (``affine``) node folds when it reads a ``dense`` or ``conv2d``
    node with no nonlinearity that nothing else reads, and its parameters are
    one value per output unit (dense) or per filter (conv).  The folded node
    takes the batch-norm layer's name, so later nodes read it unchanged.

    Returns
    -------
    list of str
        The names of the folded batch-norm layers.
    """
    folded = []
    for bn in [n for n in graph.nodes if n.op == "affine"]:
        if len(bn.inputs) != 1:
            continue
        src = next((n for n in graph.nodes if n.name == bn.inputs[0]), None)
        if src is None or src.op not in ("dense", "conv2d") or len(graph.consumers(src.name)) != 1:
            continue
        W = src.arrays["W"].astype(np.float64)
        n_out = W.shape[1] if src.op == "dense" else W.shape[0]
        if bn.attrs["param_shape"] != [n_out]:
            continue
        scale = bn.arrays["scale"].reshape(-1)
        shift = bn.arrays["shift"].reshape(-1)
        if src.op == "dense":
            W = W * scale[None, :]
        else:
            W = W * scale[:, None, None, None]
        b = src.arrays.get("b")
        if b is None:
            b_new = shift
        else:
            b = b.astype(np.float64)
            bcast = (slice(None),) + (None,) * (b.ndim - 1)
            b_new = b * scale[bcast] + shift[bcast]
        src.arrays = {"W": W.astype(np.float32), "b": np.asarray(b_new, dtype=np.float32)}
        graph.nodes.remove(bn)
        old = src.name
        src.name = bn.name
        for n in graph.nodes:
            n.inputs = [bn.name if i == old else i for i in n.inputs]
        folded.append(bn.name)
    return folded


# --------------------------------------------------------------------------- ONNX


def to_onnx(graph: ExportGraph, producer_version: str = ""):
    """Build an ``onnx.ModelProto`` (opset :data:`ONNX_OPSET`) for ``graph``.

    The input ``input`` is float32 ``(batch, *input_shape)`` with a symbolic
    batch axis; the output ``probabilities`` is float32 ``(batch, classes)``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    ops: list = []
    inits: list = []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(kind: str, inputs: list[str], output: str, **attrs) -> str:
        ops.append(helper.make_node(kind, inputs, [output], name=output, **attrs))
        return output

    out_of: dict[str, str] = {}
    for n in graph.nodes:
        x = [out_of[i] for i in n.inputs]
        t = n.name
        if n.op == "input":
            out_of[t] = "input"
            continue
        if n.op == "preprocess":
            y = op("Mul", [x[0], const(f"{t}.scale", n.arrays["scale"])], f"{t}.scaled")
            if "mean" in n.arrays:
                y = op("Sub", [y, const(f"{t}.mean", n.arrays["mean"])], f"{t}.centered")
                y = op("Div", [y, const(f"{t}.std", n.arrays["std"])], f"{t}.standardized")
            out_of[t] = y
            continue
        if n.op == "dense":
            y = op("Flatten", [x[0]], f"{t}.flat", axis=1)
            y = op("MatMul", [y, const(f"{t}.W", n.arrays["W"])], f"{t}.matmul")
            if "b" in n.arrays:
                y = op("Add", [y, const(f"{t}.b", n.arrays["b"])], f"{t}.out")
        elif n.op == "conv2d":
            W = n.arrays["W"]
            b = n.arrays.get("b")
            tied = b is not None and b.ndim == 1
            inputs = [x[0], const(f"{t}.W", W)] + ([const(f"{t}.b", b)] if tied else [])
            ph, pw = n.attrs["pad"]
            y = op(
                "Conv",
                inputs,
                f"{t}.conv",
                kernel_shape=list(W.shape[2:]),
                strides=n.attrs["stride"],
                pads=[ph, pw, ph, pw],
            )
            if b is not None and not tied:
                y = op("Add", [y, const(f"{t}.b", b)], f"{t}.out")
        elif n.op == "pool2d":
            ph, pw = n.attrs["pad"]
            common = dict(
                kernel_shape=n.attrs["pool_size"], strides=n.attrs["stride"], pads=[ph, pw, ph, pw]
            )
            if n.attrs["mode"] == "max":
                y = op("MaxPool", x, f"{t}.pool", **common)
            else:
                inc = int(n.attrs["mode"] == "average_inc_pad")
                y = op("AveragePool", x, f"{t}.pool", count_include_pad=inc, **common)
        elif n.op == "global_avgpool":
            y = op("GlobalAveragePool", x, f"{t}.gap")
            y = op("Flatten", [y], f"{t}.flat", axis=1)
        elif n.op == "reshape":
            shape = [0] + [int(d) for d in n.attrs["shape"][1:]]
            y = op("Reshape", [x[0], const(f"{t}.shape", np.asarray(shape, np.int64))], f"{t}.out")
        elif n.op == "affine":
            y = op(
                "Mul", [x[0], const(f"{t}.scale", n.arrays["scale"].astype(np.float32))], f"{t}.mul"
            )
            y = op(
                "Add", [y, const(f"{t}.shift", n.arrays["shift"].astype(np.float32))], f"{t}.out"
            )
        elif n.op == "nonlinearity":
            y = _onnx_nonlinearity(op, const, n.attrs["fn"], x[0], t)
        elif n.op == "add":
            terms = []
            for k, (xi, c) in enumerate(zip(x, n.attrs["coeffs"], strict=True)):
                terms.append(
                    xi
                    if c == 1.0
                    else op("Mul", [xi, const(f"{t}.c{k}", np.float32(c))], f"{t}.term{k}")
                )
            y = op("Sum", terms, f"{t}.sum")
        elif n.op == "concat":
            y = op("Concat", x, f"{t}.concat", axis=n.attrs["axis"])
        else:  # pragma: no cover - graph_from_checkpoint makes only the ops above
            raise ValueError(f"unknown node op {n.op!r}")
        out_of[t] = y
    ops.append(helper.make_node("Identity", [out_of[graph.output]], ["probabilities"]))
    x_info = helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, ["batch", *graph.input_shape]
    )
    y_info = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", None])
    g = helper.make_graph(ops, "bntrain", [x_info], [y_info], initializer=inits)
    model = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name="bntrain",
        producer_version=producer_version,
    )
    model.ir_version = min(model.ir_version, 8)  # readable by older runtimes too
    model.doc_string = f"bntrain export; batch-norm statistics: {graph.stats}"
    onnx.checker.check_model(model)
    return model


def _onnx_nonlinearity(op: Callable, const: Callable, fn: str, x: str, t: str) -> str:
    if fn == "linear":
        return op("Identity", [x], f"{t}.out")
    if fn == "rectify":
        return op("Relu", [x], f"{t}.relu")
    if fn == "sigmoid":
        return op("Sigmoid", [x], f"{t}.sigmoid")
    if fn == "tanh":
        return op("Tanh", [x], f"{t}.tanh")
    if fn == "softmax":
        return op("Softmax", [x], f"{t}.softmax", axis=-1)
    if fn == "leaky_rectify":
        return op("LeakyRelu", [x], f"{t}.leaky", alpha=0.01)
    if fn == "elu":
        return op("Elu", [x], f"{t}.elu", alpha=1.0)
    if fn == "selu":
        return op("Selu", [x], f"{t}.selu", alpha=_SELU_ALPHA, gamma=_SELU_SCALE)
    if fn == "softplus":
        return op("Softplus", [x], f"{t}.softplus")
    raise ValueError(f"unknown nonlinearity {fn!r}")  # pragma: no cover


# --------------------------------------------------------------------------- NPZ


def write_npz(graph: ExportGraph, out) -> None:
    """Write ``graph`` as plain arrays plus a JSON architecture in one NPZ file.

    Arrays are stored as ``<node>/<name>``; the entry ``architecture.json`` (a
    0-d string array) holds ``{"format", "input_shape", "output", "stats",
    "nodes": [{"name", "op", "inputs", "attrs", "arrays"}]}``.  Reading it needs
    no pickle: ``np.load(path)`` (``allow_pickle=False``).
    """
    arch = {
        "format": "bntrain-export-npz",
        "format_version": 1,
        "input_shape": list(graph.input_shape),
        "output": graph.output,
        "stats": graph.stats,
        "nodes": [
            {
                "name": n.name,
                "op": n.op,
                "inputs": n.inputs,
                "attrs": n.attrs,
                "arrays": sorted(n.arrays),
            }
            for n in graph.nodes
        ],
    }
    arrays = {
        f"{n.name}/{key}": np.asarray(value, dtype=np.float32)
        for n in graph.nodes
        for key, value in n.arrays.items()
    }
    arrays["architecture.json"] = np.asarray(json.dumps(arch))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    _write_bytes(Path(out), buf.getvalue())


def _write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data`` (never half-written)."""
    try:
        with atomic_open(path, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise UsageError(f"-o: cannot write '{path}': {exc.strerror or exc}") from None


def write_onnx(graph: ExportGraph, out) -> None:
    """Write ``graph`` as an ONNX file (see :func:`to_onnx`), atomically."""
    from . import __version__

    _write_bytes(Path(out), to_onnx(graph, producer_version=__version__).SerializeToString())
