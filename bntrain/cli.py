"""The command line: the only module that imports click.

Each command parses its options, calls one function of :mod:`bntrain.commands`
and prints the result.  A :class:`~bntrain.errors.BntrainError` becomes one
``Error:`` line and its exit code (2 for usage, config, data and checkpoint
errors, 1 at run time); no traceback is printed for anything a user can cause.
"""

from __future__ import annotations

import functools
import sys

import click

from . import __version__
from .errors import BntrainError
from .plots import METRICS

__all__ = ["main"]


def _fail(message: str, code: int):
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _is_device_out_of_memory(exc: RuntimeError) -> bool:
    """JAX/XLA reports running out of device memory as a RuntimeError naming RESOURCE_EXHAUSTED."""
    return "RESOURCE_EXHAUSTED" in str(exc)


def _handle_errors(batch_size_hint: str | None):
    """Turn bntrain's errors into one ``Error:`` line and an exit code.

    ``batch_size_hint`` names the setting that lowers the command's memory use,
    for the out-of-memory message (None: the command has none).
    """
    out_of_memory = "out of memory" + (
        f"; try a smaller {batch_size_hint}" if batch_size_hint else ""
    )

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except BntrainError as exc:
                _fail(str(exc), exc.exit_code)
            except KeyboardInterrupt:
                _fail("interrupted; the last checkpoint written stays valid", 130)
            except MemoryError:
                _fail(out_of_memory, 1)
            except RuntimeError as exc:
                if not _is_device_out_of_memory(exc):
                    raise
                _fail(out_of_memory, 1)

        return wrapper

    return decorate


def _echo(line: str) -> None:
    click.echo(line)


def _progress(quiet: bool) -> bool:
    """Progress bars only for a person watching stderr."""
    return not quiet and sys.stderr.isatty()


# --------------------------------------------------------------- options shared by commands

config_argument = click.argument("config", type=click.Path(dir_okay=False))
checkpoint_argument = click.argument("checkpoint", type=click.Path(dir_okay=False))
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. --set training.optimizer.lr=0.05 (repeatable; VALUE is YAML).",
)
device_option = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "gpu"]),
    default=None,
    help="Where to compute (default: the config's device, else auto).",
)


class _DeviceCount(click.ParamType):
    name = "auto|N"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, int):
            return value
        if str(value).isdigit() and int(value) >= 1:
            return int(value)
        self.fail(f"{value!r} is not auto or a device count >= 1", param, ctx)


devices_option = click.option(
    "--devices",
    type=_DeviceCount(),
    default=None,
    help="Devices to run on, data-parallel: auto (every GPU, 1 on the CPU) or a count "
    "(default: the config's devices).",
)


def cluster_options(fn):
    """``--coordinator``, ``--num-processes``, ``--process-id``: one ``cluster`` argument."""

    @functools.wraps(fn)
    def wrapper(*args, coordinator, num_processes, process_id, **kwargs):
        from .distributed import ClusterSpec

        return fn(*args, cluster=ClusterSpec(coordinator, num_processes, process_id), **kwargs)

    options = [
        click.option(
            "--coordinator",
            metavar="HOST:PORT",
            default=None,
            help="Several processes (hosts): process 0's address, the same for all "
            "(default: JAX_COORDINATOR_ADDRESS or SLURM's environment, else one process).",
        ),
        click.option(
            "--num-processes", type=int, default=None, help="With --coordinator: how many."
        ),
        click.option("--process-id", type=int, default=None, help="With --coordinator: 0 .. N-1."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


quiet_option = click.option(
    "--quiet", "-q", is_flag=True, help="Print only the final result; no progress bar."
)
x_key_option = click.option(
    "--x-key", default="X", show_default=True, help="Name of the examples array in --data."
)
batch_size_option = click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Examples per batch (default: the training batch size).",
)


def data_option(help: str):
    """``--data FILE`` with the command's own help text."""
    return click.option(
        "--data", type=click.Path(dir_okay=False), default=None, metavar="FILE", help=help
    )


plot_option = click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="OUT.png",
    help="Also draw a picture of the result to OUT.png.",
)


# --------------------------------------------------------------------------------- commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bntrain")
def main():
    """Train batch-normalized networks from YAML configs."""
    _quiet_backend_warnings()


