"""The fit loop: config -> run folder with checkpoints and metrics.

:func:`fit` validates data against the network before compiling anything,
trains, writes ``last.h5`` after every epoch and ``best.h5`` on the best
validation metric (both atomically), and appends a row per epoch to
``metrics.csv``.  With ``training.checkpoint_every_steps`` it also rewrites
``last.h5`` every that many optimizer steps inside an epoch.  With ``resume``
it continues a run exactly where its ``last.h5`` left off (at the epoch and
the batch inside it).  See ``docs/reliability.md``.
"""

from __future__ import annotations

import csv
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from . import __version__
from .backend import Runtime, device_name, resolve_runtime
from .checkpoint import (
    atomic_copy,
    clean_temp_files,
    load_params,
    read_checkpoint,
    save_checkpoint,
)
from .config import dump_config, parse_config
from .data import BatchIterator, Preprocessor
from .errors import CheckpointError, DataError, TrainingError, UsageError
from .graphs import build_predict, build_train_step
from .inputs import open_config_data, validate_config_data
from .metrics import classification_metrics, predict_dataset
from .model import build_network
from .schedule import learning_rate

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
    return Path(os.path.normpath(config.output_dir))


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


class _BestTracker:
    def __init__(self, metric: str):
        self.metric = metric
        self.higher = metric.endswith("acc")
        self.value: float | None = None
        self.epoch: int | None = None

    def improves(self, value: float) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if self.value is None:
            return True
        return value > self.value if self.higher else value < self.value


def _prepare_run_dir(run_dir: Path, force: bool) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        if not force:
            raise UsageError(
                f"run folder '{run_dir}' already exists; pass --force to replace it, "
                f"or --resume {run_dir} to continue it"
            )
    try:
        if run_dir.exists() and any(run_dir.iterdir()):
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create run folder '{run_dir}': {exc.strerror or exc}") from None


#: Training keys that may differ when resuming: they change neither the result nor the order.
_RESUME_MAY_CHANGE = ("epochs", "checkpoint_every_steps")


def _check_resume_config(config, run_config) -> None:
    """Refuse to resume into a different run: only _RESUME_MAY_CHANGE keys may differ."""
    a = config.model_dump(mode="json", exclude={"name", "run", "output"})
    b = run_config.model_dump(mode="json", exclude={"name", "run", "output"})
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
            f"only training.epochs and training.checkpoint_every_steps may change when resuming"
        )


class _Progress:
    """A tqdm bar per epoch on a terminal; nothing otherwise."""

    def __init__(self, enabled: bool, total: int, desc: str, initial: int = 0):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=initial, desc=desc, unit="batch", leave=False, file=sys.stderr
            )

    def update(self, loss: float, acc: float, rate: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{loss:.4f}", acc=f"{acc:.3f}", samples_s=f"{rate:.0f}", refresh=False
            )
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def fit(
    config,
    *,
    force: bool = False,
    resume: str | Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda line: None,
    device: str | None = None,
) -> FitResult:
    """Train the network a config describes and write its run folder.

    Parameters
    ----------
    config : bntrain.config.Config
        The validated config.
    force : bool
        Replace an existing run folder.
    resume : path-like, optional
        A run folder whose ``last.h5`` to continue from.
    progress : bool
        Show a progress bar per epoch (on stderr).
    log : callable
        Receives one line per epoch and a few status lines.
    device : str, optional
        Overrides ``config.device``.

    Raises
    ------
    UsageError
        Bad data, an existing run folder, or a resume that does not match (exit 2).
    TrainingError
        A non-finite loss (exit 1); the last good checkpoint stays.
    """
    runtime = resolve_runtime(config.backend, device or config.device)
    tr = config.training
    data = open_config_data(config)
    try:
        network = build_network(config.model, data.input_shape, seed=tr.seed)
        validate_config_data(data, network.n_classes)
        if len(data.train) < tr.batch_size:
            raise DataError(
                f"data.train: {len(data.train)} examples are fewer than training.batch_size "
                f"({tr.batch_size}); lower training.batch_size"
            )
        if tr.batch_size < 2 and network.bn_layers:
            raise UsageError(
                "training.batch_size: 1 cannot train batch normalization (a batch of one "
                "example has no variance); use 2 or more"
            )
        start = _start_state(config, network, resume, force)
        run_dir = start["run_dir"]
        return _train(config, runtime, network, data, start, run_dir, progress, log)
    finally:
        data.close()


def _start_state(config, network, resume, force) -> dict:
    if resume is None:
        run_dir = run_dir_for(config)
        _prepare_run_dir(run_dir, force)
        return {"run_dir": run_dir, "ckpt": None}
    run_dir = Path(resume)
    last = run_dir / "last.h5"
    if not last.exists():
        raise UsageError(f"--resume: '{last}' not found; is '{run_dir}' a bntrain run folder?")
    try:
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
    _check_resume_sections(ckpt, network)
    load_params(ckpt, network.layers)
    return {"run_dir": run_dir, "ckpt": ckpt}


