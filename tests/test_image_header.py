"""Decompression bombs: a photo's size is read from its header and refused before any decoder allocates it."""

from __future__ import annotations

import base64
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import ImageError
from edge.imageheader import HeaderError, read_header
from edge.images import MAX_WORKING_SIDE, decode_image, read_image

REPO = Path(__file__).resolve().parent.parent


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)


def png_bomb(side: int) -> bytes:
    """A real, valid PNG of side x side black pixels: a few hundred kilobytes."""
    packer = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0 + the row
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return png_header(side, side) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def jpeg_header(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + b"\xff\xff" + sof0 + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + bytes(64)


CRAFTED = {
    "png": png_header(30000, 30000) + png_chunk(b"IDAT", zlib.compress(bytes(1000))),
    "jpeg": jpeg_header(30000, 30000),
    "bmp": b"BM" + bytes(12) + struct.pack("<Iii", 40, 30000, -30000) + bytes(40),
    "webp": b"RIFF\x00\x00\x00\x00WEBPVP8X" + struct.pack("<I", 10) + bytes(4) + (29999).to_bytes(3, "little") * 2,
    "webp-lossless": b"RIFF\x00\x00\x00\x00WEBPVP8L\x00\x00\x00\x00\x2f"
    + struct.pack("<I", 16383 | (16383 << 14)),
    "pnm": b"P5\n# a comment\n30000 30000\n255\n" + bytes(100),
}


@pytest.fixture
def no_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("a decoder ran on a photo whose header is over the limit")

    monkeypatch.setattr(cv2, "imdecode", refuse)


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_a_huge_declared_size_is_refused_before_decoding(kind: str, no_decoder: None) -> None:
    with pytest.raises(ImageError, match=r"photo: \d+x\d+ is over the 64 megapixel limit"):
        decode_image(CRAFTED[kind], "photo")
    with pytest.raises(ImageError, match="megapixel limit"):
        decode_image(np.frombuffer(CRAFTED[kind], dtype=np.uint8), "photo")


def test_a_huge_photo_file_is_refused_before_decoding(tmp_path: Path, no_decoder: None) -> None:
    path = tmp_path / "bomb.jpg"
    path.write_bytes(CRAFTED["jpeg"])
    with pytest.raises(ImageError, match=r"bomb\.jpg: 30000x30000 is over the 64 megapixel limit"):
        read_image(path)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"II*\x00" + bytes(100), "not a JPEG, PNG, BMP, WebP or PNM file"),  # TIFF: not sized first, not decoded
        (b"GIF89a" + bytes(100), "not a JPEG, PNG, BMP, WebP or PNM file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "cut short"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "cut short"),
        (b"\xff\xd8\xff\xda\x00\x08" + bytes(20), "no frame header"),
        (b"\xff\xd8\x00\x00", "cut short"),
        (b"\xff\xd8\xff\xe0\x00\x01" + bytes(8), "damaged"),
        (jpeg_header(100, 0), "DNL"),
        (png_header(0, 10), "declares 0x10 pixels"),
        (b"P6\n12345678 1\n255\n", "damaged"),
    ],
)
def test_unknown_formats_and_damaged_headers_are_refused(data: bytes, reason: str, no_decoder: None) -> None:
    with pytest.raises(ImageError, match=f"photo: not a readable image \\(.*{reason}"):
        decode_image(data, "photo")


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp", ".pgm", ".ppm"])
def test_every_accepted_format_reports_its_real_size(ext: str) -> None:
    image = np.zeros((123, 321), np.uint8) if ext == ".pgm" else np.zeros((123, 321, 3), np.uint8)
    ok, encoded = cv2.imencode(ext, image)
    assert ok
    header = read_header(encoded.tobytes())
    assert (header.width, header.height) == (321, 123)
    assert decode_image(encoded.tobytes(), "photo").shape == (123, 321, 3)


def test_a_large_jpeg_is_decoded_reduced_to_the_working_size() -> None:
    ok, encoded = cv2.imencode(".jpg", np.full((1000, 9000, 3), 200, np.uint8))
    assert ok
    image = decode_image(encoded, "wide.jpg")
    assert image.shape == (455, MAX_WORKING_SIDE, 3)


def test_a_header_error_is_a_value_error() -> None:
    with pytest.raises(HeaderError):
        read_header(b"")


def test_a_real_png_bomb_in_a_gallery_command_keeps_memory_low(tmp_path: Path) -> None:
    """As in the daemon: cv2 is imported before edge.images, so OPENCV_IO_MAX_IMAGE_PIXELS (read by OpenCV when it
    loads) does not help; a 12000 x 12000 PNG (~150 KB) would take over 400 MB to decode. The growth of peak RSS
    over the photo is measured (the imports' own footprint varies with the machine and the wheels)."""
    bomb = tmp_path / "bomb.b64"
    bomb.write_text(base64.b64encode(png_bomb(12000)).decode("ascii"))
    assert bomb.stat().st_size < 1_000_000
    script = (
        "import resource, sys, cv2\n"
        "from edge.errors import ImageError\n"
        "from edge.gallery.sync import decode_photo\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n"
        "try:\n"
        f"    decode_photo(open({str(bomb)!r}).read(), 'photo 0')\n"
        "    print('decoded')\n"
        "except ImageError as exc:\n"
        "    print(exc)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 - before)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}  # set by this process' import
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    assert out[0] == "photo 0: 12000x12000 is over the 64 megapixel limit"
    assert int(out[1]) < 100, f"peak RSS grew by {out[1]} MB"  # a decode would take over 400 MB


def test_stray_bytes_between_jpeg_segments_are_skipped_like_libjpeg_does() -> None:
    header = jpeg_header(640, 480)
    sof = header.index(b"\xff\xff\xff\xc0")
    assert read_header(header[:sof] + b"\x00\x17" + header[sof:]).width == 640
