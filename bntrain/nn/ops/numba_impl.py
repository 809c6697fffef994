"""Numba implementations of the convolution Ops (the default PyTensor backend).

Each Op is lowered to im2col into one contiguous buffer plus one BLAS matrix
product per channel group (``np.dot`` on float32 calls ``sgemm``):

* forward: ``cols (Cg*K, N*P)``; ``out_g = W2_g (Fg, Cg*K) @ cols``;
* grad-inputs: ``gcols = W2_g.T @ G2_g (Fg, N*P)``, scattered back by col2im;
* grad-weights: ``G2_g @ cols.T``;

with ``K`` the number of filter taps and ``P`` of output positions.  The kernels
work on three spatial axes: 1D and 2D arrays are viewed with leading size-1
spatial axes (a reshape, no copy for contiguous arrays), and the props are
padded with size-1 filters, stride 1, no padding.

Registration uses PyTensor's ``register_funcify_default_op_cache_key``: the
on-disk Numba cache key is built from the Op's props plus an integer version.
The helpers below are not part of that key, so the version is derived from a
hash of this file's source: editing the file invalidates stale cache entries.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_default_op_cache_key

from .conv import ConvNd, ConvNdGradInputs, ConvNdGradWeights

__all__ = ["CACHE_VERSION"]

#: Integer salt for the Numba cache key: changes whenever this file changes.
CACHE_VERSION = int(hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12], 16)


@numba_njit
def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@numba_njit
def _valid_range(b, p, s, size, out_size):
    """Output indices ``j`` with ``0 <= j*s + b - p < size``, as ``[j0, j1)``."""
    lo = p - b
    j0 = 0 if lo <= 0 else (lo + s - 1) // s
    hi = size - 1 + p - b
    j1 = -1 if hi < 0 else hi // s
    j1 = min(j1 + 1, out_size)
    return j0, max(j0, j1)


@numba_njit
def _patches(img, cols, k, s, p, d, o, c_lo, c_hi, scatter):
    """Walk the patches of channels ``[c_lo, c_hi)`` of the 5D ``img`` against ``cols``.

    ``cols`` has rows ``(c, a, b, e)`` (channel, filter tap) and columns
    ``(n, z, i, j)`` (example, output position).  ``scatter`` False: im2col,
    fill ``cols`` from ``img`` (zeros where a tap falls in the padding);
    True: col2im, add ``cols`` into ``img``.
    """
    n_, _, depth, h, w = img.shape
    (kd, kh, kw), (sd, sh, sw), (pd, ph, pw), (dd, dh, dw), (od, oh, ow) = k, s, p, d, o
    for c in range(c_lo, c_hi):
        for a in range(kd):
            for b in range(kh):
                for e in range(kw):
                    row = cols[(((c - c_lo) * kd + a) * kh + b) * kw + e]
                    j0, j1 = _valid_range(e * dw, pw, sw, w, ow)
                    for n in range(n_):
                        for z in range(od):
                            zz = z * sd + a * dd - pd
                            for i in range(oh):
                                base = ((n * od + z) * oh + i) * ow
                                y = i * sh + b * dh - ph
                                if zz < 0 or zz >= depth or y < 0 or y >= h:
                                    if not scatter:
                                        row[base : base + ow] = 0
                                    continue
                                line = img[n, c, zz, y]
                                if scatter:
                                    for j in range(j0, j1):
                                        line[j * sw + e * dw - pw] += row[base + j]
                                    continue
                                row[base : base + j0] = 0
                                row[base + j1 : base + ow] = 0
                                for j in range(j0, j1):
                                    row[base + j] = line[j * sw + e * dw - pw]


@numba_njit
def _im2col(x, k, s, p, d, o, c_lo, c_hi):
    """Patches of channels ``[c_lo, c_hi)`` of the 5D ``x``: rows ``(c, a, b, e)``, columns ``(n, z, i, j)``."""
    kd, kh, kw = k
    od, oh, ow = o
    cols = np.empty(((c_hi - c_lo) * kd * kh * kw, x.shape[0] * od * oh * ow), dtype=x.dtype)
    _patches(x, cols, k, s, p, d, o, c_lo, c_hi, False)
    return cols


@numba_njit
def _col2im(cols, out, k, s, p, d, o, c_lo, c_hi):
    """Scatter-add ``cols`` (layout of :func:`_im2col`) into channels ``[c_lo, c_hi)`` of ``out``."""
    _patches(out, cols, k, s, p, d, o, c_lo, c_hi, True)
    return out


@numba_njit
def _filters_2d(w, f_lo, f_hi, flip):
    """Filters ``[f_lo, f_hi)`` of the 5D ``w`` as a contiguous ``(F, Cg*K)`` matrix, flipped if asked."""
    _, c_, kd, kh, kw = w.shape
    out = np.empty((f_hi - f_lo, c_ * kd * kh * kw), dtype=w.dtype)
    for f in range(f_lo, f_hi):
        col = 0
        for c in range(c_):
            for a in range(kd):
                for b in range(kh):
                    for e in range(kw):
                        if flip:
                            out[f - f_lo, col] = w[f, c, kd - 1 - a, kh - 1 - b, kw - 1 - e]
                        else:
                            out[f - f_lo, col] = w[f, c, a, b, e]
                        col += 1
    return out


@numba_njit
def _nc_to_cn(g, f_lo, f_hi):
    """Channels ``[f_lo, f_hi)`` of ``(N, F, P)`` as a contiguous ``(F, N*P)`` matrix."""
    n_, _, size = g.shape
    out = np.empty((f_hi - f_lo, n_ * size), dtype=g.dtype)
    for f in range(f_lo, f_hi):
        for n in range(n_):
            out[f - f_lo, n * size : (n + 1) * size] = g[n, f]
    return out


@numba_njit
def _cn_into_nc(m, out, f_lo):
    """Write the ``(F, N*P)`` matrix ``m`` into channels ``f_lo...`` of ``out`` ``(N, F, P)``."""
    n_, _, size = out.shape
    for f in range(m.shape[0]):
        for n in range(n_):
            out[n, f_lo + f] = m[f, n * size : (n + 1) * size]


@numba_njit
def _check(ok, message):
    if not ok:
        raise ValueError(message)


def _expanders(ndim):
    """Numba functions viewing an ``ndim``-spatial array as 3-spatial, and a 3-spatial one back."""
    if ndim == 3:

        @numba_njit
        def to5(a):
            return np.ascontiguousarray(a)

        @numba_njit
        def back(a):
            return a

    elif ndim == 2:

        @numba_njit
        def to5(a):
            s = a.shape
            return np.ascontiguousarray(a).reshape((s[0], s[1], 1, s[2], s[3]))

        @numba_njit
        def back(a):
            s = a.shape
            return a.reshape((s[0], s[1], s[3], s[4]))

    else:

        @numba_njit
        def to5(a):
            s = a.shape
            return np.ascontiguousarray(a).reshape((s[0], s[1], 1, 1, s[2]))

        @numba_njit
        def back(a):
            s = a.shape
            return a.reshape((s[0], s[1], s[4]))

    return to5, back


def _props(op):
    """The Op's props as one int64 array: stride, pad, dilation (padded to 3 axes), flip, groups.

    An array rather than int constants: Numba types captured ints as literals and
    would compile every helper anew for each stride or pad; an array's entries
    are plain ints, so the helpers compile once per dtype.
    """
    lead = 3 - op.ndim
    return np.array(
        (1,) * lead
        + op.stride
        + (0,) * lead
        + op.pad
        + (1,) * lead
        + op.dilation
        + (int(op.filter_flip), op.num_groups),
        dtype=np.int64,
    )


@numba_njit
def _unpack(props):
    s = (props[0], props[1], props[2])
    p = (props[3], props[4], props[5])
    d = (props[6], props[7], props[8])
    return s, p, d, props[9] != 0, props[10]


@numba_njit
def _out_shape(x_shape, w_shape, s, p, d):
    return (
        _out_size(x_shape[2], w_shape[2], s[0], p[0], d[0]),
        _out_size(x_shape[3], w_shape[3], s[1], p[1], d[1]),
        _out_size(x_shape[4], w_shape[4], s[2], p[2], d[2]),
    )


@numba_njit
def _consistent(x_shape, w_shape, g_shape, o, groups):
    """Whether input, filters and output gradient (all 5D) fit together."""
    return (
        x_shape[1] == w_shape[1] * groups
        and w_shape[0] % groups == 0
        and g_shape[0] == x_shape[0]
        and g_shape[1] == w_shape[0]
        and g_shape[2] == o[0]
        and g_shape[3] == o[1]
        and g_shape[4] == o[2]
        and o[0] > 0
        and o[1] > 0
        and o[2] > 0
    )


@numba_njit
def _grad_geometry(x_shape, w_shape, g5, s, p, d, groups, ok, message):
    """Output size, filter size and the output gradient ``g5`` as ``(N, F, P)``, for a gradient.

    Raises ``ValueError(message)`` unless ``ok`` and the shapes fit together.
    """
    o = _out_shape(x_shape, w_shape, s, p, d)
    _check(ok and _consistent(x_shape, w_shape, g5.shape, o, groups), message)
    k = (w_shape[2], w_shape[3], w_shape[4])
    g3 = g5.reshape((g5.shape[0], g5.shape[1], o[0] * o[1] * o[2]))
    return o, k, g3


@register_funcify_default_op_cache_key(ConvNd)
def numba_funcify_ConvNd(op, node, **kwargs):
    """Forward convolution: im2col + one GEMM per group."""
    props = _props(op)
    to5, back = _expanders(op.ndim)

    @numba_njit
    def conv(x, w):
        s, p, d, flip, groups = _unpack(props)
        x5, w5 = to5(x), to5(w)
        n_, c_ = x5.shape[0], x5.shape[1]
        f_, cg = w5.shape[0], w5.shape[1]
        _check(
            c_ == cg * groups and f_ % groups == 0,
            "ConvNd: input and filters have inconsistent channel counts",
        )
        o = _out_shape(x5.shape, w5.shape, s, p, d)
        _check(
            o[0] > 0 and o[1] > 0 and o[2] > 0,
            "ConvNd: input (with padding) is smaller than the filter",
        )
        k = (w5.shape[2], w5.shape[3], w5.shape[4])
        fg = f_ // groups
        out = np.empty((n_, f_, o[0] * o[1] * o[2]), dtype=x5.dtype)
        for gi in range(groups):
            cols = _im2col(x5, k, s, p, d, o, gi * cg, (gi + 1) * cg)
            res = np.dot(_filters_2d(w5, gi * fg, (gi + 1) * fg, flip), cols)
            _cn_into_nc(res, out, gi * fg)
        return back(out.reshape((n_, f_, o[0], o[1], o[2])))

    return conv, CACHE_VERSION


@register_funcify_default_op_cache_key(ConvNdGradInputs)
def numba_funcify_ConvNdGradInputs(op, node, **kwargs):
    """Gradient w.r.t. the input: one GEMM per group + col2im."""
    props = _props(op)
    to5, back = _expanders(op.ndim)

    @numba_njit
    def conv_grad_inputs(w, g, x_ref):
        s, p, d, flip, groups = _unpack(props)
        w5, g5, r5 = to5(w), to5(g), to5(x_ref)
        n_, f_, cg = g5.shape[0], w5.shape[0], w5.shape[1]
        x_shape = (n_, cg * groups, r5.shape[2], r5.shape[3], r5.shape[4])
        o, k, g3 = _grad_geometry(
            x_shape, w5.shape, g5, s, p, d, groups, True, "ConvNdGradInputs: inconsistent shapes"
        )
        fg = f_ // groups
        out = np.zeros(x_shape, dtype=g5.dtype)
        for gi in range(groups):
            wm = _filters_2d(w5, gi * fg, (gi + 1) * fg, flip)
            gcols = np.dot(wm.T, _nc_to_cn(g3, gi * fg, (gi + 1) * fg))
            _col2im(gcols, out, k, s, p, d, o, gi * cg, (gi + 1) * cg)
        return back(out)

    return conv_grad_inputs, CACHE_VERSION


@register_funcify_default_op_cache_key(ConvNdGradWeights)
def numba_funcify_ConvNdGradWeights(op, node, **kwargs):
    """Gradient w.r.t. the filters: im2col + one GEMM per group."""
    props = _props(op)
    to5, back = _expanders(op.ndim)

    @numba_njit
    def conv_grad_weights(x, g, w_ref):
        s, p, d, flip, groups = _unpack(props)
        x5, g5, r5 = to5(x), to5(g), to5(w_ref)
        c_, f_ = x5.shape[1], g5.shape[1]
        cg, fg = c_ // groups, f_ // groups
        w_shape = (f_, cg, r5.shape[2], r5.shape[3], r5.shape[4])
        ok = c_ % groups == 0
        message = "ConvNdGradWeights: inconsistent shapes"
        o, k, g3 = _grad_geometry(x5.shape, w_shape, g5, s, p, d, groups, ok, message)
        gw = np.empty((f_, cg * k[0] * k[1] * k[2]), dtype=x5.dtype)
        for gi in range(groups):
            cols = _im2col(x5, k, s, p, d, o, gi * cg, (gi + 1) * cg)
            gw[gi * fg : (gi + 1) * fg] = np.dot(_nc_to_cn(g3, gi * fg, (gi + 1) * fg), cols.T)
        gw5 = gw.reshape(w_shape)
        if flip:
            gw5 = np.ascontiguousarray(gw5[:, :, ::-1, ::-1, ::-1])
        return back(gw5)

    return conv_grad_weights, CACHE_VERSION
