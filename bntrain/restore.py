"""Rebuild a trained network from a checkpoint file.

A checkpoint stores its resolved config; the network is rebuilt from that
config and the parameter values are loaded strictly (every layer and dataset
must be there with the right shape).
"""

from __future__ import annotations

from dataclasses import dataclass

from .checkpoint import Checkpoint, load_params, read_checkpoint
from .config import parse_stored_config
from .data import Preprocessor
from .errors import CheckpointError, UsageError
from .model import Network, build_network

__all__ = ["Restored", "restore"]


@dataclass
class Restored:
    """A checkpoint with its config, network (values loaded) and preprocessing."""

    ckpt: Checkpoint
    config: object
    network: Network
    preprocess: Preprocessor


def restore(path) -> Restored:
    """Read ``path`` and rebuild its network with the stored values.

    Raises
    ------
    CheckpointError
        If the file is not a valid checkpoint or does not match its config.
    """
    ckpt = read_checkpoint(path)
    try:
        config = parse_stored_config(
            ckpt.config_text, source=f"{path}:/config", default_dir=ckpt.path.resolve().parent
        )
    except UsageError as exc:
        raise CheckpointError(f"the config stored in '{path}' does not load: {exc}") from None
    input_shape = tuple(ckpt_input_shape(ckpt))
    try:
        network = build_network(config.model, input_shape, seed=config.training.seed)
    except UsageError as exc:
        raise CheckpointError(f"'{path}': {exc}") from None
    if [layer.name for layer in network.layers] != ckpt.layer_names:
        raise CheckpointError(
            f"'{path}': /model/layer_names does not match the network its config builds"
        )
    load_params(ckpt, network.layers)
    try:
        preprocess = Preprocessor.from_state(ckpt.preprocess) if ckpt.preprocess else Preprocessor()
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"'{path}': /preprocess is damaged ({exc})") from None
    return Restored(ckpt=ckpt, config=config, network=network, preprocess=preprocess)


def ckpt_input_shape(ckpt: Checkpoint) -> tuple[int, ...]:
    """One example's shape, from the input layer's stored ``output_shape``."""
    name = ckpt.layer_names[0]
    shape = ckpt.layer_attrs.get(name, {}).get("output_shape")
    if shape is None:
        raise CheckpointError(f"'{ckpt.path}' lacks /model/layers/{name} attribute output_shape")
    return tuple(int(d) for d in shape[1:])
