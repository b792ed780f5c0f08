"""Reading images from disk robustly (UTF-8 names, spaces, unreadable files)."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from .. import MAX_IMAGE_PIXELS
from .image_header import HeaderError, header_size

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
MAX_PIXELS = MAX_IMAGE_PIXELS  # refuse absurd sizes per image rather than exhausting memory


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to BGR uint8 (3 channels); raises ImageReadError naming the file."""
    return _decode(Path(path), _read_bytes(Path(path)), cv2.IMREAD_COLOR)


# libjpeg decodes at 1/2, 1/4 or 1/8 of the size by scaling its DCT: far less work than a full
# decode for an image much larger than the network input.
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def read_image_reduced(path: str | Path, min_wh: tuple[int, int]) -> tuple[np.ndarray, int, tuple[int, int]]:
    """Decode at the smallest of 1/8, 1/4, 1/2 or full size that keeps at least ``min_wh``
    (JPEG only: other formats decode whole). Returns (BGR image, reduction factor, original
    (width, height)); pixel ``i`` of an image reduced ``k`` times covers pixels ``k*i .. k*i+k-1``
    of the original."""
    path = Path(path)
    data = _read_bytes(path)
    size = jpeg_size(data)
    factor = 1
    if size is not None:
        factor = max((k for k in _REDUCED_FLAGS if size[0] // k >= min_wh[0] and size[1] // k >= min_wh[1]), default=1)
    if factor == 1:
        image = _decode(path, data, cv2.IMREAD_COLOR)
        return image, 1, (image.shape[1], image.shape[0])
    if size[0] * size[1] > MAX_PIXELS:
        raise ImageReadError(f"{path}: image too large ({size[0]}x{size[1]})")
    image = _decode(path, data, _REDUCED_FLAGS[factor])
    reduced = (-(-size[0] // factor), -(-size[1] // factor))
    if (image.shape[1], image.shape[0]) != reduced:  # turned by its EXIF orientation: width and height swap
        size = (size[1], size[0])
    return image, factor, size


def read_image_scaled(
    path: str | Path, factor_of: Callable[[int, int], int]
) -> tuple[np.ndarray, int, tuple[int, int]]:
    """Decode at ``1/k`` of the size, ``k = factor_of(width, height)`` of the image as decoded
    (EXIF orientation applied), one of 1, 2, 4, 8; JPEG only: other formats, and a JPEG whose
    header cannot be read or disagrees with its data, decode whole (``k`` = 1). Returns (BGR
    image, k, original (width, height)); the image is ``ceil(width / k)`` x ``ceil(height / k)``."""
    path = Path(path)
    data = _read_bytes(path)
    size = jpeg_decoded_size(data)
    factor = factor_of(*size) if size is not None else 1
    if factor != 1:
        if size[0] * size[1] > MAX_PIXELS:
            raise ImageReadError(f"{path}: image too large ({size[0]}x{size[1]})")
        image = _decode(path, data, _REDUCED_FLAGS[factor])
        if (image.shape[1], image.shape[0]) == (-(-size[0] // factor), -(-size[1] // factor)):
            return image, factor, size
    image = _decode(path, data, cv2.IMREAD_COLOR)  # a header that lied: the whole image is the truth
    return image, 1, (image.shape[1], image.shape[0])


def jpeg_decoded_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) of a JPEG as the decoder returns it (EXIF orientation applied), from its
    header; None when ``data`` is not a JPEG whose header can be read."""
    if data[:2].tobytes() != b"\xff\xd8":
        return None
    try:  # the frame header comes before the image data, after EXIF, ICC and other APPn segments
        return header_size(io.BytesIO(data[:_HEADER_BYTES].tobytes())).decoded
    except HeaderError:
        return None


_HEADER_BYTES = 1 << 18


def jpeg_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) as stored in a JPEG's frame header (before any EXIF turn), or None
    when ``data`` is not a JPEG whose header can be read (the caller then decodes it whole,
    which reports any error)."""
    if data[:2].tobytes() != b"\xff\xd8":
        return None
    try:
        size = header_size(io.BytesIO(data[:65536].tobytes()))  # the frame header comes before the image data
    except HeaderError:
        return None
    return size.width, size.height


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the image :func:`read_image` decodes from ``path``, read from the
    file's header (JPEG, PNG, BMP, WebP; EXIF orientation honoured as the decoder does) or,
    for other formats, from one grayscale decode. Raises ImageReadError naming the file when
    it is not a regular file, is empty, is no image, or claims more than MAX_PIXELS. A header
    can lie (a truncated file): the size :func:`read_image` returns later is the truth."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a pipe must not block the open
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ImageReadError(f"{path}: not a regular file")
        with open(fd, "rb") as stream:
            try:
                width, height = header_size(stream).decoded
            except HeaderError:
                width = height = 0  # a format without a header parser here: decode it
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read ({err.strerror})") from None
    if not width:
        image = _decode(path, _read_bytes(path), cv2.IMREAD_GRAYSCALE)
        width, height = image.shape[1], image.shape[0]
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            f"{path}: image too large (its header claims {width}x{height}, more than {MAX_PIXELS} pixels)"
        )
    return width, height


def _read_bytes(path: Path) -> np.ndarray:
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a device or pipe would be read forever
            raise ImageReadError(f"{path}: not a regular file")
        data = np.fromfile(path, dtype=np.uint8)  # works for any file name, unlike cv2.imread
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read ({err.strerror})") from None
    if data.size == 0:
        raise ImageReadError(f"{path}: empty file")
    return data


def _decode(path: Path, data: np.ndarray, flags: int) -> np.ndarray:
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error as err:  # OpenCV refuses a header over its size limits by raising
        if "CV_IO_MAX_IMAGE" in str(err):
            raise ImageReadError(
                f"{path}: image too large (its header claims more than "
                f"{os.environ.get('OPENCV_IO_MAX_IMAGE_PIXELS', MAX_PIXELS)} pixels)"
            ) from None
        raise ImageReadError(f"{path}: not a decodable image ({str(err).strip().splitlines()[-1][:200]})") from None
    if image is None:
        raise ImageReadError(f"{path}: not a decodable image")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageReadError(f"{path}: image too large ({image.shape[1]}x{image.shape[0]})")
    return image


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
