"""``--set KEY=VALUE``: change the raw config mapping before it is validated.

``KEY`` is a dotted path with list indices (``model.layers[0].units``, ``model.layers.0.units``);
``VALUE`` is YAML, read by the same strict reader as the file.  A key the schema does not know is
refused here, with did-you-mean, before anything else is checked.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from bntrain.errors import ConfigError

from .loader import load_yaml
from .messages import clip, path_str, unknown_key
from .walk import child, keys_of, model_for, strip

__all__ = ["apply_override"]

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)?((?:\[[0-9]+\])*)")


def _parse_key(key: str) -> list[str | int] | None:
    parts: list[str | int] = []
    for seg in key.split("."):
        if seg.isdigit():
            parts.append(int(seg))
            continue
        m = _SEGMENT.fullmatch(seg)
        if m is None or not seg or (m.group(1) is None and not parts):
            return None
        if m.group(1):
            parts.append(m.group(1))
        parts.extend(int(i) for i in re.findall(r"\[([0-9]+)\]", m.group(2)))
    return parts or None


def apply_override(data: dict, override: str, root: type[BaseModel]) -> tuple[str | int, ...]:
    """Set one ``dotted.key=value`` in the raw mapping ``data``; return the key path it set.

    ``root`` is the model that validates ``data``; keys it does not know are refused.

    Raises
    ------
    ConfigError
        ``--set KEY=VALUE: ...`` for a malformed override, an unknown key or a bad index.
    """
    label = f"--set {clip(override, 80)}"
    key, sep, text = override.partition("=")
    path = _parse_key(key.strip()) if sep else None
    if path is None:
        raise ConfigError(f"{label}: expected KEY=VALUE, e.g. training.optimizer.lr=0.05")
    try:
        value, _ = load_yaml(text, "<value>")
    except ConfigError as exc:
        problem = re.sub(r"^<value>(:[0-9]+)?: ", "", str(exc))
        raise ConfigError(f"{label}: invalid value: {problem}") from None
    ann: Any = root
    cur: Any = data
    for i, part in enumerate(path):
        here = path_str(path[:i]) or "the top level"
        if isinstance(part, str):
            if not isinstance(cur, dict):
                raise ConfigError(f"{label}: {here} is not a mapping")
            model = model_for(ann, cur)
            if model is not None and part not in keys_of(model):
                raise ConfigError(f"{label}: {unknown_key(part, strip(ann), cur)}")
        else:
            if not isinstance(cur, list):
                raise ConfigError(f"{label}: {here} is not a list")
            if part >= len(cur):
                raise ConfigError(
                    f"{label}: index {part} out of range ({here} has {len(cur)} entries)"
                )
        ann = child(ann, cur, part)
        if i == len(path) - 1:
            cur[part] = value
        else:
            if isinstance(cur, dict) and cur.get(part) is None and isinstance(path[i + 1], str):
                cur[part] = {}
            cur = cur[part]
    return tuple(path)
