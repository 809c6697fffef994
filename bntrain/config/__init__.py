"""The config: YAML text -> validated, typed :class:`Config`, and back.

Modules
-------
schema
    The sections, keys, defaults and limits (pydantic models): what a user reads.
layers
    The ``model.layers`` entries, one spec class per layer type, each building its layer.
graph
    ``model.layers`` + ``model.blocks`` -> named nodes and their inputs (blocks expanded).
fields
    Field types shared by the sections (sizes, float32-safe numbers, file names).
loader
    The strict YAML reader and the matching writer.
overrides
    ``--set KEY=VALUE``.
messages
    Pydantic errors -> one ``file:line: key.path: ...`` line, with did-you-mean.
walk
    Which model validates the value at a key path (for messages and overrides).
parse
    :func:`parse_config`, :func:`load_config`, :func:`parse_stored_config`, :func:`dump_config`.
json_schema
    :func:`config_json_schema` (``bntrain schema``).
"""

from . import layers as _layers
from . import parse as _parse
from . import schema as _schema
from .fields import NONLINEARITIES
from .json_schema import config_json_schema
from .layers import *  # noqa: F403
from .parse import *  # noqa: F403
from .schema import *  # noqa: F403

__all__ = [
    "NONLINEARITIES",
    *_layers.__all__,
    *_schema.__all__,
    *_parse.__all__,
    "config_json_schema",
]
