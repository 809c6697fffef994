"""Config -> network: the one place that inserts batch normalization.

``build_network`` turns the ``model`` section of a validated config into a
graph of :mod:`bntrain.nn` layers.  With ``batch_norm.insert: auto`` every
``dense`` and ``conv2d`` layer except the output layer is followed by a
:class:`~bntrain.nn.layers.BatchNormLayer`, the way the seed's
``batch_norm()`` does it: the layer's bias is removed and its nonlinearity
moves after the normalization.  ``batch_norm.kind``/``virtual_batch_size``
pick the layer class (:mod:`bntrain.bnvariants`); ``trainable: false`` and
``batch_norm.freeze: all`` drop parameters' ``trainable`` tag.  Each layer entry
builds its own layer (:meth:`bntrain.config.layers.LayerSpecBase.build`); the
config's graph (:mod:`bntrain.config.graph`: blocks expanded, names and inputs
resolved) says what feeds what; this module connects the layers, inserts batch
norm and, with ``batch_norm.zero_init_residual``, zeroes gamma where residual
branches end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import nn
from .bnvariants import RenormRamp, normalization_kind
from .config.layers import BuildContext
from .errors import ConfigError
from .nn import layers as L
from .nn.layers.normalization import insert_normalization

__all__ = ["Network", "build_network", "derive_seed", "residual_branch_ends", "zero_init_residual"]


@dataclass
class Network:
    """A built network and the facts the rest of the tool needs about it.

    Attributes
    ----------
    input_layer, output_layer : Layer
        The ends of the graph.
    layers : list of Layer
        Every layer in topological order, input first.
    n_classes : int
        Width of the softmax output.
    """

    input_layer: L.InputLayer
    output_layer: L.Layer
    layers: list = field(default_factory=list)
    n_classes: int = 0
    ramp: RenormRamp | None = None
    bn_freeze: str = "none"

    @property
    def bn_layers(self) -> list:
        """The batch-normalization layers, in topological order."""
        return [layer for layer in self.layers if isinstance(layer, L.BatchNormLayer)]

    @property
    def dropout_layers(self) -> list:
        """The dropout layers, in topological order."""
        return [layer for layer in self.layers if isinstance(layer, L.DropoutLayer)]

    def layer(self, name: str) -> L.Layer:
        """Return the layer called ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)


def derive_seed(seed: int, *purpose: str | int) -> int:
    """Return a 63-bit seed derived from ``seed`` and a purpose, independent of other purposes."""
    words = [seed] + [
        w if isinstance(w, int) else int.from_bytes(w.encode(), "little") for w in purpose
    ]
    return int(np.random.default_rng(words).integers(2**63 - 1))


def _output_index(nodes) -> int | None:
    """Index of the output layer: the last weighted layer."""
    for i in range(len(nodes) - 1, -1, -1):
        if nodes[i].spec.weighted:
            return i
    return None


