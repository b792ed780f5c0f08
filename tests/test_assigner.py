"""Dynamic soft label assignment: behaviour on hand-made scenes and a dense reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nanodet.model.assigner import DynamicSoftLabelAssigner
from nanodet.model.box_ops import bbox_overlaps


def _grid_priors(width: int, height: int, stride: int) -> torch.Tensor:
    """Priors ``(cx, cy, stride, stride)`` at the cell centres of one level."""
    ys, xs = torch.meshgrid(
        torch.arange(height // stride, dtype=torch.float32) * stride + stride / 2,
        torch.arange(width // stride, dtype=torch.float32) * stride + stride / 2,
        indexing="ij",
    )
    strides = torch.full_like(xs.flatten(), float(stride))
    return torch.stack([xs.flatten(), ys.flatten(), strides, strides], dim=1)


def _random_scene(seed: int, num_classes: int = 4):
    gen = torch.Generator().manual_seed(seed)
    priors = _grid_priors(128, 96, 8)
    n = priors.size(0)
    gt_bboxes = torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 30.0, 110.0, 90.0], [70.0, 5.0, 100.0, 40.0]])
    gt_labels = torch.tensor([0, 2, 2])
    # Predictions: boxes around each prior with random extents, random class scores.
    extents = torch.rand(n, 4, generator=gen) * 40 + 2
    decoded = torch.cat([priors[:, :2] - extents[:, :2], priors[:, :2] + extents[:, 2:]], dim=1)
    scores = torch.rand(n, num_classes, generator=gen)
    return scores, priors, decoded, gt_bboxes, gt_labels


def _reference_assign(scores, priors, decoded, gt_bboxes, gt_labels, topk=13, iou_factor=3.0):
    """The algorithm stated densely: [V, G, C] soft-label BCE, a loop of top-k per gt."""
    centers = priors[:, :2]
    inside = (
        (centers[:, None, 0] > gt_bboxes[None, :, 0])
        & (centers[:, None, 1] > gt_bboxes[None, :, 1])
        & (centers[:, None, 0] < gt_bboxes[None, :, 2])
        & (centers[:, None, 1] < gt_bboxes[None, :, 3])
    )
    valid = inside.any(dim=1)
    ious = bbox_overlaps(decoded[valid], gt_bboxes)
    num_valid, num_gt = ious.shape
    onehot = F.one_hot(gt_labels, scores.size(1)).float()[None].expand(num_valid, -1, -1)
    soft = onehot * ious[..., None]
    p = scores[valid][:, None, :].expand(-1, num_gt, -1)
    cls_cost = (F.binary_cross_entropy(p, soft, reduction="none") * (soft - p).abs() ** 2).sum(-1)
    cost = cls_cost + iou_factor * -torch.log(ious + 1e-7)

    matching = torch.zeros_like(cost)
    ks = torch.topk(ious, min(topk, num_valid), dim=0).values.sum(0).int().clamp(min=1)
    for g in range(num_gt):
        matching[torch.topk(cost[:, g], int(ks[g]), largest=False).indices, g] = 1
    for v in range(num_valid):
        if matching[v].sum() > 1:
            matching[v] = 0
            matching[v, cost[v].argmin()] = 1

    gt_inds = torch.zeros(priors.size(0), dtype=torch.long)
    overlaps = torch.zeros(priors.size(0))
    valid_idx = torch.nonzero(valid).squeeze(1)
    for v in range(num_valid):
        if matching[v].any():
            g = int(matching[v].argmax())
            gt_inds[valid_idx[v]] = g + 1
            overlaps[valid_idx[v]] = ious[v, g]
    return gt_inds, overlaps


def test_matches_dense_reference() -> None:
    assigner = DynamicSoftLabelAssigner(topk=13, iou_factor=3.0)
    for seed in range(5):
        scene = _random_scene(seed)
        result = assigner.assign(*scene)
        ref_inds, ref_overlaps = _reference_assign(*scene)
        assert torch.equal(result.gt_inds, ref_inds)
        assert torch.allclose(result.max_overlaps, ref_overlaps)
        expected_labels = torch.where(ref_inds > 0, scene[4][(ref_inds - 1).clamp(min=0)], -1)
        assert torch.equal(result.labels, expected_labels)
        assert result.num_gts == 3


def test_perfect_prediction_at_gt_centre_is_assigned() -> None:
    priors = _grid_priors(64, 64, 8)
    gt_bboxes = torch.tensor([[16.0, 16.0, 48.0, 48.0]])
    gt_labels = torch.tensor([1])
    # Every prior predicts a small box around itself with low scores ...
    decoded = torch.cat([priors[:, :2] - 2, priors[:, :2] + 2], dim=1)
    scores = torch.full((priors.size(0), 3), 0.05)
    # ... except the one nearest the gt centre, which predicts the gt exactly.
    centre = torch.argmin(((priors[:, :2] - 32.0) ** 2).sum(1))
    decoded[centre] = gt_bboxes[0]
    scores[centre, 1] = 0.9

    result = DynamicSoftLabelAssigner().assign(scores, priors, decoded, gt_bboxes, gt_labels)
    assert result.gt_inds[centre] == 1
    assert result.labels[centre] == 1
    assert result.max_overlaps[centre].item() == 1.0
    assert (result.gt_inds > 0).sum() >= 1


def test_priors_outside_boxes_stay_negative_and_single_assignment() -> None:
    scores, priors, decoded, gt_bboxes, gt_labels = _random_scene(7)
    result = DynamicSoftLabelAssigner().assign(scores, priors, decoded, gt_bboxes, gt_labels)
    centers = priors[:, :2]
    after_lt = centers[:, None, :] > gt_bboxes[None, :, :2]
    before_rb = centers[:, None, :] < gt_bboxes[None, :, 2:]
    inside_any = (after_lt & before_rb).all(-1).any(-1)
    assert (result.gt_inds[~inside_any] == 0).all()
    assert (result.labels[~inside_any] == -1).all()
    assert (result.max_overlaps[~inside_any] == 0).all()
    # gt_inds holds one gt per prior; every gt gets at least one positive here.
    assert result.gt_inds.min() >= 0 and result.gt_inds.max() <= 3
    assert set(result.gt_inds[result.gt_inds > 0].tolist()) == {1, 2, 3}
    positive = result.gt_inds > 0
    assert torch.equal(result.labels[positive], gt_labels[result.gt_inds[positive] - 1])
    assert (result.labels[~positive] == -1).all()


def test_zero_gts_gives_all_negative() -> None:
    scores, priors, decoded, _, _ = _random_scene(0)
    result = DynamicSoftLabelAssigner().assign(
        scores, priors, decoded, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    )
    assert result.num_gts == 0
    assert (result.gt_inds == 0).all()
    assert (result.labels == -1).all()
    assert (result.max_overlaps == 0).all()
    assert result.gt_inds.shape == (priors.size(0),)


def test_no_prior_inside_any_box() -> None:
    priors = _grid_priors(64, 64, 16)  # centres at 8, 24, 40, 56
    gt_bboxes = torch.tensor([[9.0, 9.0, 20.0, 20.0]])
    decoded = torch.cat([priors[:, :2] - 4, priors[:, :2] + 4], dim=1)
    result = DynamicSoftLabelAssigner().assign(
        torch.rand(priors.size(0), 2), priors, decoded, gt_bboxes, torch.tensor([0])
    )
    assert result.num_gts == 1
    assert (result.gt_inds == 0).all()
    assert (result.labels == -1).all()


def test_ignore_regions_mark_priors_ignored() -> None:
    scores, priors, decoded, gt_bboxes, gt_labels = _random_scene(3)
    ignore = torch.tensor([[-50.0, -50.0, 64.0, 200.0]])
    assigner = DynamicSoftLabelAssigner(ignore_iof_thr=0.5)
    result = assigner.assign(scores, priors, decoded, gt_bboxes, gt_labels, ignore)
    inside_ignore = decoded[:, 2] <= 64.0  # predicted box entirely within the region
    clear_of_ignore = decoded[:, 0] >= 64.0
    assert (result.gt_inds[inside_ignore] == -1).all()
    assert (result.gt_inds[clear_of_ignore] >= 0).all()

    default = DynamicSoftLabelAssigner()  # ignoring is off by default
    kept = default.assign(scores, priors, decoded, gt_bboxes, gt_labels, ignore)
    assert (kept.gt_inds >= 0).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    scene = _random_scene(2)
    cpu = DynamicSoftLabelAssigner().assign(*scene)
    gpu = DynamicSoftLabelAssigner().assign(*(t.cuda() for t in scene))
    assert gpu.gt_inds.is_cuda
    assert torch.equal(gpu.gt_inds.cpu(), cpu.gt_inds)
    assert torch.allclose(gpu.max_overlaps.cpu(), cpu.max_overlaps, atol=1e-6)
