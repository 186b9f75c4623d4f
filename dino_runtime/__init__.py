"""dino_runtime: run exported DINO models on images, video and cameras. Imports without torch."""
from .metadata import ModelMetadata

__version__ = "0.1.0"
__all__ = ["ModelMetadata"]
