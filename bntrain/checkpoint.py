"""The HDF5 checkpoint format: the only module that imports h5py for checkpoints.

Layout (``format_version`` 1; documented in ``docs/checkpoint.md``)::

    /                      attrs: format, format_version, bntrain_version, created,
                                  config (resolved YAML), epoch, step
    /model/layer_names     layer names in topological order, input first
    /model/layers/<name>   attrs: type, incoming, output_shape, hyperparameters;
                           datasets: the layer's parameters (W, b, beta, gamma, mean, inv_std)
    /optimizer/<state>     optimizer slots by name; attrs: name, lr, step
    /rng/<layer>           attrs: bit_generator, state (JSON) of each dropout generator
    /train_state           attrs: epoch, batch, step, best_metric, best_value, best_epoch, ...
    /preprocess            attrs: scale, standardize; datasets: mean, std
    /bn_stats/<bn layer>   mean, var (float32); attrs: estimator, mode, n_examples, ...

Every write is atomic (:mod:`bntrain.fileio`): the complete file is written
under a temporary name in the same folder, reopened and checked, fsynced,
renamed over the old file, and the folder is fsynced.  A temporary file left
by a killed writer is never loaded (:func:`read_checkpoint` refuses its name)
and :func:`clean_temp_files` deletes it.

A checkpoint is self-contained: one holding an external link, or a dataset
whose data lives in other files, is refused when read; so are non-finite
weights when they are loaded into a network.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .errors import CheckpointError
from .fileio import TMP_PREFIX, atomic_path, clean_temp_files
from .nn import layers as L
from .nn import nonlinearities

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "save_checkpoint",
    "read_checkpoint",
    "load_params",
    "write_bn_stats",
    "layer_hyperparams",
    "atomic_write",
    "atomic_copy",
    "clean_temp_files",
    "TMP_PREFIX",
]

FORMAT = "bntrain-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """What a checkpoint file holds, read back into NumPy arrays."""

    path: Path
    config_text: str
    epoch: int
    step: int
    layer_names: list[str]
    layer_types: dict[str, str]
    params: dict[str, dict[str, np.ndarray]]
    layer_attrs: dict[str, dict] = field(default_factory=dict)
    optimizer: dict[str, np.ndarray] | None = None
    optimizer_attrs: dict = field(default_factory=dict)
    rng: dict[str, dict] | None = None
    train_state: dict | None = None
    preprocess: dict | None = None
    bn_stats: dict[str, dict[str, np.ndarray]] | None = None
    bn_stats_attrs: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- writing


def atomic_write(path: str | os.PathLike, write, *, start_from: Path | None = None) -> None:
    """Write ``path`` atomically with ``write(h5file)`` (see :func:`bntrain.fileio.atomic_path`).

    The temporary file is read back and checked before it replaces anything.

    Parameters
    ----------
    path : path-like
        The final file name.
    write : callable
        Called with an open, writable ``h5py.File`` of the temporary file.
    start_from : Path, optional
        Copy this file first and modify the copy (used to update a checkpoint
        in place).

    Raises
    ------
    CheckpointError
        If the file cannot be written (disk full, no permission...); the old
        file, if any, is left untouched and the temporary file removed.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            if start_from is not None:
                shutil.copyfile(start_from, tmp)
            with h5py.File(tmp, "r+" if start_from is not None else "w") as f:
                write(f)
                f.flush()
            _read_path(tmp)  # verify it loads before it replaces anything
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint '{path}': {exc.strerror or exc}") from None


def atomic_copy(source, dest) -> None:
    """Copy the checkpoint ``source`` to ``dest`` atomically (checked before the rename)."""
    atomic_write(dest, lambda f: None, start_from=Path(source))


