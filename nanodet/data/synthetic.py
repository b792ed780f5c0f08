"""A deterministic synthetic detection dataset: coloured shapes on cluttered backgrounds.

Tests and benchmarks need a detection task that is small, needs no download, and is
still a real detection problem. Each image here has a textured background (a colour
gradient, low-frequency blotches and random lines, all in muted tones) with a few
saturated, filled geometric shapes drawn on it; the shape is the class. Objects overlap
only slightly, and every box is tight to the shape's visible pixels.

Everything is drawn from a NumPy generator seeded by ``(seed, image index)``, so the same
seed gives byte-identical files, and image ``i`` does not depend on how many images are
generated.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DEFAULT_CLASSES = ("circle", "square", "triangle")

Size = tuple[int, int]
"""``(width, height)`` in pixels."""

_JPEG_QUALITY = 95


@dataclass(frozen=True)
class _ShapeKind:
    """How a class is drawn: its range of height/width ratios and a fill function.

    ``draw(mask, x, y, w, h, rng)`` fills the shape with 255 inside the ``w x h`` pixel
    rectangle whose top-left pixel is ``(x, y)``.
    """

    aspect: tuple[float, float]
    draw: Callable[[np.ndarray, int, int, int, int, np.random.Generator], None]


def _draw_circle(mask: np.ndarray, x: int, y: int, w: int, h: int, rng: np.random.Generator) -> None:
    """A filled disc touching the rectangle's top and left sides."""
    radius = (min(w, h) - 1) // 2
    cv2.circle(mask, (x + radius, y + radius), radius, 255, thickness=-1)


def _draw_square(mask: np.ndarray, x: int, y: int, w: int, h: int, rng: np.random.Generator) -> None:
    """A filled, axis-aligned (near-)square."""
    cv2.rectangle(mask, (x, y), (x + w - 1, y + h - 1), 255, thickness=-1)


def _draw_triangle(mask: np.ndarray, x: int, y: int, w: int, h: int, rng: np.random.Generator) -> None:
    """A filled triangle with a random apex, pointing up or down."""
    apex_x = x + round(rng.uniform(0.2, 0.8) * (w - 1))
    top, bottom = (y, y + h - 1) if rng.random() < 0.5 else (y + h - 1, y)
    points = np.array([[apex_x, top], [x, bottom], [x + w - 1, bottom]], dtype=np.int32)
    cv2.fillPoly(mask, [points], 255)


def _draw_diamond(mask: np.ndarray, x: int, y: int, w: int, h: int, rng: np.random.Generator) -> None:
    """A filled rhombus joining the midpoints of the rectangle's sides."""
    cx, cy = x + (w - 1) // 2, y + (h - 1) // 2
    points = np.array([[cx, y], [x + w - 1, cy], [cx, y + h - 1], [x, cy]], dtype=np.int32)
    cv2.fillPoly(mask, [points], 255)


def _draw_cross(mask: np.ndarray, x: int, y: int, w: int, h: int, rng: np.random.Generator) -> None:
    """A plus sign made of two bars of random thickness."""
    bar = max(3, round(rng.uniform(0.25, 0.4) * min(w, h)))
    left, top = x + (w - bar) // 2, y + (h - bar) // 2
    cv2.rectangle(mask, (left, y), (left + bar - 1, y + h - 1), 255, thickness=-1)
    cv2.rectangle(mask, (x, top), (x + w - 1, top + bar - 1), 255, thickness=-1)


