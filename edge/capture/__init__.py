"""Camera sources, the first stage of the pipeline: their config and the types every source shares.

Each source yields `Frame`s stamped once, at the source. Two kinds share one small interface (`FrameSource`):

* `LiveCamera` (RTSP, USB; edge/capture/live.py): one thread per camera reads continuously, paces the frames to
  `max_fps` on the stream's own timestamps when they can be trusted (`Timeline`, `RateLimiter`) and puts the due ones
  in a small mailbox (`FrameBuffer`, `buffer_frames` deep, oldest taken first). When the mailbox is full the thread
  waits for the pipeline while the stream is less than `max_lag_s` behind live (the rest of a burst waits undecoded in
  FFmpeg's and the network's buffers), else the oldest frame is pushed out, counted as late. Each frame is stamped
  once from an injected `Clock`. Failures are states, not crashes: an open
  failure, a read failure or a stall (no frame within `read_timeout_s`) turns the camera RECONNECTING; it releases
  the stream, backs off (exponential, capped, with jitter) and reopens by itself. One log line per state change.
* `FileSource` (recorded video; edge/capture/file.py): a pull iterator on the file's own timeline, no thread.
  Timestamps are media time, so a replay is deterministic: `mono` = media seconds, `wall_time` = `start_wall` +
  media seconds.

`CameraSet` (edge/capture/cameras.py) lets the one pipeline thread take the next frame from any of several cameras,
fairly (round robin).

Time: `Frame.wall_time` is float epoch seconds (UTC; see `Frame.wall_datetime`), `Frame.mono` is monotonic
seconds for live sources and media seconds for files, `Frame.source_pts` is the stream's own timestamp when known.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Callable, Deque, Literal, Optional, Protocol, Tuple

import numpy as np

from edge.errors import EdgeError

DEFAULT_RTSP_OPTIONS = "rtsp_transport;tcp"
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
_USB_PATTERN = re.compile(r"^(/dev/video\d+|\d+)$")
# "scheme:/" at the start: a URL, never a file name (rtps://cam/1 is a typo, not a file to look for)
_ANY_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):/")
URL_SCHEMES = ("rtsp", "rtsps", "http", "https")
"""Network streams a camera url may name: RTSP (kind rtsp) and HTTP(S) streams FFmpeg reads (kind file)."""
_EPSILON = 1e-6
MAX_LAG_LIMIT_S = 3.0
"""The largest max_lag_s: a camera held back longer within Timeline.RATE_WINDOW_S would look as if its timestamps ran
slow, and be paced by arrival."""


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
    buffer_frames: int = 3
    """Frames read but not yet taken that a live camera keeps, oldest taken first; 1 = only the newest. When it is
    full the camera waits for the pipeline (see max_lag_s), then drops the oldest, counted as late."""
    max_lag_s: float = 1.5
    """How far behind the live stream a live camera may fall while it waits for the pipeline to take a frame from its
    full buffer, in seconds (judged by the stream's own timestamps). Waiting absorbs a burst (the seconds of stream an
    RTSP open reads before it returns, a decoder catching up) without decoding it ahead: the rest waits undecoded in
    FFmpeg's and the network's buffers. Past it, or for a stream without usable timestamps, the oldest buffered frame
    is dropped at once, so a pipeline that stays too slow never holds a camera further behind. 0 = never wait."""
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
    door: Optional[Tuple[Tuple[float, float], Tuple[float, float]]] = None
    """Where faces appear (the door), as [[x0, y0], [x1, y1]] image fractions (0..1, y down) of its corners: the
    detector looks at it at native scale whenever something moves (edge/scene.py); null = only where things move."""

    def __post_init__(self) -> None:
        if not _ID_PATTERN.match(self.id):
            raise ValueError(f"id must be letters, digits, '_' or '-', got {self.id!r}")
        if not self.url.strip():
            raise ValueError("url must not be empty")
        scheme = _ANY_SCHEME.match(self.url)
        if scheme is not None and (scheme.group(1).lower() not in URL_SCHEMES or "://" not in self.url[:12]):
            raise ValueError(
                "url starts like a URL but not with rtsp://, rtsps://, http:// or https:// (a typo?); a USB camera "
                f"is /dev/videoN, a file a path; got {redact(self.url)!r}"
            )
        kind = self.source_kind
        if kind == "rtsp" and not self.url.lower().startswith(("rtsp://", "rtsps://")):
            raise ValueError(f"url must start with rtsp:// or rtsps:// for an rtsp camera, got {redact(self.url)!r}")
        if kind == "usb" and not _USB_PATTERN.match(self.url):
            raise ValueError(f"url must be /dev/videoN or a device index for a usb camera, got {self.url!r}")
        if self.pipeline is not None and self.backend == "ffmpeg":
            raise ValueError("pipeline must be used with backend gstreamer (or auto), not ffmpeg")
        if self.max_fps < 0:
            raise ValueError(f"max_fps must be >= 0 (0 = no cap), got {self.max_fps}")
        if isinstance(self.buffer_frames, bool) or not 1 <= self.buffer_frames <= 100:
            raise ValueError(f"buffer_frames must be within 1..100, got {self.buffer_frames}")
        if not 0.0 <= self.max_lag_s <= MAX_LAG_LIMIT_S:
            raise ValueError(f"max_lag_s must be within 0..{MAX_LAG_LIMIT_S:g} seconds, got {self.max_lag_s}")
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
        if self.door is not None:
            if not all(0.0 <= v <= 1.0 for point in self.door for v in point):
                raise ValueError(f"door corners must be image fractions within 0..1, got {self.door}")
            (x0, y0), (x1, y1) = self.door
            if not (x0 < x1 and y0 < y1):
                raise ValueError(f"door must be [[x0, y0], [x1, y1]] with x0 < x1 and y0 < y1, got {self.door}")

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


_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_QUERY_SECRET = re.compile(r"(?i)([?&;](?:password|passwd|pwd|pass|token|secret|key)=)[^&;#]*")


def redact(url: str) -> str:
    """The url without its password, for logs: rtsp://user:***@host/path. Passwords are often written unescaped,
    with '@', '/' or ':' in them, so the user info runs to the last '@' (hiding too much rather than too little)."""
    scheme = _SCHEME.match(url)
    if scheme is None:
        return url
    rest = url[scheme.end() :]
    at = rest.rfind("@")
    if at >= 0 and ":" in rest[:at]:
        user = rest[: rest.index(":")]
        rest = f"{user}:***@{rest[at + 1 :]}"
    return _QUERY_SECRET.sub(r"\1***", url[: scheme.end()] + rest)


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
    """Read but never delivered: pushed out of the buffer (live) or skipped by max_fps (the sum of the two below)."""
    frames_late: int = 0
    """Pushed out of the full buffer before the pipeline took them (the camera waits for room only while less than
    max_lag_s behind live): frames lost because the pipeline was late."""
    frames_skipped: int = 0
    """Skipped on purpose: read before they were due under max_fps."""
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
    """Admits timestamps at most `max_fps` per second on the given timeline (0 = admit all).

    A stream no faster than the cap loses no frame: while the mean interval between its frames (a running average)
    is at least 0.9 period, every frame is admitted, however they jitter (a 10 fps camera at max_fps 10 delivers
    frames a few ms early or late; until the average says so, a frame up to a quarter period early for its slot is
    taken). A faster stream is thinned on a grid of one period (a 30 fps stream at 10 keeps every third frame); a
    gap of a period or more restarts the grid, and so does time running backwards (a file
    looped, a reconnected stream)."""

    SMOOTHING = 0.2
    """Weight of the newest interval in the running average."""

    def __init__(self, max_fps: float) -> None:
        self.period = 1.0 / max_fps if max_fps > 0 else 0.0
        self._due: Optional[float] = None
        self._last: Optional[float] = None
        self._interval: Optional[float] = None

    def admit(self, t: float, restart: bool = False) -> bool:
        """Whether the frame at `t` is due; `restart`: `t` is on a new timeline (the caller switched), start afresh."""
        if self.period == 0.0:
            return True
        last, self._last = (None if restart else self._last), t
        if restart or (last is not None and t < last):  # the timeline restarted
            self._due = self._interval = None
        elif last is not None:
            gap = t - last
            self._interval = gap if self._interval is None else self._interval + self.SMOOTHING * (gap - self._interval)
        keeps_up = self._interval is not None and self._interval >= 0.9 * self.period  # no faster than the cap
        # a frame of a stream near the cap may be a little early for its slot; a fast stream's never is
        slow = self._interval is not None and self._interval >= self.period / 2
        if not keeps_up and self._due is not None and t < self._due - (self.period / 4 if slow else _EPSILON):
            return False
        if self._due is None or t - self._due >= self.period:
            self._due = t + self.period  # first frame, or a gap: restart the grid here instead of catching up
        else:
            self._due = min(self._due + self.period, t + self.period)  # never more than a period ahead
        return True


@dataclass(frozen=True)
class Stamp:
    """Where one live frame sits on the timeline its camera is paced by (see `Timeline`)."""

    t: float
    """Seconds on that timeline: the frame's PTS while the stream's timestamps are trusted, else its arrival (mono)."""
    on_pts: bool
    """True when `t` is the PTS."""
    restart: bool
    """The timeline changed at this frame (the PTS became trusted, stopped being, or jumped): pacing starts afresh."""
    lag: Optional[float] = None
    """Seconds this frame is behind the stream's live edge, judged by the PTS; None when the PTS cannot tell."""

    def patience(self, max_lag_s: float) -> float:
        """How long the capture thread may wait for room in a full buffer before it drops the oldest frame: what is
        left of `max_lag_s` after the frame's lag; nothing when the lag is unknown."""
        return 0.0 if self.lag is None else max(0.0, max_lag_s - self.lag)


