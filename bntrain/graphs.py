"""The PyTensor functions the tool compiles: one training step and prediction.

Everything symbolic that the CLI runs is built here, from a
:class:`~bntrain.model.Network`, a training config and a
:class:`~bntrain.backend.Runtime`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.tensor.type import TensorType

from .nn import layers as L
from .nn import objectives, regularization, updates

__all__ = ["TrainStep", "build_train_step", "build_predict", "network_function", "static_inputs"]


@dataclass
class TrainStep:
    """A compiled training step and the state it updates.

    Attributes
    ----------
    fn : callable
        ``fn(x, y) -> (loss, accuracy)``; applies the updates.  In JAX mode the
        two are device arrays: reading them waits for the step.
    lr_table : numpy.ndarray
        The float32 learning rate of every optimizer step of the run, in order
        (the last value holds for any step past the end).  It is a constant of
        the compiled graph, indexed by ``counter``: no learning rate travels
        from the host while training.
    counter : SharedVariable
        The optimizer steps done (int64); every optimizer step adds one, also
        one that ``nan_policy: skip`` skipped.  :meth:`set_step` sets it on resume.
    optimizer_state : OrderedDict
        Optimizer slots by name.
    apply : callable or None
        With ``training.accumulate`` > 1: ``fn`` only adds a micro-batch's
        gradients (and batch-norm updates); ``apply()`` takes the optimizer step
        with their mean and clears them.  ``None`` otherwise.
    rng_cells : dict
        JAX mode only: for each dropout layer, the storage cell of the private
        copy of its generator that PyTensor's JAX linker draws from (the layer's
        own ``rng`` does not advance there).
    """

    fn: object
    lr_table: np.ndarray
    counter: object
    optimizer_state: OrderedDict
    rng_cells: dict = field(default_factory=dict)
    apply: object = None

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based), as the graph uses it."""
        return float(self.lr_table[min(max(step, 0), len(self.lr_table) - 1)])

    def set_step(self, step: int) -> None:
        """Continue from ``step`` optimizer steps done (the learning rate follows)."""
        self.counter.set_value(np.int64(step))

    def rng_state(self, layer) -> dict:
        """The current state of a dropout layer's generator, as JSON-able data."""
        cell = self.rng_cells.get(layer)
        if cell is None:
            return layer.rng.get_value(borrow=True).bit_generator.state
        return {"bit_generator": "jax", "value": _plain(cell[0])}

    def set_rng_state(self, layer, state: dict) -> None:
        """Restore what :meth:`rng_state` returned.

        Raises
        ------
        ValueError
            If the state was saved by the other kind of backend.
        """
        cell = self.rng_cells.get(layer)
        if (state.get("bit_generator") == "jax") != (cell is not None):
            saved = "jax" if state.get("bit_generator") == "jax" else "numba/c"
            raise ValueError(
                f"the dropout generator of {layer.name!r} was saved by the {saved} backend; "
                f"resume with the backend that trained the run"
            )
        if cell is not None:
            cell[0] = _unplain(state["value"])
            return
        bitgen = getattr(np.random, state["bit_generator"])()
        bitgen.state = state
        layer.rng.set_value(np.random.Generator(bitgen), borrow=True)


def _plain(value):
    """JAX generator state (nested dict of arrays) -> JSON-able data."""
    if isinstance(value, dict):
        return {key: _plain(v) for key, v in value.items()}
    arr = np.asarray(value)
    return {"dtype": arr.dtype.name, "data": arr.tolist()}


def _unplain(value):
    import jax.numpy as jnp

    if "dtype" in value and "data" in value:
        return jnp.asarray(np.asarray(value["data"], dtype=value["dtype"]))
    return {key: _unplain(v) for key, v in value.items()}


def _jax_rng_cells(fn, layers) -> dict:
    """Find where a JAX-mode function keeps its copies of the layers' generators."""
    cells_in = getattr(fn.vm, "inputs", None)
    if cells_in is None:  # pragma: no cover - depends on PyTensor's JIT linker
        raise RuntimeError("cannot find the JAX function's generator storage")
    by_var = {layer.rng: layer for layer in layers}
    return {
        by_var[inp.variable]: cells_in[i]
        for i, inp in enumerate(fn.maker.inputs)
        if inp.variable in by_var
    }


