"""Camera sources, the first stage of the pipeline: each yields `Frame`s stamped once, at the source.

Two kinds of source share one small interface (`FrameSource`):

* `LiveCamera` (RTSP, USB): one thread per camera reads continuously and keeps only the newest frame in a
  one-slot mailbox (`LatestSlot`); a frame that is overwritten before the pipeline takes it is counted as dropped.
  Each frame is stamped once from an injected `Clock`. Failures are states, not crashes: an open failure, a read
  failure or a stall (no frame within `read_timeout_s`) turns the camera RECONNECTING; it releases the stream,
  backs off (exponential, capped, with jitter) and reopens by itself. One log line per state change.
* `FileSource` (recorded video): a pull iterator on the file's own timeline, no thread. Timestamps are media
  time, so a replay is deterministic: `mono` = media seconds, `wall_time` = `start_wall` + media seconds.

`CameraSet` lets the one pipeline thread take the next frame from any of several cameras, fairly (round robin).

Time: `Frame.wall_time` is float epoch seconds (UTC; see `Frame.wall_datetime`), `Frame.mono` is monotonic
seconds for live sources and media seconds for files, `Frame.source_pts` is the stream's own timestamp when known.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator, List, Literal, Optional, Protocol, Sequence, Tuple

import cv2
import numpy as np

from edge.errors import EdgeError

log = logging.getLogger("edge.capture")

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
DEFAULT_RTSP_OPTIONS = "rtsp_transport;tcp"
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
_USB_PATTERN = re.compile(r"^(/dev/video\d+|\d+)$")
_EPSILON = 1e-6


class CaptureError(EdgeError):
    """A camera or video file could not be opened or read (missing, corrupt, unreachable, unsupported)."""


# ----------------------------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class BackoffConfig:
    """How long a failing camera waits before it reopens: initial_s * factor**n, capped at max_s, +/- jitter."""

    initial_s: float = 0.5
    """Wait after the first failure, in seconds."""
    max_s: float = 30.0
    """Longest wait between two attempts, in seconds."""
    factor: float = 2.0
    """Growth of the wait after each further failure."""
    jitter: float = 0.1
    """Random spread of each wait, as a fraction (0.1 = +/-10%), so cameras do not retry in lockstep."""

    def __post_init__(self) -> None:
        if self.initial_s <= 0:
            raise ValueError(f"initial_s must be > 0, got {self.initial_s}")
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s must be >= initial_s ({self.initial_s}), got {self.max_s}")
        if self.factor < 1.0:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter must be within 0..1 (exclusive), got {self.jitter}")


@dataclass(frozen=True)
class CameraConfig:
    """One camera: where its stream is, how to open it, how often the pipeline wants frames."""

    id: str
    """Short name used in events, logs and MQTT topics (letters, digits, '_' and '-')."""
    url: str
    """rtsp://[user:pass@]host[:port]/path, a USB camera (/dev/videoN or its index N), or a video file path."""
    kind: Literal["auto", "rtsp", "usb", "file"] = "auto"
    """Source type; auto infers it from url (rtsp:// / rtsps://, /dev/videoN or a number, else a file)."""
    backend: Literal["auto", "ffmpeg", "gstreamer"] = "auto"
    """OpenCV backend; auto = gstreamer when a pipeline is given, else ffmpeg (V4L2 for usb)."""
    pipeline: Optional[str] = None
    """GStreamer pipeline ending in appsink, for hardware decoding (Jetson nvv4l2decoder, Pi v4l2h264dec);
    '{url}' is replaced by url. Needs an OpenCV built with GStreamer."""
    ffmpeg_options: Optional[str] = None
    """FFmpeg options 'key;value|key;value' (OPENCV_FFMPEG_CAPTURE_OPTIONS); None = 'rtsp_transport;tcp' for rtsp."""
    max_fps: float = 10.0
    """Most frames per second handed to the pipeline (files: in media time); 0 = every frame."""
    open_timeout_s: float = 10.0
    """Give up opening the stream after this long."""
    read_timeout_s: float = 5.0
    """A live stream that delivers no frame for this long is a stall: reconnect. Enforced by the FFmpeg backend
    (CAP_PROP_READ_TIMEOUT_MSEC); with a GStreamer pipeline set the timeouts in it (rtspsrc timeout/tcp-timeout)."""
    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    """Waits between reconnection attempts."""
    enabled: bool = True
    """False keeps the camera configured but never opened (state DISABLED)."""
    role: Literal["entrance", "exit", "line"] = "entrance"
    """What a face seen here means: coming in (entrance), going out (exit), or the direction it crosses `line`."""
    line: Optional[Tuple[Tuple[float, float], Tuple[float, float]]] = None
    """For role line: two points [[x1, y1], [x2, y2]] in image fractions (0..1, y down) of the virtual line."""
    in_side: Literal["left", "right"] = "left"
    """For role line: crossing onto this side of the line (seen walking from its first to its second point) is 'in'."""

    def __post_init__(self) -> None:
        if not _ID_PATTERN.match(self.id):
            raise ValueError(f"id must be letters, digits, '_' or '-', got {self.id!r}")
        if not self.url.strip():
            raise ValueError("url must not be empty")
        kind = self.source_kind
        if kind == "rtsp" and not self.url.lower().startswith(("rtsp://", "rtsps://")):
            raise ValueError(f"url must start with rtsp:// or rtsps:// for an rtsp camera, got {redact(self.url)!r}")
        if kind == "usb" and not _USB_PATTERN.match(self.url):
            raise ValueError(f"url must be /dev/videoN or a device index for a usb camera, got {self.url!r}")
        if self.pipeline is not None and self.backend == "ffmpeg":
            raise ValueError("pipeline must be used with backend gstreamer (or auto), not ffmpeg")
        if self.max_fps < 0:
            raise ValueError(f"max_fps must be >= 0 (0 = no cap), got {self.max_fps}")
        if self.open_timeout_s <= 0:
            raise ValueError(f"open_timeout_s must be > 0, got {self.open_timeout_s}")
        if self.read_timeout_s <= 0:
            raise ValueError(f"read_timeout_s must be > 0, got {self.read_timeout_s}")
        if self.role == "line" and self.line is None:
            raise ValueError("line must be given for a camera with role line: [[x1, y1], [x2, y2]] in 0..1")
        if self.line is not None:
            if not all(0.0 <= v <= 1.0 for point in self.line for v in point):
                raise ValueError(f"line points must be image fractions within 0..1, got {self.line}")
            if self.line[0] == self.line[1]:
                raise ValueError("line must join two different points")

    @property
    def source_kind(self) -> str:
        """The effective kind: 'rtsp', 'usb' or 'file'."""
        if self.kind != "auto":
            return self.kind
        if self.url.lower().startswith(("rtsp://", "rtsps://")):
            return "rtsp"
        return "usb" if _USB_PATTERN.match(self.url) else "file"

    @property
    def effective_ffmpeg_options(self) -> Optional[str]:
        if self.ffmpeg_options is not None:
            return self.ffmpeg_options or None
        return DEFAULT_RTSP_OPTIONS if self.source_kind == "rtsp" else None