class Timeline:
    """Chooses, frame by frame, the timeline a live camera is paced by: the stream's own timestamps (PTS) while they
    are trustworthy, else arrival time; and judges how far behind live each frame is.

    Arrival time misleads in a burst: OpenCV's FFmpeg open reads seconds of an RTSP stream while it probes it, and
    the first reads return those frames within milliseconds, as if the stream ran far above max_fps; their PTS still
    rise one frame interval each. So the PTS are trusted while they rise steadily: a run of MIN_RUN or more strictly
    rising PTS, no step running more than JUMP_S ahead of arrival, and, once the run spans RATE_WINDOW_S of arrival,
    advancing over that window within RATE_FACTOR of arrival's rate (generous: a connect burst runs ahead, a camera
    held back by a slow pipeline falls behind). A PTS that is missing, not finite, repeated, goes back or jumps ends
    the run: a reconnected or looped stream starts a new one, a constant or garbage PTS never builds one and the camera
    is paced by arrival. A trusted run that ends within SHORT_RUN frames (timestamps that flap, such as decode-order
    ones) puts the camera on probation: a run is then trusted only once it has spanned RATE_WINDOW_S. A stream's second
    run also starts pacing afresh: OpenCV gives the first frame of an RTSP stream the placeholder PTS 0 and the second
    the real 0, and a connect burst's second frame, a few ms after the first by arrival, would be skipped.

    Lag: the frame's offset (arrival - PTS) above the smallest offset of its run, the live edge. In a connect burst the
    offset only falls, so the burst reads as live (its age is not known then). The edge may rise by DRIFT seconds per
    second (a camera clock slower than the box's), but only on frames that arrived while the buffer was empty (`idle`):
    time spent waiting for a slow pipeline is never forgotten.
    """

    MIN_RUN = 2
    """Rising PTS in a row before they are trusted (a single timestamp says nothing)."""
    JUMP_S = 1.0
    """A PTS step this much longer than its arrival step is a jump (a new timeline), not a frame interval."""
    RATE_WINDOW_S = 5.0
    """Arrival seconds over which the PTS rate is compared with arrival's."""
    RATE_FACTOR = 4.0
    """PTS advancing more than this many times faster or slower than arrival are not the stream's clock."""
    SHORT_RUN = 10
    """A trusted run that ends within this many frames is flapping, not a stream that restarted."""
    DRIFT = 1e-3
    """How fast the live edge may rise, seconds per second (1000 ppm: any camera clock, with room to spare)."""

    def __init__(self) -> None:
        self._run: Deque[Tuple[float, float]] = deque()  # (mono, pts) of the run, trimmed to span RATE_WINDOW_S
        self._count = 0  # frames in the run
        self._runs = 0  # runs started on this stream
        self._probation = False
        self._trusted = False
        self._started = False
        self._edge = 0.0  # the run's smallest offset (arrival - PTS)

    def place(self, mono: float, pts: Optional[float], idle: bool = False) -> Stamp:
        """Place one frame: its arrival (monotonic seconds), its PTS (seconds, if any), whether the buffer was empty."""
        if pts is None or not math.isfinite(pts):
            self._end_run()
        else:
            self._follow(mono, pts, idle)
        trusted = self._judge()
        restart = self._started and (trusted != self._trusted or (self._count == 1 and self._runs == 2))
        self._started, self._trusted = True, trusted
        if not trusted or pts is None:
            return Stamp(mono, False, restart)
        return Stamp(pts, True, restart, lag=(mono - pts) - self._edge)

    def _follow(self, mono: float, pts: float, idle: bool) -> None:
        if self._run:
            last_mono, last_pts = self._run[-1]
            if not 0.0 < pts - last_pts <= (mono - last_mono) + self.JUMP_S:
                self._end_run()
        offset = mono - pts
        if not self._run:
            self._edge = offset
            self._runs += 1
        else:
            leak = self.DRIFT * (mono - self._run[-1][0]) if idle else 0.0
            self._edge = min(offset, self._edge + leak)
        self._run.append((mono, pts))
        self._count += 1
        while len(self._run) > 2 and mono - self._run[1][0] >= self.RATE_WINDOW_S:
            self._run.popleft()

    def _end_run(self) -> None:
        if not self._run:
            return
        if self._trusted and self._count < self.SHORT_RUN:
            self._probation = True
        self._run.clear()
        self._count = 0

    def _judge(self) -> bool:
        if self._count < self.MIN_RUN:
            return False
        (mono0, pts0), (mono1, pts1) = self._run[0], self._run[-1]
        span = mono1 - mono0
        if span < self.RATE_WINDOW_S:
            return not self._probation
        plausible = 1.0 / self.RATE_FACTOR <= (pts1 - pts0) / span <= self.RATE_FACTOR
        if plausible:
            self._probation = False
        return plausible


