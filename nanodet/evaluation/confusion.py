"""A detection confusion matrix: which class each true box was detected as, with a
background row and column for false detections and missed boxes.

Per image, the detections at or above ``score_thr`` are taken in descending score order; each
takes the unmatched ground-truth box it overlaps most (IoU at least ``iou_thr``), preferring a
box of its own class when one qualifies, so a right detection is never counted as confusion
only because a box of another class overlaps it more. Rows are the true classes, columns the
predicted ones; the last row and column are "background":

* ``m[t, p]`` — a box of class ``t`` detected as class ``p`` (the diagonal: right detections),
* ``m[C, p]`` — a detection of class ``p`` on no box (a false positive),
* ``m[t, C]`` — a box of class ``t`` that no detection took (a miss),
* ``m[C, C]`` — always 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .coco import ImageDetections, _as_arrays


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` ``[N, 4]`` with every box of ``b`` ``[M, 4]`` (x1, y1, x2, y2): ``[N, M]``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0.0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def image_confusion(
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_labels: np.ndarray,
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    num_classes: int,
    iou_thr: float,
    score_thr: float,
) -> np.ndarray:
    """The ``[C + 1, C + 1]`` matrix of one image (see the module docstring)."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    background = num_classes
    gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    keep = np.asarray(det_scores, dtype=np.float64).reshape(-1) >= score_thr
    boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)[keep]
    labels = np.asarray(det_labels, dtype=np.int64).reshape(-1)[keep]
    order = np.argsort(-np.asarray(det_scores, dtype=np.float64).reshape(-1)[keep], kind="stable")
    ious = pairwise_iou(boxes, gt_boxes)
    taken = np.zeros(len(gt_labels), dtype=bool)
    for d in order:
        label = int(labels[d])
        open_and_close = (~taken) & (ious[d] >= iou_thr)
        same = open_and_close & (gt_labels == label)
        pool = same if same.any() else open_and_close
        if not pool.any():
            matrix[background, label] += 1
            continue
        g = int(np.argmax(np.where(pool, ious[d], -1.0)))
        taken[g] = True
        matrix[gt_labels[g], label] += 1
    np.add.at(matrix, (gt_labels[~taken], background), 1)
    return matrix


def confusion_matrix(
    detections: Mapping[int, ImageDetections],
    ground_truth: Mapping[int, tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    iou_thr: float = 0.5,
    score_thr: float = 0.35,
) -> np.ndarray:
    """The ``[C + 1, C + 1]`` int64 confusion matrix summed over the images of ``ground_truth``
    (``image id -> (boxes xyxy [G, 4], labels [G])``); an image without detections counts all
    its boxes as missed, and detections of images absent from ``ground_truth`` are ignored.
    ``detections`` take any form :class:`~nanodet.evaluation.coco.CocoEvaluator` accepts."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, not {num_classes}")
    total = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    empty = (np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))
    for img_id, (gt_boxes, gt_labels) in ground_truth.items():
        found = detections.get(img_id)
        boxes, scores, labels = _as_arrays(found) if found is not None else empty
        outside = (labels < 0) | (labels >= num_classes)
        if outside.any():
            raise ValueError(f"image {img_id}: label {labels[outside][0]} outside [0, {num_classes})")
        total += image_confusion(boxes, scores, labels, gt_boxes, gt_labels, num_classes, iou_thr, score_thr)
    return total
