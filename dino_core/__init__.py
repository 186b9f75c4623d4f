"""dino_core: what ``dino_train``, ``dino_export`` and ``dino_runtime`` agree on. No torch.

errors and the CLI convention (:mod:`.errors`, :mod:`.cli`), atomic file output
(:mod:`.fileio`), the exported model's metadata as typed values (:mod:`.metadata`), the shared
constants (:mod:`.constants`), chunk-and-pad batching (:mod:`.batching`), the official attention
mask and comparison measures (:mod:`.masks`), and the precision resolver (:mod:`.precision`).
"""
from .constants import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, VIDEO_SUFFIXES
from .errors import (
                     BackendUnavailable,
                     CheckpointError,
                     ModelError,
                     OptionError,
                     OutputError,
                     SourceError,
                     UserError,
)
from .metadata import BatchSpec, InputFormat, ModelMetadata

__version__ = "0.1.0"
__all__ = ["BackendUnavailable", "BatchSpec", "CheckpointError", "IMAGENET_MEAN", "IMAGENET_STD",
           "IMAGE_SUFFIXES", "InputFormat", "ModelError", "ModelMetadata", "OptionError",
           "OutputError", "SourceError", "UserError", "VIDEO_SUFFIXES"]
