"""A mining ranking whose top covers distinct content: near-duplicate candidates (frames of one
burst of video, say) are discounted, not dropped, so the top-K holds one of them and other
content, for every K.

1. **Embedding** (:func:`image_embeddings`), from the forward the scores already come from: the
   class-probability map of every pyramid level (sigmoid of the logits: where the model sees
   objects, not how far below zero its background logits sit, which varied between frames of one
   scene), less its own mean over the image (what is where, not how bright the frame is),
   average-pooled to a ``4 x 4`` grid; all levels and classes concatenated and projected
   to ``EMBED_DIMS`` (64) dimensions by a fixed random matrix (seeded: the same in every
   process), kept as float16 (128 bytes a candidate). Two frames of a scene give nearly the same
   maps, two scenes do not.
2. **Ranking** (:func:`diverse_scores`), once over every candidate's score and embedding: the
   embeddings are centred on their mean and scaled to unit length, the candidates walked from
   the highest score down. A candidate whose cosine similarity to an earlier *group leader*
   reaches ``SIMILAR`` (0.7) joins that (most similar) leader's group; otherwise it leads a group
   of its own. The k-th member of a group after its leader has its score multiplied by
   ``DISCOUNT ** k`` (0.5: the second frame of a burst counts half, the third a quarter...).
   Sorting by the discounted score (equal ones: fewer copies before it first, so that bursts
   scored 0 spread too) gives the ranking, and the discounted score is what ``result.tsv``
   lists, so it never increases down the file.
3. **What is labelled already** (optional ``known`` embeddings: the model's training images,
   through the same model) is grouped first by the same rule; a candidate joining such a group
   counts its labelled members as copies ranked before it. Without it the frames of a scene
   labelled last round lead their groups again.

Cost: leaders are compared in blocks of ``BLOCK`` candidates (a ``BLOCK x leaders`` matrix, never
``N x N``), at most ``MAX_GROUPS`` leaders of candidates and as many of labelled images:
O((N + M) x MAX_GROUPS x 64) time, O((N + M) x 64) memory. After ``MAX_GROUPS`` distinct groups
(far below the top the platform labels) a candidate like none of them keeps its score.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

EMBED_GRID = 4  # each level's class map pooled to EMBED_GRID x EMBED_GRID cells
EMBED_DIMS = 64
# cosine similarity (centred embeddings) from which a candidate joins a leader's group, chosen on a
# bursty pool of its own (bench/mining_diversity.py --separation; not the active-learning benchmark's
# pool) as the one that joins the most frames of one scene while joining no more pairs of different
# scenes than the logit maps did at 0.85 (1.7 %). Through a weak model (a round 0 of
# bench/active_learning.py, AP50 0.16) 95 % of the pairs of frames of one scene reach it, 1.3 % of the
# pairs of different scenes (logit maps: 70 % and 1.7 %)
SIMILAR = 0.7
DISCOUNT = 0.5  # score factor per earlier member of the same group
MAX_GROUPS = 4096
BLOCK = 256
PROJECTION_SEED = 20240601


@lru_cache(maxsize=8)
def _projection(inputs: int, dims: int) -> torch.Tensor:
    """A fixed ``[inputs, dims]`` Gaussian matrix (the same in every process and run)."""
    generator = torch.Generator().manual_seed(PROJECTION_SEED + inputs)
    return torch.randn(inputs, dims, generator=generator) / dims**0.5


def image_embeddings(levels: list[torch.Tensor], num_classes: int, dims: int = EMBED_DIMS) -> np.ndarray:
    """``[N, dims]`` float16 embeddings of a batch from its per-level maps ``[N, C + ..., H_l, W_l]``
    (the class channels are read; each image alone, so the batch does not change them)."""
    pooled = []
    for lvl in levels:
        maps = lvl[:, :num_classes].float().sigmoid()
        maps = maps - maps.mean(dim=(2, 3), keepdim=True)
        pooled.append(F.adaptive_avg_pool2d(maps, EMBED_GRID).flatten(1))
    features = torch.cat(pooled, dim=1).cpu()
    return (features @ _projection(features.shape[1], dims)).to(torch.float16).numpy()


def _centre(embeddings: np.ndarray) -> np.ndarray:
    """The mean embedding (float64, summed a block at a time: no float32 copy of the whole set)."""
    total = np.zeros(embeddings.shape[1], dtype=np.float64)
    for start in range(0, len(embeddings), 16 * BLOCK):
        total += embeddings[start : start + 16 * BLOCK].astype(np.float64).sum(axis=0)
    return total / max(len(embeddings), 1)


def _unit(rows: np.ndarray, centre: np.ndarray) -> np.ndarray:
    vectors = (rows.astype(np.float64) - centre).astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def group_copies(
    scores: np.ndarray,
    embeddings: np.ndarray,
    known: np.ndarray | None = None,
    similar: float = SIMILAR,
    max_groups: int = MAX_GROUPS,
    block: int = BLOCK,
) -> np.ndarray:
    """For each candidate (``scores`` ``[N]``, ``embeddings`` ``[N, D]``), how many members of its
    group rank before it by score (ties by position): 0 for a group's leader and for a candidate
    in no group. See the module docstring for the rule.

    ``known`` (``[M, D]``, optional): embeddings of images labelled already (the training set of
    the model that scored the candidates). They are grouped first, by the same rule, in their
    order (at most ``max_groups`` groups of their own), and their groups count their members: a
    candidate like ``k`` labelled images starts at ``k`` copies, so a scene labelled in an earlier
    round does not lead the ranking again."""
    scores = np.asarray(scores, dtype=np.float64)
    if embeddings.shape[0] != len(scores):
        raise ValueError(f"{len(scores)} scores but {embeddings.shape[0]} embeddings")
    known = np.zeros((0, embeddings.shape[1]), embeddings.dtype) if known is None else known
    if known.ndim != 2 or known.shape[1] != embeddings.shape[1]:
        raise ValueError(f"known embeddings of shape {known.shape}, candidates' {embeddings.shape}")
    centre = _centre(embeddings)
    known_groups, candidate_groups = min(max_groups, len(known)), min(max_groups, len(scores))
    leaders = np.empty((known_groups + candidate_groups, embeddings.shape[1]), dtype=np.float32)
    members = np.zeros(len(leaders), dtype=np.int64)
    walk = _GroupWalk(leaders, members, similar)
    for start in range(0, len(known), block):
        walk.add(_unit(known[start : start + block], centre), limit=known_groups)
    copies = np.zeros(len(scores), dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    for start in range(0, len(order), block):
        rows = order[start : start + block]
        copies[rows] = walk.add(_unit(embeddings[rows], centre), limit=len(leaders))
    return copies


class _GroupWalk:
    """The greedy grouping, a block of unit vectors at a time: each joins the group of its most
    similar leader when that similarity reaches ``similar``, else leads a new group while fewer
    than ``limit`` exist. ``leaders`` and ``members`` are filled in place."""

    def __init__(self, leaders: np.ndarray, members: np.ndarray, similar: float) -> None:
        self.leaders, self.members, self.similar, self.count = leaders, members, similar, 0

    def add(self, vectors: np.ndarray, limit: int) -> np.ndarray:
        """The members each vector's group had before it joined (0: it leads one, or none)."""
        copies = np.zeros(len(vectors), dtype=np.int64)
        before = self.count
        if before:
            sims = vectors @ self.leaders[:before].T
            best_before, group_before = sims.max(axis=1), sims.argmax(axis=1)
        within = vectors @ vectors.T
        new_rows: list[int] = []  # positions in this block that lead a group, and their groups
        new_groups: list[int] = []
        for k in range(len(vectors)):
            best, group = (float(best_before[k]), int(group_before[k])) if before else (-np.inf, -1)
            if new_rows:
                near = within[k, new_rows]
                j = int(near.argmax())
                if near[j] > best:
                    best, group = float(near[j]), new_groups[j]
            if best >= self.similar:
                copies[k] = self.members[group]
                self.members[group] += 1
            elif self.count < limit:
                self.leaders[self.count] = vectors[k]
                self.members[self.count] = 1
                new_rows.append(k)
                new_groups.append(self.count)
                self.count += 1
        return copies


