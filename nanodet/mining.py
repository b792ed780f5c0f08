"""Uncertainty for active learning: ALDD (Aghdam et al., "Active Learning for Deep Detection
Neural Networks", ICCV 2019) on NanoDet's classification maps.

Class probabilities of every pyramid level are resized to 1/8 of the input and stacked.
Per pixel, binary entropy summed over classes measures uncertainty; ALDD compares the
entropy of the *locally averaged* prediction with the *average of local* entropies: their
difference (always ≥ 0) is large where neighbouring cells disagree, i.e. where the model
is unstable. The image score is the mean of the region-wise maxima of that map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AVG_POOL = 9
MAX_POOL = 13


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Σ_c −p log p − (1−p) log(1−p) over the channel axis, keeping it (``[N, 1, H, W]``)."""
    return F.binary_cross_entropy(p, p, reduction="none").sum(dim=1, keepdim=True)


def class_probabilities(levels: list[torch.Tensor], num_classes: int, input_hw: tuple[int, int]) -> torch.Tensor:
    """Sigmoid class maps of all levels at 1/8 of the input size, concatenated on channels."""
    size = (input_hw[0] // 8, input_hw[1] // 8)
    maps = [F.interpolate(lvl[:, :num_classes].float(), size=size, mode="bilinear", align_corners=False)
            for lvl in levels]
    return torch.cat(maps, dim=1).sigmoid()


def aldd_scores(levels: list[torch.Tensor], num_classes: int, input_hw: tuple[int, int]) -> torch.Tensor:
    """One score per image (``[N]``); higher = more worth labelling."""
    p = class_probabilities(levels, num_classes, input_hw)
    k_avg = min(AVG_POOL, p.shape[2], p.shape[3])
    mean_of_entropy = F.avg_pool2d(binary_entropy(p), k_avg, stride=1)
    entropy_of_mean = binary_entropy(F.avg_pool2d(p, k_avg, stride=1))
    disagreement = entropy_of_mean - mean_of_entropy
    k_max = min(MAX_POOL, disagreement.shape[2], disagreement.shape[3])
    return F.max_pool2d(disagreement, k_max, stride=k_max).mean(dim=(1, 2, 3))
