"""Camera sources: pure parts with fakes, a recorded file on its own timeline, and a real RTSP server that is
killed and restarted under a live camera (scripts/rtsp_server.py on the system python with gst-rtsp-server)."""

from __future__ import annotations

import logging
import random
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, TypeVar

import numpy as np
import pytest
import yaml
from support import RtspServer, free_port, rtsp_unavailable, wait_until

from edge.capture import (
    Backoff,
    BackoffConfig,
    CameraConfig,
    CameraState,
    CameraStats,
    CaptureError,
    Frame,
    FrameBuffer,
    RateLimiter,
    RawFrame,
    Reader,
    Stamp,
    Timeline,
    redact,
)
from edge.capture.cameras import CameraSet
from edge.capture.file import FileSource
from edge.capture.live import FreezeLimits, FreezeWatch, LiveCamera, open_video
from edge.config.tree import build
from edge.errors import ConfigError

R = TypeVar("R", bound=Reader)

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
CLIP_FRAMES = 275  # short_hamilton_clip.mp4: H.264 640x360, 29.97 fps, 9.2 s


class FakeClock:
    """Advances by `step` seconds on every reading, so stamps are known in advance."""

    def __init__(self, wall: float = 1_700_000_000.0, step: float = 1 / 30) -> None:
        self._wall = wall
        self._mono = 100.0
        self.step = step
        self._lock = threading.Lock()

    def wall(self) -> float:
        with self._lock:
            return self._wall + (self._mono - 100.0)

    def mono(self) -> float:
        with self._lock:
            self._mono += self.step
            return self._mono


def frame(seq: int, mono: float = 0.0) -> Frame:
    return Frame("cam", seq, np.zeros((2, 2, 3), np.uint8), wall_time=1000.0 + mono, mono=mono)


# ------------------------------------------------------------------------------------------------ config


def test_config_infers_kind_and_rtsp_defaults_to_tcp() -> None:
    assert CameraConfig("door", "rtsp://10.0.0.5/stream").source_kind == "rtsp"
    assert CameraConfig("door", "rtsp://10.0.0.5/s").effective_ffmpeg_options == "rtsp_transport;tcp"
    assert CameraConfig("usb", "/dev/video0").source_kind == "usb"
    assert CameraConfig("usb", "1").source_kind == "usb"
    assert CameraConfig("rec", "/data/door.mp4").source_kind == "file"
    assert CameraConfig("rec", "/data/door.mp4").effective_ffmpeg_options is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"id": "front door"}, "id must"),
        ({"url": " "}, "url must not be empty"),
        ({"kind": "rtsp", "url": "http://x/y"}, "url must start with rtsp://"),
        ({"kind": "usb", "url": "/dev/sda"}, "url must be /dev/videoN"),
        ({"pipeline": "videotestsrc ! appsink", "backend": "ffmpeg"}, "pipeline must"),
        ({"max_fps": -1.0}, "max_fps must"),
        ({"open_timeout_s": 0.0}, "open_timeout_s must"),
        ({"read_timeout_s": -2.0}, "read_timeout_s must"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict, message: str) -> None:
    args = {"id": "door", "url": "rtsp://cam/stream", **kwargs}
    with pytest.raises(ValueError, match=message):
        CameraConfig(**args)


def test_backoff_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="^max_s must"):
        BackoffConfig(initial_s=2.0, max_s=1.0)
    with pytest.raises(ValueError, match="^factor must"):
        BackoffConfig(factor=0.5)


def yaml_node(text: str) -> yaml.Node:
    node = yaml.compose(text)
    assert node is not None
    return node


def test_config_loads_from_yaml_with_nested_backoff() -> None:
    text = "id: door\nurl: rtsp://user:secret@cam/s\nmax_fps: 5\nbackoff:\n  initial_s: 0.2\n  max_s: 4\n"
    config = build(CameraConfig, yaml_node(text))
    assert config.backoff == BackoffConfig(initial_s=0.2, max_s=4.0)
    assert config.max_fps == 5.0 and config.kind == "auto"
    with pytest.raises(ConfigError, match=r"backend \(line 3\): must be one of"):
        build(CameraConfig, yaml_node("id: door\nurl: rtsp://cam/s\nbackend: vlc\n"))


def test_redact_hides_the_password() -> None:
    assert redact("rtsp://admin:hunter2@10.0.0.5:554/s") == "rtsp://admin:***@10.0.0.5:554/s"
    assert redact("rtsp://10.0.0.5/s") == "rtsp://10.0.0.5/s"


# ------------------------------------------------------------------------------------------------ pure parts


