"""Tests of bntrain.data (datasets, validation, preprocessing, batches) and bntrain.stats."""

from __future__ import annotations

import gc
import gzip
import hashlib
import io
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

import bntrain.data.base as base_mod
import bntrain.data.datasets as dsmod
import bntrain.data.open as open_mod
from bntrain.data import (
    DIGITS_SHA256,
    ArrayDataset,
    BatchIterator,
    Dataset,
    Preprocessor,
    digits_split_indices,
    load_digits,
    open_dataset,
    split_indices,
    validate_dataset,
    write_hdf5_dataset,
)
from bntrain.errors import ConfigError, DataError
from bntrain.stats import RunningMoments

DIGITS_FILE = Path(dsmod.__file__).with_name("digits.csv.gz")
W = "data.train"


def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """Independent reading of the CSV (the oracle for the loader)."""
    with gzip.open(DIGITS_FILE, "rt") as fh:
        rows = [[int(v) for v in line.split(",")] for line in fh if line.strip()]
    table = np.array(rows)
    return table[:, :64], table[:, 64]


def _h5(path: Path, **arrays: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return path


def _open(tmp_path: Path, name: str, **spec: object) -> Dataset:
    return open_dataset({"path": name, **spec}, tmp_path, W)


def _msg(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    return str(excinfo.value)


@pytest.fixture(scope="module")
def rng_x() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3, 4, 4)).astype(np.float32)
    y = rng.integers(0, 10, size=50)
    return x, y


@pytest.fixture()
def h5_file(tmp_path: Path, rng_x: tuple[np.ndarray, np.ndarray]) -> Path:
    x, y = rng_x
    (tmp_path / "data").mkdir()
    return _h5(tmp_path / "data" / "x.h5", X=x, y=y)


# ----------------------------------------------------------------------------- digits


def test_digits_file_is_sklearns_copy_with_known_hash() -> None:
    raw = DIGITS_FILE.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == DIGITS_SHA256
    sk = Path(sys.prefix, "lib", "python3.12", "site-packages", "sklearn", "datasets", "data")
    if (sk / "digits.csv.gz").exists():
        assert (sk / "digits.csv.gz").read_bytes() == raw
    assert DIGITS_FILE.with_name("DIGITS_LICENSE.txt").read_text().count("BSD 3-Clause") == 1


def test_digits_splits_sizes_disjoint_stratified_deterministic() -> None:
    x_raw, y_raw = _raw_digits()
    assert x_raw.shape == (1797, 64)
    parts = {s: digits_split_indices(s) for s in ("train", "val", "test")}
    counts = np.bincount(y_raw)
    expected_train = sum(round(0.7 * c) for c in counts)
    expected_val = sum(round(0.1 * c) for c in counts)
    assert len(parts["train"]) == expected_train
    assert len(parts["val"]) == expected_val
    assert len(parts["test"]) == 1797 - expected_train - expected_val
    every = np.concatenate(list(parts.values()))
    assert np.array_equal(np.sort(every), np.arange(1797))  # disjoint and complete
    for s, idx in parts.items():
        assert np.all(np.diff(idx) > 0)
        assert np.array_equal(idx, digits_split_indices(s))  # deterministic
    # stratified: every class keeps its share (within one example of rounding)
    train_counts = np.bincount(y_raw[parts["train"]], minlength=10)
    assert np.all(np.abs(train_counts - 0.7 * counts) <= 0.5)
    assert np.array_equal(digits_split_indices("all"), np.arange(1797))


def test_digits_dataset_content_matches_csv() -> None:
    x_raw, y_raw = _raw_digits()
    for split in ("val", "all"):
        ds = open_dataset(SimpleNamespace(builtin="digits", split=split, path=None), None, W)
        idx = digits_split_indices(split)
        x, y = ds.read(slice(None))
        assert x.dtype == np.uint8 and y.dtype == np.int64
        assert ds.example_shape == (64,) and ds.x_dtype == np.uint8 and ds.has_labels
        assert np.array_equal(x, x_raw[idx]) and np.array_equal(y, y_raw[idx])
        assert x.max() == 16 and x.min() == 0
    assert len(open_dataset({"builtin": "digits"}, None, W)) == 1797  # split None = all
    assert load_digits("test").name == "builtin:digits[test]"


