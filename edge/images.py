"""Reading still photos safely: every failure is an ImageError that says what is wrong with which file.

Every photo (a file for `edge enroll`/`identify`, a base64 photo in a gallery command) goes through
`decode_image`, which reads the size from the header first and refuses a photo over MAX_IMAGE_PIXELS before any
decoder allocates it (edge/imageheader.py). OPENCV_IO_MAX_IMAGE_PIXELS is only a second line: OpenCV reads it
when cv2 is first imported, which in the daemon happens before this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

MAX_IMAGE_BYTES = 40 * 1024 * 1024
MAX_IMAGE_PIXELS = 64_000_000
MAX_WORKING_SIDE = 4096
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from edge.errors import ImageError  # noqa: E402
from edge.imageheader import HeaderError, ImageHeader, read_header  # noqa: E402

_REDUCED_JPEG = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def read_image(path: Union[str, Path], max_bytes: int = MAX_IMAGE_BYTES) -> np.ndarray:
    """Return the photo at `path` as BGR uint8, at most MAX_WORKING_SIDE pixels on its longer side."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror})") from None
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not a photo")
    if size == 0:
        raise ImageError(f"{path}: empty file")
    if size > max_bytes:
        raise ImageError(f"{path}: file is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit for a photo")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc})") from None
    return decode_image(data, str(path))


def check_header(data: Union[bytes, np.ndarray], name: str) -> ImageHeader:
    """The photo's declared format and size, or ImageError when it is not an accepted format or too large."""
    try:
        header = read_header(data if isinstance(data, bytes) else np.ascontiguousarray(data).data)
    except HeaderError as exc:
        raise ImageError(f"{name}: not a readable image ({exc})") from None
    if header.pixels > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{name}: {header.width}x{header.height} is over the {MAX_IMAGE_PIXELS // 1_000_000} megapixel limit"
        )
    return header


def decode_image(data: Union[bytes, np.ndarray], name: str) -> np.ndarray:
    """Decode encoded image bytes to BGR uint8 (grey and alpha are converted), or raise ImageError.
    The header is checked first: nothing over the pixel limit, nothing of an unknown format reaches a decoder."""
    header = check_header(data, name)
    flags = cv2.IMREAD_COLOR
    longest = max(header.width, header.height)
    if header.format == "jpeg":  # libjpeg scales while decoding: a big photo never exists at full size
        flags = next((f for k, f in _REDUCED_JPEG if longest // k >= MAX_WORKING_SIDE), flags)
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    try:
        image = cv2.imdecode(buffer, flags)
    except cv2.error as exc:
        raise ImageError(f"{name}: not a readable image ({str(exc).strip().splitlines()[-1]})") from None
    if image is None or image.size == 0:
        raise ImageError(f"{name}: not a readable image (corrupt data)")
    height, width = image.shape[:2]
    if height * width > MAX_IMAGE_PIXELS:
        raise ImageError(f"{name}: {width}x{height} is over the {MAX_IMAGE_PIXELS // 1_000_000} megapixel limit")
    longest = max(height, width)
    if longest > MAX_WORKING_SIDE:
        scale = MAX_WORKING_SIDE / longest
        image = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    return image