def _check_resume_sections(ckpt, network) -> None:
    """Refuse, before anything is compiled, a checkpoint that cannot resume exactly."""
    where = f"'{ckpt.path}'"
    if ckpt.optimizer is None:
        raise CheckpointError(f"--resume: {where} has no /optimizer section; cannot resume exactly")
    if network.dropout_layers and not ckpt.rng:
        raise CheckpointError(f"--resume: {where} has no /rng section; dropout masks would differ")
    if ckpt.train_state is None:
        raise CheckpointError(f"--resume: {where} has no /train_state section")


def _restore_training_state(ckpt, network, step_fn) -> None:
    """Load optimizer slots and dropout generators (sections checked by _check_resume_sections)."""
    where = f"'{ckpt.path}'"
    for name, var in step_fn.optimizer_state.items():
        if name not in ckpt.optimizer:
            raise CheckpointError(f"--resume: {where} lacks optimizer state /optimizer/{name}")
        value = ckpt.optimizer[name]
        if value.shape != var.get_value(borrow=True).shape:
            raise CheckpointError(
                f"--resume: {where}: /optimizer/{name} has shape {list(value.shape)}"
            )
        var.set_value(value.astype(var.dtype))
    for layer in network.dropout_layers:
        if layer.name not in ckpt.rng:
            raise CheckpointError(f"--resume: {where} lacks /rng/{layer.name}")
        try:
            step_fn.set_rng_state(layer, ckpt.rng[layer.name])
        except ValueError as exc:
            raise CheckpointError(f"--resume: {where}: {exc}") from None


