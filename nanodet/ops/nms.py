"""Non-maximum suppression.

The greedy NMS used by detectors visits boxes from the highest score down and keeps a
box unless it overlaps (IoU strictly above the threshold) a box already kept. The
implementation here gives exactly the indices of that classical loop, with the same
floating-point IoU formula as ``torchvision.ops.nms`` (area ``(x2-x1)*(y2-y1)``,
``inter / (area_a + area_b - inter)``), but does the arithmetic in blocks:

* boxes are sorted by score (stable, so equal scores keep their original order);
* each block of consecutive sorted boxes is first checked, as one IoU matrix,
  against every box kept in earlier blocks, then against itself;
* the only Python loop is the cheap greedy pass over the block's boolean
  "overlaps" matrix.

On CPU tensors the same greedy loop runs in C++ instead: torchvision's kernel when
torchvision is installed, else OpenCV's ``NMSBoxes`` (a core dependency, through
:mod:`.opencv_nms`, which also runs the whole multi-class NMS on NumPy arrays), which visits
boxes in the order given here and suppresses at IoU strictly above the threshold, in
double precision. The pure-PyTorch blocks serve CUDA tensors and inverted boxes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import opencv_nms

try:  # optional: the compiled kernel of torchvision gives the same indices, faster
    from torchvision.ops import nms as _torchvision_nms
except ImportError:
    _torchvision_nms = None

# Sorted boxes are processed this many at a time, which bounds memory to
# O(block * (block + kept)) whatever the number of boxes.
_BLOCK = 1024


def _areas(boxes: Tensor) -> Tensor:
    """Area of xyxy boxes, ``(x2 - x1) * (y2 - y1)`` (no +1, as torchvision)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _pairwise_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU matrix [len(a), len(b)] computed with torchvision's operation order.

    The formula is symmetric in floating point too (min/max and a + b commute), so
    IoU(i, j) == IoU(j, i) bit for bit, whichever side a box is on.
    """
    ax1, ay1, ax2, ay2 = (c[:, None] for c in a.unbind(dim=1))
    bx1, by1, bx2, by2 = b.unbind(dim=1)
    inter_w = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp_(min=0)
    inter_h = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp_(min=0)
    inter = inter_w.mul_(inter_h)
    return inter / (_areas(a)[:, None] + _areas(b)[None, :] - inter)


def _greedy_pass(overlaps: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Greedy suppression inside one block of score-sorted boxes.

    ``overlaps[i, j]`` (only j > i set) says that box i suppresses box j if i is
    kept; ``alive`` marks boxes not already suppressed from an earlier block. It is
    updated in place and returned.
    """
    for i in range(len(alive)):
        if alive[i]:
            alive &= ~overlaps[i]
    return alive


def _nms_sorted(boxes: Tensor, iou_threshold: float) -> Tensor:
    """Positions kept by greedy NMS among boxes already sorted by descending score."""
    kept_boxes = boxes[:0]
    kept_positions: list[np.ndarray] = []
    for start in range(0, len(boxes), _BLOCK):
        block = boxes[start : start + _BLOCK]
        alive = np.ones(len(block), dtype=bool)
        if len(kept_boxes):
            hit = (_pairwise_iou(kept_boxes, block) > iou_threshold).any(dim=0)
            alive &= ~hit.cpu().numpy()
        overlaps = (_pairwise_iou(block, block) > iou_threshold).triu(diagonal=1)
        alive = _greedy_pass(overlaps.cpu().numpy(), alive)
        kept = np.flatnonzero(alive)
        kept_boxes = torch.cat([kept_boxes, block[torch.from_numpy(kept).to(block.device)]])
        kept_positions.append(kept + start)
    positions = np.concatenate(kept_positions).astype(np.int64)
    return torch.from_numpy(positions).to(boxes.device)


def _nms_opencv(boxes: Tensor, order: Tensor, iou_threshold: float) -> Tensor | None:
    """OpenCV's greedy NMS over boxes visited in ``order``; None where it does not apply."""
    xywh = None if boxes.is_cuda else opencv_nms.opencv_boxes(boxes[order].detach().numpy())
    return None if xywh is None else order[torch.from_numpy(opencv_nms.opencv_greedy(xywh, iou_threshold))]


