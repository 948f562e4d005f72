"""Live cameras (RTSP, USB): opening a stream with OpenCV, and the capture thread that paces and buffers its frames.

See edge/capture/__init__.py for the shared types and the states a camera goes through.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Iterator, Optional
from urllib.parse import urlsplit

import cv2
import numpy as np

from edge.capture import (
    Backoff,
    CameraConfig,
    CameraState,
    CameraStats,
    CaptureError,
    Clock,
    Frame,
    FrameBuffer,
    Opener,
    RateLimiter,
    RawFrame,
    Reader,
    SystemClock,
    Timeline,
    redact,
)

log = logging.getLogger("edge.capture")  # one logger for the capture stage, live or file

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


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
        check_device(config)
        device = int(config.url) if config.url.isdigit() else config.url
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
    else:
        if kind == "rtsp":
            reach(config)
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
        hint = "; this OpenCV was built without GStreamer" if gstreamer and not opencv_has_gstreamer() else ""
        raise CaptureError(f"camera {config.id}: cannot open {redact(config.url)} ({backend}{hint})")
    return CvReader(cap)


def check_device(config: CameraConfig) -> None:
    """A USB camera's device node exists and this user may open it; CaptureError saying which is not the case."""
    path = f"/dev/video{config.url}" if config.url.isdigit() else config.url
    if not os.path.exists(path):
        raise CaptureError(f"camera {config.id}: no such device {path} (is the USB camera plugged in?)")
    if not os.access(path, os.R_OK | os.W_OK):
        raise CaptureError(
            f"camera {config.id}: no permission to open {path} (the user running edge must be in the 'video' group)"
        )


RTSP_PORTS = {"rtsp": 554, "rtsps": 322}


def reach(config: CameraConfig) -> None:
    """Ask the camera for its RTSP OPTIONS over TCP (the control channel, also for RTP over UDP) before OpenCV does.

    OpenCV's FFmpeg backend opens one stream at a time per process (a global lock around the open): a camera whose
    host is down, or whose RTSP service hangs, would hold every other camera's (re)connection for up to its open
    timeout. Those fail here instead, outside that lock; only a camera that answers RTSP is handed to FFmpeg. (Any
    answer counts, 401 included: credentials are FFmpeg's business. rtsps:// is only checked for TCP.)
    """
    parts = urlsplit(config.url)
    try:
        host, port = parts.hostname, parts.port or RTSP_PORTS.get(parts.scheme.lower(), 554)
    except ValueError:  # not the parser's message: it quotes the "port", which may be part of the password
        hint = "host or port unreadable; write '/' in a password as %2F"
        raise CaptureError(f"camera {config.id}: bad address in {redact(config.url)} ({hint})") from None
    if not host:
        raise CaptureError(f"camera {config.id}: no host in {redact(config.url)}")
    timeout = config.open_timeout_s
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
        raise CaptureError(f"camera {config.id}: cannot reach {host}:{port} ({reason})") from None
    with conn:
        if parts.scheme.lower() != "rtsp":
            return
        where = parts.netloc.rsplit("@", 1)[-1]  # the address without credentials
        target = f"rtsp://{where}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")
        request = f"OPTIONS {target} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: edge\r\n\r\n"
        reply = b""
        try:
            conn.settimeout(timeout)
            conn.sendall(request.encode("ascii", "replace"))
            while len(reply) < 5:
                chunk = conn.recv(16)
                if not chunk:
                    break
                reply += chunk
        except OSError as exc:
            failure = "no answer within the open timeout" if isinstance(exc, socket.timeout) else str(exc)
        else:
            failure = "it closed the connection" if not reply else "the answer is not RTSP"
        if not reply.startswith(b"RTSP/"):
            raise CaptureError(
                f"camera {config.id}: {host}:{port} accepts connections but does not speak RTSP ({failure})"
            )


OPENCV_LOG_ERROR = 2
"""OpenCV's LOG_LEVEL_ERROR: its own warnings (one per failed reconnect attempt) are left out."""


def quiet_opencv() -> None:
    """Only OpenCV's errors in the log. OpenCV 4.12+ (pip's current wheels) has the setter only in cv2.utils.logging;
    4.11 and older (Debian's python3-opencv 4.6, JetPack's) have cv2.setLogLevel."""
    setter = getattr(cv2, "setLogLevel", None)
    if setter is None:
        from cv2.utils import logging as cv_logging  # type: ignore[import-not-found,attr-defined,unused-ignore]

        setter = cv_logging.setLogLevel
    setter(OPENCV_LOG_ERROR)


def opencv_log_level() -> int:
    getter = getattr(cv2, "getLogLevel", None)
    if getter is None:
        from cv2.utils import logging as cv_logging  # type: ignore[import-not-found,attr-defined,unused-ignore]

        getter = cv_logging.getLogLevel
    return int(getter())


@functools.lru_cache(maxsize=1)
def opencv_has_gstreamer() -> bool:
    """Whether the running OpenCV can open a GStreamer `pipeline:` (pip's opencv-python-headless cannot)."""
    return bool(re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()))