def _train(
    config, runtime: Runtime, network, data, start, run_dir: Path, progress, log
) -> FitResult:
    tr = config.training
    ckpt = start["ckpt"]
    pre = config.data.preprocess
    if ckpt is not None and ckpt.preprocess is not None:
        preprocess = Preprocessor.from_state(ckpt.preprocess)
    else:
        preprocess = Preprocessor(scale=pre.scale, standardize=pre.standardize)
        if pre.standardize:
            preprocess.fit(data.train, tr.batch_size)
    t0 = time.perf_counter()
    static = tr.batch_size if runtime.static_batch else None
    step_fn = build_train_step(network, tr, runtime.mode, batch_size=static)
    predict = build_predict(network, runtime.mode)
    compile_seconds = time.perf_counter() - t0
    best = _BestTracker(
        tr.best_metric if data.val is not None else tr.best_metric.replace("val_", "train_")
    )
    first_epoch, step, first_batch = 0, 0, 0
    partial = {"loss_sum": 0.0, "acc_sum": 0.0, "seen": 0, "nan_streak": 0}
    if ckpt is not None:
        _restore_training_state(ckpt, network, step_fn)
        ts = ckpt.train_state
        first_epoch, step = int(ts["epoch"]), int(ts["step"])
        first_batch = int(ts.get("batch", 0) or 0)
        if first_batch:
            for key, kind in (("loss_sum", float), ("acc_sum", float), ("seen", int)):
                if key not in ts:
                    raise CheckpointError(
                        f"--resume: '{ckpt.path}' stopped inside an epoch but lacks "
                        f"/train_state {key}"
                    )
                partial[key] = kind(ts[key])
        partial["nan_streak"] = int(ts.get("nan_streak", 0) or 0)
        if ts.get("best_value", "") != "":
            best.value, best.epoch = float(ts["best_value"]), int(ts["best_epoch"])
        where = f" and batch {first_batch}" if first_batch else ""
        log(f"resuming {run_dir} after epoch {first_epoch}{where} (step {step})")
    runinfo = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": tr.seed,
        "config_dir": str(config.base_dir.resolve()),
        "backend": runtime.backend,
        "device": runtime.device,
        "device_name": device_name(runtime),
        "versions": _versions(),
        "compile_seconds": round(compile_seconds, 2),
    }
    config_text = dump_config(config, extra={"run": runinfo})
    metrics_path = run_dir / "metrics.csv"
    with _run_file_errors(run_dir):
        if ckpt is None:
            (run_dir / "config.yaml").write_text(config_text)
        _truncate_metrics(metrics_path, first_epoch)
    drop_last = _drop_last(len(data.train), tr.batch_size, tr.shuffle or runtime.static_batch)
    n_batches = (
        len(data.train) // tr.batch_size
        if drop_last
        else math.ceil(len(data.train) / tr.batch_size)
    )
    if first_batch > n_batches:
        raise CheckpointError(
            f"--resume: '{ckpt.path}' stopped at batch {first_batch} of an epoch of "
            f"{n_batches} batches"
        )
    history: list[dict] = []
    nan_streak = partial["nan_streak"]
    every = tr.checkpoint_every_steps

    def save_last(epochs_done: int, batch: int, extra: dict, lr: float) -> None:
        state = {
            "epoch": epochs_done,
            "batch": batch,
            "step": step,
            "best_metric": best.metric,
            "best_value": best.value,
            "best_epoch": best.epoch,
            "lr": lr,
            "nan_streak": nan_streak,
            **extra,
        }
        _save(
            run_dir / "last.h5",
            network,
            config_text,
            epochs_done,
            step,
            step_fn,
            tr,
            state,
            preprocess,
        )

    for epoch in range(first_epoch, tr.epochs):
        start_batch = first_batch if epoch == first_epoch else 0
        t_epoch = time.perf_counter()
        batches = BatchIterator(
            data.train,
            tr.batch_size,
            shuffle=tr.shuffle,
            seed=tr.seed,
            epoch=epoch,
            preprocess=preprocess,
            start_batch=start_batch,
            drop_last=drop_last,
        )
        bar = _Progress(progress, n_batches, f"epoch {epoch + 1}/{tr.epochs}", start_batch)
        if start_batch:
            loss_sum, acc_sum, seen = partial["loss_sum"], partial["acc_sum"], partial["seen"]
        else:
            loss_sum = acc_sum = 0.0
            seen = 0
        try:
            for b, (x, y) in enumerate(batches, start=start_batch):
                step_fn.lr.set_value(
                    np.float32(
                        learning_rate(tr.schedule, tr.optimizer.lr, step, n_batches, tr.epochs)
                    )
                )
                loss, acc = step_fn.fn(x, y)
                loss = float(loss)
                step += 1
                if not math.isfinite(loss):
                    nan_streak += 1
                    if tr.nan_policy == "stop" or nan_streak >= tr.max_consecutive_nan:
                        raise TrainingError(_nan_message(epoch, step, nan_streak, run_dir, tr))
                    continue
                nan_streak = 0
                loss_sum += loss * len(x)
                acc_sum += float(acc) * len(x)
                seen += len(x)
                bar.update(loss, float(acc), seen / max(time.perf_counter() - t_epoch, 1e-9))
                if every is not None and step % every == 0 and b + 1 < n_batches:
                    extra = {"loss_sum": loss_sum, "acc_sum": acc_sum, "seen": seen}
                    save_last(epoch, b + 1, extra, float(step_fn.lr.get_value()))
        finally:
            bar.close()
            batches.close()
        seconds = time.perf_counter() - t_epoch
        row = {
            "epoch": epoch + 1,
            "step": step,
            "lr": float(step_fn.lr.get_value()),
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": acc_sum / max(seen, 1),
            "val_loss": None,
            "val_acc": None,
            "epoch_seconds": seconds,
            "samples_per_sec": seen / seconds if seconds > 0 else None,
        }
        if data.val is not None:
            probs, labels = predict_dataset(
                predict, data.val, preprocess, tr.batch_size, pad_last=runtime.static_batch
            )
            m = classification_metrics(probs, labels, network.n_classes)
            row["val_loss"], row["val_acc"] = m["loss"], m["accuracy"]
        value = row[best.metric]
        improved = best.improves(value)
        if improved:
            best.value, best.epoch = value, epoch + 1
        save_last(epoch + 1, 0, {}, row["lr"])
        if improved:
            atomic_copy(run_dir / "last.h5", run_dir / "best.h5")
        with _run_file_errors(run_dir):
            _append_metrics(metrics_path, row)
        history.append(row)
        log(_epoch_line(row, tr.epochs, improved))
    return FitResult(
        run_dir=run_dir,
        epochs_done=tr.epochs,
        best_epoch=best.epoch,
        best_value=best.value,
        best_metric=best.metric,
        network=network,
        history=history,
    )


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


def _nan_message(epoch, step, streak, run_dir, tr) -> str:
    last = run_dir / "last.h5"
    keep = f"the last good checkpoint is '{last}'" if last.exists() else "no checkpoint was written"
    why = (
        ""
        if tr.nan_policy == "stop"
        else f" for {streak} consecutive steps (training.max_consecutive_nan)"
    )
    return (
        f"loss became NaN/Inf at epoch {epoch + 1}, step {step}{why}; training stopped and {keep}; "
        f"try a lower training.optimizer.lr or training.optimizer.grad_clip_norm"
    )


def _save(path, network, config_text, epoch, step, step_fn, tr, state, preprocess) -> None:
    save_checkpoint(
        path,
        layers=network.layers,
        config_text=config_text,
        epoch=epoch,
        step=step,
        optimizer_state={name: var.get_value() for name, var in step_fn.optimizer_state.items()},
        optimizer_attrs={
            "name": tr.optimizer.name,
            "lr": float(step_fn.lr.get_value()),
            "step": step,
        },
        rng_states={layer.name: step_fn.rng_state(layer) for layer in network.dropout_layers},
        train_state=state,
        preprocess_state=preprocess.state(),
    )


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
    """Drop rows of epochs after ``epochs_done`` (written before a crash, never checkpointed)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= epochs_done]
    if len(kept) != len(rows):
        with open(path, "w", newline="") as fh:
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