def test_backoff_grows_is_capped_and_resets() -> None:
    backoff = Backoff(BackoffConfig(initial_s=1.0, max_s=8.0, factor=2.0, jitter=0.0))
    assert [backoff.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_backoff_jitter_stays_within_its_spread() -> None:
    backoff = Backoff(BackoffConfig(initial_s=1.0, max_s=4.0, jitter=0.1), rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(5)]
    for delay, base in zip(delays, [1.0, 2.0, 4.0, 4.0, 4.0]):
        assert base * 0.9 <= delay <= base * 1.1
    assert len(set(delays)) == 5


def test_rate_limiter_admits_every_third_frame_of_30fps_at_10fps() -> None:
    limiter = RateLimiter(10.0)
    admitted = [i for i in range(30) if limiter.admit(i / 30)]
    assert admitted == list(range(0, 30, 3))
    ntsc = RateLimiter(10.0)
    assert [i for i in range(30) if ntsc.admit(i * 1001 / 30000)] == list(range(0, 30, 3))
    assert all(RateLimiter(0.0).admit(0.0) for _ in range(3))


def test_a_one_frame_buffer_keeps_the_newest_and_counts_the_overwritten() -> None:
    slot = FrameBuffer(1)
    for seq in range(3):
        slot.put(frame(seq))
    taken = slot.take()
    assert taken is not None and taken.seq == 2
    assert slot.dropped == 2
    assert slot.take() is None
    assert slot.take(timeout=0.01) is None


def test_a_deeper_buffer_absorbs_a_burst_oldest_first_and_drops_the_oldest_when_full() -> None:
    buffer = FrameBuffer(3)
    for seq in range(3):  # a decoder that fell behind delivers three frames at once
        buffer.put(frame(seq))
    assert [f.seq for f in (buffer.take(), buffer.take(), buffer.take())] == [0, 1, 2]  # type: ignore[union-attr]
    assert buffer.dropped == 0 and buffer.take() is None
    for seq in range(3, 8):  # a pipeline that stays late loses the oldest, and says so
        buffer.put(frame(seq))
    assert buffer.dropped == 2
    assert [f.seq for f in (buffer.take(), buffer.take(), buffer.take())] == [5, 6, 7]  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="depth"):
        FrameBuffer(0)


def test_buffer_frames_is_checked_when_the_config_loads() -> None:
    assert CameraConfig(id="door", url="rtsp://cam/1").buffer_frames == 3
    with pytest.raises(ValueError, match="buffer_frames"):
        CameraConfig(id="door", url="rtsp://cam/1", buffer_frames=0)


def once(reader: R) -> Callable[[CameraConfig], R]:
    """An opener that opens `reader` once, then fails (the camera backs off for long)."""
    opened: List[int] = []

    def opener(_config: CameraConfig) -> R:
        if opened:
            raise CaptureError("gone")
        opened.append(1)
        return reader

    return opener


