"""Training-time augmentation of image batches: random crops, shifts and flips, in NumPy.

Every random choice is a pure function of ``(seed, epoch, example index)``: a
64-bit counter-based hash (SplitMix64) of those three and of the choice's stream
number, never of the batch an example lands in.  Two runs with the same seed
therefore see the same augmented examples, and a run resumed inside an epoch
continues exactly.  Batches are ``(N, C, H, W)`` float32 (after preprocessing);
the random choices are drawn for the whole batch at once.

Steps, in this order (each optional):

``random_crop``
    Pad ``pad`` pixels on every side (``zeros`` or ``reflect``), then cut a
    ``size`` window at an offset drawn uniformly from every position that fits.
``random_translate``
    Shift by ``dy, dx`` drawn uniformly from ``-max .. max``, filling with zeros.
``hflip`` / ``vflip``
    Mirror left-right / upside-down with probability 1/2.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["Augmenter", "draws", "CROP_Y", "CROP_X", "HFLIP", "VFLIP", "SHIFT_Y", "SHIFT_X"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

#: Stream numbers: one independent draw per example for each random choice.
CROP_Y, CROP_X, HFLIP, VFLIP, SHIFT_Y, SHIFT_X = range(6)


def _splitmix(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def draws(seed: int, epoch: int, indices: np.ndarray, stream: int, high: int) -> np.ndarray:
    """Integers in ``0 .. high - 1``, one per example index, fixed by ``(seed, epoch, index, stream)``.

    Parameters
    ----------
    seed, epoch : int
        The run's seed and the epoch (both >= 0).
    indices : ndarray of int
        Example indices in the training set.
    stream : int
        Which random choice (one of this module's stream numbers).
    high : int
        Number of possible values (>= 1).

    Returns
    -------
    ndarray of int64
        Same length as ``indices``.
    """
    key = _splitmix(np.array([seed], dtype=np.uint64))
    key = _splitmix(key ^ np.uint64(epoch))
    key = _splitmix(key ^ np.uint64(stream))
    z = _splitmix(key ^ np.asarray(indices, dtype=np.uint64))
    return (z % np.uint64(high)).astype(np.int64)


class Augmenter:
    """Random crops, shifts and flips of ``(N, C, H, W)`` batches, deterministic per example.

    Parameters
    ----------
    seed : int
        The run's seed.
    crop : (int, int, int, str) or None
        ``(height, width, pad, mode)`` of ``random_crop``; mode ``'zeros'`` or ``'reflect'``.
    translate : int
        ``random_translate.max`` in pixels (0: off).
    hflip, vflip : bool
        Random left-right / upside-down mirroring.
    """

    def __init__(
        self,
        seed: int,
        *,
        crop: tuple[int, int, int, str] | None = None,
        translate: int = 0,
        hflip: bool = False,
        vflip: bool = False,
    ) -> None:
        if crop is not None and crop[3] not in ("zeros", "reflect"):
            raise ValueError(f"Augmenter: crop mode must be 'zeros' or 'reflect', got {crop[3]!r}")
        self.seed = int(seed)
        self.crop = crop
        self.translate = int(translate)
        self.hflip = bool(hflip)
        self.vflip = bool(vflip)

    @classmethod
    def from_config(cls, spec, seed: int) -> Augmenter | None:
        """The augmenter a ``data.augment`` section describes, or None if it does nothing."""
        if spec is None:
            return None
        c = spec.random_crop
        crop = None if c is None else (c.size[0], c.size[1], c.pad, c.mode)
        translate = 0 if spec.random_translate is None else spec.random_translate.max
        aug = cls(seed, crop=crop, translate=translate, hflip=spec.hflip, vflip=spec.vflip)
        return aug if aug.active else None

    @property
    def active(self) -> bool:
        """Whether any step is on."""
        return self.crop is not None or self.translate > 0 or self.hflip or self.vflip

    def problem(self, example_shape: Sequence[int]) -> tuple[str, str] | None:
        """``(key, message)`` if examples of this shape cannot be augmented as set, else None."""
        if len(example_shape) != 3:
            shape = tuple(int(s) for s in example_shape)
            return "", f"needs image examples (channels, height, width); these have shape {shape}"
        h, w = int(example_shape[1]), int(example_shape[2])
        if self.crop is not None:
            ch, cw, pad, mode = self.crop
            if (ch, cw) != (h, w):
                return "random_crop.size", (
                    f"[{ch}, {cw}] must equal the examples' height and width [{h}, {w}] "
                    f"(validation and test examples are not cropped); use 'pad' to vary the "
                    f"position"
                )
            if mode == "reflect" and pad >= min(h, w):
                return "random_crop.pad", (
                    f"{pad} must be smaller than the examples' height and width ({h}, {w}) "
                    f"with mode reflect"
                )
        if self.translate >= min(h, w):
            return "random_translate.max", (
                f"{self.translate} must be smaller than the examples' height and width ({h}, {w})"
            )
        return None

    def __call__(self, x: np.ndarray, indices: np.ndarray, epoch: int) -> np.ndarray:
        """Augment batch ``x`` of the examples ``indices`` in ``epoch``; returns a new float32 array."""
        x = np.array(x, dtype=np.float32)  # a copy: the flips below work in place
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) != len(x):
            raise ValueError(f"Augmenter: {len(idx)} indices for a batch of {len(x)}")
        n, _, h, w = x.shape
        if self.crop is not None:
            ch, cw, pad, mode = self.crop
            oy = draws(self.seed, epoch, idx, CROP_Y, h + 2 * pad - ch + 1)
            ox = draws(self.seed, epoch, idx, CROP_X, w + 2 * pad - cw + 1)
            x = _window(x, pad, "constant" if mode == "zeros" else "reflect", oy, ox, ch, cw)
        if self.translate:
            t = self.translate
            oy = draws(self.seed, epoch, idx, SHIFT_Y, 2 * t + 1)
            ox = draws(self.seed, epoch, idx, SHIFT_X, 2 * t + 1)
            x = _window(x, t, "constant", oy, ox, h, w)
        if self.hflip:
            flip = draws(self.seed, epoch, idx, HFLIP, 2).astype(bool)
            x[flip] = x[flip, :, :, ::-1]
        if self.vflip:
            flip = draws(self.seed, epoch, idx, VFLIP, 2).astype(bool)
            x[flip] = x[flip, :, ::-1, :]
        return np.ascontiguousarray(x)

    def __repr__(self) -> str:
        return (
            f"Augmenter(seed={self.seed}, crop={self.crop}, translate={self.translate}, "
            f"hflip={self.hflip}, vflip={self.vflip})"
        )


def _window(
    x: np.ndarray, pad: int, mode: str, oy: np.ndarray, ox: np.ndarray, h: int, w: int
) -> np.ndarray:
    """Pad ``x`` by ``pad`` on both spatial axes and cut an ``h x w`` window at each example's offset.

    One block copy per example: on a 128 x 3 x 32 x 32 batch this was over ten times faster than
    one fancy-indexed gather (which walks every element through index arrays).
    """
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode=mode)
    out = np.empty((len(x), x.shape[1], h, w), dtype=np.float32)
    for i, (r, c) in enumerate(zip(oy.tolist(), ox.tolist(), strict=True)):
        out[i] = x[i, :, r : r + h, c : c + w]
    return out
