"""The diversity ranking of mining (nanodet/mining/diversity.py): near-duplicates discounted, not
dropped; the same ranking whatever the block size; bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nanodet.mining.diversity import DISCOUNT, EMBED_DIMS, SIMILAR, diverse_order, diverse_scores, image_embeddings


def scene_levels(seed: int, classes: int = 3, shift: int = 0, noise: float = 0.0) -> list[torch.Tensor]:
    """Class-logit maps of one image on four levels (16x16 ... 2x2), as forward_levels gives them:
    smooth over the image (a random 4x4 pattern resized to 64x64, mostly background around -4),
    pooled to each level. ``shift`` moves the image that many 64ths right and down (a frame a
    few pixels later); ``noise`` adds that much Gaussian noise to the logits."""
    gen = torch.Generator().manual_seed(seed)
    field = F.interpolate(torch.randn(1, classes, 4, 4, generator=gen) * 2 - 4, size=(64, 64), mode="bilinear")
    if shift:
        field = F.pad(field, (shift, 0, shift, 0), mode="replicate")[:, :, :64, :64]
    noisy = torch.Generator().manual_seed(seed * 1000 + shift + 1)
    sizes = (16, 8, 4, 2)
    return [F.avg_pool2d(field, 64 // s) + noise * torch.randn(1, classes, s, s, generator=noisy) for s in sizes]


def batch_of(images: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    return [torch.cat(level) for level in zip(*images)]


def reference_scores(scores, embeddings, similar, discount, max_groups):
    """The rule written out candidate by candidate (O(N^2), independent of the block code)."""
    vectors = embeddings.astype(np.float64)
    vectors = vectors - vectors.mean(axis=0)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    leaders, members = [], []
    adjusted = np.array(scores, dtype=np.float64)
    for i in sorted(range(len(scores)), key=lambda k: (-scores[k], k)):
        sims = [float(vectors[i] @ vectors[j]) for j in leaders]
        if sims and max(sims) >= similar:
            g = int(np.argmax(sims))
            adjusted[i] *= discount ** members[g]
            members[g] += 1
        elif len(leaders) < max_groups:
            leaders.append(i)
            members.append(1)
    return adjusted


def test_a_burst_of_identical_images_puts_one_of_them_in_the_top_k():
    """Six identical frames score highest (1.0); six other scenes score 0.9 down to 0.65. Plain
    ranking: the top 6 are the six copies. Diversity ranking: the top 7 holds one copy and the
    six other scenes; the copies follow at 1/2, 1/4, ... of their score."""
    burst = scene_levels(100)
    others = [scene_levels(seed) for seed in range(6)]
    embeddings = image_embeddings(batch_of([burst] * 6 + others), 3)
    assert embeddings.shape == (12, EMBED_DIMS) and embeddings.dtype == np.float16
    scores = np.array([1.0] * 6 + [0.9, 0.85, 0.8, 0.75, 0.7, 0.65])

    assert set(np.argsort(-scores, kind="stable")[:6].tolist()) == set(range(6))
    order, ranked = diverse_order(scores, embeddings)
    top = order[:7].tolist()
    assert sum(i < 6 for i in top) == 1 and top[0] == 0
    assert set(top[1:]) == set(range(6, 12))
    assert order[7:].tolist() == [1, 2, 3, 4, 5]
    assert ranked.tolist() == pytest.approx([1.0, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.5, 0.25, 0.125, 0.0625, 0.03125])
    assert all(a >= b for a, b in zip(ranked, ranked[1:]))


def test_jittered_frames_are_grouped_distinct_scenes_are_not():
    """Frames of a scene (maps shifted a cell and re-noised) land within the threshold of their
    first frame; other scenes do not: each scene's best frame keeps its score."""
    frames, scene_of = [], []
    for scene in range(5):
        for f in range(4):
            frames.append(scene_levels(scene, shift=f, noise=0.05))
            scene_of.append(scene)
    scores = np.linspace(1.0, 0.5, len(frames))
    adjusted = diverse_scores(scores, image_embeddings(batch_of(frames), 3))
    for scene in range(5):
        mine = [i for i, s in enumerate(scene_of) if s == scene]
        assert adjusted[mine].tolist() == pytest.approx((scores[mine] * 0.5 ** np.arange(4)).tolist())


def test_blocks_and_the_cap_give_the_rule_written_out():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, EMBED_DIMS))
    embeddings = np.concatenate([centres + rng.normal(0, 0.15, size=centres.shape) for _ in range(5)])
    embeddings = np.concatenate([embeddings, rng.normal(size=(100, EMBED_DIMS))]).astype(np.float16)
    scores = rng.random(len(embeddings))
    scores[::7] = scores[3]  # ties: broken by position
    for max_groups in (4096, 30):
        expected = reference_scores(scores, embeddings, SIMILAR, DISCOUNT, max_groups)
        assert (expected < scores).sum() > 100  # the planted groups were found
        for block in (1024, 64, 7, 1):
            got = diverse_scores(scores, embeddings, max_groups=max_groups, block=block)
            np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_only_the_first_max_groups_groups_are_formed():
    """Three pairs of identical embeddings, best pair first; with room for 2 groups the third
    pair is not grouped: both of its members keep their scores."""
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, EMBED_DIMS))
    embeddings = np.array([a, a, b, b, c, c], dtype=np.float16)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    assert diverse_scores(scores, embeddings, max_groups=2).tolist() == pytest.approx([0.9, 0.4, 0.7, 0.3, 0.5, 0.4])
    assert diverse_scores(scores, embeddings).tolist() == pytest.approx([0.9, 0.4, 0.7, 0.3, 0.5, 0.2])


