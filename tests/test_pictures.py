"""The pictures of an evaluation: confusion matrix (by hand), PR curves from the evaluator,
labels kept inside the image, the best stage's PNG files, the mining sheet's choice."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from pycocotools.coco import COCO

from executor.contact_sheet import pick
from executor.result import ResultWriter
from executor.training import STAGE_PICTURES, StageRecorder, TrainingPlan
from nanodet.evaluation.coco import CocoEvaluator, PrecisionCurves
from nanodet.evaluation.confusion import confusion_matrix, image_confusion
from nanodet.inference.detections import Detections
from nanodet.pictures.charts import bar_chart, confusion_matrix_chart, contact_sheet, pr_curves_chart
from nanodet.pictures.draw import draw_boxes, label_box, text_style
from nanodet.pictures.evaluation import pr_curve_counts, spread_ids


def dets(rows: list[tuple[float, float, float, float, float, int]]) -> Detections:
    """Detections from ``(x1, y1, x2, y2, score, label)`` rows, highest score first."""
    array = np.array(rows, dtype=np.float64).reshape(-1, 6)
    order = np.argsort(-array[:, 4], kind="stable")
    array = array[order]
    return Detections(array[:, :4].astype(np.float32), array[:, 4].astype(np.float32), array[:, 5].astype(np.int64))


def truth(rows: list[tuple[float, float, float, float, int]]) -> tuple[np.ndarray, np.ndarray]:
    array = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return array[:, :4].astype(np.float32), array[:, 4].astype(np.int64)


# --- confusion matrix ------------------------------------------------------------------------


def test_confusion_matrix_of_hand_made_boxes():
    """Two classes (0 cat, 1 dog), background last. Image 1: a right cat, a dog called cat, a
    false dog on nothing, a dog under the score threshold (so missed). Image 2: a cat with no
    detection (missed) and a duplicate cat detection on image 1's style (the second is a false
    positive: the box is taken). Image 3 has no entry in the detections at all."""
    detections = {
        1: dets(
            [
                (0, 0, 10, 10, 0.9, 0),  # on the cat at (0,0): right
                (20, 0, 30, 10, 0.8, 0),  # on the dog at (20,0): dog predicted as cat
                (50, 50, 60, 60, 0.7, 1),  # on nothing: a false dog
                (80, 0, 90, 10, 0.2, 1),  # on the dog at (80,0) but under 0.35: that dog is missed
            ]
        ),
        2: dets([(0, 0, 10, 10, 0.9, 0), (1, 0, 11, 10, 0.85, 0)]),  # two on one cat: the second is false
    }
    ground_truth = {
        1: truth([(0, 0, 10, 10, 0), (20, 0, 30, 10, 1), (80, 0, 90, 10, 1)]),
        2: truth([(0, 0, 10, 10, 0), (100, 100, 120, 120, 0)]),  # the second cat gets no detection
        3: truth([(5, 5, 15, 15, 1)]),  # no detections for this image: a missed dog
    }
    matrix = confusion_matrix(detections, ground_truth, num_classes=2, iou_thr=0.5, score_thr=0.35)
    expected = np.array(
        [
            # predicted: cat dog background
            [2, 0, 1],  # true cat: 2 right (images 1, 2), 1 missed (image 2)
            [1, 0, 2],  # true dog: 1 called cat, 2 missed (image 1 under threshold, image 3)
            [1, 1, 0],  # background: the duplicate cat, the false dog
        ]
    )
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.dtype == np.int64
    # rows sum to the boxes of each class; columns (without background) to the detections kept
    assert matrix[:2].sum() == 6 and matrix[:, :2].sum() == 5


def test_confusion_prefers_a_box_of_the_detections_own_class():
    """A dog detection overlapping a cat more than a dog still takes the dog when both qualify."""
    gt_boxes, gt_labels = truth([(0, 0, 10, 10, 0), (2, 0, 12, 10, 1)])
    box = np.array([[0, 0, 10, 10]], dtype=np.float64)  # IoU 1.0 with the cat, 0.67 with the dog
    matrix = image_confusion(box, np.array([0.9]), np.array([1]), gt_boxes, gt_labels, 2, 0.5, 0.35)
    np.testing.assert_array_equal(matrix, [[0, 0, 1], [0, 1, 0], [0, 0, 0]])
    # at IoU 0.7 only the cat qualifies: then it is confusion
    matrix = image_confusion(box, np.array([0.9]), np.array([1]), gt_boxes, gt_labels, 2, 0.7, 0.35)
    np.testing.assert_array_equal(matrix, [[0, 1, 0], [0, 0, 1], [0, 0, 0]])


def test_confusion_rejects_labels_outside_the_classes():
    with pytest.raises(ValueError, match="label 5 outside"):
        confusion_matrix({1: dets([(0, 0, 1, 1, 0.9, 5)])}, {1: truth([])}, num_classes=2)


# --- precision/recall curves from the evaluator ----------------------------------------------


def two_class_coco() -> COCO:
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20], "area": 400, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    coco.createIndex()
    return coco


def test_pr_curves_at_the_stage_threshold_by_hand():
    """Two cats, one found (score 0.9) and one false detection (0.8): precision 1 up to recall
    0.5, nothing after; AP = 51/101 at both 0.5 and the off-grid 0.55; dog has no ground truth."""
    evaluator = CocoEvaluator(two_class_coco(), iou_thrs=[0.55])
    scored = evaluator.evaluate({1: dets([(0, 0, 20, 20, 0.9, 0), (30, 0, 40, 10, 0.8, 0)])})
    assert sorted(scored["pr_curves"]) == [0.5, 0.55] and evaluator.last_pr_curves is scored["pr_curves"]
    for thr, curves in scored["pr_curves"].items():
        assert curves.iou_thr == thr and curves.precision.shape == (101, 2) and curves.recall.shape == (101,)
        np.testing.assert_allclose(curves.precision[:51, 0], 1.0)
        np.testing.assert_allclose(curves.precision[51:, 0], 0.0)
        assert (curves.precision[:, 1] == -1).all() and curves.max_recall.tolist() == [0.5, -1.0]
        np.testing.assert_allclose(curves.scores[:51, 0], 0.9, rtol=1e-6)
        assert curves.num_gt.tolist() == [2, 0]
        assert curves.ap()[0] == pytest.approx(51 / 101) and curves.ap()[1] == -1
    assert scored["metrics"]["AP_55"] == pytest.approx(51 / 101)
    assert scored["metrics"]["AP_50"] == pytest.approx(51 / 101)


def test_pr_curves_without_detections():
    scored = CocoEvaluator(two_class_coco()).evaluate({})
    curves = scored["pr_curves"][0.5]
    assert (curves.precision[:, 0] == 0).all() and (curves.precision[:, 1] == -1).all()


def test_pr_curve_counts_for_tensorboard():
    """Recall falls with the index (TensorBoard's thresholds rise); unreached points repeat the last."""
    recall = np.linspace(0, 1, 101)
    precision = np.where(recall <= 0.5 + 1e-9, 1.0, 0.0)[:, None]
    curves = PrecisionCurves(0.5, recall, precision, np.zeros_like(precision), np.array([0.5]), np.array([4]))
    arrays = pr_curve_counts(curves, 0)
    assert all(v.shape == (101,) for v in arrays.values())
    assert arrays["recall"][0] == pytest.approx(0.5) and arrays["recall"][-1] == 0.0
    assert (np.diff(arrays["recall"]) <= 0).all() and (arrays["precision"] == 1.0).all()
    assert arrays["true_positive_counts"][0] == 2 and arrays["false_negative_counts"][0] == 2
    assert (arrays["false_positive_counts"] == 0).all()


# --- drawing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(120, 160), (1080, 1920)])
def test_labels_stay_inside_the_image(size):
    """Boxes at the top edge, the right edge and the bottom corner: every label's pixels stay
    in the image, and a label at the top edge goes inside its box instead of above it."""
    height, width = size
    text_wh = (60, 14)
    for anchor in [(5, 0), (width - 10, 3), (width - 2, height - 2), (-20, -20)]:
        x1, y1, x2, y2 = label_box(anchor, text_wh, (width, height))
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert label_box((5, 0), text_wh, (width, height))[1] == 0  # inside the box, not over the edge
    assert label_box((5, 50), text_wh, (width, height))[3] == 50  # room above: right above the box
    image = np.zeros((height, width, 3), np.uint8)
    drawn = draw_boxes(image, np.array([[0, 0, width // 3, height // 3]]), np.array([0]), ["a_long_class_name"])
    assert drawn[:, :, :].any() and drawn.shape == image.shape


def test_text_scales_with_the_image():
    small, large = text_style(160, 160), text_style(2160, 3840)
    assert small[0] < large[0] and small[1] <= large[1]
    assert text_style(100, 100)[0] >= 0.35 and text_style(10000, 10000)[0] <= 2.5


def test_charts_draw_any_class_count():
    for classes in (1, 3, 40):
        names = [f"class_{i}" for i in range(classes)]
        matrix = np.arange((classes + 1) ** 2).reshape(classes + 1, classes + 1)
        assert confusion_matrix_chart(matrix, names).ndim == 3
        assert bar_chart(names, np.linspace(0, 1, classes), "AP", second=np.zeros(classes)).ndim == 3
        recall = np.linspace(0, 1, 101)
        precision = np.tile(1 - recall[:, None], (1, classes))
        assert pr_curves_chart(recall, precision, np.full(classes, 1.0), names).ndim == 3


def test_fixed_validation_images_are_spread_and_stable():
    ids = list(range(10, 110))
    assert spread_ids(ids, 4) == [10, 43, 76, 109] == spread_ids(ids, 4)
    assert spread_ids(ids[:3], 6) == ids[:3] and spread_ids(ids, 0) == []


# --- the best stage keeps the pictures -------------------------------------------------------


class FakeVal:
    img_ids = [1]

    def annotations(self, img_id: int) -> tuple[np.ndarray, np.ndarray]:
        return truth([(0, 0, 10, 10, 0)])


class FakePictures:
    def __init__(self) -> None:
        self.calls = 0

    def of(self, trainer, result) -> SimpleNamespace:
        self.calls += 1
        return SimpleNamespace(charts={stem: np.full((8, 8, 3), 200, np.uint8) for stem in STAGE_PICTURES})


def recorder(tmp_path: Path, patterns: list[str]) -> tuple[StageRecorder, FakePictures]:
    import torch

    models = tmp_path / "models"
    models.mkdir()
    config = tmp_path / "train_cfg.yml"
    config.write_text("{}\n")
    plan = TrainingPlan(
        model_config=str(config),
        models_dir=str(models),
        tensorboard_dir=str(tmp_path / "tb"),
        result_file=str(models / "result.yaml"),
        monitor_file=str(tmp_path / "monitor.txt"),
        task_id="t",
        model_stages=True,
        saved_file_patterns=patterns,
        iou_thr=0.5,
        conf_thr=0.35,
        seed=0,
        resume=False,
        device="cpu",
    )
    writer = ResultWriter(models, models / "result.yaml", True, patterns, 0.5, 0.35)
    pictures = FakePictures()
    trainer = SimpleNamespace(
        eval_model=torch.nn.Linear(1, 1), cfg=SimpleNamespace(class_names=["cat"]), val_set=FakeVal()
    )
    rec = StageRecorder(writer, plan, pictures)
    rec.trainer = trainer
    return rec, pictures


def evaluate(rec: StageRecorder, epoch: int, ap: float, is_best: bool) -> dict:
    result = SimpleNamespace(
        epoch=epoch, metrics={"AP_50": ap, "AR_100": 0.1}, per_class_AP={"cat": ap}, detections={1: dets([])}
    )
    rec.on_eval_end(rec.trainer, result, is_best)
    return yaml.safe_load(Path(rec.plan.result_file).read_text())


def test_best_stage_keeps_the_pictures_and_the_one_it_replaces_drops_them(tmp_path):
    rec, pictures = recorder(tmp_path, ["metrics.json", r"\.png$"])  # no ONNX export in this unit test
    models = Path(rec.plan.models_dir)
    pngs = [f"{stem}.png" for stem in STAGE_PICTURES]
    result = evaluate(rec, 1, 0.2, is_best=True)
    assert result["model_stages"]["epoch_1"]["files"][-4:] == pngs
    assert all((models / "epoch_1" / p).is_file() for p in pngs)
    result = evaluate(rec, 2, 0.1, is_best=False)  # not better: no pictures drawn or kept
    assert not any(f.endswith(".png") for f in result["model_stages"]["epoch_2"]["files"])
    assert pictures.calls == 1 and not list((models / "epoch_2").glob("*.png"))
    result = evaluate(rec, 3, 0.3, is_best=True)  # a new best: epoch_1 loses its pictures
    assert result["best_stage_name"] == "epoch_3"
    assert result["model_stages"]["epoch_3"]["files"][-4:] == pngs
    assert not any(f.endswith(".png") for f in result["model_stages"]["epoch_1"]["files"])
    assert not list((models / "epoch_1").glob("*.png")) and (models / "epoch_1" / "metrics.json").is_file()
    rec.writer.publish_best_to_top_level()
    assert all((models / p).is_file() for p in pngs)  # they travel with the model
    assert json.loads((models / "epoch_3" / "metrics.json").read_text())["epoch"] == 3


def test_saved_file_patterns_drop_the_pictures(tmp_path):
    rec, pictures = recorder(tmp_path, ["metrics.json", "confusion"])
    result = evaluate(rec, 1, 0.2, is_best=True)
    assert [f for f in result["model_stages"]["epoch_1"]["files"] if f.endswith(".png")] == ["confusion_matrix.png"]
    assert sorted(p.name for p in (Path(rec.plan.models_dir) / "epoch_1").glob("*.png")) == ["confusion_matrix.png"]


# --- the mining contact sheet ----------------------------------------------------------------


def test_contact_sheet_picks_top_and_bottom_of_the_decoded():
    order = [4, 0, 3, 1, 2, 5]  # ranking, best first
    read = np.array([True, True, True, True, False, True])  # candidate 4 could not be read
    assert pick(order, read, top=2, bottom=2) == ([0, 3], [2, 5])
    assert pick(order, read, top=4, bottom=3) == ([0, 3, 1, 2], [5])  # never the same candidate twice
    assert pick([], np.zeros(0, bool)) == ([], [])


def test_contact_sheet_layout():
    tile = np.zeros((50, 50, 3), np.uint8)
    sheet = contact_sheet([("top", [(tile, "#1")] * 7), ("bottom", [(tile, "#9")])], columns=3, tile=50)
    # three rows of tiles in the first section, one in the second, each with a heading and captions
    assert sheet.shape[1] == 3 * 56 + 6 and sheet.shape[0] == 2 * 30 + 4 * (50 + 20 + 6)
