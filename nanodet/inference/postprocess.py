"""From raw head output to boxes on the original image.

Decode (GFL): each prior's four side distributions → expected distances × stride → a box
around the prior; score = sigmoid of the class logit. Then class-aware NMS (IoU 0.6, at
most 100 boxes, internal score threshold 0.05, as official) and the inverse warp back to
original-image pixels, clipped to the image (:mod:`.detections`, in NumPy, for everything on
the CPU).
"""

from __future__ import annotations

import numpy as np
import torch

from ..model.box_ops import distributions_to_boxes
from ..ops.nms import multiclass_nms
from .detections import Detections, in_original_pixels
from .detections import detections_per_image as cpu_detections


def decode(
    preds: torch.Tensor, priors: torch.Tensor, num_classes: int, reg_max: int, input_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, P, C + 4(R+1)]`` head output → (scores ``[N, P, C]``, boxes ``[N, P, 4]`` in input pixels)."""
    cls_logits, reg = split_head_output(preds, num_classes, reg_max)
    return cls_logits.sigmoid(), distributions_to_boxes(reg, priors, reg_max, max_shape=input_hw)


def split_head_output(preds: torch.Tensor, num_classes: int, reg_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, P, C + 4(R+1)]`` → (class logits ``[N, P, C]``, bin logits ``[N, P, 4(R+1)]``), float32.
    (No cast when already float32: exported, a cast is a copy of the whole output.)"""
    if preds.dtype != torch.float32:
        preds = preds.float()
    cls_logits, reg = preds.split((num_classes, 4 * (reg_max + 1)), dim=-1)
    return cls_logits, reg


def postprocess(
    preds: torch.Tensor,
    priors: torch.Tensor,
    num_classes: int,
    reg_max: int,
    input_hw: tuple[int, int],
    warp_matrices: list[np.ndarray],
    image_sizes: list[tuple[int, int]],
    score_thr: float = 0.05,
    iou_thr: float = 0.6,
    max_num: int = 100,
) -> list[Detections]:
    """Detections per image from the raw head output; ``image_sizes`` are the original (width, height)."""
    scores, boxes = decode(preds, priors, num_classes, reg_max, input_hw)
    return detections_per_image(boxes, scores, warp_matrices, image_sizes, score_thr, iou_thr, max_num)


def detections_per_image(
    boxes: torch.Tensor | np.ndarray,
    scores: torch.Tensor | np.ndarray,
    warp_matrices: list[np.ndarray],
    image_sizes: list[tuple[int, int]],
    score_thr: float = 0.05,
    iou_thr: float = 0.6,
    max_num: int = 100,
) -> list[Detections]:
    """Decoded boxes ``[N, P, 4]`` (input pixels) and scores ``[N, P, C]`` → NMS per image, boxes
    mapped back to original pixels through the inverse of each image's warp matrix. Arrays and
    CPU tensors go through the NumPy path (:func:`.detections.detections_per_image`); device
    tensors are suppressed on their device."""
    if not isinstance(boxes, torch.Tensor) or boxes.device.type == "cpu":
        boxes, scores = (t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in (boxes, scores))
        return cpu_detections(boxes, scores, warp_matrices, image_sizes, score_thr, iou_thr, max_num)
    results = []
    for i, (matrix, size) in enumerate(zip(warp_matrices, image_sizes)):
        dets, labels = multiclass_nms(boxes[i], scores[i], score_thr, iou_thr, max_num)
        results.append(in_original_pixels(dets.cpu().numpy(), labels.cpu().numpy(), matrix, size))
    return results
