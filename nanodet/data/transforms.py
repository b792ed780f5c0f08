"""Image pre-processing and training augmentation, as the official NanoDet does it.

Every geometric change of an image is one 3x3 homogeneous matrix ``M`` mapping
original pixel coordinates to network-input coordinates: the image is warped once
with ``cv2.warpPerspective`` and the boxes are moved with the same matrix, so the
inverse of ``M`` maps detections back to the original image.

Images are BGR ``uint8`` arrays (OpenCV), boxes are ``float32`` (x1, y1, x2, y2).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# Official BGR mean and std on the 0-255 scale.
DEFAULT_MEAN = (103.53, 116.28, 123.675)
DEFAULT_STD = (57.375, 57.12, 58.395)

Range = tuple[float, float]


# --- deterministic geometry -----------------------------------------------------------


def resize_matrix(src_wh: tuple[int, int], dst_wh: tuple[int, int], keep_ratio: bool) -> np.ndarray:
    """Matrix resizing an image of size ``src_wh`` to ``dst_wh`` (both (w, h)).

    Without ``keep_ratio`` each axis is scaled independently. With it, the image is
    scaled by the smaller of the two ratios about its centre and that centre is put
    at the centre of the destination (letterbox: equal borders on both sides).
    """
    src_w, src_h = src_wh
    dst_w, dst_h = dst_wh
    if not keep_ratio:
        return np.diag([dst_w / src_w, dst_h / src_h, 1.0])
    ratio = dst_h / src_h if src_w / src_h < dst_w / dst_h else dst_w / src_w
    to_dst_centre = _translation(0.5 * dst_w, 0.5 * dst_h)
    return to_dst_centre @ np.diag([ratio, ratio, 1.0]) @ _translation(-0.5 * src_w, -0.5 * src_h)


def warp_boxes(boxes: np.ndarray, M: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes moved by the matrix ``M`` and clipped to ``[0, width] x [0, height]``.

    The four corners of each box are transformed (with the perspective division);
    the new box is their axis-aligned bounding box.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    corners = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(-1, 2)  # (x1,y1) (x2,y2) (x1,y2) (x2,y1)
    homogeneous = np.concatenate([corners, np.ones((len(corners), 1))], axis=1) @ M.T
    xy = (homogeneous[:, :2] / homogeneous[:, 2:3]).reshape(-1, 4, 2)
    warped = np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)
    warped[:, [0, 2]] = warped[:, [0, 2]].clip(0, width)
    warped[:, [1, 3]] = warped[:, [1, 3]].clip(0, height)
    return warped.astype(np.float32)


def _translation(tx: float, ty: float) -> np.ndarray:
    matrix = np.eye(3)
    matrix[:2, 2] = tx, ty
    return matrix


# --- pixel values ---------------------------------------------------------------------


def normalize_chw(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """HWC image → per-channel ``(img - mean) / std`` as a contiguous CHW float32 array (mean/std
    on the image's scale). Channel by channel into the output, in float32: the same values as
    ``(img.astype(float32) - mean) / std`` in a quarter of its time (no HWC float copies)."""
    height, width, channels = img.shape
    out = np.empty((channels, height, width), dtype=np.float32)
    for c in range(channels):
        np.subtract(img[:, :, c], np.float32(mean[c]), out=out[c], dtype=np.float32)
        np.divide(out[c], np.float32(std[c]), out=out[c])
    return out


def preprocess(
    img: np.ndarray,
    input_wh: tuple[int, int],
    keep_ratio: bool,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    reduced: tuple[int, tuple[int, int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Inference pre-processing: resize (or letterbox) to ``input_wh`` and normalise.

    ``reduced`` = (k, original (w, h)) for an image decoded at 1/k of its size
    (:func:`~nanodet.data.image_io.read_image_reduced`): the input is warped from it as if
    from the original. Returns the CHW float32 input and the 3x3 matrix from *original* image
    coordinates to input coordinates.
    """
    height, width = img.shape[:2]
    if reduced is None:
        M = resize_matrix((width, height), input_wh, keep_ratio)
        warped = cv2.warpPerspective(img, M, dsize=tuple(input_wh))
    else:
        factor, original_wh = reduced
        M = resize_matrix(original_wh, input_wh, keep_ratio)
        # reduced pixel i (centre) sits at original pixel k*i + (k-1)/2
        from_reduced = np.array([[factor, 0, (factor - 1) / 2], [0, factor, (factor - 1) / 2], [0, 0, 1.0]])
        warped = cv2.warpPerspective(img, M @ from_reduced, dsize=tuple(input_wh))
    return normalize_chw(warped, mean, std), M


def stack_batch(images: Sequence[Tensor], divisible: int = 32, pad_value: float = 0.0) -> Tensor:
    """Stack CHW images into NCHW, padding right/bottom to a common size.

    The common size is the largest height and width in the batch rounded up to a
    multiple of ``divisible`` (no rounding when it is 0), so every feature level of
    the network has an integral size.
    """
    if not images:
        raise ValueError("stack_batch needs at least one image")
    max_h = max(img.shape[-2] for img in images)
    max_w = max(img.shape[-1] for img in images)
    if divisible > 0:
        max_h = -(-max_h // divisible) * divisible
        max_w = -(-max_w // divisible) * divisible
    padded = [F.pad(img, (0, max_w - img.shape[-1], 0, max_h - img.shape[-2]), value=pad_value) for img in images]
    return torch.stack(padded).contiguous()


def _keep_visible(boxes: np.ndarray, labels: np.ndarray, min_size: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Drop boxes narrower or shorter than ``min_size`` pixels (degenerate or cropped away)."""
    wh = boxes[:, 2:] - boxes[:, :2]
    keep = (wh >= min_size).all(axis=1)
    return boxes[keep], labels[keep]


# --- random geometry (official order and sampling) ------------------------------------


def _perspective(rng: np.random.Generator, strength: float) -> np.ndarray:
    matrix = np.eye(3)
    matrix[2, 0] = rng.uniform(-strength, strength)  # x perspective (about y)
    matrix[2, 1] = rng.uniform(-strength, strength)  # y perspective (about x)
    return matrix


def _scaling(rng: np.random.Generator, ratio: Range) -> np.ndarray:
    factor = rng.uniform(*ratio)
    return np.diag([factor, factor, 1.0])


def _stretching(rng: np.random.Generator, width_ratio: Range, height_ratio: Range) -> np.ndarray:
    return np.diag([rng.uniform(*width_ratio), rng.uniform(*height_ratio), 1.0])


def _rotation(rng: np.random.Generator, degree: float) -> np.ndarray:
    """Rotation about the origin by an angle in [-degree, degree] (counter-clockwise as
    displayed, OpenCV's convention)."""
    angle = math.radians(rng.uniform(-degree, degree))
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[cos, sin, 0.0], [-sin, cos, 0.0], [0.0, 0.0, 1.0]])


def _shearing(rng: np.random.Generator, degree: float) -> np.ndarray:
    matrix = np.eye(3)
    matrix[0, 1] = math.tan(math.radians(rng.uniform(-degree, degree)))  # x shear
    matrix[1, 0] = math.tan(math.radians(rng.uniform(-degree, degree)))  # y shear
    return matrix


def _flipping(rng: np.random.Generator, prob: float) -> np.ndarray:
    matrix = np.eye(3)
    if rng.random() < prob:
        matrix[0, 0] = -1.0
    return matrix


def _translating(rng: np.random.Generator, ratio: float, width: int, height: int) -> np.ndarray:
    """Moves the (centred) image back to a random point near the image centre."""
    return _translation(
        rng.uniform(0.5 - ratio, 0.5 + ratio) * width,
        rng.uniform(0.5 - ratio, 0.5 + ratio) * height,
    )


# --- random colour (official order, on the 0-1 scale) ---------------------------------


def _saturate(img: np.ndarray, factor: float) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    hsv[..., 1] *= factor
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def _as_range(value: float | Sequence[float]) -> Range:
    """A (low, high) pair; a single number is the fixed range (value, value)."""
    if isinstance(value, numbers.Real):
        return float(value), float(value)
    low, high = value
    return float(low), float(high)


@dataclass(frozen=True)
class EvalTransform:
    """Deterministic transform: plain resize (letterbox with ``keep_ratio``) and normalisation.

    Same call signature as :class:`TrainTransform` so a dataset can use either.
    """

    input_wh: tuple[int, int]
    keep_ratio: bool = False
    normalize: tuple[Sequence[float], Sequence[float]] = (DEFAULT_MEAN, DEFAULT_STD)

    def __call__(
        self,
        img: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Returns (CHW float32 image, boxes, labels, warp matrix); ``rng`` is unused."""
        mean, std = self.normalize
        chw, M = preprocess(img, self.input_wh, self.keep_ratio, mean, std)
        moved = warp_boxes(boxes, M, *self.input_wh)
        kept_boxes, kept_labels = _keep_visible(moved, np.asarray(labels, dtype=np.int64))
        return chw, kept_boxes, kept_labels, M


@dataclass(frozen=True)
class TrainTransform:
    """Random shape and colour augmentation of the official training pipeline.

    Shape: around the image centre, compose perspective, scale, stretch, rotation,
    shear and horizontal flip, translate back to a random point near the centre,
    then resize to the input. Every factor is drawn each call (a neutral parameter
    gives the identity), in that order. Boxes follow the same matrix; boxes that end
    up under 1 pixel wide or high (degenerate or outside the input) are dropped.

    Colour, on the 0-1 scale: brightness shift, contrast factor and saturation factor,
    each applied with probability 1/2 in that order (``None`` contrast or
    saturation: never), then normalisation with ``normalize = (mean, std)`` given on
    the 0-255 scale.

    Multi-scale (``multi_scale = (low, high)``), the official rule: before anything else, a
    factor ``f`` is drawn uniformly from the range and this sample's output size is
    ``(int(w * f), int(h * f))`` for ``input_wh = (w, h)``, no rounding: samples of one batch
    differ in size and :func:`stack_batch` pads them to a common multiple of 32.
    """

    input_wh: tuple[int, int]
    keep_ratio: bool = False
    perspective: float = 0.0
    scale: Range | float = (1.0, 1.0)
    stretch: tuple[Range, Range] = ((1.0, 1.0), (1.0, 1.0))
    rotation: float = 0.0
    shear: float = 0.0
    translate: float = 0.0
    flip: float = 0.0
    brightness: float = 0.0
    contrast: Range | None = None
    saturation: Range | None = None
    normalize: tuple[Sequence[float], Sequence[float]] = (DEFAULT_MEAN, DEFAULT_STD)
    multi_scale: Range | None = None

    def output_size(self, rng: np.random.Generator) -> tuple[int, int]:
        """This sample's output (w, h): ``input_wh``, or with ``multi_scale`` a random multiple of it.

        Draws from ``rng`` only with ``multi_scale``."""
        if self.multi_scale is None:
            return self.input_wh
        factor = rng.uniform(*_as_range(self.multi_scale))
        return int(self.input_wh[0] * factor), int(self.input_wh[1] * factor)

    def random_matrix(
        self, rng: np.random.Generator, width: int, height: int, dst_wh: tuple[int, int] | None = None
    ) -> np.ndarray:
        """One random matrix from a ``width`` x ``height`` image to ``dst_wh`` (default: the input size)."""
        matrix = _translation(-0.5 * width, -0.5 * height)
        matrix = _perspective(rng, self.perspective) @ matrix
        matrix = _scaling(rng, _as_range(self.scale)) @ matrix
        matrix = _stretching(rng, *(_as_range(r) for r in self.stretch)) @ matrix
        matrix = _rotation(rng, self.rotation) @ matrix
        matrix = _shearing(rng, self.shear) @ matrix
        matrix = _flipping(rng, self.flip) @ matrix
        matrix = _translating(rng, self.translate, width, height) @ matrix
        return resize_matrix((width, height), dst_wh or self.input_wh, self.keep_ratio) @ matrix

    def color_augment(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Random brightness, contrast, saturation of a BGR uint8 image; float32 on 0-1."""
        out = img.astype(np.float32) / 255
        if rng.integers(2):
            out += np.float32(rng.uniform(-self.brightness, self.brightness))
        if self.contrast is not None and rng.integers(2):
            out *= np.float32(rng.uniform(*_as_range(self.contrast)))
        if self.saturation is not None and rng.integers(2):
            out = _saturate(out, rng.uniform(*_as_range(self.saturation)))
        return out

    def __call__(
        self,
        img: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Returns (CHW float32 image, boxes, labels, warp matrix) for one sample; the image is
        ``input_wh`` (or with ``multi_scale``, :meth:`output_size`) large."""
        height, width = img.shape[:2]
        dst_wh = self.output_size(rng)
        M = self.random_matrix(rng, width, height, dst_wh)
        warped = cv2.warpPerspective(img, M, dsize=tuple(dst_wh))
        moved = warp_boxes(boxes, M, *dst_wh)
        kept_boxes, kept_labels = _keep_visible(moved, np.asarray(labels, dtype=np.int64))
        mean, std = self.normalize
        scaled_mean = np.asarray(mean, dtype=np.float32) / 255
        scaled_std = np.asarray(std, dtype=np.float32) / 255
        chw = normalize_chw(self.color_augment(warped, rng), scaled_mean, scaled_std)
        return chw, kept_boxes, kept_labels, M