class ListReader:
    """A fake stream: returns the given images at once, then fails (None)."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.released = threading.Event()

    def read(self) -> Optional[RawFrame]:
        if self.left <= 0:
            return None
        self.left -= 1
        return RawFrame(np.full((4, 4, 3), self.left, np.uint8), pts=None)

    def release(self) -> None:
        self.released.set()


def test_live_camera_keeps_its_last_frames_drops_older_ones_and_stamps_from_the_clock() -> None:
    reader = ListReader(50)
    opener = once(reader)
    clock = FakeClock(step=0.5)
    config = CameraConfig("fake", "rtsp://fake/x", max_fps=0.0, backoff=BackoffConfig(initial_s=10.0, max_s=10.0))
    with LiveCamera(config, clock=clock, opener=opener) as camera:
        assert wait_until(lambda: camera.state is CameraState.RECONNECTING, 5.0)
        got = camera.next_frame(1.0)
        stats = camera.stats()
        rest = [camera.next_frame(0.0) for _ in range(3)]
    assert got is not None and got.seq == 47  # the buffer (buffer_frames 3) kept the last three, oldest first
    assert [f.seq if f is not None else None for f in rest] == [48, 49, None]
    assert stats.frames_read == 50 and stats.frames_delivered == 1
    assert stats.frames_dropped == stats.frames_late == 47
    assert got.wall_time - 1_700_000_000.0 == pytest.approx(got.mono - 100.0)  # stamped from the fake clock
    assert reader.released.is_set()
    assert camera.state is CameraState.STOPPED


def test_live_camera_backs_off_longer_after_each_failure(caplog: pytest.LogCaptureFixture) -> None:
    def opener(_config: CameraConfig) -> ListReader:
        raise CaptureError("camera refuses")

    config = CameraConfig("bad", "rtsp://bad/x", backoff=BackoffConfig(initial_s=0.01, max_s=0.08, jitter=0.0))
    seen: List[float] = []
    with caplog.at_level(logging.DEBUG, logger="edge.capture"), LiveCamera(config, opener=opener) as camera:

        def record() -> bool:
            delay = camera.stats().backoff_s
            if delay and (not seen or seen[-1] != delay):
                seen.append(delay)
            return camera.stats().failures >= 6

        assert wait_until(record, 5.0, poll=0.001)
        assert camera.state is CameraState.RECONNECTING and camera.stats().last_error == "camera refuses"
    assert seen[:1] == [0.01] and seen[-1] == 0.08 and seen == sorted(seen)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "edge.capture"]
    assert len(warnings) == 1, "one warning per state change, not per attempt"
    assert "connecting -> reconnecting: camera refuses" in warnings[0].getMessage()


def test_disabled_camera_never_opens() -> None:
    def opener(_config: CameraConfig) -> ListReader:
        raise AssertionError("must not open")

    with LiveCamera(CameraConfig("off", "rtsp://x/y", enabled=False), opener=opener) as camera:
        assert camera.state is CameraState.DISABLED and camera.finished
        assert camera.next_frame(0.01) is None


# ------------------------------------------------------------------------------------------------ files


@pytest.fixture(scope="module")
def clip(data: Path) -> Path:
    path = data / "hamilton" / "short_hamilton_clip.mp4"
    if not path.is_file():
        pytest.skip(f"test clip not found: {path}")
    return path


def file_frames(path: Path, max_fps: float, start_wall: float = 1_700_000_000.0) -> List[Frame]:
    with FileSource(CameraConfig("rec", str(path), max_fps=max_fps), start_wall=start_wall) as source:
        frames = list(source.frames())
        stats = source.stats()
    assert stats.state is CameraState.STOPPED and stats.reason == "end of file"
    assert stats.frames_read == CLIP_FRAMES
    assert stats.frames_delivered + stats.frames_dropped == CLIP_FRAMES
    return frames


def test_file_source_gives_every_frame_on_media_time(clip: Path) -> None:
    frames = file_frames(clip, max_fps=0.0)
    assert len(frames) == CLIP_FRAMES
    assert [f.seq for f in frames] == list(range(CLIP_FRAMES))
    monos = np.array([f.mono for f in frames])
    assert monos[0] == 0.0 and np.all(np.diff(monos) > 0)
    assert np.allclose(np.diff(monos), 1001 / 30000, atol=1e-3)  # 29.97 fps media time, not the wall clock
    assert all(f.source_pts == f.mono for f in frames)
    assert all(f.wall_time == pytest.approx(1_700_000_000.0 + f.mono) for f in frames)
    assert frames[0].image.shape == (360, 640, 3) and frames[0].image.dtype == np.uint8


def test_file_source_max_fps_subsamples_in_media_time_deterministically(clip: Path) -> None:
    first = file_frames(clip, max_fps=10.0)
    second = file_frames(clip, max_fps=10.0)
    assert [f.seq for f in first] == list(range(0, CLIP_FRAMES, 3))
    assert [f.seq for f in second] == [f.seq for f in first]
    assert [f.wall_time for f in second] == [f.wall_time for f in first]


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="no such video file"):
        FileSource(CameraConfig("rec", str(tmp_path / "nope.mp4")))


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(4096))
    with pytest.raises(CaptureError, match="camera rec: cannot"):
        FileSource(CameraConfig("rec", str(bad)))


def test_camera_set_alternates_between_sources(clip: Path) -> None:
    a = FileSource(CameraConfig("a", str(clip), max_fps=0.0), start_wall=0.0)
    b = FileSource(CameraConfig("b", str(clip), max_fps=0.0), start_wall=0.0)
    with CameraSet([a, b]) as cameras:
        ids = [cameras.next_frame(0.0) for _ in range(6)]
        assert [f.camera_id for f in ids if f is not None] == ["a", "b"] * 3


# ------------------------------------------------------------------------------------------------ real RTSP


@pytest.fixture(scope="module")
def rtsp_ready() -> None:
    reason = rtsp_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def rtsp_server(rtsp_ready: None, clip: Path) -> Iterator[RtspServer]:
    server = RtspServer(clip, free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


def live_config(camera_id: str, url: str, **kwargs: object) -> CameraConfig:
    options = {
        "max_fps": 0.0,
        "open_timeout_s": 3.0,
        "read_timeout_s": 2.0,
        "backoff": BackoffConfig(initial_s=0.1, max_s=0.8, factor=2.0, jitter=0.0),
    }
    options.update(kwargs)
    return CameraConfig(camera_id, url, **options)  # type: ignore[arg-type]


def test_rtsp_server_sends_the_whole_clip_once(rtsp_ready: None, clip: Path) -> None:
    server = RtspServer(clip, free_port(), loop=False)
    server.start()
    try:
        reader = open_video(live_config("once", server.url))
        pts = []
        while (raw := reader.read()) is not None:
            pts.append(raw.pts)
            assert raw.image.shape == (360, 640, 3)
        reader.release()
        assert len(pts) >= CLIP_FRAMES - 2, "TCP transport must not lose frames"
        server.terminate()  # SIGTERM stops the test server (TimeoutExpired if it hung)
    finally:
        server.kill()


def test_live_camera_reconnects_after_the_server_restarts(
    rtsp_server: RtspServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="edge.capture"), LiveCamera(live_config("door", rtsp_server.url)) as cam:
        first = [f for f in (cam.next_frame(5.0) for _ in range(10)) if f is not None]
        assert len(first) == 10 and cam.state is CameraState.ONLINE
        assert all(b.seq > a.seq and b.mono > a.mono for a, b in zip(first, first[1:]))
        assert first[0].image.shape == (360, 640, 3)

        rtsp_server.kill()
        assert wait_until(lambda: cam.state is CameraState.RECONNECTING, 10.0), cam.stats()
        read_when_down = cam.stats().frames_read
        rtsp_server.start()
        assert wait_until(lambda: cam.state is CameraState.ONLINE, 15.0), cam.stats()
        again = [f for f in (cam.next_frame(5.0) for _ in range(5)) if f is not None]
        stats = cam.stats()
    assert len(again) == 5 and again[0].seq > first[-1].seq
    assert stats.frames_read > read_when_down and stats.reconnects >= 1
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("online -> reconnecting" in m for m in messages), messages
    assert any("reconnecting -> online" in m for m in messages), messages


def test_a_refused_rtsp_host_fails_before_opencv_with_a_clear_reason() -> None:
    port = free_port()
    with pytest.raises(CaptureError, match=rf"camera gone: cannot reach 127\.0\.0\.1:{port} \(.*refused") as caught:
        open_video(live_config("gone", f"rtsp://admin:s3cret@127.0.0.1:{port}/stream"))
    assert "s3cret" not in str(caught.value)


def test_a_missing_or_forbidden_usb_camera_says_which(monkeypatch: pytest.MonkeyPatch) -> None:
    for url in ("/dev/video97", "97"):
        with pytest.raises(
            CaptureError, match="camera usb: no such device /dev/video97 \\(is the USB camera plugged in"
        ):
            open_video(CameraConfig("usb", url))
    monkeypatch.setattr("edge.capture.live.os.path.exists", lambda path: True)
    monkeypatch.setattr("edge.capture.live.os.access", lambda path, mode: False)
    with pytest.raises(CaptureError, match="no permission to open /dev/video97 .*'video' group"):
        open_video(CameraConfig("usb", "/dev/video97"))


def test_a_silent_rtsp_service_does_not_hold_the_others_open(clip: Path) -> None:
    silent = socket.socket()  # accepts TCP connections (kernel backlog) but never says a word: a hung camera
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    errors: List[str] = []

    def open_silent() -> None:
        try:
            open_video(live_config("hung", f"rtsp://127.0.0.1:{silent.getsockname()[1]}/x", open_timeout_s=2.0))
        except CaptureError as exc:
            errors.append(str(exc))

    hung = threading.Thread(target=open_silent)
    try:
        hung.start()
        time.sleep(0.2)
        reader = open_video(live_config("door", str(clip), kind="file"))  # FFmpeg too: OpenCV's open lock is shared
        try:
            assert reader.read() is not None
            assert hung.is_alive(), "the working camera's open waited for the hung one"
        finally:
            reader.release()
            hung.join(10)
    finally:
        silent.close()
    assert len(errors) == 1 and "accepts connections but does not speak RTSP (no answer" in errors[0], errors


def test_a_service_that_is_not_rtsp_is_named_as_such() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer_http() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    helper = threading.Thread(target=answer_http, daemon=True)
    helper.start()
    try:
        with pytest.raises(CaptureError, match="does not speak RTSP \\(the answer is not RTSP\\)"):
            open_video(live_config("web", f"rtsp://127.0.0.1:{server.getsockname()[1]}/x"))
    finally:
        helper.join(5)
        server.close()


TEST_NET = "192.0.2.10"  # RFC 5737 TEST-NET-1: never routed, so a connection to it hangs until a timeout


def test_a_camera_whose_host_is_down_does_not_hold_the_others_open(clip: Path) -> None:
    started = time.monotonic()
    try:
        socket.create_connection((TEST_NET, 554), timeout=2.0).close()
        pytest.skip(f"{TEST_NET}:554 answered on this network")
    except OSError:
        if time.monotonic() - started < 1.0:
            pytest.skip(f"this network fails {TEST_NET} at once: no hanging connection to test with")
    errors: List[str] = []

    def open_dead() -> None:
        try:
            open_video(live_config("dead", f"rtsp://{TEST_NET}/stream", open_timeout_s=2.0))
        except CaptureError as exc:
            errors.append(str(exc))

    dead = threading.Thread(target=open_dead)
    dead.start()
    time.sleep(0.1)
    reader = open_video(live_config("door", str(clip), kind="file"))  # FFmpeg too: OpenCV's open lock is shared
    try:
        assert reader.read() is not None
        assert dead.is_alive(), "the working camera's open waited for the dead one"
    finally:
        reader.release()
        dead.join(10)
    assert len(errors) == 1 and f"cannot reach {TEST_NET}:554" in errors[0], errors


def test_unreachable_cameras_back_off_while_a_working_one_keeps_delivering(
    rtsp_server: RtspServer, caplog: pytest.LogCaptureFixture
) -> None:
    blackhole = socket.socket()  # accepts TCP connections (kernel backlog) but never says a word
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(8)
    closed = f"rtsp://127.0.0.1:{free_port()}/x"  # nothing listens: connection refused
    silent = f"rtsp://127.0.0.1:{blackhole.getsockname()[1]}/x"
    configs = [
        live_config("good", rtsp_server.url, max_fps=10.0),
        live_config("refused", closed),
        # a silent camera waits out its open_timeout_s (outside OpenCV's open lock) before each retry
        live_config("silent", silent, open_timeout_s=1.0, backoff=BackoffConfig(initial_s=2.0, max_s=4.0, jitter=0.0)),
    ]
    try:
        with caplog.at_level(logging.WARNING, logger="edge.capture"), CameraSet.open(configs).start() as cameras:
            refused = cameras.sources[1]
            backoffs: List[float] = []

            def refused_backs_off() -> bool:
                stats = refused.stats()
                if stats.backoff_s and (not backoffs or backoffs[-1] != stats.backoff_s):
                    backoffs.append(stats.backoff_s)
                return stats.failures >= 3

            counts = {"good": 0, "refused": 0, "silent": 0}
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:
                got = cameras.next_frame(0.2)
                if got is not None:
                    counts[got.camera_id] += 1
                refused_backs_off()
            stats = {s.camera_id: s for s in cameras.stats()}
    finally:
        blackhole.close()
    assert counts["good"] >= 20 and counts["refused"] == counts["silent"] == 0, counts
    assert stats["good"].state is CameraState.ONLINE
    for name in ("refused", "silent"):
        assert stats[name].state is CameraState.RECONNECTING, stats[name]
    assert "cannot reach" in (stats["refused"].last_error or "")  # refused before OpenCV is asked
    assert "does not speak RTSP (no answer" in (stats["silent"].last_error or "")  # TCP answers, RTSP does not
    # the waits grow 0.1, 0.2, 0.4 up to max_s 0.8 (sampled: the first ones may pass between two looks)
    assert stats["refused"].failures >= 3 and backoffs == sorted(backoffs) and backoffs[-1] == 0.8, backoffs
    assert set(backoffs) <= {0.1, 0.2, 0.4, 0.8} and len(backoffs) >= 2, backoffs
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("camera refused:" in m for m in warned) == 1, warned
    assert sum("camera silent:" in m for m in warned) == 1, warned


# ------------------------------------------------------------------------------------------------ frozen streams


def test_freeze_watch_needs_both_limits_and_resets_on_a_new_image() -> None:
    watch = FreezeWatch(FreezeLimits(after_s=2.0, frames=5))
    still = np.full((32, 32, 3), 7, np.uint8)
    assert not any(watch.frozen(still.copy(), 0.1 * i) for i in range(10))  # 9 repeats, but only 0.9 s
    assert watch.frozen(still.copy(), 2.5)  # and now for 2.5 s
    moved = still.copy()
    moved[31, 31, 2] = 8  # one pixel off the sampled grid: a different image
    assert not watch.frozen(moved, 2.6)
    assert not any(watch.frozen(moved.copy(), 2.6 + 0.1 * i) for i in range(1, 4))  # counting starts over


@pytest.fixture(scope="module")
def two_resolutions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MPEG-TS stream that changes from 320x240 to 640x480 after 2 s, as a camera whose resolution is changed."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not found")
    folder = tmp_path_factory.mktemp("resolution")
    parts = []
    for name, size in (("a", "320x240"), ("b", "640x480")):
        part = folder / f"{name}.ts"
        source = f"testsrc=size={size}:rate=10"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", source, "-t", "2", "-c:v", "libx264"]
            + ["-g", "10", "-pix_fmt", "yuv420p", str(part)],
            check=True,
            timeout=60,
        )
        parts.append(part.read_bytes())
    path = folder / "both.ts"
    path.write_bytes(b"".join(parts))
    return path


def test_a_camera_that_changes_resolution_is_not_left_online_and_blind(two_resolutions: Path) -> None:
    """OpenCV up to 4.11 keeps returning the last 320x240 image after the change: the camera must reconnect, not
    stay online. OpenCV 4.12+ (pip's current wheels) follows the change and reads the stream to its end."""
    config = live_config("door", str(two_resolutions), backoff=BackoffConfig(initial_s=5.0, max_s=5.0, jitter=0.0))
    with LiveCamera(config, freeze=FreezeLimits(after_s=0.0, frames=5)) as cam:
        assert wait_until(lambda: cam.state is CameraState.RECONNECTING, 20.0), cam.stats()
        stats = cam.stats()
    if stats.last_error.startswith("no frame"):  # OpenCV 4.12+: every frame of both parts, then the end
        assert stats.frames_read == 40, stats
        return
    assert stats.last_error.startswith("frozen: the same image"), stats.last_error
    assert stats.frames_read < 40, "it stopped at the change, not at the end of the stream"


def test_rate_limiter_keeps_every_frame_of_a_jittery_stream_at_exactly_the_cap() -> None:
    """A 10 fps camera at max_fps 10 whose frames are stamped a few ms early or late loses none (issue 9: 9% were
    skipped by the cap)."""
    jitter = [0.0, -0.012, 0.018, -0.02, 0.004, 0.015, -0.018, 0.0, 0.009, -0.007] * 10
    limiter = RateLimiter(10.0)
    assert all(limiter.admit(i / 10 + j) for i, j in enumerate(jitter))


def test_rate_limiter_thins_a_faster_jittery_stream_to_the_cap_and_restarts_when_time_goes_back() -> None:
    limiter = RateLimiter(10.0)
    times = [i / 25 + (0.006 if i % 2 else -0.006) for i in range(250)]  # 10 s at 25 fps
    admitted = sum(limiter.admit(t) for t in times)
    assert 95 <= admitted <= 101
    assert limiter.admit(0.0)  # a looped file / reconnected stream starts its timeline again


class _SlotSource:
    """A camera's latest-frame slot as a FrameSource, filled by the test (a capture thread's part)."""

    def __init__(self, camera_id: str) -> None:
        self.camera_id = camera_id
        self.slot = FrameBuffer(1)
        self.seq = 0

    def put(self, mono: float) -> None:
        self.slot.put(Frame(self.camera_id, self.seq, np.zeros((2, 2, 3), np.uint8), mono, mono))
        self.seq += 1

    def poll(self) -> Optional[Frame]:
        return self.slot.take()

    def next_frame(self, timeout: float) -> Optional[Frame]:
        return self.slot.take()

    def stats(self) -> CameraStats:
        return CameraStats(self.camera_id, CameraState.ONLINE, "", frames_late=self.slot.dropped)

    @property
    def finished(self) -> bool:
        return False

    def close(self) -> None:
        pass


def test_a_late_pipeline_loses_frames_evenly_across_cameras_and_counts_them() -> None:
    """Four cameras at 10 fps, a pipeline that can take 30 frames a second: each camera keeps ~3/4 of its frames,
    and every frame it loses is counted as late."""
    sources = [_SlotSource(f"cam{i}") for i in range(4)]
    cameras = CameraSet(sources)  # type: ignore[arg-type]
    taken = {s.camera_id: 0 for s in sources}
    for tick in range(300):  # 10 s in 1/30 s steps: a frame from every camera each 1/10 s, one taken per step
        if tick % 3 == 0:
            for source in sources:
                source.put(tick / 30)
        frame = cameras.poll()
        if frame is not None:
            taken[frame.camera_id] += 1
    counts = list(taken.values())
    assert max(counts) - min(counts) <= 1, taken
    for source in sources:
        late = source.stats().frames_late
        assert late + taken[source.camera_id] + (1 if source.slot.take() is not None else 0) == source.seq
        assert late > 0


# ------------------------------------------------------------------------------------------------ pacing on the stream's PTS

Sample = Tuple[float, Optional[float]]
JITTER = [0.0, -0.012, 0.018, -0.02, 0.004, 0.015, -0.018, 0.0, 0.009, -0.007]


def pace(samples: Sequence[Sample], max_fps: float = 10.0) -> List[int]:
    """Which of the (arrival, PTS) samples a live camera delivers under max_fps: its Timeline and RateLimiter, wired
    as LiveCamera wires them."""
    timeline, limiter = Timeline(), RateLimiter(max_fps)
    admitted = []
    for i, (mono, pts) in enumerate(samples):
        stamp = timeline.place(mono, pts)
        if limiter.admit(stamp.t, restart=stamp.restart):
            admitted.append(i)
    return admitted


def connect_burst(burst: int = 27, steady: int = 50, fps: float = 10.0) -> List[Sample]:
    """An RTSP camera as OpenCV's FFmpeg open delivers it (recorded from scripts/rtsp_server.py): the `burst` frames
    its probing read ahead, 0-5 ms apart, then one frame per interval (jittered) at the live edge; PTS rise by one
    interval each, after the first frame's placeholder 0 (OpenCV reports 0, 0, 0.1, 0.2...)."""
    gaps = [0.002, 0.0, 0.005, 0.001, 0.003]
    step = 1.0 / fps
    samples: List[Sample] = []
    mono = 100.0
    for i in range(burst):
        mono += gaps[i % len(gaps)]
        samples.append((mono, max(0, i - 1) * step))
    for k in range(1, steady + 1):
        samples.append((mono + k * step + JITTER[k % 10] * step * 10, (burst - 2 + k) * step))
    return samples


def without_pts(samples: Sequence[Sample], pts: Optional[float] = None) -> List[Sample]:
    return [(mono, pts) for mono, _ in samples]


def test_a_connect_burst_with_steady_pts_at_cap_10_loses_no_frame() -> None:
    samples = connect_burst()
    assert pace(samples) == list(range(len(samples)))


def test_the_same_burst_without_pts_is_paced_by_arrival_as_before() -> None:
    """Without timestamps the burst's frames look 0-5 ms apart: only its first is due, the rest are skipped (the
    camera cannot tell them from a stream far above max_fps); the live stream after it loses none. OpenCV's "no
    timestamp" is 0 on every frame: the same, but for the second frame (taken for the placeholder's successor)."""
    samples = without_pts(connect_burst())
    admitted = pace(samples)
    assert admitted == [0, *range(27, len(samples))]
    assert pace(without_pts(connect_burst(), pts=0.0)) == [0, 1, *range(27, len(samples))]


def test_a_30fps_stream_is_thinned_to_10_by_its_pts_even_in_a_burst() -> None:
    """Every third frame, once the PTS are known: the first two on arrival, each starting afresh (OpenCV's
    placeholder PTS, then a PTS alone says nothing yet), the third starts the PTS grid."""
    samples = connect_burst(burst=60, steady=150, fps=30.0)
    assert pace(samples) == [0, 1, *range(2, len(samples), 3)]
    ntsc = [(mono, max(0, i - 1) * 1001 / 30000) for i, (mono, _) in enumerate(samples)]
    assert pace(ntsc) == [0, 1, *range(2, len(samples), 3)]


def test_a_pts_jump_back_or_forward_restarts_pacing_and_loses_nothing() -> None:
    """A looped stream (PTS back to 0) or a camera that reset its clock (PTS far ahead): a new timeline, paced
    afresh, nothing starved."""
    first = connect_burst(steady=40)
    end = first[-1][0]
    looped = first + [(end + k * 0.1, (k - 1) * 0.1) for k in range(1, 40)]
    leaped = first + [(end + k * 0.1, 5000.0 + k * 0.1) for k in range(1, 40)]
    for samples in (looped, leaped):
        assert pace(samples) == list(range(len(samples)))
        timeline = Timeline()
        stamps = [timeline.place(mono, pts) for mono, pts in samples]
        assert [i for i, s in enumerate(stamps) if s.restart] == [1, 2, len(first), len(first) + 1]
        assert stamps[-1].on_pts
    thirty = connect_burst(burst=30, steady=90, fps=30.0)
    end = thirty[-1][0]
    thirty += [(end + k / 30, 0.5 + k / 30) for k in range(1, 91)]  # 3 s more after a jump back
    # every third frame, and one more each time the grid restarts (on arrival for one frame, then on the new PTS)
    assert pace(thirty) == [0, 1, *range(2, 120, 3), 120, *range(121, 210, 3)]


def steady(count: int, fps: float, start: float = 100.0) -> List[float]:
    return [start + i / fps + JITTER[i % 10] / fps for i in range(count)]


@pytest.mark.parametrize(
    "name, pts",
    [
        ("missing", lambda i: None),
        ("zero", lambda i: 0.0),
        ("constant", lambda i: 12.5),
        ("not finite", lambda i: float("nan")),
        ("milliseconds read as seconds", lambda i: i * 100.0),
        ("random", lambda i: random.Random(i).uniform(0.0, 3.0)),
        ("decode order", lambda i: (i + (2 if i % 3 == 1 else -1 if i % 3 != 0 else 0)) * 0.1),
    ],
)
def test_a_stream_whose_pts_cannot_be_trusted_is_paced_by_arrival(
    name: str, pts: Callable[[int], Optional[float]]
) -> None:
    """A 10 fps camera at max_fps 10 delivers every frame, a 30 fps one is thinned to 10, whatever its PTS say."""
    ten = [(mono, pts(i)) for i, mono in enumerate(steady(100, 10.0))]
    assert pace(ten) == list(range(100)), name
    thirty = [(mono, pts(i)) for i, mono in enumerate(steady(300, 30.0))]
    assert 95 <= len(pace(thirty)) <= 105, name


def test_pts_far_slower_than_arrival_stop_being_trusted_within_the_rate_window() -> None:
    """PTS in the wrong unit (seconds read as milliseconds) look steady but would starve the camera; once a rate
    window of arrival shows them 1000 times too slow, the camera is paced by arrival and delivers every frame."""
    samples = [(mono, i * 0.0001) for i, mono in enumerate(steady(150, 10.0))]
    admitted = pace(samples)
    settled = int(Timeline.RATE_WINDOW_S * 10) + 1
    assert [i for i in admitted if i >= settled] == list(range(settled, 150))
    timeline = Timeline()
    assert not [timeline.place(mono, pts) for mono, pts in samples][-1].on_pts


def test_lag_reads_a_burst_as_live_and_counts_the_time_a_reader_was_held() -> None:
    timeline = Timeline()
    samples = connect_burst(steady=5)
    burst = [timeline.place(mono, pts) for mono, pts in samples]
    assert burst[1].lag is None  # OpenCV's placeholder PTS, then a single PTS: not trusted yet
    assert all(s.lag == pytest.approx(0.0, abs=0.05) for s in burst[2:])  # its age is not known: live
    assert burst[-1].patience(1.5) == pytest.approx(1.5, abs=0.05)
    mono, pts = samples[-1][0], samples[-1][1] or 0.0
    held: List[Stamp] = []
    for _ in range(8):  # the reader waits 0.3 s per frame for a slow pipeline: 0.2 s more behind each time
        mono, pts = mono + 0.3, pts + 0.1
        held.append(timeline.place(mono, pts))
    before = burst[-1].lag or 0.0
    assert [(s.lag or 0.0) - before for s in held] == pytest.approx([0.2 * k for k in range(1, 9)])
    assert held[-1].patience(1.5) == 0.0 and held[2].patience(1.5) == pytest.approx(0.9 - before)
    assert Stamp(0.0, False, False).patience(1.5) == 0.0  # no PTS, no lag known: never wait


def test_the_live_edge_follows_a_slow_camera_clock_only_while_the_buffer_is_empty() -> None:
    samples = [(100.0 + i * 0.1, i * 0.1 * (1 - 5e-4)) for i in range(6000)]  # 10 min, camera clock 500 ppm slow
    idle, busy = Timeline(), Timeline()
    last_idle = [idle.place(mono, pts, idle=True) for mono, pts in samples][-1]
    last_busy = [busy.place(mono, pts, idle=False) for mono, pts in samples][-1]
    assert last_idle.lag is not None and last_idle.lag < 0.01
    assert last_busy.lag == pytest.approx(0.3, abs=0.01)  # waiting for a pipeline is never forgotten


def test_max_lag_s_is_checked_when_the_config_loads() -> None:
    assert CameraConfig(id="door", url="rtsp://cam/1").max_lag_s == 1.5
    assert CameraConfig(id="door", url="rtsp://cam/1", max_lag_s=0.0).max_lag_s == 0.0
    for bad in (-0.1, 3.5):
        with pytest.raises(ValueError, match="max_lag_s"):
            CameraConfig(id="door", url="rtsp://cam/1", max_lag_s=bad)


# ------------------------------------------------------------------------------------------------ waiting for room


def test_a_full_buffer_waits_for_the_pipeline_then_drops_the_oldest() -> None:
    buffer = FrameBuffer(1)
    buffer.put(frame(0))
    timer = threading.Timer(0.1, buffer.take)
    timer.start()
    started = time.monotonic()
    buffer.put(frame(1), wait=5.0)  # taken after 0.1 s: room, nothing lost
    assert 0.05 <= time.monotonic() - started < 2.0 and buffer.dropped == 0
    started = time.monotonic()
    buffer.put(frame(2), wait=0.05)  # nobody takes: after the wait the oldest goes, counted
    assert time.monotonic() - started >= 0.05 and buffer.dropped == 1
    stop = threading.Event()
    threading.Timer(0.1, lambda: (stop.set(), buffer.wake())).start()
    started = time.monotonic()
    buffer.put(frame(3), wait=30.0, stop=stop)  # a stopping camera does not wait out its patience
    assert time.monotonic() - started < 2.0 and buffer.dropped == 2
    taken = buffer.take()
    assert taken is not None and taken.seq == 3
    timer.join()


class LiveReader:
    """A fake RTSP stream in real time: the first `burst` frames at once (what an open read ahead), then one every
    `interval` seconds; PTS rise by `interval`; None after `frames` frames."""

    def __init__(self, burst: int = 1, interval: float = 0.1, frames: int = 10**6, pts: bool = True) -> None:
        self.burst, self.interval, self.frames, self.pts = burst, interval, frames, pts
        self.start: Optional[float] = None
        self.count = 0

    def read(self) -> Optional[RawFrame]:
        if self.start is None:
            self.start = time.monotonic()
        if self.count >= self.frames:
            return None
        due = self.start + max(0, self.count - self.burst + 1) * self.interval
        time.sleep(max(0.0, due - time.monotonic()))
        image = np.full((4, 4, 3), self.count % 256, np.uint8)
        pts = self.count * self.interval if self.pts else None
        self.count += 1
        return RawFrame(image, pts)

    def release(self) -> None:
        pass


def fake_live(max_fps: float = 10.0, buffer_frames: int = 3, max_lag_s: float = 1.5) -> CameraConfig:
    backoff = BackoffConfig(initial_s=30.0, max_s=30.0)
    return CameraConfig(
        "fake", "rtsp://fake/x", max_fps=max_fps, buffer_frames=buffer_frames, max_lag_s=max_lag_s, backoff=backoff
    )


def consume(camera: LiveCamera, until: float, every: float) -> List[Frame]:
    """A pipeline that takes `every` seconds per frame, until `until` (monotonic) or the camera gives no more."""
    got: List[Frame] = []
    while time.monotonic() < until:
        taken = camera.next_frame(0.3)
        if taken is None:
            if camera.state is CameraState.RECONNECTING:
                break
            continue
        got.append(taken)
        time.sleep(every)
    return got


def exact(stats: CameraStats, buffered: int) -> bool:
    read = stats.frames_delivered + stats.frames_late + stats.frames_skipped + buffered
    return stats.frames_read == read and stats.frames_dropped == stats.frames_late + stats.frames_skipped


@pytest.mark.parametrize("max_lag_s, pts", [(1.5, True), (0.0, True), (1.5, False)])
def test_a_connect_burst_reaches_a_busy_pipeline_when_the_camera_waits(max_lag_s: float, pts: bool) -> None:
    """27 frames at once, then 10 fps, to a pipeline taking 25 ms a frame: waiting for room delivers every one;
    without waiting (max_lag_s 0) the 3-frame buffer overflows; without PTS the burst is skipped by max_fps."""
    reader = LiveReader(burst=27, frames=37, pts=pts)
    with LiveCamera(fake_live(max_lag_s=max_lag_s), opener=once(reader)) as camera:
        got = consume(camera, time.monotonic() + 10.0, every=0.025)
        assert wait_until(lambda: camera.state is CameraState.RECONNECTING, 5.0)
        got += [f for f in iter(lambda: camera.next_frame(0.0), None)]
        stats = camera.stats()
    assert stats.frames_read == 37 and exact(stats, buffered=0), stats
    if max_lag_s and pts:
        assert [f.seq for f in got] == list(range(37)) and stats.frames_dropped == 0, stats
    elif pts:
        assert stats.frames_late >= 10 and stats.frames_skipped == 0, stats
    else:
        assert stats.frames_skipped >= 20, stats


def test_a_pipeline_that_stays_slow_holds_the_camera_at_most_max_lag_s_behind() -> None:
    """A 100 fps stream, a pipeline that takes nothing for a second: the camera waits, then, held 0.3 s behind
    live, drops the oldest frames (counted late) instead of falling further behind."""
    reader = LiveReader(interval=0.01)
    with LiveCamera(fake_live(max_fps=0.0, max_lag_s=0.3), opener=once(reader)) as camera:
        assert wait_until(lambda: camera.stats().frames_read >= 3, 5.0)
        time.sleep(1.0)
        taken = camera.next_frame(0.0)
        now = time.monotonic()
        stats = camera.stats()
    assert taken is not None and reader.start is not None and taken.source_pts is not None
    behind = (now - reader.start) - taken.source_pts
    assert 0.2 <= behind <= 0.3 + 0.25, behind  # waited, but never more than max_lag_s (and the buffer's 3 frames)
    assert stats.frames_late >= 30, stats
    assert stats.frames_read < (now - reader.start) / 0.01 - 15, stats  # held back: not reading at the live edge


def test_close_returns_at_once_while_the_camera_waits_for_room() -> None:
    reader = LiveReader(burst=1000)  # a backlog that never ends: the camera always waits for room
    camera = LiveCamera(fake_live(buffer_frames=1, max_lag_s=3.0), opener=once(reader)).start()
    assert wait_until(lambda: camera.stats().frames_read >= 1 and reader.count >= 2, 5.0)
    time.sleep(0.1)
    started = time.monotonic()
    camera.close(timeout=5.0)
    assert time.monotonic() - started < 1.0
    assert camera.state is CameraState.STOPPED and camera._thread is not None and not camera._thread.is_alive()
    left = [f for f in iter(lambda: camera.next_frame(0.0), None)]
    assert len(left) == 1 and exact(camera.stats(), buffered=0), camera.stats()
