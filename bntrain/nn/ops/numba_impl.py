"""Numba implementations of the convolution Ops (the default PyTensor backend).

Each Op is lowered to im2col into one contiguous buffer plus a single BLAS
matrix product (``np.dot`` on float32 calls ``sgemm``):

* forward: ``cols (C*kh*kw, N*OH*OW)``; ``out = W2 (F, C*kh*kw) @ cols``;
* grad-inputs: ``gcols = W2.T @ G2 (F, N*OH*OW)``, scattered back by col2im;
* grad-weights: ``G2 @ cols.T``.

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

from .conv import Conv2d, Conv2dGradInputs, Conv2dGradWeights

__all__ = ["CACHE_VERSION"]

#: Integer salt for the Numba cache key: changes whenever this file changes.
CACHE_VERSION = int(hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12], 16)


@numba_njit
def _out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


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
def _im2col(x, kh, kw, sh, sw, ph, pw, oh, ow):
    """Patches of ``x`` as rows ``(c, a, b)`` by columns ``(n, i, j)``."""
    n_, c_, h, w = x.shape
    cols = np.empty((c_ * kh * kw, n_ * oh * ow), dtype=x.dtype)
    for c in range(c_):
        for a in range(kh):
            for b in range(kw):
                row = cols[(c * kh + a) * kw + b]
                j0, j1 = _valid_range(b, pw, sw, w, ow)
                for n in range(n_):
                    for i in range(oh):
                        base = (n * oh + i) * ow
                        y = i * sh + a - ph
                        if y < 0 or y >= h:
                            row[base : base + ow] = 0
                            continue
                        row[base : base + j0] = 0
                        row[base + j1 : base + ow] = 0
                        src = x[n, c, y]
                        for j in range(j0, j1):
                            row[base + j] = src[j * sw + b - pw]
    return cols


@numba_njit
def _col2im(cols, out, kh, kw, sh, sw, ph, pw, oh, ow):
    """Scatter-add ``cols`` (layout of :func:`_im2col`) into the zeroed ``out``."""
    n_, c_, h, w = out.shape
    for c in range(c_):
        for a in range(kh):
            for b in range(kw):
                row = cols[(c * kh + a) * kw + b]
                j0, j1 = _valid_range(b, pw, sw, w, ow)
                for n in range(n_):
                    for i in range(oh):
                        y = i * sh + a - ph
                        if y < 0 or y >= h:
                            continue
                        base = (n * oh + i) * ow
                        dst = out[n, c, y]
                        for j in range(j0, j1):
                            dst[j * sw + b - pw] += row[base + j]
    return out


@numba_njit
def _filters_2d(w, flip):
    """Filters ``(F, C, kh, kw)`` as a contiguous ``(F, C*kh*kw)`` matrix, flipped if asked."""
    f_, c_, kh, kw = w.shape
    out = np.empty((f_, c_ * kh * kw), dtype=w.dtype)
    for f in range(f_):
        for c in range(c_):
            for a in range(kh):
                for b in range(kw):
                    if flip:
                        out[f, (c * kh + a) * kw + b] = w[f, c, kh - 1 - a, kw - 1 - b]
                    else:
                        out[f, (c * kh + a) * kw + b] = w[f, c, a, b]
    return out


@numba_njit
def _nchw_to_cn(g):
    """``(N, F, OH, OW)`` -> contiguous ``(F, N*OH*OW)``."""
    n_, f_, oh, ow = g.shape
    out = np.empty((f_, n_ * oh * ow), dtype=g.dtype)
    for f in range(f_):
        for n in range(n_):
            base = n * oh * ow
            for i in range(oh):
                for j in range(ow):
                    out[f, base + i * ow + j] = g[n, f, i, j]
    return out


@numba_njit
def _cn_to_nchw(m, n_, oh, ow):
    """Contiguous ``(F, N*OH*OW)`` -> ``(N, F, OH, OW)``."""
    f_ = m.shape[0]
    out = np.empty((n_, f_, oh, ow), dtype=m.dtype)
    for n in range(n_):
        base = n * oh * ow
        for f in range(f_):
            for i in range(oh):
                for j in range(ow):
                    out[n, f, i, j] = m[f, base + i * ow + j]
    return out


@numba_njit
def _check(ok, message):
    if not ok:
        raise ValueError(message)


@numba_njit
def _grad_out_shape(x_shape, w_shape, g_shape, sh, sw, ph, pw):
    """The forward output's ``(oh, ow)`` if ``g`` fits the input and filters, else ``(-1, -1)``."""
    n_, c_, h, wd = x_shape
    f_, c2, kh, kw = w_shape
    oh = _out_size(h, kh, sh, ph)
    ow = _out_size(wd, kw, sw, pw)
    ok = g_shape[0] == n_ and g_shape[1] == f_ and g_shape[2] == oh and g_shape[3] == ow
    if ok and c_ == c2:
        return oh, ow
    return -1, -1


