"""What every recurrent layer shares: inputs, initial states, options and the time loop.

The public layers in :mod:`bntrain.nn.layers.recurrent` only say how one step
computes the new states from the previous ones; this base class lays out the
sequence time-major, feeds it through ``pytensor.scan`` (or an unrolled loop),
applies the mask, reverses backward passes and picks the output.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytensor
import pytensor.tensor as pt
from pytensor.gradient import grad_clip

from .. import utils
from .base import Layer, MergeLayer
from .special import _label

__all__: list[str] = []


# The options every recurrent layer takes and hands to RecurrenceBase unchanged.
OPTIONS = (
    "mask_input",
    "backwards",
    "learn_init",
    "gradient_steps",
    "grad_clipping",
    "unroll_scan",
    "precompute_input",
    "only_return_final",
)


def recurrence_options(arguments: Mapping) -> dict:
    """The :data:`OPTIONS` among a layer constructor's arguments (pass it ``locals()``).

    The public layers list the options in their signatures, in Lasagne's
    positional order, and hand them on with ``**recurrence_options(locals())``.
    """
    return {name: arguments[name] for name in OPTIONS}


def _match_type(new, like):
    """Give a step's new state the exact type of the previous state, as scan requires."""
    if new.dtype != like.dtype:
        new = pt.cast(new, like.dtype)
    if new.type != like.type:
        new = like.type.filter_variable(new, allow_convert=True)
    return new