def _quiet_backend_warnings() -> None:
    """Hide JAX/PyTensor notices that say nothing a user can act on."""
    import warnings

    for message in (
        r"Explicitly requested dtype .* is not available",  # JAX without x64: float32/int32 used
        r"Skipping Assert",  # PyTensor's JAX mode drops shape assertions it cannot trace
        r"The RandomType SharedVariables",  # JAX mode copies dropout generators
    ):
        warnings.filterwarnings("ignore", message=message, category=UserWarning)


@main.command()
@config_argument
@set_option
@click.option(
    "--print-config",
    is_flag=True,
    help="Print the resolved config (every default filled in) and exit.",
)
@click.option("--force", is_flag=True, help="Replace an existing run folder.")
@click.option(
    "--resume",
    type=click.Path(file_okay=False),
    default=None,
    metavar="RUN_DIR",
    help="Continue the run in RUN_DIR from its last.h5.",
)
@quiet_option
@device_option
@devices_option
@cluster_options
@_handle_errors("training.batch_size (--set training.batch_size=N)")
def fit(config, overrides, print_config, force, resume, quiet, device, devices, cluster):
    """Train the network CONFIG describes."""
    from .commands.fit import fit_command, resolved_config_text

    if print_config:
        click.echo(resolved_config_text(config, overrides), nl=False)
        return
    outcome = fit_command(
        config,
        overrides,
        force=force,
        resume=resume,
        progress=_progress(quiet),
        log=(lambda line: None) if quiet else _echo,
        device=device,
        devices=devices,
        cluster=cluster,
    )
    result, test = outcome.result, outcome.test
    best = (
        ""
        if result.best_value is None
        else f"; best {result.best_metric} {result.best_value:.4f} (epoch {result.best_epoch})"
    )
    click.echo(f"run folder: {result.run_dir}{best}")
    if test is not None and test.get("accuracy") is not None:
        click.echo(
            f"test accuracy: {test['accuracy']:.4f} ({test['stats']} statistics, {test['n_examples']} examples)"
        )


@main.command()
@config_argument
@set_option
@devices_option
@_handle_errors("training.batch_size (--set training.batch_size=N)")
def check(config, overrides, devices):
    """Validate CONFIG and its data, and print the network without training."""
    from .commands.check import check_command

    rows = check_command(config, overrides, devices=devices)
    inputs = [", ".join(r.inputs) or "-" for r in rows]
    width = max(len(r.name) for r in rows)
    twidth = max(len(r.type) for r in rows)
    iwidth = max(len(i) for i in inputs)
    click.echo(
        f"{'layer':<{width}}  {'type':<{twidth}}  {'inputs':<{iwidth}}  {'output shape':<18}  params"
    )
    for r, i in zip(rows, inputs, strict=True):
        shape = "(" + ", ".join("N" if d is None else str(d) for d in r.output_shape) + ")"
        click.echo(f"{r.name:<{width}}  {r.type:<{twidth}}  {i:<{iwidth}}  {shape:<18}  {r.params}")
    total, trainable = sum(r.params for r in rows), sum(r.trainable for r in rows)
    click.echo(
        f"total parameters: {total} ({total / 1e6:.2f}M); trainable: {trainable} "
        f"({trainable / 1e6:.2f}M)"
    )


@main.command()
@_handle_errors(None)
def schema():
    """Print the JSON Schema of config files (for editors: yaml-language-server)."""
    from .commands.schema import schema_command

    click.echo(schema_command())


