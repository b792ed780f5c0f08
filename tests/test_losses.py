"""Generalized Focal Loss family: values against hand computations, reductions, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from nanodet.model.box_ops import bbox2distance, bbox_overlaps, distance2bbox
from nanodet.model.losses import (
    DistributionFocalLoss,
    GIoULoss,
    QualityFocalLoss,
    weight_reduce_loss,
)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _bce(p: float, y: float) -> float:
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def _qfl_by_hand(logits: list[list[float]], labels: list[int], scores: list[float]) -> list[float]:
    """QFL written element by element: BCE(sigma, y) * |y - sigma|^2 summed over classes."""
    losses = []
    for row, label, score in zip(logits, labels, scores):
        total = 0.0
        for c, x in enumerate(row):
            p = _sigmoid(x)
            y = score if c == label else 0.0
            total += _bce(p, y) * abs(y - p) ** 2
        losses.append(total)
    return losses


def test_qfl_matches_hand_formula() -> None:
    logits = [[0.3, -1.2, 2.0], [-0.5, 0.1, -3.0], [1.5, 0.0, -0.7]]
    labels = [2, 0, 3]  # the last sample is background (label == num_classes)
    scores = [0.8, 0.35, 0.0]
    expected = _qfl_by_hand(logits, labels, scores)

    loss_fn = QualityFocalLoss(beta=2.0, loss_weight=1.0, reduction="none")
    got = loss_fn(torch.tensor(logits), (torch.tensor(labels), torch.tensor(scores)))
    assert got.tolist() == pytest.approx(expected, rel=1e-5)

    mean = QualityFocalLoss()(torch.tensor(logits), (torch.tensor(labels), torch.tensor(scores)))
    assert mean.item() == pytest.approx(sum(expected) / 3, rel=1e-5)


def test_qfl_avg_factor_weight_and_loss_weight() -> None:
    logits = torch.tensor([[0.3, -1.2], [-0.5, 0.1], [1.5, 0.0]])
    target = (torch.tensor([1, 0, 2]), torch.tensor([0.6, 0.9, 0.0]))
    per_sample = QualityFocalLoss(reduction="none")(logits, target)
    weight = torch.tensor([1.0, 0.5, 2.0])

    got = QualityFocalLoss(loss_weight=3.0)(logits, target, weight=weight, avg_factor=2.5)
    assert got.item() == pytest.approx(3.0 * (per_sample * weight).sum().item() / 2.5, rel=1e-6)

    summed = QualityFocalLoss(reduction="sum")(logits, target, weight=weight)
    assert summed.item() == pytest.approx((per_sample * weight).sum().item(), rel=1e-6)


def test_avg_factor_with_sum_is_rejected() -> None:
    with pytest.raises(ValueError):
        weight_reduce_loss(torch.ones(3), reduction="sum", avg_factor=2.0)


def test_qfl_is_near_zero_for_confident_correct_prediction() -> None:
    logits = torch.tensor([[-20.0, 20.0]])
    loss = QualityFocalLoss()(logits, (torch.tensor([1]), torch.tensor([1.0])))
    assert loss.item() < 1e-6


def test_dfl_is_interpolated_cross_entropy() -> None:
    logits = torch.tensor([[0.2, 1.0, -0.5, 0.3], [1.0, 0.0, 0.0, 2.0]])
    target = torch.tensor([1.25, 2.9])
    log_probs = torch.log_softmax(logits, dim=1)
    # 1.25 sits between bins 1 and 2 with weights 0.75 / 0.25; 2.9 between 2 and 3.
    expected = [
        -(0.75 * log_probs[0, 1] + 0.25 * log_probs[0, 2]).item(),
        -(0.1 * log_probs[1, 2] + 0.9 * log_probs[1, 3]).item(),
    ]
    got = DistributionFocalLoss(loss_weight=1.0, reduction="none")(logits, target)
    assert got.tolist() == pytest.approx(expected, rel=1e-5)

    default = DistributionFocalLoss()(logits, target)
    assert default.item() == pytest.approx(0.25 * sum(expected) / 2, rel=1e-5)


def test_dfl_weight_and_avg_factor() -> None:
    logits = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0.0, 1.5, 3.2, 6.8, 4.0, 2.5])
    weight = torch.tensor([0.0, 1.0, 0.5, 2.0, 1.0, 0.1])
    per_sample = DistributionFocalLoss(loss_weight=1.0, reduction="none")(logits, target)
    got = DistributionFocalLoss()(logits, target, weight=weight, avg_factor=4.0)
    assert got.item() == pytest.approx(0.25 * (per_sample * weight).sum().item() / 4.0, rel=1e-6)


def test_giou_loss_values() -> None:
    loss_fn = GIoULoss(loss_weight=1.0, reduction="none")
    box = torch.tensor([[1.0, 2.0, 5.0, 7.0]])
    assert loss_fn(box, box.clone()).item() == pytest.approx(0.0, abs=1e-6)

    # [0,0,2,2] vs [1,1,3,3]: intersection 1, union 7, enclosing box 9.
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    giou = 1 / 7 - (9 - 7) / 9
    assert loss_fn(pred, target).item() == pytest.approx(1 - giou, rel=1e-5)

    # Disjoint boxes: IoU 0, union 2, enclosing [0,0,3,1] of area 3.
    pred = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    target = torch.tensor([[2.0, 0.0, 3.0, 1.0]])
    assert loss_fn(pred, target).item() == pytest.approx(1 + 1 / 3, rel=1e-5)


def test_giou_loss_default_weight_and_reduction() -> None:
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0]])
    per_box = GIoULoss(loss_weight=1.0, reduction="none")(pred, target)
    weight = torch.tensor([0.5, 1.0])
    got = GIoULoss()(pred, target, weight=weight, avg_factor=0.5)
    assert got.item() == pytest.approx(2.0 * (per_box * weight).sum().item() / 0.5, rel=1e-6)


def test_giou_loss_without_positive_weight_is_graph_connected_zero() -> None:
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0]], requires_grad=True)
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    loss = GIoULoss()(pred, target, weight=torch.zeros(1))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_gradients_are_finite() -> None:
    gen = torch.Generator().manual_seed(1)
    cls_logits = (torch.randn(16, 5, generator=gen) * 5).requires_grad_()
    labels = torch.randint(0, 6, (16,), generator=gen)
    scores = torch.rand(16, generator=gen)
    QualityFocalLoss()(cls_logits, (labels, scores)).backward()

    dist_logits = (torch.randn(16, 8, generator=gen) * 5).requires_grad_()
    DistributionFocalLoss()(dist_logits, torch.rand(16, generator=gen) * 6.9).backward()

    points = torch.rand(16, 2, generator=gen) * 100
    distances = (torch.rand(16, 4, generator=gen) * 20).requires_grad_()
    pred = distance2bbox(points, distances)
    target = distance2bbox(points, torch.rand(16, 4, generator=gen) * 20 + 1)
    GIoULoss()(pred, target, weight=torch.rand(16, generator=gen)).backward()

    for tensor in (cls_logits, dist_logits, distances):
        assert torch.isfinite(tensor.grad).all()
        assert tensor.grad.abs().sum() > 0


def test_box_ops_round_trip_and_overlaps() -> None:
    points = torch.tensor([[5.0, 5.0], [20.0, 10.0]])
    boxes = torch.tensor([[0.0, 1.0, 10.0, 8.0], [12.0, 4.0, 30.0, 19.0]])
    distances = bbox2distance(points, boxes)
    assert torch.allclose(distance2bbox(points, distances), boxes)
    assert bbox2distance(points, boxes, max_dis=4.0).max().item() == pytest.approx(3.9)
    clipped = distance2bbox(points, distances, max_shape=(12, 25))
    assert clipped[1].tolist() == [12.0, 4.0, 25.0, 12.0]

    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 20.0, 20.0]])
    b = torch.tensor([[0.0, 0.0, 10.0, 20.0], [10.0, 10.0, 20.0, 20.0]])
    assert bbox_overlaps(a, b).tolist() == [[0.5, 0.0], [0.0, 1.0]]
    assert bbox_overlaps(a, b, is_aligned=True).tolist() == [0.5, 1.0]
    assert bbox_overlaps(a, torch.zeros(0, 4)).shape == (2, 0)
