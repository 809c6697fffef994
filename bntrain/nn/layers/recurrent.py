r"""Recurrent layers on ``pytensor.scan`` (``lasagne.layers.recurrent``).

The input of a recurrent layer is ``(batch_size, sequence_length, ...)``; the
output is the hidden state at every step, ``(batch_size, sequence_length,
num_units)``, or only the last one with ``only_return_final=True``.  Options
common to all of them:

* ``mask_input``: a layer giving a ``(batch_size, sequence_length)`` mask; at
  a step where it is 0 the states stay as they were (and are output again),
  so shorter sequences padded at the end keep their final state.
* ``hid_init`` (and ``cell_init`` of the LSTM): an initializer, array or
  shared variable for a ``(1, num_units)`` parameter shared by the batch
  (trained only with ``learn_init=True``), or a layer giving
  ``(batch_size, num_units)``.
* ``backwards``: run from the last step to the first; the output is
  reversed again, so it is always aligned with the input.
* ``gradient_steps``: truncate backpropagation through time to that many
  steps (-1: the whole sequence); ``grad_clipping``: clip the gradient
  reaching each step's pre-activations to ``[-grad_clipping, grad_clipping]``.
* ``unroll_scan``: build one copy of the step per time step instead of a
  loop (:func:`bntrain.nn.utils.unroll_scan`); needs a known sequence length.
* ``precompute_input``: compute the input's contribution for all steps with
  one large product before the loop (default) instead of inside it.

In JAX mode (``pytensor.function(..., mode="JAX")``) the layers run as
``jax.lax.scan``; the gradient through the loop needs the sequence length to
be static, which it is when the :class:`InputLayer` shape gives it.

Examples
--------
>>> from bntrain.nn.layers import InputLayer, LSTMLayer, GRULayer
>>> l_in = InputLayer((None, None, 10))
>>> LSTMLayer(l_in, num_units=12).output_shape
(None, None, 12)
>>> GRULayer(l_in, num_units=7, only_return_final=True).output_shape
(None, 7)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytensor.tensor as pt

from .. import init, nonlinearities, utils
from . import helper
from ._recurrence import RecurrenceBase, recurrence_options
from .base import Layer
from .dense import DenseLayer
from .input import InputLayer
from .special import _check_kwargs, _label, _nonlinearity, _positive_int

__all__ = ["CustomRecurrentLayer", "RecurrentLayer", "Gate", "LSTMLayer", "GRULayer"]


def _input_layers(layer) -> list:
    return [l for l in helper.get_all_layers(layer) if isinstance(l, InputLayer)]


def _agree(shape_a, shape_b) -> bool:
    """Whether two shapes agree wherever both sizes are known."""
    return len(shape_a) == len(shape_b) and all(
        a is None or b is None or a == b for a, b in zip(shape_a, shape_b, strict=True)
    )


class CustomRecurrentLayer(RecurrenceBase):
    r"""A recurrence with any input-to-hidden and hidden-to-hidden networks.

    Computes :math:`h_t = \sigma(f_i(x_t) + f_h(h_{t-1}))`, where
    :math:`f_i` and :math:`f_h` are networks of layers (a convolution gives a
    convolutional recurrence).

    Parameters
    ----------
    incoming : Layer or tuple
        The sequence input, ``(batch_size, sequence_length, ...)``.
    input_to_hidden : Layer
        :math:`f_i`: a network with one :class:`InputLayer` whose shape is
        the input's without the time axis.  Its first size must be ``None``
        or ``batch_size * sequence_length`` with ``precompute_input`` (all
        steps at once), ``batch_size`` without.
    hidden_to_hidden : Layer
        :math:`f_h`: a network with one :class:`InputLayer`, whose output
        shape is its input shape and ``input_to_hidden``'s output shape.
    nonlinearity : callable or None
        :math:`\sigma`; ``None`` means the identity.
    hid_init : initializer, array, shared variable or Layer
        :math:`h_0`: a ``(1,) + state`` parameter, or a layer giving
        ``(batch_size,) + state``.
    backwards, learn_init, gradient_steps, grad_clipping, unroll_scan, \
