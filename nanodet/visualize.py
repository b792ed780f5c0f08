"""Draw detections on an image (boxes, class names, scores)."""

from __future__ import annotations

import cv2
import numpy as np

from .postprocess import Detections


def class_color(label: int) -> tuple[int, int, int]:
    """A stable, distinct BGR colour per class (golden-ratio hue steps)."""
    hue = int((label * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 230]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_detections(
    image: np.ndarray, dets: Detections, class_names: list[str], gt_boxes: np.ndarray | None = None
) -> np.ndarray:
    """A copy of ``image`` with each detection drawn; optional ground truth in white."""
    out = image.copy()
    thickness = max(1, round(min(out.shape[:2]) / 300))
    if gt_boxes is not None:
        for x1, y1, x2, y2 in np.asarray(gt_boxes).reshape(-1, 4).round().astype(int):
            cv2.rectangle(out, (x1, y1), (x2, y2), (255, 255, 255), thickness, cv2.LINE_AA)
    order = np.argsort(dets.scores, kind="stable")  # lowest first: the best label ends on top
    for (x1, y1, x2, y2), score, label in zip(
        dets.boxes[order].round().astype(int), dets.scores[order], dets.labels[order]
    ):
        color = class_color(int(label))
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        text = f"{name} {score:.2f}"
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        top = max(y1 - th - base - 2, 0)
        cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + base + 2), color, -1)
        cv2.putText(out, text, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return out
