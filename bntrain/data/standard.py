"""The standard image datasets: MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100.

Each is downloaded on first use (:mod:`bntrain.data.remote`), read from its
original distribution format and converted once into HDF5 files in the cache
folder, ``<cache>/NAME/train.h5`` and ``<cache>/NAME/test.h5`` (``X`` uint8 of
shape ``(N, C, H, W)``, ``y`` int64), which are then streamed like any HDF5 data
file.  MNIST and Fashion-MNIST come from their gzipped IDX files; CIFAR from its
*binary* distribution (``cifar-10-binary.tar.gz``, ``cifar-100-binary.tar.gz``),
read member by member from the archive: no pickle is ever loaded and nothing is
extracted to disk.  CIFAR-100's ``y`` holds its 100 fine labels (the 20 coarse
labels are stored as ``y_coarse``).
"""

from __future__ import annotations

import gzip
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from bntrain.data.h5write import write_hdf5_dataset
from bntrain.data.hdf5 import HDF5Dataset
from bntrain.data.remote import DATA_DIR_ENV, REMOTE_FILES, RemoteFile, data_dir, fetch
from bntrain.errors import ConfigError, DataError

__all__ = [
    "STANDARD",
    "STANDARD_SPLITS",
    "StandardDataset",
    "read_idx",
    "read_idx_file",
    "idx_pair",
    "read_cifar_archive",
    "converted_path",
    "prepare",
    "load_standard",
    "STANDARD_LOADERS",
]

#: The splits a standard dataset offers (carve validation with ``data.val_split``).
STANDARD_SPLITS = ("train", "test")

# IDX type codes -> big-endian NumPy dtypes.
_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IMAGE_VALUES = 3 * 32 * 32


