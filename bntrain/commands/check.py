"""``bntrain check``: validate a config and its data, and describe the network."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..backend import resolve_runtime
from ..config import load_config
from ..inputs import augmenter_for, check_batch_size, open_config_data, validate_config_data
from ..model import build_network
from ..parallel import check_parallel_config, resolve_devices
from .fit import check_run_folder

__all__ = ["LayerRow", "check_command"]


@dataclass
class LayerRow:
    """One line of ``bntrain check``'s table."""

    name: str
    type: str
    inputs: tuple[str, ...]
    output_shape: tuple
    params: int
    trainable: int


def check_command(
    config_path, overrides: Sequence[str] = (), devices: str | int | None = None
) -> list[LayerRow]:
    """Validate the config and its data, build the network, and describe its layers.

    Everything ``bntrain fit`` checks before it trains is checked here, with
    the same messages; nothing is compiled and nothing is written.

    Parameters
    ----------
    config_path : path-like
        The YAML config.
    overrides : sequence of str
        ``KEY=VALUE`` overrides (``--set``).
    devices : {'auto'} or int, optional
        Overrides the config's devices: checked as ``fit`` checks them.

    Returns
    -------
    list of LayerRow
        One row per layer, in topological order: its inputs, output shape and parameter
        count (all parameters, batch-norm statistics included, and the trainable ones).

    Raises
    ------
    UsageError
        An invalid config, unusable data, a batch size the data cannot fill,
        or an ``output.dir`` that names a file (exit code 2).
    """
    config = load_config(config_path, overrides)
    check_run_folder(config)
    runtime = resolve_runtime(config.backend, config.device)
    check_parallel_config(config, resolve_devices(devices or config.devices, runtime))
    data = open_config_data(config)
    try:
        network = build_network(config.model, data.input_shape, seed=config.training.seed)
        validate_config_data(data, network.n_classes)
        check_batch_size(data, config.training.batch_size, network)
        augmenter_for(config, data.input_shape)
    finally:
        data.close()
    rows = []
    for layer in network.layers:
        sizes = {p: int(p.get_value(borrow=True).size) for p in layer.params}
        trainable = sum(sizes[p] for p in layer.get_params(trainable=True))
        if hasattr(layer, "input_layers"):
            inputs = tuple(up.name for up in layer.input_layers)
        else:
            inputs = () if layer.input_layer is None else (layer.input_layer.name,)
        rows.append(
            LayerRow(
                layer.name,
                type(layer).__name__,
                inputs,
                tuple(layer.output_shape),
                sum(sizes.values()),
                trainable,
            )
        )
    return rows
