"""Pictures of a run: learning curves, batch-norm statistics drift, confusion matrices.

Every function takes plain data (rows of ``metrics.csv``, arrays) and writes
one PNG with matplotlib's non-interactive Agg backend; nothing here knows about
networks or checkpoints.  Files are written under a temporary name and renamed,
so a reader (or a browser refreshing the run folder) never sees half a picture.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError, UsageError
from .fileio import atomic_path

__all__ = [
    "CURVES_FILE",
    "METRICS",
    "LayerDrift",
    "read_metrics",
    "plot_learning_curves",
    "plot_bn_drift",
    "plot_confusion",
]

#: The learning-curve picture ``fit`` refreshes in the run folder after every epoch.
CURVES_FILE = "curves.png"
#: Metrics ``bntrain plot --metric`` accepts (columns of metrics.csv).
METRICS = ("loss", "acc", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "samples_per_sec")
_DPI = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out) -> Path:
    """Write ``fig`` to ``out`` atomically (:func:`bntrain.fileio.atomic_path`) and close it."""
    plt = _pyplot()
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=_DPI)
    except OSError as exc:
        raise UsageError(f"cannot write '{out}': {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return out


# --------------------------------------------------------------------------- learning curves


def read_metrics(run_dir) -> list[dict[str, float]]:
    """The rows of ``RUN/metrics.csv`` as floats (empty cells become NaN).

    Raises
    ------
    DataError
        If the file is missing or not a bntrain metrics file.
    """
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise DataError(f"'{run_dir}' has no metrics.csv; is it a bntrain run folder?")
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"'{path}' cannot be read: {exc}") from None
    out = []
    for i, row in enumerate(rows, start=2):
        try:
            out.append({k: float(v) if v not in ("", None) else math.nan for k, v in row.items()})
        except (TypeError, ValueError):
            raise DataError(f"'{path}' line {i}: not a number; the file is damaged") from None
    if out and "epoch" not in out[0]:
        raise DataError(f"'{path}' has no 'epoch' column; is it a bntrain metrics file?")
    return out


def _series(rows, key):
    x = np.array([r["epoch"] for r in rows], dtype=float)
    y = np.array([r.get(key, math.nan) for r in rows], dtype=float)
    return x, y


def plot_learning_curves(
    runs: Sequence[tuple[str, list[dict[str, float]]]], out, metric: str | None = None
) -> Path:
    """Draw learning curves against the epoch.

    Parameters
    ----------
    runs : sequence of (label, rows)
        Each run's ``metrics.csv`` rows (:func:`read_metrics`).
    out : path-like
        The PNG to write.
    metric : str, optional
        One of :data:`METRICS` for a single panel (``loss`` and ``acc`` draw the
        training and validation curves); default: three panels, loss, accuracy
        and learning rate.

    Returns
    -------
    Path
        ``out``.
    """
    if metric is not None and metric not in METRICS:
        raise UsageError(f"--metric must be one of {', '.join(METRICS)}; got {metric!r}")
    panels = ["loss", "acc", "lr"] if metric is None else [metric]
    titles = {"loss": "loss", "acc": "accuracy", "lr": "learning rate"}
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes[0], panels, strict=True):
        keys = [f"train_{panel}", f"val_{panel}"] if panel in ("loss", "acc") else [panel]
        for i, (label, rows) in enumerate(runs):
            color = colors[i % len(colors)]
            for key in keys:
                x, y = _series(rows, key)
                if not np.isfinite(y).any():
                    continue
                style = "--" if key.startswith("val_") else "-"
                name = key if len(runs) == 1 else f"{label} {key}"
                ax.plot(x, y, style, color=color, marker="o", markersize=3, label=name)
        ax.set_title(titles.get(panel, panel))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out)


# --------------------------------------------------------------------------- batch-norm drift


@dataclass
class LayerDrift:
    """How far training's moving averages are from the recomputed statistics, per channel.

    Attributes
    ----------
    name : str
        The batch-norm layer.
    mean_shift : ndarray
        ``(mean_ema - mean) / sqrt(var + epsilon)``: the mean difference in units
        of the recomputed standard deviation.
    var_ratio : ndarray
        ``var_ema / var``, where ``var_ema = 1 / inv_std_ema**2 - epsilon``.
    """

    name: str
    mean_shift: np.ndarray
    var_ratio: np.ndarray

    @classmethod
    def from_stats(cls, name, ema_mean, ema_inv_std, mean, var, epsilon) -> LayerDrift:
        """Build from the stored averages and the recomputed ``mean`` and ``var`` (float64)."""
        ema_mean, ema_inv_std, mean, var = (
            np.asarray(a, dtype=np.float64).ravel() for a in (ema_mean, ema_inv_std, mean, var)
        )
        std = np.sqrt(var + float(epsilon))
        with np.errstate(divide="ignore", invalid="ignore"):
            ema_var = 1.0 / ema_inv_std**2 - float(epsilon)
            ratio = ema_var / var
        return cls(name, (ema_mean - mean) / std, ratio)


def channel_offsets(n: int) -> np.ndarray:
    """Horizontal offsets of a layer's ``n`` channel dots inside its column."""
    return np.linspace(-0.3, 0.3, n) if n > 1 else np.zeros(n)


def plot_bn_drift(layers: Sequence[LayerDrift], out) -> Path:
    """Two panels, one column per batch-norm layer: mean shift and variance ratio per channel.

    Each channel is a dot; a perfect match is 0 (mean) and 1 (variance, on a log axis).
    """
    if not layers:
        raise UsageError("the network has no batch-norm layers: nothing to plot")
    plt = _pyplot()
    width = max(6.0, 0.55 * len(layers) + 2.5)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, 6.0), sharex=True)
    for i, layer in enumerate(layers):
        for ax, values in ((top, layer.mean_shift), (bottom, layer.var_ratio)):
            x = i + channel_offsets(values.size)
            keep = np.isfinite(values) & ((values > 0) if ax is bottom else True)
            ax.plot(x[keep], values[keep], "o", markersize=2.5, alpha=0.6, color="C0")
    top.axhline(0.0, color="k", lw=0.8, zorder=1)
    bottom.axhline(1.0, color="k", lw=0.8, zorder=1)
    ratios = np.concatenate([layer.var_ratio for layer in layers])
    ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
    if ratios.size and (ratios.min() < 0.5 or ratios.max() > 2.0):  # wide: log axis, plain labels
        from matplotlib.ticker import ScalarFormatter

        bottom.set_yscale("log")
        bottom.yaxis.set_major_formatter(ScalarFormatter())
    top.set_ylabel("(mean_ema - mean) / std")
    bottom.set_ylabel("var_ema / var")
    top.set_title("moving averages vs recomputed statistics (a dot per channel)", fontsize=10)
    bottom.set_xticks(range(len(layers)))
    bottom.set_xticklabels([layer.name for layer in layers], rotation=45, ha="right", fontsize=8)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out)


# --------------------------------------------------------------------------- confusion matrix


def plot_confusion(matrix, out, title: str = "confusion matrix") -> Path:
    """Draw a confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    m = np.asarray(matrix, dtype=np.int64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise UsageError(f"a confusion matrix must be square; got shape {list(m.shape)}")
    plt = _pyplot()
    n = m.shape[0]
    size = max(4.0, 0.45 * n + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(m, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if n <= 30:
        high = m.max() / 2 if m.size else 0
        for i in range(n):
            for j in range(n):
                color = "white" if m[i, j] > high else "black"
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, out)
