"""Spatial transformer layers (part of ``lasagne.layers.special``).

Both layers resample a 4D ``(batch, channel, row, col)`` input at coordinates
produced by a localization network: :class:`TransformerLayer` with an affine
map (Jaderberg et al., 2015), :class:`TPSTransformerLayer` with a thin-plate
spline through a grid of control points (Bookstein, 1989).  Coordinates run
from -1 to 1 over the input; values are interpolated bilinearly, and points
outside the input follow ``border_mode``.
"""

from __future__ import annotations

import math

import numpy as np
import pytensor.tensor as pt

from .. import utils
from .base import MergeLayer
from .special import _check_kwargs, _label

__all__ = ["TransformerLayer", "TPSTransformerLayer"]

_BORDER_MODES = ("nearest", "mirror", "wrap")


def _check_common(layer, downsample_factor, border_mode, loc_units, what: str):
    """Validate the input and localization shapes, the factor and the border mode."""
    where = _label(type(layer).__name__, layer.name)
    input_shape, loc_shape = layer.input_shapes
    if len(input_shape) != 4:
        raise ValueError(
            f"{where}: the input must be 4D (batch, channel, row, col), got shape {input_shape!r}"
        )
    if len(loc_shape) != 2 or loc_shape[1] != loc_units:
        raise ValueError(
            f"{where}: the localization network must output shape (batch, {loc_units}) "
            f"({what}), got {loc_shape!r}"
        )
    factors = utils.as_tuple(downsample_factor, 2)
    if any(not f > 0 for f in factors):
        raise ValueError(f"{where}: downsample_factor must be positive, got {downsample_factor!r}")
    if border_mode not in _BORDER_MODES:
        raise ValueError(
            f"{where}: border_mode must be one of {', '.join(_BORDER_MODES)}, got {border_mode!r}"
        )
    return factors


def _output_shape(input_shape, factors):
    return tuple(input_shape[:2]) + tuple(
        None if s is None else int(s / f) for s, f in zip(input_shape[2:], factors, strict=True)
    )


def _out_size(size, factor):
    """The symbolic output size ``int(size / factor)``."""
    return pt.cast(pt.cast(size, "float64") / factor, "int64")


def _grid(out_h, out_w, dtype):
    """The output grid as two flat vectors ``(x, y)`` in [-1, 1], x varying fastest."""

    def linspace(n):
        n_f = pt.cast(n, dtype)
        return pt.cast(pt.arange(n), dtype) * (2 / pt.maximum(n_f - 1, 1)) - 1

    x = pt.tile(linspace(out_w), (out_h,))
    y = pt.repeat(linspace(out_h), out_w)
    return x, y


def _border(index, size, border_mode):
    """Map integer-valued float coordinates onto ``[0, size - 1]``."""
    if border_mode == "nearest":
        return pt.clip(index, 0, size - 1)
    if border_mode == "wrap":
        return pt.mod(index, size)
    period = 2 * (size - 1)  # mirror: reflect at both ends without repeating the edge
    return pt.minimum(pt.mod(index, period), pt.mod(-index, period))


def _sample(input, x, y, out_h, out_w, border_mode):
    """Bilinear interpolation of ``input`` at ``(x, y)``, each ``(batch, out_h * out_w)``."""
    batch, channels, height, width = (input.shape[i] for i in range(4))
    dtype = input.dtype
    height_f, width_f = pt.cast(height, dtype), pt.cast(width, dtype)
    x = (x.flatten() + 1) / 2 * (width_f - 1)
    y = (y.flatten() + 1) / 2 * (height_f - 1)
    x0, y0 = pt.floor(x), pt.floor(y)
    flat = input.dimshuffle(0, 2, 3, 1).reshape((-1, channels))
    offset = pt.repeat(pt.arange(batch, dtype="int64") * height * width, out_h * out_w)
    output = 0
    for cx, wx in ((x0, x0 + 1 - x), (x0 + 1, x - x0)):
        for cy, wy in ((y0, y0 + 1 - y), (y0 + 1, y - y0)):
            col = pt.cast(_border(cx, width_f, border_mode), "int64")
            row = pt.cast(_border(cy, height_f, border_mode), "int64")
            output = output + (wx * wy).dimshuffle(0, "x") * flat[offset + row * width + col]
    return output.reshape((batch, out_h, out_w, channels)).dimshuffle(0, 3, 1, 2)