precompute_input, mask_input, only_return_final
        See the module documentation.
    **kwargs
        ``name``.

    Notes
    -----
    ``get_params`` includes the parameters of both networks.  Keyword
    arguments of ``get_output`` reach the layers of both networks.

    Examples
    --------
    >>> from bntrain.nn.layers import InputLayer, DenseLayer, CustomRecurrentLayer
    >>> l_in = InputLayer((2, 3, 4))
    >>> f_i = DenseLayer(InputLayer((None, 4)), 5)
    >>> f_h = DenseLayer(InputLayer((None, 5)), 5)
    >>> CustomRecurrentLayer(l_in, f_i, f_h).output_shape
    (2, 3, 5)
    """

    def __init__(
        self,
        incoming,
        input_to_hidden: Layer,
        hidden_to_hidden: Layer,
        nonlinearity: Callable | None = nonlinearities.rectify,
        hid_init=init.Constant(0.0),  # noqa: B008  (Lasagne's signature)
        backwards: bool = False,
        learn_init: bool = False,
        gradient_steps: int = -1,
        grad_clipping: float = 0,
        unroll_scan: bool = False,
        precompute_input: bool = True,
        mask_input: Layer | None = None,
        only_return_final: bool = False,
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(
            incoming,
            {"hid_init": hid_init},
            **recurrence_options(locals()),
            **kwargs,
        )
        where = _label(type(self).__name__, self.name)
        for what, net in (
            ("input_to_hidden", input_to_hidden),
            ("hidden_to_hidden", hidden_to_hidden),
        ):
            found = len(_input_layers(net))
            if found != 1:
                raise ValueError(
                    f"{where}: `{what}` must have exactly one InputLayer, it has {found}"
                )
        self.input_to_hidden = input_to_hidden
        self.hidden_to_hidden = hidden_to_hidden
        self.nonlinearity = _nonlinearity(where, nonlinearity)
        self._check_shapes(where)
        self._add_state_params(hidden_to_hidden.output_shape[1:])
        self.get_output_kwargs = utils.unique(
            kw
            for net in (input_to_hidden, hidden_to_hidden)
            for layer in helper.get_all_layers(net)
            for kw in getattr(layer, "get_output_kwargs", [])
        )

    def _check_shapes(self, where: str) -> None:
        batch, time, *features = self.input_shapes[0]
        i2h_in = _input_layers(self.input_to_hidden)[0].output_shape
        i2h_out = self.input_to_hidden.output_shape
        h2h_in = _input_layers(self.hidden_to_hidden)[0].output_shape
        h2h_out = self.hidden_to_hidden.output_shape
        problems = []
        if not _agree(i2h_in[1:], tuple(features)):
            problems.append(
                f"input_to_hidden's input shape {i2h_in} does not fit the input's step shape "
                f"{(batch, *features)}"
            )
        if self.precompute_input:
            if None not in (i2h_out[0], batch, time) and i2h_out[0] != batch * time:
                problems.append(
                    f"with precompute_input=True, input_to_hidden.output_shape[0] must be None "
                    f"or batch_size*sequence_length={batch * time}, got {i2h_out[0]}"
                )
        elif None not in (i2h_out[0], h2h_out[0]) and i2h_out[0] != h2h_out[0]:
            problems.append(
                f"with precompute_input=False, input_to_hidden.output_shape[0] ({i2h_out[0]}) "
                f"must equal hidden_to_hidden.output_shape[0] ({h2h_out[0]})"
            )
        if not _agree(i2h_out[1:], h2h_out[1:]):
            problems.append(
                f"input_to_hidden.output_shape {i2h_out} and hidden_to_hidden.output_shape "
                f"{h2h_out} must agree after the first axis"
            )
        if not _agree(i2h_out[1:], h2h_in[1:]):
            problems.append(
                f"input_to_hidden.output_shape {i2h_out} must agree with hidden_to_hidden's "
                f"input shape {h2h_in} after the first axis"
            )
        if any(s is None for s in h2h_out[1:]):
            problems.append(
                f"hidden_to_hidden.output_shape {h2h_out} must be known after the first axis"
            )
        if problems:
            raise ValueError(f"{where}: " + "; ".join(problems))

    def get_params(self, unwrap_shared=True, **tags):
        """Return this layer's parameters and those of both networks, filtered by tags."""
        own = super().get_params(unwrap_shared=unwrap_shared, **tags)
        nets = [
            helper.get_all_params(net, unwrap_shared=unwrap_shared, **tags)
            for net in (self.input_to_hidden, self.hidden_to_hidden)
        ]
        return utils.unique(own + nets[0] + nets[1])

    def _state_shape(self) -> tuple:
        return tuple(self.hidden_to_hidden.output_shape[1:])

    def _run_network(self, net, x, updates, kwargs):
        with warnings.catch_warnings():  # the caller's get_output checks the kwargs
            warnings.filterwarnings("ignore", message=r"get_output\(\) was called with unused")
            out, net_updates = helper.get_output(net, x, return_updates=True, **kwargs)
        if net_updates:
            if updates is None:
                raise ValueError(
                    f"{_label(type(self).__name__, self.name)}: a layer inside the recurrence "
                    f"asks for updates ({len(net_updates)}, e.g. batch-norm averages), which "
                    f"cannot be applied from inside the loop; use deterministic layers there "
                    f"(or precompute_input=True for input_to_hidden)"
                )
            updates.update(net_updates)
        return out

    def _transform_input(self, x, updates, **kwargs):
        return self._run_network(self.input_to_hidden, x, updates, kwargs)

    def _step(self, input_n, hid_previous, **kwargs):
        hid_pre = self._run_network(self.hidden_to_hidden, hid_previous, None, kwargs) + input_n
        return [self.nonlinearity(self._clip(hid_pre))]