def _batched_nms_opencv(shifted: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor | None:
    """:func:`.opencv_nms.batched_nms_opencv` on CPU tensors; None where it does not apply."""
    if shifted.is_cuda:
        return None
    kept = opencv_nms.batched_nms_opencv(
        shifted.detach().numpy(), scores.detach().numpy(), labels.numpy(), iou_threshold
    )
    return None if kept is None else torch.from_numpy(kept)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes: [N, 4] boxes as (x1, y1, x2, y2).
        scores: [N] scores.
        iou_threshold: a box is dropped when its IoU with a kept, higher-scored box
            is strictly greater than this.

    Returns:
        int64 indices of the kept boxes, by descending score (ties in original order).
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    kept = _nms_opencv(boxes, order, iou_threshold)
    return kept if kept is not None else order[_nms_sorted(boxes[order], iou_threshold)]


def _label_groups(labels: Tensor) -> tuple[Tensor, ...]:
    """Indices of each label's boxes, one tensor per label, each in ascending order."""
    order = torch.argsort(labels, stable=True)
    counts = torch.unique_consecutive(labels[order], return_counts=True)[1]
    return torch.split(order, counts.tolist())


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS: boxes only suppress boxes of the same label.

    Every label gets its own region of the plane: boxes (with non-negative
    coordinates) are shifted by ``label * (max coordinate + 1)`` so that boxes of
    different labels never overlap, and one NMS over all of them is class-aware (the
    offset trick of the official NanoDet and of torchvision). On CPU tensors
    (OpenCV's kernel), and above one block of boxes elsewhere, the NMS runs label
    by label on the same shifted boxes instead, which gives the same indices
    without comparing boxes of different labels. The compiled torchvision NMS is
    used when torchvision is installed; the kernels give the same indices.

    Returns:
        int64 indices of the kept boxes, by descending score (ties in original order).
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    offsets = labels.to(boxes) * (boxes.max() + 1)
    shifted = boxes + offsets[:, None]
    if _torchvision_nms is None:
        kept = _batched_nms_opencv(shifted, scores, labels, iou_threshold)
        if kept is not None:
            return kept.to(boxes.device)
    kernel = _torchvision_nms if _torchvision_nms is not None else nms
    if len(boxes) <= _BLOCK:
        return kernel(shifted, scores, iou_threshold)
    kept = torch.cat([group[kernel(shifted[group], scores[group], iou_threshold)] for group in _label_groups(labels)])
    kept = kept.sort().values
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]


def multiclass_nms(
    boxes: Tensor, scores: Tensor, score_thr: float, iou_thr: float, max_num: int, pre_nms_top_k: int = 1000
) -> tuple[Tensor, Tensor]:
    """Per-class NMS over the (box, class) pairs of a dense detector.

    Each pair whose score exceeds ``score_thr`` is a candidate, so one box can be
    detected as several classes. Candidates go through class-aware NMS and at most
    ``max_num`` of them (all if ``max_num <= 0``) are kept, by descending score.

    Only the ``pre_nms_top_k`` best candidates (all if ``<= 0``) enter NMS: an untrained
    or confused model can put tens of thousands of pairs above the threshold, and the
    ``max_num`` survivors come from the top of the list anyway.

    Args:
        boxes: [N, 4] xyxy boxes.
        scores: [N, C] class probabilities (no background column).

    Returns:
        detections [K, 5] as (x1, y1, x2, y2, score) and their int64 labels [K].
    """
    # rows (boxes) with any candidate first, then the pairs among them: the same pairs in the
    # same order, but a whole [N, C] nonzero costs more than the rest of the NMS on CPU
    rows = (scores.amax(dim=1) > score_thr).nonzero()[:, 0]
    row_index, labels = (scores[rows] > score_thr).nonzero(as_tuple=True)
    box_index = rows[row_index]
    cand_boxes = boxes[box_index]
    cand_scores = scores[box_index, labels]
    if 0 < pre_nms_top_k < len(cand_scores):
        top = torch.sort(cand_scores, descending=True, stable=True).indices[:pre_nms_top_k]
        top = top.sort().values  # back to candidate order, so ties keep their original order
        box_index, labels, cand_boxes, cand_scores = box_index[top], labels[top], cand_boxes[top], cand_scores[top]
    keep = batched_nms(cand_boxes, cand_scores, labels, iou_thr)
    if max_num > 0:
        keep = keep[:max_num]
    dets = torch.cat([cand_boxes[keep], cand_scores[keep, None]], dim=1)
    return dets, labels[keep]
