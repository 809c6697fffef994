"""`bntrain fit` and `bntrain check` end to end on tiny digits runs (CliRunner, temporary folders)."""

import csv
import math

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from bntrain.cli import main
from bntrain.config import load_config
from bntrain.errors import TrainingError
from bntrain.train import METRICS_COLUMNS, fit

from .conftest import h5_datasets


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run shared by the read-only tests below."""
    from .conftest import TINY_MLP

    folder = tmp_path_factory.mktemp("fit")
    cfg = folder / "tiny.yaml"
    cfg.write_text(TINY_MLP)
    result = run("fit", cfg, "--quiet")
    assert result.exit_code == 0, result.output
    return folder, result


def test_run_folder_contents(trained):
    folder, result = trained
    run_dir = folder / "run"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".bntrain-run",  # the marker: bntrain created this folder
        ".bntrain.lock",  # the lock file (unlocked: the run is over)
        "best.bn_stats.json",
        "best.h5",
        "config.yaml",
        "curves.png",  # training.plot: redrawn every epoch
        "last.bn_stats.json",
        "last.h5",
        "metrics.csv",
    ]
    assert f"run folder: {run_dir}" in result.output
    assert "test accuracy: " in result.output


def test_metrics_csv_has_a_row_per_epoch(trained):
    folder, _ = trained
    with open(folder / "run" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0].keys()) == METRICS_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    per_epoch = 1258 // 64  # shuffled: the last partial batch is dropped
    assert [int(r["step"]) for r in rows] == [per_epoch, 2 * per_epoch]
    for epoch, r in enumerate(rows, start=1):
        # TINY_MLP's schedule: cosine from lr 0.05 to 0 over 2 epochs; the row's lr is the
        # lr of the epoch's last step (0-based index step - 1)
        t = (epoch * per_epoch - 1) / (2 * per_epoch)
        assert float(r["lr"]) == pytest.approx(0.05 * (1 + math.cos(math.pi * t)) / 2, rel=1e-5)
        assert 0.5 <= float(r["val_acc"]) <= 1 and 0 < float(r["val_loss"]) < math.log(10)
        assert 0 < float(r["train_loss"]) < math.log(10) and 0.3 <= float(r["train_acc"]) <= 1
        assert float(r["epoch_seconds"]) > 0
        assert float(r["samples_per_sec"]) == pytest.approx(
            per_epoch * 64 / float(r["epoch_seconds"]), rel=1e-3
        )
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])


def test_run_config_is_resolved_and_loads_again(trained):
    folder, _ = trained
    text = (folder / "run" / "config.yaml").read_text()
    run_info = yaml.safe_load(text)["run"]
    assert run_info["seed"] == 3 and run_info["backend"] == "jax" and run_info["device"] == "cpu"
    assert set(run_info["versions"]) >= {"bntrain", "pytensor", "jax", "numpy", "python"}
    with open("/proc/cpuinfo") as fh:  # the processor's model, as the kernel names it
        models = {ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")}
    assert run_info["device_name"] in models
    again = load_config(folder / "run" / "config.yaml")
    assert again.training.optimizer.lr == 0.05 and again.model.batch_norm.alpha == 0.1


def _population_reference(path, x):
    """TINY_MLP's BN inputs over the training set, batch mode (batches of 64 in stored order,
    each normalized with its own statistics), from the checkpoint's arrays; float64."""
    with h5py.File(path, "r") as f:
        a = {k: f[f"model/layers/{k}"] for k in ("dense1", "dense1_bn", "dense2")}
        W1, W2 = a["dense1"]["W"][()], a["dense2"]["W"][()]
        gamma, beta = a["dense1_bn"]["gamma"][()], a["dense1_bn"]["beta"][()]
    x = x.reshape(len(x), -1).astype(np.float64) * 0.0625  # preprocess.scale
    h1 = [x[i : i + 64] @ W1 for i in range(0, len(x), 64)]
    h2 = []
    for h in h1:
        z = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-4) * gamma + beta  # epsilon from the YAML
        h2.append(np.maximum(z, 0) @ W2)  # relu; dropout is off at inference
    return {name: np.concatenate(hs) for name, hs in (("dense1_bn", h1), ("dense2_bn", h2))}


