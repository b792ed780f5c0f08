"""Box geometry shared by the head, the assigner and the losses.

Boxes are ``(x1, y1, x2, y2)`` in continuous pixel coordinates; the area of a box is
``(x2 - x1) * (y2 - y1)`` with no ``+1``, as in mmdetection and NanoDet.
A point-based detector such as NanoDet describes a box by the distances
``(left, top, right, bottom)`` from a prior point to its four sides; the two functions
below convert between that description and corner coordinates.
"""

from __future__ import annotations

import torch
from torch import Tensor


def distance2bbox(points: Tensor, distance: Tensor, max_shape: tuple[int, int] | None = None) -> Tensor:
    """Decode ``(l, t, r, b)`` distances from ``points`` into corner boxes.

    Args:
        points: ``[..., 2]`` prior points ``(x, y)``.
        distance: ``[..., 4]`` distances from each point to the left, top, right and
            bottom side of its box.
        max_shape: ``(height, width)`` of the image; when given, the corners are clipped
            to ``[0, width] x [0, height]``.

    Returns:
        ``[..., 4]`` boxes ``(x1, y1, x2, y2)``.
    """
    x1 = points[..., 0] - distance[..., 0]
    y1 = points[..., 1] - distance[..., 1]
    x2 = points[..., 0] + distance[..., 2]
    y2 = points[..., 1] + distance[..., 3]
    if max_shape is not None:
        height, width = max_shape
        x1 = x1.clamp(min=0, max=width)
        y1 = y1.clamp(min=0, max=height)
        x2 = x2.clamp(min=0, max=width)
        y2 = y2.clamp(min=0, max=height)
    return torch.stack([x1, y1, x2, y2], dim=-1)


def bbox2distance(points: Tensor, bbox: Tensor, max_dis: float | None = None, eps: float = 0.1) -> Tensor:
    """Encode corner boxes as ``(l, t, r, b)`` distances from ``points``.

    The inverse of :func:`distance2bbox`. With ``max_dis`` the distances are clamped to
    ``[0, max_dis - eps]`` so that a discretised target stays strictly below the last
    bin of the distribution it supervises.

    Args:
        points: ``[..., 2]`` prior points ``(x, y)``.
        bbox: ``[..., 4]`` boxes ``(x1, y1, x2, y2)``.
        max_dis: Upper bound of a distance, or ``None`` for no clamping.
        eps: Margin below ``max_dis``.

    Returns:
        ``[..., 4]`` distances ``(left, top, right, bottom)``.
    """
    left = points[..., 0] - bbox[..., 0]
    top = points[..., 1] - bbox[..., 1]
    right = bbox[..., 2] - points[..., 0]
    bottom = bbox[..., 3] - points[..., 1]
    distance = torch.stack([left, top, right, bottom], dim=-1)
    if max_dis is not None:
        distance = distance.clamp(min=0, max=max_dis - eps)
    return distance


def bbox_overlaps(
    bboxes1: Tensor,
    bboxes2: Tensor,
    mode: str = "iou",
    is_aligned: bool = False,
    eps: float = 1e-6,
) -> Tensor:
    """Overlap between two sets of boxes.

    ``iou`` is intersection over union; ``iof`` is intersection over the area of the
    boxes in ``bboxes1`` (the "foreground"); ``giou`` is the generalized IoU of
    Rezatofighi et al. (CVPR 2019), ``IoU - (C - U) / C`` with ``C`` the area of the
    smallest box enclosing both, which stays informative for disjoint boxes.
    Denominators are floored at ``eps``.

    Args:
        bboxes1: ``[..., N, 4]`` boxes.
        bboxes2: ``[..., M, 4]`` boxes with the same leading (batch) dimensions.
        mode: ``"iou"``, ``"iof"`` or ``"giou"``.
        is_aligned: Compare the i-th box of ``bboxes1`` with the i-th of ``bboxes2``
            only (``N == M``) instead of every pair.
        eps: Lower bound of the denominators.

    Returns:
        ``[..., N, M]`` overlaps, or ``[..., N]`` when ``is_aligned``.
    """
    if mode not in ("iou", "iof", "giou"):
        raise ValueError(f"unsupported overlap mode {mode!r}")
    if bboxes1.shape[:-2] != bboxes2.shape[:-2]:
        raise ValueError("bboxes1 and bboxes2 must share their batch dimensions")
    rows, cols = bboxes1.size(-2), bboxes2.size(-2)
    if is_aligned and rows != cols:
        raise ValueError(f"aligned overlaps need equal counts, got {rows} and {cols}")

    if not is_aligned:
        # Broadcast to every (row, col) pair: [..., N, 1, 4] against [..., 1, M, 4].
        bboxes1 = bboxes1[..., :, None, :]
        bboxes2 = bboxes2[..., None, :, :]

    area1 = _area(bboxes1)
    area2 = _area(bboxes2)
    overlap = _intersection_area(bboxes1, bboxes2)
    denominator = area1 + area2 - overlap if mode != "iof" else area1.expand_as(overlap)
    eps_t = overlap.new_tensor(eps)
    union = torch.maximum(denominator, eps_t)
    ious = overlap / union
    if mode != "giou":
        return ious

    enclose_lt = torch.minimum(bboxes1[..., :2], bboxes2[..., :2])
    enclose_rb = torch.maximum(bboxes1[..., 2:], bboxes2[..., 2:])
    enclose_wh = (enclose_rb - enclose_lt).clamp(min=0)
    enclose_area = torch.maximum(enclose_wh[..., 0] * enclose_wh[..., 1], eps_t)
    return ious - (enclose_area - union) / enclose_area


def _area(boxes: Tensor) -> Tensor:
    """Area ``w * h`` of ``[..., 4]`` boxes."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _intersection_area(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Area where two broadcastable sets of boxes meet, zero when they are disjoint."""
    lt = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    rb = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def expected_distances(reg: Tensor, reg_max: int) -> Tensor:
    """GFL integral: ``[..., 4 * (reg_max + 1)]`` bin logits → ``[..., 4]`` expected distances
    (softmax over the bins 0..reg_max, then their mean), in units of the stride."""
    # the bins as an [R + 1, 1] matrix, not a vector: the same numbers, and exported to ONNX a
    # matrix product ONNX Runtime runs ~6x faster (its vector case took 5 % of the forward)
    bins = torch.arange(reg_max + 1, device=reg.device, dtype=reg.dtype)[:, None]
    return (torch.softmax(reg.reshape(*reg.shape[:-1], 4, reg_max + 1), dim=-1) @ bins).squeeze(-1)


def expected_distances_bins_leading(reg: Tensor, reg_max: int) -> Tensor:
    """:func:`expected_distances` computed with the bins as the leading axis, for training.

    The same softmax and mean (equal up to float rounding), ~4x faster forward and backward on
    CPU, where torch's softmax over a last axis of ``reg_max + 1`` (8) elements is slow."""
    logits = reg.unflatten(-1, (4, reg_max + 1)).movedim(-1, 0).contiguous()  # [R + 1, ..., 4]
    bins = torch.arange(reg_max + 1, device=reg.device, dtype=reg.dtype).view(-1, *[1] * (logits.dim() - 1))
    return (torch.softmax(logits, dim=0) * bins).sum(dim=0)


def distributions_to_boxes(
    reg: Tensor, priors: Tensor, reg_max: int, max_shape: tuple[int, int] | None = None
) -> Tensor:
    """Boxes around the priors ``[P, 4]`` (x, y, stride, stride) from their side distributions."""
    return distance2bbox(priors[:, :2], expected_distances(reg, reg_max) * priors[:, 2:3], max_shape=max_shape)
