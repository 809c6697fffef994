"""Pictures tested by content: size, not blank, and data drawn where the axes say it is."""

from __future__ import annotations

import math

import matplotlib.image as mpimg
import numpy as np
import pytest

from bntrain import plots
from bntrain.errors import DataError, UsageError

BLUE = np.array([0x1F, 0x77, 0xB4]) / 255  # matplotlib's C0
ORANGE = np.array([0xFF, 0x7F, 0x0E]) / 255  # C1


@pytest.fixture
def figures(monkeypatch):
    """Keep each figure plots._save writes, to map data coordinates to pixels."""
    kept = []
    original = plots._save

    def keep(fig, out):
        kept.append(fig)
        return original(fig, out)

    monkeypatch.setattr(plots, "_save", keep)
    return kept


def pixel(png, fig, ax, x, y):
    """The RGB of ``png`` at data point (x, y) of ``ax``."""
    dx, dy = ax.transData.transform((x, y))
    height = png.shape[0]
    return png[int(round(height - dy)), int(round(dx)), :3]


def near(png, fig, ax, x, y, color, radius=3, tol=0.12):
    """True if a pixel within ``radius`` of (x, y) has ``color``."""
    dx, dy = ax.transData.transform((x, y))
    r0, c0 = int(round(png.shape[0] - dy)), int(round(dx))
    box = png[r0 - radius : r0 + radius + 1, c0 - radius : c0 + radius + 1, :3]
    return bool((np.abs(box - color).max(axis=-1) < tol).any())


def rows(n=10, offset=0.0):
    out = []
    for e in range(1, n + 1):
        out.append(
            {
                "epoch": e,
                "step": 10 * e,
                "lr": 0.1 * 0.5 * (1 + math.cos(math.pi * (e - 1) / n)),
                "train_loss": 2.0 / e + offset,
                "train_acc": 1 - 0.5 / e,
                "val_loss": 2.2 / e + offset,
                "val_acc": 1 - 0.6 / e,
                "epoch_seconds": 1.0,
                "samples_per_sec": 1000.0,
            }
        )
    return out


def test_learning_curves_draw_each_point_where_it_belongs(tmp_path, figures):
    data = rows()
    out = plots.plot_learning_curves([("run", data)], tmp_path / "c.png")
    png = mpimg.imread(out)
    fig = figures[0]
    w, h = fig.get_size_inches() * plots._DPI
    assert png.shape[:2] == (round(h), round(w))
    assert png[..., :3].std() > 0.05  # not blank
    loss_ax, acc_ax, lr_ax = fig.axes
    for r in (data[0], data[4], data[9]):
        assert near(png, fig, loss_ax, r["epoch"], r["train_loss"], BLUE)
        assert near(png, fig, acc_ax, r["epoch"], r["val_acc"], BLUE)
        assert near(png, fig, lr_ax, r["epoch"], r["lr"], BLUE)
    # and not where it does not belong: above the loss curve
    assert not near(png, fig, loss_ax, 5, data[4]["train_loss"] + 0.6, BLUE)


def test_comparing_runs_gives_each_its_color(tmp_path, figures):
    a, b = rows(), rows(offset=0.5)
    out = plots.plot_learning_curves([("a", a), ("b", b)], tmp_path / "c.png", metric="loss")
    png = mpimg.imread(out)
    (ax,) = figures[0].axes
    assert near(png, figures[0], ax, 3, a[2]["train_loss"], BLUE)
    assert near(png, figures[0], ax, 3, b[2]["train_loss"], ORANGE)
    assert not near(png, figures[0], ax, 3, b[2]["train_loss"], BLUE, radius=1)


def test_unknown_metric_is_refused(tmp_path):
    with pytest.raises(UsageError, match=r"--metric must be one of .*; got 'acc_val'"):
        plots.plot_learning_curves([("a", rows())], tmp_path / "c.png", metric="acc_val")


def test_read_metrics(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,step,lr,train_loss,val_loss\n1,5,0.1,2.0,\n")
    got = plots.read_metrics(tmp_path)
    assert got[0]["epoch"] == 1 and got[0]["train_loss"] == 2.0 and math.isnan(got[0]["val_loss"])
    with pytest.raises(DataError, match="has no metrics.csv"):
        plots.read_metrics(tmp_path / "nope")
    (tmp_path / "metrics.csv").write_text("epoch,lr\n1,abc\n")
    with pytest.raises(DataError, match="line 2: not a number"):
        plots.read_metrics(tmp_path)


def test_layer_drift_formulas():
    eps = 0.01
    d = plots.LayerDrift.from_stats(
        "bn",
        ema_mean=[1.0, 0.0],
        ema_inv_std=[0.5, 2.0],
        mean=[0.5, 0.0],
        var=[3.99, 0.24],
        epsilon=eps,
    )
    np.testing.assert_allclose(d.mean_shift, [0.5 / 2.0, 0.0])
    np.testing.assert_allclose(d.var_ratio, [(4 - eps) / 3.99, (0.25 - eps) / 0.24])


def test_bn_drift_plot_puts_each_channel_in_its_layer_column(tmp_path, figures):
    layers = [
        plots.LayerDrift("conv1_bn", np.array([0.5, -0.25]), np.array([2.0, 0.5])),
        plots.LayerDrift("dense1_bn", np.array([1.0]), np.array([1.5])),
    ]
    png = mpimg.imread(plots.plot_bn_drift(layers, tmp_path / "d.png"))
    top, bottom = figures[0].axes
    dot = 0.6 * BLUE + 0.4  # alpha 0.6 on white
    for i, layer in enumerate(layers):
        xs = i + plots.channel_offsets(layer.mean_shift.size)
        for x, m, v in zip(xs, layer.mean_shift, layer.var_ratio, strict=True):
            assert near(png, figures[0], top, x, m, dot, radius=1, tol=0.08)
            assert near(png, figures[0], bottom, x, v, dot, radius=1, tol=0.08)
        assert not near(png, figures[0], top, i, 0.2, dot, radius=2, tol=0.08)
    with pytest.raises(UsageError, match="no batch-norm layers"):
        plots.plot_bn_drift([], tmp_path / "e.png")


def test_confusion_matrix_cells_are_shaded_by_count(tmp_path, figures):
    m = np.array([[9, 0, 1], [0, 8, 0], [2, 0, 7]])
    png = mpimg.imread(plots.plot_confusion(m, tmp_path / "m.png"))
    (ax, _colorbar) = figures[0].axes
    dark = pixel(png, figures[0], ax, 0.3, 0.3)  # off the centred count text
    light = pixel(png, figures[0], ax, 1.3, 0.3)
    assert dark.sum() < 1.0 and light.sum() > 2.7  # 9 -> dark blue, 0 -> white
    with pytest.raises(UsageError, match="must be square"):
        plots.plot_confusion(np.ones((2, 3)), tmp_path / "x.png")
