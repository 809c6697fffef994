"""The fit loop: config -> run folder with checkpoints and metrics.

:func:`fit` validates data against the network before compiling anything,
trains, writes ``last.h5`` after every epoch and ``best.h5`` on the best
validation metric (both atomically; ``best.h5`` first), and appends a row per
epoch to ``metrics.csv``.  With ``training.checkpoint_every_steps`` it also
rewrites ``last.h5`` every that many optimizer steps inside an epoch.  With
``resume`` it continues a run exactly where its ``last.h5`` left off (at the
epoch and the batch inside it).

Where a run is lives in one :class:`TrainState`, written by
:meth:`TrainState.to_checkpoint` and read back by
:meth:`TrainState.from_checkpoint`; :func:`_train` is the loop over it.  The
run folder is locked while training (:mod:`bntrain.rundir`); SIGINT and
SIGTERM stop training between steps (:mod:`bntrain.interrupts`).  See
``docs/reliability.md``.
"""

from __future__ import annotations

import csv
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np

from . import __version__
from .backend import Runtime, device_name, resolve_runtime
from .checkpoint import Checkpoint, atomic_copy, clean_temp_files, read_checkpoint
from .config import dump_config, parse_config
from .data import Augmenter, BatchIterator, Preprocessor
from .distributed import Cluster, ClusterSpec, current, join
from .errors import CheckpointError, Interrupted, TrainingError, UsageError
from .fileio import atomic_open, atomic_write_text
from .finetune import init_from_checkpoint
from .graphs import build_predict, build_train_step
from .inputs import augmenter_for, check_batch_size, open_config_data, validate_config_data
from .interrupts import StopRequest, stop_requests
from .metrics import classification_metrics, predict_dataset
from .model import build_network
from .parallel import DataParallel, check_parallel_config, resolve_devices
from .rundir import checked_folder, new_run_folder, run_lock
from .runreport import RunReport
from .schedule import lr_table, steps_per_epoch
from .trainstate import Best, TrainState

__all__ = ["FitResult", "fit", "run_dir_for", "METRICS_COLUMNS"]

METRICS_COLUMNS = [
    "epoch",
    "step",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "epoch_seconds",
    "samples_per_sec",
]


@dataclass
class FitResult:
    """What a finished :func:`fit` produced."""

    run_dir: Path
    epochs_done: int
    best_epoch: int | None
    best_value: float | None
    best_metric: str
    network: object = None
    history: list[dict] = field(default_factory=list)


def run_dir_for(config) -> Path:
    """The run folder of a config: ``output.dir`` or ``runs/<name>`` next to the config."""
    return checked_folder(os.path.normpath(config.output_dir))


# --------------------------------------------------------------------------- the loop


