"""Training augmentation and the evaluation transform, as the official NanoDet does them, and
the batching of tensors.

Every geometric change of an image is one 3x3 homogeneous matrix ``M`` mapping
original pixel coordinates to network-input coordinates (:mod:`.preprocess`, which holds the
inference pre-processing): the image is warped once with ``cv2.warpPerspective`` and the
boxes are moved with the same matrix.

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

from .preprocess import (
    DEFAULT_MEAN,
    DEFAULT_STD,
    normalize_chw,
    padded_size,
    preprocess,
    resize_matrix,
    translation,
    warp_boxes,
)

Range = tuple[float, float]


def stack_batch(images: Sequence[Tensor], divisible: int = 32, pad_value: float = 0.0) -> Tensor:
    """Stack CHW images into NCHW, padding right/bottom to a common size.

    The common size is the largest height and width in the batch rounded up to a
    multiple of ``divisible`` (no rounding when it is 0), so every feature level of
    the network has an integral size.
    """
    if not images:
        raise ValueError("stack_batch needs at least one image")
    max_h, max_w = padded_size(images, divisible)
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
    return translation(
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
        matrix = translation(-0.5 * width, -0.5 * height)
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
