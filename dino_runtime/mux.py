"""Per-stream frame queues between the decoders (one thread per stream) and the one stage that
reads them all, round-robin.

A live stream's decoder never waits: when its queue is full, the oldest frame in it is dropped
and counted as *stale* for that stream (overload on one camera drops that camera's old frames,
not another's). A file's decoder waits for room (back-pressure: no frame of a file is lost).
The reader takes one frame per stream in turn, so a stream with a fast decoder does not starve
the others, and learns when a stream has ended (:class:`StreamEnd`) once its queue is empty.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Sequence

from .sources import Frame
from .streams import Stream

POLL_S = 0.05   # how often a waiting side looks at the stop flag


@dataclass(frozen=True)
class StreamEnd:
    """Marker passed down the stages, in order with the stream's frames: it has ended."""

    stream: Stream


class FrameMux:
    """``put`` from each stream's decoder, ``get`` from one reader; ``depths[i]`` frames of
    stream i at most."""

    def __init__(self, streams: Sequence[Stream], depths: Sequence[int],
                 stop: threading.Event) -> None:
        self.streams = list(streams)
        self.depths = list(depths)
        self.maxsize = sum(depths)          # for callers that bound what is in flight
        self._queues: list[deque[Frame]] = [deque() for _ in streams]
        self._closed = [False] * len(streams)
        self._announced = [False] * len(streams)
        self._next = 0
        self._cond = threading.Condition()
        self._stop = stop

    def qsize(self) -> int:
        return sum(len(q) for q in self._queues)

    def put(self, stream: Stream, frame: Frame) -> bool:
        """Queue ``frame``; False (not queued) once the run or the stream is stopping."""
        i = stream.index
        queue = self._queues[i]
        with self._cond:
            while len(queue) >= self.depths[i]:
                if stream.live:  # never wait: the oldest frame of this stream goes
                    queue.popleft()
                    stream.summary.dropped["stale"] += 1
                    break
                if self._stop.is_set() or stream.ending.is_set():
                    return False
                self._cond.wait(POLL_S)
            queue.append(frame)
            self._cond.notify_all()
        return True

    def close(self, stream: Stream) -> None:
        """The stream's decoder has finished: no more frames will come."""
        with self._cond:
            self._closed[stream.index] = True
            self._cond.notify_all()

    def get(self) -> tuple[Stream, Frame] | StreamEnd | None:
        """The next frame, round-robin over the streams that have one; a :class:`StreamEnd`
        once a closed stream's queue is empty; None when every stream has ended or the run
        is stopping."""
        n = len(self.streams)
        with self._cond:
            while not self._stop.is_set():
                for k in range(n):
                    i = (self._next + k) % n
                    if self._queues[i]:
                        self._next = (i + 1) % n
                        frame = self._queues[i].popleft()
                        self._cond.notify_all()  # a file decoder may wait for this room
                        return self.streams[i], frame
                    if self._closed[i] and not self._announced[i]:
                        self._announced[i] = True
                        return StreamEnd(self.streams[i])
                if all(self._announced):
                    return None
                self._cond.wait(POLL_S)
        return None

    def drain(self, stream: Stream) -> int:
        """Forget the frames ``stream`` has queued (it was asked to end); returns how many."""
        with self._cond:
            count = len(self._queues[stream.index])
            self._queues[stream.index].clear()
            self._cond.notify_all()
        return count