@dataclass
class _Run:
    """What stays fixed while training: the settings, data, prediction function and files."""

    dir: Path
    training: object
    data: object
    predict: Callable
    n_classes: int
    static_batch: bool
    n_batches: int
    drop_last: bool
    report: RunReport
    augment: Augmenter | None = None
    cluster: Cluster = field(default_factory=Cluster)
    ramp: object = None

    def before_batch(self, state: TrainState) -> None:
        """Set the renorm bounds for the optimizer step in progress (the learning rate is in the graph)."""
        if self.ramp is not None:
            self.ramp.set_step(state.step)

    def after_batch(self, state: TrainState) -> bool:
        """End the accumulation cycle if the micro-batch just run closes it; return whether."""
        done = state.batch + 1
        if done % self.training.accumulate and done != self.n_batches:
            return False
        if state.step_fn.apply is not None:
            state.step_fn.apply()
        return True

    def checkpoint_due(self, state: TrainState, stepped: bool) -> bool:
        """Whether ``training.checkpoint_every_steps`` asks for ``last.h5`` inside the epoch now."""
        every = self.training.checkpoint_every_steps
        return bool(stepped and every and state.step % every == 0 and state.batch < self.n_batches)

    def batches(self, state: TrainState) -> BatchIterator:
        """The rest of the current epoch's batches, in the order fixed by (seed, epoch)."""
        tr = self.training
        return BatchIterator(
            self.data.train,
            tr.batch_size,
            shuffle=tr.shuffle,
            seed=tr.seed,
            epoch=state.epoch,
            preprocess=state.preprocess,
            start_batch=state.batch,
            drop_last=self.drop_last,
            augment=None if self.augment is None else partial(self.augment, epoch=state.epoch),
            part=(self.cluster.index, self.cluster.count),
        )

    def epoch_row(self, state: TrainState, seconds: float) -> dict:
        """The ``metrics.csv`` row of the epoch just trained (validation included)."""
        loss, acc = state.meter.means()
        row = {
            "epoch": state.epoch + 1,
            "step": state.step,
            "lr": state.lr,
            "train_loss": loss,
            "train_acc": acc,
            "val_loss": None,
            "val_acc": None,
            "epoch_seconds": seconds,
            "samples_per_sec": state.meter.seen / seconds if seconds > 0 else None,
        }
        if self.data.val is not None:
            probs, labels = predict_dataset(
                self.predict,
                self.data.val,
                state.preprocess,
                self.training.batch_size,
                pad_last=self.static_batch,
            )
            m = classification_metrics(probs, labels, self.n_classes)
            row["val_loss"], row["val_acc"] = m["loss"], m["accuracy"]
        return row

    def checkpoint(self, state: TrainState) -> None:
        """Rewrite ``last.h5`` inside an epoch (process 0 only)."""
        if self.cluster.writer:
            state.to_checkpoint(self.dir / "last.h5")

    def save_epoch(self, state: TrainState, improved: bool, row: dict) -> None:
        """Checkpoint an epoch's end: ``best.h5`` before ``last.h5``, so a kill between loses nothing."""
        if not self.cluster.writer:
            return
        if improved:
            state.to_checkpoint(self.dir / "best.h5")
            atomic_copy(self.dir / "best.h5", self.dir / "last.h5")
        else:
            state.to_checkpoint(self.dir / "last.h5")
        with _run_file_errors(self.dir):
            _append_metrics(self.dir / "metrics.csv", row)
        self.report.epoch(row, state.step, state.network.bn_layers)

    def check_stop(self, stop: StopRequest, state: TrainState) -> None:
        """Stop on a signal; with several processes, all at once on a signal or error in any."""
        if self.cluster.count > 1:
            signum, failed = self.cluster.agree([stop.signum or 0, 0])
            if failed:
                exc = TrainingError(
                    f"another process of this run failed; training stopped after step "
                    f"{state.step}; {self.last_good()}"
                )
                exc.agreed = True
                raise exc
            if not signum:
                # A signal that arrived during the agreement is in stop.signum (never cleared)
                # and goes into the next step's agreement: every process stops at the same step.
                return
            stop.signum = signum
        stop.check(lambda name: _stop_message(name, state, self))

    def fail(self, exc: Exception) -> None:
        """Tell the other processes (at their next :meth:`check_stop`) that this one failed."""
        if self.cluster.count > 1 and not isinstance(exc, Interrupted):
            if not getattr(exc, "agreed", False):
                self.cluster.agree([0, 1])

    def last_good(self) -> str:
        if not self.cluster.writer:
            return f"process 0 writes the run folder '{self.dir}'"
        last = self.dir / "last.h5"
        return (
            f"the last good checkpoint is '{last}'"
            if last.exists()
            else "no checkpoint was written"
        )


def _train(run: _Run, state: TrainState, stop: StopRequest, progress: bool, log) -> list[dict]:
    """Train from ``state`` to the last epoch: step, checkpoint, evaluate, log."""
    tr = run.training
    history = []
    while state.epoch < tr.epochs:
        t0 = time.perf_counter()
        try:
            _train_epoch(run, state, stop, progress, t0)
            row = run.epoch_row(state, time.perf_counter() - t0)
            improved = state.end_epoch(row[state.best.metric])
            run.save_epoch(state, improved, row)
        except Exception as exc:
            run.fail(exc)  # the other processes stop at their next step
            raise
        history.append(row)
        log(_epoch_line(row, tr.epochs, improved))
        run.check_stop(stop, state)
    return history


def _train_epoch(run: _Run, state: TrainState, stop: StopRequest, progress: bool, t0) -> None:
    """The rest of the current epoch's steps (and ``checkpoint_every_steps`` checkpoints)."""
    tr = run.training
    batches = run.batches(state)
    bar = _Progress(progress, run.n_batches, f"epoch {state.epoch + 1}/{tr.epochs}", state.batch)
    results = _Results(run, state, bar, t0)
    try:
        for x, y in batches:
            run.before_batch(state)
            loss, acc = state.step_fn.fn(x, y)
            stepped = run.after_batch(state)
            state.advance(stepped)
            results.add(loss, acc, len(x) * run.cluster.count)  # x: this process's slice
            if run.checkpoint_due(state, stepped):
                results.read()  # raises on a NaN first: nothing is saved from a NaN state
                run.checkpoint(state)
            run.check_stop(stop, state)
        results.read()
    finally:
        bar.close()
        batches.close()


