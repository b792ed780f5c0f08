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
from nanodet.inference.detections import Detections

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
    assert result["per_class_AP"] == pytest.approx({"cat": 1.0, "dog": 1.0})  # "bird" has no GT: absent


def test_metrics_equal_pycocotools_directly(capsys: pytest.CaptureFixture[str]) -> None:
    coco = _make_gt(seed=4)
    detections = _noisy_detections(coco)
    stats, precision = _direct_stats(coco, detections)

    result = CocoEvaluator(coco, class_names=CLASS_NAMES).evaluate(detections)
    assert capsys.readouterr().out == ""  # pycocotools' printing is captured
    assert list(result["metrics"]) == [name for name, value in zip(METRIC_NAMES, stats) if value != -1]
    for name, value in zip(METRIC_NAMES, stats):
        if value != -1:
            assert result["metrics"][name] == pytest.approx(float(value), abs=1e-9), name
    assert 0.0 < result["metrics"]["mAP"] < 1.0
    assert "Average Precision" in result["summary"]

    assert list(result["per_class_AP"]) == ["cat", "dog"]  # "bird" has no ground truth: absent, not 0
    for index, name in enumerate(CLASS_NAMES[:2]):
        values = precision[:, :, index, 0, -1]
        values = values[values > -1]
        assert result["per_class_AP"][name] == pytest.approx(float(values.mean()), abs=1e-12)
    # With every evaluated class present, mAP is the mean of the per-class APs.
    present = [result["per_class_AP"][name] for name in ("cat", "dog")]
    assert result["metrics"]["mAP"] == pytest.approx(np.mean(present), abs=1e-9)


def test_verbose_prints_summary(capsys: pytest.CaptureFixture[str]) -> None:
    coco = _make_gt()
    CocoEvaluator(coco, verbose=True).evaluate(_noisy_detections(coco))
    assert "Average Precision" in capsys.readouterr().out


def test_empty_detections_give_zeros() -> None:
    coco = _make_gt()
    stats, _ = _direct_stats(coco, _noisy_detections(coco))  # which metrics COCO defines for this GT
    evaluator = CocoEvaluator(coco, iou_thrs=[0.6])
    for detections in ({}, {image_id: [] for image_id in coco.getImgIds()}):
        result = evaluator.evaluate(detections)
        defined = [name for name, value in zip(METRIC_NAMES, stats) if value != -1]
        assert result["metrics"] == dict.fromkeys(defined, 0.0) | {"AP_60": 0.0, "recall_60": 0.0}
        assert result["per_class_AP"] == {"cat": 0.0, "dog": 0.0}


