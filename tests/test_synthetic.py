"""Synthetic shapes dataset: determinism, valid COCO output, tight boxes."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from nanodet.data.synthetic import DEFAULT_CLASSES, SHAPES, make_synthetic_coco, synthetic_image


def _file_bytes(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    first = make_synthetic_coco(tmp_path / "a", 6, seed=5)
    second = make_synthetic_coco(tmp_path / "b", 6, seed=5)
    other = make_synthetic_coco(tmp_path / "c", 6, seed=6)
    assert _file_bytes(first.parent) == _file_bytes(second.parent)
    assert first.read_bytes() != other.read_bytes()
    assert len(_file_bytes(first.parent)) == 7  # 6 images + annotations.json


def test_image_does_not_depend_on_dataset_length(tmp_path: Path) -> None:
    short = make_synthetic_coco(tmp_path / "short", 2, seed=1)
    long = make_synthetic_coco(tmp_path / "long", 4, seed=1)
    for name in ("00000.jpg", "00001.jpg"):
        short_bytes = (short.parent / "images" / name).read_bytes()
        assert short_bytes == (long.parent / "images" / name).read_bytes()


def test_coco_json_is_valid_and_boxes_inside_images(tmp_path: Path) -> None:
    json_path = make_synthetic_coco(tmp_path, 12, image_size=((160, 120), (352, 288)), seed=2, max_objects=5)
    assert json_path == tmp_path / "annotations.json"
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(json_path))
    categories = coco.loadCats(sorted(coco.getCatIds()))
    assert [(c["id"], c["name"]) for c in categories] == list(enumerate(DEFAULT_CLASSES, 1))
    assert len(coco.getImgIds()) == 12
    assert len(coco.getAnnIds()) >= 12  # at least one object per image
    sizes = set()
    for info in coco.loadImgs(coco.getImgIds()):
        image = cv2.imread(str(tmp_path / "images" / info["file_name"]))
        assert image.shape == (info["height"], info["width"], 3)
        assert 160 <= info["width"] <= 352 and 120 <= info["height"] <= 288
        sizes.add((info["width"], info["height"]))
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=info["id"])):
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and w > 0 and h > 0
            assert x + w <= info["width"] and y + h <= info["height"]
            assert ann["area"] == pytest.approx(w * h)
            assert ann["iscrowd"] == 0
            assert ann["category_id"] in (1, 2, 3)
    assert len(sizes) > 1  # sizes vary within the range
    ann_ids = [a["id"] for a in json.loads(json_path.read_text())["annotations"]]
    assert ann_ids == list(range(1, len(ann_ids) + 1))


def test_in_memory_boxes_are_tight_and_overlap_little() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        image, boxes, labels = synthetic_image(
            rng, (256, 192), class_names=tuple(SHAPES), max_objects=6, min_size=20, max_size=80
        )
        assert image.shape == (192, 256, 3) and image.dtype == np.uint8
        assert boxes.dtype == np.float32 and labels.dtype == np.int64
        assert len(boxes) == len(labels) >= 1
        assert ((labels >= 0) & (labels < len(SHAPES))).all()
        assert (boxes[:, :2] >= 0).all()
        assert (boxes[:, 2] <= 256).all() and (boxes[:, 3] <= 192).all()
        extents = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        assert (extents <= 80).all()
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                assert _iou(boxes[i], boxes[j]) <= 0.15


def test_boxes_are_tight_to_the_shape() -> None:
    """Every side of a box runs through pixels of the object's colour, found at its centre."""
    rng = np.random.default_rng(3)
    for _ in range(15):
        image, boxes, _ = synthetic_image(rng, (200, 150), max_objects=1, min_size=30, max_size=60)
        x1, y1, x2, y2 = boxes[0].astype(int)
        crop = image[y1:y2, x1:x2].astype(np.float32)
        cy, cx = crop.shape[0] // 2, crop.shape[1] // 2
        colour = np.median(crop[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3), axis=0)
        is_object = np.linalg.norm(crop - colour, axis=2) < 45
        assert is_object[0].any() and is_object[-1].any()
        assert is_object[:, 0].any() and is_object[:, -1].any()


def test_unknown_class_name_is_rejected() -> None:
    with pytest.raises(ValueError):
        synthetic_image(np.random.default_rng(0), class_names=("hexagon",))
    assert DEFAULT_CLASSES == ("circle", "square", "triangle")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union
