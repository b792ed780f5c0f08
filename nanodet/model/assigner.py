"""Dynamic Soft Label Assignment, the label assigner of NanoDet-Plus.

Which priors (feature-map cells) should learn to detect which ground-truth box? Instead of
fixed geometric rules, NanoDet-Plus lets the current predictions decide, in the spirit of
OTA / SimOTA (Ge et al., 2021):

1. Candidates are the priors whose centre lies inside at least one ground-truth box.
2. Each (candidate, gt) pair gets a matching cost that is low when the prediction is
   already good for that gt:

   * a *soft-label classification cost*: the Quality-Focal-style loss of the predicted
     class scores against a soft one-hot target whose positive entry is the IoU of the
     predicted box with the gt, and
   * an *IoU cost* ``-log(IoU) * iou_factor``.

3. Each gt takes its ``k`` cheapest candidates, where ``k`` is estimated from the data:
   the sum of the gt's ``topk`` best IoUs (at least 1). Well localised objects thus
   receive more positives than poorly covered ones.
4. A prior claimed by several gts keeps only the one with the lowest cost.

Unlike the later RTMDet variant in mmdetection, NanoDet's assigner has no soft
centre-prior cost: the in-box test of step 1 is its only geometric prior.

Assignment involves no gradients; callers run it under ``torch.no_grad()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .box_ops import bbox_overlaps

_LOG_EPS = 1e-7  # keeps -log(IoU) finite for disjoint boxes
_LOG_FLOOR = -100.0  # the clamp F.binary_cross_entropy applies to log-probabilities


@dataclass
class AssignResult:
    """Outcome of assigning ground truths to the priors of one image.

    Attributes:
        num_gts: Number of ground-truth boxes.
        gt_inds: ``[N]`` long; 0 for a negative prior, ``i + 1`` for a prior assigned
            to gt ``i``, -1 for a prior ignored because it overlaps an ignore region.
        max_overlaps: ``[N]`` IoU of each positive prior's predicted box with its gt,
            0 elsewhere.
        labels: ``[N]`` long class of the assigned gt, -1 for unassigned priors.
    """

    num_gts: int
    gt_inds: Tensor
    max_overlaps: Tensor
    labels: Tensor


class DynamicSoftLabelAssigner:
    """Dynamic soft label assignment of ground truths to priors.

    Args:
        topk: Number of best IoUs summed to estimate each gt's number of positives.
        iou_factor: Weight of the IoU cost against the classification cost.
        ignore_iof_thr: Priors whose predicted box lies inside an ignore region by more
            than this fraction of its area (intersection over foreground) are marked
            ignored (``gt_inds == -1``); non-positive disables ignoring.
    """

    def __init__(self, topk: int = 13, iou_factor: float = 3.0, ignore_iof_thr: float = -1) -> None:
        self.topk = topk
        self.iou_factor = iou_factor
        self.ignore_iof_thr = ignore_iof_thr

    @torch.no_grad()
    def assign(
        self,
        pred_scores: Tensor,
        priors: Tensor,
        decoded_bboxes: Tensor,
        gt_bboxes: Tensor,
        gt_labels: Tensor,
        gt_bboxes_ignore: Tensor | None = None,
    ) -> AssignResult:
        """Assign ground truths to the priors of one image.

        Args:
            pred_scores: ``[N, C]`` class probabilities (after sigmoid).
            priors: ``[N, 4]`` priors ``(cx, cy, stride_w, stride_h)``.
            decoded_bboxes: ``[N, 4]`` predicted boxes ``(x1, y1, x2, y2)``.
            gt_bboxes: ``[G, 4]`` ground-truth boxes ``(x1, y1, x2, y2)``.
            gt_labels: ``[G]`` ground-truth class indexes in ``[0, C)``.
            gt_bboxes_ignore: ``[I, 4]`` regions to ignore (used only when
                ``ignore_iof_thr > 0``).

        Returns:
            The :class:`AssignResult`.
        """
        num_priors = priors.size(0)
        num_gts = gt_bboxes.size(0)
        device = priors.device
        gt_inds = torch.zeros(num_priors, dtype=torch.long, device=device)
        max_overlaps = torch.zeros(num_priors, dtype=torch.float32, device=device)
        labels = torch.full((num_priors,), -1, dtype=torch.long, device=device)

        gt_bboxes = gt_bboxes.float()
        candidates = _centers_inside_any(priors[:, :2].float(), gt_bboxes)
        if num_gts > 0 and bool(candidates.any()):
            candidate_inds = torch.nonzero(candidates, as_tuple=True)[0]
            ious = bbox_overlaps(decoded_bboxes[candidate_inds].float(), gt_bboxes)
            cost = self._cost(pred_scores[candidate_inds].float(), ious, gt_labels)
            matched, matched_gt = _dynamic_k_matching(cost, ious, self.topk)
            pos = torch.nonzero(matched, as_tuple=True)[0]  # index among candidates
            gt_of_pos = matched_gt[pos]
            gt_inds[candidate_inds[pos]] = gt_of_pos + 1
            labels[candidate_inds[pos]] = gt_labels[gt_of_pos].long()
            max_overlaps[candidate_inds[pos]] = ious[pos, gt_of_pos]

        if self.ignore_iof_thr > 0 and gt_bboxes_ignore is not None and gt_bboxes_ignore.numel() > 0:
            iof = bbox_overlaps(decoded_bboxes.float(), gt_bboxes_ignore.float(), mode="iof")
            gt_inds[iof.max(dim=1).values > self.ignore_iof_thr] = -1

        return AssignResult(num_gts, gt_inds, max_overlaps, labels)

    def _cost(self, scores: Tensor, ious: Tensor, gt_labels: Tensor) -> Tensor:
        """``[V, G]`` matching cost of ``V`` candidates against ``G`` gts."""
        iou_cost = -torch.log(ious + _LOG_EPS)
        return _soft_label_cost(scores, ious, gt_labels) + self.iou_factor * iou_cost


def _centers_inside_any(centers: Tensor, boxes: Tensor) -> Tensor:
    """``[N]`` mask of the points strictly inside at least one of the ``[G, 4]`` boxes."""
    lt = centers[:, None, :] - boxes[None, :, :2]
    rb = boxes[None, :, 2:] - centers[:, None, :]
    inside = torch.cat([lt, rb], dim=-1).min(dim=-1).values > 0
    return inside.any(dim=1)


def _soft_label_cost(scores: Tensor, ious: Tensor, gt_labels: Tensor) -> Tensor:
    """Classification cost of each candidate for each gt, ``[V, G]``.

    For gt ``g`` with class ``c_g`` the target of candidate ``v`` is a soft one-hot
    vector: ``IoU(v, g)`` at class ``c_g``, 0 at every other class. The cost is the sum
    over classes of ``BCE(p, target) * |target - p|^2``. The classes other than ``c_g``
    contribute ``BCE(p, 0) * p^2`` whatever ``g`` is, so the cost is computed as the
    all-negative sum, with the ``c_g`` term swapped for its soft-label version; this
    needs ``O(V * (C + G))`` memory instead of ``O(V * G * C)``.
    """
    negative_terms = _bce(scores, torch.zeros_like(scores)) * scores.pow(2)
    labels = gt_labels.long()
    p_label = scores[:, labels]  # [V, G] score of each gt's class
    positive_terms = _bce(p_label, ious) * (ious - p_label).abs().pow(2)
    return negative_terms.sum(dim=1, keepdim=True) - negative_terms[:, labels] + positive_terms


def _bce(prob: Tensor, target: Tensor) -> Tensor:
    """Element-wise binary cross-entropy of probabilities, log clamped at -100.

    Written out rather than calling ``F.binary_cross_entropy`` so that it also runs
    inside an autocast region.
    """
    log_p = torch.log(prob).clamp(min=_LOG_FLOOR)
    log_not_p = torch.log1p(-prob).clamp(min=_LOG_FLOOR)
    return -(target * log_p + (1 - target) * log_not_p)


def _dynamic_k_matching(cost: Tensor, ious: Tensor, topk: int) -> tuple[Tensor, Tensor]:
    """Match candidates to gts given ``[V, G]`` costs and IoUs.

    Each gt ``g`` takes its ``k_g`` cheapest candidates with
    ``k_g = max(1, floor(sum of its topk largest IoUs))``; a candidate taken by several
    gts keeps the gt with its lowest cost (among all gts, as in the official
    implementation).

    Returns:
        ``matched``: ``[V]`` bool mask of candidates that became positive, and
        ``matched_gt``: ``[V]`` index of their gt (meaningless where not matched).
    """
    num_candidates = cost.size(0)
    top_ious = torch.topk(ious, min(topk, num_candidates), dim=0).values
    dynamic_ks = top_ious.sum(dim=0).int().clamp(min=1)  # [G]

    # Rank of each candidate in every gt's cost column: 0 for the cheapest.
    order = torch.argsort(cost, dim=0, stable=True)
    positions = torch.arange(num_candidates, device=cost.device)[:, None]
    ranks = torch.empty_like(order).scatter_(0, order, positions.expand_as(order))
    matching = ranks < dynamic_ks[None, :]  # [V, G]

    matched = matching.any(dim=1)
    conflicted = matching.sum(dim=1) > 1
    matched_gt = matching.int().argmax(dim=1)
    matched_gt = torch.where(conflicted, cost.argmin(dim=1), matched_gt)
    return matched, matched_gt
