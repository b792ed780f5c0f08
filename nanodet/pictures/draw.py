"""Draw detections on an image (boxes, class names, scores).

Labels stay inside the image: above their box when there is room, else just inside the box's
top edge, shifted left at the right border; text and lines scale with the image, so a label
reads the same on a 160-pixel thumbnail and on a 4K frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..inference.detections import Detections

FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_color(label: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per class (golden-ratio hue steps)."""
    hue = int((label * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 230]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def text_style(height: int, width: int) -> tuple[float, int]:
    """(font scale, stroke thickness) of labels on a ``height`` x ``width`` image: about 2 % of
    the shorter side tall, never under 9 pixels (scale 0.35) nor over 55 (scale 2.5)."""
    scale = float(np.clip(min(height, width) / 1200.0, 0.35, 2.5))
    return scale, max(1, round(scale * 1.6))


def line_thickness(height: int, width: int) -> int:
    """Box outline thickness: 1 pixel per 300 pixels of the shorter side, at least 1."""
    return max(1, round(min(height, width) / 300))


def label_box(
    anchor: tuple[int, int], text_wh: tuple[int, int], image_wh: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Where a label of ``text_wh`` (background included) goes for a box whose top-left corner
    is ``anchor``: (x1, y1, x2, y2), entirely inside an image of ``image_wh``. Above the box
    when it fits there, else inside the box below its top edge; clamped to the image."""
    x, y = anchor
    tw, th = text_wh
    width, height = image_wh
    left = int(np.clip(x, 0, max(width - tw, 0)))
    top = y - th if y - th >= 0 else y
    top = int(np.clip(top, 0, max(height - th, 0)))
    return left, top, min(left + tw, width), min(top + th, height)


def put_label(image: np.ndarray, text: str, anchor: tuple[int, int], color: tuple[int, int, int]) -> None:
    """``text`` on a ``color`` background at the place :func:`label_box` gives, in place."""
    scale, thickness = text_style(*image.shape[:2])
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    pad = max(1, thickness)
    x1, y1, x2, y2 = label_box(anchor, (tw + 2 * pad, th + base + 2 * pad), (image.shape[1], image.shape[0]))
    cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), color, -1)
    ink = (0, 0, 0) if sum(color) > 3 * 110 else (255, 255, 255)
    cv2.putText(image, text, (x1 + pad, y1 + pad + th), FONT, scale, ink, thickness, cv2.LINE_AA)


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    scores: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of ``image`` with each box in its class colour and labelled with the class name
    (and the score when ``scores`` is given); the highest score is drawn last, on top."""
    out = image.copy()
    thickness = line_thickness(*out.shape[:2])
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    order = np.argsort(scores, kind="stable") if scores is not None else np.arange(len(labels))
    for i in order:
        x1, y1, x2, y2 = (int(v) for v in boxes[i].round())
        label = int(labels[i])
        color = class_color(label)
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        text = f"{name} {float(scores[i]):.2f}" if scores is not None else name
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        put_label(out, text, (x1, y1), color)
    return out


def draw_detections(
    image: np.ndarray, dets: Detections, class_names: list[str], gt_boxes: np.ndarray | None = None
) -> np.ndarray:
    """A copy of ``image`` with each detection drawn; optional ground truth in white."""
    base = image
    if gt_boxes is not None:
        base = image.copy()
        thickness = line_thickness(*base.shape[:2])
        for x1, y1, x2, y2 in np.asarray(gt_boxes).reshape(-1, 4).round().astype(int):
            cv2.rectangle(base, (x1, y1), (x2, y2), (255, 255, 255), thickness, cv2.LINE_AA)
    return draw_boxes(base, dets.boxes, dets.labels, class_names, dets.scores)


def fit_within(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``image`` shrunk (area interpolation) so its longer side is at most ``max_side``, and the
    factor applied (1.0: unchanged, the same array)."""
    factor = min(1.0, max_side / max(image.shape[:2]))
    if factor >= 1.0:
        return image, 1.0
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor
