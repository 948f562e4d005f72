#!/usr/bin/python3
"""A small RTSP camera for tests: serve an H.264 video file at rtsp://HOST:PORT/MOUNT in real time.

Run with the SYSTEM python, which has PyGObject and gst-rtsp-server (scripts/install_system_deps.sh):

    /usr/bin/python3 scripts/rtsp_server.py --file clip.mp4 --port 8554 --mount cam --loop

How it works, without decoding a single frame:

1. At start-up, `filesrc ! qtdemux ! h264parse ! appsink` reads the file's H.264 access units (and the caps with
   SPS/PPS) into memory once. The file must hold H.264 video; audio is ignored.
2. Each RTSP client gets its own media (the factory is not shared), so every client sees the clip from its first
   frame, a deterministic start for tests: `appsrc ! rtph264pay config-interval=-1`. The appsrc pushes the stored
   access units with their own timestamps; with --loop each pass is shifted by the clip's duration, so timestamps
   keep increasing and the stream never ends. The server's sinks sync to the pipeline clock: real time.
3. Clients may use RTP over UDP or interleaved in the RTSP TCP connection.

Prints exactly one line "READY rtsp://HOST:PORT/MOUNT" to stdout once listening (with --port 0 the kernel picks the
port and the line says which); exits with status 0 on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import dataclass
from typing import List, Optional

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


@dataclass(frozen=True)
class AccessUnit:
    data: bytes
    pts: int
    duration: int
    keyframe: bool


@dataclass(frozen=True)
class Clip:
    caps: Gst.Caps
    units: List[AccessUnit]
    duration: int
    """Nanoseconds from the first frame's timestamp to the end of the last frame."""


def load_clip(path: str) -> Clip:
    """Read every H.264 access unit of `path` (no decoding) with timestamps relative to the first one."""
    pipeline = Gst.parse_launch(
        "filesrc name=file ! qtdemux name=demux demux.video_0 ! h264parse ! "
        "video/x-h264,stream-format=avc,alignment=au ! appsink name=sink sync=false"
    )
    pipeline.get_by_name("file").set_property("location", path)
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    units: List[AccessUnit] = []
    caps: Optional[Gst.Caps] = None
    first_pts: Optional[int] = None
    try:
        while True:
            sample = sink.emit("try-pull-sample", 10 * Gst.SECOND)
            if sample is None:
                break
            buf = sample.get_buffer()
            caps = caps or sample.get_caps()
            pts = buf.pts if buf.pts != Gst.CLOCK_TIME_NONE else len(units) * Gst.SECOND // 30
            first_pts = pts if first_pts is None else first_pts
            duration = buf.duration if buf.duration != Gst.CLOCK_TIME_NONE else Gst.SECOND // 30
            keyframe = not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)
            units.append(AccessUnit(buf.extract_dup(0, buf.get_size()), pts - first_pts, duration, keyframe))
        bus = pipeline.get_bus()
        error = bus.pop_filtered(Gst.MessageType.ERROR)
        if error is not None:
            err, _debug = error.parse_error()
            raise RuntimeError(f"cannot read {path}: {err.message}")
    finally:
        pipeline.set_state(Gst.State.NULL)
    if not units or caps is None:
        raise RuntimeError(f"cannot read {path}: no H.264 video frames found")
    last = units[-1]
    return Clip(caps=caps, units=units, duration=last.pts + last.duration)


class ClipFeeder:
    """Feeds one client's appsrc from the stored clip, looping or once."""

    def __init__(self, clip: Clip, loop: bool) -> None:
        self.clip = clip
        self.loop = loop
        self.index = 0
        self.offset = 0

    def need_data(self, appsrc: Gst.Element, _length: int) -> None:
        units = self.clip.units
        if self.index >= len(units):
            if not self.loop:
                appsrc.emit("end-of-stream")
                return
            self.index = 0
            self.offset += self.clip.duration
        unit = units[self.index]
        self.index += 1
        buf = Gst.Buffer.new_wrapped(unit.data)
        buf.pts = buf.dts = unit.pts + self.offset
        buf.duration = unit.duration
        if not unit.keyframe:
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        appsrc.emit("push-buffer", buf)


class ClipFactory(GstRtspServer.RTSPMediaFactory):
    """One fresh pipeline per client (not shared), so each client starts at the clip's first frame."""

    def __init__(self, clip: Clip, loop: bool) -> None:
        super().__init__()
        self.clip = clip
        self.loop = loop
        self.set_shared(False)
        self.set_launch("( appsrc name=src format=time is-live=false ! rtph264pay name=pay0 pt=96 config-interval=-1 )")
        self.connect("media-configure", self._on_media_configure)

    def _on_media_configure(self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_by_name("src")
        appsrc.set_property("caps", self.clip.caps)
        appsrc.set_property("max-bytes", 1 << 20)
        feeder = ClipFeeder(self.clip, self.loop)
        appsrc.connect("need-data", feeder.need_data)
        media.feeder = feeder  # keep it alive as long as the media


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Serve an H.264 video file over RTSP in real time (tests).")
    parser.add_argument("--file", required=True, help="video file with H.264 video (mp4/mov)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8554, help="TCP port for RTSP; 0 picks a free one (default 8554)")
    parser.add_argument("--mount", default="cam", help="path of the stream (default cam)")
    parser.add_argument("--loop", action="store_true", help="repeat the clip forever instead of ending once")
    args = parser.parse_args(argv)

    Gst.init(None)
    try:
        clip = load_clip(args.file)
    except (RuntimeError, GLib.Error) as exc:
        print(f"rtsp_server: {exc}", file=sys.stderr)
        return 2

    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mount = "/" + args.mount.strip("/")
    server.get_mount_points().add_factory(mount, ClipFactory(clip, args.loop))
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 2

    main_loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, main_loop.quit)
    print(f"READY rtsp://{args.host}:{server.get_bound_port()}{mount}", flush=True)
    main_loop.run()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without interpreter teardown: GStreamer's streaming threads may still be inside our Python callbacks
    # (need-data) while Python finalizes, which segfaulted about once in a few hundred runs under load.
    os._exit(code)
