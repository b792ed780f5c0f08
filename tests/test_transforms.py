"""Pre-processing and augmentation: geometry, normalisation, batching, randomness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nanodet.data.preprocess import pad_batch
from nanodet.data.transforms import (
    DEFAULT_MEAN,
    DEFAULT_STD,
    EvalTransform,
    TrainTransform,
    normalize_chw,
    preprocess,
    resize_matrix,
    stack_batch,
    warp_boxes,
)

OFFICIAL_TRAIN = dict(
    perspective=0.0,
    scale=(0.6, 1.4),
    stretch=((0.8, 1.2), (0.8, 1.2)),
    rotation=0.0,
    shear=0.0,
    translate=0.2,
    flip=0.5,
    brightness=0.2,
    contrast=(0.6, 1.4),
    saturation=(0.5, 1.2),
)


def random_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("src_wh", [(640, 480), (480, 640), (320, 320), (1000, 200), (123, 457)])
@pytest.mark.parametrize("dst_wh", [(320, 320), (416, 320)])
@pytest.mark.parametrize("keep_ratio", [True, False])
def test_resize_and_warp_boxes_round_trip(src_wh, dst_wh, keep_ratio) -> None:
    w, h = src_wh
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 0.5, (20, 2)) * (w, h)
    boxes = np.concatenate([xy, xy + rng.uniform(1, 0.5 * min(w, h), (20, 2))], axis=1).astype(np.float32)
    M = resize_matrix(src_wh, dst_wh, keep_ratio)
    assert M.shape == (3, 3)
    there = warp_boxes(boxes, M, *dst_wh)
    assert there.dtype == np.float32
    assert (there[:, [0, 2]] <= dst_wh[0] + 1e-3).all() and (there[:, [1, 3]] <= dst_wh[1] + 1e-3).all()
    back = warp_boxes(there, np.linalg.inv(M), w, h)
    np.testing.assert_allclose(back, boxes, atol=1e-3)


def test_keep_ratio_letterbox_is_centred() -> None:
    M = resize_matrix((640, 320), (320, 320), keep_ratio=True)
    corners = warp_boxes(np.array([[0, 0, 640, 320]], np.float32), M, 320, 320)
    np.testing.assert_allclose(corners, [[0, 80, 320, 240]], atol=1e-5)
    M = resize_matrix((640, 320), (320, 320), keep_ratio=False)
    np.testing.assert_allclose(M, np.diag([0.5, 1.0, 1.0]))


def test_warp_boxes_clips_and_handles_empty() -> None:
    M = np.eye(3)
    clipped = warp_boxes(np.array([[-5, -5, 50, 500]], np.float32), M, 40, 60)
    np.testing.assert_allclose(clipped, [[0, 0, 40, 60]])
    assert warp_boxes(np.zeros((0, 4), np.float32), M, 40, 60).shape == (0, 4)


def test_normalize_and_preprocess() -> None:
    mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 5.0)
    img = np.full((4, 5, 3), 50, np.uint8)
    out = normalize_chw(img, mean, std)
    assert out.dtype == np.float32 and out.shape == (3, 4, 5) and out.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(out[:, 0, 0], [20.0, 7.5, 4.0])
    # bit for bit the float32 arithmetic of the plain expression, for uint8 and float images
    rng = np.random.default_rng(0)
    for image in (rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), rng.random((37, 53, 3), dtype=np.float32)):
        plain = (image.astype(np.float32) - np.float32(mean)) / np.float32(std)
        np.testing.assert_array_equal(normalize_chw(image, mean, std), plain.transpose(2, 0, 1))

    img = np.full((240, 400, 3), (100, 150, 200), np.uint8)
    chw, M = preprocess(img, (320, 256), keep_ratio=False, mean=DEFAULT_MEAN, std=DEFAULT_STD)
    assert chw.shape == (3, 256, 320) and chw.dtype == np.float32 and chw.flags["C_CONTIGUOUS"]
    expected = (np.array([100, 150, 200]) - np.array(DEFAULT_MEAN)) / np.array(DEFAULT_STD)
    np.testing.assert_allclose(chw[:, 10:-10, 10:-10].mean(axis=(1, 2)), expected, atol=1e-5)
    np.testing.assert_allclose(M, resize_matrix((400, 240), (320, 256), False))

    # Letterbox: the borders are black, i.e. (0 - mean) / std after normalisation.
    chw, _ = preprocess(img, (320, 320), keep_ratio=True)
    border = (0 - np.array(DEFAULT_MEAN)) / np.array(DEFAULT_STD)
    np.testing.assert_allclose(chw[:, 2, 160], border, atol=1e-5)
    np.testing.assert_allclose(chw[:, 160, 160], expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["tensors", "arrays"])
def test_batches_pad_to_multiple(kind: str) -> None:
    """stack_batch (tensors, training) and pad_batch (arrays, inference) pad alike."""
    stack = stack_batch if kind == "tensors" else lambda images, **kw: torch.from_numpy(pad_batch(images, **kw))
    make = torch.rand if kind == "tensors" else lambda *shape: np.random.default_rng(0).random(shape, np.float32)
    images = [make(3, 100, 150), make(3, 120, 90), make(3, 64, 64)]
    batch = stack(images, divisible=32, pad_value=-1.0)
    assert batch.shape == (3, 3, 128, 160) and batch.dtype == torch.float32 and batch.is_contiguous()
    for i, img in enumerate(images):
        h, w = img.shape[1:]
        assert torch.equal(batch[i, :, :h, :w], torch.as_tensor(img))
        assert (batch[i, :, h:, :] == -1).all() and (batch[i, :, :, w:] == -1).all()
    assert stack([make(3, 320, 320)]).shape == (1, 3, 320, 320)
    assert stack(images, divisible=0).shape == (3, 3, 120, 150)


def test_train_transform_deterministic_for_seed() -> None:
    rng = np.random.default_rng(1)
    img = random_image(rng, 500, 375)
    boxes = np.array([[10, 20, 200, 300], [250, 100, 480, 370]], np.float32)
    labels = np.array([3, 7], np.int64)
    transform = TrainTransform(input_wh=(320, 320), **OFFICIAL_TRAIN)
    a = transform(img, boxes, labels, np.random.default_rng(42))
    b = transform(img, boxes, labels, np.random.default_rng(42))
    c = transform(img, boxes, labels, np.random.default_rng(43))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[3], c[3])
    chw, out_boxes, out_labels, M = a
    assert chw.shape == (3, 320, 320) and chw.dtype == np.float32
    assert out_boxes.dtype == np.float32 and out_labels.dtype == np.int64
    assert M.shape == (3, 3)


def test_train_transform_boxes_stay_inside_and_nondegenerate() -> None:
    rng = np.random.default_rng(2)
    img = random_image(rng, 320, 240)
    xy = rng.uniform(0, 280, (30, 2)) * (1, 0.75)
    boxes = np.concatenate([xy, xy + rng.uniform(2, 60, (30, 2))], axis=1).astype(np.float32)
    labels = np.arange(30, dtype=np.int64)
    params = {**OFFICIAL_TRAIN, "perspective": 0.0005, "rotation": 10.0, "shear": 5.0}
    transform = TrainTransform(input_wh=(320, 256), **params)
    for seed in range(20):
        _, out, out_labels, M = transform(img, boxes, labels, np.random.default_rng(seed))
        assert len(out) == len(out_labels)
        assert (out >= 0).all() and (out[:, [0, 2]] <= 320).all() and (out[:, [1, 3]] <= 256).all()
        assert ((out[:, 2:] - out[:, :2]) >= 1).all()
        # Surviving labels are the ones of boxes whose warped version is non-degenerate.
        expected = warp_boxes(boxes, M, 320, 256)
        visible = ((expected[:, 2:] - expected[:, :2]) >= 1).all(axis=1)
        np.testing.assert_array_equal(out_labels, labels[visible])
        np.testing.assert_allclose(out, expected[visible])


def white_box_of(chw: np.ndarray) -> np.ndarray:
    """Bounding box (x1, y1, x2, y2 in pixel-edge coordinates) of the bright pixels."""
    ys, xs = np.nonzero(chw.mean(axis=0) > 0.5)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("seed", range(8))
def test_train_transform_boxes_follow_image(seed: int) -> None:
    img = np.zeros((300, 400, 3), np.uint8)
    box = np.array([[120, 80, 260, 210]], np.float32)
    img[80:210, 120:260] = 255
    geometry = {k: v for k, v in OFFICIAL_TRAIN.items() if k not in ("brightness", "contrast", "saturation")}
    # Normalise with mean 0 and std 255 so the output is the warped image on the 0-1 scale.
    transform = TrainTransform(
        input_wh=(320, 320), keep_ratio=seed % 2 == 0, normalize=((0, 0, 0), (255, 255, 255)), **geometry
    )
    chw, out, labels, _ = transform(img, box, np.array([1], np.int64), np.random.default_rng(seed))
    assert labels.tolist() == [1]
    np.testing.assert_allclose(out[0], white_box_of(chw), atol=2.0)


def test_flip_mirrors_boxes() -> None:
    img = np.zeros((200, 300, 3), np.uint8)
    img[50:120, 30:100] = 255
    box = np.array([[30, 50, 100, 120]], np.float32)
    transform = TrainTransform(input_wh=(300, 200), flip=1.0, normalize=((0, 0, 0), (255, 255, 255)))
    chw, out, _, M = transform(img, box, np.array([0], np.int64), np.random.default_rng(0))
    np.testing.assert_allclose(out, [[200, 50, 270, 120]], atol=1e-4)
    np.testing.assert_allclose(white_box_of(chw), out[0], atol=1.0)
    np.testing.assert_allclose(M, [[-1, 0, 300], [0, 1, 0], [0, 0, 1]], atol=1e-9)


def test_color_augmentation_changes_pixels_only_by_colour() -> None:
    img = random_image(np.random.default_rng(3), 64, 48)
    transform = TrainTransform(input_wh=(64, 48), brightness=0.2, contrast=(0.6, 1.4), saturation=(0.5, 1.2))
    plain = EvalTransform(input_wh=(64, 48))(img, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    changed = 0
    for seed in range(6):
        no_boxes = np.zeros((0, 4), np.float32)
        chw, _, _, M = transform(img, no_boxes, np.zeros(0, np.int64), np.random.default_rng(seed))
        np.testing.assert_allclose(M, np.eye(3), atol=1e-12)
        changed += not np.allclose(chw, plain[0], atol=1e-4)
    assert changed > 0
    # All colour factors at the identity: the same as the eval transform.
    neutral = TrainTransform(input_wh=(64, 48), brightness=0.0, contrast=(1, 1), saturation=(1, 1))
    chw, _, _, _ = neutral(img, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.random.default_rng(0))
    np.testing.assert_allclose(chw, plain[0], atol=1e-3)


def test_eval_transform_matches_preprocess() -> None:
    img = random_image(np.random.default_rng(4), 500, 300)
    boxes = np.array([[10, 10, 110, 60], [0, 0, 0.5, 0.5]], np.float32)  # second one degenerates
    transform = EvalTransform(input_wh=(320, 320), keep_ratio=True)
    chw, out, labels, M = transform(img, boxes, np.array([4, 5], np.int64))
    ref_chw, ref_M = preprocess(img, (320, 320), True, DEFAULT_MEAN, DEFAULT_STD)
    np.testing.assert_array_equal(chw, ref_chw)
    np.testing.assert_array_equal(M, ref_M)
    assert labels.tolist() == [4]
    np.testing.assert_allclose(out, warp_boxes(boxes[:1], M, 320, 320))


# --- multi_scale: the official per-sample random input size -------------------------------


def test_multi_scale_size_is_the_official_rule_and_deterministic() -> None:
    """Per sample, before the other draws: f ~ U(low, high), size (int(w * f), int(h * f))."""
    img = random_image(np.random.default_rng(5), 500, 375)
    boxes = np.array([[10, 20, 200, 300], [250, 100, 480, 370]], np.float32)
    labels = np.array([3, 7], np.int64)
    transform = TrainTransform(input_wh=(320, 256), multi_scale=(0.6, 1.4), **OFFICIAL_TRAIN)
    sizes = set()
    for seed in range(12):
        factor = np.random.default_rng(seed).uniform(0.6, 1.4)
        expected_wh = (int(320 * factor), int(256 * factor))
        assert transform.output_size(np.random.default_rng(seed)) == expected_wh
        chw, out_boxes, _, M = transform(img, boxes, labels, np.random.default_rng(seed))
        assert chw.shape == (3, expected_wh[1], expected_wh[0])
        assert (out_boxes[:, [0, 2]] <= expected_wh[0]).all() and (out_boxes[:, [1, 3]] <= expected_wh[1]).all()
        again = transform(img, boxes, labels, np.random.default_rng(seed))
        for x, y in zip((chw, out_boxes, M), (again[0], again[1], again[3])):
            np.testing.assert_array_equal(x, y)
        sizes.add(expected_wh)
    assert len(sizes) > 6 and all(192 <= w <= 448 and 153 <= h <= 358 for w, h in sizes)


def test_without_multi_scale_nothing_extra_is_drawn() -> None:
    """``multi_scale`` unset: sizes and the random stream are what they were (no draw for the size)."""
    img = random_image(np.random.default_rng(6), 400, 300)
    boxes = np.array([[50, 40, 250, 200]], np.float32)
    labels = np.array([0], np.int64)
    plain = TrainTransform(input_wh=(320, 320), **OFFICIAL_TRAIN)
    rng = np.random.default_rng(9)
    assert plain.output_size(rng) == (320, 320)
    assert rng.bit_generator.state == np.random.default_rng(9).bit_generator.state
    fixed = TrainTransform(input_wh=(320, 320), multi_scale=(1.0, 1.0), **OFFICIAL_TRAIN)
    chw, _, _, _ = fixed(img, boxes, labels, np.random.default_rng(9))
    assert chw.shape == (3, 320, 320)


@pytest.mark.parametrize("keep_ratio", [False, True])
def test_multi_scale_boxes_follow_image(keep_ratio: bool) -> None:
    img = np.zeros((300, 400, 3), np.uint8)
    box = np.array([[120, 80, 260, 210]], np.float32)
    img[80:210, 120:260] = 255
    geometry = {k: v for k, v in OFFICIAL_TRAIN.items() if k not in ("brightness", "contrast", "saturation")}
    transform = TrainTransform(
        input_wh=(320, 320),
        keep_ratio=keep_ratio,
        multi_scale=(0.6, 1.4),
        normalize=((0, 0, 0), (255, 255, 255)),
        **geometry,
    )
    for seed in range(4):
        chw, out, _, M = transform(img, box, np.array([1], np.int64), np.random.default_rng(seed))
        np.testing.assert_allclose(out[0], white_box_of(chw), atol=2.0)
        np.testing.assert_allclose(warp_boxes(box, M, chw.shape[2], chw.shape[1]), out, atol=1e-4)


def test_multi_scale_dataset_is_deterministic_per_seed_epoch_index_and_collates(tmp_path) -> None:
    from nanodet.config import DatasetConfig
    from nanodet.data.coco_dataset import build_dataset, collate_detection
    from nanodet.data.synthetic import make_synthetic_coco

    ann = make_synthetic_coco(tmp_path, 6, image_size=(160, 120), seed=0, min_size=24, max_size=60)
    cfg = DatasetConfig(
        img_path=str(tmp_path / "images"), ann_path=str(ann), input_size=(96, 96), multi_scale=(0.6, 1.4)
    )
    dataset = build_dataset(cfg, train=True, seed=3)
    items = [dataset[(i, epoch)] for epoch in range(2) for i in range(len(dataset))]
    sizes = {tuple(it["img"].shape[:2]) for it in items}  # training samples: HWC uint8
    assert len(sizes) > 3 and all(57 <= h <= 134 and 57 <= w <= 134 for h, w in sizes)
    for key, item in zip([(i, e) for e in range(2) for i in range(len(dataset))], items):
        again = build_dataset(cfg, train=True, seed=3)[key]  # another process, same (seed, epoch, index)
        assert torch.equal(again["img"], item["img"]) and torch.equal(again["gt_bboxes"], item["gt_bboxes"])
        assert torch.equal(again["colour"], item["colour"])
    other_seed = build_dataset(cfg, train=True, seed=4)
    assert any(other_seed[(i, 0)]["img"].shape != items[i]["img"].shape for i in range(len(dataset)))

    batch = collate_detection(items[:4])
    max_h = max(it["img"].shape[0] for it in items[:4])
    max_w = max(it["img"].shape[1] for it in items[:4])
    assert batch.images.shape == (4, 3, -(-max_h // 32) * 32, -(-max_w // 32) * 32)
    inputs = batch.inputs(torch.device("cpu"))
    assert inputs.shape == (4, 3, -(-max_h // 32) * 32, -(-max_w // 32) * 32) and inputs.dtype == torch.float32
    reference = build_dataset(cfg, train=True, seed=3, reference=True)  # the official way, same draws
    for i, it in enumerate(items[:4]):
        h, w = it["img"].shape[:2]
        assert torch.equal(batch.images[i, :, :h, :w], it["img"].permute(2, 0, 1))
        assert (batch.images[i, :, h:] == 0).all() and (batch.images[i, :, :, w:] == 0).all()
        assert (inputs[i, :, h:] == 0).all() and (inputs[i, :, :, w:] == 0).all()  # padding: 0 after normalising
        official = reference[(i, 0)]
        assert official["img"].shape == (3, h, w)
        assert (inputs[i, :, :h, :w] - official["img"]).abs().max() < 1e-4
        assert torch.equal(batch.gt_bboxes[i], it["gt_bboxes"]) and torch.equal(official["gt_bboxes"], it["gt_bboxes"])
    # evaluation stays at input_size
    assert tuple(build_dataset(cfg, train=False)[(0, 0)]["img"].shape[1:]) == (96, 96)
