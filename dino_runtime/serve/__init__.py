"""``dino-run --serve``: the live page, ``/api/status`` and ``/metrics`` (see :mod:`.server`)."""
from .hub import FrameHub
from .server import LiveServer, ServeOptions

__all__ = ["FrameHub", "LiveServer", "ServeOptions"]
