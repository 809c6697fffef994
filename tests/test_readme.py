"""The README's Lasagne-style example runs as written and trains."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_lasagne_style_example_runs_one_step_and_updates_bn_averages(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)  # noqa: S102
    loss = float(capsys.readouterr().out.strip())
    assert np.isfinite(loss) and 0 < loss < 10
    bn = [
        l
        for l in scope["lasagne"].layers.get_all_layers(scope["net"])
        if type(l).__name__ == "BatchNormLayer"
    ]
    assert len(bn) == 1
    assert np.any(bn[0].mean.get_value() != 0)  # the moving-average update was applied
