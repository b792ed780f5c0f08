"""Training augmentation and the evaluation transform, as the official NanoDet does them, and
the batching of tensors.

Every geometric change of an image is one 3x3 homogeneous matrix ``M`` mapping
original pixel coordinates to network-input coordinates (:mod:`.preprocess`, which holds the
inference pre-processing): the image is warped once and the boxes are moved with the same matrix.

A training sample is drawn once (:meth:`TrainTransform.draw`: the matrix and the colour factors,
in the official order) and can then be made two ways from the same draw:

* :meth:`TrainTransform.__call__`, the official way: the whole decoded image warped with
  ``cv2.warpPerspective``, colour in float32 per image, normalised, CHW float32 out;
* :meth:`TrainTransform.sample_drawn`, what training uses: the image decoded at 1/k of its size
  when this draw's zoom keeps the input no finer than the decode (:func:`draw_decode_factor`; a
  cached image: when every draw's does, :meth:`TrainTransform.decode_factor`), one affine warp from
  it (``perspective`` 0: every bundled config), HWC ``uint8`` out with its colour factors; the
  batch gets its colour and normalisation in one pass by :func:`colour_and_normalize` (on the
  GPU for a CUDA run). The boxes are the official way's; the colour arithmetic is its closed form
  (saturation in HSV is ``V - f * (V - c)`` per channel ``c``, ``V`` the channel maximum, as
  OpenCV's float HSV computes it).

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

    def draw_colour(self, rng: np.random.Generator) -> Colour:
        """This sample's colour factors, drawn in the official order."""
        brightness = contrast = saturation = None
        if rng.integers(2):
            brightness = float(np.float32(rng.uniform(-self.brightness, self.brightness)))
        if self.contrast is not None and rng.integers(2):
            contrast = float(np.float32(rng.uniform(*_as_range(self.contrast))))
        if self.saturation is not None and rng.integers(2):
            saturation = float(rng.uniform(*_as_range(self.saturation)))
        return Colour(brightness, contrast, saturation)

    def draw(self, rng: np.random.Generator, width: int, height: int) -> Draw:
        """Everything random about one sample of a ``width`` x ``height`` image, in the official
        order: output size (``multi_scale``), matrix, colour."""
        dst_wh = self.output_size(rng)
        matrix = self.random_matrix(rng, width, height, dst_wh)
        return Draw(tuple(dst_wh), matrix, self.draw_colour(rng), (width, height))

    def color_augment(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Random brightness, contrast, saturation of a BGR uint8 image; float32 on 0-1."""
        return self.draw_colour(rng).apply(img)

    # --- the reduced decode -----------------------------------------------------------------

    def max_zoom(self, width: int, height: int) -> float:
        """The most output pixels per pixel of a ``width`` x ``height`` image, in any direction,
        over every draw (an upper bound: the largest singular value of the matrix's linear part);
        ``inf`` with ``perspective``, whose zoom varies across the image."""
        if self.perspective:
            return math.inf
        high = _as_range(self.multi_scale)[1] if self.multi_scale is not None else 1.0
        dst_wh = (int(self.input_wh[0] * high), int(self.input_wh[1] * high))
        resize = resize_matrix((width, height), dst_wh, self.keep_ratio)
        zoom_x, zoom_y = abs(resize[0, 0]), abs(resize[1, 1])
        scale = max(abs(v) for v in _as_range(self.scale))
        stretch_x, stretch_y = (max(abs(v) for v in _as_range(r)) for r in self.stretch)
        if not self.rotation and not self.shear:  # a diagonal linear part: each axis alone
            return scale * max(zoom_x * stretch_x, zoom_y * stretch_y)
        shear = 1.0 + abs(math.tan(math.radians(self.shear)))  # ||I + N|| <= 1 + ||N||
        return scale * max(zoom_x, zoom_y) * max(stretch_x, stretch_y) * shear

    def decode_factor(self, width: int, height: int) -> int:
        """The largest of 8, 4, 2 (else 1) such that the image decoded at 1/k of its size is still
        no coarser than the network input at the largest zoom any draw can give: warping from that
        decode never enlarges it, as warping from the whole image never enlarges that. The factor
        an image is cached at (one decode serves every draw); an uncached sample decodes at its own
        draw's :func:`draw_decode_factor`, this or more."""
        zoom = self.max_zoom(width, height)
        return next((k for k in DECODE_FACTORS if k * zoom <= 1.0), 1)

    def sample(
        self,
        img: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        rng: np.random.Generator,
        factor: int = 1,
        original_wh: tuple[int, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Colour]:
        """One training sample the fast way: (HWC uint8 image, boxes, labels, matrix, colour).

        ``img`` is the image decoded at ``1/factor`` of ``original_wh`` (the whole image by
        default); the draw, the matrix (from original coordinates) and the boxes are those of
        :meth:`__call__` on the whole image for the same ``rng``. The colour is applied later, to
        the batch (:func:`colour_and_normalize`)."""
        original_wh = original_wh or (img.shape[1], img.shape[0])
        return self.sample_drawn(img, boxes, labels, self.draw(rng, *original_wh), factor)

    def sample_drawn(
        self, img: np.ndarray, boxes: np.ndarray, labels: np.ndarray, draw: Draw, factor: int = 1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Colour]:
        """:meth:`sample` for a draw already made (:meth:`draw`, on the original size): the dataset
        draws first, so that the image can be decoded at the draw's own :func:`draw_decode_factor`."""
        warped = warp_image(img, draw.matrix, draw.dst_wh, factor, draw.src_wh)
        moved = warp_boxes(boxes, draw.matrix, *draw.dst_wh)
        kept_boxes, kept_labels = _keep_visible(moved, np.asarray(labels, dtype=np.int64))
        return warped, kept_boxes, kept_labels, draw.matrix, draw.colour

    def __call__(
        self,
        img: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The official way: returns (CHW float32 image, boxes, labels, warp matrix) for one
        sample; the image is ``input_wh`` (or with ``multi_scale``, :meth:`output_size`) large."""
        height, width = img.shape[:2]
        draw = self.draw(rng, width, height)
        warped = cv2.warpPerspective(img, draw.matrix, dsize=draw.dst_wh)
        moved = warp_boxes(boxes, draw.matrix, *draw.dst_wh)
        kept_boxes, kept_labels = _keep_visible(moved, np.asarray(labels, dtype=np.int64))
        mean, std = self.normalize
        scaled_mean = np.asarray(mean, dtype=np.float32) / 255
        scaled_std = np.asarray(std, dtype=np.float32) / 255
        chw = normalize_chw(draw.colour.apply(warped), scaled_mean, scaled_std)
        return chw, kept_boxes, kept_labels, draw.matrix


DECODE_FACTORS = (8, 4, 2)
"""The reductions libjpeg decodes at by scaling its DCT (OpenCV's ``IMREAD_REDUCED_COLOR_*``)."""


def draw_decode_factor(matrix: np.ndarray) -> int:
    """The largest of 8, 4, 2 (else 1) at which an image can be decoded for this one draw: ``k``
    times the largest singular value of the matrix's linear part (its most output pixels per
    original pixel, in any direction) is at most 1, so warping from the decode at ``1/k`` still
    never enlarges it. 1 for a matrix with perspective (its zoom varies across the image)."""
    if matrix[2, 0] != 0.0 or matrix[2, 1] != 0.0 or matrix[2, 2] != 1.0:
        return 1
    (a, b), (c, d) = matrix[0, :2], matrix[1, :2]
    # the largest singular value of [[a, b], [c, d]] in closed form (sigma^2 is the largest
    # eigenvalue of the Gram matrix): no LAPACK call per sample
    half_sum = 0.5 * (a * a + b * b + c * c + d * d)
    half_gap = math.hypot(0.5 * (a * a + b * b - c * c - d * d), a * c + b * d)
    zoom = math.sqrt(half_sum + half_gap)
    return next((k for k in DECODE_FACTORS if k * zoom <= 1.0), 1)


def reduced_to_original(factor: int) -> np.ndarray:
    """The matrix from the pixels of an image decoded at ``1/factor`` to those of the whole
    image: reduced pixel ``i`` covers pixels ``k*i .. k*i+k-1``, its centre is ``k*i + (k-1)/2``."""
    shift = (factor - 1) / 2
    return np.array([[factor, 0.0, shift], [0.0, factor, shift], [0.0, 0.0, 1.0]])


def warp_image(
    img: np.ndarray,
    matrix: np.ndarray,
    dst_wh: tuple[int, int],
    factor: int = 1,
    src_wh: tuple[int, int] | None = None,
) -> np.ndarray:
    """``img`` (decoded at ``1/factor`` of the ``src_wh`` image) warped by ``matrix`` (from
    original coordinates): one affine warp when the matrix has no perspective, else a perspective
    one; outside the image, black.

    Where the image ends, the whole image's warp fades to black over one original pixel (bilinear
    between the edge pixel and the black border). From a reduced decode that fade would span one
    reduced pixel, ``factor`` original ones, and its last cells can reach up to ``factor - 1``
    pixels past the image: up to a whole output row or column too dark or too bright at each edge.
    So, given ``src_wh``, a reduced image is warped with its edge pixels replicated, then faded as
    the whole image's warp fades (:func:`_fade_outside`); without rotation or shear, only the
    output rectangle the image reaches is warped (:func:`_warp_upright`)."""
    from_reduced = matrix @ reduced_to_original(factor) if factor != 1 else matrix
    if matrix[2, 0] != 0.0 or matrix[2, 1] != 0.0 or matrix[2, 2] != 1.0:
        return cv2.warpPerspective(img, from_reduced, dsize=tuple(dst_wh))
    if factor == 1 or src_wh is None:
        return cv2.warpAffine(img, from_reduced[:2], dsize=tuple(dst_wh))
    if matrix[0, 1] == 0.0 and matrix[1, 0] == 0.0:
        return _warp_upright(img, matrix, from_reduced, dst_wh, src_wh)
    out = cv2.warpAffine(img, from_reduced[:2], dsize=tuple(dst_wh), borderMode=cv2.BORDER_REPLICATE)
    _fade_outside(out, matrix, src_wh)
    return out


def _coverage(position: np.ndarray | float, size: int) -> np.ndarray | float:
    """How much of an image ``size`` pixels long (pixel centres 0 .. size - 1) a bilinear sample at
    ``position`` takes, the rest being the black border: 1 inside, falling to 0 over the pixel
    past each edge."""
    return np.clip(np.minimum(position + 1.0, size - position), 0.0, 1.0)


def _reach(out_size: int, scale: float, shift: float, size: int) -> tuple[int, int, list[tuple[int, float]]]:
    """Along one axis mapped by ``out = scale * position + shift``: the output run ``[first, end)``
    whose samples take some of an image ``size`` pixels long, and its (index, coverage) where the
    coverage is under 1 (the fade, ``|scale|`` output pixels wide at each end)."""
    low, high = sorted((shift - scale, shift + scale * size))  # where position is -1 and size
    first, end = max(0, math.floor(low) + 1), min(out_size, math.ceil(high))
    fade = abs(scale)
    edges = [*range(first, min(end, math.floor(low + fade) + 1)), *range(max(first, math.ceil(high - fade)), end)]
    partial = [(i, float(_coverage((i - shift) / scale, size))) for i in sorted(set(edges))]
    return first, end, [(i, c) for i, c in partial if c < 1.0]


def _warp_upright(
    img: np.ndarray, matrix: np.ndarray, from_reduced: np.ndarray, dst_wh: tuple[int, int], src_wh: tuple[int, int]
) -> np.ndarray:
    """:func:`warp_image` of a reduced image for a matrix without rotation or shear, which maps
    output columns to image columns and rows to rows: only the output rectangle the image reaches
    is warped (edges replicated), straight into the black output, and its edge columns and rows
    faded by their :func:`_coverage`, as the whole image's warp makes them."""
    out_w, out_h = dst_wh
    x0, x1, cols = _reach(out_w, matrix[0, 0], matrix[0, 2], src_wh[0])
    y0, y1, rows = _reach(out_h, matrix[1, 1], matrix[1, 2], src_wh[1])
    out = np.zeros((out_h, out_w, 3), np.uint8)
    if x0 >= x1 or y0 >= y1:
        return out
    shifted = from_reduced[:2] - [[0.0, 0.0, x0], [0.0, 0.0, y0]]
    part = out[y0:y1, x0:x1]
    cv2.warpAffine(img, shifted, dsize=(x1 - x0, y1 - y0), dst=part, borderMode=cv2.BORDER_REPLICATE)
    for i, weight in cols:
        part[:, i - x0] = np.rint(part[:, i - x0] * weight).astype(np.uint8)
    for i, weight in rows:
        part[i - y0] = np.rint(part[i - y0] * weight).astype(np.uint8)
    return out


def _fade_outside(out: np.ndarray, matrix: np.ndarray, src_wh: tuple[int, int]) -> None:
    """Scale each output pixel of ``out`` (warped by the affine ``matrix`` from a ``src_wh``
    image, edges replicated) by how much of the image a bilinear sample there takes
    (:func:`_coverage` along each source axis): the black border and the fade into it, as warping
    the whole image gives them."""
    (a, b, tx), (c, d, ty) = matrix[:2]
    inverse = np.linalg.inv(np.array([[a, b], [c, d]]))
    ys, xs = np.mgrid[0 : out.shape[0], 0 : out.shape[1]].astype(np.float64)
    xs -= tx
    ys -= ty
    weight = _coverage(inverse[0, 0] * xs + inverse[0, 1] * ys, src_wh[0])
    weight *= _coverage(inverse[1, 0] * xs + inverse[1, 1] * ys, src_wh[1])
    fading = weight < 1.0
    out[fading] = np.rint(out[fading] * weight[fading, None]).astype(np.uint8)


@dataclass(frozen=True)
class Colour:
    """One sample's colour factors (``None``: not drawn): brightness added on the 0-1 scale, then
    contrast multiplied, then saturation scaled in HSV."""

    brightness: float | None = None
    contrast: float | None = None
    saturation: float | None = None

    def as_array(self) -> np.ndarray:
        """``[brightness, contrast, saturation, saturation drawn]`` as float32 with the identity
        (0, 1, 1) where not drawn: the row :func:`colour_and_normalize` takes."""
        drawn = self.saturation is not None
        return np.array(
            [
                self.brightness or 0.0,
                1.0 if self.contrast is None else self.contrast,
                self.saturation if drawn else 1.0,
                float(drawn),
            ],
            dtype=np.float32,
        )

    def apply(self, img: np.ndarray) -> np.ndarray:
        """The official arithmetic on one BGR uint8 image: float32 on the 0-1 scale, unclipped."""
        out = img.astype(np.float32) / 255
        if self.brightness is not None:
            out += np.float32(self.brightness)
        if self.contrast is not None:
            out *= np.float32(self.contrast)
        if self.saturation is not None:
            out = _saturate(out, self.saturation)
        return out


@dataclass(frozen=True)
class Draw:
    """What is random about one training sample: its output (w, h), the matrix from original image
    coordinates to it, and its colour factors; and the original image's (w, h) it was drawn for."""

    dst_wh: tuple[int, int]
    matrix: np.ndarray
    colour: Colour
    src_wh: tuple[int, int] | None = None


def colour_and_normalize(
    images: Tensor,
    colour: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    sizes_hw: Sequence[tuple[int, int]] | None = None,
) -> Tensor:
    """A batch of warped images, NCHW ``uint8`` (on any device), to the network's input: each
    sample's colour (``colour`` rows from :meth:`Colour.as_array`) then ``(x - mean) / std``
    (0-255 scale), NCHW float32.

    The arithmetic is the official one, in float32 on the 0-1 scale and unclipped, in its order
    (bit for bit its values without saturation); saturation is its closed form
    ``V - sign(V) * f * (V - c)`` (``V`` the channel maximum), which OpenCV's float HSV round trip
    computes to within 1e-5. ``sizes_hw``: each sample's (h, w) when the batch is padded
    (``multi_scale``): the padding is set to 0 after normalisation, as :func:`stack_batch` pads
    normalised images."""
    saturating = bool((colour[:, 3] > 0).any())  # read on the batch's (CPU) tensor: no wait for the GPU
    x = images.float().div_(255)
    # one (N, 1, 1, 1) column per factor, broadcast over each sample's channels and pixels
    brightness, contrast, saturation, drawn = colour.to(x.device, torch.float32).view(-1, 4, 1, 1, 1).unbind(1)
    x.add_(brightness).mul_(contrast)
    if saturating:
        peak = x.amax(dim=1, keepdim=True)
        x = torch.where(drawn > 0, peak - torch.sign(peak) * saturation * (peak - x), x)
    scaled_mean = torch.from_numpy(np.asarray(mean, dtype=np.float32) / 255).to(x.device).view(1, -1, 1, 1)
    scaled_std = torch.from_numpy(np.asarray(std, dtype=np.float32) / 255).to(x.device).view(1, -1, 1, 1)
    x.sub_(scaled_mean).div_(scaled_std)
    if sizes_hw is not None:
        for i, (h, w) in enumerate(sizes_hw):
            x[i, :, h:] = 0.0
            x[i, :, :, w:] = 0.0
    return x


def batch_buffer(shape: Sequence[int], dtype: torch.dtype) -> Tensor:
    """An uninitialised tensor for a batch; in a DataLoader worker, in shared memory: the batch
    then reaches the trainer without the copy into shared memory its pickling would make (what
    PyTorch's own collate does)."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(tuple(shape), dtype=dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, tuple(shape))


def stack_uint8(images: Sequence[Tensor], divisible: int = 32) -> Tensor:
    """HWC uint8 images into one NCHW uint8 batch, padded right/bottom with 0 to the size
    :func:`stack_batch` pads to. The batch is in the channels-last layout (an NHWC buffer viewed
    as NCHW): each image is one plain copy, no transposition; the device's colour and
    normalisation read it as any NCHW tensor."""
    if not images:
        raise ValueError("stack_uint8 needs at least one image")
    max_h, max_w = padded_size([img.permute(2, 0, 1) for img in images], divisible)
    out = batch_buffer((len(images), max_h, max_w, images[0].shape[2]), images[0].dtype)
    for slot, img in zip(out, images):
        h, w = img.shape[:2]
        slot[:h, :w] = img
        slot[h:] = 0
        slot[:h, w:] = 0
    return out.permute(0, 3, 1, 2)


def batch_shape_hwc(images: Sequence[np.ndarray], divisible: int = 32) -> tuple[int, int, int, int]:
    """(N, H, W, 3) of the NHWC batch :func:`colour_and_normalize_hwc` makes of HWC ``images``."""
    height, width = padded_size([img.transpose(2, 0, 1) for img in images], divisible)
    return len(images), height, width, 3


def colour_and_normalize_hwc(
    images: Sequence[np.ndarray],
    colour: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    divisible: int = 32,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`colour_and_normalize` on the CPU for HWC ``uint8`` images, bit for bit its values,
    as one NHWC float32 batch padded with 0 to the size :func:`stack_batch` pads to (viewed as NCHW
    it is in the channels-last layout a CPU trainer uses).

    Without saturation a sample's value is a function of each byte and its channel: one
    256-entry table per channel (the official float32 arithmetic on the 256 values) and one
    ``cv2.LUT`` pass. With saturation the colour table gives each channel's float plane from its
    bytes, and, the table rising with the byte (a positive contrast), the channels' maximum and
    its sign from the largest byte; the closed form and the normalisation follow per channel
    plane, in :func:`colour_and_normalize`'s order.
    ``out``: where to write the batch (float32, of :func:`batch_shape_hwc`); a new array by default."""
    if not len(images):
        raise ValueError("colour_and_normalize_hwc needs at least one image")
    height, width = batch_shape_hwc(images, divisible)[1:3]
    if out is None:
        out = np.empty((len(images), height, width, 3), dtype=np.float32)
    scaled_mean = np.asarray(mean, dtype=np.float32) / 255
    scaled_std = np.asarray(std, dtype=np.float32) / 255
    levels = np.arange(256, dtype=np.float32) / 255
    for slot, img, (brightness, contrast, saturation, drawn) in zip(out, images, np.asarray(colour, np.float32)):
        h, w = img.shape[:2]
        slot[h:] = 0.0
        slot[:h, w:] = 0.0
        whole = (h, w) == (height, width)
        target = slot if whole else np.empty((h, w, 3), np.float32)
        values = (levels + brightness) * contrast  # float32: the same operations as the batch's
        if not drawn:
            table = ((values[:, None] - scaled_mean) / scaled_std).reshape(1, 256, 3)
            cv2.LUT(img, table, dst=target)
        else:
            table = values.reshape(1, 256)
            bytes_ = cv2.split(img)
            planes = [cv2.LUT(plane, table) for plane in bytes_]  # split as bytes: a quarter of the floats
            if contrast > 0:  # the table rises with the byte: the channels' largest value is the largest byte's
                top = cv2.max(cv2.max(bytes_[0], bytes_[1]), bytes_[2])
                peak = cv2.LUT(top, table)
                factor = cv2.LUT(top, (np.sign(values) * saturation).reshape(1, 256))
            else:
                peak = np.maximum(planes[0], planes[1])
                np.maximum(peak, planes[2], out=peak)
                factor = np.sign(peak)
                factor *= saturation
            for c, plane in enumerate(planes):  # peak - factor * (peak - c), then (x - mean) / std
                np.subtract(peak, plane, out=plane)
                plane *= factor
                np.subtract(peak, plane, out=plane)
                plane -= scaled_mean[c]
                plane /= scaled_std[c]
            cv2.merge(planes, dst=target)
        if not whole:
            slot[:h, :w] = target
    return out