def _props(op):
    (sh, sw), (ph, pw) = op.stride, op.pad
    return sh, sw, ph, pw, op.filter_flip


@register_funcify_default_op_cache_key(Conv2d)
def numba_funcify_Conv2d(op, node, **kwargs):
    """Forward convolution: im2col + one GEMM."""
    sh, sw, ph, pw, flip = _props(op)

    @numba_njit
    def conv2d(x, w):
        n_, c_, h, wd = x.shape
        _, c2, kh, kw = w.shape
        _check(c_ == c2, "Conv2d: input and filters have different channel counts")
        oh = _out_size(h, kh, sh, ph)
        ow = _out_size(wd, kw, sw, pw)
        _check(oh > 0 and ow > 0, "Conv2d: input (with padding) is smaller than the filter")
        cols = _im2col(x, kh, kw, sh, sw, ph, pw, oh, ow)
        res = np.dot(_filters_2d(w, flip), cols)
        return _cn_to_nchw(res, n_, oh, ow)

    return conv2d, CACHE_VERSION


@register_funcify_default_op_cache_key(Conv2dGradInputs)
def numba_funcify_Conv2dGradInputs(op, node, **kwargs):
    """Gradient w.r.t. the input: one GEMM + col2im."""
    sh, sw, ph, pw, flip = _props(op)

    @numba_njit
    def conv2d_grad_inputs(w, g, x_ref):
        n_, c_, h, wd = x_ref.shape
        f_, c2, kh, kw = w.shape
        oh, ow = _grad_out_shape(x_ref.shape, w.shape, g.shape, sh, sw, ph, pw)
        _check(oh >= 0, "Conv2dGradInputs: inconsistent shapes")
        gcols = np.dot(_filters_2d(w, flip).T, _nchw_to_cn(g))
        out = np.zeros((n_, c_, h, wd), dtype=gcols.dtype)
        return _col2im(gcols, out, kh, kw, sh, sw, ph, pw, oh, ow)

    return conv2d_grad_inputs, CACHE_VERSION


@register_funcify_default_op_cache_key(Conv2dGradWeights)
def numba_funcify_Conv2dGradWeights(op, node, **kwargs):
    """Gradient w.r.t. the filters: im2col + one GEMM."""
    sh, sw, ph, pw, flip = _props(op)

    @numba_njit
    def conv2d_grad_weights(x, g, w_ref):
        n_, c_, h, wd = x.shape
        f_, c2, kh, kw = w_ref.shape
        oh, ow = _grad_out_shape(x.shape, w_ref.shape, g.shape, sh, sw, ph, pw)
        _check(oh >= 0, "Conv2dGradWeights: inconsistent shapes")
        cols = _im2col(x, kh, kw, sh, sw, ph, pw, oh, ow)
        gw = np.dot(_nchw_to_cn(g), cols.T).reshape((f_, c_, kh, kw))
        if flip:
            return np.ascontiguousarray(gw[:, :, ::-1, ::-1])
        return gw

    return conv2d_grad_weights, CACHE_VERSION