def read_idx(raw: bytes, name: str) -> np.ndarray:
    """Decode the bytes of one IDX file (already gunzipped) into a native-endian array.

    Parameters
    ----------
    raw : bytes
        The whole file.
    name : str
        The file's name, for messages.

    Raises
    ------
    bntrain.errors.DataError
        A bad magic number, a bad header, or a size that disagrees with the header.

    Examples
    --------
    >>> raw = bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])
    >>> read_idx(raw, "labels").tolist()
    [7, 8, 9]
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"'{name}' is not an IDX file (bad magic number)")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"'{name}' is not an IDX file (bad header)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"'{name}' holds {len(raw) - header} data bytes but its header {shape} "
            f"needs {expected} (truncated?)"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def read_idx_file(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped if its name ends in ``.gz``) with :func:`read_idx`."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"cannot read '{path}': {err}") from None
    return read_idx(raw, str(path))


def idx_pair(images: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Check an IDX image/label pair; return X uint8 ``(N, 1, rows, cols)`` and y int64."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{what} images: expected uint8 (N, rows, cols), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{what} labels: expected integer (N,), got {labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{what}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images[:, None], labels.astype(np.int64)


def _read_mnist(files: dict[str, Path], split: str) -> dict[str, np.ndarray]:
    stem = "train" if split == "train" else "t10k"
    images = read_idx_file(files[f"{stem}-images-idx3-ubyte.gz"])
    labels = read_idx_file(files[f"{stem}-labels-idx1-ubyte.gz"])
    x, y = idx_pair(images, labels, stem)
    return {"X": x, "y": y}


def read_cifar_archive(
    archive: Path, members: list[str], label_bytes: int, n_classes: int
) -> dict[str, np.ndarray]:
    """Read CIFAR binary records from members of a ``.tar.gz`` without extracting it.

    Each record is ``label_bytes`` label bytes (CIFAR-100: coarse, then fine)
    followed by 3072 pixel bytes (1024 red, 1024 green, 1024 blue, each 32x32
    row-major).

    Returns
    -------
    dict
        ``X`` uint8 ``(N, 3, 32, 32)``, ``y`` int64 (the last label byte) and, for
        two label bytes, ``y_coarse`` int64.

    Raises
    ------
    bntrain.errors.DataError
        An unreadable archive, a missing member, a size that is not a whole number
        of records, or a label outside ``[0, n_classes)``.
    """
    record = label_bytes + _IMAGE_VALUES
    chunks = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for name in members:
                try:
                    member = tar.getmember(name)
                except KeyError:
                    raise DataError(f"'{archive}' has no member '{name}'") from None
                fh = tar.extractfile(member) if member.isfile() else None
                if fh is None:
                    raise DataError(f"'{archive}': '{name}' is not a regular file")
                raw = fh.read()
                if not raw or len(raw) % record:
                    raise DataError(
                        f"'{archive}': '{name}' has {len(raw)} bytes, not a whole number of "
                        f"{record}-byte records"
                    )
                chunks.append(np.frombuffer(raw, dtype=np.uint8).reshape(-1, record))
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"cannot read '{archive}': {err}") from None
    rows = np.concatenate(chunks)
    y = rows[:, label_bytes - 1].astype(np.int64)
    if y.max() >= n_classes:
        raise DataError(f"'{archive}': label {int(y.max())} is outside [0, {n_classes})")
    out = {"X": np.ascontiguousarray(rows[:, label_bytes:]).reshape(-1, 3, 32, 32), "y": y}
    if label_bytes == 2:
        out["y_coarse"] = rows[:, 0].astype(np.int64)
    return out


def _read_cifar(
    archive: str, folder: str, members: dict[str, list[str]], label_bytes: int, n_classes: int
) -> Callable[[dict[str, Path], str], dict[str, np.ndarray]]:
    def read(files: dict[str, Path], split: str) -> dict[str, np.ndarray]:
        names = [f"{folder}/{m}" for m in members[split]]
        return read_cifar_archive(files[archive], names, label_bytes, n_classes)

    return read


@dataclass(frozen=True)
class StandardDataset:
    """A downloadable dataset: its files and how to read a split from them."""

    name: str
    description: str
    n_classes: int
    read: Callable[[dict[str, Path], str], dict[str, np.ndarray]]

    @property
    def files(self) -> list[RemoteFile]:
        """Its downloadable files."""
        return [f for (dataset, _), f in REMOTE_FILES.items() if dataset == self.name]


#: The standard datasets by name.
STANDARD: dict[str, StandardDataset] = {
    "mnist": StandardDataset("mnist", "MNIST handwritten digits, 1x28x28", 10, _read_mnist),
    "fashion_mnist": StandardDataset(
        "fashion_mnist", "Fashion-MNIST (Zalando), 1x28x28", 10, _read_mnist
    ),
    "cifar10": StandardDataset(
        "cifar10",
        "CIFAR-10, 3x32x32",
        10,
        _read_cifar(
            "cifar-10-binary.tar.gz",
            "cifar-10-batches-bin",
            {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
            1,
            10,
        ),
    ),
    "cifar100": StandardDataset(
        "cifar100",
        "CIFAR-100 (fine labels), 3x32x32",
        100,
        _read_cifar(
            "cifar-100-binary.tar.gz",
            "cifar-100-binary",
            {"train": ["train.bin"], "test": ["test.bin"]},
            2,
            100,
        ),
    ),
}


def converted_path(name: str, split: str) -> Path:
    """The HDF5 file a split is converted into: ``<cache>/NAME/SPLIT.h5``."""
    return data_dir() / name / f"{split}.h5"


def prepare(name: str, *, where: str = "data", progress: bool | None = None) -> list[Path]:
    """Download (if needed) and convert (if needed) both splits of a standard dataset.

    Returns the converted HDF5 paths (train, test).  Each is written atomically, so a
    converted file that exists is complete.

    Raises
    ------
    bntrain.errors.DataError
        A download failed or a downloaded file is malformed.
    """
    spec = STANDARD[name]
    paths = [converted_path(name, split) for split in STANDARD_SPLITS]
    if all(p.is_file() for p in paths):
        return paths
    files = {f.name: fetch(f, where=where, progress=progress) for f in spec.files}
    for split, path in zip(STANDARD_SPLITS, paths, strict=True):
        if path.is_file():
            continue
        try:
            arrays = spec.read(files, split)
        except DataError as err:
            raise DataError(
                f"{where}: builtin {name}: {err}; delete it to download again"
            ) from None
        extra = {k: v for k, v in arrays.items() if k not in ("X", "y")}
        attrs = {"source": f"{spec.description}, {split} split", "layout": "NCHW"}
        try:
            write_hdf5_dataset(path, arrays["X"], arrays["y"], attrs=attrs, extra=extra)
        except OSError as err:
            raise DataError(
                f"{where}: cannot write '{path}' ({err.strerror or err}); set {DATA_DIR_ENV} "
                f"to a writable folder with space"
            ) from None
    return paths


def load_standard(name: str, split: str = "train", *, where: str = "data") -> HDF5Dataset:
    """Open one split of a standard dataset, downloading and converting it on first use.

    Parameters
    ----------
    name : str
        A key of :data:`STANDARD`.
    split : {'train', 'test'}
        The dataset's own split; carve validation off train with ``data.val_split``.
    where : str
        Config key path used in messages.
    """
    if split not in STANDARD_SPLITS:
        raise ConfigError(
            f"{where}.split: builtin {name} has the splits train and test, got {split!r}; carve a "
            f"validation set with data.val_split"
        )
    path = dict(zip(STANDARD_SPLITS, prepare(name, where=where), strict=True))[split]
    return HDF5Dataset(path, f"builtin:{name}[{split}]", "X", "y", where)


#: Loaders for :data:`bntrain.data.open.BUILTINS`.
STANDARD_LOADERS: dict[str, Callable[..., HDF5Dataset]] = {
    name: partial(load_standard, name) for name in STANDARD
}
