"""The run's status as Prometheus text (exposition format 0.0.4) for ``/metrics``.

Input: the dict of :meth:`dino_runtime.pipeline.Pipeline.status` with the server's ``viewers``
entry added. Counters are totals since the start; fps and latency are gauges over each stream's
recent window (see :mod:`dino_runtime.summary`).
"""
from __future__ import annotations

from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name, type, help, how to read it from one stream's status
STREAM_METRICS = (
    ("dino_run_stream_frames_total", "counter", "Frames processed",
     lambda s: s["frames"]),
    ("dino_run_stream_reconnects_total", "counter", "Reopen attempts of a live source",
     lambda s: s["reconnects"]),
    ("dino_run_stream_fps", "gauge", "Frames per second over the last seconds",
     lambda s: s["fps"]),
    ("dino_run_stream_latency_p50_seconds", "gauge",
     "Median decode-to-written latency over the recent frames",
     lambda s: s["latency_ms"]["p50"] / 1000),
    ("dino_run_stream_latency_p99_seconds", "gauge",
     "99th percentile decode-to-written latency over the recent frames",
     lambda s: s["latency_ms"]["p99"] / 1000),
    ("dino_run_stream_up", "gauge", "1 while the stream runs, 0 once it has ended",
     lambda s: 1 if s["state"] == "running" else 0),
)
RUN_METRICS = (
    ("dino_run_batches_total", "counter", "Model calls", lambda r: r["batches"]),
    ("dino_run_model_seconds_total", "counter", "Seconds spent in model calls",
     lambda r: r["model_seconds"]),
    ("dino_run_batch_size", "gauge", "Frames per model call at most", lambda r: r["batch"]),
    ("dino_run_viewers", "gauge", "Live page viewers connected",
     lambda r: r["viewers"]["connected"]),
    ("dino_run_viewers_refused_total", "counter", "Viewers refused at the viewer cap",
     lambda r: r["viewers"]["refused"]),
    ("dino_run_viewer_frames_sent_total", "counter", "JPEG frames sent to viewers",
     lambda r: r["viewers"]["frames_sent"]),
    ("dino_run_viewer_frames_dropped_total", "counter",
     "JPEG frames a viewer skipped (bandwidth cap, slow connection)",
     lambda r: r["viewers"]["frames_dropped"]),
)


def prometheus_text(status: dict[str, Any]) -> str:
    out: list[str] = []
    for name, kind, text, read in STREAM_METRICS:
        _header(out, name, kind, text)
        out += [f'{name}{{stream="{_label(s["name"])}"}} {_number(read(s))}'
                for s in status["streams"]]
    name = "dino_run_stream_dropped_frames_total"
    _header(out, name, "counter", "Frames dropped: corrupt (not decodable) or stale (replaced "
            "by a newer frame of a live stream)")
    out += [f'{name}{{stream="{_label(s["name"])}",reason="{reason}"}} {count}'
            for s in status["streams"] for reason, count in s["dropped"].items()]
    for name, kind, text, read in RUN_METRICS:
        _header(out, name, kind, text)
        out.append(f"{name} {_number(read(status))}")
    return "\n".join(out) + "\n"


def _header(out: list[str], name: str, kind: str, text: str) -> None:
    out += [f"# HELP {name} {text}.", f"# TYPE {name} {kind}"]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(round(value, 6)) if isinstance(value, float) else str(int(value))
