"""Errors a user can act on. CLIs print ``str(error)`` on one line and exit non-zero."""


class UserError(Exception):
    """A problem with the user's input (path, file, option), not a bug in the toolkit."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read, is unsafe, or does not hold a DINO ViT."""