def redact(url: str) -> str:
    """The url without its password, for logs: rtsp://user:***@host/path."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]+):[^@/]*@", r"\1:***@", url)


# ----------------------------------------------------------------------------------------------- boundary types


@dataclass(frozen=True, eq=False)
class Frame:
    """One image from one camera, stamped once at the source; everything downstream uses these stamps."""

    camera_id: str
    seq: int
    """Per camera, counts every frame read (0, 1, 2...); gaps show frames that were dropped."""
    image: np.ndarray
    """BGR, uint8, HxWx3."""
    wall_time: float
    """Epoch seconds (UTC) when the frame was read; for files, start_wall + media time."""
    mono: float
    """Monotonic seconds when read (live), or media seconds (file): use this for intervals and rates."""
    source_pts: Optional[float] = None
    """The frame's own timestamp in the stream, seconds, when the source reports one."""

    @property
    def wall_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.wall_time, tz=timezone.utc)


class CameraState(str, Enum):
    CONNECTING = "connecting"
    ONLINE = "online"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"
    DISABLED = "disabled"


@dataclass(frozen=True)
class CameraStats:
    """A snapshot of one source's health, cheap to take from any thread."""

    camera_id: str
    state: CameraState
    reason: str
    """Why the source is in this state (the last error while RECONNECTING)."""
    frames_read: int = 0
    frames_delivered: int = 0
    frames_dropped: int = 0
    """Read but never delivered: overwritten in the slot (live) or skipped by max_fps."""
    reconnects: int = 0
    """Times the source was reopened after a failure."""
    failures: int = 0
    """Consecutive failed attempts since the source was last online."""
    backoff_s: float = 0.0
    """The current wait before the next attempt."""
    last_error: Optional[str] = None