class _Results:
    """The losses and accuracies of the steps queued but not yet read back from the device.

    Reading a result waits for its step, so the loop reads each one ``IN_FLIGHT``
    steps late: by then that step is done and the next ones are queued behind
    the running one, so the device never waits for the host.  Bounding the
    steps in flight bounds the memory their inputs hold.  Before a checkpoint and
    at the end of the epoch every result is read.  A non-finite loss is
    therefore noticed up to ``IN_FLIGHT`` steps late, always before anything is
    saved.
    """

    IN_FLIGHT = 2

    def __init__(self, run: _Run, state: TrainState, bar: _Progress, t0: float):
        self.run, self.state, self.bar, self.t0 = run, state, bar, t0
        self.pending: list[tuple] = []

    def add(self, loss, acc, n: int) -> None:
        """Queue a batch's results (``state`` already advanced past it); read the oldest due."""
        self.pending.append((loss, acc, n, self.state.step))
        if len(self.pending) > self.IN_FLIGHT:
            self.read(keep=self.IN_FLIGHT)

    def read(self, keep: int = 0) -> None:
        """Account the pending results but the newest ``keep``, in order; raise on a NaN.

        Raises
        ------
        TrainingError
            On a non-finite loss that ``training.nan_policy`` does not let pass.
        """
        state, tr = self.state, self.run.training
        ready, self.pending = (
            self.pending[: len(self.pending) - keep],
            self.pending[len(self.pending) - keep :],
        )
        shown = None
        for loss, acc, n, step in ready:
            loss, acc = float(loss), float(acc)
            if state.account(loss, acc, n):
                shown = loss, acc
            elif tr.nan_policy == "stop" or state.nan_streak >= tr.max_consecutive_nan:
                raise TrainingError(_nan_message(state, self.run, step))
        rate = state.meter.seen / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.update(len(ready), shown, rate)


def _nan_message(state: TrainState, run: _Run, step: int) -> str:
    tr = run.training
    why = (
        ""
        if tr.nan_policy == "stop"
        else f" for {state.nan_streak} consecutive steps (training.max_consecutive_nan)"
    )
    return (
        f"loss became NaN/Inf at epoch {state.epoch + 1}, step {step}{why}; training stopped "
        f"and {run.last_good()}; try a lower training.optimizer.lr or "
        f"training.optimizer.grad_clip_norm"
    )


def _stop_message(signal_name: str, state: TrainState, run: _Run) -> str:
    return (
        f"{signal_name} received: training stopped after step {state.step}; {run.last_good()}; "
        f"continue with --resume {run.dir}"
    )


# --------------------------------------------------------------------------- setting up


def fit(
    config,
    *,
    force: bool = False,
    resume: str | Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda line: None,
    device: str | None = None,
    devices: str | int | None = None,
    cluster: ClusterSpec | None = None,
    after: Callable[[FitResult], object] | None = None,
) -> FitResult:
    """Train the network a config describes and write its run folder.

    Parameters
    ----------
    config : bntrain.config.Config
        The validated config.
    force : bool
        Replace an existing run folder that bntrain created.
    resume : path-like, optional
        A run folder whose ``last.h5`` to continue from.
    progress : bool
        Show a progress bar per epoch (on stderr).
    log : callable
        Receives one line per epoch and a few status lines.
    device : str, optional
        Overrides ``config.device``.
    devices : {'auto'} or int, optional
        Overrides ``config.devices`` (data-parallel training, see ``docs/distributed.md``).
    cluster : ClusterSpec, optional
        Join other processes (hosts) of the same run (``--coordinator`` ...); without
        it, the environment JAX reads decides (one process when it says nothing).
    after : callable, optional
        Called with the result before the run folder's lock is released (the
        command layer recomputes statistics and evaluates there).

    Raises
    ------
    UsageError
        Bad data, a run folder that may not be replaced or is in use, or a
        resume that does not match (exit 2).
    TrainingError
        A non-finite loss (exit 1); the last good checkpoint stays.
    Interrupted
        SIGINT or SIGTERM (exit 130 or 143), after the step in progress.
    """
    cluster = join(cluster)
    runtime = resolve_runtime(config.backend, device or config.device)
    tr = config.training
    n_devices = resolve_devices(devices or config.devices, runtime)
    check_parallel_config(config, n_devices)
    data = open_config_data(config)
    try:
        network = build_network(config.model, data.input_shape, seed=tr.seed)
        validate_config_data(data, network.n_classes)
        check_batch_size(data, tr.batch_size, network)
        _check_virtual_batch_size(config)
        if resume is None and config.model.init_from is not None:
            path = Path(config.base_dir) / config.model.init_from
            report = init_from_checkpoint(network, path, config.model.skip_mismatched)
            for line in report.lines(path):
                log(line)
        augment = augmenter_for(config, data.input_shape)
        with _run_folder(config, resume, force, cluster) as run_dir, stop_requests() as stop:
            with cluster.all_or_none("to set up training"):
                ckpt = None if resume is None else _resume_checkpoint(config, network, run_dir)
                run, state = _setup(config, runtime, n_devices, network, data, run_dir, ckpt, log)
            run.augment = augment
            try:
                history = _train(run, state, stop, progress, log)
            finally:
                run.report.close()
            result = FitResult(
                run_dir=run_dir,
                epochs_done=tr.epochs,
                best_epoch=state.best.epoch,
                best_value=state.best.value,
                best_metric=state.best.metric,
                network=network,
                history=history,
            )
            if after is not None:
                cluster.barrier("checkpoints written")  # process 0 wrote what all read next
                after(result)  # still holding the run folder's lock
        return result
    finally:
        data.close()