def build_network(model_cfg, input_shape, seed: int) -> Network:
    """Build the network described by the ``model`` section of a config.

    Parameters
    ----------
    model_cfg : bntrain.config.ModelConfig
        The validated model section; :meth:`~bntrain.config.ModelConfig.graph` gives its
        layers (blocks expanded) with their inputs.
    input_shape : sequence of int
        One example's shape (without the batch axis).
    seed : int
        Seeds the weight initialization and the dropout masks.

    Returns
    -------
    Network

    Raises
    ------
    ConfigError
        If the layers do not fit together (the message names the entry and its file:line).
    """
    bn_cfg = model_cfg.batch_norm
    nodes = model_cfg.graph()
    out_idx = _output_index(nodes)
    built: dict[str, L.Layer] = {"input": L.InputLayer((None, *input_shape), name="input")}
    ramp = None
    if bn_cfg.kind == "renorm":
        ramp = RenormRamp(bn_cfg.r_max, bn_cfg.d_max, bn_cfg.warmup_steps)
    bn_class, bn_extra = normalization_kind(bn_cfg, ramp)
    for i, node in enumerate(nodes):
        spec = node.spec
        where = model_cfg.locate(node.path)
        rng = np.random.default_rng(derive_seed(seed, "layer", i))
        ctx = BuildContext(name=node.name, rng=rng, batch_norm=bn_cfg, where=where, ramp=ramp)
        incoming = [built[name] for name in node.inputs]
        try:
            layer = spec.build(incoming if spec.merge else incoming[0], ctx)
            auto_bn = bn_cfg.insert == "auto" and spec.weighted and i != out_idx and spec.batch_norm
            if auto_bn:
                layer = insert_normalization(
                    layer, bn_class, epsilon=bn_cfg.epsilon, alpha=bn_cfg.alpha, **bn_extra
                )
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where} ({spec.type}): {_one_line(exc)}") from None
        if not spec.trainable:
            below = set().union(*(L.get_all_layers(up) for up in incoming))
            _freeze(set(L.get_all_layers(layer)) - below)
        built[node.name] = layer
    net = built[nodes[-1].name]
    output_shape = net.output_shape
    if len(output_shape) != 2 or not _ends_in_softmax(net):
        raise ConfigError(
            f"{model_cfg.locate(nodes[-1].path)}: the network must end in class probabilities "
            f"(got output shape {list(output_shape[1:])}); end it with "
            f"{{type: dense, units: <classes>, nonlinearity: softmax}}"
        )
    layers = L.get_all_layers(net)
    if bn_cfg.freeze == "all":
        _freeze(layer for layer in layers if isinstance(layer, L.BatchNormLayer))
    if bn_cfg.zero_init_residual:
        zero_init_residual(layers)
    return Network(
        input_layer=layers[0],
        output_layer=net,
        layers=layers,
        n_classes=output_shape[1],
        ramp=ramp,
        bn_freeze=bn_cfg.freeze,
    )


def _freeze(layers) -> None:
    """Drop the ``trainable`` tag of every parameter of ``layers`` (Lasagne's way to freeze)."""
    for layer in layers:
        for tags in layer.params.values():
            tags.discard("trainable")


def residual_branch_ends(layers) -> list:
    """The batch-norm layers that end a residual branch: the last one before each ``add``.

    For every :class:`~bntrain.nn.layers.ElemwiseSumLayer`, each input is followed back
    through single-input layers that feed nothing else (the branch's own layers) to the
    first batch norm; the shortest branch, the shortcut, is left out (on a tie, the last
    input listed).  An identity shortcut has no layers of its own, so it has no batch norm.
    """
    consumers: dict[int, int] = {}
    for layer in layers:
        for up in _inputs_of(layer):
            consumers[id(up)] = consumers.get(id(up), 0) + 1
    found = []
    for layer in layers:
        if not isinstance(layer, L.ElemwiseSumLayer):
            continue
        branches = []
        for up in layer.input_layers:
            length, bn = 0, None
            while consumers.get(id(up), 0) == 1 and len(_inputs_of(up)) == 1:
                length += 1
                if bn is None and isinstance(up, L.BatchNormLayer):
                    bn = up
                up = _inputs_of(up)[0]
            branches.append((length, bn))
        shortcut = min(range(len(branches)), key=lambda k: (branches[k][0], -k))
        found += [bn for k, (_, bn) in enumerate(branches) if k != shortcut and bn is not None]
    return found


def zero_init_residual(layers) -> None:
    """Set gamma to 0 in each batch norm of :func:`residual_branch_ends` (Goyal et al. 2017)."""
    for bn in residual_branch_ends(layers):
        if bn.gamma is not None:
            bn.gamma.set_value(np.zeros_like(bn.gamma.get_value()))


def _inputs_of(layer) -> list:
    if hasattr(layer, "input_layers"):
        return list(layer.input_layers)
    return [] if layer.input_layer is None else [layer.input_layer]


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _ends_in_softmax(layer) -> bool:
    return getattr(layer, "nonlinearity", None) is nn.nonlinearities.softmax
