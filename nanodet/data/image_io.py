"""Reading images from disk robustly (UTF-8 names, spaces, unreadable files)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import cv2
import numpy as np

from .. import MAX_IMAGE_PIXELS

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
MAX_PIXELS = MAX_IMAGE_PIXELS  # refuse absurd sizes per image rather than exhausting memory


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to BGR uint8 (3 channels); raises ImageReadError naming the file."""
    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a device or pipe would be read forever
            raise ImageReadError(f"{path}: not a regular file")
        data = np.fromfile(path, dtype=np.uint8)  # works for any file name, unlike cv2.imread
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read ({err.strerror})") from None
    if data.size == 0:
        raise ImageReadError(f"{path}: empty file")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
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