def _check_virtual_batch_size(config) -> None:
    v = config.model.batch_norm.virtual_batch_size
    if v is not None and config.training.batch_size % v:
        raise UsageError(
            f"model.batch_norm.virtual_batch_size: {v} does not divide training.batch_size "
            f"({config.training.batch_size}); pick a divisor of the batch size"
        )


@contextmanager
def _run_folder(config, resume, force, cluster: Cluster):
    """The run folder, locked by process 0, which alone writes it (the others get its path)."""
    with ExitStack() as stack:
        with cluster.all_or_none("to prepare the run folder"):
            if cluster.writer:
                run_dir = stack.enter_context(_own_run_folder(config, resume, force))
            else:
                run_dir = run_dir_for(config) if resume is None else checked_folder(resume)
        yield run_dir


@contextmanager
def _own_run_folder(config, resume, force):
    """The run folder, locked: a new one (replacing only what bntrain may), or the one resumed."""
    if resume is None:
        with new_run_folder(run_dir_for(config), force=force, keep=[config.base_dir]) as run_dir:
            yield run_dir
        return
    run_dir = checked_folder(resume, "--resume")
    last = run_dir / "last.h5"
    if not last.exists():
        raise UsageError(f"--resume: '{last}' not found; is '{run_dir}' a bntrain run folder?")
    with run_lock(run_dir):
        yield run_dir


def _setup(config, runtime: Runtime, n_devices: int, network, data, run_dir: Path, ckpt, log):
    """Compile, write config.yaml, and build the run and its state (fresh, or from ``ckpt``)."""
    tr = config.training
    pre = config.data.preprocess
    preprocess = Preprocessor(scale=pre.scale, standardize=pre.standardize)
    if ckpt is None and pre.standardize:
        preprocess.fit(data.train, tr.batch_size)
    cluster = current()
    # whole groups for ghost batch norm, whole slices for every process
    whole = config.model.batch_norm.virtual_batch_size is not None or cluster.count > 1
    drop_last = _drop_last(
        len(data.train), tr.batch_size, tr.shuffle or runtime.static_batch or whole
    )
    n = len(data.train)
    n_batches = n // tr.batch_size if drop_last else math.ceil(n / tr.batch_size)
    t0 = time.perf_counter()
    table = lr_table(tr, steps_per_epoch(n_batches, tr.accumulate))
    step_fn, predict = _compile(network, config, runtime, n_devices, table)
    info = _run_info(config, runtime, t0) | {"devices": n_devices, "processes": cluster.count}
    config_text = dump_config(config, extra={"run": info})
    metric = tr.best_metric if data.val is not None else tr.best_metric.replace("val_", "train_")
    writer = cluster.writer  # plots and TensorBoard from process 0 only
    resumed = None if ckpt is None else ckpt.step
    report = RunReport(run_dir, tr.plot and writer, tr.tensorboard and writer, resumed, log)
    run = _Run(
        run_dir,
        tr,
        data,
        predict,
        network.n_classes,
        runtime.static_batch,
        n_batches,
        drop_last,
        report,
        cluster=cluster,
    )
    run.ramp = network.ramp
    if ckpt is None:
        state = TrainState(
            network, step_fn, preprocess, tr.optimizer.name, config_text, Best(metric)
        )
        if writer:
            with _run_file_errors(run_dir):
                atomic_write_text(run_dir / "config.yaml", config_text)
        return run, state
    state = TrainState.from_checkpoint(
        ckpt,
        network=network,
        step_fn=step_fn,
        optimizer=tr.optimizer.name,
        config_text=config_text,
        best=Best(metric),
    )
    if state.batch > n_batches:
        raise CheckpointError(
            f"--resume: '{ckpt.path}' stopped at batch {state.batch} of an epoch of "
            f"{n_batches} batches"
        )
    where = f" and batch {state.batch}" if state.batch else ""
    log(f"resuming {run_dir} after epoch {state.epoch}{where} (step {state.step})")
    return run, state


