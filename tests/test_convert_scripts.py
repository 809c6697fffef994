"""Tests of scripts/convert_mnist.py and scripts/convert_cifar10.py on tiny fake inputs."""

from __future__ import annotations

import gzip
import importlib.util
import io
import struct
import subprocess
import sys
import tarfile
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


def _fake_cifar_archive(path: Path, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    """A cifar-10-binary.tar.gz with records <label><1024 R><1024 G><1024 B>."""
    members, xs, ys = {}, [], []
    for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        n = 2 + i % 3
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        members[f"cifar-10-batches-bin/{name}"] = np.column_stack([labels, data]).tobytes()
        xs.append(data.reshape(n, 3, 32, 32))
        ys.append(labels.astype(np.int64))
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return {
        "train": (np.concatenate(xs[:5]), np.concatenate(ys[:5])),
        "test": (xs[5], ys[5]),
        "test_rows": data,  # the test batch's rows as pickled: 1024 red, green, blue values
    }


def test_cifar_round_trip(tmp_path: Path, cifar: ModuleType) -> None:
    parts = _fake_cifar_archive(tmp_path / "cifar-10-binary.tar.gz", np.random.default_rng(3))
    assert cifar.main([str(tmp_path / "cifar-10-binary.tar.gz"), str(tmp_path / "out")]) == 0
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


@pytest.mark.parametrize("damage", ["short", "garbage", "member", "label"])
def test_cifar_bad_archive(
    tmp_path: Path, cifar: ModuleType, damage: str, capsys: pytest.CaptureFixture
) -> None:
    archive = tmp_path / "cifar-10-binary.tar.gz"
    records = {f"cifar-10-batches-bin/data_batch_{k}.bin": bytes(3073) for k in range(1, 6)}
    records["cifar-10-batches-bin/test_batch.bin"] = bytes(3073)
    if damage == "short":
        records["cifar-10-batches-bin/test_batch.bin"] = bytes(3000)
        expected = "'cifar-10-batches-bin/test_batch.bin' has 3000 bytes, not a whole number"
    elif damage == "member":
        del records["cifar-10-batches-bin/data_batch_3.bin"]
        expected = "has no member 'cifar-10-batches-bin/data_batch_3.bin'"
    elif damage == "label":
        records["cifar-10-batches-bin/data_batch_1.bin"] = bytes([10]) + bytes(3072)
        expected = "label 10 is outside [0, 10)"
    else:
        expected = "cannot read"
    if damage == "garbage":
        archive.write_bytes(b"not an archive")
    else:
        with tarfile.open(archive, "w:gz") as tar:
            for name, raw in records.items():
                info = tarfile.TarInfo(name)
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
    assert cifar.main([str(archive), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cifar_script_loads_no_pickle() -> None:
    text = (SCRIPTS / "convert_cifar10.py").read_text()
    assert "pickle" not in text.replace("no pickle is ever loaded", "")
