"""bntrain: train batch-normalized networks from YAML configs.

The Lasagne-compatible layer library lives in :mod:`bntrain.nn`; the command-line
tool in :mod:`bntrain.cli`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
