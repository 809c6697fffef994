"""Seeing a run through the CLI: curves.png, TensorBoard events, plot, eval --details/--plot,
recompute-stats --plot."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pytest
from click.testing import CliRunner

from bntrain.cli import main

from .conftest import TINY_MLP
from .test_tblog import read_events


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def assert_picture(path, min_size=(200, 300)):
    png = mpimg.imread(path)
    assert png.shape[0] >= min_size[0] and png.shape[1] >= min_size[1]
    assert png[..., :3].std() > 0.05, "blank picture"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pictures")
    cfg = tmp / "tiny.yaml"
    cfg.write_text(TINY_MLP)
    r = run("fit", cfg, "--quiet", "--set", "training.tensorboard=true")
    assert r.exit_code == 0, r.output
    r = run("fit", cfg, "--quiet", "--set", "output.dir=run2", "--set", "training.plot=false")
    assert r.exit_code == 0, r.output
    return {"tmp": tmp, "run": tmp / "run", "run2": tmp / "run2"}


def test_fit_draws_curves_and_writes_tensorboard_events(runs):
    assert_picture(runs["run"] / "curves.png")
    assert not (runs["run2"] / "curves.png").exists()  # training.plot: false
    assert not (runs["run2"] / "tb").exists()  # tensorboard is off by default
    events = read_events(runs["run"] / "tb")
    scalars, histos = {}, set()
    for e in events:
        for v in e.summary.value:
            if v.HasField("histo"):
                histos.add(v.tag)
            else:
                scalars.setdefault(v.tag, []).append((e.step, v.simple_value))
    rows = [line.split(",") for line in (runs["run"] / "metrics.csv").read_text().splitlines()]
    header, body = rows[0], rows[1:]
    col = {k: header.index(k) for k in header}
    assert [s for s, _ in scalars["loss/train"]] == [int(r[col["step"]]) for r in body]
    np.testing.assert_allclose(
        [v for _, v in scalars["loss/val"]], [float(r[col["val_loss"]]) for r in body], rtol=1e-6
    )
    np.testing.assert_allclose(
        [v for _, v in scalars["lr"]], [float(r[col["lr"]]) for r in body], rtol=1e-6
    )
    bn_names = {"dense1_bn", "dense2_bn"}
    assert histos == {f"bn/{n}/{p}" for n in bn_names for p in ("gamma", "beta", "mean", "std")}


def test_plot_compares_runs(runs, tmp_path):
    out = tmp_path / "cmp.png"
    r = run("plot", runs["run"], runs["run2"], "-o", out, "--metric", "loss")
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"wrote {out}"
    assert_picture(out)


def test_plot_errors_are_one_line(runs, tmp_path):
    r = run("plot", tmp_path, "-o", tmp_path / "x.png")
    assert r.exit_code == 2
    assert error_line(r) == f"Error: '{tmp_path}' has no metrics.csv; is it a bntrain run folder?"
    r = run("plot", runs["run"], "-o", tmp_path / "x.jpg")
    assert r.exit_code == 2
    assert error_line(r) == f"Error: -o: '{tmp_path / 'x.jpg'}' must be a .png file"
    r = run("plot", runs["run"], "--metric", "nope", "-o", tmp_path / "x.png")
    assert r.exit_code == 2 and "Invalid value for '--metric'" in r.output


def test_eval_details_prints_the_json_numbers(runs, tmp_path):
    ckpt = runs["run"] / "best.h5"
    m = json.loads(run("eval", ckpt, "--json").output)
    r = run("eval", ckpt, "--details", "--plot", tmp_path / "cm.png")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    start = lines.index("class  examples  accuracy")
    for k, acc in enumerate(m["per_class_accuracy"]):
        cls, n, shown = lines[start + 1 + k].split()
        assert int(cls) == k and int(n) == sum(m["confusion_matrix"][k])
        assert float(shown) == pytest.approx(acc, abs=5e-5)
    matrix_at = lines.index("confusion matrix (rows: true class, columns: predicted class)")
    got = [[int(v) for v in line.split()[1:]] for line in lines[matrix_at + 2 : matrix_at + 12]]
    assert got == m["confusion_matrix"]
    assert_picture(tmp_path / "cm.png")


def test_eval_plot_needs_labels(runs, tmp_path):
    np.savez(tmp_path / "nolabels.npz", X=np.zeros((5, 64), np.float32))
    r = run(
        "eval",
        runs["run"] / "best.h5",
        "--data",
        tmp_path / "nolabels.npz",
        "--plot",
        tmp_path / "c.png",
    )
    assert r.exit_code == 2
    assert error_line(r) == (
        f"Error: --plot: {tmp_path / 'nolabels.npz'} has no labels; a confusion matrix needs them"
    )
    assert not (tmp_path / "c.png").exists()


def test_recompute_stats_plot(runs, tmp_path):
    out = tmp_path / "drift.png"
    r = run(
        "recompute-stats", runs["run"] / "last.h5", "--output", tmp_path / "x.h5", "--plot", out
    )
    assert r.exit_code == 0, r.output
    assert r.output.strip().endswith(f"; plot: {out}")
    assert_picture(out)
    r = run("recompute-stats", runs["run"] / "last.h5", "--plot", tmp_path / "d.pdf")
    assert r.exit_code == 2
    assert error_line(r) == f"Error: --plot: '{tmp_path / 'd.pdf'}' must be a .png file"
