"""The standard datasets, downloaded from a local HTTP server on 127.0.0.1 (never the internet).

The server serves tiny files in the real formats (gzipped IDX, CIFAR binary tar.gz),
generated here; their SHA-256 sums are injected into the registry.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bntrain.cli import main
from bntrain.data import open_dataset, remote
from bntrain.data.open import BUILTINS
from bntrain.data.remote import REMOTE_FILES, RemoteFile
from bntrain.data.standard import STANDARD, load_standard, read_idx

SIZES = {"train": 40, "test": 12}


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file (ungzipped) holding ``arr``."""
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_files(rng: np.random.Generator) -> tuple[dict[tuple[str, str], bytes], dict]:
    """Served bytes by (dataset, file name), and the arrays they hold by (dataset, split)."""
    files: dict[tuple[str, str], bytes] = {}
    truth: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for dataset in ("mnist", "fashion_mnist"):
        for split, stem in (("train", "train"), ("test", "t10k")):
            x = rng.integers(0, 256, size=(SIZES[split], 28, 28), dtype=np.uint8)
            y = rng.integers(0, 10, size=SIZES[split], dtype=np.uint8)
            files[dataset, f"{stem}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(x))
            files[dataset, f"{stem}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(y))
            truth[dataset, split] = {"X": x[:, None], "y": y.astype(np.int64)}
    # CIFAR-10: 5 training batches + 1 test batch of records <label><3072 pixels>.
    members = {}
    for split, names in (
        ("train", [f"data_batch_{i}.bin" for i in range(1, 6)]),
        ("test", ["test_batch.bin"]),
    ):
        xs, ys = [], []
        for name in names:
            x = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
            y = rng.integers(0, 10, size=3, dtype=np.uint8)
            members[f"cifar-10-batches-bin/{name}"] = np.column_stack([y, x]).tobytes()
            xs.append(x)
            ys.append(y)
        truth["cifar10", split] = {
            "X": np.concatenate(xs).reshape(-1, 3, 32, 32),
            "y": np.concatenate(ys).astype(np.int64),
        }
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\n"
    files["cifar10", "cifar-10-binary.tar.gz"] = tar_gz(members)
    # CIFAR-100: records <coarse><fine><3072 pixels>.
    members = {}
    for split, n in (("train", 7), ("test", 4)):
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        coarse = rng.integers(0, 20, size=n, dtype=np.uint8)
        fine = rng.integers(0, 100, size=n, dtype=np.uint8)
        members[f"cifar-100-binary/{split}.bin"] = np.column_stack([coarse, fine, x]).tobytes()
        truth["cifar100", split] = {
            "X": x.reshape(-1, 3, 32, 32),
            "y": fine.astype(np.int64),
            "y_coarse": coarse.astype(np.int64),
        }
    files["cifar100", "cifar-100-binary.tar.gz"] = tar_gz(members)
    return files, truth


class Server:
    """A threaded HTTP server on 127.0.0.1 serving ``files`` at ``/<dataset>/<name>``.

    ``mode`` makes it misbehave: ``'404'``, ``'500'``, or ``'truncate'`` (announces the
    full length, sends half, closes).
    """

    def __init__(self, files: dict[tuple[str, str], bytes]):
        self.files = files
        self.mode = "ok"
        self.half_sent = threading.Event()  # mode 'stall': half of a body went out
        self.release = threading.Event()  # ... and the rest waits for this
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                key = tuple(self.path.strip("/").split("/", 1))
                body = server.files.get(key)  # type: ignore[arg-type]
                if server.mode == "500":
                    self.send_error(500)
                    return
                if body is None or server.mode == "404":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.mode in ("truncate", "stall"):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    server.half_sent.set()
                    if server.mode == "truncate" or not server.release.wait(60):
                        return
                    body = body[len(body) // 2 :]
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def fixture_files():
    return make_files(np.random.default_rng(12))


@pytest.fixture
def served(fixture_files, tmp_path, monkeypatch):
    """A running server, the mirror pointed at it, the cache in tmp, the sums injected."""
    files, truth = fixture_files
    for key, data in files.items():
        old = REMOTE_FILES[key]
        sha = hashlib.sha256(data).hexdigest()
        monkeypatch.setitem(REMOTE_FILES, key, RemoteFile(old.dataset, old.name, old.url, sha))
    server = Server(dict(files))
    cache = tmp_path / "cache"
    monkeypatch.setenv(remote.MIRROR_ENV, server.url)
    monkeypatch.setenv(remote.DATA_DIR_ENV, str(cache))
    server.cache = cache
    server.truth = truth
    yield server
    server.close()


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def cache_files(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())


# ------------------------------------------------------------------------- reading the formats


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_each_dataset_downloads_converts_and_matches_the_served_arrays(served, name):
    for split in ("train", "test"):
        with load_standard(name, split, where="data.train") as ds:
            want = served.truth[name, split]
            np.testing.assert_array_equal(ds.read_x(slice(0, len(ds))), want["X"])
            np.testing.assert_array_equal(ds.read_y(slice(0, len(ds))), want["y"])
            assert ds.x_dtype == np.uint8
    if name == "cifar100":
        import h5py

        with h5py.File(served.cache / "cifar100" / "train.h5", "r") as f:
            np.testing.assert_array_equal(
                f["y_coarse"][()], served.truth[name, "train"]["y_coarse"]
            )
    # Converted once: later use reads the HDF5 files and asks the server for nothing.
    count = len(served.requests)
    served.close()
    with load_standard(name, "train") as ds:
        assert len(ds) == len(served.truth[name, "train"]["y"])
    assert len(served.requests) == count


def test_open_dataset_reaches_the_standard_datasets_through_builtins(served):
    assert set(STANDARD) <= set(BUILTINS)
    with open_dataset({"builtin": "mnist", "split": "test"}, None, "data.test") as ds:
        assert ds.example_shape == (1, 28, 28) and len(ds) == SIZES["test"]


def test_read_idx_reads_wider_big_endian_types():
    arr = np.array([[1, -2], [300, 7]], dtype=np.int32)
    got = read_idx(idx_bytes(arr, code=0x0C), "x")
    np.testing.assert_array_equal(got, arr)
    assert got.dtype == np.dtype("int32")


def test_schema_builtin_names_are_the_registry():
    from typing import get_args

    from bntrain.config.schema import DatasetSpec

    names = get_args(get_args(DatasetSpec.model_fields["builtin"].annotation)[0])
    assert set(names) == set(BUILTINS)


# ------------------------------------------------------------------------------------ the CLI


def test_data_fetch_and_list(served):
    result = run("data", "list")
    assert result.exit_code == 0, result.output
    assert f"cache: {served.cache}" in result.output
    assert result.output.count("missing") == 4 * 2 + 1 * 2 + 2 * 4  # every file missing

    result = run("data", "fetch", "mnist")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"ready: {served.cache / 'mnist' / 'train.h5'}",
        f"ready: {served.cache / 'mnist' / 'test.h5'}",
    ]
    lines = [line.split() for line in run("data", "list").output.splitlines()[2:]]
    mnist = {row[-1]: row for row in lines if row[0] == "mnist"}
    gz = served.cache / "mnist" / "train-images-idx3-ubyte.gz"
    assert mnist["train-images-idx3-ubyte.gz"][1:3] == [str(gz.stat().st_size), "ok"]
    assert mnist["train.h5"][2] == "ok"
    assert all(row[1:3] == ["-", "missing"] for row in lines if row[0] == "cifar10")

    gz.write_bytes(gz.read_bytes()[:-1] + b"x")  # damaged in the cache
    lines = [line.split() for line in run("data", "list").output.splitlines()[2:]]
    row = next(r for r in lines if r[0] == "mnist" and r[-1] == gz.name)
    assert row[2:4] == ["bad", "checksum"]


def test_data_fetch_unknown_name_is_exit_2(served):
    result = run("data", "fetch", "imagenet")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "Error: unknown dataset 'imagenet' (available: mnist, fashion_mnist, cifar10, cifar100)"
    )


def test_progress_bar_while_downloading(served, capsys):
    from bntrain.data.remote import fetch

    fetch(REMOTE_FILES["cifar10", "cifar-10-binary.tar.gz"], where="x", progress=True)
    err = capsys.readouterr().err
    assert "100%" in err


# ------------------------------------------------------------------------------- failure cases


def _expect_download_error(served, name: str, reason: str) -> None:
    result = run("data", "fetch", "mnist")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    target = served.cache / "mnist" / name
    assert lines[0] == (
        f"Error: data fetch mnist: cannot download mnist file '{name}' from "
        f"{served.url}/mnist/{name} ({reason}); put the file at {target} by hand, or set "
        f"BNTRAIN_DATA_MIRROR to a server holding <mirror>/mnist/{name}"
    )
    # Nothing half-written: no temporary file, no partial download, no converted file.
    assert cache_files(served.cache) == []


def test_http_404_is_exit_2(served):
    served.mode = "404"
    _expect_download_error(served, "train-images-idx3-ubyte.gz", "HTTP 404")


def test_http_500_is_exit_2(served):
    served.mode = "500"
    _expect_download_error(served, "train-images-idx3-ubyte.gz", "HTTP 500")


def test_truncated_transfer_is_exit_2(served):
    served.mode = "truncate"
    _expect_download_error(served, "train-images-idx3-ubyte.gz", "the transfer broke off")


def test_checksum_mismatch_is_exit_2(served, monkeypatch):
    key = ("mnist", "train-images-idx3-ubyte.gz")
    old = REMOTE_FILES[key]
    monkeypatch.setitem(REMOTE_FILES, key, RemoteFile(old.dataset, old.name, old.url, "0" * 64))
    _expect_download_error(
        served, "train-images-idx3-ubyte.gz", "the downloaded file's SHA-256 does not match"
    )


def test_no_server_is_exit_2(served, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    served.url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv(remote.MIRROR_ENV, served.url)
    _expect_download_error(served, "train-images-idx3-ubyte.gz", "cannot connect (offline?)")


def test_a_download_killed_midway_is_never_taken_for_complete(served):
    f = REMOTE_FILES["cifar10", "cifar-10-binary.tar.gz"]
    served.mode = "stall"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from bntrain.data.remote import RemoteFile, fetch; "
            "fetch(RemoteFile('cifar10', sys.argv[1], '', sys.argv[2]), where='x', progress=False)",
            f.name,
            f.sha256,
        ],
        env=dict(os.environ),
    )
    try:
        assert served.half_sent.wait(120), "the child never started downloading"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    target = served.cache / "cifar10" / f.name
    assert not target.exists()
    lines = [line.split() for line in run("data", "list").output.splitlines()[2:]]
    assert [r[1:3] for r in lines if r[0] == "cifar10" and r[-1] == f.name] == [["-", "missing"]]
    served.mode, served.half_sent = "ok", threading.Event()
    assert run("data", "fetch", "cifar10").exit_code == 0
    assert hashlib.sha256(target.read_bytes()).hexdigest() == f.sha256


