"""User-facing errors: a problem with the user's input, not with the package.

The command line prints any :class:`UserError` as one line (``error: ...``) and exits with
status 2; ``--debug`` (or ``--log-level DEBUG``) shows the traceback. Every other exception
is a programming error and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "RunDirError", "UserError"]


class UserError(Exception):
    """Bad input from the user (a file, a flag, a name); the message says what and where.

    Args:
        message (str): what is wrong, naming the file / line / flag and the expected value.
        hint (str, optional): how to fix it, printed on a second line by the CLI.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConfigError(UserError, ValueError):
    """A flag or configuration value is of the wrong type, out of range or unknown."""


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing, corrupt, unsafe to load, or belongs to another run."""


class RunDirError(UserError, ValueError):
    """A run directory is missing files, unwritable, or already holds another run."""
