"""``bntrain schema``: the JSON Schema of config files, for editors (yaml-language-server)."""

from __future__ import annotations

import json

from ..config import config_json_schema

__all__ = ["schema_command"]


def schema_command() -> str:
    """The config's JSON Schema as indented JSON text."""
    return json.dumps(config_json_schema(), indent=2)
