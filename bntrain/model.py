"""Config -> network: the one place that inserts batch normalization.

``build_network`` turns the ``model`` section of a validated config into a
graph of :mod:`bntrain.nn` layers.  With ``batch_norm.insert: auto`` every
``dense`` and ``conv2d`` layer except the output layer is followed by a
:class:`~bntrain.nn.layers.BatchNormLayer`, the way the seed's
``batch_norm()`` does it: the layer's bias is removed and its nonlinearity
moves after the normalization.  ``batch_norm.kind``/``virtual_batch_size``
pick the layer class (:mod:`bntrain.bnvariants`); ``trainable: false`` and
``batch_norm.freeze: all`` drop parameters' ``trainable`` tag.  Each layer entry builds its own layer
(:meth:`bntrain.config.layers.LayerSpecBase.build`); this module chains them,
names them and inserts batch norm.
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

__all__ = ["Network", "build_network", "derive_seed"]


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


def _output_index(specs) -> int | None:
    """Index of the output layer: the last weighted layer, if the net ends in it."""
    for i in range(len(specs) - 1, -1, -1):
        if specs[i].weighted:
            return i
    return None


def build_network(model_cfg, input_shape, seed: int) -> Network:
    """Build the network described by the ``model`` section of a config.

    Parameters
    ----------
    model_cfg : bntrain.config.ModelConfig
        The validated model section.
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
        If the layers do not fit together (the message names ``model.layers[i]``).
    """
    bn_cfg = model_cfg.batch_norm
    specs = model_cfg.layers
    out_idx = _output_index(specs)
    names = _layer_names(specs)
    net = L.InputLayer((None, *input_shape), name="input")
    ramp = None
    if bn_cfg.kind == "renorm":
        ramp = RenormRamp(bn_cfg.r_max, bn_cfg.d_max, bn_cfg.warmup_steps)
    bn_class, bn_extra = normalization_kind(bn_cfg, ramp)
    for i, spec in enumerate(specs):
        where = f"model.layers[{i}]"
        rng = np.random.default_rng(derive_seed(seed, "layer", i))
        ctx = BuildContext(name=names[i], rng=rng, batch_norm=bn_cfg, where=where, ramp=ramp)
        below = net
        try:
            net = spec.build(net, ctx)
            auto_bn = bn_cfg.insert == "auto" and spec.weighted and i != out_idx and spec.batch_norm
            if auto_bn:
                net = insert_normalization(
                    net, bn_class, epsilon=bn_cfg.epsilon, alpha=bn_cfg.alpha, **bn_extra
                )
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where} ({spec.type}): {_one_line(exc)}") from None
        if not spec.trainable:
            _freeze(set(L.get_all_layers(net)) - set(L.get_all_layers(below)))
    output_shape = net.output_shape
    if len(output_shape) != 2 or not _ends_in_softmax(net):
        raise ConfigError(
            f"model.layers[{len(specs) - 1}]: the network must end in class probabilities "
            f"(got output shape {list(output_shape[1:])}); end it with "
            f"{{type: dense, units: <classes>, nonlinearity: softmax}}"
        )
    layers = L.get_all_layers(net)
    if bn_cfg.freeze == "all":
        _freeze(layer for layer in layers if isinstance(layer, L.BatchNormLayer))
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


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _ends_in_softmax(layer) -> bool:
    return getattr(layer, "nonlinearity", None) is nn.nonlinearities.softmax


def _layer_names(specs) -> list[str]:
    counts: dict[str, int] = {}
    names = []
    for i, spec in enumerate(specs):
        base = spec.name_prefix or spec.type
        counts[base] = counts.get(base, 0) + 1
        name = spec.name or f"{base}{counts[base]}"
        if name in names or name == "input":
            raise ConfigError(
                f"model.layers[{i}].name: layer name {name!r} is used twice; names must be unique"
            )
        names.append(name)
    return names
