"""NanoDet-Plus training loss.

1. Label assignment (Dynamic Soft Label assigner): for every image, match priors to
   ground-truth boxes by a cost of classification, IoU and location. With the auxiliary
   head present its (detached) predictions drive the matching for both heads: the
   assign guidance module.
2. Losses on the assignment: Quality Focal Loss on all priors (soft IoU targets), and on
   positives GIoU and Distribution Focal Loss, weighted by the positive's predicted score.
   Normalisers are averaged over processes so every GPU weighs samples alike.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist

from ..config import HeadLossConfig
from .assigner import DynamicSoftLabelAssigner
from .box_ops import bbox2distance, distance2bbox, expected_distances_bins_leading
from .losses import DistributionFocalLoss, GIoULoss, QualityFocalLoss


def reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Average over all processes (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    value = value.clone()
    dist.all_reduce(value.div_(dist.get_world_size()), op=dist.ReduceOp.SUM)
    return value


class Targets(NamedTuple):
    """Assignment of a whole batch, priors of all images concatenated."""

    labels: torch.Tensor  # class index, num_classes = background
    label_scores: torch.Tensor  # IoU of the prediction with its target (the soft QFL label)
    bbox_targets: torch.Tensor
    dist_targets: torch.Tensor  # target distances in strides, for DFL
    num_pos: int


class NanoDetPlusLoss:
    def __init__(
        self, num_classes: int, reg_max: int, loss_cfg: HeadLossConfig, topk: int = 13, iou_factor: float = 3.0
    ):
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.qfl = QualityFocalLoss(beta=loss_cfg.loss_qfl.beta, loss_weight=loss_cfg.loss_qfl.loss_weight)
        self.dfl = DistributionFocalLoss(loss_weight=loss_cfg.loss_dfl.loss_weight)
        self.giou = GIoULoss(loss_weight=loss_cfg.loss_bbox.loss_weight)
        self.assigner = DynamicSoftLabelAssigner(topk=topk, iou_factor=iou_factor)

    def decode(self, preds: torch.Tensor, priors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(class logits, box logits, decoded boxes) from ``[N, P, C + 4(R+1)]``."""
        cls_preds, reg_preds = preds.float().split((self.num_classes, 4 * (self.reg_max + 1)), dim=-1)
        distances = expected_distances_bins_leading(reg_preds, self.reg_max) * priors[:, 2:3]
        return cls_preds, reg_preds, distance2bbox(priors[:, :2], distances)

    def __call__(
        self,
        preds: torch.Tensor,
        aux_preds: torch.Tensor | None,
        priors: torch.Tensor,
        gt_bboxes: list[torch.Tensor],
        gt_labels: list[torch.Tensor],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cls_preds, reg_preds, boxes = self.decode(preds, priors)
        guide = self.decode(aux_preds, priors) if aux_preds is not None else (cls_preds, reg_preds, boxes)
        targets = self.assign(guide[0].detach(), guide[2].detach(), priors, gt_bboxes, gt_labels)
        loss, states = self.loss_from_targets(cls_preds, reg_preds, boxes, targets)
        if aux_preds is not None:
            aux_loss, aux_states = self.loss_from_targets(*guide, targets)
            loss = loss + aux_loss
            states |= {f"aux_{k}": v for k, v in aux_states.items()}
        return loss, states

    @torch.no_grad()
    def assign(self, cls_preds, boxes, priors, gt_bboxes, gt_labels) -> Targets:
        labels, scores, bbox_t, dist_t, num_pos = [], [], [], [], 0
        for cls_i, boxes_i, gtb, gtl in zip(cls_preds, boxes, gt_bboxes, gt_labels):
            lab, sc, bt, dt, n = self._assign_one(cls_i, boxes_i, priors, gtb.to(priors.device), gtl.to(priors.device))
            labels.append(lab)
            scores.append(sc)
            bbox_t.append(bt)
            dist_t.append(dt)
            num_pos += n
        return Targets(torch.cat(labels), torch.cat(scores), torch.cat(bbox_t), torch.cat(dist_t), num_pos)

    def _assign_one(self, cls_preds, boxes, priors, gt_bboxes, gt_labels):
        num_priors = priors.shape[0]
        labels = torch.full((num_priors,), self.num_classes, dtype=torch.long, device=priors.device)
        scores = priors.new_zeros(num_priors)
        bbox_targets = torch.zeros_like(priors)
        dist_targets = torch.zeros_like(priors)
        if len(gt_labels) == 0:
            return labels, scores, bbox_targets, dist_targets, 0
        result = self.assigner.assign(cls_preds.sigmoid(), priors, boxes, gt_bboxes.float(), gt_labels)
        pos = torch.nonzero(result.gt_inds > 0).squeeze(1)
        if len(pos):
            gt_index = result.gt_inds[pos] - 1
            bbox_targets[pos] = gt_bboxes[gt_index].float()
            dist_targets[pos] = bbox2distance(priors[pos, :2], bbox_targets[pos]) / priors[pos, 2:3]
            dist_targets = dist_targets.clamp(min=0, max=self.reg_max - 0.1)
            labels[pos] = gt_labels[gt_index]
            scores[pos] = result.max_overlaps[pos]
        return labels, scores, bbox_targets, dist_targets, len(pos)

    def loss_from_targets(self, cls_preds, reg_preds, boxes, targets: Targets):
        labels, label_scores, bbox_targets, dist_targets, num_pos = targets
        device = cls_preds.device
        num_samples = max(reduce_mean(torch.tensor(float(num_pos), device=device)).item(), 1.0)
        cls_preds = cls_preds.reshape(-1, self.num_classes)
        reg_preds = reg_preds.reshape(-1, 4 * (self.reg_max + 1))
        boxes = boxes.reshape(-1, 4)
        loss_qfl = self.qfl(cls_preds, (labels, label_scores), avg_factor=num_samples)
        pos = torch.nonzero((labels >= 0) & (labels < self.num_classes)).squeeze(1)
        if len(pos):
            weight = cls_preds[pos].detach().sigmoid().max(dim=1).values
            norm = max(reduce_mean(weight.sum()).item(), 1.0)
            loss_bbox = self.giou(boxes[pos], bbox_targets[pos], weight=weight, avg_factor=norm)
            loss_dfl = self.dfl(
                reg_preds[pos].reshape(-1, self.reg_max + 1),
                dist_targets[pos].reshape(-1),
                weight=weight[:, None].expand(-1, 4).reshape(-1),
                avg_factor=4.0 * norm,
            )
        else:
            # keep every process's graph identical (DDP) even without positives
            reduce_mean(torch.tensor(0.0, device=device))
            loss_bbox = reg_preds.sum() * 0
            loss_dfl = reg_preds.sum() * 0
        loss = loss_qfl + loss_bbox + loss_dfl
        return loss, {"loss_qfl": loss_qfl, "loss_bbox": loss_bbox, "loss_dfl": loss_dfl}
