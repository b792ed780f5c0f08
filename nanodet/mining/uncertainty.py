"""Uncertainty for active learning on NanoDet's classification maps: one score per image,
higher = more worth labelling.

ALDD (Aghdam et al., "Active Learning for Deep Detection Neural Networks", ICCV 2019), the
default. Class probabilities of every pyramid level are resized to 1/8 of the input and stacked.
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
ENTROPY_TOP_K = 100  # the official detector keeps at most 100 boxes per image


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Σ_c −p log p − (1−p) log(1−p) over the channel axis, keeping it (``[N, 1, H, W]``)."""
    return F.binary_cross_entropy(p, p, reduction="none").sum(dim=1, keepdim=True)


def class_probabilities(levels: list[torch.Tensor], num_classes: int, input_hw: tuple[int, int]) -> torch.Tensor:
    """Sigmoid class maps of all levels at 1/8 of the input size, concatenated on channels."""
    size = (input_hw[0] // 8, input_hw[1] // 8)
    maps = [
        F.interpolate(lvl[:, :num_classes].float(), size=size, mode="bilinear", align_corners=False) for lvl in levels
    ]
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


def entropy_scores(levels: list[torch.Tensor], num_classes: int, top_k: int = ENTROPY_TOP_K) -> torch.Tensor:
    """Detection entropy, one score per image (``[N]``); higher = more worth labelling.

    1. Class scores: the sigmoid of the ``num_classes`` class logits at every prior point of
       every pyramid level (``[N, P, C]``, the scores the detector's post-processing ranks).
    2. Candidates: the ``top_k`` points (100, or all when fewer) with the highest maximum class
       score: the detections the model would consider before NMS, wherever it looks.
    3. Per candidate: binary entropy of each class score, −p ln p − (1−p) ln(1−p), summed over
       the classes (sigmoid classes are independent yes/no questions: 0 for a score of 0 or 1,
       ln 2 at 0.5).
    4. Image score: the mean over the candidates.

    An image of confident detections and confident background scores low; an image whose best
    candidates hover near 0.5, or split between classes, scores high. Batch-independent.
    """
    scores = torch.cat([lvl[:, :num_classes].float().flatten(2) for lvl in levels], dim=2).sigmoid()  # [N, C, P]
    k = min(top_k, scores.shape[2])
    top = scores.amax(dim=1).topk(k, dim=1).indices  # [N, k]
    candidates = scores.gather(2, top.unsqueeze(1).expand(-1, scores.shape[1], -1))  # [N, C, k]
    return binary_entropy(candidates).mean(dim=(1, 2))


MINING_ALGORITHMS = ("aldd", "entropy", "random")


def uncertainty_scores(
    algorithm: str, levels: list[torch.Tensor], num_classes: int, input_hw: tuple[int, int]
) -> torch.Tensor:
    """The scores of a model-based algorithm (``aldd`` or ``entropy``) for a batch."""
    if algorithm == "aldd":
        return aldd_scores(levels, num_classes, input_hw)
    if algorithm == "entropy":
        return entropy_scores(levels, num_classes)
    raise ValueError(f"{algorithm!r} is not a model-based mining algorithm (aldd, entropy)")
