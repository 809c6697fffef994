"""#11 A.4: an HDF5 data file or checkpoint never makes bntrain read another file.

Every path to an array is followed link by link inside the opened file: an
external link anywhere on the way (the array, a parent group, or the target of
a soft link) is refused, while soft links that stay inside the file still work.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from bntrain.checkpoint import read_checkpoint
from bntrain.cli import main
from bntrain.data import open_dataset
from bntrain.errors import CheckpointError, DataError

from ..test_evaluate import make_checkpoint, mlp_yaml

X = np.arange(40 * 64, dtype=np.float32).reshape(40, 64) % 17
Y = np.arange(40) % 10


def _other_file(folder: Path) -> Path:
    """The file an attacker wants read: a group ``g`` holding arrays X and y."""
    other = folder / "secret.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("g/X", data=X + 1)
        f.create_dataset("g/y", data=Y)
    return other


def _linked(folder: Path, kind: str) -> tuple[Path, str]:
    """A data file whose array path ``key`` reaches the other file in the way ``kind`` says."""
    other = _other_file(folder)
    path = folder / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("y", data=Y)
        if kind == "parent group":
            f["ext"] = h5py.ExternalLink(str(other), "/g")
            return path, "ext/X"
        if kind == "soft link through a parent":
            f["ext"] = h5py.ExternalLink(str(other), "/g")
            f["X"] = h5py.SoftLink("/ext/X")
            return path, "X"
        if kind == "soft link to an external link":
            f["E"] = h5py.ExternalLink(str(other), "/g/X")
            f["grp/X"] = h5py.SoftLink("/E")
            return path, "grp/X"
        if kind == "relative soft link chain":
            f["grp/ext"] = h5py.ExternalLink(str(other), "/g")
            f["grp/a"] = h5py.SoftLink("ext")
            f["X"] = h5py.SoftLink("grp/a/X")
            return path, "X"
    raise AssertionError(kind)


ESCAPES = {
    "parent group": "'ext/X' in 'data.h5' leads through 'ext'",
    "soft link through a parent": "'X' in 'data.h5' leads through 'ext'",
    "soft link to an external link": "'grp/X' in 'data.h5' leads through 'E'",
    "relative soft link chain": "'X' in 'data.h5' leads through 'grp/ext'",
}


@pytest.mark.parametrize("kind", sorted(ESCAPES))
def test_external_link_anywhere_on_the_path_is_refused(tmp_path, kind):
    _, key = _linked(tmp_path, kind)
    with pytest.raises(DataError) as e:
        open_dataset({"path": "data.h5", "x": key}, tmp_path, "data.train")
    assert str(e.value) == (
        f"data.train: {ESCAPES[kind]}, which is an external link to another file; bntrain "
        f"reads only self-contained HDF5 files (copy the data into 'data.h5')"
    )


def test_soft_links_inside_the_file_are_followed(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("store/arrays/X", data=X)
        f.create_dataset("store/arrays/labels", data=Y)
        f["store/a"] = h5py.SoftLink("arrays")  # relative
        f["X"] = h5py.SoftLink("/store/a/X")  # through another soft link
        f["y"] = h5py.SoftLink("store/arrays/labels")
        f["loop"] = h5py.SoftLink("/loop")
    with open_dataset({"path": path}, None, "data.train") as ds:
        x, y = ds.read(slice(0, 40))
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(y, Y)
    with pytest.raises(DataError, match="has no array 'loop'"):
        open_dataset({"path": path, "x": "loop"}, None, "data.train")


def test_fit_check_and_eval_refuse_a_parent_external_link(tmp_path):
    _, key = _linked(tmp_path, "parent group")
    cfg = tmp_path / "t.yaml"
    cfg.write_text(
        "data:\n"
        f"  train: {{path: data.h5, x: {key}}}\n"
        "model:\n"
        "  layers: [{type: dense, units: 10, nonlinearity: softmax}]\n"
        "training: {epochs: 1, batch_size: 8, optimizer: {name: sgd, lr: 0.1}}\n"
        "output: {dir: run}\n"
    )
    runner = CliRunner()
    line = (
        f"Error: data.train: {ESCAPES['parent group']}, which is an external link to another "
        f"file; bntrain reads only self-contained HDF5 files (copy the data into 'data.h5')"
    )
    for command in ("check", "fit"):
        result = runner.invoke(main, [command, str(cfg)], catch_exceptions=False)
        assert (result.exit_code, result.output.splitlines()) == (2, [line]), result.output
    ckpt = tmp_path / "ck.h5"
    make_checkpoint(ckpt, mlp_yaml())
    data = tmp_path / "data.h5"
    result = runner.invoke(
        main,
        ["eval", str(ckpt), "--data", str(data), "--x-key", key, "--stats", "ema"],
        catch_exceptions=False,
    )
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"Error: --data: 'ext/X' in '{data}' leads through 'ext', which is an external link to "
        f"another file; bntrain reads only self-contained HDF5 files (copy the data into "
        f"'{data}')"
    ]


@pytest.mark.parametrize("part", ["layer weights", "layer group", "external storage"])
def test_checkpoint_that_reaches_another_file_is_refused(tmp_path, part):
    ckpt = tmp_path / "ck.h5"
    network = make_checkpoint(ckpt, mlp_yaml())
    dense = next(layer.name for layer in network.layers if hasattr(layer, "W"))
    other = tmp_path / "other.h5"
    with h5py.File(ckpt, "r") as f, h5py.File(other, "w") as o:
        f.copy(f[f"model/layers/{dense}"], o, name="layer")
    raw = tmp_path / "weights.bin"
    with h5py.File(ckpt, "r+") as f:
        group = f[f"model/layers/{dense}"]
        w = group["W"][()]
        if part == "layer weights":
            del group["W"]
            group["W"] = h5py.ExternalLink(str(other), "/layer/W")
            bad = f"/model/layers/{dense}/W is an external link to another file"
        elif part == "layer group":
            del f[f"model/layers/{dense}"]
            f[f"model/layers/{dense}"] = h5py.ExternalLink(str(other), "/layer")
            bad = f"/model/layers/{dense} is an external link to another file"
        else:
            raw.write_bytes(w.tobytes())
            del group["W"]
            group.create_dataset("W", shape=w.shape, dtype=w.dtype, external=[(raw, 0, w.nbytes)])
            bad = (
                f"/model/layers/{dense}/W keeps its data in other files (external or virtual "
                f"dataset)"
            )
    message = f"'{ckpt}': {bad}; a bntrain checkpoint is self-contained: use one that bntrain wrote"
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(ckpt)
    assert str(e.value) == message
    result = CliRunner().invoke(main, ["eval", str(ckpt)], catch_exceptions=False)
    assert (result.exit_code, result.output.splitlines()) == (2, [f"Error: {message}"])