def test_fit_offline_with_nothing_cached_is_one_line_exit_2(served, tmp_path):
    served.close()
    config = tmp_path / "c.yaml"
    config.write_text(
        "data: {train: {builtin: fashion_mnist, split: train}}\n"
        "model: {layers: [{type: dense, units: 10, nonlinearity: softmax}]}\n"
        "training: {epochs: 1, batch_size: 4, optimizer: {name: sgd, lr: 0.1}}\n"
    )
    result = run("fit", config)
    assert result.exit_code == 2
    name = "train-images-idx3-ubyte.gz"
    target = served.cache / "fashion_mnist" / name
    assert result.output == (
        f"Error: data.train: cannot download fashion_mnist file '{name}' from "
        f"{served.url}/fashion_mnist/{name} (cannot connect (offline?)); put the file at "
        f"{target} by hand, or set BNTRAIN_DATA_MIRROR to a server holding "
        f"<mirror>/fashion_mnist/{name}\n"
    )
    assert not (tmp_path / "runs").exists() and cache_files(served.cache) == []


def test_a_file_put_by_hand_is_used_offline(served, fixture_files):
    files, _ = fixture_files
    folder = served.cache / "mnist"
    folder.mkdir(parents=True)
    for (dataset, name), data in files.items():
        if dataset == "mnist":
            (folder / name).write_bytes(data)
    served.close()
    with load_standard("mnist", "test") as ds:
        np.testing.assert_array_equal(
            ds.read_y(slice(0, len(ds))), served.truth["mnist", "test"]["y"]
        )
    assert served.requests == []