class Clock(Protocol):
    def wall(self) -> float:
        """Epoch seconds."""

    def mono(self) -> float:
        """Monotonic seconds."""


class SystemClock:
    """The real clock: time.time() and time.monotonic()."""

    def wall(self) -> float:
        return time.time()

    def mono(self) -> float:
        return time.monotonic()


@dataclass(frozen=True, eq=False)
class RawFrame:
    """What a reader returns: the image and the stream's own timestamp (seconds), if any."""

    image: np.ndarray
    pts: Optional[float] = None


class Reader(Protocol):
    """An opened stream; `read` returns None when the stream failed, ended or stalled past its read timeout."""

    def read(self) -> Optional[RawFrame]: ...

    def release(self) -> None: ...


Opener = Callable[[CameraConfig], Reader]


class FrameSource(Protocol):
    """What the pipeline sees of a camera or a file."""

    camera_id: str

    def poll(self) -> Optional[Frame]:
        """A new frame if one is ready now (and due under max_fps), else None; never blocks for long."""

    def next_frame(self, timeout: float) -> Optional[Frame]:
        """The next frame, waiting up to `timeout` seconds; None on timeout or when the source has ended."""

    def stats(self) -> CameraStats: ...

    @property
    def finished(self) -> bool:
        """True once the source will never deliver again (closed, disabled, end of file)."""

    def close(self) -> None: ...


# ----------------------------------------------------------------------------------------------- small pure parts


class Backoff:
    """Exponential waits: initial, initial*factor, ... capped at max, each spread by +/- jitter."""

    def __init__(self, config: BackoffConfig, rng: Optional[random.Random] = None) -> None:
        self.config = config
        self.rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        base = min(self.config.initial_s * self.config.factor**self.failures, self.config.max_s)
        self.failures += 1
        spread = self.config.jitter * base
        return base + self.rng.uniform(-spread, spread) if spread else base

    def reset(self) -> None:
        self.failures = 0


class RateLimiter:
    """Admits timestamps at most `max_fps` per second on the given timeline (0 = admit all)."""

    def __init__(self, max_fps: float) -> None:
        self.period = 1.0 / max_fps if max_fps > 0 else 0.0
        self._due: Optional[float] = None

    def admit(self, t: float) -> bool:
        if self.period == 0.0:
            return True
        if self._due is not None and t < self._due - _EPSILON:
            return False
        if self._due is None or t - self._due >= self.period:
            self._due = t + self.period  # first frame, or a gap: restart the grid here instead of catching up
        else:
            self._due += self.period
        return True


class LatestSlot:
    """A one-frame mailbox: `put` overwrites, `take` empties. Counts frames overwritten before being taken."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Optional[Frame] = None
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()

    def take(self, timeout: float = 0.0) -> Optional[Frame]:
        """The newest frame (removing it), waiting up to `timeout` seconds for one."""
        with self._cond:
            if self._frame is None and timeout > 0:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            return frame


# ----------------------------------------------------------------------------------------------- opening streams


class _EnvGate:
    """OPENCV_FFMPEG_CAPTURE_OPTIONS is read by OpenCV when a capture opens. Opens that need the same value run
    together; an open that needs a different value waits until they are done. The previous value is restored."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._value: Optional[str] = None
        self._users = 0
        self._saved: Optional[str] = None

    @contextmanager
    def hold(self, value: Optional[str]) -> Iterator[None]:
        with self._cond:
            while self._users and self._value != value:
                self._cond.wait()
            if not self._users:
                self._saved = os.environ.get(FFMPEG_OPTIONS_ENV)
                _set_env(value)
                self._value = value
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if not self._users:
                    _set_env(self._saved)
                    self._cond.notify_all()