class TransformerLayer(MergeLayer):
    """Spatial transformer with an affine map.

    Output pixel ``(x_t, y_t)`` (both in [-1, 1]) takes the input's value at
    ``theta @ (x_t, y_t, 1)``, with ``theta`` the localization network's
    output reshaped to ``(batch, 2, 3)``; ``[1, 0, 0, 0, 1, 0]`` is the identity.

    Parameters
    ----------
    incoming : Layer or tuple
        The 4D input to transform.
    localization_network : Layer
        Outputs ``(batch, 6)``: the affine parameters per example.
    downsample_factor : float or tuple of 2 floats
        The output has ``int(rows / f0)`` rows and ``int(cols / f1)`` columns.
    border_mode : 'nearest', 'mirror' or 'wrap'
        Where points outside the input sample: the nearest edge, the input
        reflected at its edges, or the input repeated.
    **kwargs
        ``name``.

    Raises
    ------
    ValueError
        For a non-4D input, a localization output not ``(batch, 6)``, or an
        unknown ``border_mode``.
    """

    def __init__(
        self, incoming, localization_network, downsample_factor=1, border_mode="nearest", **kwargs
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__([incoming, localization_network], **kwargs)
        self.downsample_factor = _check_common(
            self, downsample_factor, border_mode, 6, "the 6 affine parameters"
        )
        self.border_mode = border_mode

    def get_output_shape_for(self, input_shapes):
        return _output_shape(input_shapes[0], self.downsample_factor)

    def get_output_for(self, inputs, **kwargs):
        """Return the input resampled on the transformed grid."""
        input, theta = inputs
        dtype = input.dtype
        out_h = _out_size(input.shape[2], self.downsample_factor[0])
        out_w = _out_size(input.shape[3], self.downsample_factor[1])
        theta = pt.cast(theta, dtype).reshape((-1, 2, 3))
        x_t, y_t = _grid(out_h, out_w, dtype)
        grid = pt.stack([x_t, y_t, pt.ones_like(x_t)])  # (3, points)
        source = pt.tensordot(theta, grid, axes=[[2], [0]])  # (batch, 2, points)
        return _sample(input, source[:, 0], source[:, 1], out_h, out_w, self.border_mode)


def _tps_kernel(r2):
    """Bookstein's radial basis ``U = r**2 log(r**2)`` (0 at r = 0), NumPy or symbolic."""
    if isinstance(r2, np.ndarray):
        return r2 * np.log(np.maximum(r2, 1e-30))
    return r2 * pt.log(pt.maximum(r2, np.asarray(1e-30, r2.dtype)))


def _tps_features(x, y, control, lib):
    """``[U(|p - c_i|) for each control point c_i; 1; x; y]`` for points ``p``: ``(n + 3, points)``."""
    r2 = (x[None, :] - control[0][:, None]) ** 2 + (y[None, :] - control[1][:, None]) ** 2
    ones = lib.ones_like(x)[None, :]
    return lib.concatenate([_tps_kernel(r2), ones, x[None, :], y[None, :]], axis=0)


class TPSTransformerLayer(MergeLayer):
    """Spatial transformer with a thin-plate spline.

    The control points form a regular ``k x k`` grid over [-1, 1]^2
    (``control_points = k**2``).  The localization network outputs one
    ``(dx, dy)`` offset per control point, as ``(batch, 2 * control_points)``
    (all x offsets, then all y offsets); output pixel ``p`` samples the input
    at ``f(p)``, the thin-plate spline with ``f(c_i) = c_i + offset_i``.  Zero
    offsets give the identity.

    Parameters
    ----------
    incoming : Layer or tuple
        The 4D input to transform.
    localization_network : Layer
        Outputs ``(batch, 2 * control_points)``.
    downsample_factor : float or tuple of 2 floats
        As for :class:`TransformerLayer`.
    control_points : int
        The number of control points, a perfect square.
    precompute_grid : 'auto' or bool
        Compute the spline basis on the output grid once, in NumPy (needs the
        input's rows and columns known); ``'auto'``: when they are known.
    border_mode : 'nearest', 'mirror' or 'wrap'
        As for :class:`TransformerLayer`.
    **kwargs
        ``name``.

    Raises
    ------
    ValueError
        For a non-4D input, a localization output not ``(batch, 2 *
        control_points)``, ``control_points`` not a perfect square,
        ``precompute_grid=True`` with unknown sizes, or an unknown ``border_mode``.
    """

    def __init__(
        self,
        incoming,
        localization_network,
        downsample_factor=1,
        control_points=16,
        precompute_grid="auto",
        border_mode="nearest",
        **kwargs,
    ) -> None:
        _check_kwargs(type(self).__name__, kwargs)
        super().__init__([incoming, localization_network], **kwargs)
        where = _label(type(self).__name__, self.name)
        self.downsample_factor = _check_common(
            self,
            downsample_factor,
            border_mode,
            2 * control_points,
            f"an (x, y) offset for each of the {control_points} control points",
        )
        self.border_mode = border_mode
        side = math.isqrt(control_points) if control_points > 0 else 0
        if side < 2 or side * side != control_points:
            raise ValueError(
                f"{where}: control_points must be a perfect square of at least 4, "
                f"got {control_points!r}"
            )
        self.control_points = control_points
        out_shape = _output_shape(self.input_shapes[0], self.downsample_factor)
        known = None not in out_shape[2:]
        if precompute_grid is True and not known:
            raise ValueError(
                f"{where}: precompute_grid=True needs the input's rows and columns known, "
                f"got input shape {self.input_shapes[0]!r}"
            )
        self.precompute_grid = known if precompute_grid == "auto" else bool(precompute_grid)

        axis = np.linspace(-1, 1, side)
        cx, cy = np.meshgrid(axis, axis)
        self.source_points = np.stack([cx.ravel(), cy.ravel()])  # (2, n)
        n = control_points
        system = np.zeros((n + 3, n + 3))
        system[:n, :n] = _tps_kernel(
            (cx.ravel()[:, None] - cx.ravel()[None, :]) ** 2
            + (cy.ravel()[:, None] - cy.ravel()[None, :]) ** 2
        )
        system[:n, n] = system[n, :n] = 1
        system[:n, n + 1] = system[n + 1, :n] = self.source_points[0]
        system[:n, n + 2] = system[n + 2, :n] = self.source_points[1]
        # coefficients (w_1..w_n, a_1, a_x, a_y) = inverse[:, :n] @ targets; symmetric
        self.right_mat = np.linalg.inv(system)[:n, :]  # (n, n + 3)
        self._grid_features = None
        if self.precompute_grid:
            out_h, out_w = out_shape[2:]
            x = np.tile(np.linspace(-1, 1, out_w), out_h)
            y = np.repeat(np.linspace(-1, 1, out_h), out_w)
            self._grid_features = _tps_features(x, y, self.source_points, np)

    def get_output_shape_for(self, input_shapes):
        return _output_shape(input_shapes[0], self.downsample_factor)

    def get_output_for(self, inputs, **kwargs):
        """Return the input resampled on the spline-transformed grid."""
        input, offsets = inputs
        dtype = input.dtype
        out_h = _out_size(input.shape[2], self.downsample_factor[0])
        out_w = _out_size(input.shape[3], self.downsample_factor[1])
        n = self.control_points
        source = pt.constant(self.source_points.astype(dtype))
        targets = source[None] + pt.cast(offsets, dtype).reshape((-1, 2, n))  # (batch, 2, n)
        coefficients = pt.tensordot(targets, self.right_mat.astype(dtype), axes=[[2], [0]])
        if self._grid_features is not None:
            features = pt.constant(self._grid_features.astype(dtype))
        else:
            x_t, y_t = _grid(out_h, out_w, dtype)
            features = _tps_features(x_t, y_t, source, pt)
        mapped = pt.tensordot(coefficients, features, axes=[[2], [0]])  # (batch, 2, points)
        return _sample(input, mapped[:, 0], mapped[:, 1], out_h, out_w, self.border_mode)
