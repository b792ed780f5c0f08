"""NMS against a plain-Python greedy loop (the definition), index for index: with OpenCV's C++
kernel (the CPU default) and with the pure-PyTorch blocks (CUDA tensors, inverted boxes)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from nanodet.ops import opencv_nms
from nanodet.ops.nms import batched_nms, multiclass_nms, nms

nms_module = importlib.import_module("nanodet.ops.nms")


@pytest.fixture(autouse=True, params=["opencv", "torch"])
def kernel(request, monkeypatch):
    """Every test runs with both kernels: "torch" takes OpenCV's away."""
    if request.param == "torch":
        monkeypatch.setattr(nms_module, "_nms_opencv", lambda *args: None)
        monkeypatch.setattr(nms_module, "_batched_nms_opencv", lambda *args: None)
    return request.param


def test_opencv_runs_cpu_boxes_and_leaves_inverted_ones_to_torch(kernel, monkeypatch):
    """OpenCV's kernel takes CPU boxes and declines inverted ones; whichever kernel runs, nms()
    keeps the same boxes, and the pure-PyTorch blocks run exactly where OpenCV does not."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    inverted = boxes[:, [2, 3, 0, 1]]
    scores = torch.tensor([0.9, 0.8, 0.7])
    blocks: list[int] = []  # the boxes each call of the PyTorch blocks got
    real_blocks = nms_module._nms_sorted
    monkeypatch.setattr(nms_module, "_nms_sorted", lambda b, thr: blocks.append(len(b)) or real_blocks(b, thr))
    if kernel == "opencv":
        assert nms_module._nms_opencv(boxes, torch.tensor([0, 1, 2]), 0.5).tolist() == [0, 2]
        assert nms_module._nms_opencv(inverted, torch.tensor([0, 1, 2]), 0.5) is None
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]  # box 1 overlaps box 0 (IoU 0.81)
    assert blocks == ([] if kernel == "opencv" else [3])
    assert nms(inverted, scores, 0.5).tolist() == [0, 1, 2]  # torch's rule: negative areas, IoU <= 0
    assert blocks == ([3] if kernel == "opencv" else [3, 3])


def reference_nms(
    boxes: list[list[float]], scores: list[float], thr: float, labels: list[int] | None = None
) -> list[int]:
    """Textbook greedy NMS; stable order on equal scores; only same-label boxes suppress."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    labels = labels or [0] * len(scores)
    kept: list[int] = []
    for i in order:
        xi1, yi1, xi2, yi2 = boxes[i]
        area_i = (xi2 - xi1) * (yi2 - yi1)
        suppressed = False
        for k in kept:
            if labels[k] != labels[i]:
                continue
            xk1, yk1, xk2, yk2 = boxes[k]
            w = max(0.0, min(xi2, xk2) - max(xi1, xk1))
            h = max(0.0, min(yi2, yk2) - max(yi1, yk1))
            inter = w * h
            union = (xk2 - xk1) * (yk2 - yk1) + area_i - inter
            if union > 0 and inter / union > thr:
                suppressed = True
                break
        if not suppressed:
            kept.append(i)
    return kept


def random_boxes(gen: torch.Generator, n: int, clusters: int, integer: bool) -> torch.Tensor:
    """Boxes gathered around a few centres so that many overlap heavily."""
    centres = torch.rand(clusters, 2, generator=gen, dtype=torch.float64) * 200
    pick = torch.randint(0, clusters, (n,), generator=gen)
    xy = centres[pick] + torch.randn(n, 2, generator=gen, dtype=torch.float64) * 6
    wh = 10 + torch.rand(n, 2, generator=gen, dtype=torch.float64) * 40
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)
    return boxes.round() if integer else boxes


CASES = [
    # (n, clusters, integer coordinates, number of distinct score values: ties when small)
    (0, 1, False, 10),
    (1, 1, False, 10),
    (2, 1, True, 1),
    (30, 2, True, 3),
    (200, 5, False, 1000),
    (300, 3, True, 4),
    (2500, 40, False, 50),  # more than one block of the blocked implementation
]


@pytest.mark.parametrize("n,clusters,integer,levels", CASES)
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.65])
def test_nms_matches_greedy_reference(n: int, clusters: int, integer: bool, levels: int, thr: float) -> None:
    gen = torch.Generator().manual_seed(n * 7 + clusters)
    boxes = random_boxes(gen, n, clusters, integer)
    scores = torch.randint(0, levels, (n,), generator=gen).double() / levels
    keep = nms(boxes, scores, thr)
    assert keep.dtype == torch.long
    assert keep.tolist() == reference_nms(boxes.tolist(), scores.tolist(), thr)


