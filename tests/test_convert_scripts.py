"""Tests of scripts/convert_mnist.py and scripts/convert_cifar10.py on tiny fake inputs."""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import h5py
import numpy as np
import pytest

from bntrain.data import open_dataset

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bntrain_script_{name}", SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mnist() -> ModuleType:
    return _load("convert_mnist")


@pytest.fixture(scope="module")
def cifar() -> ModuleType:
    return _load("convert_cifar10")


# ----------------------------------------------------------------------------- MNIST


def _idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def _fake_mnist(folder: Path, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    folder.mkdir(parents=True, exist_ok=True)
    parts = {}
    for stem, n, gz in (("train", 7, True), ("t10k", 4, False)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        for kind, arr in (("images-idx3-ubyte", x), ("labels-idx1-ubyte", y)):
            data = _idx_bytes(arr)
            if gz:
                (folder / f"{stem}-{kind}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / f"{stem}-{kind}").write_bytes(data)
        parts[stem] = (x, y)
    return parts


def test_mnist_round_trip(tmp_path: Path, mnist: ModuleType, capsys: pytest.CaptureFixture) -> None:
    parts = _fake_mnist(tmp_path / "idx", np.random.default_rng(0))
    assert mnist.main([str(tmp_path / "idx"), str(tmp_path / "out")]) == 0
    assert "mnist_train.h5" in capsys.readouterr().out
    for part, stem in (("train", "train"), ("test", "t10k")):
        x, y = parts[stem]
        with open_dataset({"path": f"out/mnist_{part}.h5"}, tmp_path, "data") as ds:
            xs, ys = ds.read(slice(None))
            assert xs.dtype == np.uint8 and xs.shape == (len(x), 784)
            assert np.array_equal(xs, x.reshape(len(x), 784)) and np.array_equal(ys, y)
        with h5py.File(tmp_path / "out" / f"mnist_{part}.h5") as f:
            assert f["X"].compression == "gzip" and f["X"].chunks is not None
            assert f["y"].dtype == np.int64
    assert mnist.main([str(tmp_path / "idx"), str(tmp_path / "img"), "--images"]) == 0
    with open_dataset({"path": str(tmp_path / "img" / "mnist_test.h5")}, None, "data") as ds:
        assert ds.example_shape == (1, 28, 28)
        assert np.array_equal(ds.read_x(slice(None)), parts["t10k"][0][:, None])


def test_read_idx_handles_wider_types(tmp_path: Path, mnist: ModuleType) -> None:
    arr = (np.arange(12) - 5).astype(">i4").reshape(3, 4)
    (tmp_path / "a.idx").write_bytes(_idx_bytes(arr, 0x0C))
    out = mnist.read_idx(tmp_path / "a.idx")
    assert out.dtype == np.dtype("int32") and out.dtype.isnative
    assert np.array_equal(out, arr)


@pytest.mark.parametrize("damage", ["truncated", "magic", "missing"])
def test_mnist_bad_input(
    tmp_path: Path, mnist: ModuleType, damage: str, capsys: pytest.CaptureFixture
) -> None:
    _fake_mnist(tmp_path / "idx", np.random.default_rng(1))
    target = tmp_path / "idx" / "t10k-images-idx3-ubyte"
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[:-10])
        expected = "needs 3136 (truncated?)"
    elif damage == "magic":
        target.write_bytes(b"\x08\x03" + target.read_bytes()[2:])
        expected = "is not an IDX file (bad magic number)"
    else:
        target.unlink()
        expected = "has no t10k-images-idx3-ubyte (or t10k-images-idx3-ubyte.gz)"
    assert mnist.main([str(tmp_path / "idx"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "mnist_train.h5").exists()


def test_mnist_unwritable_output_is_exit_1(
    tmp_path: Path, mnist: ModuleType, capsys: pytest.CaptureFixture
) -> None:
    _fake_mnist(tmp_path / "idx", np.random.default_rng(1))
    (tmp_path / "out").write_text("a file where the output folder should be")
    assert mnist.main([str(tmp_path / "idx"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_mnist_script_runs_as_a_program(tmp_path: Path) -> None:
    _fake_mnist(tmp_path / "idx", np.random.default_rng(2))
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "convert_mnist.py"), str(tmp_path / "idx"), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "mnist_train.h5").is_file() and (tmp_path / "mnist_test.h5").is_file()


# ----------------------------------------------------------------------------- CIFAR-10


def _cifar_pickle(data: np.ndarray, labels: list[int], numpy1_names: bool) -> bytes:
    batch = {
        b"batch_label": b"fake batch",
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    # Protocol 3 stores bytes natively and globals as text, like the Python 2 originals.
    raw = pickle.dumps(batch, protocol=3)
    if numpy1_names:  # the module name the real (NumPy 1) files use
        raw = raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
        assert b"numpy.core.multiarray" in raw
    return raw


def _fake_cifar(folder: Path, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = 2 + i % 3
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        (folder / name).write_bytes(_cifar_pickle(data, labels, numpy1_names=i % 2 == 0))
        xs.append(data.reshape(n, 3, 32, 32))
        ys.append(np.array(labels))
    return {
        "train": (np.concatenate(xs[:5]), np.concatenate(ys[:5])),
        "test": (xs[5], ys[5]),
        "test_rows": data,  # the test batch's rows as pickled: 1024 red, green, blue values
    }


def test_cifar_round_trip(tmp_path: Path, cifar: ModuleType) -> None:
    parts = _fake_cifar(tmp_path / "cifar-10-batches-py", np.random.default_rng(3))
    # the parent folder of cifar-10-batches-py is accepted too
    assert cifar.main([str(tmp_path), str(tmp_path / "out")]) == 0
    for part in ("train", "test"):
        x, y = parts[part]
        with open_dataset({"path": f"out/cifar10_{part}.h5"}, tmp_path, "data") as ds:
            xs, ys = ds.read(slice(None))
            assert ds.example_shape == (3, 32, 32) and xs.dtype == np.uint8
            assert np.array_equal(xs, x) and np.array_equal(ys, y)
    # channel layout of the converted file: a pickled row is 1024 red, 1024 green, 1024 blue
    # values, each channel row-major over 32 x 32 pixels
    rows = parts["test_rows"]
    with open_dataset({"path": "out/cifar10_test.h5"}, tmp_path, "data") as ds:
        xs, _ = ds.read(slice(None))
    for channel in range(3):
        for r, c in ((0, 0), (0, 31), (5, 7), (31, 0), (31, 31)):
            assert xs[1, channel, r, c] == rows[1, 1024 * channel + 32 * r + c]


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_cifar_refuses_pickles_with_other_globals(
    tmp_path: Path, cifar: ModuleType, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "c"
    _fake_cifar(folder, np.random.default_rng(4))
    marker = tmp_path / "pwned"
    (folder / "test_batch").write_bytes(
        pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=3)
    )
    assert cifar.main([str(folder), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "test_batch': refusing to load global '" in err
    assert f"{os.system.__module__}.system'" in err
    assert not marker.exists()
    assert not (tmp_path / "out" / "cifar10_test.h5").exists()


def test_cifar_bad_batch_contents(tmp_path: Path, cifar: ModuleType) -> None:
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, 3))
    with pytest.raises(cifar.ConvertError, match="rows of 100 values, expected 3072"):
        cifar.load_batch(path)
    path.write_bytes(b"garbage")
    with pytest.raises(cifar.ConvertError, match="unreadable pickle"):
        cifar.load_batch(path)