def layer_hyperparams(layer) -> dict:
    """Return a layer's constructor hyperparameters under their Lasagne names."""
    out: dict = {}

    def put(key, attr=None):
        value = getattr(layer, attr or key, None)
        if value is not None:
            out[key] = value

    if isinstance(layer, L.DenseLayer):
        put("num_units")
        put("num_leading_axes")
    elif isinstance(layer, L.Conv2DLayer):
        put("num_filters")
        put("filter_size")
        put("stride")
        out["pad"] = tuple(int(p) for p in layer.resolved_pad)
        put("untie_biases")
        put("flip_filters")
    elif isinstance(layer, L.Pool2DLayer):
        put("pool_size")
        put("stride")
        put("pad")
        put("ignore_border")
        put("mode")
    elif isinstance(layer, L.GlobalPoolLayer):
        out["pool_function"] = getattr(layer.pool_function, "__name__", "mean")
    elif isinstance(layer, L.DropoutLayer):
        put("p")
        put("rescale")
        put("shared_axes")
    elif isinstance(layer, L.BatchNormLayer):
        put("axes")
        put("epsilon")
        put("alpha")
        put("virtual_batch_size")
        for key in ("r_max", "d_max"):  # renorm: the bound in force (ramped), a float
            if hasattr(layer, key):
                value = getattr(layer, key)
                out[key] = float(value.get_value() if hasattr(value, "get_value") else value)
    elif isinstance(layer, L.FlattenLayer):
        put("outdim")
    elif isinstance(layer, L.ReshapeLayer):
        put("shape")
    elif isinstance(layer, L.ConcatLayer):
        put("axis")
    elif isinstance(layer, L.ElemwiseSumLayer):
        out["coeffs"] = [float(c) for c in layer.coeffs]
    nonlin = getattr(layer, "nonlinearity", None)
    if nonlin is not None:
        out["nonlinearity"] = nonlinearities.name_of(nonlin)
    return out


def _attr_value(value):
    if isinstance(value, (tuple, list)):
        return np.asarray([-1 if v is None else v for v in value])
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    return value


def _param_short_name(layer, param) -> str:
    prefix = f"{layer.name}."
    name = param.name or ""
    return name[len(prefix) :] if name.startswith(prefix) else name


def _write_model(f: h5py.File, layers) -> None:
    model = f.create_group("model")
    names = [layer.name for layer in layers]
    model.create_dataset("layer_names", data=np.array(names, dtype=h5py.string_dtype()))
    group = model.create_group("layers")
    for layer in layers:
        g = group.create_group(layer.name)
        g.attrs["type"] = type(layer).__name__
        if hasattr(layer, "input_layers"):
            g.attrs["incoming"] = np.array(
                [l.name for l in layer.input_layers], dtype=h5py.string_dtype()
            )
        elif layer.input_layer is not None:
            g.attrs["incoming"] = layer.input_layer.name
        g.attrs["output_shape"] = _attr_value(layer.output_shape)
        for key, value in layer_hyperparams(layer).items():
            g.attrs[key] = _attr_value(value)
        for param in layer.params:
            g.create_dataset(_param_short_name(layer, param), data=param.get_value())


