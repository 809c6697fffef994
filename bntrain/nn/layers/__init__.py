"""Layers: the network is a graph of these (mirrors ``lasagne.layers``)."""

from .base import *  # noqa: F403
from .conv import *  # noqa: F403
from .dense import *  # noqa: F403
from .embedding import *  # noqa: F403
from .ghost import *  # noqa: F403
from .helper import *  # noqa: F403
from .input import *  # noqa: F403
from .local import *  # noqa: F403
from .merge import *  # noqa: F403
from .noise import *  # noqa: F403
from .normalization import *  # noqa: F403
from .pool import *  # noqa: F403
from .recurrent import *  # noqa: F403
from .renorm import *  # noqa: F403
from .shape import *  # noqa: F403
from .special import *  # noqa: F403
from .transformer import *  # noqa: F403
from .upscale import *  # noqa: F403
