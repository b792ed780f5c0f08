"""Class-aware greedy NMS on NumPy arrays, in OpenCV's C++ kernel (no PyTorch).

The same rule and the same indices as :mod:`.nms` (the definition, with the PyTorch blocks
for CUDA tensors): boxes are visited from the highest score down (stable, so equal scores
keep their original order) and a box is dropped when its IoU with a kept box of its label is
strictly above the threshold. OpenCV's ``NMSBoxes`` visits boxes in the order given here and
computes the IoU in double precision. This is the CPU path of every predictor: with an
exported graph, detection needs no PyTorch at all. Inverted boxes (x2 < x1), which OpenCV
does not take, go through the same greedy loop in NumPy (:func:`greedy_nms`). The module needs
nothing of :mod:`.nms`, which builds on it.
"""

from __future__ import annotations

import cv2
import numpy as np


def opencv_boxes(boxes: np.ndarray) -> np.ndarray | None:
    """xyxy boxes as OpenCV's NMS takes them, ``[N, 4]`` float64 (x, y, w, h); None where OpenCV
    does not apply (boxes with x2 < x1 or y2 < y1, more boxes than float32 ranks count)."""
    if len(boxes) >= 2**24:
        return None
    b = np.asarray(boxes, dtype=np.float64)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    if not ((w >= 0).all() and (h >= 0).all()):
        return None
    return np.stack([b[:, 0], b[:, 1], w, h], axis=1)


def opencv_greedy(xywh: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Positions kept by OpenCV's C++ greedy NMS, visiting the boxes in the order given."""
    # OpenCV sorts by score (stably): distinct descending ranks make it visit in our order,
    # whatever the scores' ties or precision.
    ranks = np.arange(len(xywh), 0, -1, dtype=np.float32)
    kept = cv2.dnn.NMSBoxes(xywh, ranks, 0.0, float(iou_threshold))
    return np.asarray(kept, dtype=np.int64).reshape(-1)


def greedy_nms(boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Positions kept by the classical greedy loop over boxes already in visiting order, with
    torchvision's IoU formula in the boxes' own precision (float32 arithmetic gives the bits of
    :mod:`.nms`'s PyTorch blocks). For what OpenCV does not take: inverted boxes, whose areas are
    negative (their IoU with anything is then <= 0 or NaN, and suppresses nothing). One row of
    IoUs per kept box: quadratic, for the few hundred candidates such a model leaves."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    alive = np.ones(len(boxes), dtype=bool)
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        rest = slice(i + 1, None)
        inter_w = (np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])).clip(min=0)
        inter_h = (np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])).clip(min=0)
        inter = inter_w * inter_h
        with np.errstate(divide="ignore", invalid="ignore"):
            alive[rest] &= ~(inter / (areas[i] + areas[rest] - inter) > iou_threshold)
    return np.flatnonzero(alive)


def score_order(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score, equal scores in their original order."""
    return np.argsort(-scores, kind="stable")


def class_shifted(boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Boxes moved by ``label * (max coordinate + 1)``: boxes of different labels never overlap
    (the offset trick of the official NanoDet and of torchvision), in the boxes' precision."""
    offsets = labels.astype(boxes.dtype) * (boxes.max() + boxes.dtype.type(1))
    return boxes + offsets[:, None]


def batched_nms_opencv(shifted: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float):
    """Class-aware NMS over class-shifted boxes, one OpenCV call per label: a box meets only the
    boxes of its own label instead of every box kept so far (on a dense detector's candidates,
    tens of labels, several times fewer IoUs). The same indices as one pass over all of them.
    Returns the kept indices by descending score, or None where OpenCV does not apply."""
    xywh = opencv_boxes(shifted)
    if xywh is None:
        return None
    order = score_order(scores)
    grouped = order[np.argsort(labels[order], kind="stable")]  # label by label, each in score order
    sorted_labels = labels[grouped]
    bounds = [0, *(np.flatnonzero(sorted_labels[1:] != sorted_labels[:-1]) + 1).tolist(), len(grouped)]
    kept = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        group = grouped[start:end]
        if end - start > 1:  # a label's only box is kept
            group = group[opencv_greedy(xywh[group], iou_threshold)]
        kept.append(group)
    kept = np.concatenate(kept)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return kept[np.argsort(rank[kept])]  # back to the score order over all labels


def multiclass_nms(
    boxes: np.ndarray, scores: np.ndarray, score_thr: float, iou_thr: float, max_num: int, pre_nms_top_k: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class NMS over the (box, class) pairs of a dense detector, as
    :func:`.nms.multiclass_nms` does it on tensors: every pair scoring above ``score_thr`` is a
    candidate (one box can be detected as several classes), the ``pre_nms_top_k`` best (all if
    ``<= 0``) go through class-aware NMS, and at most ``max_num`` (all if ``<= 0``) are kept.

    Args:
        boxes: [N, 4] xyxy boxes.
        scores: [N, C] class probabilities (no background column).

    Returns:
        detections [K, 5] float32 as (x1, y1, x2, y2, score), by descending score, and their
        int64 labels [K].
    """
    # rows (boxes) with any candidate first, then the pairs among them: the same pairs in the
    # same order as a nonzero over the whole [N, C], at a fraction of its cost
    rows = np.flatnonzero(scores.max(axis=1, initial=-np.inf) > score_thr)
    row_index, labels = np.nonzero(scores[rows] > score_thr)
    box_index = rows[row_index]
    cand_boxes, cand_scores = boxes[box_index], scores[box_index, labels]
    if 0 < pre_nms_top_k < len(cand_scores):
        top = np.sort(score_order(cand_scores)[:pre_nms_top_k])  # candidate order: ties keep theirs
        labels, cand_boxes, cand_scores = labels[top], cand_boxes[top], cand_scores[top]
    labels = labels.astype(np.int64)
    if len(cand_scores) == 0:
        keep = np.zeros(0, dtype=np.int64)
    else:
        shifted = class_shifted(cand_boxes, labels)
        keep = batched_nms_opencv(shifted, cand_scores, labels, iou_thr)
        if keep is None:  # inverted boxes: the classical loop, as the PyTorch blocks run it
            order = score_order(cand_scores)
            keep = order[greedy_nms(shifted[order], iou_thr)]
    if max_num > 0:
        keep = keep[:max_num]
    dets = np.concatenate([cand_boxes[keep], cand_scores[keep, None]], axis=1).astype(np.float32, copy=False)
    return dets, labels[keep]
