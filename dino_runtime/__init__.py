"""dino_runtime: run exported DINO models on images, video and cameras. Imports without torch."""
from dino_core.metadata import ModelMetadata

from .api import Runtime
from .render import RenderOptions
from .results import BatchResult, FrameResult
from .sources import SourceSpec, open_source

__version__ = "0.1.0"
__all__ = ["BatchResult", "FrameResult", "ModelMetadata", "RenderOptions", "Runtime",
           "SourceSpec", "open_source"]