class RecurrenceBase(MergeLayer):
    """A layer that runs a recurrence over axis 1 of its input.

    Parameters
    ----------
    incoming : Layer or tuple
        The sequence input, of shape ``(batch_size, sequence_length, ...)``.
    state_inits : dict
        The initial value of each recurrent state by name (``hid_init``,
        ``cell_init``): a :class:`Layer` giving a ``(batch_size, ...)``
        output, or a parameter spec made into a ``(1, ...)`` parameter by
        :meth:`_add_state_params`.
    mask_input : Layer or None
        A ``(batch_size, sequence_length)`` mask: where it is 0, a step keeps
        the previous states (and outputs them).
    backwards, learn_init, gradient_steps, grad_clipping, unroll_scan, \
precompute_input, only_return_final
        As documented on :class:`~bntrain.nn.layers.CustomRecurrentLayer` (keyword-only and
        required here: the public layers own the defaults; see :func:`recurrence_options`).
    **kwargs
        ``name``.
    """

    def __init__(
        self,
        incoming,
        state_inits: dict,
        *,
        mask_input,
        backwards: bool,
        learn_init: bool,
        gradient_steps: int,
        grad_clipping: float,
        unroll_scan: bool,
        precompute_input: bool,
        only_return_final: bool,
        **kwargs,
    ) -> None:
        incomings = [incoming]
        self.mask_incoming_index = -1
        if mask_input is not None:
            incomings.append(mask_input)
            self.mask_incoming_index = len(incomings) - 1
        self._state_inits = dict(state_inits)
        for state, spec in self._state_inits.items():
            setattr(self, f"{state}_incoming_index", -1)
            if isinstance(spec, Layer):
                incomings.append(spec)
                setattr(self, f"{state}_incoming_index", len(incomings) - 1)
        super().__init__(incomings, **kwargs)
        where = _label(type(self).__name__, self.name)
        input_shape = self.input_shapes[0]
        if len(input_shape) < 3:
            raise ValueError(
                f"{where}: the input must be (batch_size, sequence_length, features...), "
                f"got input_shape={input_shape!r}"
            )
        if isinstance(gradient_steps, bool) or not isinstance(gradient_steps, utils.int_types):
            raise TypeError(f"{where}: gradient_steps must be an int, got {gradient_steps!r}")
        if unroll_scan and gradient_steps != -1:
            raise ValueError(
                f"{where}: gradient_steps must be -1 when unroll_scan is True (an unrolled "
                f"loop always backpropagates through the whole sequence), got {gradient_steps}"
            )
        if unroll_scan and input_shape[1] is None:
            raise ValueError(
                f"{where}: unroll_scan=True needs the sequence length, but input_shape="
                f"{input_shape!r} leaves it as None; give it or use unroll_scan=False"
            )
        if grad_clipping < 0:
            raise ValueError(f"{where}: grad_clipping must be >= 0, got {grad_clipping!r}")
        self.backwards = bool(backwards)
        self.learn_init = bool(learn_init)
        self.gradient_steps = int(gradient_steps)
        self.grad_clipping = grad_clipping
        self.unroll_scan = bool(unroll_scan)
        self.precompute_input = bool(precompute_input)
        self.only_return_final = bool(only_return_final)

    # ---------------------------------------------------------------- built by subclasses
    def _add_state_params(self, state_shape: tuple) -> None:
        """Set ``self.<state>`` for each state: its layer, or a new ``(1,) + state_shape`` parameter.

        The parameters are tagged ``trainable`` only with ``learn_init`` and
        never ``regularizable``.
        """
        for state, spec in self._state_inits.items():
            if isinstance(spec, Layer):
                setattr(self, state, spec)
            else:
                param = self.add_param(
                    spec,
                    (1, *state_shape),
                    name=state,
                    trainable=self.learn_init,
                    regularizable=False,
                )
                setattr(self, state, param)

    def _clip(self, x):
        """Clip the gradient flowing into ``x`` to ``[-grad_clipping, grad_clipping]`` if set."""
        if not self.grad_clipping:
            return x
        return grad_clip(x, -self.grad_clipping, self.grad_clipping)

    def _state_shape(self) -> tuple:
        """The shape of one sample's state, without the batch axis."""
        raise NotImplementedError

    def _prepare_input(self, input):
        """Turn the ``(batch, time, ...)`` input into what :meth:`_transform_input` expects."""
        return input

    def _transform_input(self, x, updates, **kwargs):
        """The input's contribution to a step, for ``x`` of shape ``(n, ...)``.

        ``updates`` collects the updates that computing it asks for, or is
        ``None`` inside the loop, where no update can be applied.
        """
        raise NotImplementedError

    def _step(self, input_n, *states, **kwargs) -> list:
        """Compute the new states from one step's :meth:`_transform_input` and the previous states.

        The first state is the layer's output.
        """
        raise NotImplementedError

    # ---------------------------------------------------------------- shared machinery
    def get_output_shape_for(self, input_shapes):
        """``(batch, time) + state_shape``, or ``(batch,) + state_shape`` with only_return_final."""
        input_shape = input_shapes[0]
        if self.only_return_final:
            return (input_shape[0], *self._state_shape())
        return (input_shape[0], input_shape[1], *self._state_shape())

    def _initial_state(self, state, inputs, batch_size):
        index = getattr(self, f"{state}_incoming_index")
        if index > 0:
            return inputs[index]
        # a static parameter shape keeps the loop's shapes static, as JAX needs
        param = pt.specify_shape(getattr(self, state), (1, *self._state_shape()))
        return pt.repeat(param, batch_size, axis=0)

    def _precompute(self, seq, updates, **kwargs):
        """Apply :meth:`_transform_input` to all steps at once: ``(time, batch, ...)`` in and out."""
        n_time, n_batch = seq.shape[0], seq.shape[1]
        flat = seq.reshape((n_time * n_batch, *(seq.shape[i] for i in range(2, seq.ndim))))
        out = self._transform_input(flat, updates, **kwargs)
        return out.reshape((n_time, n_batch, *(out.shape[i] for i in range(1, out.ndim))))

    def get_output_for(self, inputs, collect_updates=None, **kwargs):
        """Run the recurrence over the sequence in ``inputs[0]``.

        ``inputs`` holds the sequence, then the mask and the initial-state
        layers' outputs where the layer has them.  Other keyword arguments
        (``deterministic``...) reach the layers inside the step.
        """
        updates = collect_updates
        input = self._prepare_input(inputs[0])
        batch_size = input.shape[0]
        seq = input.dimshuffle(1, 0, *range(2, input.ndim))  # time-major
        if self.precompute_input:
            seq = self._precompute(seq, updates, **kwargs)
        sequences = [seq]
        if self.mask_incoming_index > 0:
            sequences.append(inputs[self.mask_incoming_index].dimshuffle(1, 0))
        masked = len(sequences) == 2
        inits = [self._initial_state(state, inputs, batch_size) for state in self._state_inits]

        def one_step(*args):
            input_n = args[0]
            if not self.precompute_input:
                input_n = self._transform_input(input_n, None, **kwargs)
            previous = args[2:] if masked else args[1:]
            new = self._step(input_n, *previous, **kwargs)
            new = [_match_type(n, p) for n, p in zip(new, previous, strict=True)]
            if masked:
                mask_n = args[1].dimshuffle(0, *(["x"] * (previous[0].ndim - 1)))
                new = [pt.switch(mask_n, n, p) for n, p in zip(new, previous, strict=True)]
            return new

        if self.unroll_scan:
            outputs = utils.unroll_scan(
                one_step,
                sequences,
                inits,
                [],
                n_steps=self.input_shapes[0][1],
                go_backwards=self.backwards,
            )
        else:
            outputs = pytensor.scan(
                one_step,
                sequences=sequences,
                outputs_info=inits,
                go_backwards=self.backwards,
                truncate_gradient=self.gradient_steps,
                strict=False,
                return_list=True,
                return_updates=False,
            )
        out = outputs[0]
        if self.only_return_final:
            return out[-1]
        out = out.dimshuffle(1, 0, *range(2, out.ndim))
        return out[:, ::-1] if self.backwards else out
