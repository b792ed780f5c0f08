"""The Generalized Focal Loss family used to train NanoDet-Plus.

Li et al., "Generalized Focal Loss: Learning Qualified and Distributed Bounding Boxes for
Dense Object Detection" (NeurIPS 2020), replace the usual classification + centerness
pair by a single *quality* score per class and regress each box side as a discrete
*distribution*:

* Quality Focal Loss (QFL) trains the class score towards the IoU of the predicted box
  with its ground truth (0 for background), focusing on badly estimated scores.
* Distribution Focal Loss (DFL) pushes the probability mass of a side's distribution
  onto the two integer bins that bracket the continuous target.
* The boxes themselves are also supervised with the GIoU loss.

Every loss computes one value per sample, multiplies it by an optional per-sample
``weight`` and reduces it as mmdetection does: ``"mean"`` divides the (weighted) sum by
``avg_factor`` when given, otherwise averages; ``"sum"`` sums; ``"none"`` keeps the
per-sample values. The result is scaled by ``loss_weight``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .box_ops import bbox_overlaps

_REDUCTIONS = ("none", "mean", "sum")


def weight_reduce_loss(
    loss: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    """Weight per-sample losses and reduce them.

    With ``avg_factor`` the mean is the weighted sum divided by ``avg_factor`` (typically
    the number of positive samples, so that images with many negatives are not diluted);
    ``avg_factor`` cannot be combined with ``"sum"``.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if weight is not None:
        loss = loss * weight
    if reduction == "none":
        return loss
    if avg_factor is None:
        return loss.mean() if reduction == "mean" else loss.sum()
    if reduction == "sum":
        raise ValueError('avg_factor can not be used with reduction="sum"')
    return loss.sum() / avg_factor


def quality_focal_loss(pred: Tensor, labels: Tensor, scores: Tensor, beta: float = 2.0) -> Tensor:
    """Per-sample Quality Focal Loss, summed over classes.

    Each class logit ``x`` with probability ``sigma = sigmoid(x)`` is trained by binary
    cross-entropy towards a soft target ``y``: the IoU ``score`` for the labelled class
    of a positive sample, 0 everywhere else. The cross-entropy is modulated by
    ``|y - sigma|^beta``, the focal idea generalised to continuous targets: well
    estimated scores contribute little.

    Args:
        pred: ``[N, C]`` class logits.
        labels: ``[N]`` class indexes; values outside ``[0, C)`` (``C`` by convention)
            mark background.
        scores: ``[N]`` IoU quality targets of the positive samples.
        beta: Exponent of the modulating factor.

    Returns:
        ``[N]`` losses.
    """
    sigma = pred.sigmoid()
    # Negatives (and the non-labelled classes of positives) are pulled towards 0.
    loss = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none") * sigma.pow(beta)

    num_classes = pred.size(1)
    pos = torch.nonzero((labels >= 0) & (labels < num_classes), as_tuple=True)[0]
    pos_labels = labels[pos].long()
    pos_scores = scores[pos].to(pred.dtype)
    pos_pred = pred[pos, pos_labels]
    modulator = (pos_scores - sigma[pos, pos_labels]).abs().pow(beta)
    loss[pos, pos_labels] = F.binary_cross_entropy_with_logits(pos_pred, pos_scores, reduction="none") * modulator
    return loss.sum(dim=1)


def distribution_focal_loss(pred: Tensor, label: Tensor) -> Tensor:
    """Per-sample Distribution Focal Loss.

    A continuous target ``y`` between the integer bins ``y_l = floor(y)`` and
    ``y_r = y_l + 1`` is represented by putting weight ``y_r - y`` on ``y_l`` and
    ``y - y_l`` on ``y_r`` (the linear interpolation whose expectation is ``y``). The
    loss is the cross-entropy of the predicted softmax against that two-bin target.

    Args:
        pred: ``[N, n + 1]`` logits over the bins ``0..n``.
        label: ``[N]`` targets in ``[0, n)``.

    Returns:
        ``[N]`` losses.
    """
    left = label.long()
    right = left + 1
    weight_left = right.to(label.dtype) - label
    weight_right = label - left.to(label.dtype)
    return (
        F.cross_entropy(pred, left, reduction="none") * weight_left
        + F.cross_entropy(pred, right, reduction="none") * weight_right
    )


def giou_loss(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """Per-box GIoU loss ``1 - GIoU(pred, target)``, in ``[0, 2]``.

    Args:
        pred: ``[N, 4]`` predicted boxes ``(x1, y1, x2, y2)``.
        target: ``[N, 4]`` matching ground-truth boxes.
        eps: Lower bound of the union and enclosing areas.

    Returns:
        ``[N]`` losses.
    """
    return 1 - bbox_overlaps(pred, target, mode="giou", is_aligned=True, eps=eps)


class QualityFocalLoss(nn.Module):
    """Quality Focal Loss on sigmoid class logits (see :func:`quality_focal_loss`)."""

    def __init__(self, beta: float = 2.0, loss_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.beta = beta
        self.loss_weight = loss_weight
        self.reduction = reduction

    def forward(
        self,
        pred: Tensor,
        target: tuple[Tensor, Tensor],
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        """Loss of ``[N, C]`` logits against ``(labels [N], scores [N])``.

        ``labels`` uses ``C`` for background; ``weight`` is per sample (``[N]``).
        """
        labels, scores = target
        loss = quality_focal_loss(pred, labels, scores, beta=self.beta)
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)


class DistributionFocalLoss(nn.Module):
    """Distribution Focal Loss on bin logits (see :func:`distribution_focal_loss`).

    ``loss_weight`` defaults to 0.25, the weight NanoDet-Plus trains with.
    """

    def __init__(self, loss_weight: float = 0.25, reduction: str = "mean") -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = reduction

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        """Loss of ``[N, reg_max + 1]`` logits against ``[N]`` targets in ``[0, reg_max)``."""
        loss = distribution_focal_loss(pred, target)
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)


class GIoULoss(nn.Module):
    """GIoU loss on corner boxes (see :func:`giou_loss`).

    ``loss_weight`` defaults to 2.0, the weight NanoDet-Plus trains with.
    """

    def __init__(self, loss_weight: float = 2.0, eps: float = 1e-6, reduction: str = "mean") -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.eps = eps
        self.reduction = reduction

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        """Loss of ``[N, 4]`` predicted boxes against ``[N, 4]`` targets.

        When ``weight`` is given but has no positive entry, nothing is supervised: the
        result is a zero that is still connected to ``pred``'s graph, so that
        distributed training sees a gradient for every parameter.
        """
        if weight is not None and not bool(torch.any(weight > 0)):
            return pred.sum() * 0
        loss = giou_loss(pred, target, eps=self.eps)
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)