def _optimizer_updates(opt, loss, params, lr, regularizable):
    f32 = np.float32
    grads = loss if isinstance(loss, list) else pytensor.grad(loss, params)
    if opt.grad_clip_norm is not None:
        grads = updates.total_norm_constraint(grads, f32(opt.grad_clip_norm))
    if opt.name == "sgd":
        return updates.sgd(grads, params, lr)
    if opt.name == "momentum":
        return updates.momentum(grads, params, lr, momentum=f32(opt.momentum))
    if opt.name == "nesterov":
        return updates.nesterov_momentum(grads, params, lr, momentum=f32(opt.momentum))
    if opt.name == "rmsprop":
        return updates.rmsprop(grads, params, lr, epsilon=f32(opt.epsilon))
    if opt.name in ("adam", "adamw"):
        ups = updates.adam(
            grads, params, lr, beta1=f32(opt.beta1), beta2=f32(opt.beta2), epsilon=f32(opt.epsilon)
        )
        if opt.name == "adamw" and opt.weight_decay > 0:
            decayed = [p for p in params if p in regularizable]
            ups = updates.apply_weight_decay(ups, decayed, lr, f32(opt.weight_decay))
        return ups
    raise ValueError(f"unknown optimizer {opt.name!r}")


def static_inputs(network, batch_size: int | None):
    """The ``inputs`` mapping for ``get_output`` that fixes the batch size (or ``None``).

    JAX traces a function per input shape and cannot trace shapes it does not
    know statically (a pooling gradient allocating ``(N, C, H)`` from the
    symbolic batch size fails), so JAX-mode functions are built for one batch size.
    """
    if batch_size is None:
        return None
    layer = network.input_layer
    return {layer: pt.specify_shape(layer.input_var, (batch_size, *layer.shape[1:]))}


class _PerBatchSize:
    """Call the function compiled for the batch size of the first argument (compiling once per size)."""

    def __init__(self, compile_for):
        self._compile_for = compile_for
        self._fns: dict[int, object] = {}

    def __call__(self, x, *rest):
        n = len(x)
        fn = self._fns.get(n)
        if fn is None:
            fn = self._fns[n] = self._compile_for(n)
        return fn(x, *rest)


def network_function(network, make_outputs, mode: str, wrap=None):
    """Compile ``f(x) -> make_outputs(inputs)`` for the network's input.

    ``make_outputs(inputs)`` builds the outputs with ``get_output(..., inputs=inputs)``.
    In JAX mode one function is compiled per batch size met (static shapes);
    elsewhere a single function takes any batch size.  ``wrap`` (e.g.
    :meth:`bntrain.parallel.DataParallel.wrap`) is applied to each compiled function.
    """
    x = network.input_layer.input_var

    def compile_for(n):
        fn = pytensor.function([x], make_outputs(static_inputs(network, n)), mode=mode)
        return fn if wrap is None else wrap(fn)

    return _PerBatchSize(compile_for) if mode == "JAX" else compile_for(None)


