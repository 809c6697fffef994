"""``bntrain fit``: train, recompute whole-training-set BN statistics, evaluate the test set."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import dump_config, load_config
from ..distributed import ClusterSpec
from ..train import FitResult, fit, run_dir_for

__all__ = ["FitOutcome", "check_run_folder", "fit_command", "resolved_config_text"]


@dataclass
class FitOutcome:
    """What ``bntrain fit`` did.

    Attributes
    ----------
    result : bntrain.train.FitResult
        The training result (run folder, best epoch and metric, network).
    test : dict or None
        ``best.h5``'s metrics on the config's test set (see
        :func:`bntrain.commands.eval.evaluate_command`), if the config has one.
    """

    result: FitResult
    test: dict | None


def resolved_config_text(config_path, overrides: Sequence[str] = ()) -> str:
    """The config with every default filled in, as YAML (``fit --print-config``)."""
    return dump_config(load_config(config_path, overrides))


def check_run_folder(config) -> Path:
    """Return the config's run folder, refusing an ``output.dir`` that names a file.

    Raises
    ------
    UsageError
        If the run folder's path exists and is not a folder, or cannot be used
        (:func:`bntrain.rundir.checked_folder`, which :func:`run_dir_for` calls).
    """
    return run_dir_for(config)


def fit_command(
    config_path,
    overrides: Sequence[str] = (),
    *,
    force: bool = False,
    resume=None,
    progress: bool = False,
    log: Callable[[str], None] = lambda line: None,
    device: str | None = None,
    devices: str | int | None = None,
    cluster: ClusterSpec | None = None,
) -> FitOutcome:
    """Train, then (``training.recompute_stats``) recompute BN statistics and evaluate.

    Parameters
    ----------
    config_path : path-like
        The YAML config.
    overrides : sequence of str
        ``KEY=VALUE`` overrides (``--set``).
    force : bool
        Replace an existing run folder.
    resume : path-like, optional
        A run folder whose ``last.h5`` to continue from.
    progress : bool
        Show progress bars on stderr.
    log : callable
        Receives one line per epoch and a few status lines.
    device : {'auto', 'cpu', 'gpu'}, optional
        Overrides the config's device.
    devices : {'auto'} or int, optional
        Overrides the config's devices (data-parallel training, recomputing and evaluating).
    cluster : ClusterSpec, optional
        The processes (hosts) of a multi-process run (``--coordinator`` ...).

    Returns
    -------
    FitOutcome
        The training result and the test-set metrics.

    Raises
    ------
    UsageError
        Bad config, data or run folder (exit code 2).
    TrainingError
        A failure while training (exit code 1); the last good checkpoint stays.
    """
    from .eval import evaluate_command
    from .recompute import recompute_stats_command

    config = load_config(config_path, overrides)
    if resume is None:
        check_run_folder(config)
    tests = []

    def finish(result) -> None:  # runs while fit still holds the run folder's lock
        if config.training.recompute_stats and result.network.bn_layers:
            for name in ("best.h5", "last.h5"):
                path = result.run_dir / name
                if path.exists():
                    recompute_stats_command(path, device=device, devices=devices, progress=progress)
            log("recomputed whole-training-set batch-norm statistics in best.h5 and last.h5")
        best = result.run_dir / "best.h5"
        if config.data.test is not None and best.exists():
            tests.append(evaluate_command(best, device=device, devices=devices, warn=log))

    result = fit(
        config,
        force=force,
        resume=resume,
        progress=progress,
        log=log,
        device=device,
        devices=devices,
        cluster=cluster,
        after=finish,
    )
    return FitOutcome(result, tests[0] if tests else None)
