"""Errors a user can act on, shared by every command.

The CLI runner (:mod:`dino_core.cli`) prints ``str(error)`` on one line after the command's name
and exits with :attr:`UserError.exit_code`: 2 for a usage mistake (an option's value, a
combination of options), 1 for anything else the user can fix (a path, a file, the machine).
"""


class UserError(Exception):
    """A problem with the user's input (path, file, option), not a bug in the toolkit."""

    exit_code = 1


class OptionError(UserError, ValueError):
    """A value or combination of options that the command does not accept (a usage error).

    Also a ``ValueError``, for Python callers that pass a bad argument.
    """

    exit_code = 2


class CheckpointError(UserError):
    """A checkpoint that cannot be read, is unsafe, or does not hold a DINO ViT."""


class ModelError(UserError):
    """A model file that cannot be read or was not written by ``dino-export``."""


class SourceError(UserError):
    """A source that cannot be opened: missing path, no decodable frames, no such camera."""


class BackendUnavailable(UserError):
    """A backend or device that this machine cannot provide (package, GPU or driver missing)."""


class OutputError(UserError):
    """An output path that cannot be written (missing folder, unsupported suffix)."""