def build_train_step(
    network,
    training,
    mode: str,
    batch_size: int | None = None,
    lr_table=None,
    bn_groups: int = 1,
) -> TrainStep:
    """Compile the training step for ``network`` with the ``training`` config section.

    The loss is the mean categorical cross-entropy; ``weight_decay`` adds
    ``weight_decay / 2 * sum(W**2)`` over regularizable parameters (so the
    gradient gets ``weight_decay * W``, PyTorch's convention) except for
    ``adamw``, which decays decoupled from the gradient.  With
    ``nan_policy: skip`` every tensor update is guarded so that a step with a
    non-finite loss changes no parameter, statistic or optimizer slot (the
    dropout generators still advance).  With ``batch_size`` the step is built
    for that batch size only (what JAX mode needs).  ``bn_groups > 1`` makes
    every batch-norm layer normalize each of that many slices of the batch by
    its own statistics (ghost batch norm, ``batch_norm.sync: false``).
    """
    x = network.input_layer.input_var
    y = pt.ivector("y")
    bn_options = {}
    if getattr(network, "bn_freeze", "none") != "none":  # stored statistics, never updated
        bn_options = {"batch_norm_use_averages": True, "batch_norm_update_averages": False}
    if bn_groups > 1:
        bn_options["batch_norm_groups"] = bn_groups
    out, layer_updates = L.get_output(
        network.output_layer,
        inputs=static_inputs(network, batch_size),
        return_updates=True,
        **bn_options,
    )
    loss = objectives.categorical_crossentropy(out, y).mean()
    acc = objectives.categorical_accuracy(out, y).mean(dtype=pytensor.config.floatX)
    opt = training.optimizer
    cost = loss
    if opt.weight_decay > 0 and opt.name != "adamw":
        penalty = regularization.regularize_network_params(network.output_layer, regularization.l2)
        cost = loss + np.float32(opt.weight_decay / 2) * penalty
    params = L.get_all_params(network.output_layer, trainable=True)
    table = np.atleast_1d(np.asarray(opt.lr if lr_table is None else lr_table, np.float32))
    counter = pytensor.shared(np.int64(0), name="optimizer_steps")
    lr = pt.constant(table, name="lr_table")[pt.minimum(counter, len(table) - 1)]
    regularizable = set(L.get_all_params(network.output_layer, regularizable=True))
    apply = None
    step_count = OrderedDict([(counter, counter + 1)])  # never guarded: a skipped step counts
    if getattr(training, "accumulate", 1) > 1:
        ups, apply, state = _accumulation(opt, cost, params, lr, regularizable, mode, step_count)
    else:
        ups = _optimizer_updates(opt, cost, params, lr, regularizable)
        state = updates.optimizer_state(ups, params)
    ups.update(layer_updates)
    if training.nan_policy == "skip":
        ups = _guard(ups, pt.isfinite(loss))
    if apply is None:
        ups.update(step_count)
    fn = pytensor.function([x, y], [loss, acc], updates=ups, mode=mode)
    dropout = network.dropout_layers
    cells = _jax_rng_cells(fn, dropout) if mode == "JAX" and dropout else {}
    return TrainStep(
        fn=fn,
        lr_table=table,
        counter=counter,
        optimizer_state=state,
        rng_cells=cells,
        apply=apply,
    )


def _guard(ups: OrderedDict, ok) -> OrderedDict:
    """Keep every tensor variable unchanged where ``ok`` is false."""
    return OrderedDict(
        (var, pt.switch(ok, new, var) if isinstance(new.type, TensorType) else new)
        for var, new in ups.items()
    )


def _accumulation(opt, cost, params, lr, regularizable, mode, counter_update):
    """Gradient accumulation: the micro-batch updates, the compiled ``apply()`` and its slots.

    Each micro-batch adds its gradients into a float32 accumulator per parameter
    and counts itself; ``apply()`` steps the optimizer with the mean over the
    micro-batches counted (so a short last cycle of an epoch is a mean too),
    then zeroes the accumulators and applies ``counter_update`` (the step counter's
    update).  ``apply()`` changes nothing else if no micro-batch was counted.
    """
    grads = pytensor.grad(cost, params)
    sums = [pytensor.shared(np.zeros_like(p.get_value()), name=f"accum.{p.name}") for p in params]
    count = pytensor.shared(np.float32(0), name="accum.count")
    micro = OrderedDict((s, s + g) for s, g in zip(sums, grads, strict=True))
    micro[count] = count + np.float32(1)
    mean = [s / pt.maximum(count, np.float32(1)) for s in sums]
    step = _optimizer_updates(opt, mean, params, lr, regularizable)
    state = updates.optimizer_state(step, params)
    step = _guard(step, pt.gt(count, 0))
    for s in sums:
        step[s] = pt.zeros_like(s)
    step[count] = pt.zeros_like(count)
    step.update(counter_update)
    return micro, pytensor.function([], [], updates=step, mode=mode), state


def build_predict(network, mode: str, wrap=None):
    """Compile ``predict(x) -> probabilities`` with batch norm in inference mode."""
    return network_function(
        network,
        lambda inputs: L.get_output(network.output_layer, inputs=inputs, deterministic=True),
        mode,
        wrap,
    )