def _set_env(value: Optional[str]) -> None:
    if value is None:
        os.environ.pop(FFMPEG_OPTIONS_ENV, None)
    else:
        os.environ[FFMPEG_OPTIONS_ENV] = value


_ENV_GATE = _EnvGate()


class CvReader:
    """A cv2.VideoCapture behind the `Reader` protocol."""

    def __init__(self, cap: cv2.VideoCapture) -> None:
        self.cap = cap

    def read(self) -> Optional[RawFrame]:
        ok, image = self.cap.read()
        if not ok or image is None:
            return None
        pts_ms = self.cap.get(cv2.CAP_PROP_POS_MSEC)
        return RawFrame(image=image, pts=pts_ms / 1000.0 if pts_ms >= 0 else None)

    def release(self) -> None:
        self.cap.release()


def open_video(config: CameraConfig) -> CvReader:
    """Open the camera or file of `config` with OpenCV; raises CaptureError when it does not open."""
    kind = config.source_kind
    gstreamer = config.backend == "gstreamer" or (config.backend == "auto" and config.pipeline is not None)
    if gstreamer:
        source = (config.pipeline or config.url).replace("{url}", config.url)
        cap = cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
    elif kind == "usb":
        device = int(config.url) if config.url.isdigit() else config.url
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
    else:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(config.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(config.read_timeout_s * 1000),
        ]
        with _ENV_GATE.hold(config.effective_ffmpeg_options):
            cap = cv2.VideoCapture(config.url, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        backend = "gstreamer" if gstreamer else ("v4l2" if kind == "usb" else "ffmpeg")
        hint = "; this OpenCV was built without GStreamer" if gstreamer and not _opencv_has_gstreamer() else ""
        raise CaptureError(f"camera {config.id}: cannot open {redact(config.url)} ({backend}{hint})")
    return CvReader(cap)


@functools.lru_cache(maxsize=1)
def _opencv_has_gstreamer() -> bool:
    return bool(re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()))


# ----------------------------------------------------------------------------------------------- live cameras


