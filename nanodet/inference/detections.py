"""Detections of an image in its own pixels, from the decoded boxes and class scores of every
prior: class-aware NMS (IoU 0.6, at most 100 boxes, internal score threshold 0.05, as
official), then the inverse of the image's warp, clipped to the image.

NumPy and OpenCV only: the CPU path of every predictor, so that detection with an exported
graph needs no PyTorch (tensors on a device go through :mod:`.postprocess`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.preprocess import warp_boxes
from ..ops.opencv_nms import multiclass_nms


@dataclass
class Detections:
    """Detections of one image, in original-image pixels."""

    boxes: np.ndarray  # [K, 4] float32 x1, y1, x2, y2
    scores: np.ndarray  # [K] float32, descending
    labels: np.ndarray  # [K] int64 class index

    def __len__(self) -> int:
        return len(self.scores)

    def above(self, threshold: float) -> Detections:
        keep = self.scores >= threshold
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep])


def in_original_pixels(
    dets: np.ndarray, labels: np.ndarray, warp_matrix: np.ndarray, image_size: tuple[int, int]
) -> Detections:
    """NMS output in input pixels (``[K, 5]`` boxes and scores, ``[K]`` labels) → the image's
    :class:`Detections`, boxes mapped back through the inverse of its warp matrix and clipped to
    its (width, height)."""
    width, height = image_size
    boxes = warp_boxes(dets[:, :4], np.linalg.inv(warp_matrix), width, height) if len(dets) else dets[:, :4]
    return Detections(
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        scores=dets[:, 4].astype(np.float32),
        labels=labels.astype(np.int64),
    )


def detections_per_image(
    boxes: np.ndarray,
    scores: np.ndarray,
    warp_matrices: list[np.ndarray],
    image_sizes: list[tuple[int, int]],
    score_thr: float = 0.05,
    iou_thr: float = 0.6,
    max_num: int = 100,
) -> list[Detections]:
    """Decoded boxes ``[N, P, 4]`` (input pixels) and scores ``[N, P, C]`` → NMS per image, boxes
    mapped back to original pixels; ``image_sizes`` are the original (width, height)."""
    return [
        in_original_pixels(*multiclass_nms(boxes[i], scores[i], score_thr, iou_thr, max_num), matrix, size)
        for i, (matrix, size) in enumerate(zip(warp_matrices, image_sizes))
    ]
