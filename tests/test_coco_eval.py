"""COCO evaluation wrapper: agreement with pycocotools used directly, edge cases."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from nanodet.evaluation import METRIC_NAMES, CocoEvaluator

CLASS_NAMES = ("cat", "dog", "bird")


def _make_gt(seed: int = 0, num_images: int = 6) -> COCO:
    """A small ground truth of random boxes; category ids deliberately not 0-based."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 640, "height": 480})
        for _ in range(rng.integers(1, 5)):
            w, h = rng.uniform(10, 200, size=2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.choice([3, 7])),  # "bird" (id 9) has no GT
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": cid, "name": name} for cid, name in zip((3, 7, 9), CLASS_NAMES)]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _label_of(category_id: int) -> int:
    return {3: 0, 7: 1, 9: 2}[category_id]


def _noisy_detections(coco: COCO, seed: int = 1) -> dict[int, list]:
    """Jittered copies of the GT with random scores, plus false positives."""
    rng = np.random.default_rng(seed)
    detections: dict[int, list] = {}
    for image_id in coco.getImgIds():
        dets = []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            x, y, w, h = ann["bbox"]
            jitter = rng.normal(0, 0.08, size=4) * [w, h, w, h]
            box = [x + jitter[0], y + jitter[1], x + w + jitter[2], y + h + jitter[3]]
            dets.append((box, float(rng.uniform(0.3, 1.0)), _label_of(ann["category_id"])))
        for _ in range(rng.integers(0, 3)):
            x, y = rng.uniform(0, 500), rng.uniform(0, 400)
            dets.append(([x, y, x + 60, y + 50], float(rng.uniform(0, 0.6)), int(rng.integers(3))))
        detections[image_id] = dets
    return detections


def _direct_stats(coco: COCO, detections: dict[int, list]) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools run by hand on the same detections: (stats, precision)."""
    cat_ids = sorted(coco.getCatIds())
    results = [
        {
            "image_id": image_id,
            "category_id": cat_ids[label],
            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
            "score": score,
        }
        for image_id, dets in detections.items()
        for box, score, label in dets
    ]
    gt = copy.deepcopy(coco)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(gt, gt.loadRes(results), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats, coco_eval.eval["precision"]


def test_perfect_detections_score_one() -> None:
    coco = _make_gt()
    detections: dict[int, list] = {image_id: [] for image_id in coco.getImgIds()}
    for ann in coco.dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        label = _label_of(ann["category_id"])
        detections[ann["image_id"]].append(([x, y, x + w, y + h], 1.0, label))
    result = CocoEvaluator(coco).evaluate(detections)
    assert result["metrics"]["mAP"] == pytest.approx(1.0)
    assert result["metrics"]["AP_50"] == pytest.approx(1.0)
    assert result["metrics"]["AR_100"] == pytest.approx(1.0)
    assert result["per_class_AP"] == pytest.approx({"cat": 1.0, "dog": 1.0, "bird": 0.0})


def test_metrics_equal_pycocotools_directly(capsys: pytest.CaptureFixture[str]) -> None:
    coco = _make_gt(seed=4)
    detections = _noisy_detections(coco)
    stats, precision = _direct_stats(coco, detections)

    result = CocoEvaluator(coco, class_names=CLASS_NAMES).evaluate(detections)
    assert capsys.readouterr().out == ""  # pycocotools' printing is captured
    assert list(result["metrics"]) == list(METRIC_NAMES)
    for name, value in zip(METRIC_NAMES, stats):
        expected = 0.0 if value == -1 else float(value)
        assert result["metrics"][name] == pytest.approx(expected, abs=1e-9), name
    assert 0.0 < result["metrics"]["mAP"] < 1.0
    assert "Average Precision" in result["summary"]

    assert list(result["per_class_AP"]) == list(CLASS_NAMES)
    for index, name in enumerate(CLASS_NAMES):
        values = precision[:, :, index, 0, -1]
        values = values[values > -1]
        expected = float(values.mean()) if values.size else 0.0
        assert result["per_class_AP"][name] == pytest.approx(expected, abs=1e-12)
    assert result["per_class_AP"]["bird"] == 0.0
    # With every evaluated class present, mAP is the mean of the per-class APs.
    present = [result["per_class_AP"][name] for name in ("cat", "dog")]
    assert result["metrics"]["mAP"] == pytest.approx(np.mean(present), abs=1e-9)


def test_verbose_prints_summary(capsys: pytest.CaptureFixture[str]) -> None:
    coco = _make_gt()
    CocoEvaluator(coco, verbose=True).evaluate(_noisy_detections(coco))
    assert "Average Precision" in capsys.readouterr().out


def test_empty_detections_give_zeros() -> None:
    coco = _make_gt()
    evaluator = CocoEvaluator(coco)
    for detections in ({}, {image_id: [] for image_id in coco.getImgIds()}):
        result = evaluator.evaluate(detections)
        assert result["metrics"] == dict.fromkeys(METRIC_NAMES, 0.0)
        assert result["per_class_AP"] == dict.fromkeys(CLASS_NAMES, 0.0)


def test_missing_images_count_as_no_detections() -> None:
    coco = _make_gt()
    detections = _noisy_detections(coco)
    partial = {image_id: dets for image_id, dets in detections.items() if image_id <= 3}
    full = CocoEvaluator(coco).evaluate(detections)["metrics"]["AR_100"]
    part = CocoEvaluator(coco).evaluate(partial)["metrics"]["AR_100"]
    assert part < full


def test_bad_inputs_are_rejected() -> None:
    coco = _make_gt()
    evaluator = CocoEvaluator(coco)
    with pytest.raises(ValueError):
        evaluator.evaluate({1: [([0, 0, 10, 10], 0.9, 3)]})
    with pytest.raises(KeyError):
        evaluator.evaluate({999: [([0, 0, 10, 10], 0.9, 0)]})
    with pytest.raises(ValueError):
        CocoEvaluator(coco, class_names=["only-one"])