@pytest.mark.parametrize("n,clusters,integer,levels", CASES)
@pytest.mark.parametrize("num_labels", [4, 60])  # 60: many labels with a single box
def test_batched_nms_matches_per_label_reference(
    n: int, clusters: int, integer: bool, levels: int, num_labels: int
) -> None:
    gen = torch.Generator().manual_seed(n * 3 + 1)
    boxes = random_boxes(gen, n, clusters, integer)
    scores = torch.randint(0, levels, (n,), generator=gen).double() / levels
    labels = torch.randint(0, num_labels, (n,), generator=gen)
    keep = batched_nms(boxes, scores, labels, 0.5)
    assert keep.tolist() == reference_nms(boxes.tolist(), scores.tolist(), 0.5, labels.tolist())


def test_nms_float32_and_identical_boxes() -> None:
    boxes = torch.tensor([[0, 0, 10, 10]] * 4 + [[20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.5, 0.9, 0.9, 0.1, 0.2])
    assert nms(boxes, scores, 0.5).tolist() == [1, 4]


def test_iou_equal_to_threshold_is_kept() -> None:
    # IoU of these two boxes is exactly 1/3: suppression needs IoU strictly above.
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 3.0, 1.0]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    assert nms(boxes, scores, 1 / 3).tolist() == [0, 1]
    assert nms(boxes, scores, 0.33).tolist() == [0]


def test_multiclass_nms_semantics() -> None:
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # box 0: candidate for class 0 and class 2
            [1.0, 1.0, 10.0, 10.0],  # box 1: overlaps box 0 (IoU 0.81)
            [50.0, 50.0, 60.0, 60.0],  # box 2: alone
            [70.0, 70.0, 80.0, 80.0],  # box 3: all scores under the threshold
        ]
    )
    scores = torch.tensor(
        [
            [0.9, 0.0, 0.6],
            [0.8, 0.0, 0.7],
            [0.0, 0.3, 0.0],
            [0.04, 0.02, 0.01],
        ]
    )
    dets, labels = multiclass_nms(boxes, scores, score_thr=0.05, iou_thr=0.6, max_num=100)
    # box 1 / class 0 is suppressed by box 0 / class 0; box 0 / class 2 by box 1 / class 2.
    assert labels.tolist() == [0, 2, 1]
    assert labels.dtype == torch.long
    expected = torch.tensor([[0, 0, 10, 10, 0.9], [1, 1, 10, 10, 0.7], [50, 50, 60, 60, 0.3]], dtype=torch.float32)
    torch.testing.assert_close(dets, expected)

    dets2, labels2 = multiclass_nms(boxes, scores, score_thr=0.05, iou_thr=0.6, max_num=2)
    assert labels2.tolist() == [0, 2]
    torch.testing.assert_close(dets2, expected[:2])

    # With a high IoU threshold nothing is suppressed: box 0 is reported for two classes.
    dets3, labels3 = multiclass_nms(boxes, scores, score_thr=0.5, iou_thr=0.9, max_num=0)
    assert labels3.tolist() == [0, 0, 2, 2]
    assert dets3[:, 4].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])


def test_multiclass_nms_empty() -> None:
    boxes = torch.rand(5, 4)
    dets, labels = multiclass_nms(boxes, torch.zeros(5, 3), 0.05, 0.6, 100)
    assert dets.shape == (0, 5) and dets.dtype == torch.float32
    assert labels.shape == (0,) and labels.dtype == torch.long
    dets, labels = multiclass_nms(torch.zeros(0, 4), torch.zeros(0, 3), 0.05, 0.6, 100)
    assert dets.shape == (0, 5) and labels.shape == (0,)


@pytest.mark.parametrize("seed, top_k, inverted", [(0, 1000, False), (1, 40, False), (2, 1000, True), (3, 0, False)])
def test_numpy_multiclass_nms_equals_the_tensor_one(kernel, monkeypatch, seed: int, top_k: int, inverted: bool) -> None:
    """The NumPy path (every CPU predictor) gives the tensor path's detections array for array:
    tied scores, the pre-NMS top-k cut, and inverted boxes (left to the PyTorch blocks)."""
    if kernel == "torch":
        monkeypatch.setattr(opencv_nms, "opencv_boxes", lambda boxes: None)
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 300, (500, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 80, (500, 2))], axis=1).astype(np.float32)
    if inverted:
        boxes[::7] = boxes[::7][:, [2, 3, 0, 1]]
    scores = (rng.uniform(0, 1, (500, 8)) ** 6).round(3).astype(np.float32)  # sparse, with ties
    want_dets, want_labels = multiclass_nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.05, 0.6, 100, top_k)
    dets, labels = opencv_nms.multiclass_nms(boxes, scores, 0.05, 0.6, 100, top_k)
    assert len(dets) > 20 and dets.dtype == np.float32 and labels.dtype == np.int64
    assert np.array_equal(dets, want_dets.numpy()) and np.array_equal(labels, want_labels.numpy())
    empty_dets, empty_labels = opencv_nms.multiclass_nms(boxes, np.zeros_like(scores), 0.05, 0.6, 100)
    assert empty_dets.shape == (0, 5) and empty_labels.shape == (0,)