def discounted(scores: np.ndarray, copies: np.ndarray, discount: float = DISCOUNT) -> np.ndarray:
    """Each score times ``discount ** copies`` (float64); a negative score (ALDD's difference of
    entropies rounded below 0) is divided by it instead, so that it moves down too."""
    scores = np.asarray(scores, dtype=np.float64)
    factor = np.power(discount, copies.astype(np.float64))
    return np.where(scores >= 0, scores * factor, scores / factor)


def diverse_scores(
    scores: np.ndarray, embeddings: np.ndarray, known: np.ndarray | None = None, discount: float = DISCOUNT, **grouping
) -> np.ndarray:
    """The discounted scores (float64, ``[N]``): :func:`group_copies` then :func:`discounted`."""
    return discounted(scores, group_copies(scores, embeddings, known, **grouping), discount)


def diverse_order(
    scores: np.ndarray, embeddings: np.ndarray, known: np.ndarray | None = None, discount: float = DISCOUNT, **grouping
) -> tuple[np.ndarray, np.ndarray]:
    """(positions from first to last, their discounted scores): by discounted score, high to
    low; among equal ones (scores of 0, say) the fewer copies before it, then the position."""
    copies = group_copies(scores, embeddings, known, **grouping)
    adjusted = discounted(scores, copies, discount)
    order = np.lexsort((np.arange(len(adjusted)), copies, -adjusted))
    return order, adjusted[order]