def test_checkpoints_carry_population_statistics(trained):
    from bntrain.data import open_dataset

    folder, _ = trained
    train = open_dataset({"builtin": "digits", "split": "train"}, None, "data.train")
    x, _ = train.read(slice(0, len(train)))
    train.close()
    for name in ("best.h5", "last.h5"):
        path = folder / "run" / name
        inputs = _population_reference(path, x)
        with h5py.File(path, "r") as f:
            assert set(f["bn_stats"].keys()) == {"dense1_bn", "dense2_bn"}
            attrs = f["bn_stats"].attrs
            assert (attrs["estimator"], attrs["mode"]) == ("population", "batch")
            assert attrs["n_examples"] == 1258 and attrs["batch_size"] == 64
            for layer, h in inputs.items():
                mean, var = f[f"bn_stats/{layer}/mean"][()], f[f"bn_stats/{layer}/var"][()]
                np.testing.assert_allclose(mean, h.mean(0), rtol=1e-4, atol=1e-5, err_msg=layer)
                np.testing.assert_allclose(var, h.var(0), rtol=1e-4, atol=1e-6, err_msg=layer)
                # the moving averages are another thing: they stay as training left them
                ema = f[f"model/layers/{layer}/mean"][()]
                assert not np.allclose(ema, mean, rtol=1e-3)
            assert f.attrs["epoch"] in (1, 2)
    with h5py.File(folder / "run" / "last.h5", "r") as f:
        assert f.attrs["epoch"] == 2


def test_existing_run_folder_is_never_overwritten(trained):
    folder, _ = trained
    before = (folder / "run" / "last.h5").read_bytes()
    result = run("fit", folder / "tiny.yaml", "--quiet")
    assert result.exit_code == 2
    assert result.output == (
        f"Error: run folder '{folder / 'run'}' already exists; pass --force to replace it, "
        f"or --resume {folder / 'run'} to continue it\n"
    )
    assert (folder / "run" / "last.h5").read_bytes() == before


def test_check_prints_layers_without_training(trained):
    folder, _ = trained
    result = run("check", folder / "tiny.yaml")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["layer", "type", "inputs", "output", "shape", "params"]
    assert lines[1].split() == ["input", "InputLayer", "-", "(N,", "64)", "0"]
    assert lines[2].split() == ["dense1", "DenseLayer", "input", "(N,", "16)", str(64 * 16)]
    assert lines[3].split() == ["dense1_bn", "BatchNormLayer", "dense1", "(N,", "16)", "64"]
    total = 64 * 16 + 4 * 16 + 16 * 12 + 4 * 12 + 12 * 10 + 10
    trainable = total - 2 * 16 - 2 * 12  # the batch-norm mean and inv_std are not trained
    assert lines[-1] == (
        f"total parameters: {total} ({total / 1e6:.2f}M); trainable: {trainable} "
        f"({trainable / 1e6:.2f}M)"
    )


def test_print_config_fills_defaults(tiny_config_file):
    result = run("fit", tiny_config_file, "--print-config", "--set", "training.optimizer.lr=1e-3")
    assert result.exit_code == 0
    printed = yaml.safe_load(result.output)
    assert printed["training"]["optimizer"]["lr"] == 0.001
    assert printed["training"]["nan_policy"] == "stop"
    assert not (tiny_config_file.parent / "run").exists()


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["fit", "missing.yaml"], 2, "Error: config file 'missing.yaml' not found"),
        (
            ["fit", "{cfg}", "--set", "training.optimizer.lrr=0.1"],
            2,
            "Error: --set training.optimizer.lrr=0.1: unknown key (did you mean 'lr'?)",
        ),
        (
            ["fit", "{cfg}", "--set", "training.batch_size=5000"],
            2,
            "Error: data.train: 1258 examples are fewer than training.batch_size (5000); "
            "lower training.batch_size",
        ),
        (
            ["fit", "{cfg}", "--set", "model.input_shape=[1, 9, 9]"],
            2,
            "Error: data.train: examples have shape [64] but model.input_shape is [1, 9, 9]; "
            "fix model.input_shape or the data",
        ),
        (
            ["fit", "{cfg}", "--device", "gpu"],
            2,
            "Error: device gpu requested but JAX sees no GPU; install the CUDA plugin with "
            "pip install 'bntrain[gpu]', or use --device cpu",
        ),
        (
            ["fit", "{cfg}", "--resume", "{dir}/nothing"],
            2,
            "Error: --resume: '{dir}/nothing/last.h5' not found; is '{dir}/nothing' a bntrain run folder?",
        ),
    ],
)
def test_errors_are_one_line_with_exit_code(tiny_config_file, args, code, message):
    folder = tiny_config_file.parent
    args = [a.format(cfg=tiny_config_file, dir=folder) for a in args]
    result = run(*args)
    assert result.exit_code == code
    assert result.output == message.format(dir=folder) + "\n"
    assert not (folder / "run").exists()


def _arrays(path):
    out = h5_datasets(path)
    with h5py.File(path, "r") as f:
        out["lr"] = f["optimizer"].attrs["lr"]
        out["step"] = f.attrs["step"]
    return {k: v for k, v in out.items() if not k.startswith("bn_stats")}


