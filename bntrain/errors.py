"""The one error root of bntrain.

Every error a user can cause derives from :class:`BntrainError`.  The CLI turns
:class:`UsageError` (and its subclasses) into exit code 2 and any other
:class:`BntrainError` into exit code 1, printing one line and no traceback.
"""

__all__ = [
    "BntrainError",
    "UsageError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "TrainingError",
    "Interrupted",
]


class BntrainError(Exception):
    """Root of every error bntrain raises on purpose (exit code 1)."""

    exit_code = 1


class UsageError(BntrainError):
    """Bad command-line arguments, config, data or checkpoint (exit code 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """The config is invalid: the message names the key path and, where known, file:line."""


class DataError(UsageError):
    """A data file is missing, unreadable or does not fit the model."""


class CheckpointError(UsageError):
    """A checkpoint is missing, truncated or not in the expected format."""


class TrainingError(BntrainError):
    """Training failed at run time (for example a NaN loss)."""


class Interrupted(BntrainError):
    """Training stopped on SIGINT or SIGTERM (exit code 128 + the signal: 130, 143)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
