"""data.augment through fit, check and recompute-stats: reproducible, resumable, explained."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import bntrain.train as T
from bntrain.bnstats import compute_bn_stats
from bntrain.checkpoint import read_checkpoint
from bntrain.cli import main
from bntrain.config import load_config
from bntrain.data import ArrayDataset, Augmenter
from bntrain.inputs import open_config_data
from bntrain.restore import restore
from bntrain.train import fit

from .conftest import TINY_MLP, h5_datasets
from .test_reliability import _interrupt_at_call

AUGMENT = "{random_crop: {size: [8, 8], pad: 1, mode: reflect}, hflip: true, vflip: true}"
CONFIG = TINY_MLP.replace(
    "  preprocess: {scale: 0.0625}\n",
    f"  preprocess: {{scale: 0.0625}}\n  augment: {AUGMENT}\n",
).replace("model:\n", "model:\n  input_shape: [1, 8, 8]\n")
BASE = ["training.recompute_stats=false", "training.checkpoint_every_steps=7"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def error_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture(scope="module")
def cfg_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("aug") / "aug.yaml"
    path.write_text(CONFIG)
    return path


def config(cfg_path, out, *sets):
    return load_config(cfg_path, [*BASE, *sets, f"output.dir={out}"])


@pytest.fixture(scope="module")
def straight(cfg_path):
    fit(config(cfg_path, "straight"))
    return cfg_path.parent / "straight"


def test_same_seed_gives_the_same_run(cfg_path, straight):
    fit(config(cfg_path, "again"))
    a, b = h5_datasets(straight / "last.h5"), h5_datasets(cfg_path.parent / "again" / "last.h5")
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_training_batches_are_the_augmented_ones_and_no_lr_is_sent_per_step(cfg_path, monkeypatch):
    seen, sets, steps = [], [], []
    real = T.build_train_step

    def build(*args, **kwargs):
        step = real(*args, **kwargs)
        inner, set_counter = step.fn, step.counter.set_value
        step.fn = lambda x, y: (seen.append(x.copy()), inner(x, y))[1]
        step.counter.set_value = lambda v: (sets.append(v), set_counter(v))[1]
        steps.append(step)
        return step

    monkeypatch.setattr(T, "build_train_step", build)
    cfg = config(cfg_path, "seen", "training.epochs=1", "training.schedule.name=cosine")
    fit(cfg)
    # the rates live in the compiled graph: nothing is sent to the device per step
    assert sets == [] and len(steps[0].lr_table) == len(seen)
    assert int(steps[0].counter.get_value()) == len(seen)
    data = open_config_data(cfg, which=("train",))
    it = T.BatchIterator(data.train, 64, shuffle=True, seed=3, epoch=0, drop_last=True)
    aug = Augmenter.from_config(cfg.data.augment, 3)
    idx = it.batch_indices(4)
    x, _ = data.train.read(idx)
    np.testing.assert_array_equal(seen[4], aug(x * np.float32(0.0625), idx, 0))
    data.close()


def test_resume_with_augmentation_is_bit_exact(cfg_path, straight, monkeypatch):
    with monkeypatch.context() as mp:
        mp.setattr(T, "build_train_step", _interrupt_at_call(26))
        with pytest.raises(KeyboardInterrupt):
            fit(config(cfg_path, "killed"))
    run_dir = cfg_path.parent / "killed"
    assert read_checkpoint(run_dir / "last.h5").step == 21  # mid epoch 2
    fit(config(cfg_path, str(run_dir)), resume=run_dir)
    a, b = h5_datasets(straight / "last.h5"), h5_datasets(run_dir / "last.h5")
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_crop_of_another_size_is_refused_before_training(cfg_path, tmp_path):
    for command in ("check", "fit"):
        result = run(
            command,
            cfg_path,
            "--set=data.augment.random_crop.size=[6, 6]",
            f"--set=output.dir={tmp_path / 'out'}",
        )
        assert error_line(result, 2) == (
            "Error: data.augment.random_crop.size: [6, 6] must equal the examples' height and "
            "width [8, 8] (validation and test examples are not cropped); use 'pad' to vary "
            "the position"
        )
    assert not (tmp_path / "out").exists()


def test_flat_examples_are_refused(tmp_path):
    path = tmp_path / "flat.yaml"
    path.write_text(TINY_MLP.replace("  preprocess:", "  augment: {hflip: true}\n  preprocess:"))
    assert error_line(run("check", path), 2) == (
        "Error: data.augment: needs image examples (channels, height, width); these have "
        "shape (64,)"
    )


def test_a_misspelt_option_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(CONFIG.replace("hflip: true", "hflp: true"))
    assert "data.augment.hflp: unknown key (did you mean 'hflip'?)" in error_line(
        run("check", path), 2
    )


def test_recompute_stats_augments_only_when_asked(cfg_path, straight, tmp_path):
    src = straight / "last.h5"
    plain, augd = tmp_path / "plain.h5", tmp_path / "augd.h5"
    assert run("recompute-stats", src, "--output", plain, "-q").exit_code == 0
    assert run("recompute-stats", src, "--output", augd, "-q", "--augment").exit_code == 0
    assert read_checkpoint(augd).bn_stats_attrs["augmented"] is True
    # reference: the statistics of the training set augmented beforehand (as in epoch 0)
    r = restore(src)
    data = open_config_data(r.config, which=("train",))
    x, _ = data.train.read(slice(0, len(data.train)))
    data.close()
    x = r.preprocess.apply(x)
    aug = Augmenter.from_config(r.config.data.augment, r.config.training.seed)
    ds = ArrayDataset(aug(x, np.arange(len(x)), 0))
    want = compute_bn_stats(r.network, ds, None, 64)
    for name, s in read_checkpoint(augd).bn_stats.items():
        np.testing.assert_allclose(s["mean"], want[name].mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s["var"], want[name].var, rtol=1e-5, atol=1e-6)
    p, a = read_checkpoint(plain).bn_stats, read_checkpoint(augd).bn_stats
    assert any(not np.allclose(p[k]["var"], a[k]["var"]) for k in p)


def test_recompute_stats_augment_needs_a_config_with_augment(tmp_path, cfg_path, straight):
    plain = tmp_path / "plain"
    sets = [*BASE, "data.augment=null", "training.epochs=1", f"output.dir={plain}"]
    fit(load_config(cfg_path, sets))
    result = run("recompute-stats", plain / "last.h5", "--augment", "--output", tmp_path / "x.h5")
    assert error_line(result, 2) == (
        f"Error: --augment: the config stored in '{plain / 'last.h5'}' has no data.augment; "
        f"leave out --augment"
    )
