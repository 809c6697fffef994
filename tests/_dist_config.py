"""The tiny digits run that the data-parallel and multi-process tests train."""

from __future__ import annotations

import textwrap

CONFIG = textwrap.dedent(
    """\
    name: dist
    data:
      train: {builtin: digits, split: train}
      val: {builtin: digits, split: val}
      preprocess: {scale: 0.0625}
    model:
      batch_norm: {insert: auto, epsilon: 1.0e-4, alpha: 0.1}
      layers:
        - {type: dense, units: 16, nonlinearity: relu}
        - {type: dense, units: 10, nonlinearity: softmax}
    training:
      epochs: 1
      batch_size: 64
      shuffle: true
      optimizer: {name: momentum, lr: 0.1, momentum: 0.9}
      seed: 5
      recompute_stats: false
    """
)
