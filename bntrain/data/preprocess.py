"""Input preprocessing: optional scaling and per-channel standardization.

Channels: an example of shape ``(D,)`` (flat data) gets one mean/std per
feature; an example with two or more axes, e.g. ``(C, H, W)``, one per index of
its first axis (the channel axis).  Statistics are computed once over the
training set, streamed in float64 with :class:`bntrain.stats.RunningMoments`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from bntrain.data.base import Dataset
from bntrain.stats import RunningMoments

__all__ = ["Preprocessor", "STD_FLOOR"]

#: Smallest standard deviation divided by (in scaled units); a constant feature maps to 0.
STD_FLOOR = 1e-6


class Preprocessor:
    """``x -> (x * scale - mean) / std`` in float32.

    Parameters
    ----------
    scale : float or None
        Multiplier applied first (e.g. ``1/255``); None means 1.
    standardize : bool
        Subtract the per-channel mean and divide by the per-channel standard
        deviation (biased, floored at :data:`STD_FLOOR`), both measured by
        :meth:`fit` on the scaled training data.

    Examples
    --------
    >>> import numpy as np
    >>> from bntrain.data import ArrayDataset
    >>> p = Preprocessor(scale=0.5, standardize=True)
    >>> p = p.fit(ArrayDataset(np.array([[0, 4], [4, 4]], dtype=np.uint8)), batch_size=1)
    >>> p.apply(np.array([[0, 4]], dtype=np.uint8)).tolist()
    [[-1.0, 0.0]]
    """

    def __init__(self, scale: float | None = None, standardize: bool = False) -> None:
        if scale is not None:
            if isinstance(scale, bool) or not isinstance(scale, int | float | np.number):
                raise TypeError(f"Preprocessor: scale must be a number or None, got {scale!r}")
            scale = float(scale)
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"Preprocessor: scale must be positive and finite, got {scale}")
        if not isinstance(standardize, bool | np.bool_):
            raise TypeError(f"Preprocessor: standardize must be a bool, got {standardize!r}")
        self.scale = scale
        self.standardize = bool(standardize)
        self.mean: np.ndarray | None = None  # float64, broadcastable to one example
        self.std: np.ndarray | None = None
        self._mean32: np.ndarray | None = None
        self._std32: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        """True when no statistics are needed or they have been computed."""
        return not self.standardize or self.mean is not None

    def fit(self, ds: Dataset, batch_size: int) -> Preprocessor:
        """Measure per-channel mean and std over ``ds`` (no-op unless ``standardize``).

        Parameters
        ----------
        ds : Dataset
            The training set, read ``batch_size`` examples at a time in stored order.
        batch_size : int
            Examples per read.

        Returns
        -------
        Preprocessor
            ``self``.
        """
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(
                f"Preprocessor.fit: batch_size must be a positive int, got {batch_size!r}"
            )
        if not self.standardize:
            return self
        shape = tuple(ds.example_shape)
        channels = shape[:1]
        axes = (0,) if len(shape) == 1 else (0, *range(2, len(shape) + 1))
        moments = RunningMoments(channels)
        for start in range(0, len(ds), int(batch_size)):
            x = self._scaled(ds.read_x(slice(start, start + int(batch_size))))
            moments.update(x, axes)
        if moments.count == 0:
            raise ValueError(f"Preprocessor.fit: dataset '{ds.name}' is empty")
        bshape = channels + (1,) * (len(shape) - 1)
        self._set_stats(moments.mean.reshape(bshape), np.sqrt(moments.var).reshape(bshape))
        return self

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Preprocess a batch ``x`` of shape ``(B, *example_shape)``; returns float32."""
        out = self._scaled(np.asarray(x))
        if not self.standardize:
            return out
        if self._mean32 is None:
            raise ValueError("Preprocessor(standardize=True): call fit() before apply()")
        nd = self._mean32.ndim
        if out.ndim != nd + 1 or out.shape[1] != self._mean32.shape[0]:
            raise ValueError(
                f"Preprocessor: batch has shape {out.shape} but the statistics were fit on "
                f"examples with {self._mean32.shape[0]} channels and {nd} axes"
            )
        out -= self._mean32
        out /= self._std32
        return out

    __call__ = apply

    def state(self) -> dict[str, np.ndarray | float | bool]:
        """Everything needed to rebuild this preprocessor (for checkpoints).

        Keys: ``scale`` (float; 1.0 when None), ``standardize`` (bool), and when
        fitted with ``standardize``, ``mean`` and ``std`` (float64 arrays shaped to
        broadcast against one example).
        """
        d: dict[str, np.ndarray | float | bool] = {
            "scale": 1.0 if self.scale is None else float(self.scale),
            "standardize": self.standardize,
        }
        if self.mean is not None and self.std is not None:
            d["mean"] = self.mean.copy()
            d["std"] = self.std.copy()
        return d

    @classmethod
    def from_state(cls, d: Mapping[str, object]) -> Preprocessor:
        """Rebuild a preprocessor from :meth:`state`'s dictionary."""
        unknown = sorted(set(d) - {"scale", "standardize", "mean", "std"})
        if unknown:
            raise ValueError(f"Preprocessor.from_state: unknown key '{unknown[0]}'")
        if "scale" not in d or "standardize" not in d:
            raise ValueError("Preprocessor.from_state: needs keys 'scale' and 'standardize'")
        scale = float(np.asarray(d["scale"]))
        p = cls(
            scale=None if scale == 1.0 else scale, standardize=bool(np.asarray(d["standardize"]))
        )
        if ("mean" in d) != ("std" in d):
            raise ValueError("Preprocessor.from_state: 'mean' and 'std' must come together")
        if "mean" in d:
            mean = np.asarray(d["mean"], dtype=np.float64)
            std = np.asarray(d["std"], dtype=np.float64)
            if mean.shape != std.shape or mean.ndim == 0:
                raise ValueError(
                    f"Preprocessor.from_state: mean {mean.shape} and std {std.shape} must have "
                    f"the same, non-scalar shape"
                )
            if not (np.all(np.isfinite(mean)) and np.all(std > 0)):
                raise ValueError("Preprocessor.from_state: mean must be finite and std positive")
            p._set_stats(mean, std)
        elif p.standardize:
            raise ValueError("Preprocessor.from_state: standardize is set but mean/std are missing")
        return p

    def _scaled(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=np.float32, copy=True, order="C")
        if self.scale is not None:
            out *= np.float32(self.scale)
        return out

    def _set_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        std = np.maximum(std, STD_FLOOR)
        self.mean, self.std = mean, std
        self._mean32 = mean.astype(np.float32)
        self._std32 = std.astype(np.float32)

    def __repr__(self) -> str:
        return f"Preprocessor(scale={self.scale!r}, standardize={self.standardize})"
