"""The config's JSON Schema, for editors (yaml-language-server) and other tools."""

from __future__ import annotations

from typing import Any

from .schema import Config

__all__ = ["SCHEMA_DIALECT", "config_json_schema"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def config_json_schema() -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of a config file, from the pydantic models.

    Every key has its title, default and (where written) description; unknown keys are
    refused (``additionalProperties: false``); a layer entry, the optimizer and the schedule
    are each one of several alternatives (``oneOf``) told apart by ``type`` or ``name``.

    Returns
    -------
    dict
        The schema, ready for :func:`json.dumps`.
    """
    schema = _markdown(Config.model_json_schema(mode="validation"))
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "bntrain config",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def _markdown(node: Any) -> Any:
    """Docstring literals (````x````) as Markdown code (```x```) in every description."""
    if isinstance(node, dict):
        return {
            k: v.replace("``", "`") if k == "description" and isinstance(v, str) else _markdown(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_markdown(v) for v in node]
    return node