class RecurrentLayer(CustomRecurrentLayer):
    r"""A dense ("vanilla") recurrent layer: :math:`h_t = \sigma(x_t W_x + h_{t-1} W_h + b)`.

    A :class:`CustomRecurrentLayer` whose networks are two
    :class:`DenseLayer` instances named ``input_to_hidden`` (holding
    :math:`W_x` and :math:`b`) and ``hidden_to_hidden`` (holding
    :math:`W_h`), prefixed with this layer's name.  Trailing input axes after
    the second are flattened.

    Parameters
    ----------
    incoming : Layer or tuple
        The sequence input, ``(batch_size, sequence_length, ...)``.
    num_units : int
        The number of hidden units.
    W_in_to_hid, W_hid_to_hid : initializer, array or shared variable
        :math:`W_x` ``(num_inputs, num_units)`` and :math:`W_h`
        ``(num_units, num_units)``; available as attributes of those names.
    b : initializer, array, shared variable or None
        :math:`b` ``(num_units,)``; ``None`` for no bias.
    nonlinearity : callable or None
        :math:`\sigma`; ``None`` means the identity.
    hid_init, backwards, learn_init, gradient_steps, grad_clipping, \
unroll_scan, precompute_input, mask_input, only_return_final
        See :class:`CustomRecurrentLayer` and the module documentation.
    **kwargs
        ``name``.
    """

    def __init__(
        self,
        incoming,
        num_units: int,
        W_in_to_hid=init.Uniform(),  # noqa: B008  (Lasagne's signature)
        W_hid_to_hid=init.Uniform(),  # noqa: B008
        b=init.Constant(0.0),  # noqa: B008
        nonlinearity: Callable | None = nonlinearities.rectify,
        hid_init=init.Constant(0.0),  # noqa: B008
        backwards: bool = False,
        learn_init: bool = False,
        gradient_steps: int = -1,
        grad_clipping: float = 0,
        unroll_scan: bool = False,
        precompute_input: bool = True,
        mask_input: Layer | None = None,
        only_return_final: bool = False,
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        input_shape = incoming if isinstance(incoming, tuple) else incoming.output_shape
        if len(input_shape) < 3:  # before the inner layers, whose message would not say why
            where = _label(type(self).__name__, kwargs.get("name"))
            raise ValueError(
                f"{where}: the input must be (batch_size, sequence_length, features...), "
                f"got input_shape={tuple(input_shape)!r}"
            )
        prefix = f"{kwargs['name']}." if kwargs.get("name") is not None else ""
        in_to_hid = DenseLayer(
            InputLayer((None, *input_shape[2:])),
            num_units,
            W=W_in_to_hid,
            b=b,
            nonlinearity=None,
            name=prefix + "input_to_hidden",
        )
        hid_to_hid = DenseLayer(
            InputLayer((None, num_units)),
            num_units,
            W=W_hid_to_hid,
            b=None,
            nonlinearity=None,
            name=prefix + "hidden_to_hidden",
        )
        self.W_in_to_hid = in_to_hid.W
        self.W_hid_to_hid = hid_to_hid.W
        self.b = in_to_hid.b
        super().__init__(
            incoming,
            in_to_hid,
            hid_to_hid,
            nonlinearity=nonlinearity,
            hid_init=hid_init,
            **recurrence_options(locals()),
            **kwargs,
        )


class Gate:
    """The parameters of one gate of an :class:`LSTMLayer` or :class:`GRULayer`.

    A gate computes ``nonlinearity(x W_in + h W_hid [+ c * W_cell] + b)``.

    Parameters
    ----------
    W_in : initializer, array or shared variable
        The input-to-gate weights ``(num_inputs, num_units)``.
    W_hid : initializer, array or shared variable
        The hidden-to-gate weights ``(num_units, num_units)``.
    W_cell : initializer, array, shared variable or None
        The cell-to-gate (peephole) weight vector ``(num_units,)``; ``None``
        for none (the LSTM's cell computation and the GRU never use it).
    b : initializer, array or shared variable
        The bias ``(num_units,)``.
    nonlinearity : callable or None
        Applied to the gate's activation; ``None`` means the identity.

    Examples
    --------
    A forget gate that initially remembers:

    >>> from bntrain.nn import init
    >>> from bntrain.nn.layers import LSTMLayer
    >>> l_lstm = LSTMLayer((10, 20, 30), num_units=10, forgetgate=Gate(b=init.Constant(5.0)))
    """

    def __init__(
        self,
        W_in=init.Normal(0.1),  # noqa: B008  (Lasagne's signature)
        W_hid=init.Normal(0.1),  # noqa: B008
        W_cell=init.Normal(0.1),  # noqa: B008
        b=init.Constant(0.0),  # noqa: B008
        nonlinearity: Callable | None = nonlinearities.sigmoid,
    ) -> None:
        self.W_in = W_in
        self.W_hid = W_hid
        self.W_cell = W_cell
        self.b = b
        self.nonlinearity = _nonlinearity("Gate", nonlinearity)


class _GatedLayer(RecurrenceBase):
    """An LSTM or GRU: gates whose input and hidden weights are used stacked."""

    def _add_gates(self, num_units, gates: dict) -> None:
        where = _label(type(self).__name__, self.name)
        self.num_units = _positive_int(where, "num_units", num_units)
        features = self.input_shapes[0][2:]
        if any(s is None for s in features):
            raise ValueError(
                f"{where}: the input sizes after the time axis must be known, got "
                f"input_shape={self.input_shapes[0]!r}"
            )
        num_inputs = int(np.prod(features))
        self._stacked_shapes = {
            "W_in_to": (num_inputs, num_units),
            "W_hid_to": (num_units, num_units),
            "b": (num_units,),
        }
        self._gates = list(gates)
        for name, gate in gates.items():
            if not isinstance(gate, Gate):
                raise TypeError(f"{where}: {name} must be a Gate, got {gate!r}")
            setattr(
                self,
                f"W_in_to_{name}",
                self.add_param(gate.W_in, (num_inputs, num_units), name=f"W_in_to_{name}"),
            )
            setattr(
                self,
                f"W_hid_to_{name}",
                self.add_param(gate.W_hid, (num_units, num_units), name=f"W_hid_to_{name}"),
            )
            setattr(
                self,
                f"b_{name}",
                self.add_param(gate.b, (num_units,), name=f"b_{name}", regularizable=False),
            )
            setattr(self, f"nonlinearity_{name}", gate.nonlinearity)

    def _stacked(self, kind: str):
        """The gates' parameters of one kind side by side, for one product for all gates.

        Their static shapes make the gradient's split static, as JAX needs.
        """
        shape = self._stacked_shapes[kind]
        parts = [pt.specify_shape(getattr(self, f"{kind}_{name}"), shape) for name in self._gates]
        return pt.concatenate(parts, axis=-1)

    def _state_shape(self) -> tuple:
        return (self.num_units,)

    def _prepare_input(self, input):
        return input.flatten(3) if input.ndim > 3 else input

    def _transform_input(self, x, updates, **kwargs):
        return pt.dot(x, self._stacked("W_in_to")) + self._stacked("b")

    def _split(self, stacked) -> list:
        n = self.num_units
        return [stacked[:, i * n : (i + 1) * n] for i in range(len(self._gates))]


class LSTMLayer(_GatedLayer):
    r"""A long short-term memory layer, with optional peephole connections.

    .. math::
        i_t &= \sigma_i(x_t W_{xi} + h_{t-1} W_{hi} + w_{ci} \odot c_{t-1} + b_i)\\
        f_t &= \sigma_f(x_t W_{xf} + h_{t-1} W_{hf} + w_{cf} \odot c_{t-1} + b_f)\\
        c_t &= f_t \odot c_{t-1} + i_t \odot \sigma_c(x_t W_{xc} + h_{t-1} W_{hc} + b_c)\\
        o_t &= \sigma_o(x_t W_{xo} + h_{t-1} W_{ho} + w_{co} \odot c_t + b_o)\\
        h_t &= o_t \odot \sigma_h(c_t)

    The output is :math:`h_t`.

    Parameters
    ----------
    incoming : Layer or tuple
        The sequence input, ``(batch_size, sequence_length, ...)``; trailing
        axes after the second are flattened.
    num_units : int
        The number of hidden and cell units.
    ingate, forgetgate, cell, outgate : Gate
        The parameters of :math:`i`, :math:`f`, the cell candidate and
        :math:`o`; they become attributes ``W_in_to_ingate``,
        ``W_hid_to_ingate``, ``b_ingate``, ``W_cell_to_ingate`` ... and
        ``nonlinearity_ingate`` ...
    nonlinearity : callable or None
        :math:`\sigma_h`; ``None`` means the identity.
    cell_init, hid_init : initializer, array, shared variable or Layer
        :math:`c_0` and :math:`h_0` (see the module documentation).
    peepholes : bool
        Use the peephole vectors :math:`w_{ci}, w_{cf}, w_{co}` (the
        ``W_cell`` of ``ingate``, ``forgetgate`` and ``outgate``).
    backwards, learn_init, gradient_steps, grad_clipping, unroll_scan, \
precompute_input, mask_input, only_return_final
        See the module documentation.
    **kwargs
        ``name``.
    """

    def __init__(
        self,
        incoming,
        num_units: int,
        ingate: Gate = Gate(),  # noqa: B008  (Lasagne's signature)
        forgetgate: Gate = Gate(),  # noqa: B008
        cell: Gate = Gate(W_cell=None, nonlinearity=nonlinearities.tanh),  # noqa: B008
        outgate: Gate = Gate(),  # noqa: B008
        nonlinearity: Callable | None = nonlinearities.tanh,
        cell_init=init.Constant(0.0),  # noqa: B008
        hid_init=init.Constant(0.0),  # noqa: B008
        backwards: bool = False,
        learn_init: bool = False,
        peepholes: bool = True,
        gradient_steps: int = -1,
        grad_clipping: float = 0,
        unroll_scan: bool = False,
        precompute_input: bool = True,
        mask_input: Layer | None = None,
        only_return_final: bool = False,
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(
            incoming,
            {"hid_init": hid_init, "cell_init": cell_init},
            **recurrence_options(locals()),
            **kwargs,
        )
        where = _label(type(self).__name__, self.name)
        self.nonlinearity = _nonlinearity(where, nonlinearity)
        gates = {"ingate": ingate, "forgetgate": forgetgate, "cell": cell, "outgate": outgate}
        self._add_gates(num_units, gates)
        self.peepholes = bool(peepholes)
        if self.peepholes:
            for name in ("ingate", "forgetgate", "outgate"):
                if gates[name].W_cell is None:
                    raise ValueError(
                        f"{where}: peepholes=True needs {name}.W_cell, but the Gate was made "
                        f"with W_cell=None; give it one or pass peepholes=False"
                    )
                param = self.add_param(
                    gates[name].W_cell, (self.num_units,), name=f"W_cell_to_{name}"
                )
                setattr(self, f"W_cell_to_{name}", param)
        self._add_state_params((self.num_units,))

    def _step(self, input_n, hid_previous, cell_previous, **kwargs):
        ingate, forgetgate, cell_input, outgate = self._split(
            input_n + pt.dot(hid_previous, self._stacked("W_hid_to"))
        )
        if self.peepholes:
            ingate = ingate + cell_previous * self.W_cell_to_ingate
            forgetgate = forgetgate + cell_previous * self.W_cell_to_forgetgate
        ingate = self.nonlinearity_ingate(self._clip(ingate))
        forgetgate = self.nonlinearity_forgetgate(self._clip(forgetgate))
        cell_input = self.nonlinearity_cell(self._clip(cell_input))
        cell = forgetgate * cell_previous + ingate * cell_input
        if self.peepholes:
            outgate = outgate + cell * self.W_cell_to_outgate
        outgate = self.nonlinearity_outgate(self._clip(outgate))
        return [outgate * self.nonlinearity(cell), cell]


class GRULayer(_GatedLayer):
    r"""A gated recurrent unit layer.

    .. math::
        r_t &= \sigma_r(x_t W_{xr} + h_{t-1} W_{hr} + b_r)\\
        u_t &= \sigma_u(x_t W_{xu} + h_{t-1} W_{hu} + b_u)\\
        c_t &= \sigma_c(x_t W_{xc} + r_t \odot (h_{t-1} W_{hc}) + b_c)\\
        h_t &= (1 - u_t) \odot h_{t-1} + u_t \odot c_t

    (the reset gate scales :math:`h_{t-1} W_{hc}`, as in Cho et al. 2014, so
    that all hidden products are one matrix product).

    Parameters
    ----------
    incoming : Layer or tuple
        The sequence input, ``(batch_size, sequence_length, ...)``; trailing
        axes after the second are flattened.
    num_units : int
        The number of hidden units.
    resetgate, updategate, hidden_update : Gate
        The parameters of :math:`r`, :math:`u` and :math:`c` (their
        ``W_cell`` is ignored); they become attributes
        ``W_in_to_resetgate``, ``W_hid_to_resetgate``, ``b_resetgate`` ...
    hid_init, backwards, learn_init, gradient_steps, grad_clipping, \
unroll_scan, precompute_input, mask_input, only_return_final
        See the module documentation.
    **kwargs
        ``name``.
    """

    def __init__(
        self,
        incoming,
        num_units: int,
        resetgate: Gate = Gate(W_cell=None),  # noqa: B008  (Lasagne's signature)
        updategate: Gate = Gate(W_cell=None),  # noqa: B008
        hidden_update: Gate = Gate(W_cell=None, nonlinearity=nonlinearities.tanh),  # noqa: B008
        hid_init=init.Constant(0.0),  # noqa: B008
        backwards: bool = False,
        learn_init: bool = False,
        gradient_steps: int = -1,
        grad_clipping: float = 0,
        unroll_scan: bool = False,
        precompute_input: bool = True,
        mask_input: Layer | None = None,
        only_return_final: bool = False,
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__(
            incoming,
            {"hid_init": hid_init},
            **recurrence_options(locals()),
            **kwargs,
        )
        gates = {"resetgate": resetgate, "updategate": updategate, "hidden_update": hidden_update}
        self._add_gates(num_units, gates)
        self._add_state_params((self.num_units,))

    def _step(self, input_n, hid_previous, **kwargs):
        in_reset, in_update, in_hidden = self._split(input_n)
        hid_reset, hid_update, hid_hidden = self._split(
            pt.dot(hid_previous, self._stacked("W_hid_to"))
        )
        resetgate = self.nonlinearity_resetgate(self._clip(in_reset + hid_reset))
        updategate = self.nonlinearity_updategate(self._clip(in_update + hid_update))
        hidden_update = self.nonlinearity_hidden_update(
            self._clip(in_hidden + resetgate * hid_hidden)
        )
        return [(1 - updategate) * hid_previous + updategate * hidden_update]