@main.command("eval")
@checkpoint_argument
@data_option("HDF5/NPZ file with examples and labels (default: the config's test set, else val).")
@x_key_option
@click.option("--y-key", default="y", show_default=True, help="Name of the labels array in --data.")
@click.option(
    "--stats",
    type=click.Choice(["population", "ema", "batch"]),
    default=None,
    help="Batch-norm statistics: recomputed whole-training-set (population; "
    "default when present), training's moving averages (ema), or each "
    "batch's own (batch; results depend on the batch size).",
)
@batch_size_option
@click.option(
    "--predictions",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="OUT.npz",
    help="Write probabilities, predicted classes (and labels) to OUT.npz (never over an "
    "input, nor over a file that is not an earlier predictions file).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the metrics as JSON (and nothing else) on stdout.",
)
@click.option(
    "--details",
    is_flag=True,
    help="Also print the per-class accuracy table and the confusion matrix.",
)
@plot_option
@device_option
@devices_option
@cluster_options
@_handle_errors("--batch-size")
def eval_command(
    checkpoint,
    data,
    x_key,
    y_key,
    stats,
    batch_size,
    predictions,
    as_json,
    details,
    plot,
    device,
    devices,
    cluster,
):
    """Evaluate CHECKPOINT on a dataset (--plot draws the confusion matrix)."""
    from .commands.eval import evaluate_command

    m = evaluate_command(
        checkpoint,
        data=data,
        x_key=x_key,
        y_key=y_key,
        stats=stats,
        batch_size=batch_size,
        predictions=predictions,
        device=device,
        devices=devices,
        warn=lambda line: click.echo(line, err=True),
        plot=plot,
        cluster=cluster,
    )
    if as_json:
        import json

        click.echo(json.dumps(m))
        return
    click.echo(f"checkpoint: {m['checkpoint']} (epoch {m['epoch']})")
    click.echo(f"data: {m['data']} ({m['n_examples']} examples)")
    click.echo(f"stats: {m['stats']}")
    if m["has_labels"]:
        click.echo(f"loss: {m['loss']:.4f}")
        click.echo(f"accuracy: {m['accuracy']:.4f}")
    else:
        click.echo("no labels: loss and accuracy not computed")
    if details and m["has_labels"]:
        _echo_class_table(m["per_class_accuracy"], m["confusion_matrix"])
    if predictions is not None:
        click.echo(f"predictions: {predictions}")
    if plot is not None:
        click.echo(f"confusion matrix: {plot}")


def _echo_class_table(per_class, matrix) -> None:
    """The per-class accuracy table, then the confusion matrix (rows: true class)."""
    click.echo("class  examples  accuracy")
    for k, (acc, row) in enumerate(zip(per_class, matrix, strict=True)):
        shown = "-" if acc is None else f"{acc:.4f}"
        click.echo(f"{k:>5}  {sum(row):>8}  {shown:>8}")
    width = max(3, *(len(str(v)) for row in matrix for v in row))
    click.echo("confusion matrix (rows: true class, columns: predicted class)")
    click.echo("true\\pred " + " ".join(f"{j:>{width}}" for j in range(len(matrix))))
    for k, row in enumerate(matrix):
        click.echo(f"{k:>10} " + " ".join(f"{v:>{width}}" for v in row))


@main.command("recompute-stats")
@checkpoint_argument
@data_option(
    "HDF5/NPZ file with the examples (default: the training set named in the checkpoint's config)."
)
@x_key_option
@batch_size_option
@click.option(
    "--estimator",
    type=click.Choice(["population", "batch-mean"]),
    default="population",
    show_default=True,
    help="Exact whole-set mean and biased variance (population), or Ioffe & Szegedy's "
    "mean of batch means and of unbiased batch variances (batch-mean).",
)
@click.option(
    "--mode",
    type=click.Choice(["batch", "layerwise"]),
    default="batch",
    show_default=True,
    help="One pass with batch statistics in every layer (batch), or settle layers in "
    "order, upstream layers using their recomputed statistics (layerwise).",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="Write the result to FILE (default: update CHECKPOINT in place, atomically).",
)
@click.option(
    "--augment",
    is_flag=True,
    help="Apply the config's data.augment to the data (default: none, the distribution eval sees).",
)
@plot_option
@device_option
@devices_option
@cluster_options
@quiet_option
@_handle_errors("--batch-size")
def recompute_stats(
    checkpoint,
    data,
    x_key,
    batch_size,
    estimator,
    mode,
    output,
    augment,
    plot,
    device,
    devices,
    cluster,
    quiet,
):
    """Recompute CHECKPOINT's batch-norm statistics over the whole training set.

    --plot draws, per layer and channel, the moving averages against the new statistics.
    """
    from .commands.recompute import recompute_stats_command

    r = recompute_stats_command(
        checkpoint,
        data=data,
        x_key=x_key,
        batch_size=batch_size,
        estimator=estimator,
        mode=mode,
        output=output,
        device=device,
        devices=devices,
        progress=_progress(quiet),
        plot=plot,
        augment=augment,
        cluster=cluster,
    )
    if not quiet:
        width = max(len("layer"), *(len(row.name) for row in r.layers))
        click.echo(
            f"{'layer':<{width}}  {'values/ch':>10}  {'mean diff max':>13}  "
            f"{'mean':>8}  {'std diff max':>12}  {'mean':>8}"
        )
        for row in r.layers:
            click.echo(
                f"{row.name:<{width}}  {row.count:>10}  {row.mean_rel_diff_max:>13.4g}  "
                f"{row.mean_rel_diff_mean:>8.4g}  {row.std_rel_diff_max:>12.4g}  "
                f"{row.std_rel_diff_mean:>8.4g}"
            )
        click.echo("(moving averages vs recomputed statistics, relative to the recomputed std)")
    a = r.attrs
    passes = f"{r.passes} pass" + ("es" if r.passes != 1 else "")
    click.echo(
        f"wrote /bn_stats ({a['estimator']}, {a['mode']} mode, {a['n_examples']} examples, "
        f"{passes}) to {r.output}; report: {r.json_path}" + (f"; plot: {plot}" if plot else "")
    )


