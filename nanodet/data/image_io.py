"""Reading images from disk robustly (UTF-8 names, spaces, unreadable files)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
MAX_PIXELS = 20000 * 20000  # refuse absurd sizes per image rather than exhausting memory


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to BGR uint8 (3 channels); raises ImageReadError naming the file."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)  # works for any file name, unlike cv2.imread
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read ({err.strerror})") from None
    if data.size == 0:
        raise ImageReadError(f"{path}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError(f"{path}: not a decodable image")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageReadError(f"{path}: image too large ({image.shape[1]}x{image.shape[0]})")
    return image


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