def test_labelled_images_start_their_groups():
    """Candidates: two frames of scene A (labelled twice already), one of scene B (labelled
    once), scene C (new). A's frames start at 2 copies (x 1/4, 1/8), B's at 1 (x 1/2), C keeps
    its score and ranks first although A scored highest. Without the labelled set A leads."""
    rng = np.random.default_rng(7)
    a, b, c, d = rng.normal(size=(4, EMBED_DIMS))
    candidates = np.array([a, a, b, c], dtype=np.float16)
    labelled = np.array([a, b, a, d], dtype=np.float16)
    scores = np.array([0.9, 0.8, 0.7, 0.5])
    assert diverse_scores(scores, candidates).tolist() == pytest.approx([0.9, 0.4, 0.7, 0.5])
    order, ranked = diverse_order(scores, candidates, labelled)
    assert ranked.tolist() == pytest.approx([0.5, 0.35, 0.225, 0.1])
    assert order.tolist() == [3, 2, 0, 1]
    with pytest.raises(ValueError, match="known embeddings of shape"):
        diverse_scores(scores, candidates, np.zeros((2, EMBED_DIMS + 1), np.float16))


def test_labelled_groups_are_capped_too():
    """At most ``max_groups`` groups of labelled images (the first ones, in their order); the
    candidates get their own ``max_groups``."""
    rng = np.random.default_rng(8)
    a, b, c = rng.normal(size=(3, EMBED_DIMS))
    labelled = np.array([a, b], dtype=np.float16)
    candidates = np.array([b, a, c, c], dtype=np.float16)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    got = diverse_scores(scores, candidates, labelled, max_groups=1)
    # a took the one labelled group (b's candidate frame is not discounted), b the one of candidates
    # (c finds no group: both of its frames keep their scores)
    assert got.tolist() == pytest.approx([0.9, 0.4, 0.7, 0.6])
    assert diverse_scores(scores, candidates, labelled).tolist() == pytest.approx([0.45, 0.4, 0.7, 0.3])


def test_embeddings_are_per_image_whatever_the_batch():
    images = [scene_levels(seed) for seed in range(5)]
    together = image_embeddings(batch_of(images), 3)
    alone = np.concatenate([image_embeddings(batch_of([im]), 3) for im in images])
    np.testing.assert_allclose(together.astype(np.float32), alone.astype(np.float32), rtol=1e-3, atol=1e-3)
    scrambled = batch_of(images)
    scrambled = [torch.cat((lvl, torch.randn(5, 32, *lvl.shape[2:])), dim=1) for lvl in scrambled]
    assert np.array_equal(image_embeddings(scrambled, 3), together)  # box channels are not read


def test_a_negative_score_moves_down_too():
    """ALDD's difference of entropies can round to just below 0: the copy still ranks lower."""
    a, b, c = np.random.default_rng(5).normal(size=(3, EMBED_DIMS))
    embeddings = np.array([a, a, b, c], dtype=np.float16)
    assert diverse_scores(np.array([-1e-9, -1e-9, 0.2, 0.1]), embeddings).tolist() == pytest.approx(
        [-1e-9, -2e-9, 0.2, 0.1], rel=1e-9, abs=0
    )


def test_bursts_scored_zero_spread_too():
    """A model that finds nothing scores every image 0: the discount cannot move a 0, so equal
    scores go by how many copies rank before them (then position): one frame of each burst first."""
    rng = np.random.default_rng(2)
    a, b, c = rng.normal(size=(3, EMBED_DIMS))
    embeddings = np.array([a, a, a, b, b, b, c], dtype=np.float16)
    order, ranked = diverse_order(np.zeros(7), embeddings)
    assert order.tolist() == [0, 3, 6, 1, 4, 2, 5] and not ranked.any()


def test_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="3 scores but 2 embeddings"):
        diverse_scores(np.zeros(3), np.zeros((2, EMBED_DIMS), np.float16))
    assert diverse_scores(np.zeros(0), np.zeros((0, EMBED_DIMS), np.float16)).shape == (0,)


def test_memory_stays_linear_in_the_candidates():
    """20 000 candidates: the work arrays are a block against the leaders, not 20 000 x 20 000
    (1.6 GB in float32); the peak traced allocation stays under 40 MB."""
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(20_000, EMBED_DIMS)).astype(np.float16)
    scores = rng.random(20_000)
    tracemalloc.start()
    try:
        diverse_scores(scores, embeddings, max_groups=256)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * 2**20, peak