# ----------------------------------------------------------------------------------------------- frozen streams


@dataclass(frozen=True)
class FreezeLimits:
    """When a stream that keeps delivering the very same image counts as frozen (both limits must be reached)."""

    after_s: float = 10.0
    """Identical images for this long (seconds on the capture clock)..."""
    frames: int = 20
    """...and at least this many identical reads in a row (a real scene has sensor noise; a frozen one has none)."""


class FreezeWatch:
    """Notices a stream that is 'online' but blind: after a camera changes its resolution mid-stream, OpenCV's FFmpeg
    reader keeps returning the last image of the old size, read after read, as if all were well."""

    def __init__(self, limits: FreezeLimits) -> None:
        self.limits = limits
        self._last: Optional[np.ndarray] = None
        self._repeats = 0
        self._since = 0.0

    def frozen(self, image: np.ndarray, mono: float) -> bool:
        """Record one read image; True once it has been the same image for longer than the limits."""
        if self._last is not None and same_image(self._last, image):
            self._repeats += 1
        else:
            self._repeats, self._since = 0, mono
        self._last = image
        return self._repeats >= self.limits.frames and mono - self._since >= self.limits.after_s


def same_image(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical images; a sparse sample is compared first, so differing frames cost next to nothing."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(np.array_equal(a[::16, ::16], b[::16, ::16]) and np.array_equal(a, b))


# ----------------------------------------------------------------------------------------------- live cameras


class LiveCamera:
    """A live camera: a thread reads continuously, keeps the frames due under max_fps (paced on the stream's own
    timestamps when they are trustworthy: `Timeline`) in a small buffer (oldest first), waiting for room while the
    stream is less than max_lag_s behind live; the pipeline takes frames from it.

    Use as a context manager (starts the thread, closes on exit), or call `start()` and `close()`.
    """

    def __init__(
        self,
        config: CameraConfig,
        clock: Optional[Clock] = None,
        opener: Optional[Opener] = None,
        wake: Optional[threading.Event] = None,
        freeze: FreezeLimits = FreezeLimits(),
    ) -> None:
        self.config = config
        self._freeze = freeze
        self.camera_id = config.id
        self._clock: Clock = clock or SystemClock()
        self._opener: Opener = opener or open_video
        self._wake = wake
        self._stop = threading.Event()
        self._buffer = FrameBuffer(config.buffer_frames)
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
        """The oldest buffered frame not yet delivered (all were due under max_fps), waiting up to `timeout` seconds."""
        deadline = time.monotonic() + max(0.0, timeout)  # real time, only for waiting
        while True:
            frame = self._buffer.take(max(0.0, deadline - time.monotonic()))
            if frame is not None:
                self._update(frames_delivered=self._stats.frames_delivered + 1)
                return frame
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
            late, skipped = self._buffer.dropped, self._skipped
            return replace(self._stats, frames_dropped=late + skipped, frames_late=late, frames_skipped=skipped)

    def stop(self) -> None:
        """Ask the thread to end (does not wait; a wait for room in the buffer ends at once); `close` waits."""
        self._stop.set()
        self._buffer.wake()

    def close(self, timeout: Optional[float] = None) -> None:
        """Stop the thread and wait for it, at most `timeout` (default read_timeout_s + open_timeout_s)."""
        self.stop()
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
        watch = FreezeWatch(self._freeze)
        timeline, limiter = Timeline(), RateLimiter(self.config.max_fps)  # a new stream, a new timeline
        while not self._stop.is_set():
            try:
                raw = reader.read()
            except Exception as exc:  # same: a read error is a reconnect, not a dead thread
                return f"read failed: {type(exc).__name__}: {exc}"
            mono = self._clock.mono()
            if raw is None:
                return f"no frame (stream ended, failed or stalled > {self.config.read_timeout_s:g} s)"
            if watch.frozen(raw.image, mono):
                return (
                    f"frozen: the same image for {self._freeze.frames}+ reads and {self._freeze.after_s:g}+ s "
                    "(did the camera change its resolution?)"
                )
            stamp = timeline.place(mono, raw.pts, idle=not self._buffer)
            if limiter.admit(stamp.t, restart=stamp.restart):
                frame = Frame(self.camera_id, self._seq, raw.image, self._clock.wall(), mono, raw.pts)
                self._buffer.put(frame, wait=stamp.patience(self.config.max_lag_s), stop=self._stop)
                self._count_read(skipped=False)
                if self._wake is not None:
                    self._wake.set()
            else:
                self._count_read(skipped=True)  # read before it was due under max_fps
            self._seq += 1
            if self._stats.state is not CameraState.ONLINE:
                self._online()
        return "stopped"

    def _count_read(self, skipped: bool) -> None:
        with self._lock:
            self._skipped += skipped
            self._stats = replace(self._stats, frames_read=self._stats.frames_read + 1)

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
