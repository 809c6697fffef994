"""Exact whole-training-set batch-norm statistics (what ``recompute-stats`` computes).

After training, the moving averages a :class:`~bntrain.nn.layers.BatchNormLayer`
stores lag the final weights (or are noisy).  This module streams the training
set through the frozen network once per *pass* and computes, per channel of
every batch-norm layer, the statistics of the values the layer receives:

``estimator='population'``
    The exact mean and exact biased variance over every value of the pass,
    accumulated per batch as ``(count, mean, M2)`` in float64 and merged with
    Chan et al.'s parallel formula (never ``E[x^2] - E[x]^2``).
``estimator='batch-mean'``
    Ioffe & Szegedy's Algorithm 2: the unweighted mean of the batch means and
    the unweighted mean of the unbiased batch variances ``m/(m-1) var_B``.

``mode='batch'`` makes one pass in which every layer normalizes with its own
batch statistics, as in training (PreciseBN, ``torch.optim.swa_utils.update_bn``).
``mode='layerwise'`` settles the layers in topological order: the statistics
of a layer are gathered while every batch-norm layer upstream of it already
uses its recomputed population statistics.  See ``docs/bnstats.md``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pytensor.tensor as pt

from .graphs import network_function
from .nn import layers as L
from .stats import RunningMoments

__all__ = [
    "ESTIMATORS",
    "MODES",
    "BnLayerStats",
    "BnStatsResult",
    "LayerReport",
    "bn_levels",
    "compute_bn_stats",
    "report_rows",
]

ESTIMATORS = ("population", "batch-mean")
MODES = ("batch", "layerwise")


@dataclass
class BnLayerStats:
    """Recomputed statistics of one batch-norm layer.

    Attributes
    ----------
    mean, var : ndarray of float64
        Per channel (shape of the layer's ``mean`` parameter); ``var`` is the
        biased population variance (``population``) or Algorithm 2's
        unbiased estimate (``batch-mean``).
    count : int
        Values seen per channel (``N*H*W`` summed over the pass for a conv layer).
    """

    mean: np.ndarray
    var: np.ndarray
    count: int


class BnStatsResult(dict):
    """``{bn layer name: BnLayerStats}`` in topological order, plus the number of passes.

    Attributes
    ----------
    passes : int
        How many times the data was streamed through the network.
    n_examples : int
        Examples per pass.
    """

    def __init__(self, *args, passes: int = 0, n_examples: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.passes = passes
        self.n_examples = n_examples


# --------------------------------------------------------------------------- accumulators


class _Population:
    """Per-channel ``(count, mean, M2)`` in float64, merged with Chan et al.'s formula."""

    def __init__(self):
        self.moments = None

    def add(self, count: int, mean: np.ndarray, m2: np.ndarray) -> None:
        batch = RunningMoments.from_moments(count, mean, m2)
        if self.moments is None:
            self.moments = batch
        else:
            self.moments.merge(batch)

    def result(self) -> BnLayerStats:
        m = self.moments
        return BnLayerStats(m.mean, m.var, int(m.count))


class _BatchMean:
    """Algorithm 2: unweighted means of batch means and of unbiased batch variances."""

    def __init__(self):
        self.count = 0
        self.batches = 0
        self.var_batches = 0
        self.sum_mean = None
        self.sum_var = None

    def add(self, count: int, mean: np.ndarray, m2: np.ndarray) -> None:
        if count == 0:
            return
        mean = np.asarray(mean, dtype=np.float64)
        m2 = np.asarray(m2, dtype=np.float64)
        if self.sum_mean is None:
            self.sum_mean = np.zeros_like(mean)
            self.sum_var = np.zeros_like(mean)
        self.count += count
        self.batches += 1
        self.sum_mean += mean
        if count > 1:  # a batch of one value per channel has no variance estimate
            self.var_batches += 1
            self.sum_var += m2 / (count - 1)

    def result(self) -> BnLayerStats:
        var = self.sum_var / self.var_batches if self.var_batches else np.zeros_like(self.sum_mean)
        return BnLayerStats(self.sum_mean / self.batches, var, int(self.count))


_ACCUMULATORS = {"population": _Population, "batch-mean": _BatchMean}


# --------------------------------------------------------------------------- graph


def bn_levels(bn_layers) -> list[list]:
    """Group batch-norm layers into passes for ``mode='layerwise'``.

    A layer's level is 0 when no batch-norm layer is upstream of it, else one
    more than the highest level upstream; layers of one level do not depend
    on each other and are settled in the same pass.

    Parameters
    ----------
    bn_layers : list of BatchNormLayer
        In topological order.

    Returns
    -------
    list of list of BatchNormLayer
        One list per pass, in order.
    """
    bn_set = set(bn_layers)
    level: dict = {}
    for bn in bn_layers:
        upstream = [lay for lay in L.get_all_layers(bn)[:-1] if lay in bn_set]
        level[bn] = 1 + max((level[u] for u in upstream), default=-1)
    groups: list[list] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for bn in bn_layers:
        groups[level[bn]].append(bn)
    return groups


def _reduce_dtype(mode_name: str) -> str:
    """float64 where the backend has it; JAX (x64 off) reduces in float32, corrected."""
    return "float32" if str(mode_name).upper() == "JAX" else "float64"


def _compile_pass(network, targets, settled, mode_name: str, wrap=None):
    """Compile ``f(x)`` giving, per target layer, the batch's per-channel moments.

    Per target: the input's shape, the batch mean ``m``, the sum of ``x - m``
    and the sum of ``(x - m)**2`` (a corrected two-pass reduction), all packed
    into one flat vector (read back with :func:`_unpack`), so that a GPU
    returns one array per batch rather than four per layer, each a
    synchronising transfer.  With Numba/C they are computed in float64; with JAX, which has no
    float64 without x64, in float32: ``x - m`` is then exact for values near
    the mean and the first-order error of ``m`` is removed on the host (see
    :func:`_unpack`), so the variance keeps float32's relative precision
    even for a channel whose mean is 10**6 times its spread.
    """
    sources = [bn.input_layer for bn in targets]
    kwargs = {}
    if any(isinstance(layer, L.BatchNormLayer) for layer in L.get_all_layers(sources)):
        kwargs["batch_norm_use_averages"] = frozenset(settled) if settled else False
        kwargs["batch_norm_update_averages"] = False
    dtype = _reduce_dtype(mode_name)

    def make_outputs(inputs):
        acts = L.get_output(sources, inputs=inputs, deterministic=True, **kwargs)
        outputs = []
        for bn, act in zip(targets, acts, strict=True):
            # the same expression as the layer's own batch mean, so that in batch
            # mode PyTensor merges the two and the data are reduced once less
            mean = pt.mean(act, axis=bn.axes)
            xs = pt.cast(act, dtype)
            centered = xs - bn._broadcast(pt.cast(mean, dtype), xs)
            s1 = pt.sum(centered, axis=bn.axes, acc_dtype=dtype)
            s2 = pt.sum(pt.sqr(centered), axis=bn.axes, acc_dtype=dtype)
            # each dimension is exact in float32 (< 2**24); the count is formed on the host
            outputs.extend([pt.cast(act.shape, dtype), pt.cast(mean, dtype), s1, s2])
        return [pt.concatenate([pt.flatten(o) for o in outputs])]

    return network_function(network, make_outputs, mode_name, wrap)


def _unpack(targets, packed) -> list[tuple]:
    """Split a compiled pass's packed vector into ``(count, mean, M2)`` per target, in float64."""
    flat = np.asarray(packed, dtype=np.float64)
    pos, moments = 0, []
    for bn in targets:
        ndim = len(bn.input_shape)
        shape = [int(d) for d in flat[pos : pos + ndim]]
        pos += ndim
        kept = [shape[d] for d in range(ndim) if d not in bn.axes]
        size = int(np.prod(kept))
        mean, s1, s2 = (flat[pos + k * size : pos + (k + 1) * size].reshape(kept) for k in range(3))
        pos += 3 * size
        count = int(np.prod([shape[a] for a in bn.axes]))
        mean = mean + s1 / count
        m2 = np.maximum(s2 - s1 * s1 / count, 0.0)
        moments.append((count, mean, m2))
    if pos != flat.size:
        raise RuntimeError(f"statistics vector has {flat.size} values, expected {pos}")
    return moments


def _run_pass(fn, targets, batches, estimator: str, bar=None) -> dict:
    """Stream ``batches`` through a compiled pass; ``{target: BnLayerStats}``.

    With JAX a call returns as soon as the batch is dispatched, so the
    outputs of a batch are read back (and merged in float64) only after the
    next batch has been dispatched: the host reads the next batch and merges
    the previous statistics while the device computes, instead of waiting for
    every batch in turn.  Other backends compute synchronously; their outputs
    are merged at once (their output buffers may be reused by the next call).
    """
    accs = [_ACCUMULATORS[estimator]() for _ in targets]

    def merge(outs):
        (packed,) = outs
        for acc, moments in zip(accs, _unpack(targets, packed), strict=True):
            acc.add(*moments)

    deferred = None
    for x in batches:
        outs = fn(x)
        if deferred is not None:
            merge(deferred)
            deferred = None
        if _is_async(outs):
            deferred = outs
        else:
            merge(outs)
        if bar is not None:
            bar.update(len(x))
    if deferred is not None:
        merge(deferred)
    return {bn: acc.result() for bn, acc in zip(targets, accs, strict=True)}


def _is_async(outs) -> bool:
    """Whether a compiled function's outputs are device arrays (JAX) rather than NumPy arrays."""
    return bool(outs) and not isinstance(outs[0], np.ndarray)


def _batches(ds, preprocess, batch_size: int, augment=None):
    n = len(ds)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        x, _ = ds.read(slice(start, stop))
        if preprocess is not None:
            x = preprocess.apply(x)
        x = np.ascontiguousarray(x, dtype=np.float32)
        yield x if augment is None else augment(x, np.arange(start, stop))


def _check_choice(value, choices, what: str) -> None:
    if value not in choices:
        raise ValueError(f"compute_bn_stats: {what} must be one of {list(choices)}, got {value!r}")


def compute_bn_stats(
    network,
    ds,
    preprocess,
    batch_size: int,
    *,
    estimator: str = "population",
    mode: str = "batch",
    mode_name: str = "NUMBA",
    progress: bool = False,
    wrap=None,
    augment=None,
) -> BnStatsResult:
    """Stream ``ds`` through ``network`` and compute whole-set batch-norm statistics.

    Dropout is off, the data are read in stored order in batches of
    ``batch_size`` (the last partial batch included), and nothing about the
    network is changed: in ``layerwise`` mode the recomputed statistics are
    loaded into the settled layers' ``mean``/``inv_std`` only while the next
    pass runs, and the original values are restored afterwards.

    Parameters
    ----------
    network : bntrain.model.Network
        The network, with its trained parameters loaded.
    ds : Dataset
        Anything with ``len(ds)`` and ``ds.read(slice) -> (x, y)``, examples
        already of the network's input shape.
    preprocess : Preprocessor or None
        Applied to every batch (``preprocess.apply(x)``).
    batch_size : int
        Examples per batch (>= 1).
    estimator : {'population', 'batch-mean'}
        See the module docstring.
    mode : {'batch', 'layerwise'}
        See the module docstring.
    mode_name : str
        The PyTensor mode to compile with (``'NUMBA'``, ``'C'``, ``'JAX'``...).
    progress : bool
        Show a tqdm progress bar (examples/s) on stderr.
    augment : callable, optional
        ``augment(x, indices)`` applied to every preprocessed batch (default: none,
        so the statistics describe the data the network is evaluated on).

    Returns
    -------
    BnStatsResult
        ``{layer name: BnLayerStats}`` in topological order, with ``passes``.

    Raises
    ------
    ValueError
        For an unknown estimator or mode, a batch size below 1, a network
        without batch-norm layers, or an empty dataset.
    """
    _check_choice(estimator, ESTIMATORS, "estimator")
    _check_choice(mode, MODES, "mode")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(
            f"compute_bn_stats: batch_size must be an integer >= 1, got {batch_size!r}"
        )
    bns = list(network.bn_layers)
    if not bns:
        raise ValueError("compute_bn_stats: the network has no batch-norm layers")
    n = len(ds)
    if n == 0:
        raise ValueError("compute_bn_stats: the dataset has no examples")
    groups = [bns] if mode == "batch" else bn_levels(bns)
    found: dict = {}
    saved = {bn: (bn.mean.get_value(), bn.inv_std.get_value()) for bn in bns}
    bar = _progress_bar(progress, n * len(groups))
    try:
        settled: list = []
        for p, targets in enumerate(groups):
            if bar is not None:
                bar.set_description(f"pass {p + 1}/{len(groups)}")
            fn = _compile_pass(network, targets, settled, mode_name, wrap)
            found.update(
                _run_pass(
                    fn, targets, _batches(ds, preprocess, batch_size, augment), estimator, bar
                )
            )
            if mode == "layerwise" and p + 1 < len(groups):
                for bn in targets:
                    load_population(bn, found[bn].mean, found[bn].var)
                settled.extend(targets)
    finally:
        for bn, (mean, inv_std) in saved.items():
            bn.mean.set_value(mean)
            bn.inv_std.set_value(inv_std)
        if bar is not None:
            bar.close()
    return BnStatsResult(((bn.name, found[bn]) for bn in bns), passes=len(groups), n_examples=n)


def load_population(bn, mean: np.ndarray, var: np.ndarray) -> None:
    """Put population statistics into ``bn``'s ``mean`` and ``inv_std`` (in memory).

    ``inv_std = 1 / sqrt(var + epsilon)`` is computed in float64 with the
    layer's own ``epsilon`` and stored as float32, so that the layer's
    inference output is ``(x - mean) / sqrt(var + epsilon) * gamma + beta``.
    """
    var = np.asarray(var, dtype=np.float64)
    bn.mean.set_value(np.asarray(mean, dtype=np.float64).astype(bn.mean.dtype))
    bn.inv_std.set_value((1.0 / np.sqrt(var + float(bn.epsilon))).astype(bn.inv_std.dtype))


def _progress_bar(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="ex", unit_scale=True, file=sys.stderr, leave=False)


# --------------------------------------------------------------------------- report


@dataclass
class LayerReport:
    """How far one layer's training moving averages were from the recomputed statistics.

    Differences are relative to the recomputed ``std = sqrt(var + epsilon)``:
    ``|mean_ema - mean| / std`` and ``|1/inv_std_ema - std| / std``, per
    channel, then the maximum and the mean over channels.
    """

    name: str
    count: int
    mean_rel_diff_max: float
    mean_rel_diff_mean: float
    std_rel_diff_max: float
    std_rel_diff_mean: float


def report_rows(network, stats) -> list[LayerReport]:
    """Compare each layer's stored moving averages with recomputed statistics.

    Parameters
    ----------
    network : bntrain.model.Network
        Its batch-norm layers hold training's moving averages.
    stats : dict
        ``{layer name: BnLayerStats}``.
    """
    rows = []
    for bn in network.bn_layers:
        s = stats[bn.name]
        std = np.sqrt(s.var + float(bn.epsilon))
        ema_mean = bn.mean.get_value().astype(np.float64)
        with np.errstate(divide="ignore"):
            ema_std = 1.0 / bn.inv_std.get_value().astype(np.float64)
        dm = np.abs(ema_mean - s.mean) / std
        ds = np.abs(ema_std - std) / std
        rows.append(
            LayerReport(
                name=bn.name,
                count=int(s.count),
                mean_rel_diff_max=float(np.max(dm)),
                mean_rel_diff_mean=float(np.mean(dm)),
                std_rel_diff_max=float(np.max(ds)),
                std_rel_diff_mean=float(np.mean(ds)),
            )
        )
    return rows