def test_data_package_imports_neither_sklearn_nor_pytensor() -> None:
    code = (
        "import sys, bntrain.data, bntrain.stats; "
        "bntrain.data.load_digits('train'); "
        "print('sklearn' in sys.modules, 'pytensor' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------------------- HDF5


def test_hdf5_reads_match_numpy(h5_file: Path, rng_x: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = rng_x
    with _open(h5_file.parent.parent, "data/x.h5") as ds:
        assert (len(ds), ds.example_shape, ds.x_dtype, ds.has_labels) == (
            50,
            (3, 4, 4),
            np.float32,
            True,
        )
        assert ds.name == "data/x.h5"
        for sel in (slice(3, 17), slice(None, None, 7), [0, 5, 6, 49], [9, 2, 2, 40]):
            xs, ys = ds.read(sel)
            assert np.array_equal(xs, x[sel]) and np.array_equal(ys, y[sel])
            assert ys.dtype == np.int64
        empty_x, empty_y = ds.read([])
        assert empty_x.shape == (0, 3, 4, 4) and empty_y.shape == (0,)
        with pytest.raises(IndexError, match=r"HDF5Dataset 'data/x.h5': index 50 is out of range"):
            ds.read([1, 50])
        with pytest.raises(TypeError, match="HDF5Dataset 'data/x.h5'"):
            ds.read(np.array([1.0, 2.0]))
        with pytest.raises(TypeError, match="not the single index 3"):
            ds.read(3)
    with pytest.raises(ValueError, match="HDF5Dataset 'data/x.h5' is closed"):
        ds.read([0])


@pytest.mark.parametrize("layout", ["contiguous", "chunked"])
def test_hdf5_scattered_reads(tmp_path: Path, layout: str) -> None:
    x = np.arange(400 * 6, dtype=np.uint8).reshape(400, 6) ^ 0x5A
    y = np.arange(400) % 7
    if layout == "chunked":
        write_hdf5_dataset(tmp_path / "c.h5", x, y, chunk_bytes=60)  # 10 rows per chunk
        with h5py.File(tmp_path / "c.h5") as f:
            assert f["X"].chunks == (10, 6) and f["X"].compression == "gzip"
    else:
        _h5(tmp_path / "c.h5", X=x, y=y)
    rng = np.random.default_rng(1)
    with _open(tmp_path, "c.h5") as ds:
        for size in (1, 5, 64, 300):
            idx = np.sort(rng.choice(400, size, replace=False))
            xs, ys = ds.read(idx)
            assert np.array_equal(xs, x[idx]) and np.array_equal(ys, y[idx])
        assert ds.sha256(batch_size=33) == hashlib.sha256(x.tobytes()).hexdigest()


def test_hdf5_unlabeled_and_float_labels(tmp_path: Path) -> None:
    x = np.ones((4, 2), np.float32)
    _h5(tmp_path / "u.h5", X=x, y=np.array([0.0, 3.0, 1.0, 2.0]), half=np.array([0, 0.5, 1, 2]))
    with _open(tmp_path, "u.h5", y=None) as ds:
        assert not ds.has_labels and ds.read([0, 1])[1] is None
        with pytest.raises(ValueError, match="has no labels"):
            ds.read_y([0])
    with _open(tmp_path, "u.h5") as ds:
        assert ds.read(slice(None))[1].tolist() == [0, 3, 1, 2]
    with pytest.raises(DataError) as e:
        _open(tmp_path, "u.h5", y="half")
    assert _msg(e) == (
        "data.train: array 'half' in 'u.h5' has the non-integer label 0.5 at example 1; "
        "labels must be class indices 0, 1, ..."
    )


def test_sha256_streams_in_stored_order(h5_file: Path, rng_x: tuple[np.ndarray, ...]) -> None:
    x, _ = rng_x
    ref = hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
    with _open(h5_file.parent.parent, "data/x.h5") as ds:
        assert ds.sha256() == ref
        assert ds.sha256(batch_size=7) == ref
        assert ds.reshape_examples((48,)).sha256() == ref
        idx = np.array([4, 1, 30])
        assert ds.subset(idx).sha256(2) == hashlib.sha256(x[idx].tobytes()).hexdigest()


HDF5_ERRORS = {
    "missing": "data.train: file 'data/x.h5' not found",
    "no_x": "data.train: 'data/x.h5' has no array 'X' (arrays: a, b); set data.train.x",
    "no_y": "data.train: 'data/x.h5' has no array 'y' (arrays: X); set data.train.y",
    "garbage": "data.train: 'data/x.h5' is not a readable HDF5 file (truncated or corrupt?)",
    "truncated": "data.train: 'data/x.h5' is not a readable HDF5 file (truncated or corrupt?)",
    "length": "data.train: X has 100 examples but y has 99",
    "string": "data.train: array 'X' in 'data/x.h5' has string dtype; X must be a numeric array "
    "(integers or floating point)",
    "compound": "data.train: array 'X' in 'data/x.h5' has compound dtype; X must be a numeric "
    "array (integers or floating point)",
    "complex": "data.train: array 'X' in 'data/x.h5' has complex dtype; X must be a numeric "
    "array (integers or floating point)",
    "one_d": "data.train: array 'X' in 'data/x.h5' has shape (100,); X needs one row per "
    "example, shape (N, ...) (for one feature per example store shape (N, 1))",
    "y_2d": "data.train: array 'y' in 'data/x.h5' has shape (100, 10); y must be 1-D, one class "
    "index per example (one-hot labels are not supported: store argmax)",
    "y_str": "data.train: array 'y' in 'data/x.h5' has string dtype; y must hold integer class "
    "labels (store it as int64)",
    "group": "data.train: 'X' in 'data/x.h5' is a group, not an array (arrays: X/a); "
    "set data.train.x",
    "external": "data.train: array 'X' in 'data/x.h5' keeps its data in other files (external "
    "or virtual dataset); bntrain reads only self-contained HDF5 files",
    "extlink": "data.train: 'X' in 'data/x.h5' is an external link to another file; bntrain "
    "reads only self-contained HDF5 files (copy the data into 'data/x.h5')",
    "directory": "data.train: 'data/x.h5' is a directory, not a data file",
}


def _make_bad_h5(kind: str, path: Path) -> None:
    ok_x = np.zeros((100, 3), np.uint8)
    if kind == "missing":
        return
    if kind == "directory":
        path.mkdir()
        return
    if kind == "garbage":
        path.write_bytes(b"definitely not HDF5" * 50)
        return
    if kind == "truncated":
        _h5(path, X=np.arange(30000, dtype=np.float64).reshape(100, 300), y=np.zeros(100, int))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return
    with h5py.File(path, "w") as f:
        if kind == "no_x":
            f["a"] = ok_x
            f["b"] = np.zeros(100)
        elif kind == "no_y":
            f["X"] = ok_x
        elif kind == "length":
            f["X"] = ok_x
            f["y"] = np.zeros(99, np.int64)
        elif kind == "string":
            f["X"] = np.array([[b"ab"]] * 100)
        elif kind == "compound":
            f["X"] = np.zeros((100, 2), dtype=[("a", "<i4"), ("b", "<f4")])
        elif kind == "complex":
            f["X"] = np.zeros((100, 2), np.complex64)
        elif kind == "one_d":
            f["X"] = np.zeros(100)
        elif kind == "y_2d":
            f["X"] = ok_x
            f["y"] = np.zeros((100, 10))
        elif kind == "y_str":
            f["X"] = ok_x
            f["y"] = np.array([b"cat"] * 100)
        elif kind == "group":
            f.create_group("X")["a"] = ok_x
        elif kind == "external":
            raw = path.with_name("raw.bin")
            raw.write_bytes(bytes(300))
            f.create_dataset("X", shape=(100, 3), dtype=np.uint8, external=[(raw, 0, 300)])
        elif kind == "extlink":
            _h5(path.with_name("other.h5"), X=ok_x)
            f["X"] = h5py.ExternalLink("other.h5", "X")
        else:  # pragma: no cover
            raise AssertionError(kind)


@pytest.mark.parametrize("kind", sorted(HDF5_ERRORS))
def test_hdf5_error_messages(tmp_path: Path, kind: str) -> None:
    (tmp_path / "data").mkdir()
    _make_bad_h5(kind, tmp_path / "data" / "x.h5")
    with pytest.raises(DataError) as e:
        _open(tmp_path, "data/x.h5")
    assert _msg(e) == HDF5_ERRORS[kind]


def test_hdf5_locked_by_a_writer(tmp_path: Path) -> None:
    import fcntl

    _h5(tmp_path / "l.h5", X=np.zeros((10, 3)))
    with open(tmp_path / "l.h5", "rb+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # what an HDF5 writer holds
        with pytest.raises(DataError) as e:
            _open(tmp_path, "l.h5", y=None)
    assert _msg(e) == (
        "data.train: 'l.h5' is locked by another process (still being written?); wait for it "
        "to finish, or set HDF5_USE_FILE_LOCKING=FALSE"
    )
    with _open(tmp_path, "l.h5", y=None) as ds:
        assert len(ds) == 10


def test_hdf5_huge_declared_shape_is_refused_quickly(tmp_path: Path) -> None:
    n = 10**10  # 10 TB of X declared; the file holds only a few bytes of it
    with h5py.File(tmp_path / "huge.h5", "w") as f:
        d = f.create_dataset("X", shape=(n, 1000), dtype=np.uint8, chunks=(1, 1000))
        d[5] = 7
        f.create_dataset("y", shape=(n,), dtype=np.int64, chunks=(1000,))
    assert (tmp_path / "huge.h5").stat().st_size < 1 << 20
    t0 = time.perf_counter()
    with pytest.raises(DataError) as e:
        _open(tmp_path, "huge.h5")
    assert str(e.value) == (
        f"{W}: array 'X' in 'huge.h5' declares shape [{n}, 1000] but the file does "
        f"not store all of it (truncated or never written); re-create the file"
    )
    assert time.perf_counter() - t0 < 5


def test_hdf5_contiguous_array_missing_its_data_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_dataset("X", shape=(10**6, 64), dtype=np.float32)  # never written
        f.create_dataset("y", data=np.zeros(10**6, np.int64))
    with pytest.raises(
        DataError, match="declares shape \\[1000000, 64\\] but the file does not store"
    ):
        _open(tmp_path, "empty.h5")


def test_relative_paths_use_base_dir_and_spec_objects(tmp_path: Path, h5_file: Path) -> None:
    spec = SimpleNamespace(builtin=None, split=None, path="data/x.h5", x="X", y="y")
    with open_dataset(spec, tmp_path, W) as ds:
        assert len(ds) == 50
    with open_dataset({"path": str(h5_file)}, "/nonexistent", W) as ds:  # absolute path
        assert len(ds) == 50
    with pytest.raises(DataError, match="^data.train: file 'data/x.h5' not found$"):
        open_dataset(spec, tmp_path / "elsewhere", W)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"builtin": "digits", "path": "x.h5"},
            "data.train: set exactly one of data.train.builtin and data.train.path",
        ),
        ({}, "data.train: set exactly one of data.train.builtin and data.train.path"),
        (
            {"builtin": "imagenet"},
            "data.train.builtin: unknown dataset 'imagenet' (available: digits, mnist, "
            "fashion_mnist, cifar10, cifar100)",
        ),
        (
            {"builtin": "mnist", "split": "val"},
            "data.train.split: builtin mnist has the splits train and test, got 'val'; carve a "
            "validation set with data.val_split",
        ),
        (
            {"builtin": "digits", "split": "dev"},
            "data.train.split: must be one of train, val, test, all, got 'dev'",
        ),
        (
            {"path": "x.h5", "split": "train"},
            "data.train.split: only applies to builtin datasets; remove it",
        ),
        (
            {"path": "x.h5", "xx": 1},
            "data.train: unknown key 'xx' (expected one of: builtin, split, path, x, y)",
        ),
    ],
)
def test_spec_errors(tmp_path: Path, spec: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        open_dataset(spec, tmp_path, W)
    assert _msg(e) == message


def test_unknown_extension(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(DataError) as e:
        _open(tmp_path, "x.csv")
    assert _msg(e) == (
        "data.train: 'x.csv' has the unknown extension '.csv'; use an HDF5 (.h5, .hdf5) or "
        "NumPy (.npz) file"
    )


# ----------------------------------------------------------------------------- NPZ


def test_npz_round_trip_and_keys(tmp_path: Path, rng_x: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = rng_x
    np.savez_compressed(tmp_path / "d.npz", images=x, labels=y.astype(np.uint8))
    with _open(tmp_path, "d.npz", x="images", y="labels") as ds:
        xs, ys = ds.read([3, 1])
        assert np.array_equal(xs, x[[3, 1]]) and ys.tolist() == y[[3, 1]].tolist()
        assert ds.sha256() == hashlib.sha256(x.tobytes()).hexdigest()
    with pytest.raises(DataError) as e:
        _open(tmp_path, "d.npz")
    assert (
        _msg(e) == "data.train: 'd.npz' has no array 'X' (arrays: images, labels); set data.train.x"
    )


def test_npz_pickled_objects_give_clean_error(tmp_path: Path) -> None:
    x = np.empty((3, 2), dtype=object)
    x[:] = [[{"a": 1}, None]] * 3
    np.savez(tmp_path / "p.npz", X=x, y=np.zeros(3, int))
    with pytest.raises(DataError) as e:
        _open(tmp_path, "p.npz")
    assert _msg(e) == (
        "data.train: array 'X' in 'p.npz' holds pickled Python objects, which bntrain does not "
        "load; save it as a numeric array (e.g. np.savez(f, X=np.asarray(a, dtype=np.float32)))"
    )


def _npy_member(shape: tuple[int, ...], payload: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "|u1", "fortran_order": False, "shape": shape}
    )
    return buf.getvalue() + payload


@pytest.mark.parametrize("kind", ["garbage", "truncated", "declared_huge"])
def test_npz_corrupt(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "c.npz"
    if kind == "garbage":
        path.write_bytes(b"PK not really a zip")
    elif kind == "truncated":
        np.savez(path, X=np.zeros((200, 50)), y=np.zeros(200, int))
        path.write_bytes(path.read_bytes()[:5000])
    else:  # header claims 10**12 bytes that are not there: must not be allocated
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("X.npy", _npy_member((10**6, 10**6), b"\0" * 100))
            zf.writestr("y.npy", _npy_member((10**6,), b"\0" * 100))
    with pytest.raises(DataError) as e:
        _open(tmp_path, "c.npz")
    assert _msg(e) == "data.train: 'c.npz' is not a readable NPZ file (truncated or corrupt?)"


def test_npz_length_mismatch(tmp_path: Path) -> None:
    np.savez(tmp_path / "m.npz", X=np.zeros((100, 2)), y=np.zeros(99, int))
    with pytest.raises(DataError, match=r"^data.train: X has 100 examples but y has 99$"):
        _open(tmp_path, "m.npz")


# ----------------------------------------------------------------------------- views


def test_subset_and_reshape_views(tmp_path: Path) -> None:
    x_raw, y_raw = _raw_digits()
    base = load_digits("all", where=W)
    idx = np.array([10, 3, 1700, 4])
    sub = base.subset(idx)
    assert len(sub) == 4 and sub.example_shape == (64,) and sub.has_labels
    xs, ys = sub.read([2, 0])
    assert np.array_equal(xs, x_raw[[1700, 10]]) and np.array_equal(ys, y_raw[[1700, 10]])
    img = sub.reshape_examples((1, 8, 8))
    assert img.example_shape == (1, 8, 8) and len(img) == 4
    xi, yi = img.read(slice(1, 3))
    assert np.array_equal(xi, x_raw[[3, 1700]].reshape(2, 1, 8, 8))
    assert np.array_equal(yi, y_raw[[3, 1700]])
    with pytest.raises(DataError) as e:
        base.reshape_examples((1, 8, 9))
    assert _msg(e) == (
        "data.train: cannot reshape examples of shape (64,) (64 values) to [1, 8, 9] (72 values)"
    )
    with pytest.raises(IndexError, match="SubsetDataset of 'builtin:digits\\[all\\]': index 1797"):
        base.subset([0, 1797])
    img.close()
    assert base.closed and sub.closed


# ----------------------------------------------------------------------------- validation


def test_validate_shape_and_labels() -> None:
    ds = load_digits("val", where=W)
    validate_dataset(ds, (64,), 10, W)
    with pytest.raises(DataError) as e:
        validate_dataset(ds, (1, 8, 8), 10, W)
    assert _msg(e) == "data.train: examples have shape (64,) but model.input_shape is [1, 8, 8]"
    validate_dataset(ds.reshape_examples((1, 8, 8)), [1, 8, 8], 10, W)
    with pytest.raises(DataError) as e:
        validate_dataset(ds, (64,), 9, W)
    first_nine = int(np.flatnonzero(ds.read_y(slice(None)) == 9)[0])
    assert _msg(e) == (
        f"data.train: label 9 at example {first_nine} is outside [0, 9) (the model has 9 classes)"
    )
    validate_dataset(ds, (64,), 9, W, check_values=False)
    unl = ArrayDataset(np.zeros((3, 2)), name="u.h5")
    validate_dataset(unl, (2,), 10, W)
    with pytest.raises(DataError) as e:
        validate_dataset(unl, (2,), 10, W, require_labels=True)
    assert _msg(e) == "data.train: 'u.h5' has no labels (y is null); set data.train.y"


def test_validate_streams_and_finds_first_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (base_mod, open_mod):  # 8 labels / 4 examples per read
        monkeypatch.setattr(module, "_SCAN_BYTES", 64)
    x = np.zeros((40, 4), np.float32)
    y = np.zeros(40, np.int64)
    y[[23, 30]] = [-1, 10]
    x[17, 2] = np.inf
    x[25, 0] = np.nan
    ds = ArrayDataset(x, y, where=W)
    with pytest.raises(DataError) as e:
        validate_dataset(ds, (4,), 10, W)
    assert (
        _msg(e)
        == "data.train: label -1 at example 23 is outside [0, 10) (the model has 10 classes)"
    )
    y[23] = 0
    with pytest.raises(DataError) as e:
        validate_dataset(ArrayDataset(x, y), (4,), 10, W)
    assert (
        _msg(e)
        == "data.train: label 10 at example 30 is outside [0, 10) (the model has 10 classes)"
    )
    with pytest.raises(DataError) as e:
        validate_dataset(ArrayDataset(x), (4,), None, W)
    assert (
        _msg(e)
        == "data.train: X has a non-finite value (inf) in example 17; fix or drop that example"
    )
    x[17, 2] = 0
    with pytest.raises(DataError, match=r"\(nan\) in example 25;"):
        validate_dataset(ArrayDataset(x), (4,), None, W)


def test_split_indices() -> None:
    tr, va = split_indices(103, 0.2, seed=5)
    assert len(va) == round(0.2 * 103) and len(tr) == 103 - len(va)
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(103))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
    tr2, va2 = split_indices(103, 0.2, seed=5)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert not np.array_equal(va, split_indices(103, 0.2, seed=6)[1])
    for bad in (0.0, 1.0, 0.001):
        with pytest.raises(ValueError, match="split_indices"):
            split_indices(103, bad, 0)


# ----------------------------------------------------------------------------- stats


def test_running_moments_matches_numpy_and_is_order_independent() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(3.0, 2.0, size=(60, 3, 5, 5))
    ref_mean, ref_var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    results = []
    for sizes in ([60], [1, 59], [7] * 8 + [4], [13, 2, 45]):
        order = rng.permutation(60)
        m = RunningMoments((3,))
        start = 0
        for s in sizes:
            m.update(x[order[start : start + s]], axes=(0, 2, 3))
            start += s
        assert m.count == 60 * 25
        results.append((m.mean, m.var))
    for mean, var in results:
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-12)
        np.testing.assert_allclose(var, ref_var, rtol=1e-12)
    a, b = RunningMoments((3,)), RunningMoments((3,))
    a.update(x[:20], (0, -2, -1))
    b.update(x[20:], (0, 2, 3))
    b.merge(a)
    np.testing.assert_allclose(b.var, ref_var, rtol=1e-12)
    c = RunningMoments.from_moments(a.count, a.mean, a.M2)
    np.testing.assert_array_equal(c.var, a.var)


def test_running_moments_large_mean_and_constant() -> None:
    rng = np.random.default_rng(3)
    x = (1e4 + 1e-2 * rng.standard_normal((4000, 2))).astype(np.float32)
    ref = np.var(x.astype(np.float64) - 1e4, axis=0)
    m = RunningMoments(2)
    for part in np.array_split(x, 9):
        m.update(part, 0)
    np.testing.assert_allclose(m.var, ref, rtol=1e-6)
    naive = np.mean(x * x, axis=0) - np.mean(x, axis=0) ** 2  # what must not be done
    assert not np.allclose(naive, ref, rtol=1e-2)
    k = RunningMoments(())
    for n in (3, 7, 1, 10):
        k.update(np.full((n, 4), 0.1), axes=(0, 1))
    assert k.var == 0.0 and k.mean == 0.1 and k.count == 84


def test_running_moments_errors() -> None:
    m = RunningMoments((3,))
    with pytest.raises(ValueError, match="no data"):
        _ = m.var
    with pytest.raises(ValueError, match=r"leaves shape \(4,\)"):
        m.update(np.zeros((2, 4)), 0)
    with pytest.raises(ValueError, match="shapes differ"):
        m.merge(RunningMoments((2,)))
    with pytest.raises(ValueError, match="axis 3 is out of range"):
        m.update(np.zeros((2, 3)), 3)


# ----------------------------------------------------------------------------- preprocessing


def test_preprocessor_flat_and_image_vs_numpy() -> None:
    rng = np.random.default_rng(4)
    flat = rng.integers(0, 256, size=(37, 5)).astype(np.uint8)
    flat[:, 3] = 9  # a constant feature
    p = Preprocessor(scale=1 / 255, standardize=True).fit(ArrayDataset(flat), batch_size=8)
    scaled = flat.astype(np.float32) * np.float32(1 / 255)
    s64 = scaled.astype(np.float64)
    np.testing.assert_allclose(p.mean, s64.mean(0), rtol=1e-12)
    np.testing.assert_allclose(p.std[[0, 1, 2, 4]], s64.std(0)[[0, 1, 2, 4]], rtol=1e-10)
    out = p.apply(flat)
    assert out.dtype == np.float32
    ref = (s64 - s64.mean(0)) / np.maximum(s64.std(0), 1e-6)
    np.testing.assert_allclose(out, ref, atol=2e-6)
    assert np.all(out[:, 3] == 0.0)
    imgs = rng.normal(5, 3, size=(21, 3, 4, 2)).astype(np.float32)
    q = Preprocessor(standardize=True).fit(ArrayDataset(imgs), batch_size=5)
    assert q.mean.shape == (3, 1, 1)
    i64 = imgs.astype(np.float64)
    mu, sd = i64.mean((0, 2, 3), keepdims=True), i64.std((0, 2, 3), keepdims=True)
    np.testing.assert_allclose(q.apply(imgs), (i64 - mu) / sd, atol=1e-5)
    q2 = Preprocessor(standardize=True).fit(ArrayDataset(imgs), batch_size=21)
    np.testing.assert_allclose(q2.mean, q.mean, rtol=1e-12)
    assert np.array_equal(Preprocessor(scale=0.5).apply(flat), flat.astype(np.float32) * 0.5)
    assert np.array_equal(Preprocessor().fit(ArrayDataset(flat), 4).apply(flat), flat)


def test_preprocessor_state_round_trip_and_errors() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(10, 2, 3)).astype(np.float32)
    p = Preprocessor(scale=2.0, standardize=True).fit(ArrayDataset(x), 3)
    state = p.state()
    assert set(state) == {"scale", "standardize", "mean", "std"}
    q = Preprocessor.from_state(state)
    assert np.array_equal(q.apply(x), p.apply(x))
    r = Preprocessor.from_state(Preprocessor().state())
    assert r.scale is None and not r.standardize
    with pytest.raises(ValueError, match="call fit"):
        Preprocessor(standardize=True).apply(x)
    with pytest.raises(ValueError, match="2 channels"):
        p.apply(np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError, match="scale must be positive"):
        Preprocessor(scale=-1.0)
    with pytest.raises(ValueError, match="mean/std are missing"):
        Preprocessor.from_state({"scale": 1.0, "standardize": True})
    with pytest.raises(ValueError, match="unknown key 'bias'"):
        Preprocessor.from_state({**state, "bias": 1})


