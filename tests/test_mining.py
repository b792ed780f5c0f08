"""Detection-entropy mining on hand-made head outputs, with values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from nanodet.mining.uncertainty import aldd_scores, entropy_scores, uncertainty_scores


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def h(p: float) -> float:
    """Binary entropy in nats, written out independently of the code under test."""
    return -p * math.log(p) - (1 - p) * math.log(1 - p)


def level(points: list[tuple[float, ...]], width: int, extra_channels: int = 32) -> torch.Tensor:
    """A ``[1, C + 32, 1, W]`` map whose class channels hold the given probabilities per point
    (box channels random: they must not matter)."""
    cls = torch.tensor([[logit(p) for p in point] for point in points], dtype=torch.float32).T  # [C, W]
    box = torch.randn(extra_channels, width)
    return torch.cat((cls, box)).reshape(1, -1, 1, width)


def test_every_score_at_one_half_gives_c_ln2():
    levels = [torch.zeros(2, 3 + 32, 4, 4), torch.zeros(2, 3 + 32, 2, 2)]
    assert entropy_scores(levels, 3).tolist() == pytest.approx([3 * math.log(2)] * 2)


def test_top_k_candidates_by_their_best_class_across_levels():
    """Points A (0.5, 0.01), C (0.2, 0.2) on level 1 and B (0.9, 0.1) on level 2. The 2 points
    with the highest best-class score are B (0.9) and A (0.5); C (0.2) is left out:
    score = ((h(.5) + h(.01)) + (h(.9) + h(.1))) / 2 = (0.693147 + 0.056002 + 2 · 0.325083) / 2."""
    levels = [level([(0.5, 0.01), (0.2, 0.2)], 2), level([(0.9, 0.1)], 1)]
    expected = ((h(0.5) + h(0.01)) + (h(0.9) + h(0.1))) / 2
    assert expected == pytest.approx(0.6996575, abs=1e-6)
    assert entropy_scores(levels, 2, top_k=2).item() == pytest.approx(expected, abs=1e-5)
    # all three points (k larger than the number of points)
    every = ((h(0.5) + h(0.01)) + (h(0.9) + h(0.1)) + 2 * h(0.2)) / 3
    assert entropy_scores(levels, 2, top_k=100).item() == pytest.approx(every, abs=1e-5)


def test_confident_detections_score_below_uncertain_ones():
    confident = [level([(0.99, 0.01)] + [(0.01, 0.01)] * 3, 4)]
    unsure = [level([(0.55, 0.45)] + [(0.01, 0.01)] * 3, 4)]
    assert entropy_scores(confident, 2, top_k=1).item() == pytest.approx(2 * h(0.99), abs=1e-5)
    assert entropy_scores(unsure, 2, top_k=1).item() == pytest.approx(h(0.55) + h(0.45), abs=1e-5)
    assert entropy_scores(unsure, 2, top_k=1) > 10 * entropy_scores(confident, 2, top_k=1)


def test_batch_invariant_and_box_channels_ignored():
    torch.manual_seed(0)
    levels = [torch.randn(5, 4 + 32, 8, 8) * 3, torch.randn(5, 4 + 32, 4, 4) * 3]
    together = entropy_scores(levels, 4)
    alone = torch.cat([entropy_scores([lvl[i : i + 1] for lvl in levels], 4) for i in range(5)])
    assert torch.allclose(together, alone, atol=1e-6)
    scrambled = [torch.cat((lvl[:, :4], torch.randn_like(lvl[:, 4:])), dim=1) for lvl in levels]
    assert torch.equal(entropy_scores(scrambled, 4), together)
    assert torch.equal(uncertainty_scores("entropy", levels, 4, (64, 64)), together)


def test_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="not a model-based mining algorithm"):
        uncertainty_scores("random", [torch.zeros(1, 35, 2, 2)], 3, (16, 16))


def one_class_level(probabilities: torch.Tensor, extra_channels: int = 32) -> torch.Tensor:
    """A ``[1, 1 + 32, H, W]`` stride-8 level whose class channel holds ``probabilities``."""
    cls = torch.logit(probabilities.double()).float()[None]
    return torch.cat((cls, torch.randn(extra_channels, *probabilities.shape)))[None]


def test_aldd_score_of_one_odd_cell_hand_computed():
    """One class, one stride-8 level of 34×34 cells (input 272×272: the 1/8 resize is the
    identity). Every cell has p = 0.9 but cell (4, 4), which has p = 0.1.

    9×9 average pooling (stride 1, no padding) gives a 26×26 map; a window holding the odd
    cell has mean p = (0.1 + 80·0.9)/81 = 72.1/81 and mean entropy H(0.9) (H(0.1) = H(0.9)), so
    U = H(72.1/81) − H(0.9) = 0.346257 − 0.325083 = 0.021174; every other window gives 0. The
    windows holding (4, 4) start at rows/columns 0..4: all inside the first 13×13 block of the
    13×13 max pooling (stride 13: 2×2 blocks). Score = mean of the block maxima = U / 4 =
    0.0052935. (Pools of 3 and 32, or 5 and 2, give other numbers.)"""
    p = torch.full((34, 34), 0.9)
    p[4, 4] = 0.1
    u = h(72.1 / 81) - h(0.9)
    assert u / 4 == pytest.approx(0.0052935, abs=1e-7)
    score = aldd_scores([one_class_level(p)], 1, (272, 272)).item()
    assert score == pytest.approx(u / 4, rel=1e-3)


def test_aldd_reads_the_class_channels_only():
    torch.manual_seed(0)
    p = torch.rand(34, 34) * 0.8 + 0.1
    level = one_class_level(p)
    base = aldd_scores([level], 1, (272, 272))
    scrambled = torch.cat((level[:, :1], torch.randn_like(level[:, 1:])), dim=1)
    assert torch.equal(aldd_scores([scrambled], 1, (272, 272)), base)
    flat = torch.cat((torch.zeros_like(level[:, :1]), level[:, 1:]), dim=1)  # p = 0.5 everywhere
    assert aldd_scores([flat], 1, (272, 272)).item() == pytest.approx(0.0, abs=1e-6)
    assert base.item() > 0.01
