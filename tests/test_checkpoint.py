import h5py
import numpy as np
import pytest

from bntrain import checkpoint as C
from bntrain.config import parse_config
from bntrain.errors import CheckpointError
from bntrain.model import build_network

from .conftest import TINY_MLP


@pytest.fixture
def net():
    cfg = parse_config(TINY_MLP, source="tiny.yaml")
    return build_network(cfg.model, (64,), seed=0)


def _save(path, net, **kw):
    args = dict(
        layers=net.layers,
        config_text="name: tiny\n",
        epoch=3,
        step=57,
        optimizer_state={"dense1.W.velocity": np.ones((64, 16), np.float32)},
        optimizer_attrs={"name": "nesterov", "lr": 0.05, "step": 57},
        rng_states={"dropout1": np.random.default_rng(5).bit_generator.state},
        train_state={"epoch": 3, "batch": 0, "step": 57, "best_value": 0.9, "best_epoch": 2},
        preprocess_state={"scale": 0.0625, "standardize": False},
    )
    args.update(kw)
    C.save_checkpoint(path, **args)


def test_layout_read_with_plain_h5py(tmp_path, net):
    path = tmp_path / "ck.h5"
    _save(path, net)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "bntrain-checkpoint" and f.attrs["format_version"] == 1
        assert f.attrs["epoch"] == 3 and f.attrs["step"] == 57
        assert "T" in f.attrs["created"] and f.attrs["config"] == "name: tiny\n"
        names = [n.decode() for n in f["model/layer_names"][()]]
        assert names == [l.name for l in net.layers]
        d1 = f["model/layers/dense1"]
        assert d1.attrs["type"] == "DenseLayer" and d1.attrs["incoming"] == "input"
        assert d1.attrs["num_units"] == 16 and d1.attrs["nonlinearity"] == "linear"
        assert list(d1.attrs["output_shape"]) == [-1, 16]
        assert set(d1.keys()) == {"W"} and d1["W"].shape == (64, 16)  # bias removed by batch_norm
        bn = f["model/layers/dense1_bn"]
        assert bn.attrs["type"] == "BatchNormLayer"
        assert set(bn.keys()) == {"beta", "gamma", "mean", "inv_std"}
        assert bn.attrs["epsilon"] == pytest.approx(1e-4) and bn.attrs["alpha"] == pytest.approx(
            0.1
        )
        assert f["model/layers/dense3"].attrs["nonlinearity"] == "softmax"
        assert f["model/layers/dropout1"].attrs["p"] == pytest.approx(0.2)
        np.testing.assert_array_equal(
            f["model/layers/dense1/W"][()], net.layer("dense1").W.get_value()
        )
        assert f["optimizer"].attrs["name"] == "nesterov"
        assert f["optimizer/dense1.W.velocity"].shape == (64, 16)
        assert f["rng/dropout1"].attrs["bit_generator"] == "PCG64"
        assert f["train_state"].attrs["best_epoch"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(C.TMP_PREFIX)]


def test_round_trip_into_fresh_network(tmp_path, net):
    path = tmp_path / "ck.h5"
    for p in net.layer("dense1_bn").params:
        p.set_value(np.full(p.get_value().shape, 0.25, np.float32))
    _save(path, net)
    cfg = parse_config(TINY_MLP, source="tiny.yaml")
    fresh = build_network(cfg.model, (64,), seed=99)
    ck = C.read_checkpoint(path)
    C.load_params(ck, fresh.layers)
    for a, b in zip(net.layers, fresh.layers, strict=True):
        for pa, pb in zip(a.params, b.params, strict=True):
            np.testing.assert_array_equal(pa.get_value(), pb.get_value())
    assert ck.rng["dropout1"] == np.random.default_rng(5).bit_generator.state
    assert ck.preprocess == {"scale": 0.0625, "standardize": False}


def _damage(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda f: f.attrs.__setitem__("format_version", 7),
            "has format_version 7; this bntrain (0.1.0) reads version 1",
        ),
        (
            lambda f: f.attrs.__setitem__("format", "other"),
            "is not a bntrain checkpoint (no format = 'bntrain-checkpoint' attribute)",
        ),
        (lambda f: f.attrs.__delitem__("config"), "lacks the root attribute 'config'"),
    ],
)
def test_read_refuses_damaged_files(tmp_path, net, damage, message):
    path = tmp_path / "ck.h5"
    _save(path, net)
    _damage(path, damage)
    with pytest.raises(CheckpointError) as e:
        C.read_checkpoint(path)
    assert str(e.value) == f"'{path}' {message}"


def test_strict_load_names_missing_and_misshaped_datasets(tmp_path, net):
    path = tmp_path / "ck.h5"
    _save(path, net)
    _damage(path, lambda f: f["model/layers/dense2_bn"].__delitem__("gamma"))
    with pytest.raises(CheckpointError) as e:
        C.load_params(C.read_checkpoint(path), net.layers)
    assert str(e.value) == f"'{path}' lacks the dataset /model/layers/dense2_bn/gamma"
    _save(path, net)

    def reshape(f):
        del f["model/layers/dense3/W"]
        f["model/layers/dense3"].create_dataset("W", data=np.zeros((3, 10), np.float32))

    _damage(path, reshape)
    with pytest.raises(CheckpointError) as e:
        C.load_params(C.read_checkpoint(path), net.layers)
    assert str(e.value) == f"'{path}': /model/layers/dense3/W has shape [3, 10], expected [12, 10]"


def test_truncated_and_missing_files(tmp_path, net):
    path = tmp_path / "ck.h5"
    _save(path, net)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is not a readable HDF5 checkpoint"):
        C.read_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        C.read_checkpoint(tmp_path / "nope.h5")


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path, net):
    path = tmp_path / "ck.h5"
    _save(path, net, epoch=1)

    class Boom(RuntimeError):
        pass

    def explode(_f):
        raise Boom

    with pytest.raises(Boom):
        C.atomic_write(path, explode)
    assert C.read_checkpoint(path).epoch == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.h5"]


def test_write_bn_stats_to_output_leaves_source_alone(tmp_path, net):
    src, out = tmp_path / "ck.h5", tmp_path / "out.h5"
    _save(src, net)
    stats = {"dense1_bn": (np.arange(16.0), np.ones(16)), "dense2_bn": (np.zeros(12), np.ones(12))}
    C.write_bn_stats(src, stats, {"estimator": "population"}, output=out)
    assert C.read_checkpoint(src).bn_stats is None
    ck = C.read_checkpoint(out)
    np.testing.assert_array_equal(
        ck.bn_stats["dense1_bn"]["mean"], np.arange(16.0, dtype=np.float32)
    )
    assert ck.bn_stats["dense1_bn"]["var"].dtype == np.float32
    assert ck.bn_stats_attrs["estimator"] == "population"
