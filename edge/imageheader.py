"""An image's format and size read from its header, without decoding it: the guard against decompression bombs.

A few hundred bytes can declare 30000x30000 pixels; a decoder allocates them before it finds out the data is
missing. `read_header` looks only at the header (PNG IHDR, JPEG SOFn, BMP, WebP, PNM), so the caller can refuse
a photo by its size before any decoder runs. Formats not listed here are refused: a decoder we cannot size first
is not run at all.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import List, Union

Buffer = Union[bytes, bytearray, memoryview]

FORMATS = "JPEG, PNG, BMP, WebP or PNM"
MAX_SIDE = 1 << 20
"""Sides above this are nonsense whatever the pixel limit (and keep the arithmetic small)."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
"""Start-of-frame markers (C4 = DHT, C8 = JPG extension, CC = DAC are not frames)."""
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}
"""TEM and RST0..7 carry no length."""


class HeaderError(ValueError):
    """The data is not an image of an accepted format, or its header is damaged."""


@dataclass(frozen=True)
class ImageHeader:
    format: str
    """'jpeg', 'png', 'bmp', 'webp' or 'pnm'."""
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: Buffer) -> ImageHeader:
    """The format and size declared by `data`'s header, or HeaderError."""
    view = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else memoryview(data)
    head = bytes(view[:16])
    if head.startswith(_PNG_SIGNATURE):
        header = _png(view)
    elif head.startswith(b"\xff\xd8"):
        header = _jpeg(view)
    elif head.startswith(b"BM"):
        header = _bmp(view)
    elif head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        header = _webp(view)
    elif len(head) >= 2 and head[0:1] == b"P" and head[1:2] in b"123456":
        header = _pnm(view)
    else:
        raise HeaderError(f"not a {FORMATS} file")
    if not (1 <= header.width <= MAX_SIDE and 1 <= header.height <= MAX_SIDE):
        raise HeaderError(f"{header.format.upper()} header declares {header.width}x{header.height} pixels")
    return header


def _unpack(fmt: str, view: memoryview, offset: int, what: str) -> tuple:  # type: ignore[type-arg]
    try:
        return struct.unpack_from(fmt, view, offset)
    except struct.error:
        raise HeaderError(f"{what} header is cut short") from None


def _png(view: memoryview) -> ImageHeader:
    length, kind, width, height = _unpack(">I4sII", view, 8, "PNG")
    if kind != b"IHDR" or length != 13:
        raise HeaderError("PNG does not start with its IHDR header")
    return ImageHeader("png", width, height)


def _jpeg(view: memoryview) -> ImageHeader:
    """Walk the marker segments up to the first start-of-frame (which must precede the first scan)."""
    i, end = 2, len(view)
    while i < end:
        if view[i] != 0xFF:  # stray bytes before a marker: libjpeg skips them too
            skip = bytes(view[i:]).find(b"\xff")
            if skip < 0:
                break
            i += skip
        while i < end and view[i] == 0xFF:  # fill bytes
            i += 1
        if i >= end:
            break
        marker = view[i]
        i += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before them
            raise HeaderError("JPEG has no frame header")
        (length,) = _unpack(">H", view, i, "JPEG")
        if length < 2:
            raise HeaderError("JPEG marker segments are damaged")
        if marker in _JPEG_SOF:
            _precision, height, width = _unpack(">BHH", view, i + 2, "JPEG")
            if height == 0:
                raise HeaderError("JPEG declares its height later in the stream (DNL): not accepted")
            return ImageHeader("jpeg", width, height)
        i += length
    raise HeaderError("JPEG header is cut short")


def _bmp(view: memoryview) -> ImageHeader:
    (dib_size,) = _unpack("<I", view, 14, "BMP")
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = _unpack("<HH", view, 18, "BMP")
    else:
        width, height = _unpack("<ii", view, 18, "BMP")
    return ImageHeader("bmp", abs(width), abs(height))  # a negative height means top-down rows


def _webp(view: memoryview) -> ImageHeader:
    (chunk,) = _unpack("4s", view, 12, "WebP")
    if chunk == b"VP8 ":
        start, width, height = _unpack("<3sHH", view, 23, "WebP")
        if start != b"\x9d\x01\x2a":
            raise HeaderError("WebP VP8 frame header is damaged")
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":
        signature, bits = _unpack("<BI", view, 20, "WebP")
        if signature != 0x2F:
            raise HeaderError("WebP VP8L header is damaged")
        return ImageHeader("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        raw = bytes(view[24:30])
        if len(raw) < 6:
            raise HeaderError("WebP header is cut short")
        width = int.from_bytes(raw[0:3], "little") + 1
        height = int.from_bytes(raw[3:6], "little") + 1
        return ImageHeader("webp", width, height)
    raise HeaderError("WebP has an unknown first chunk")


def _pnm(view: memoryview) -> ImageHeader:
    """P1..P6: magic, then width and height as decimal tokens separated by whitespace and # comments."""
    text = bytes(view[2:1026])
    tokens: List[int] = []
    i = 0
    while len(tokens) < 2:
        while i < len(text) and (text[i : i + 1].isspace() or text[i : i + 1] == b"#"):
            if text[i : i + 1] == b"#":
                newline = text.find(b"\n", i)
                i = len(text) if newline < 0 else newline
            i += 1
        start = i
        while i < len(text) and text[i : i + 1].isdigit():
            i += 1
        if start == i or i - start > 7 or i >= len(text):
            raise HeaderError("PNM header is damaged or cut short")
        tokens.append(int(text[start:i]))
    return ImageHeader("pnm", tokens[0], tokens[1])
