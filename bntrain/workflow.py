"""What each command does, end to end (the CLI calls exactly one of these).

``fit_command`` trains, then recomputes whole-training-set batch-norm
statistics on ``best.h5`` and ``last.h5`` and evaluates the test set;
``check_command`` validates a config and its data and describes the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .inputs import open_config_data, validate_config_data
from .model import build_network
from .train import fit

__all__ = ["check_command", "fit_command", "LayerRow"]


@dataclass
class LayerRow:
    """One line of ``bntrain check``'s table."""

    name: str
    type: str
    output_shape: tuple
    params: int


def check_command(config) -> list[LayerRow]:
    """Validate the config and its data, build the network, and describe its layers.

    Nothing is compiled and nothing is written.
    """
    data = open_config_data(config)
    try:
        network = build_network(config.model, data.input_shape, seed=config.training.seed)
        validate_config_data(data, network.n_classes)
    finally:
        data.close()
    rows = []
    for layer in network.layers:
        count = sum(int(p.get_value(borrow=True).size) for p in layer.params)
        rows.append(LayerRow(layer.name, type(layer).__name__, tuple(layer.output_shape), count))
    return rows


def fit_command(
    config,
    *,
    force: bool = False,
    resume=None,
    progress: bool = False,
    log: Callable[[str], None] = lambda line: None,
    device: str | None = None,
):
    """Train, then (``training.recompute_stats``) recompute BN statistics and evaluate.

    Returns
    -------
    (FitResult, dict or None)
        The training result and the test-set metrics, if the config has a test set.
    """
    result = fit(config, force=force, resume=resume, progress=progress, log=log, device=device)
    if config.training.recompute_stats and result.network.bn_layers:
        from .bnstats import recompute_stats_command

        for name in ("best.h5", "last.h5"):
            path = result.run_dir / name
            if path.exists():
                recompute_stats_command(path, device=device, progress=progress)
        log("recomputed whole-training-set batch-norm statistics in best.h5 and last.h5")
    test = None
    best = result.run_dir / "best.h5"
    if config.data.test is not None and best.exists():
        from .evaluate import evaluate_command

        test = evaluate_command(best, device=device, warn=log)
    return result, test
