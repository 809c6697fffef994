"""Config text -> validated :class:`~bntrain.config.schema.Config`, and back to text.

Examples
--------
>>> cfg = parse_config('''
... data: {train: {builtin: digits, split: train}}
... model: {layers: [{type: dense, units: 10, nonlinearity: softmax}]}
... training: {epochs: 2, batch_size: 32, optimizer: {name: adam, lr: 1e-3}}
... ''', source='tiny.yaml')
>>> cfg.name, cfg.training.optimizer.lr, cfg.output.dir
('tiny', 0.001, 'runs/tiny')
>>> try:
...     parse_config('training: {optimzer: 1}', source='bad.yaml')
... except ConfigError as exc:
...     print(exc)  # doctest: +ELLIPSIS
bad.yaml:1: training.optimzer: unknown key (did you mean 'optimizer'?) (and 2 more...)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bntrain.errors import ConfigError

from .loader import MAX_BYTES, dump_yaml, load_yaml
from .messages import clip, show, translate
from .overrides import apply_override
from .schema import Config, SourceLines
from .walk import annotation_at, model_for

__all__ = ["parse_config", "load_config", "parse_stored_config", "dump_config"]

# Keys that bntrain before per-optimizer and per-schedule schemas wrote into every run folder's
# config.yaml, whatever the name, with the value it wrote when the key was not set.
_LEGACY_DEFAULTS = {
    "optimizer": {"momentum": 0.9, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8},
    "schedule": {"step_size": None, "gamma": 0.1, "min_lr": 0.0},
}


def _drop_legacy_defaults(data: dict) -> None:
    """In a config bntrain wrote (it has ``run:``), drop unused keys left at the old defaults."""
    if not isinstance(data.get("run"), dict):
        return
    for section, defaults in _LEGACY_DEFAULTS.items():
        choice, raw = annotation_at(Config, ("training", section), data)
        model = model_for(choice, raw)
        if model is None:
            continue
        for key, value in defaults.items():
            if key not in model.model_fields and key in raw and raw[key] == value:
                del raw[key]


def parse_config(
    text: str,
    source: str = "<string>",
    base_dir: str | os.PathLike[str] = Path("."),
    overrides: Sequence[str] = (),
) -> Config:
    """Validate config text.

    Parameters
    ----------
    text : str
        The YAML text.
    source : str
        Name used in messages (``source:line: ...``); its stem is the default ``name``.
    base_dir : path-like
        Folder that relative paths in the config resolve against.
    overrides : sequence of str
        ``dotted.key=value`` strings (``model.layers[0].units=50``) applied to the parsed
        mapping before validation; values are YAML.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        For any problem, with a one-line message naming the key path and ``source:line``.
    """
    if isinstance(overrides, str):
        overrides = (overrides,)
    try:
        data, doc = load_yaml(text, source)
        if data is None:
            raise ConfigError(f"{source}: the config is empty")
        if not isinstance(data, dict):
            raise ConfigError(
                f"{source}:1: the top level must be a mapping of keys (data:, model:, "
                f"training:, ...), got {show(data)}"
            )
        origins: dict[tuple[str | int, ...], str] = {}
        for override in overrides:
            origins[apply_override(data, override, Config)] = f"--set {clip(override, 80)}"
        stem = Path(source).stem if not source.startswith("<") else ""
        if "name" not in data and stem:
            data["name"] = stem
        _drop_legacy_defaults(data)
        try:
            config = Config.model_validate(data)
        except ValidationError as exc:
            raise translate(exc, data, doc, origins, Config) from None
    except RecursionError:
        raise ConfigError(f"{source}: the config is nested too deeply") from None
    except OverflowError:
        raise ConfigError(f"{source}: a number in the config is too large") from None
    config.base_dir = Path(base_dir)
    config.model._lines = _model_lines(doc, origins)
    return config


def _model_lines(doc, origins: dict[tuple[str | int, ...], str]) -> SourceLines:
    """``file:line`` (or the ``--set`` that set it) of each key path below ``model``."""
    out = {p[1:]: f"{doc.source}:{line}" for p, line in doc.lines.items() if p[:1] == ("model",)}
    for p, label in origins.items():
        if p[:1] == ("model",):
            out = {k: v for k, v in out.items() if k[: len(p) - 1] != p[1:]}
            out[p[1:]] = label
    return SourceLines(out)


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Config:
    """Read and validate a config file.

    Parameters
    ----------
    path : path-like
        The YAML file; its folder becomes ``Config.base_dir`` and its stem the default name.
    overrides : sequence of str
        ``dotted.key=value`` strings, see :func:`parse_config`.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        If the file is missing, unreadable, not UTF-8 text or not a valid config.
    """
    path = Path(path)
    shown = clip(str(path), 200)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"config file '{shown}' is too large to be a config")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file '{shown}' not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file '{shown}' is a folder, not a file") from None
    except OSError as exc:
        reason = exc.strerror or "cannot be read"
        raise ConfigError(f"config file '{shown}' cannot be read: {reason.lower()}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{shown}:{line}: not a text config (invalid UTF-8 byte 0x{raw[exc.start]:02x})"
        ) from None
    return parse_config(text, source=str(path), base_dir=path.parent, overrides=overrides)


def parse_stored_config(text: str, source: str, default_dir: str | os.PathLike[str]) -> Config:
    """Validate the config a run folder or checkpoint stores (what :func:`dump_config` wrote).

    Its ``base_dir`` is the folder the run's config was read from (``run.config_dir``), else
    ``default_dir``, so that relative data paths resolve as they did for the run.

    Raises
    ------
    ConfigError
        If the text is not a valid config.
    """
    config = parse_config(text, source=source, base_dir=default_dir)
    folder = (config.run or {}).get("config_dir")
    if isinstance(folder, str) and folder and "\x00" not in folder:
        config.base_dir = folder
    return config


def _plain(obj: Any) -> Any:
    """Turn ``extra`` values into YAML-safe plain data."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if hasattr(obj, "item"):  # NumPy scalars
        return _plain(obj.item())
    return str(obj)


def dump_config(config: Config, extra: dict | None = None) -> str:
    """YAML text of a config with every default filled in, in schema key order.

    Parameters
    ----------
    config : Config
        A validated config.
    extra : dict, optional
        Extra top-level sections to append, such as ``{"run": {"seed": 0, ...}}``.  Only a
        ``run`` mapping is accepted again by :func:`parse_config`.

    Returns
    -------
    str
        YAML text; ``parse_config(dump_config(c), base_dir=c.base_dir) == c``.
    """
    data = config.model_dump(mode="json", exclude_none=False)
    if data.get("run") is None or (extra and "run" in extra):
        data.pop("run", None)
    for key, value in (extra or {}).items():
        if key in Config.model_fields and key != "run":
            raise ValueError(f"dump_config: extra key '{key}' clashes with a config section")
        data[str(key)] = _plain(value)
    return dump_yaml(data)