# ----------------------------------------------------------------------------- batches


class _IdDataset(Dataset):
    """Example i is [i, i]; optionally fails when asked for an index >= fail_at."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self._n, self.example_shape, self.x_dtype = n, (2,), np.dtype(np.int64)
        self.has_labels, self.name, self.fail_at = True, "ids", fail_at

    def _get_x(self, sel: slice | np.ndarray) -> np.ndarray:
        idx = np.arange(sel.start, sel.stop) if isinstance(sel, slice) else sel
        if self.fail_at is not None and idx.max() >= self.fail_at:
            raise RuntimeError(f"disk on fire at {int(idx.max())}")
        return np.repeat(idx[:, None], 2, axis=1)

    def _get_y(self, sel: slice | np.ndarray) -> np.ndarray:
        return (self._get_x(sel)[:, 0] % 3).astype(np.int64)


def _ids(batches: list[tuple[np.ndarray, np.ndarray | None]]) -> list[list[int]]:
    return [xb[:, 0].astype(int).tolist() for xb, _ in batches]


def test_batches_stored_order_with_partial_last() -> None:
    it = BatchIterator(_IdDataset(10), 4, shuffle=False, seed=0, epoch=0)
    assert len(it) == 3
    batches = list(it)
    assert _ids(batches) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[0][0].dtype == np.float32 and batches[0][1].dtype == np.int32
    assert batches[2][1].tolist() == [2, 0]
    dropped = BatchIterator(_IdDataset(10), 4, shuffle=False, seed=0, epoch=0, drop_last=True)
    assert len(dropped) == 2 and _ids(list(dropped)) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_shuffled_order_is_a_pure_function_of_seed_and_epoch() -> None:
    n, bs = 103, 10
    ds = _IdDataset(n)
    runs = {}
    for seed, epoch, prefetch in ((7, 3, 2), (7, 3, 0), (7, 4, 2), (8, 3, 2)):
        it = BatchIterator(ds, bs, shuffle=True, seed=seed, epoch=epoch, prefetch=prefetch)
        runs[(seed, epoch, prefetch)] = _ids(list(it))
    perm = np.random.default_rng([7, 3]).permutation(n)
    ref = [sorted(perm[i : i + bs].tolist()) for i in range(0, n, bs)]
    assert runs[(7, 3, 2)] == ref == runs[(7, 3, 0)]
    assert runs[(7, 4, 2)] != ref and runs[(8, 3, 2)] != ref
    assert sorted(sum(runs[(7, 4, 2)], [])) == list(range(n))
    it = BatchIterator(ds, bs, shuffle=True, seed=7, epoch=3)
    assert it.batch_indices(4).tolist() == ref[4]
    it.close()


def test_resume_at_start_batch_reproduces_the_tail() -> None:
    pre = Preprocessor(scale=0.5)
    full = list(BatchIterator(_IdDataset(57), 8, shuffle=True, seed=1, epoch=2, preprocess=pre))
    tail = list(
        BatchIterator(
            _IdDataset(57), 8, shuffle=True, seed=1, epoch=2, preprocess=pre, start_batch=5
        )
    )
    assert len(tail) == len(full) - 5
    for (xa, ya), (xb, yb) in zip(full[5:], tail, strict=True):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert np.array_equal(full[0][0], np.sort(full[0][0], axis=0))  # rows sorted by index
    assert float(full[0][0][0, 0]) * 2 in BatchIterator(
        _IdDataset(57), 8, shuffle=True, seed=1, epoch=2
    ).batch_indices(0)
    with pytest.raises(ValueError, match="start_batch 9 is past the end"):
        BatchIterator(_IdDataset(57), 8, shuffle=True, seed=1, epoch=2, start_batch=9)


def test_prefetch_reraises_worker_exception_and_stops() -> None:
    it = BatchIterator(_IdDataset(40, fail_at=20), 5, shuffle=False, seed=0, epoch=0, prefetch=2)
    got = []
    with pytest.raises(RuntimeError, match="disk on fire at 24"):
        for xb, _ in it:
            got.append(xb)
    assert len(got) == 4
    assert it._thread is not None and not it._thread.is_alive()
    with pytest.raises(StopIteration):
        next(it)


def test_prefetch_thread_stops_on_close_and_garbage_collection() -> None:
    it = BatchIterator(_IdDataset(1000), 2, shuffle=True, seed=0, epoch=0, prefetch=2)
    next(it)
    thread = it._thread
    assert thread is not None and thread.is_alive()
    it.close()
    assert not thread.is_alive()
    it2 = BatchIterator(_IdDataset(1000), 2, shuffle=True, seed=0, epoch=0, prefetch=1)
    next(it2)
    thread2 = it2._thread
    del it2
    gc.collect()
    thread2.join(timeout=5)
    assert not thread2.is_alive()
    assert not any(t.name == "bntrain-prefetch" and t.is_alive() for t in threading.enumerate())


def test_batches_from_hdf5_match_numpy(tmp_path: Path) -> None:
    x = np.random.default_rng(6).integers(0, 256, size=(300, 12), dtype=np.uint8)
    y = np.arange(300) % 10
    write_hdf5_dataset(tmp_path / "m.h5", x, y, chunk_bytes=120)
    pre = Preprocessor(scale=1 / 255)
    with _open(tmp_path, "m.h5") as ds:
        it = BatchIterator(ds, 32, shuffle=True, seed=3, epoch=1, preprocess=pre)
        for b, (xb, yb) in enumerate(it):
            idx = it.batch_indices(b)
            np.testing.assert_array_equal(xb, x[idx].astype(np.float32) * np.float32(1 / 255))
            np.testing.assert_array_equal(yb, y[idx])