def _compile(network, config, runtime: Runtime, n_devices: int, lr_table):
    """The training step and prediction function, data-parallel over ``n_devices`` if > 1."""
    tr = config.training
    static = tr.batch_size if runtime.static_batch else None
    dp = DataParallel(n_devices, runtime.device) if n_devices > 1 else None
    groups = n_devices if dp is not None and not config.model.batch_norm.sync else 1
    step_fn = build_train_step(
        network, tr, runtime.mode, batch_size=static, lr_table=lr_table, bn_groups=groups
    )
    if dp is not None:
        step_fn.fn = dp.wrap(step_fn.fn, local=True)  # each process passes its slice
        step_fn.apply = None if step_fn.apply is None else dp.wrap(step_fn.apply)
    predict = build_predict(network, runtime.mode, wrap=None if dp is None else dp.wrap)
    return step_fn, predict


def _run_info(config, runtime: Runtime, t0: float) -> dict:
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": config.training.seed,
        "config_dir": str(config.base_dir.resolve()),
        "backend": runtime.backend,
        "device": runtime.device,
        "device_name": device_name(runtime),
        "versions": _versions(),
        "compile_seconds": round(time.perf_counter() - t0, 2),
    }


def _versions() -> dict:
    import jax
    import pytensor

    return {
        "bntrain": __version__,
        "pytensor": pytensor.__version__,
        "jax": jax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------- resume checks


#: Training keys that may differ when resuming: they change neither the result nor the order.
_RESUME_MAY_CHANGE = ("epochs", "checkpoint_every_steps", "plot", "tensorboard")


def _resume_checkpoint(config, network, run_dir: Path) -> Checkpoint:
    """Read ``last.h5`` and refuse, before anything is compiled, what cannot resume exactly."""
    last = run_dir / "last.h5"
    try:
        if current().writer:
            clean_temp_files(run_dir)  # left by a write that was killed; never loaded
    except OSError as exc:
        raise CheckpointError(
            f"--resume: cannot clean up '{run_dir}': {exc.strerror or exc}"
        ) from None
    ckpt = read_checkpoint(last)
    try:
        run_config = parse_config(ckpt.config_text, source=str(last), base_dir=config.base_dir)
    except UsageError as exc:
        raise CheckpointError(
            f"--resume: the config stored in '{last}' does not load: {exc}"
        ) from None
    _check_resume_config(config, run_config)
    _check_sections(ckpt, network)
    _truncate_metrics(run_dir / "metrics.csv", int(ckpt.train_state["epoch"]))
    return ckpt


def _check_sections(ckpt: Checkpoint, network) -> None:
    where = f"'{ckpt.path}'"
    if ckpt.optimizer is None:
        raise CheckpointError(f"--resume: {where} has no /optimizer section; cannot resume exactly")
    if network.dropout_layers and not ckpt.rng:
        raise CheckpointError(f"--resume: {where} has no /rng section; dropout masks would differ")
    if ckpt.train_state is None:
        raise CheckpointError(f"--resume: {where} has no /train_state section")
    if ckpt.preprocess is None:
        raise CheckpointError(f"--resume: {where} has no /preprocess section")


def _check_resume_config(config, run_config) -> None:
    """Refuse to resume into a different run: only _RESUME_MAY_CHANGE keys may differ."""
    same_run = {"name", "run", "output", "devices"}  # a run may move to other devices
    a = config.model_dump(mode="json", exclude=same_run)
    b = run_config.model_dump(mode="json", exclude=same_run)
    for key in _RESUME_MAY_CHANGE:
        a["training"].pop(key, None)
        b["training"].pop(key, None)

    def first_diff(x, y, path=""):
        if isinstance(x, dict) and isinstance(y, dict):
            for key in list(x) + [k for k in y if k not in x]:
                d = first_diff(x.get(key), y.get(key), f"{path}.{key}" if path else key)
                if d:
                    return d
            return None
        if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (u, v) in enumerate(zip(x, y, strict=True)):
                d = first_diff(u, v, f"{path}[{i}]")
                if d:
                    return d
            return None
        return None if x == y else (path, y, x)

    diff = first_diff(a, b)
    if diff:
        path, was, now = diff
        raise UsageError(
            f"--resume: the config differs from the run's at {path} (run: {was!r}, now: {now!r}); "
            f"only training.{', training.'.join(_RESUME_MAY_CHANGE)} may change when resuming"
        )


# --------------------------------------------------------------------------- run-folder files


class _Progress:
    """A tqdm bar per epoch on a terminal; nothing otherwise."""

    def __init__(self, enabled: bool, total: int, desc: str, initial: int = 0):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=initial, desc=desc, unit="batch", leave=False, file=sys.stderr
            )

    def update(self, batches: int, shown: tuple[float, float] | None, rate: float) -> None:
        """Move on by ``batches``; show the latest finite (loss, accuracy) and examples per second."""
        if self.bar is None:
            return
        if shown is not None:
            loss, acc = shown
            self.bar.set_postfix(
                loss=f"{loss:.4f}", acc=f"{acc:.3f}", samples_s=f"{rate:.0f}", refresh=False
            )
        self.bar.update(batches)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _drop_last(n: int, batch_size: int, shuffle: bool) -> bool:
    """Whether an epoch drops its last, short batch.

    Shuffled epochs drop any short last batch (its examples come back in other
    epochs); in stored order the last batch is kept unless it would hold a single
    example, which batch normalization cannot train on (zero variance).  The JAX
    backend, whose training step is compiled for one batch size, passes
    ``shuffle=True`` here so that it never meets a short batch.
    """
    rest = n % batch_size
    return rest != 0 and (shuffle or rest == 1)