class LiveCamera:
    """A live camera: a thread reads continuously into a latest-frame slot; the pipeline takes frames from it.

    Use as a context manager (starts the thread, closes on exit), or call `start()` and `close()`.
    """

    def __init__(
        self,
        config: CameraConfig,
        clock: Optional[Clock] = None,
        opener: Optional[Opener] = None,
        wake: Optional[threading.Event] = None,
    ) -> None:
        self.config = config
        self.camera_id = config.id
        self._clock: Clock = clock or SystemClock()
        self._opener: Opener = opener or open_video
        self._wake = wake
        self._stop = threading.Event()
        self._slot = LatestSlot()
        self._limiter = RateLimiter(config.max_fps)
        self._backoff = Backoff(config.backoff)
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._seq = 0
        self._skipped = 0
        initial = CameraState.CONNECTING if config.enabled else CameraState.DISABLED
        self._stats = CameraStats(camera_id=config.id, state=initial, reason="" if config.enabled else "disabled")

    # -- the pipeline's side

    def start(self) -> LiveCamera:
        if self.config.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"capture-{self.camera_id}", daemon=True)
            self._thread.start()
        return self

    def poll(self) -> Optional[Frame]:
        return self.next_frame(0.0)

    def next_frame(self, timeout: float) -> Optional[Frame]:
        """The newest frame not yet delivered and due under max_fps, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + max(0.0, timeout)  # real time, only for waiting
        while True:
            frame = self._slot.take(max(0.0, deadline - time.monotonic()))
            if frame is not None:
                if self._limiter.admit(frame.mono):
                    self._update(frames_delivered=self._stats.frames_delivered + 1)
                    return frame
                with self._lock:
                    self._skipped += 1  # read, but arrived before it was due under max_fps
            if self.finished or time.monotonic() >= deadline:
                return None

    def frames(self) -> Iterator[Frame]:
        """Frames until the camera is closed."""
        while not self.finished:
            frame = self.next_frame(0.5)
            if frame is not None:
                yield frame

    @property
    def state(self) -> CameraState:
        return self._stats.state

    @property
    def finished(self) -> bool:
        return self._stats.state in (CameraState.STOPPED, CameraState.DISABLED)

    def stats(self) -> CameraStats:
        with self._lock:
            return replace(self._stats, frames_dropped=self._slot.dropped + self._skipped)

    def stop(self) -> None:
        """Ask the thread to end (does not wait); `close` waits."""
        self._stop.set()

    def close(self, timeout: Optional[float] = None) -> None:
        """Stop the thread and wait for it, at most `timeout` (default read_timeout_s + open_timeout_s)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(self.config.read_timeout_s + self.config.open_timeout_s if timeout is None else timeout)
            if thread.is_alive():
                log.warning("camera %s: capture thread did not end in time; leaving it (daemon)", self.camera_id)
        if self.config.enabled:
            self._set_state(CameraState.STOPPED, "closed")

    def __enter__(self) -> LiveCamera:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the capture thread

    def _run(self) -> None:
        while not self._stop.is_set():
            reason = self._session()
            if self._stop.is_set():
                break
            self._fail(reason)
            with self._lock:
                delay = self._stats.backoff_s
            if self._stop.wait(delay):
                break
            self._update(reconnects=self._stats.reconnects + 1)

    def _session(self) -> str:
        """Open, then read until the stream fails; returns why it ended."""
        try:
            reader = self._opener(self.config)
        except CaptureError as exc:
            return str(exc)
        except Exception as exc:  # an unexpected library error must become a state, not kill the thread
            return f"open failed: {type(exc).__name__}: {exc}"
        try:
            return self._pump(reader)
        finally:
            reader.release()

    def _pump(self, reader: Reader) -> str:
        while not self._stop.is_set():
            try:
                raw = reader.read()
            except Exception as exc:  # same: a read error is a reconnect, not a dead thread
                return f"read failed: {type(exc).__name__}: {exc}"
            mono = self._clock.mono()
            if raw is None:
                return f"no frame (stream ended, failed or stalled > {self.config.read_timeout_s:g} s)"
            frame = Frame(self.camera_id, self._seq, raw.image, self._clock.wall(), mono, raw.pts)
            self._seq += 1
            self._slot.put(frame)
            self._update(frames_read=self._stats.frames_read + 1)
            if self._stats.state is not CameraState.ONLINE:
                self._online()
            if self._wake is not None:
                self._wake.set()
        return "stopped"

    def _online(self) -> None:
        after = self._stats.failures
        self._backoff.reset()
        self._update(failures=0, backoff_s=0.0)
        self._set_state(CameraState.ONLINE, "receiving frames" if not after else f"back after {after} failures")

    def _fail(self, reason: str) -> None:
        delay = self._backoff.next_delay()
        self._update(failures=self._stats.failures + 1, backoff_s=delay, last_error=reason)
        self._set_state(CameraState.RECONNECTING, reason)
        log.debug("camera %s: %s; retrying in %.2f s", self.camera_id, reason, delay)

    def _set_state(self, state: CameraState, reason: str) -> None:
        with self._lock:
            previous = self._stats.state
            self._stats = replace(self._stats, state=state, reason=reason)
        if state is previous:
            return
        if state is CameraState.RECONNECTING or (state is CameraState.ONLINE and previous is CameraState.RECONNECTING):
            log.warning("camera %s: %s -> %s: %s", self.camera_id, previous.value, state.value, reason)
        else:
            log.info("camera %s: %s -> %s: %s", self.camera_id, previous.value, state.value, reason)

    def _update(self, **changes: object) -> None:
        with self._lock:
            self._stats = replace(self._stats, **changes)  # type: ignore[arg-type]


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
            self._stats = replace(self._stats, frames_dropped=self._stats.frames_dropped + 1)
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
