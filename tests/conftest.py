"""Shared fixtures: small configs that train in seconds on the built-in digits."""

from __future__ import annotations

import textwrap

import pytest

from bntrain.backend import gpu_available

if gpu_available():  # compare GPU results with float32 tolerances: no TF32 in tests
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")

TINY_MLP = textwrap.dedent(
    """\
    name: tiny
    data:
      train: {builtin: digits, split: train}
      val: {builtin: digits, split: val}
      test: {builtin: digits, split: test}
      preprocess: {scale: 0.0625}
    model:
      batch_norm: {insert: auto, epsilon: 1.0e-4, alpha: 0.1}
      layers:
        - {type: dense, units: 16, nonlinearity: relu}
        - {type: dropout, p: 0.2}
        - {type: dense, units: 12, nonlinearity: tanh}
        - {type: dense, units: 10, nonlinearity: softmax}
    training:
      epochs: 2
      batch_size: 64
      optimizer: {name: nesterov, lr: 0.05, momentum: 0.9, weight_decay: 1.0e-4}
      schedule: {name: cosine}
      seed: 3
    output: {dir: run}
    """
)


def h5_datasets(path) -> dict:
    """Every dataset of an HDF5 file, by its path inside the file."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: (
                out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return out


@pytest.fixture
def tiny_config_file(tmp_path):
    """Write the tiny MLP config into a temporary folder and return its path."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_MLP)
    return path