class _run_file_errors:
    """Turn an OSError writing the run folder's text files into one-line TrainingError."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is not None and isinstance(exc, OSError):
            raise TrainingError(
                f"cannot write to run folder '{self.run_dir}': {exc.strerror or exc}; "
                f"the last checkpoint written stays valid"
            ) from None
        return False


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _append_metrics(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(METRICS_COLUMNS)
        writer.writerow([_fmt(row[c]) for c in METRICS_COLUMNS])


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Drop rows of epochs after ``epochs_done`` (written before a crash, never checkpointed).

    Raises
    ------
    UsageError
        If ``path`` is not a metrics file bntrain wrote (empty, another header, a bad row).
    """
    if not path.exists():
        return
    fix = "move it away to continue with a new metrics.csv"
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows or rows[0] != METRICS_COLUMNS:
            why = "is empty" if not rows else "does not start with bntrain's header"
            raise UsageError(f"--resume: '{path}' {why}; {fix}")
        for line, r in enumerate(rows[1:], start=2):
            if r and not (len(r) == len(METRICS_COLUMNS) and r[0].isdigit()):
                raise UsageError(f"--resume: {path}:{line}: not a row bntrain wrote; {fix}")
    except (OSError, ValueError, csv.Error) as exc:
        raise UsageError(f"--resume: '{path}' cannot be read ({exc}); {fix}") from None
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= epochs_done]
    if len(kept) != len(rows):
        with _run_file_errors(path.parent), atomic_open(path, "w", newline="") as fh:
            csv.writer(fh).writerows(kept)


def _epoch_line(row: dict, epochs: int, improved: bool) -> str:
    parts = [
        f"epoch {row['epoch']}/{epochs}",
        f"loss {row['train_loss']:.4f}",
        f"acc {row['train_acc']:.4f}",
    ]
    if row["val_loss"] is not None:
        parts += [f"val_loss {row['val_loss']:.4f}", f"val_acc {row['val_acc']:.4f}"]
    rate = row["samples_per_sec"]
    parts.append(f"{rate:.0f} samples/s" if rate else "")
    parts.append(f"{row['epoch_seconds']:.1f}s")
    return "  ".join(p for p in parts if p) + ("  *best" if improved else "")