def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path):
    """4 epochs straight == 2 epochs, interrupted, resumed for 2 more (cosine schedule, dropout on)."""
    from .conftest import TINY_MLP

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(TINY_MLP)
    sets = ["training.epochs=4", "training.recompute_stats=false"]
    straight = load_config(cfg_path, [*sets, "output.dir=straight"])
    fit(straight)

    def interrupt_after_epoch_2(line):
        if line.startswith("epoch 2/4"):
            raise KeyboardInterrupt

    broken = load_config(cfg_path, [*sets, "output.dir=broken"])
    with pytest.raises(KeyboardInterrupt):
        fit(broken, log=interrupt_after_epoch_2)
    result = run(
        "fit",
        cfg_path,
        "--quiet",
        *[f"--set={s}" for s in sets],
        "--set",
        "output.dir=broken",
        "--resume",
        tmp_path / "broken",
    )
    assert result.exit_code == 0, result.output
    a, b = _arrays(tmp_path / "straight" / "last.h5"), _arrays(tmp_path / "broken" / "last.h5")
    assert sorted(a) == sorted(b)
    assert any(k.startswith("optimizer/") for k in a)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    with open(tmp_path / "broken" / "metrics.csv") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2", "3", "4"]


def test_resume_refuses_a_different_config(tmp_path):
    from .conftest import TINY_MLP

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(TINY_MLP)
    fit(load_config(cfg_path, ["training.epochs=1", "training.recompute_stats=false"]))
    result = run(
        "fit",
        cfg_path,
        "--quiet",
        "--set",
        "training.optimizer.lr=0.1",
        "--resume",
        tmp_path / "run",
    )
    assert result.exit_code == 2
    assert result.output == (
        "Error: --resume: the config differs from the run's at training.optimizer.lr "
        "(run: 0.05, now: 0.1); only training.epochs, training.checkpoint_every_steps, training.plot, training.tensorboard may change when resuming\n"
    )


def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    import bntrain.train as T

    real = T.build_train_step

    def poisoned(*args, **kwargs):
        step = real(*args, **kwargs)
        calls = {"n": 0}
        inner = step.fn

        def fn(x, y):
            calls["n"] += 1
            loss, acc = inner(x, y)
            return (np.float32("nan") if calls["n"] == 25 else loss), acc

        step.fn = fn
        return step

    monkeypatch.setattr(T, "build_train_step", poisoned)
    from .conftest import TINY_MLP

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(TINY_MLP)
    with pytest.raises(TrainingError) as e:
        fit(load_config(cfg_path, ["training.epochs=3"]))
    last = tmp_path / "run" / "last.h5"
    assert str(e.value) == (
        f"loss became NaN/Inf at epoch 2, step 25; training stopped and the last good checkpoint is "
        f"'{last}'; try a lower training.optimizer.lr or training.optimizer.grad_clip_norm"
    )
    with h5py.File(last, "r") as f:
        assert f.attrs["epoch"] == 1


@pytest.mark.parametrize(
    "setting, message",
    [
        (
            "training.batch_size=5000",
            "Error: data.train: 1258 examples are fewer than training.batch_size (5000); "
            "lower training.batch_size",
        ),
        (
            "data.val_split=0.5",  # the check counts the examples left after the split
            "Error: data.train: 629 examples are fewer than training.batch_size (1000); "
            "lower training.batch_size",
        ),
        (
            "training.batch_size=1",
            "Error: training.batch_size: 1 cannot train batch normalization (a batch of one "
            "example has no variance); use 2 or more",
        ),
    ],
)
@pytest.mark.parametrize("command", ["check", "fit"])
def test_check_and_fit_refuse_a_batch_size_alike(tiny_config_file, command, setting, message):
    sets = ["--set", setting]
    if setting.startswith("data.val_split"):
        sets += ["--set", "data.val=null", "--set", "training.batch_size=1000"]
    result = run(command, tiny_config_file, *sets)
    assert result.exit_code == 2
    assert result.output == message + "\n"
    assert not (tiny_config_file.parent / "run").exists()


@pytest.mark.parametrize("args", [["fit"], ["fit", "--force"], ["check"]])
def test_output_dir_naming_a_file_is_one_error_line(tiny_config_file, args):
    folder = tiny_config_file.parent
    (folder / "run").write_text("not a folder\n")
    result = run(*args, tiny_config_file)
    assert result.exit_code == 2
    assert result.output == (
        f"Error: run folder '{folder / 'run'}' is a file, not a folder; choose another output.dir\n"
    )
    assert (folder / "run").read_text() == "not a folder\n"


def test_fit_out_of_memory_names_the_batch_size_setting(tiny_config_file, monkeypatch):
    import bntrain.commands.fit

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(bntrain.commands.fit, "fit", exhausted)
    result = run("fit", tiny_config_file, "--quiet")
    assert result.exit_code == 1
    assert result.output == (
        "Error: out of memory; try a smaller training.batch_size (--set training.batch_size=N)\n"
    )
