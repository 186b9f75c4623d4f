"""Object tracking by label propagation over DINO patch features (numpy and OpenCV only).

    from dino_runtime.tracking import Seed, TrackConfig, read_labels
    labels, _ = read_labels("first_frame.png")                 # DAVIS palette PNG or 0/255 mask
    pipe = runtime.pipeline(source, track=TrackConfig(seed=Seed(labels)))
    for r in pipe.run():
        r.track.labels, r.track.objects                       # (H, W) ids; area, box, centroid

* :mod:`.propagation`: the official algorithm (``eval_video_segmentation.py``) for a stream;
* :mod:`.tracker`: one stream's :class:`Tracker` (seed, context, soft labels to ids);
* :mod:`.palette`: DAVIS palette PNGs without Pillow; :mod:`.overlay`: the drawing;
* :mod:`.sinks`: what ``dino-run --track`` writes; :mod:`.metrics` and :mod:`.davis`: the
  DAVIS evaluation (``dino-eval davis``).
"""
from .overlay import draw_tracking
from .palette import DAVIS_PALETTE, LabelImageError, encode_palette_png, read_labels
from .propagation import LabelPropagation
from .tracker import (
    ObjectStats,
    Seed,
    TrackConfig,
    TrackError,
    Tracker,
    TrackFrame,
    TrackOptions,
    parse_box,
)

__all__ = ["DAVIS_PALETTE", "LabelImageError", "LabelPropagation", "ObjectStats", "Seed",
           "TrackConfig", "TrackError", "TrackFrame", "TrackOptions", "Tracker",
           "draw_tracking", "encode_palette_png", "parse_box", "read_labels"]
