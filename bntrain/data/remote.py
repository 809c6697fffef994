"""Downloaded files: where they come from, where they are cached, how they are fetched.

Every file a standard dataset needs is one :class:`RemoteFile` in :data:`REMOTE_FILES`
(its canonical URL and SHA-256).  :func:`fetch` returns the path of a verified copy
in the cache folder, downloading it with :mod:`pooch` when it is missing or damaged.
pooch streams into a temporary file in the same folder and moves it into place only
after its SHA-256 matched, so an interrupted or corrupted transfer is never taken for
a complete file.

Two environment variables steer it:

``BNTRAIN_DATA_DIR``
    The cache folder (default: the platform's user cache folder for bntrain, from
    :func:`platformdirs.user_cache_dir`).  A file of dataset ``NAME`` lives at
    ``<cache>/NAME/<file>``; put it there by hand to work offline.
``BNTRAIN_DATA_MIRROR``
    A base URL used instead of the canonical locations: the file is fetched from
    ``<mirror>/NAME/<file>``.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from bntrain.errors import DataError

__all__ = [
    "DATA_DIR_ENV",
    "MIRROR_ENV",
    "RemoteFile",
    "REMOTE_FILES",
    "data_dir",
    "file_url",
    "cached_path",
    "sha256_of",
    "fetch",
]

DATA_DIR_ENV = "BNTRAIN_DATA_DIR"
MIRROR_ENV = "BNTRAIN_DATA_MIRROR"


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file of a dataset.

    Attributes
    ----------
    dataset : str
        The dataset it belongs to (its folder in the cache and on a mirror).
    name : str
        The file name.
    url : str
        The canonical location.
    sha256 : str
        Hex SHA-256 of the file's bytes.
    """

    dataset: str
    name: str
    url: str
    sha256: str


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_CIFAR = "https://www.cs.toronto.edu/~kriz/"


def _files(dataset: str, base: str, sums: dict[str, str]) -> list[RemoteFile]:
    return [RemoteFile(dataset, name, base + name, sha) for name, sha in sums.items()]


#: Every file bntrain downloads, by ``(dataset, file name)``.
REMOTE_FILES: dict[tuple[str, str], RemoteFile] = {
    (f.dataset, f.name): f
    for f in [
        *_files(
            "mnist",
            _MNIST,
            {
                "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            },
        ),
        *_files(
            "fashion_mnist",
            _FASHION,
            {
                "train-images-idx3-ubyte.gz": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
                "train-labels-idx1-ubyte.gz": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
                "t10k-images-idx3-ubyte.gz": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
                "t10k-labels-idx1-ubyte.gz": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
            },
        ),
        *_files(
            "cifar10",
            _CIFAR,
            {
                "cifar-10-binary.tar.gz": "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
            },
        ),
        *_files(
            "cifar100",
            _CIFAR,
            {
                "cifar-100-binary.tar.gz": "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec"
            },
        ),
    ]
}


def data_dir() -> Path:
    """The cache folder: ``$BNTRAIN_DATA_DIR``, else the platform's user cache folder."""
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("bntrain")) / "datasets"


def file_url(remote: RemoteFile) -> str:
    """Where ``remote`` is downloaded from: ``$BNTRAIN_DATA_MIRROR/<dataset>/<name>`` or its URL."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return f"{mirror.rstrip('/')}/{remote.dataset}/{remote.name}"
    return remote.url


def cached_path(remote: RemoteFile) -> Path:
    """Where ``remote`` lives in the cache folder (whether or not it is there)."""
    return data_dir() / remote.dataset / remote.name


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _reason(err: BaseException) -> str:
    """A short, one-line reason for a failed download."""
    import requests

    if isinstance(err, requests.exceptions.HTTPError) and err.response is not None:
        return f"HTTP {err.response.status_code}"
    if isinstance(err, requests.exceptions.ConnectionError) and not isinstance(
        err, requests.exceptions.ChunkedEncodingError
    ):
        return "cannot connect (offline?)"
    if isinstance(err, requests.exceptions.Timeout):
        return "timed out"
    if isinstance(
        err, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)
    ):
        return "the transfer broke off"
    if isinstance(err, ValueError) and "hash" in str(err).lower():
        return "the downloaded file's SHA-256 does not match"
    return " ".join(str(err).split())[:200] or type(err).__name__


def fetch(remote: RemoteFile, *, where: str, progress: bool | None = None) -> Path:
    """A verified copy of ``remote`` in the cache folder, downloaded if needed.

    Parameters
    ----------
    remote : RemoteFile
    where : str
        Config key path (or command) used in messages.
    progress : bool, optional
        Show a download progress bar on stderr (default: when stderr is a terminal).

    Returns
    -------
    Path
        The cached file; its SHA-256 equals ``remote.sha256``.

    Raises
    ------
    bntrain.errors.DataError
        The file could not be downloaded (offline, HTTP error, broken transfer,
        checksum mismatch): one line naming the file, where to put it by hand,
        and the mirror setting.  Nothing is left half-written in the cache.
    """
    import pooch
    import requests

    target = cached_path(remote)
    url = file_url(remote)
    if progress is None:
        progress = sys.stderr.isatty()
    pooch.get_logger().setLevel("WARNING")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fetched = pooch.retrieve(
            url,
            known_hash=f"sha256:{remote.sha256}",
            fname=remote.name,
            path=target.parent,
            progressbar=bool(progress),
        )
    except (requests.exceptions.RequestException, ValueError) as err:
        # pooch downloads only a missing file or one whose checksum differs.
        held = " (the file there has another SHA-256)" if target.is_file() else ""
        raise DataError(
            f"{where}: cannot download {remote.dataset} file '{remote.name}' from {url} "
            f"({_reason(err)}); put the file at {target}{held} by hand, or set {MIRROR_ENV} "
            f"to a server holding <mirror>/{remote.dataset}/{remote.name}"
        ) from None
    except OSError as err:
        raise DataError(
            f"{where}: cannot write '{target}' ({err.strerror or err}); set {DATA_DIR_ENV} "
            f"to a writable folder"
        ) from None
    return Path(fetched)