def save_checkpoint(
    path,
    *,
    layers,
    config_text: str,
    epoch: int,
    step: int,
    optimizer_state: dict[str, np.ndarray] | None = None,
    optimizer_attrs: dict | None = None,
    rng_states: dict[str, dict] | None = None,
    train_state: dict | None = None,
    preprocess_state: dict | None = None,
) -> None:
    """Write a checkpoint atomically (see the module docstring for the layout).

    Parameters
    ----------
    layers : list of Layer
        Every layer of the network in topological order (names must be unique).
    config_text : str
        The resolved config as YAML.
    optimizer_state : dict
        Optimizer slots by name (``bntrain.nn.updates.optimizer_state``).
    rng_states : dict
        ``bit_generator.state`` of each dropout layer's generator, by layer name.
    train_state : dict
        Scalars needed to resume (epoch, batch, best metric...).
    preprocess_state : dict
        ``Preprocessor.state()``.
    """

    def write(f: h5py.File) -> None:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["bntrain_version"] = __version__
        f.attrs["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        f.attrs["config"] = config_text
        f.attrs["epoch"] = int(epoch)
        f.attrs["step"] = int(step)
        _write_model(f, layers)
        if optimizer_state is not None:
            g = f.create_group("optimizer")
            for key, value in (optimizer_attrs or {}).items():
                g.attrs[key] = value
            for name, value in optimizer_state.items():
                g.create_dataset(name, data=np.asarray(value))
        if rng_states:
            g = f.create_group("rng")
            for name, state in rng_states.items():
                sub = g.create_group(name)
                sub.attrs["bit_generator"] = state["bit_generator"]
                sub.attrs["state"] = json.dumps(state)
        if train_state is not None:
            g = f.create_group("train_state")
            for key, value in train_state.items():
                g.attrs[key] = "" if value is None else value
        if preprocess_state is not None:
            g = f.create_group("preprocess")
            for key, value in preprocess_state.items():
                if isinstance(value, np.ndarray):
                    g.create_dataset(key, data=value)
                else:
                    g.attrs[key] = "" if value is None else value

    atomic_write(path, write)


def write_bn_stats(
    source,
    stats: dict[str, tuple[np.ndarray, np.ndarray]],
    attrs: dict,
    output=None,
) -> None:
    """Store recomputed batch-norm statistics under ``/bn_stats`` (atomically).

    Parameters
    ----------
    source : path-like
        The checkpoint the statistics belong to.
    stats : dict
        ``{bn layer name: (mean, var)}``.
    attrs : dict
        Attributes of every ``/bn_stats/<name>`` group (estimator, mode, ...).
    output : path-like, optional
        Where to write; default: update ``source`` in place.
    """
    source = Path(source)

    def write(f: h5py.File) -> None:
        if "bn_stats" in f:
            del f["bn_stats"]
        group = f.create_group("bn_stats")
        for key, value in attrs.items():
            group.attrs[key] = value
        for name, (mean, var) in stats.items():
            sub = group.create_group(name)
            sub.create_dataset("mean", data=np.asarray(mean, dtype=np.float32))
            sub.create_dataset("var", data=np.asarray(var, dtype=np.float32))
            for key, value in attrs.items():
                sub.attrs[key] = value

    atomic_write(output or source, write, start_from=source)


# --------------------------------------------------------------------------- reading


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' not found")
    if not path.is_file():  # a FIFO would block the open forever; a device never ends
        raise CheckpointError(f"'{path}' is not a regular file, so not a checkpoint")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        text = str(exc)
        if "unable to lock file" in text:
            raise CheckpointError(
                f"'{path}' is locked by another process (HDF5 file locking); wait for it to "
                f"finish or stop it, then try again"
            ) from None
        if "already open for write" in text:
            raise CheckpointError(
                f"'{path}' was left marked 'open for write' by a process that did not close it "
                f"(HDF5 consistency flag); if no process uses it, clear the flag with "
                f"'h5clear -s {path}' or use another checkpoint"
            ) from None
        if isinstance(exc, PermissionError):
            raise CheckpointError(f"'{path}' cannot be read (permission denied)") from None
        raise CheckpointError(
            f"'{path}' is not a readable HDF5 checkpoint (truncated, corrupt, or locked by another process?)"
        ) from None


def _attrs(obj) -> dict:
    out = {}
    for key, value in obj.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def read_checkpoint(path) -> Checkpoint:
    """Read and check a checkpoint file.

    Raises
    ------
    CheckpointError
        If the file is missing, unreadable, not a bntrain checkpoint, of an
        unknown ``format_version``, or lacks a required part (named).
    """
    path = Path(path)
    if path.name.startswith(TMP_PREFIX):
        raise CheckpointError(
            f"'{path}' is the temporary file of an unfinished checkpoint write; it is never "
            f"loaded: use the checkpoint it was meant to replace"
        )
    return _read_path(path)


def _read_path(path: Path) -> Checkpoint:
    f = _open(path)
    try:
        return _read(f, path)
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"'{path}' is damaged: {exc}") from None
    finally:
        f.close()


def _check_self_contained(f: h5py.File, path: Path) -> None:
    """Refuse a file that would make h5py read another file (external links or storage)."""
    problem = None

    def link(name: bytes) -> bool | None:  # a true result stops the visit
        nonlocal problem
        if f.id.links.get_info(name).type == h5py.h5l.TYPE_EXTERNAL:
            problem = f"/{name.decode()} is an external link to another file"
        return problem is not None or None

    def dataset(name: str, item: object) -> bool | None:
        nonlocal problem
        if isinstance(item, h5py.Dataset) and (item.is_virtual or item.external):
            problem = f"/{name} keeps its data in other files (external or virtual dataset)"
        return problem is not None or None

    f.id.links.visit(link)
    if problem is None:
        f.visititems(dataset)
    if problem is not None:
        raise CheckpointError(
            f"'{path}': {problem}; a bntrain checkpoint is self-contained: use one that "
            f"bntrain wrote"
        )


