"""Several cameras served to the one pipeline thread, fairly."""

from __future__ import annotations

import threading
import time
from typing import List, Optional, Sequence

from edge.capture import CameraConfig, CameraStats, Clock, Frame, FrameSource
from edge.capture.file import FileSource
from edge.capture.live import LiveCamera

# ----------------------------------------------------------------------------------------------- several cameras


def open_source(
    config: CameraConfig,
    clock: Optional[Clock] = None,
    wake: Optional[threading.Event] = None,
    start_wall: Optional[float] = None,
) -> FrameSource:
    """A FileSource for a file, else a (not yet started) LiveCamera; a disabled camera stays DISABLED."""
    if config.enabled and config.source_kind == "file":
        return FileSource(config, clock=clock, start_wall=start_wall)
    return LiveCamera(config, clock=clock, wake=wake)


class CameraSet:
    """Several sources polled by one pipeline thread: `next_frame` returns the next ready frame from any of them,
    round robin, so a busy camera cannot starve the others; a failing camera only stops its own frames."""

    def __init__(self, sources: Sequence[FrameSource], wake: Optional[threading.Event] = None) -> None:
        ids = [s.camera_id for s in sources]
        if len(set(ids)) != len(ids):
            raise ValueError(f"camera ids must be unique, got {ids}")
        self.sources: List[FrameSource] = list(sources)
        self._wake = wake
        self._next = 0

    @classmethod
    def open(cls, configs: Sequence[CameraConfig], clock: Optional[Clock] = None) -> CameraSet:
        """Build a source per config sharing one wake-up event; `start()` (or `with`) starts the live ones."""
        wake = threading.Event()
        sources: List[FrameSource] = []
        try:
            for config in configs:
                sources.append(open_source(config, clock=clock, wake=wake))
        except BaseException:
            for source in sources:
                source.close()
            raise
        return cls(sources, wake)

    def reconfigure(self, configs: Sequence[CameraConfig], timeout: float = 5.0) -> None:
        """A reloaded camera list: sources whose config is unchanged keep streaming; removed or changed ones are
        closed, new or changed ones opened and started."""
        current = {s.camera_id: s for s in self.sources}
        wanted = {c.id: c for c in configs}
        for camera_id, source in current.items():
            if getattr(source, "config", None) != wanted.get(camera_id):
                if isinstance(source, LiveCamera):
                    source.close(timeout)
                else:
                    source.close()
        sources: List[FrameSource] = []
        for config in configs:
            kept = current.get(config.id)
            if kept is not None and getattr(kept, "config", None) == config:
                sources.append(kept)
                continue
            source = open_source(config, wake=self._wake)
            if isinstance(source, LiveCamera):
                source.start()
            sources.append(source)
        self.sources, self._next = sources, 0

    def start(self) -> CameraSet:
        for source in self.sources:
            if isinstance(source, LiveCamera):
                source.start()
        return self

    def poll(self) -> Optional[Frame]:
        """One ready frame, trying each source once starting after the one served last; None if none is ready."""
        count = len(self.sources)
        for i in range(count):
            index = (self._next + i) % count
            frame = self.sources[index].poll()
            if frame is not None:
                self._next = (index + 1) % count
                return frame
        return None

    def next_frame(self, timeout: float) -> Optional[Frame]:
        """The next frame from any source, waiting up to `timeout` seconds; None on timeout or when all ended."""
        deadline = time.monotonic() + max(0.0, timeout)  # real time, only for waiting
        while True:
            if self._wake is not None:
                self._wake.clear()
            frame = self.poll()
            if frame is not None or self.finished:
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if self._wake is not None:
                self._wake.wait(remaining)
            else:
                time.sleep(min(remaining, 0.005))

    @property
    def finished(self) -> bool:
        return all(source.finished for source in self.sources)

    def stats(self) -> List[CameraStats]:
        return [source.stats() for source in self.sources]

    def close(self, timeout: float = 5.0) -> None:
        """Signal every live camera to stop first, then wait for each (so teardown takes one timeout, not N)."""
        for source in self.sources:
            if isinstance(source, LiveCamera):
                source.stop()
        for source in reversed(self.sources):
            if isinstance(source, LiveCamera):
                source.close(timeout)
            else:
                source.close()

    def __enter__(self) -> CameraSet:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()