class FrameBuffer:
    """A camera's mailbox of frames read but not yet taken: at most ``depth`` of them, oldest taken first. When it is
    full, `put` may first wait for the pipeline to take one (a bounded `wait`, cut short by `stop`/`wake`), then drops
    the oldest (counted in `dropped`: the pipeline was late). Depth 1 keeps only the newest frame."""

    def __init__(self, depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        self._cond = threading.Condition()
        self._frames: Deque[Frame] = deque()
        self.dropped = 0

    def put(self, frame: Frame, wait: float = 0.0, stop: Optional[threading.Event] = None) -> None:
        """Add a frame; when the buffer is full, wait up to `wait` seconds (real time) for room unless `stop` is set,
        then drop the oldest."""
        with self._cond:
            if len(self._frames) >= self.depth and wait > 0:
                deadline = time.monotonic() + wait  # real time, only for waiting
                while len(self._frames) >= self.depth and not (stop is not None and stop.is_set()):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            self._frames.append(frame)
            while len(self._frames) > self.depth:
                self._frames.popleft()
                self.dropped += 1
            self._cond.notify_all()

    def take(self, timeout: float = 0.0) -> Optional[Frame]:
        """The oldest frame waiting (removing it), waiting up to `timeout` seconds for one."""
        with self._cond:
            if not self._frames and timeout > 0:
                self._cond.wait(timeout)
            if not self._frames:
                return None
            frame = self._frames.popleft()
            self._cond.notify_all()  # a capture thread may be waiting for room
            return frame

    def wake(self) -> None:
        """End any wait now (a stopping camera: `put` then sees its stop event)."""
        with self._cond:
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)
