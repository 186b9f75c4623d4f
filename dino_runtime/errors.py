"""Errors a user can act on. The CLI prints ``str(error)`` on one line and exits non-zero."""


class RuntimeUserError(Exception):
    """A problem with the user's input (source, model, option), not a bug in the runtime."""


class SourceError(RuntimeUserError):
    """A source that cannot be opened: missing path, no decodable frames, no such camera."""


class ModelError(RuntimeUserError):
    """A model file that cannot be read or was not written by ``dino-export``."""


class BackendUnavailable(RuntimeUserError):
    """A backend or device that this machine cannot provide (package, GPU or driver missing)."""


class OutputError(RuntimeUserError):
    """An output path that cannot be written (missing folder, unsupported suffix)."""


class OptionError(RuntimeUserError, ValueError):
    """A value outside what an option accepts (also a ValueError, for Python callers)."""
