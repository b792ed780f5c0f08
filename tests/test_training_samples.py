"""The fast training samples are the official ones: for the same random draw the boxes and labels are
the official way's (within 0.5 px: in fact equal, the same matrix moves them), transform by
transform and for the whole chain; the pixels differ only by resampling (the reduced decode
averages what the whole decode's warp would alias), within the stated tolerance:

* per sample and channel, the mean within 0.03 and the standard deviation within 6 % (normalised
  units: one grey level is about 0.017);
* over all the draws, the mean difference of both within 0.015 and 3 %.

The colour and normalisation of a batch (on the GPU for CUDA, tested here on the CPU) are the
official float32 arithmetic: bit for bit without saturation, within 5e-5 with it (its closed form
against OpenCV's float HSV round trip), and the CPU workers' table-based path equals the batch path
bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nanodet.config import DatasetConfig, PipelineConfig
from nanodet.data.coco_dataset import build_dataset, collate_detection, collate_finished
from nanodet.data.image_io import read_image, read_image_scaled
from nanodet.data.transforms import (
    Colour,
    TrainTransform,
    colour_and_normalize,
    colour_and_normalize_hwc,
    draw_decode_factor,
    normalize_chw,
    stack_uint8,
    warp_image,
)

OFFICIAL = dict(
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
MEAN, STD = (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)
SAMPLE_MEAN_TOL, SAMPLE_STD_TOL = 0.03, 0.06
AVERAGE_MEAN_TOL, AVERAGE_STD_TOL = 0.015, 0.03


def textured(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like image (texture at four scales, six textured boxes, sensor noise) and its boxes."""
    img = np.full((height, width, 3), rng.uniform(60, 190, 3), np.float32)
    for cells, amplitude in ((4, 30.0), (16, 18.0), (64, 10.0), (256, 6.0)):
        grid = rng.normal(0, amplitude, (max(2, cells * height // width), cells, 3)).astype(np.float32)
        img += cv2.resize(grid, (width, height))
    boxes = []
    for _ in range(6):
        bw, bh = int(rng.uniform(0.08, 0.3) * width), int(rng.uniform(0.08, 0.3) * height)
        x, y = int(rng.integers(0, width - bw)), int(rng.integers(0, height - bh))
        img[y : y + bh, x : x + bw] = rng.uniform(0, 255, 3) + rng.normal(0, 12, (bh, bw, 3))
        boxes.append([x, y, x + bw, y + bh])
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), np.array(boxes, np.float32)


def write_jpeg(path: Path, width: int, height: int, seed: int) -> np.ndarray:
    image, boxes = textured(np.random.default_rng(seed), width, height)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return boxes


def stats_gap(official: np.ndarray, fast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: |mean difference| and |std ratio - 1| of two CHW images."""
    mean_gap = np.abs(official.mean(axis=(1, 2)) - fast.mean(axis=(1, 2)))
    std_gap = np.abs(official.std(axis=(1, 2)) / fast.std(axis=(1, 2)) - 1)
    return mean_gap, std_gap


def finished(hwc: np.ndarray, colour: Colour) -> np.ndarray:
    """One fast sample made into the network's input (CHW), as a CPU trainer's worker does."""
    return colour_and_normalize_hwc([hwc], colour.as_array()[None], MEAN, STD, divisible=0)[0].transpose(2, 0, 1)


# --- the reduced decode's factor ---------------------------------------------------------------


@pytest.mark.parametrize(
    "input_size,wh,factor",
    [
        (416, (1920, 1080), 1),
        (416, (4000, 3000), 4),
        (320, (1920, 1080), 2),
        (320, (4000, 3000), 4),
        (416, (640, 480), 1),
    ],
)
def test_decode_factor_of_the_official_config(input_size, wh, factor):
    """The largest zoom of the official config is scale 1.4 x stretch 1.2 on the input / image ratio."""
    transform = TrainTransform((input_size, input_size), **OFFICIAL)
    assert transform.decode_factor(*wh) == factor
    zoom = input_size / min(wh) * 1.4 * 1.2
    assert transform.max_zoom(*wh) == pytest.approx(zoom)


@pytest.mark.parametrize(
    "params",
    [
        OFFICIAL,
        {**OFFICIAL, "rotation": 15.0, "shear": 8.0},
        {**OFFICIAL, "keep_ratio": True},
        {**OFFICIAL, "multi_scale": (0.6, 1.4)},
        {**OFFICIAL, "scale": 1.3, "stretch": ((1.0, 1.5), (0.5, 1.0))},
    ],
)
def test_no_draw_zooms_past_the_decode(params):
    """Every draw's matrix, taken from the reduced decode, enlarges nothing: its largest singular
    value times the factor is at most 1."""
    params = dict(params)
    keep_ratio, multi_scale = params.pop("keep_ratio", False), params.pop("multi_scale", None)
    transform = TrainTransform((128, 96), keep_ratio=keep_ratio, multi_scale=multi_scale, **params)
    seen = set()
    for width, height in ((900, 700), (2000, 1100), (1200, 3000), (5000, 4000)):
        factor = transform.decode_factor(width, height)
        seen.add(factor)
        for seed in range(300):
            matrix = transform.draw(np.random.default_rng(seed), width, height).matrix
            assert factor * np.linalg.svd(matrix[:2, :2], compute_uv=False)[0] <= 1 + 1e-9
    assert len(seen) > 1


def test_perspective_decodes_whole():
    transform = TrainTransform((128, 128), **{**OFFICIAL, "perspective": 0.0005})
    assert transform.decode_factor(5000, 4000) == 1
    for seed in range(20):
        assert draw_decode_factor(transform.draw(np.random.default_rng(seed), 5000, 4000).matrix) == 1


@pytest.mark.parametrize(
    "params",
    [OFFICIAL, {**OFFICIAL, "rotation": 15.0, "shear": 8.0}, {**OFFICIAL, "multi_scale": (0.6, 1.4)}],
)
def test_each_draw_decodes_at_the_largest_reduction_it_allows(params):
    """A draw's factor k is the largest of 8, 4, 2 (else 1) with k times its matrix's largest
    singular value at most 1; never below the image's factor (the bound over every draw)."""
    params = dict(params)
    multi_scale = params.pop("multi_scale", None)
    transform = TrainTransform((416, 416), multi_scale=multi_scale, **params)
    for width, height in ((1920, 1080), (4000, 3000), (900, 700)):
        image_factor = transform.decode_factor(width, height)
        for seed in range(200):
            matrix = transform.draw(np.random.default_rng(seed), width, height).matrix
            zoom = np.linalg.svd(matrix[:2, :2], compute_uv=False)[0]
            factor = draw_decode_factor(matrix)
            assert factor == 1 or factor * zoom <= 1.0  # the warp from the decode enlarges nothing
            assert factor == 8 or 2 * factor * zoom > 1.0 - 1e-12  # and a further reduction would
            assert factor >= image_factor


@pytest.mark.parametrize(
    "wh,input_size,shares",
    [
        ((1920, 1080), 416, {1: 16, 2: 77, 4: 7}),
        ((1920, 1080), 320, {2: 68, 4: 32}),
        ((4000, 3000), 416, {4: 62, 8: 38}),
    ],
)
def test_draw_factors_of_the_official_config(wh, input_size, shares):
    """Where the per-draw reduction pays: at 1920x1080 and input 416 the image's factor is 1 (the
    largest zoom, 0.647, needs the whole decode) but 84 % of the draws decode at 1/2 or 1/4."""
    transform = TrainTransform((input_size, input_size), **OFFICIAL)
    factors = [draw_decode_factor(transform.draw(np.random.default_rng(s), *wh).matrix) for s in range(1000)]
    assert {k: round(100 * factors.count(k) / len(factors)) for k in sorted(set(factors))} == shares


def test_a_reduced_warp_fades_into_the_border_as_the_whole_images_warp():
    """A flat image warped from its 1/8 decode (edge pixels replicated, then faded) has the whole
    image's edges: within a grey level everywhere, the border rows and columns included."""
    whole = np.full((1000, 930, 3), 200, np.uint8)
    reduced = np.full((-(-1000 // 8), -(-930 // 8), 3), 200, np.uint8)
    for seed, params in enumerate([OFFICIAL, {**OFFICIAL, "rotation": 20.0}]):
        transform = TrainTransform((128, 128), **{**params, "scale": (0.3, 0.5)})
        unfaded = []
        for draw in range(10):
            drawn = transform.draw(np.random.default_rng([seed, draw]), 930, 1000)
            assert draw_decode_factor(drawn.matrix) == 8
            expected = cv2.warpAffine(whole, drawn.matrix[:2], drawn.dst_wh).astype(int)
            faded = warp_image(reduced, drawn.matrix, drawn.dst_wh, 8, drawn.src_wh).astype(int)
            assert np.abs(faded - expected).max() <= 1
            plain = warp_image(reduced, drawn.matrix, drawn.dst_wh, 8).astype(int)  # black past the reduced cells
            unfaded.append(np.abs(plain - expected).max())
        assert np.mean(unfaded) > 40  # without the fade: edge rows and columns tens of grey levels off


# --- per transform: boxes equal, pixels within the tolerance -----------------------------------

SINGLE_TRANSFORMS = {
    "scale": {"scale": (0.6, 1.4)},
    "stretch": {"stretch": ((0.8, 1.2), (0.7, 1.3))},
    "rotation": {"rotation": 12.0},
    "shear": {"shear": 6.0},
    "flip": {"flip": 0.5},
    "translate": {"translate": 0.2},
    "perspective": {"perspective": 0.0008},
    "multi_scale": {"multi_scale": (0.6, 1.4)},
    "keep_ratio": {"keep_ratio": True, "scale": (0.8, 1.2)},
    "brightness": {"brightness": 0.2},
    "contrast": {"contrast": (0.6, 1.4)},
    "saturation": {"saturation": (0.5, 1.2)},
    "official chain": OFFICIAL,
}


@pytest.mark.parametrize("per_draw", [True, False], ids=["draw's reduction", "image's reduction"])
@pytest.mark.parametrize("name", list(SINGLE_TRANSFORMS))
def test_each_transform_gives_the_official_boxes_and_pixel_statistics(tmp_path, name, per_draw):
    """Decoded at the draw's own reduction (uncached training) or at the image's (the cache's)."""
    transform = TrainTransform((128, 128), **SINGLE_TRANSFORMS[name])
    mean_gaps, std_gaps = [], []
    for width, height, seed in ((300, 260, 1), (540, 500, 2), (1000, 930, 3)):
        path = tmp_path / f"{seed}.jpg"
        boxes = write_jpeg(path, width, height, seed)
        labels = np.arange(len(boxes), dtype=np.int64)
        whole = read_image(path)
        reduced, factor, size = read_image_scaled(path, transform.decode_factor)
        assert size == (width, height) and factor == transform.decode_factor(width, height)
        for draw in range(12):
            chw, off_boxes, off_labels, off_matrix = transform(whole, boxes, labels, np.random.default_rng(draw))
            if per_draw:
                drawn = transform.draw(np.random.default_rng(draw), width, height)
                reduced, factor, size = read_image_scaled(path, lambda w, h, m=drawn.matrix: draw_decode_factor(m))
                assert factor >= transform.decode_factor(width, height)
            hwc, fast_boxes, fast_labels, matrix, colour = transform.sample(
                reduced, boxes, labels, np.random.default_rng(draw), factor, size
            )
            np.testing.assert_array_equal(matrix, off_matrix)
            np.testing.assert_array_equal(fast_labels, off_labels)
            np.testing.assert_allclose(fast_boxes, off_boxes, atol=0.5)
            fast = finished(hwc, colour)
            assert fast.shape == chw.shape
            mean_gap, std_gap = stats_gap(chw, fast)
            assert (mean_gap <= SAMPLE_MEAN_TOL).all() and (std_gap <= SAMPLE_STD_TOL).all(), (
                factor,
                mean_gap,
                std_gap,
            )
            mean_gaps.append(mean_gap)
            std_gaps.append(std_gap)
            if factor == 1:  # the same image warped: a grey level apart (times the colour's gain) where the
                # affine and the perspective warp round their fixed-point coordinates differently, else equal
                gain = (colour.contrast or 1.0) * max(colour.saturation or 1.0, 1.0)
                assert np.abs(chw - fast).max() <= 1.001 * gain / 57.12 and np.abs(chw - fast).mean() < 2e-3
    assert np.mean(mean_gaps) <= AVERAGE_MEAN_TOL and np.mean(std_gaps) <= AVERAGE_STD_TOL


# --- the whole chain, through the dataset -------------------------------------------------------


def write_coco(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    for i, (width, height) in enumerate(sizes):
        boxes = write_jpeg(folder / "images" / f"{i}.jpg", width, height, seed=100 + i)
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": width, "height": height})
        for j, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": 1 + j % 3,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k, "name": n} for k, n in ((1, "a"), (2, "b"), (3, "c"))]
    ann = folder / "annotations.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return ann


def dataset_config(root: Path, ann: Path, **extra) -> DatasetConfig:
    return DatasetConfig(
        img_path=str(root / "images"),
        ann_path=str(ann),
        input_size=(128, 128),
        pipeline=PipelineConfig(**OFFICIAL),
        **extra,
    )


@pytest.mark.parametrize("per_draw", [True, False], ids=["draw's reduction", "image's reduction"])
def test_whole_chain_through_the_dataset_matches_the_official_samples(tmp_path, per_draw):
    """The official config's chain on JPEGs that decode at 1/1, 1/2, 1/4 and 1/8, four epochs,
    each image decoded at its draw's reduction (uncached training) or at the image's (the cache's):
    the items' boxes and labels are the official ones, the batch's pixels within the tolerance;
    the GPU path (on the CPU here) and the CPU workers' path give the same batch."""
    sizes = [(300, 240), (560, 480), (1000, 900), (1800, 1750)]
    ann = write_coco(tmp_path, sizes)
    cfg = dataset_config(tmp_path, ann)
    fast = build_dataset(cfg, train=True, seed=5, decode_per_draw=per_draw)
    official = build_dataset(cfg, train=True, seed=5, reference=True)
    factors = {fast.transform.decode_factor(*wh) for wh in sizes}
    assert factors == {1, 2, 4, 8}
    draw_factors = [
        draw_decode_factor(fast.transform.draw(np.random.default_rng([5, epoch, i]), *wh).matrix)
        for epoch in range(4)
        for i, wh in enumerate(sizes)
    ]
    image_factors = [fast.transform.decode_factor(*wh) for wh in sizes] * 4
    assert sum(d > i for d, i in zip(draw_factors, image_factors)) >= 8  # the draws reduce further
    mean_gaps, std_gaps = [], []
    for epoch in range(4):
        keys = [(i, epoch) for i in range(len(sizes))]
        items = [fast[k] for k in keys]
        expected = [official[k] for k in keys]
        batch = collate_detection(items)
        assert batch.images.dtype == torch.uint8 and batch.colour.shape == (len(sizes), 4)
        assert batch.images.is_contiguous(memory_format=torch.channels_last)  # each image copied, not transposed
        on_device = batch.inputs(torch.device("cpu"))  # what the GPU computes, here on the CPU
        in_workers = collate_finished(items).images
        assert torch.equal(on_device, in_workers)
        assert in_workers.is_contiguous(memory_format=torch.channels_last)
        for i, (item, ref) in enumerate(zip(items, expected)):
            torch.testing.assert_close(item["gt_bboxes"], ref["gt_bboxes"], atol=0.5, rtol=0)
            assert torch.equal(item["gt_labels"], ref["gt_labels"])
            np.testing.assert_array_equal(item["warp_matrix"], ref["warp_matrix"])
            assert item["size"] == ref["size"] == sizes[i]
            mean_gap, std_gap = stats_gap(ref["img"].numpy(), on_device[i].numpy())
            assert (mean_gap <= SAMPLE_MEAN_TOL).all() and (std_gap <= SAMPLE_STD_TOL).all()
            mean_gaps.append(mean_gap)
            std_gaps.append(std_gap)
    assert np.mean(mean_gaps) <= AVERAGE_MEAN_TOL and np.mean(std_gaps) <= AVERAGE_STD_TOL


def _collate_in_shared_memory(items: list) -> tuple[bool, bool, torch.Tensor]:
    """A DataLoader worker's collate: were both kinds of batch made in shared memory?"""
    fast, finished_batch = collate_detection(items), collate_finished(items)
    return fast.images.is_shared(), finished_batch.images.is_shared(), fast.images


def test_a_workers_batch_is_made_in_shared_memory(tmp_path):
    """In a DataLoader worker both batches (uint8 for the GPU, finished for the CPU) are written
    straight into shared memory, so they reach the trainer without a copy; in the trainer's own
    process they are plain memory."""
    ann = write_coco(tmp_path, [(300, 240), (560, 480)])
    dataset = build_dataset(dataset_config(tmp_path, ann), train=True, seed=1)
    items = [dataset[(0, 0)], dataset[(1, 0)]]
    assert not collate_detection(items).images.is_shared() and not collate_finished(items).images.is_shared()
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=2, sampler=[(0, 0), (1, 0)], num_workers=1, collate_fn=_collate_in_shared_memory
    )
    ((fast_shared, finished_shared, images),) = list(loader)
    assert fast_shared and finished_shared
    assert torch.equal(images, collate_detection(items).images)


# --- colour and normalisation ---------------------------------------------------------------------


def colours(rng: np.random.Generator, count: int) -> list[Colour]:
    out = [Colour(), Colour(saturation=1.0), Colour(-0.2, 1.4, 1.2), Colour(0.2, 0.6, 0.5)]
    while len(out) < count:
        out.append(
            Colour(
                float(np.float32(rng.uniform(-0.2, 0.2))) if rng.random() < 0.5 else None,
                float(np.float32(rng.uniform(0.6, 1.4))) if rng.random() < 0.5 else None,
                rng.uniform(0.5, 1.2) if rng.random() < 0.5 else None,
            )
        )
    return out


def test_batch_colour_is_the_official_arithmetic():
    """``colour_and_normalize`` (one pass for the batch, on any device) against the official
    per-image float32 colour (OpenCV's HSV for saturation) and normalisation."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(12)]
    images[0][:8] = 0  # black pixels: saturation of a zero (or, after a negative brightness, negative) maximum
    drawn = colours(rng, 12)
    batch = colour_and_normalize(
        stack_uint8([torch.from_numpy(i) for i in images], divisible=0),
        torch.from_numpy(np.stack([c.as_array() for c in drawn])),
        MEAN,
        STD,
    ).numpy()
    scaled_mean, scaled_std = np.float32(MEAN) / 255, np.float32(STD) / 255
    for image, colour, got in zip(images, drawn, batch):
        expected = normalize_chw(colour.apply(image), scaled_mean, scaled_std)
        if colour.saturation is None:
            np.testing.assert_array_equal(got, expected)
        else:
            np.testing.assert_allclose(got, expected, atol=5e-5, rtol=0)


def test_worker_tables_equal_the_batch_path_bit_for_bit():
    """The CPU workers' table path (``colour_and_normalize_hwc``) and the batch path, padding included."""
    rng = np.random.default_rng(1)
    images = [
        rng.integers(0, 256, (int(rng.integers(40, 97)), int(rng.integers(40, 97)), 3), dtype=np.uint8)
        for _ in range(10)
    ]
    drawn = colours(rng, 8) + [Colour(0.1, -0.8, 0.9), Colour(None, 0.0, 1.1)]  # falling and flat tables too
    table = np.stack([c.as_array() for c in drawn])
    hwc = colour_and_normalize_hwc(images, table, MEAN, STD)
    assert hwc.shape == (10, 96, 96, 3)
    sizes = [img.shape[:2] for img in images]
    batch = colour_and_normalize(
        stack_uint8([torch.from_numpy(i) for i in images]), torch.from_numpy(table), MEAN, STD, sizes
    )
    np.testing.assert_array_equal(hwc.transpose(0, 3, 1, 2), batch.numpy())
    for slot, (h, w) in zip(hwc, sizes):  # the padding is 0, as the official stack pads normalised images
        assert (slot[h:] == 0).all() and (slot[:, w:] == 0).all()


def test_batch_moves_to_the_device_then_normalises(monkeypatch):
    """``TrainBatch.inputs``: the uint8 batch is what is moved (non_blocking), and the colour runs
    after the move, on the device's tensor."""
    rng = np.random.default_rng(2)
    item = {
        "img": torch.from_numpy(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
        "colour": torch.from_numpy(Colour(0.1, 1.2, 0.8).as_array()),
        "normalize": (MEAN, STD),
        "gt_bboxes": torch.zeros((0, 4)),
        "gt_labels": torch.zeros(0, dtype=torch.int64),
        "warp_matrix": np.eye(3),
        "img_id": 1,
        "size": (64, 64),
        "path": "x.jpg",
    }
    batch = collate_detection([item, item])
    moved = []
    original_to = torch.Tensor.to

    def recording_to(tensor, *args, **kwargs):
        moved.append((tensor.dtype, kwargs.get("non_blocking")))
        return original_to(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    out = batch.inputs(torch.device("cpu"), torch.channels_last)
    assert moved[0] == (torch.uint8, True)  # the images cross as bytes, a quarter of the floats
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    monkeypatch.undo()
    assert torch.equal(out, collate_finished([item, item]).images)