def _read(f: h5py.File, path: Path) -> Checkpoint:
    if f.attrs.get("format") != FORMAT:
        raise CheckpointError(
            f"'{path}' is not a bntrain checkpoint (no format = {FORMAT!r} attribute)"
        )
    _check_self_contained(f, path)
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"'{path}' has format_version {version}; this bntrain ({__version__}) reads version {FORMAT_VERSION}"
        )
    for key in ("config", "epoch", "step"):
        if key not in f.attrs:
            raise CheckpointError(f"'{path}' lacks the root attribute {key!r}")
    if "model/layer_names" not in f or "model/layers" not in f:
        raise CheckpointError(f"'{path}' lacks /model/layer_names or /model/layers")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["model/layer_names"][()]]
    types, params, layer_attrs = {}, {}, {}
    for name in names:
        if name not in f["model/layers"]:
            raise CheckpointError(f"'{path}' lacks the group /model/layers/{name}")
        g = f["model/layers"][name]
        layer_attrs[name] = _attrs(g)
        types[name] = layer_attrs[name].get("type", "")
        params[name] = {key: g[key][()] for key in g.keys()}
    ckpt = Checkpoint(
        path=path,
        config_text=str(f.attrs["config"]),
        epoch=int(f.attrs["epoch"]),
        step=int(f.attrs["step"]),
        layer_names=names,
        layer_types=types,
        params=params,
        layer_attrs=layer_attrs,
    )
    if "optimizer" in f:
        ckpt.optimizer = {key: f["optimizer"][key][()] for key in f["optimizer"].keys()}
        ckpt.optimizer_attrs = _attrs(f["optimizer"])
    if "rng" in f:
        ckpt.rng = {key: json.loads(_attrs(f["rng"][key])["state"]) for key in f["rng"].keys()}
    if "train_state" in f:
        ckpt.train_state = _attrs(f["train_state"])
    if "preprocess" in f:
        g = f["preprocess"]
        ckpt.preprocess = {**_attrs(g), **{key: g[key][()] for key in g.keys()}}
    if "bn_stats" in f:
        g = f["bn_stats"]
        ckpt.bn_stats_attrs = _attrs(g)
        ckpt.bn_stats = {}
        for key in g.keys():
            for part in ("mean", "var"):
                if part not in g[key]:
                    raise CheckpointError(f"'{path}' lacks /bn_stats/{key}/{part}")
            ckpt.bn_stats[key] = {"mean": g[key]["mean"][()], "var": g[key]["var"][()]}
    return ckpt


def load_params(ckpt: Checkpoint, layers) -> None:
    """Copy a checkpoint's parameter values into a freshly built network, strictly.

    Raises
    ------
    CheckpointError
        Naming the first layer or dataset that is missing, of another type,
        mis-shaped, or holding NaN or Inf.
    """
    for layer in layers:
        if layer.name not in ckpt.params:
            raise CheckpointError(f"'{ckpt.path}' lacks the layer /model/layers/{layer.name}")
        saved_type = ckpt.layer_types.get(layer.name)
        if saved_type != type(layer).__name__:
            raise CheckpointError(
                f"'{ckpt.path}': layer {layer.name!r} is a {saved_type} in the checkpoint "
                f"but a {type(layer).__name__} in its config"
            )
        saved = ckpt.params[layer.name]
        for param in layer.params:
            short = _param_short_name(layer, param)
            where = f"/model/layers/{layer.name}/{short}"
            if short not in saved:
                raise CheckpointError(f"'{ckpt.path}' lacks the dataset {where}")
            value = saved[short]
            expected = param.get_value(borrow=True).shape
            if value.shape != expected:
                raise CheckpointError(
                    f"'{ckpt.path}': {where} has shape {list(value.shape)}, expected {list(expected)}"
                )
            value = value.astype(param.dtype)
            finite = np.isfinite(value)
            if not finite.all():
                raise CheckpointError(
                    f"'{ckpt.path}': {where} holds a non-finite value ({value[~finite][0]}); "
                    f"these weights cannot be used: take an earlier checkpoint or train again"
                )
            param.set_value(value)
