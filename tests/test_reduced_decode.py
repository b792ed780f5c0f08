"""Reduced-size JPEG decoding: the size comes from the header, the factor keeps the input
covered, and the warped input is the full decode's up to resampling noise."""

import cv2
import numpy as np
import pytest

from nanodet.data.image_io import ImageReadError, jpeg_size, read_image, read_image_reduced
from nanodet.data.synthetic import synthetic_image
from nanodet.data.transforms import preprocess


def write_jpeg(path, wh, seed=0):
    image, _, _ = synthetic_image(np.random.default_rng(seed), wh, max_objects=6, min_size=64, max_size=400)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


@pytest.mark.parametrize(
    "wh,factor", [((1700, 1300), 2), ((1800, 1700), 4), ((1000, 900), 2), ((830, 700), 1), ((3333, 3400), 8)]
)
def test_factor_keeps_the_input_covered(tmp_path, wh, factor):
    path = write_jpeg(tmp_path / "a.jpg", wh)
    assert jpeg_size(np.fromfile(path, dtype=np.uint8)) == wh
    image, k, size = read_image_reduced(path, (416, 416))
    assert (k, size) == (factor, wh)
    assert image.shape[:2] == (-(-wh[1] // k), -(-wh[0] // k)) and min(image.shape[:2]) >= 416


def test_reduced_input_matches_the_full_decode(tmp_path):
    path = write_jpeg(tmp_path / "b.jpg", (1664, 1248), seed=3)
    full, full_matrix = preprocess(read_image(path), (416, 416), keep_ratio=True)
    image, k, size = read_image_reduced(path, (416, 416))
    assert k == 2
    reduced, matrix = preprocess(image, (416, 416), keep_ratio=True, reduced=(k, size))
    np.testing.assert_array_equal(matrix, full_matrix)  # boxes map back through the same matrix
    assert np.abs(full - reduced).mean() < 0.05  # normalised units (pixel std ~57): resampling noise
    # the letterbox borders land on the same rows: the geometry is the full decode's
    assert (np.abs(full).sum(axis=(0, 2)) == np.abs(full[:, 0]).sum()).sum() == (
        np.abs(reduced).sum(axis=(0, 2)) == np.abs(reduced[:, 0]).sum()
    ).sum()


def test_png_and_broken_files(tmp_path):
    png = tmp_path / "c.png"
    cv2.imwrite(str(png), np.zeros((1000, 1200, 3), np.uint8))
    image, k, size = read_image_reduced(png, (416, 416))
    assert (k, size, image.shape) == (1, (1200, 1000), (1000, 1200, 3))
    broken = tmp_path / "d.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xc0\x00\x11\x08\x04\x00\x04\x00garbage")
    with pytest.raises(ImageReadError, match="d.jpg: not a decodable image"):
        read_image_reduced(broken, (416, 416))