def test_a_damaged_file_put_by_hand_is_named_when_offline(served, monkeypatch):
    target = served.cache / "mnist" / "train-images-idx3-ubyte.gz"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the file")
    served.mode = "404"
    result = run("data", "fetch", "mnist")
    assert result.exit_code == 2
    assert f"put the file at {target} (the file there has another SHA-256) by hand" in result.output
    assert target.read_bytes() == b"not the file"  # left for the user to see, never used


def test_an_unusable_cache_folder_is_exit_2(served, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(remote.DATA_DIR_ENV, str(blocker))
    result = run("data", "fetch", "cifar10")
    assert result.exit_code == 2
    assert result.output.startswith(
        f"Error: data fetch cifar10: cannot write '{blocker / 'cifar10' / 'cifar-10-binary.tar.gz'}' ("
    )
    assert result.output.strip().endswith("set BNTRAIN_DATA_DIR to a writable folder")


def test_a_full_disk_while_converting_is_exit_2(served, monkeypatch):
    import errno

    from bntrain.data import standard

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(standard, "write_hdf5_dataset", full)
    result = run("data", "fetch", "mnist")
    assert result.exit_code == 2
    train = served.cache / "mnist" / "train.h5"
    assert result.output.strip() == (
        f"Error: data fetch mnist: cannot write '{train}' (No space left on device); "
        "set BNTRAIN_DATA_DIR to a writable folder with space"
    )


def test_a_malformed_download_is_exit_2_and_not_converted(served, monkeypatch):
    key = ("mnist", "t10k-labels-idx1-ubyte.gz")
    bad = gzip.compress(idx_bytes(np.zeros(5, np.uint8))[:-2])  # shorter than its header says
    served.files[key] = bad
    old = REMOTE_FILES[key]
    sha = hashlib.sha256(bad).hexdigest()
    monkeypatch.setitem(REMOTE_FILES, key, RemoteFile(old.dataset, old.name, old.url, sha))
    result = run("data", "fetch", "mnist")
    assert result.exit_code == 2
    gz = served.cache / "mnist" / "t10k-labels-idx1-ubyte.gz"
    assert result.output.strip() == (
        f"Error: data fetch mnist: builtin mnist: '{gz}' holds 3 data bytes but its header "
        "(5,) needs 5 (truncated?); delete it to download again"
    )
    assert "test.h5" not in cache_files(served.cache / "mnist")


# ---------------------------------------------------------------------------- config and fit


def test_val_is_not_a_split_of_mnist(served, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            data:
              train: {builtin: mnist, split: val}
            model:
              input_shape: [1, 28, 28]
              layers:
                - {type: dense, units: 10, nonlinearity: softmax}
            """
        )
    )
    result = run("check", config)
    assert result.exit_code == 2
    assert result.output.startswith("Error: ")
    assert "data.train.split" in result.output and "c.yaml:2" in result.output
    assert "carve validation off train with data.val_split" in result.output


def test_fit_on_a_served_tiny_mnist(served, tmp_path):
    config = tmp_path / "mnist.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            data:
              train: {builtin: mnist, split: train}
              val_split: 0.25
              test: {builtin: mnist, split: test}
              preprocess: {scale: 0.00392156862745098}
            model:
              input_shape: [1, 28, 28]
              layers:
                - {type: dense, units: 8, nonlinearity: relu}
                - {type: dense, units: 10, nonlinearity: softmax}
            training:
              epochs: 1
              batch_size: 10
              optimizer: {name: sgd, lr: 0.1}
              seed: 1
            output: {dir: run}
            """
        )
    )
    result = run("fit", "-q", config)
    assert result.exit_code == 0, result.output
    assert "12 examples)" in result.output  # the served test split
    assert (tmp_path / "run" / "last.h5").is_file()
    assert {"test.h5", "train.h5"} <= set(cache_files(served.cache / "mnist"))


@pytest.mark.parametrize("config", ["mnist_mlp_ioffe.yaml", "cifar10_cnn.yaml"])
def test_shipped_configs_check_on_the_served_datasets(served, config):
    configs = Path(__file__).resolve().parents[1] / "configs"
    result = run("check", configs / config, "--set", "training.batch_size=4")
    assert result.exit_code == 0, result.output
    assert "total parameters:" in result.output


def test_docs_name_every_downloaded_file_and_its_source():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "datasets.md").read_text()
    for f in REMOTE_FILES.values():
        assert f"`{f.name}`" in docs
        assert f.url.endswith(f.name) and f"`{f.url[: -len(f.name)]}`" in docs
        assert f"`{f.dataset}`" in docs
