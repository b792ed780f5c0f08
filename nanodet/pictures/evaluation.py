"""What an evaluation looks like: per-class precision/recall curves at one IoU threshold, a
confusion matrix at one score threshold, per-class AP bars, and a fixed handful of validation
images with the predictions and the ground truth side by side.

:class:`EvalPictures` renders them once per evaluation, for whoever asks first (TensorBoard,
a stage writer that keeps them as PNG files); later requests for the same evaluation get the
same pictures. Rank 0 only: the curves come from the evaluator, which runs there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.image_io import ImageReadError, read_image
from ..evaluation.coco import PR_CURVE_IOU, PrecisionCurves
from ..evaluation.confusion import confusion_matrix
from .charts import bar_chart, confusion_matrix_chart, grid, pr_curves_chart, side_by_side
from .draw import draw_boxes, fit_within

if TYPE_CHECKING:
    from ..engine.trainer import EvalResult, Trainer


@dataclass
class Pictures:
    """The pictures of one evaluation (BGR uint8 arrays)."""

    epoch: int
    iou_thr: float
    conf_thr: float
    confusion: np.ndarray  # [C + 1, C + 1] counts, see nanodet.evaluation.confusion
    curves: PrecisionCurves | None  # None when the evaluator has none at iou_thr
    charts: dict[str, np.ndarray] = field(default_factory=dict)  # file stem -> picture
    val_images: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (image stem, side by side)


def spread_ids(ids: list[int], count: int) -> list[int]:
    """``count`` ids spread evenly over ``ids`` (first and last included), in order; all of them
    when there are no more than ``count``. The same list gives the same choice every time."""
    if count <= 0:
        return []
    if len(ids) <= count:
        return list(ids)
    positions = np.linspace(0, len(ids) - 1, count).round().astype(int)
    return [ids[i] for i in positions]


class EvalPictures:
    """Renders :class:`Pictures` of an evaluation.

    Args:
        iou_thr: IoU of the curves and of the confusion matrix's matches; None: the one the
            config's ``evaluator.save_key`` names (``AP_50`` → 0.5), else 0.5.
        conf_thr: detections at or above this score count in the confusion matrix and are
            drawn on the validation images.
        num_images: validation images shown, spread evenly over the validation set (the
            same ones every evaluation, so progress is visible).
        max_side: the validation images are shrunk to this longer side before drawing.
    """

    def __init__(
        self, iou_thr: float | None = None, conf_thr: float = 0.35, num_images: int = 6, max_side: int = 320
    ) -> None:
        self.iou_thr = iou_thr
        self.conf_thr = conf_thr
        self.num_images = num_images
        self.max_side = max_side
        self._latest: tuple[int, Pictures] | None = None

    def iou_for(self, trainer: Trainer) -> float:
        if self.iou_thr is not None:
            return self.iou_thr
        named = trainer.cfg.evaluator.iou_thrs
        return named[0] if named else PR_CURVE_IOU

    def of(self, trainer: Trainer, result: EvalResult) -> Pictures:
        """The pictures of ``result`` (rendered on the first call for it)."""
        if self._latest is not None and self._latest[0] == id(result) and self._latest[1].epoch == result.epoch:
            return self._latest[1]
        pictures = self.render(trainer, result)
        self._latest = (id(result), pictures)
        return pictures

    def render(self, trainer: Trainer, result: EvalResult) -> Pictures:
        names = list(trainer.cfg.class_names)
        iou = self.iou_for(trainer)
        val = trainer.val_set
        truth = {i: val.annotations(i) for i in val.img_ids}
        matrix = confusion_matrix(result.detections, truth, len(names), iou, self.conf_thr)
        curves = _curves_at(getattr(trainer.evaluator, "last_pr_curves", {}), iou)
        pictures = Pictures(result.epoch, iou, self.conf_thr, matrix, curves)
        at = f"IoU {iou:.2f}"
        pictures.charts["confusion_matrix"] = confusion_matrix_chart(
            matrix, names, f"epoch {result.epoch}: confusion at {at}, score >= {self.conf_thr:.2f}"
        )
        pictures.charts["per_class_AP"] = self._ap_chart(names, curves, result, at)
        if curves is not None:
            pictures.charts["pr_curve"] = pr_curves_chart(
                curves.recall,
                curves.precision,
                curves.max_recall,
                names,
                f"epoch {result.epoch}: precision/recall, {at}",
            )
        pictures.val_images = self._val_images(trainer, result, names, truth)
        if pictures.val_images:
            pictures.charts["val_images"] = grid(
                [p for _, p in pictures.val_images],
                columns=2,
                title=f"epoch {result.epoch}: predicted (score >= {self.conf_thr:.2f}) | ground truth",
            )
        return pictures

    def _ap_chart(self, names: list[str], curves: PrecisionCurves | None, result: EvalResult, at: str) -> np.ndarray:
        title = f"epoch {result.epoch}: AP per class"
        if curves is None:
            shown = [n for n in names if n in result.per_class_AP]
            return bar_chart(shown, [result.per_class_AP[n] for n in shown], f"{title} (IoU 0.50:0.95)")
        ap = curves.ap()
        shown = [i for i, value in enumerate(ap) if value > -1]
        return bar_chart(
            [names[i] for i in shown],
            [float(ap[i]) for i in shown],
            title,
            second=[result.per_class_AP.get(names[i], 0.0) for i in shown],
            legend=(f"AP at {at}", "AP at IoU 0.50:0.95"),
        )

    def _val_images(
        self, trainer: Trainer, result: EvalResult, names: list[str], truth: dict
    ) -> list[tuple[str, np.ndarray]]:
        val = trainer.val_set
        out = []
        for img_id in spread_ids(list(val.img_ids), self.num_images):
            info = val.coco.imgs[img_id]
            try:
                image = read_image(val.img_dir / info["file_name"])
            except ImageReadError:
                continue
            small, factor = fit_within(image, self.max_side)
            dets = result.detections.get(img_id)
            if dets is not None:
                dets = dets.above(self.conf_thr)
                predicted = draw_boxes(small, dets.boxes * factor, dets.labels, names, dets.scores)
            else:
                predicted = small.copy()
            gt_boxes, gt_labels = truth[img_id]
            actual = draw_boxes(small, np.asarray(gt_boxes) * factor, gt_labels, names)
            count = 0 if dets is None else len(dets)
            pair = side_by_side(predicted, actual, (f"predicted: {count}", f"ground truth: {len(gt_labels)}"))
            out.append((Path(info["file_name"]).stem, pair))
        return out


def _curves_at(curves: dict[float, PrecisionCurves], iou: float) -> PrecisionCurves | None:
    for thr, value in curves.items():
        if np.isclose(thr, iou):
            return value
    return None


def pr_curve_counts(curves: PrecisionCurves, index: int) -> dict[str, np.ndarray]:
    """One class's curve in the arrays of TensorBoard's PR-curve summary (``add_pr_curve_raw``),
    ordered as its thresholds are: recall falling from the last recall point the class reaches
    down to 0 (recall points it never reaches repeat the last one reached). The counts are
    those the interpolated curve implies: ``tp = recall × boxes``, ``fp = tp (1 - p) / p``."""
    recall_points = curves.recall
    precision = np.clip(curves.precision[:, index], 0.0, None)
    reached = recall_points <= curves.max_recall[index] + 1e-9
    last = int(np.flatnonzero(reached)[-1]) if reached.any() else 0
    recall = np.where(reached, recall_points, recall_points[last])
    precision = np.where(reached, precision, precision[last])
    if not reached.any():
        recall, precision = np.zeros_like(recall_points), np.zeros_like(precision)
    boxes = float(curves.num_gt[index])
    tp = np.round(recall * boxes)
    fp = np.round(np.divide(tp * (1.0 - precision), precision, out=np.zeros_like(tp), where=precision > 0))
    arrays = {
        "true_positive_counts": tp,
        "false_positive_counts": fp,
        "true_negative_counts": np.zeros_like(tp),
        "false_negative_counts": boxes - tp,
        "precision": precision,
        "recall": recall,
    }
    return {key: value[::-1].copy() for key, value in arrays.items()}