def _draw_ring(mask: np.ndarray, x: int, y: int, w: int, h: int, rng: np.random.Generator) -> None:
    """A circle outline of random thickness."""
    thickness = max(3, round(rng.uniform(0.15, 0.3) * min(w, h)))
    radius = (min(w, h) - thickness) // 2
    centre = (x + (min(w, h) - 1) // 2, y + (min(w, h) - 1) // 2)
    cv2.circle(mask, centre, radius, 255, thickness=thickness)


SHAPES: dict[str, _ShapeKind] = {
    "circle": _ShapeKind((1.0, 1.0), _draw_circle),
    "square": _ShapeKind((0.8, 1.25), _draw_square),
    "triangle": _ShapeKind((0.7, 1.3), _draw_triangle),
    "diamond": _ShapeKind((0.7, 1.4), _draw_diamond),
    "cross": _ShapeKind((0.8, 1.25), _draw_cross),
    "ring": _ShapeKind((1.0, 1.0), _draw_ring),
}
"""The class names :func:`synthetic_image` can draw."""


def synthetic_image(
    rng: np.random.Generator,
    size: Size = (320, 240),
    class_names: Sequence[str] = DEFAULT_CLASSES,
    max_objects: int = 4,
    min_size: int = 24,
    max_size: int = 96,
    max_overlap: float = 0.15,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image with its annotations.

    Between 1 and ``max_objects`` objects are placed (fewer when no room is found); an
    object's larger side is ``min_size..max_size`` pixels (capped by the image). Two
    objects' boxes may share at most ``max_overlap`` of the smaller box's area, hence
    their IoU is at most ``max_overlap`` too. The final box of an object is tight to the
    pixels of it that stay visible.

    Args:
        rng: Source of all randomness.
        size: ``(width, height)`` of the image.
        class_names: Classes to draw, names from :data:`SHAPES`; label ``i`` is
            ``class_names[i]``.
        max_objects: Most objects in the image.
        min_size: Smallest object extent in pixels.
        max_size: Largest object extent in pixels.
        max_overlap: Largest intersection between two boxes, as a fraction of the
            smaller one's area.

    Returns:
        ``image``: ``[H, W, 3]`` uint8 BGR; ``boxes``: ``[K, 4]`` float32
        ``(x1, y1, x2, y2)`` with ``x2, y2`` one past the last covered pixel (so
        ``x2 - x1`` is the width in pixels); ``labels``: ``[K]`` int64 indexes into
        ``class_names``.
    """
    kinds = [_shape_kind(name) for name in class_names]
    width, height = size
    image = _background(rng, width, height)
    owner = np.full((height, width), -1, dtype=np.int32)  # which object shows at a pixel
    placed: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(rng.integers(1, max_objects + 1)):
        label = int(rng.integers(len(kinds)))
        box = _place(rng, kinds[label], placed, width, height, min_size, max_size, max_overlap)
        if box is None:
            continue
        x, y, w, h = box
        mask = np.zeros((height, width), dtype=np.uint8)
        kinds[label].draw(mask, x, y, w, h, rng)
        drawn = mask > 0
        image[drawn] = _object_colour(rng)
        owner[drawn] = len(labels)
        placed.append(np.array([x, y, x + w, y + h], dtype=np.float64))
        labels.append(label)

    image = _add_noise(rng, image)
    # Annotate what is visible; an object hidden entirely by later ones is no object.
    visible = [owner == i for i in range(len(labels))]
    kept = [i for i in range(len(labels)) if visible[i].any()]
    boxes = np.array([_visible_box(visible[i]) for i in kept], dtype=np.float32)
    return image, boxes.reshape(-1, 4), np.array([labels[i] for i in kept], dtype=np.int64)


def make_synthetic_coco(
    out_dir: Path | str,
    num_images: int,
    image_size: Size | tuple[Size, Size] = (320, 240),
    class_names: Sequence[str] = DEFAULT_CLASSES,
    seed: int = 0,
    max_objects: int = 4,
    min_size: int = 24,
    max_size: int = 96,
) -> Path:
    """Write a synthetic dataset in COCO format and return the annotation file's path.

    Layout: ``out_dir/images/00000.jpg, 00001.jpg, ...`` (the image root for the
    ``file_name`` entries) and ``out_dir/annotations.json``. Image ``i`` has id
    ``i + 1``; annotation ids start at 1; categories have ids ``1..K`` in
    ``class_names`` order; boxes are ``[x, y, w, h]`` with ``area = w * h`` and
    ``iscrowd = 0``.

    Args:
        out_dir: Output folder, created if needed.
        num_images: Number of images.
        image_size: A fixed ``(width, height)``, or ``((min_w, min_h), (max_w, max_h))``
            to draw each image's size uniformly from that (inclusive) range.
        class_names: Shape classes, names from :data:`SHAPES`.
        seed: Seed of the whole dataset; the same seed gives byte-identical files.
        max_objects: Most objects per image.
        min_size: Smallest object extent in pixels.
        max_size: Largest object extent in pixels.
    """
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images: list[dict] = []
    annotations: list[dict] = []
    for index in range(num_images):
        rng = np.random.default_rng([seed, index])
        width, height = _image_size(rng, image_size)
        image, boxes, labels = synthetic_image(rng, (width, height), class_names, max_objects, min_size, max_size)
        file_name = f"{index:05d}.jpg"
        _write_jpeg(image_dir / file_name, image)
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label + 1,
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    dataset = {
        "info": {"description": "NanoDet synthetic shapes", "seed": seed},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(class_names)],
    }
    json_path = out_dir / "annotations.json"
    json_path.write_text(json.dumps(dataset, indent=1))
    return json_path


def _shape_kind(name: str) -> _ShapeKind:
    """The drawing recipe of a class name."""
    if name not in SHAPES:
        raise ValueError(f"unknown shape class {name!r}; choose from {sorted(SHAPES)}")
    return SHAPES[name]


def _image_size(rng: np.random.Generator, image_size: Size | tuple[Size, Size]) -> Size:
    """A fixed size, or one drawn uniformly from a ``(min, max)`` range."""
    if isinstance(image_size[0], Sequence):
        (min_w, min_h), (max_w, max_h) = image_size
        return int(rng.integers(min_w, max_w + 1)), int(rng.integers(min_h, max_h + 1))
    width, height = image_size
    return int(width), int(height)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A muted, cluttered backdrop: tinted grey, a linear gradient, blotches and lines."""
    base = rng.uniform(50, 200) + rng.normal(0, 12, size=3)
    angle = rng.uniform(0, 2 * np.pi)
    xs = np.linspace(-0.5, 0.5, width)[None, :]
    ys = np.linspace(-0.5, 0.5, height)[:, None]
    ramp = (np.cos(angle) * xs + np.sin(angle) * ys)[..., None]
    gradient = ramp * rng.uniform(20, 80) * rng.uniform(0.7, 1.0, size=3)
    coarse = rng.normal(0, 12, size=(height // 32 + 2, width // 32 + 2, 3))
    blotches = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    image = np.clip(base + gradient + blotches, 0, 255).astype(np.uint8)

    for _ in range(rng.integers(3, 11)):
        start = (int(rng.integers(width)), int(rng.integers(height)))
        end = (int(rng.integers(width)), int(rng.integers(height)))
        grey = rng.uniform(30, 220) + rng.normal(0, 10, size=3)
        colour = tuple(float(c) for c in np.clip(grey, 0, 255))
        cv2.line(image, start, end, colour, int(rng.integers(1, 4)), lineType=cv2.LINE_AA)
    return image


def _place(
    rng: np.random.Generator,
    kind: _ShapeKind,
    placed: list[np.ndarray],
    width: int,
    height: int,
    min_size: int,
    max_size: int,
    max_overlap: float,
    attempts: int = 20,
) -> tuple[int, int, int, int] | None:
    """A free ``(x, y, w, h)`` rectangle for a new object, or ``None`` if none was found."""
    limit = min(width, height)
    for _ in range(attempts):
        extent = int(rng.integers(min(min_size, limit), min(max_size, limit) + 1))
        aspect = rng.uniform(*kind.aspect)  # height / width
        w, h = (extent, round(extent * aspect)) if aspect <= 1 else (round(extent / aspect), extent)
        w, h = max(w, 3), max(h, 3)
        x = int(rng.integers(0, width - w + 1))
        y = int(rng.integers(0, height - h + 1))
        candidate = np.array([x, y, x + w, y + h], dtype=np.float64)
        if all(_overlap_of_smaller(candidate, other) <= max_overlap for other in placed):
            return x, y, w, h
    return None


def _overlap_of_smaller(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection of two ``(x1, y1, x2, y2)`` boxes over the smaller box's area."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(iw * ih / smaller)


def _object_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated BGR colour that stands out against the muted background."""
    hsv = np.array(
        [[[rng.integers(0, 180), rng.integers(150, 256), rng.integers(130, 256)]]],
        dtype=np.uint8,
    )
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]


def _add_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Per-pixel Gaussian sensor noise of a random strength."""
    noise = rng.normal(0, rng.uniform(2, 8), size=image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def _visible_box(visible: np.ndarray) -> list[float]:
    """Tight ``(x1, y1, x2, y2)`` box of a pixel mask, ``x2, y2`` exclusive."""
    ys, xs = np.nonzero(visible)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    """Encode with OpenCV at a fixed quality (deterministic bytes) and write."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    path.write_bytes(encoded.tobytes())