def _two_box_gt() -> COCO:
    """One image, two 100×100 "cat" boxes (area 10000: COCO's large range only)."""
    coco = COCO()
    anns = [
        {"id": i + 1, "image_id": 1, "category_id": 3, "bbox": [x, 0, 100, 100], "area": 10000.0, "iscrowd": 0}
        for i, x in enumerate((0, 200))
    ]
    coco.dataset = {
        "images": [{"id": 1, "file_name": "1.jpg", "width": 400, "height": 200}],
        "annotations": anns,
        "categories": [{"id": cid, "name": name} for cid, name in zip((3, 7, 9), CLASS_NAMES)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def test_ap_at_one_iou_threshold_hand_computed() -> None:
    """Two GT boxes; one exact detection (score 0.9) and one shifted by 29 px (score 0.8):
    IoU = (100-29)·100 / ((100+29)·100) = 71/129 = 0.5504. At IoU 0.5 and 0.55 both are true
    positives: AP = 1. At 0.58 (off COCO's grid) and at 0.6 … 0.95 the shifted one is a false
    positive ranked after a true positive: precision 1 up to recall 0.5, then nothing; COCO's
    101-point interpolation gives 51/101 (recall points 0.00 … 0.50). mAP over the 10
    thresholds = (2·1 + 8·51/101) / 10."""
    coco = _two_box_gt()
    detections = {1: [([0, 0, 100, 100], 0.9, 0), ([229, 0, 329, 100], 0.8, 0)]}
    result = CocoEvaluator(coco, iou_thrs=[0.5, 0.58, 0.6]).evaluate(detections)
    metrics = result["metrics"]
    assert metrics["AP_50"] == pytest.approx(1.0)
    assert metrics["AP_58"] == pytest.approx(51 / 101)
    assert metrics["AP_60"] == pytest.approx(51 / 101)
    assert metrics["mAP"] == pytest.approx((2 + 8 * 51 / 101) / 10)
    # no small or medium ground truth: those metrics are undefined (COCO's -1) and absent, never 0
    assert not {"AP_small", "AP_m", "AR_small", "AR_m"} & set(metrics)
    assert metrics["AP_l"] == pytest.approx(metrics["mAP"])
    assert result["per_class_AP"] == pytest.approx({"cat": metrics["mAP"]})


def test_recall_at_one_iou_threshold_hand_computed() -> None:
    """The recall at one IoU (what a stage's mAR is), not COCO's AR@100 over IoU 0.50:0.95.
    "cat": two boxes, one found exactly and one by a box shifted 29 px (IoU 71/129 = 0.5504);
    "dog": one box, never found; "bird": no ground truth, one detection (a false positive).
    Per class the recall at IoU t is cat: 1 for t <= 0.55, else 1/2; dog: 0; bird: undefined,
    so it is left out of the mean over classes:
    recall@0.5 = (1 + 0) / 2, recall@0.6 = recall@0.58 = (1/2 + 0) / 2, recall@0.05 = 1/2;
    AR@100 = mean over the 10 thresholds = ((2·1 + 8·1/2) / 10 + 0) / 2 = 0.3."""
    coco = COCO()
    boxes = {1: ([0, 0, 100, 100], 3), 2: ([200, 0, 100, 100], 3), 3: ([0, 150, 100, 100], 7)}
    coco.dataset = {
        "images": [{"id": 1, "file_name": "1.jpg", "width": 400, "height": 300}],
        "annotations": [
            {"id": i, "image_id": 1, "category_id": cat, "bbox": box, "area": 10000.0, "iscrowd": 0}
            for i, (box, cat) in boxes.items()
        ],
        "categories": [{"id": cid, "name": name} for cid, name in zip((3, 7, 9), CLASS_NAMES)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    detections = {1: [([29, 0, 129, 100], 0.9, 0), ([200, 0, 300, 100], 0.8, 0), ([300, 150, 380, 250], 0.7, 2)]}
    metrics = CocoEvaluator(coco, iou_thrs=[0.05, 0.5, 0.58, 0.6]).evaluate(detections)["metrics"]
    assert metrics["recall_50"] == pytest.approx(0.5)
    assert metrics["recall_58"] == pytest.approx(0.25)  # off COCO's grid: a run of its own
    assert metrics["recall_60"] == pytest.approx(0.25)
    assert metrics["recall_05"] == pytest.approx(0.5)
    assert metrics["AR_100"] == pytest.approx(0.3)  # the number mAR used to be
    assert metrics["AP_50"] == pytest.approx(0.5) and metrics["AP_05"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "iou_thr, ap, recall",
    [
        (0.01, "AP_01", "recall_01"),
        (0.05, "AP_05", "recall_05"),
        (0.07, "AP_07", "recall_07"),
        (0.1, "AP_10", "recall_10"),
        (0.5, "AP_50", "recall_50"),
        (0.95, "AP_95", "recall_95"),
        (0.99, "AP_99", "recall_99"),
    ],
)
def test_metric_names_at_an_iou_have_two_digits(iou_thr, ap, recall) -> None:
    """Every threshold 0.01 ... 0.99 has its own name, which the model config's save_key takes."""
    from nanodet.config import EvaluatorConfig, ap_key, recall_key

    assert (ap_key(iou_thr), recall_key(iou_thr)) == (ap, recall)
    assert EvaluatorConfig(save_key=ap).iou_thrs == [iou_thr]


@pytest.mark.parametrize("iou_thr", [0.0, 1.0, 0.055, 1e-9, 0.9999999, 0.001, 1.5, -0.5])
def test_an_iou_without_a_two_digit_name_is_refused(iou_thr) -> None:
    """0.055 would be named like 0.05 or 0.06: refused, as are values outside 0.01 ... 0.99."""
    from nanodet.config import ap_key

    with pytest.raises(ValueError, match="is not one of 0.01, 0.02, ..., 0.99"):
        ap_key(iou_thr)
    with pytest.raises(ValueError, match="is not one of 0.01, 0.02, ..., 0.99"):
        CocoEvaluator(_two_box_gt(), iou_thrs=[iou_thr])


@pytest.mark.parametrize("save_key", ["AP_5", "AP_00", "AP_100", "AP_5a", "AR_50"])
def test_save_key_names_only_metrics_that_exist(save_key) -> None:
    from pydantic import ValidationError

    from nanodet.config import EvaluatorConfig

    with pytest.raises(ValidationError, match="is not a metric"):
        EvaluatorConfig(save_key=save_key)


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


def _array_detections(coco: COCO, seed: int = 2, per_image: int = 20) -> dict[int, Detections]:
    """Detections as the post-processing returns them (float32, sorted by score): jittered
    GT copies (some with a wrong class) and random boxes, for all images but the last; one
    image has none."""
    rng = np.random.default_rng(seed)
    detections: dict[int, Detections] = {}
    image_ids = coco.getImgIds()
    for image_id in image_ids[:-1]:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        gt = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        xywh = np.repeat(gt, 2, axis=0)
        xywh += rng.normal(0, 0.05, size=xywh.shape) * xywh[:, [2, 3, 2, 3]]
        labels = np.repeat([_label_of(a["category_id"]) for a in anns], 2)
        labels[rng.random(len(labels)) < 0.2] = 2
        extra = per_image - len(xywh)
        wh = rng.uniform(5, 250, size=(extra, 2))
        xywh = np.concatenate([xywh, np.concatenate([rng.uniform(0, 400, size=(extra, 2)), wh], axis=1)])
        labels = np.concatenate([labels, rng.integers(0, 3, size=extra)])
        scores = rng.uniform(0.05, 1.0, size=per_image)
        scores[:3] = scores[3]  # ties: the order within an image must be kept
        order = np.argsort(-scores, kind="stable")
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        detections[image_id] = Detections(
            boxes[order].astype(np.float32), scores[order].astype(np.float32), labels[order].astype(np.int64)
        )
    detections[image_ids[len(image_ids) // 2]] = Detections(
        np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    )
    return detections


def _as_tuples(detections: dict[int, Detections]) -> dict[int, list]:
    """The tuple form (what the trainer passed before it handed over the arrays)."""
    return {
        image_id: [(box.tolist(), float(s), int(lab)) for box, s, lab in zip(d.boxes, d.scores, d.labels)]
        for image_id, d in detections.items()
    }


def _as_rows(detections: dict[int, Detections]) -> dict[int, np.ndarray]:
    """``[K, 6]`` float64 rows ``x1, y1, x2, y2, score, label``."""
    return {
        image_id: np.concatenate([d.boxes, d.scores[:, None], d.labels[:, None]], axis=1, dtype=np.float64)
        for image_id, d in detections.items()
    }


@pytest.mark.parametrize("chunk_images", [500, 7, 1])
def test_array_and_tuple_forms_give_identical_numbers(chunk_images: int) -> None:
    """The compact forms (Detections, [K, 6] arrays) score exactly like the tuples, and like
    pycocotools run by hand on the tuples, however many images are evaluated at a time."""
    coco = _make_gt(seed=5, num_images=40)
    detections = _array_detections(coco)
    tuples = _as_tuples(detections)
    stats, precision = _direct_stats(coco, tuples)

    def score(dets: dict) -> dict:
        evaluator = CocoEvaluator(coco, class_names=CLASS_NAMES, iou_thrs=[0.5, 0.62])  # 0.62: a second run
        evaluator.chunk_images = chunk_images
        return evaluator.evaluate(dets)

    reference = score(tuples)
    coco_metrics = {name: float(value) for name, value in zip(METRIC_NAMES, stats) if value != -1}
    assert {k: v for k, v in reference["metrics"].items() if k in METRIC_NAMES} == coco_metrics
    assert reference["metrics"]["AP_50"] == pytest.approx(coco_metrics["AP_50"], abs=1e-12)
    assert 0.05 < reference["metrics"]["mAP"] < 0.9  # far from both ends: a non-trivial case
    assert 0.0 < reference["metrics"]["AP_62"] <= reference["metrics"]["AP_50"]
    expected_per_class = {}
    for index, name in enumerate(CLASS_NAMES[:2]):
        values = precision[:, :, index, 0, -1]
        expected_per_class[name] = float(values[values > -1].mean())
    assert reference["per_class_AP"] == expected_per_class
    for form in (detections, _as_rows(detections)):
        result = score(form)
        assert result["metrics"] == reference["metrics"]
        assert result["per_class_AP"] == reference["per_class_AP"]
        assert result["summary"] == reference["summary"]


def test_bad_inputs_are_rejected_in_array_forms() -> None:
    coco = _make_gt()
    evaluator = CocoEvaluator(coco)
    box = np.array([[0, 0, 10, 10]], np.float32)
    with pytest.raises(ValueError):
        evaluator.evaluate({1: Detections(box, np.array([0.9], np.float32), np.array([3]))})
    with pytest.raises(ValueError):
        evaluator.evaluate({1: np.array([[0, 0, 10, 10, 0.9, -1]])})
    with pytest.raises(ValueError):
        evaluator.evaluate({1: np.zeros((2, 5))})  # not [K, 6]
    with pytest.raises(KeyError):
        evaluator.evaluate({999: Detections(box, np.array([0.9], np.float32), np.array([0]))})
    with pytest.raises(KeyError):  # also without any detection, as for the tuple form
        evaluator.evaluate({999: np.zeros((0, 6))})
