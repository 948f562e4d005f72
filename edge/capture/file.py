"""Recorded video as a camera, on the file's own timeline: the source of `edge replay` and deterministic tests."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Optional

import cv2

from edge.capture import (
    CameraConfig,
    CameraState,
    CameraStats,
    CaptureError,
    Clock,
    Frame,
    Opener,
    RateLimiter,
    Reader,
    SystemClock,
)
from edge.capture.live import open_video

log = logging.getLogger("edge.capture")  # one logger for the capture stage, live or file


# ----------------------------------------------------------------------------------------------- files


class FileSource:
    """A recorded video on its own timeline: no thread, every frame in order (or every Nth under max_fps).

    `mono` and `source_pts` are media seconds (CAP_PROP_POS_MSEC, or seq / fps when the file has no usable
    timestamps); `wall_time` = `start_wall` + media seconds (default: the clock's wall time at open), so a replay
    with the same start_wall gives the same frames with the same stamps. Opening checks that the file exists and
    that its first frame decodes; CaptureError otherwise.
    """

    def __init__(
        self,
        config: CameraConfig,
        clock: Optional[Clock] = None,
        start_wall: Optional[float] = None,
        opener: Optional[Opener] = None,
    ) -> None:
        self.config = config
        self.camera_id = config.id
        path = Path(config.url)
        if opener is None and not path.is_file():
            raise CaptureError(f"camera {config.id}: no such video file: {path}")
        self.start_wall = (clock or SystemClock()).wall() if start_wall is None else start_wall
        self._reader: Reader = (opener or open_video)(config)
        self._limiter = RateLimiter(config.max_fps)
        self._fps = self._nominal_fps()
        self._seq = 0
        self._last_t = -1.0
        self._stats = CameraStats(camera_id=config.id, state=CameraState.ONLINE, reason=f"playing {path.name}")
        self._pending = self._read()
        if self._pending is None:
            self.close()
            raise CaptureError(f"camera {config.id}: cannot decode any frame from {path} (corrupt or not a video?)")

    def _nominal_fps(self) -> float:
        cap = getattr(self._reader, "cap", None)
        fps = float(cap.get(cv2.CAP_PROP_FPS)) if cap is not None else 0.0
        return fps if 1.0 <= fps <= 1000.0 else 30.0

    def _read(self) -> Optional[Frame]:
        raw = self._reader.read()
        if raw is None:
            return None
        t = raw.pts if raw.pts is not None and raw.pts > self._last_t else None
        if t is None:  # no timestamp, or not increasing: fall back on the frame rate, keep time monotonic
            t = max(self._seq / self._fps, self._last_t + 1.0 / self._fps)
        self._last_t = t
        frame = Frame(self.camera_id, self._seq, raw.image, self.start_wall + t, t, t)
        self._seq += 1
        return frame

    def poll(self) -> Optional[Frame]:
        """The next frame due under max_fps (media time), or None at the end of the file."""
        while self._pending is not None:
            frame, self._pending = self._pending, self._read()
            self._stats = replace(self._stats, frames_read=self._stats.frames_read + 1)
            if self._limiter.admit(frame.mono):
                self._stats = replace(self._stats, frames_delivered=self._stats.frames_delivered + 1)
                return frame
            dropped = self._stats.frames_dropped + 1
            self._stats = replace(self._stats, frames_dropped=dropped, frames_skipped=dropped)
        if self._stats.state is CameraState.ONLINE:
            self.close("end of file")
        return None

    def next_frame(self, timeout: float = 0.0) -> Optional[Frame]:
        return self.poll()

    def frames(self) -> Iterator[Frame]:
        while True:
            frame = self.poll()
            if frame is None:
                return
            yield frame

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    @property
    def state(self) -> CameraState:
        return self._stats.state

    @property
    def finished(self) -> bool:
        return self._stats.state is CameraState.STOPPED

    def stats(self) -> CameraStats:
        return self._stats

    def close(self, reason: str = "closed") -> None:
        if self._stats.state is not CameraState.STOPPED:
            self._reader.release()
            self._pending = None
            self._stats = replace(self._stats, state=CameraState.STOPPED, reason=reason)
            log.info("camera %s: stopped: %s", self.camera_id, reason)

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
