"""True/false positives and misses at one IoU and score threshold (for a quick summary
next to mAP): per image and class, detections above the score threshold are matched
greedily by descending score to the unmatched ground-truth box of highest IoU."""

from __future__ import annotations

import numpy as np

from ..inference.detections import Detections


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def count_matches(
    detections: dict[int, Detections],
    ground_truth: dict[int, tuple[np.ndarray, np.ndarray]],
    iou_thr: float = 0.5,
    score_thr: float = 0.35,
) -> dict[str, int]:
    """``{"tp", "fp", "fn"}`` over all images; ``ground_truth[id] = (boxes xyxy, labels)``."""
    tp = fp = fn = 0
    for img_id, (gt_boxes, gt_labels) in ground_truth.items():
        dets = detections.get(img_id)
        dets = (
            dets.above(score_thr) if dets is not None else Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))
        )
        matched = np.zeros(len(gt_labels), dtype=bool)
        for box, label in zip(dets.boxes, dets.labels):  # already sorted by score
            candidates = np.flatnonzero((gt_labels == label) & ~matched)
            if len(candidates):
                ious = _iou(box, gt_boxes[candidates])
                best = int(np.argmax(ious))
                if ious[best] >= iou_thr:
                    matched[candidates[best]] = True
                    tp += 1
                    continue
            fp += 1
        fn += int((~matched).sum())
    return {"tp": tp, "fp": fp, "fn": fn}