@main.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option(
    "--metric",
    type=click.Choice(METRICS),
    default=None,
    help="One panel of this metric (default: loss, accuracy and learning rate).",
)
@click.option(
    "-o", "--output", "out", type=click.Path(dir_okay=False), required=True, metavar="OUT.png"
)
@devices_option
@_handle_errors(None)
def plot(runs, metric, out, devices):
    """Draw the learning curves of one or more run folders (RUNS) into OUT.png.

    Runs on the CPU (--devices is accepted, checked, and has nothing to share).
    """
    from .commands.plot import plot_command

    click.echo(f"wrote {plot_command(runs, out, metric=metric)}")


@main.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "npz"]),
    default="onnx",
    show_default=True,
    help="ONNX (opset 17), or plain arrays with a JSON architecture in one NPZ file.",
)
@click.option(
    "--stats",
    type=click.Choice(["population", "ema"]),
    default=None,
    help="Batch-norm statistics: the recomputed whole-set ones (default when /bn_stats "
    "exists) or training's moving averages.",
)
@click.option(
    "--fold-bn/--no-fold-bn",
    default=True,
    show_default=True,
    help="Fold batch norm into the preceding conv/dense layer's weights.",
)
@click.option(
    "-o", "--output", "out", type=click.Path(dir_okay=False), required=True, metavar="OUT"
)
@devices_option
@_handle_errors(None)
def export(checkpoint, fmt, stats, fold_bn, out, devices):
    """Export CHECKPOINT for deployment (input: raw examples; output: probabilities).

    Runs on the CPU (--devices is accepted, checked, and has nothing to share).
    """
    from .commands.export import export_command

    r = export_command(checkpoint, out, fmt=fmt, stats=stats, fold_bn=fold_bn)
    folded = f", {len(r.folded)} batch-norm layers folded" if r.folded else ""
    click.echo(f"wrote {r.format} ({r.stats} statistics{folded}) to {r.path}")


@main.group()
def data():
    """The standard datasets' download cache (BNTRAIN_DATA_DIR, BNTRAIN_DATA_MIRROR)."""


@data.command("list")
@_handle_errors(None)
def data_list():
    """Show the cache folder and what is cached, with sizes and checksum state."""
    from .commands.data import data_list_command

    folder, rows = data_list_command()
    click.echo(f"cache: {folder}")
    width = max(len(r.dataset) for r in rows)
    click.echo(f"{'dataset':<{width}}  {'size':>12}  {'state':<12}  file")
    for r in rows:
        size = "-" if r.size is None else str(r.size)
        click.echo(f"{r.dataset:<{width}}  {size:>12}  {r.state:<12}  {r.path.name}")


@data.command("fetch")
@click.argument("name")
@quiet_option
@_handle_errors(None)
def data_fetch(name, quiet):
    """Download NAME (mnist, fashion_mnist, cifar10, cifar100) and convert it for use."""
    from .commands.data import data_fetch_command

    for path in data_fetch_command(name, progress=_progress(quiet)):
        click.echo(f"ready: {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
