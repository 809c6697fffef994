"""Hostile data files through ``bntrain fit`` and ``bntrain check``: rejected before training.

Each case exits 2 with one ``Error:`` line naming the problem, and ``fit`` leaves
no run folder.  Also: how the trainer treats a batch that would hold one example.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from bntrain.cli import main
from bntrain.train import _drop_last

N, D = 200, 64


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _h5(path: Path, X, y) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=X)
        f.create_dataset("y", data=y)


TRUNCATE_AT = [0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 0.999]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """name -> (data file, a fragment the error line must contain)."""
    d = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32)
    y = rng.integers(0, 10, N)
    good = d / "good.h5"
    _h5(good, X, y)
    raw = good.read_bytes()
    out: dict[str, tuple[Path, str]] = {}
    for frac in TRUNCATE_AT:
        p = d / f"trunc{frac}.h5"
        p.write_bytes(raw[: int(len(raw) * frac)])
        out[f"truncated at {frac:.0%}"] = (p, "is not a readable HDF5 file")
    p = d / "zeroed.h5"
    p.write_bytes(b"\0" * 512 + raw[512:])
    out["zeroed header"] = (p, "is not a readable HDF5 file")
    p = d / "vlen.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("X", data=np.array(["x" * D] * N, dtype=h5py.string_dtype()))
        f.create_dataset("y", data=y)
    out["object (variable-length string) dtype"] = (p, "has string dtype")
    p = d / "bytes.h5"
    _h5(p, np.full((N, D), b"ab", dtype="S2"), y)
    out["fixed-length string dtype"] = (p, "has string dtype")
    p = d / "ystr.h5"
    _h5(p, X, np.array([b"cat"] * N))
    out["string labels"] = (p, "y must hold integer class")
    for name, (i, j, v) in {"NaN row": (17, 3, np.nan), "Inf row": (150, 0, -np.inf)}.items():
        bad = X.copy()
        bad[i, j] = v
        p = d / f"{name.split()[0]}.h5"
        _h5(p, bad, y)
        out[name] = (p, f"non-finite value ({'nan' if np.isnan(v) else '-inf'}) in example {i}")
    for name, (i, v) in {"label too large": (42, 10), "negative label": (5, -1)}.items():
        bad = y.copy()
        bad[i] = v
        p = d / f"label{v}.h5"
        _h5(p, X, bad)
        out[name] = (p, f"label {v} at example {i} is outside [0, 10)")
    p = d / "pickled.npz"
    np.savez(p, X=np.array([{"a": 1}] * N, dtype=object), y=y)
    out["NPZ with pickled objects"] = (
        p,
        "holds pickled Python objects, which bntrain does not load",
    )
    p = d / "huge.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("X", shape=(10**10, D), dtype=np.float32, chunks=(64, D))
        f.create_dataset("y", data=y)
    out["declared shape far larger than memory"] = (p, "does not store all of it")
    p = d / "short_y.h5"
    _h5(p, X, y[:-1])
    out["fewer labels than examples"] = (p, f"X has {N} examples but y has {N - 1}")
    return out


def config_for(folder: Path, data: Path, **training) -> Path:
    extra = "".join(f", {k}: {v}" for k, v in training.items())
    text = textwrap.dedent(
        f"""\
        name: t
        data:
          train: {{path: '{data}'}}
        model:
          layers:
            - {{type: dense, units: 8, nonlinearity: relu}}
            - {{type: dense, units: 10, nonlinearity: softmax}}
        training: {{epochs: 1, batch_size: 32, optimizer: {{name: sgd, lr: 0.1}}{extra}}}
        output: {{dir: run}}
        """
    )
    path = folder / "t.yaml"
    path.write_text(text)
    return path


CASES = [
    *[f"truncated at {f:.0%}" for f in TRUNCATE_AT],
    "zeroed header",
    "object (variable-length string) dtype",
    "fixed-length string dtype",
    "string labels",
    "NaN row",
    "Inf row",
    "label too large",
    "negative label",
    "NPZ with pickled objects",
    "fewer labels than examples",
    "declared shape far larger than memory",
]


@pytest.mark.parametrize("command", ["check", "fit"])
@pytest.mark.parametrize("case", CASES)
def test_hostile_file_is_rejected_before_training(tmp_path, files, case, command):
    data, fragment = files[case]
    cfg = config_for(tmp_path, data)
    result = run(command, cfg)
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: data.train: "), result.output
    assert fragment in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.yaml"]


def test_hostile_files_counted(files):
    """docs/reliability.md quotes the number of hostile files (x2 commands) these tests use."""
    import re

    doc = (Path(__file__).resolve().parent.parent / "docs" / "reliability.md").read_text()
    quoted = re.findall(r"\*\*(\d+) hostile files x 2 commands\*\*", doc)
    assert quoted == [str(len(CASES))]
    assert sorted(files) == sorted(CASES) and len(set(CASES)) == len(CASES)


class _Rows:
    """An in-memory dataset: example i is the row [i]."""

    def __init__(self, n):
        self.x = np.arange(n, dtype=np.float32)[:, None]
        self.y = np.zeros(n, dtype=np.int32)

    def __len__(self):
        return len(self.x)

    def read(self, sel):
        return self.x[sel], self.y[sel]


@pytest.mark.parametrize(
    "n, batch, shuffle, drop",
    [
        (200, 32, True, True),  # shuffled: any short batch is dropped
        (200, 32, False, False),  # stored order: the short batch of 8 is kept
        (200, 199, False, True),  # stored order: a last batch of ONE is dropped
        (201, 40, False, True),
        (200, 40, False, False),  # no short batch at all
    ],
)
def test_a_training_batch_never_holds_one_example(n, batch, shuffle, drop):
    """The batches an epoch of training reads (the loop's drop rule and iterator)."""
    from bntrain.data import BatchIterator

    assert _drop_last(n, batch, shuffle) is drop
    for epoch in range(3):
        it = BatchIterator(
            _Rows(n), batch, shuffle=shuffle, seed=0, epoch=epoch, drop_last=drop, prefetch=0
        )
        seen = [x[:, 0].astype(int) for x, _ in it]
        sizes = [len(b) for b in seen]
        assert min(sizes) >= 2
        assert sizes[:-1] == [batch] * (len(sizes) - 1)
        ids = np.concatenate(seen)
        assert len(set(ids.tolist())) == len(ids)  # no example twice in an epoch
        # only a short last batch is ever left out: fewer than `batch` examples
        assert n - batch < len(ids) <= n
        if not shuffle:
            np.testing.assert_array_equal(ids, np.arange(len(ids)))


def test_batch_size_one_is_refused_for_batch_norm(tmp_path, files):
    good = files["NaN row"][0].with_name("good.h5")
    cfg = config_for(tmp_path, good, batch_size=1)
    text = cfg.read_text().replace("batch_size: 32, ", "")
    cfg.write_text(text)
    result = run("fit", cfg)
    assert result.exit_code == 2, result.output
    assert result.output == (
        "Error: training.batch_size: 1 cannot train batch normalization (a batch of one "
        "example has no variance); use 2 or more\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.yaml"]


def test_stored_order_drops_a_final_batch_of_one_in_training(tmp_path, files):
    """200 examples, batch 199, no shuffling: one step per epoch, never a batch of 1."""
    good = files["NaN row"][0].with_name("good.h5")
    cfg = config_for(tmp_path, good, shuffle="false", recompute_stats="false", epochs=2)
    text = cfg.read_text().replace("batch_size: 32", "batch_size: 199").replace("epochs: 1, ", "")
    cfg.write_text(text)
    result = run("fit", cfg, "--quiet")
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "run" / "last.h5", "r") as f:
        assert f.attrs["step"] == 2 and f.attrs["epoch"] == 2
