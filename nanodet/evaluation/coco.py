"""COCO-style box evaluation with pycocotools.

Detections are matched to ground truth per image and class at IoU thresholds
0.50:0.05:0.95; average precision is the area under the interpolated precision/recall
curve (101 recall points), averaged over thresholds (``mAP``) and also reported at single
thresholds, per object size, and as average recall at 1/10/100 detections per image.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..config import METRIC_NAMES, ap_key, iou_percent, recall_key

Detection = tuple[Sequence[float], float, int]
"""One detection: box ``(x1, y1, x2, y2)`` in original-image pixels, score, 0-based label."""


@runtime_checkable
class BoxDetections(Protocol):
    """The detections of one image as arrays (what :class:`nanodet.inference.postprocess.Detections` is)."""

    boxes: np.ndarray  # [K, 4] x1, y1, x2, y2
    scores: np.ndarray  # [K]
    labels: np.ndarray  # [K] 0-based class index


ImageDetections: TypeAlias = BoxDetections | np.ndarray | Sequence[Detection]
"""The detections of one image in any accepted form: arrays (:class:`BoxDetections`), one
``[K, 6]`` array of rows ``x1, y1, x2, y2, score, label``, or a sequence of :data:`Detection`."""


PR_CURVE_IOU = 0.5  # the threshold whose precision/recall curves are always returned (free: on COCO's grid)


@dataclass(frozen=True)
class PrecisionCurves:
    """Per-class precision/recall curves at one IoU threshold, as COCOeval accumulates them
    (all sizes, 100 detections per image): the interpolated precision at each of the 101
    recall points, whose mean over the points is the class AP at that threshold.

    ``precision[r, c]`` is 0 at recall points class ``c`` never reaches (``recall[r] >
    max_recall[c]``) and -1 throughout for a class without ground truth; ``scores[r, c]`` is
    the detection score at which recall point ``r`` is reached (0 when it is not)."""

    iou_thr: float
    recall: np.ndarray  # [R] recall points, 0 to 1
    precision: np.ndarray  # [R, C]
    scores: np.ndarray  # [R, C]
    max_recall: np.ndarray  # [C] highest recall reached; -1 without ground truth
    num_gt: np.ndarray  # [C] ground-truth boxes that count (not crowd, not ignored)

    def ap(self) -> np.ndarray:
        """AP of each class at ``iou_thr`` (-1 without ground truth)."""
        defined = self.precision[0] > -1
        return np.where(defined, self.precision.clip(min=0).mean(axis=0), -1.0)


# COCOeval's area ranges (inclusive bounds, in pixels²) and the metrics that depend on them.
AREA_RANGES = {"small": (0.0, 32.0**2), "m": (32.0**2, 96.0**2), "l": (96.0**2, 1e10)}


class CocoEvaluator:
    """Evaluates detections against a COCO ground truth.

    Args:
        coco_gt: The ground truth, a loaded ``pycocotools.coco.COCO``.
        class_names: Class names in category-id order; defaults to the category names
            of ``coco_gt``. Label ``i`` of a detection is the ``i``-th category when the
            categories are sorted by id.
        iou_thrs: IoU thresholds (multiples of 0.01 from 0.01 to 0.99) whose single-threshold
            AP and recall are also reported (``AP_60`` and ``recall_60`` for 0.6; 0.5 and 0.75
            are COCO's own ``AP_50``/``AP_75``), e.g. the threshold a platform ranks models by.
        verbose: Let pycocotools print its progress and summary table to stdout.

    ``chunk_images`` images are evaluated at a time (see :meth:`_run`); the numbers do not
    depend on it.
    """

    chunk_images: int = 500

    def __init__(
        self,
        coco_gt: COCO,
        class_names: Sequence[str] | None = None,
        iou_thrs: Sequence[float] = (),
        verbose: bool = False,
    ) -> None:
        self.coco_gt = coco_gt
        self.cat_ids = sorted(coco_gt.getCatIds())
        if class_names is None:
            class_names = [cat["name"] for cat in coco_gt.loadCats(self.cat_ids)]
        if len(class_names) != len(self.cat_ids):
            raise ValueError(f"{len(class_names)} class names for {len(self.cat_ids)} categories")
        self.class_names = list(class_names)
        self.iou_thrs = [float(t) for t in iou_thrs]
        for thr in self.iou_thrs:
            iou_percent(thr)  # a threshold whose metrics have a name
        self.verbose = verbose
        self.last_pr_curves: dict[float, PrecisionCurves] = {}

    def evaluate(self, detections: Mapping[int, ImageDetections]) -> dict:
        """Run COCO box evaluation.

        Args:
            detections: For each image id, its detections (see :data:`ImageDetections`):
                arrays such as :class:`nanodet.inference.postprocess.Detections` (the compact form:
                no per-detection Python objects besides the one set pycocotools needs), a
                ``[K, 6]`` array, or ``(box_xyxy, score, label)`` tuples. Images of the
                ground truth that are absent count as images without detections.

        Returns:
            A dict with

            * ``"metrics"``: the 12 COCOeval statistics as floats named by
              :data:`METRIC_NAMES` (``mAP`` is AP@[.50:.95]), plus for each of ``iou_thrs``
              the AP (:func:`ap_key`) and the recall (:func:`recall_key`) at that IoU (all
              sizes, 100 detections, averaged over the classes with ground truth). A metric
              that COCO leaves undefined (-1: no ground truth in that size range) is absent,
              never 0.
            * ``"per_class_AP"``: class name -> AP@[.50:.95] over all sizes with at most
              100 detections per image; classes without ground truth are absent.
            * ``"summary"``: pycocotools' printed summary table (empty when there were
              no detections).
            * ``"pr_curves"``: IoU threshold -> :class:`PrecisionCurves`,
              for each of :attr:`curve_thresholds` (``iou_thrs`` and 0.5). The same dict is
              kept as ``last_pr_curves`` (what a training callback reads: the trainer hands
              callbacks the numbers only).

            Without any detection every defined number is 0.0.
        """
        total = self._check(detections)
        if not total:
            return self._no_detections()
        output = io.StringIO()
        with _maybe_captured(output, capture=not self.verbose):
            coco_eval = self._run(detections)
            summary = io.StringIO()
            with contextlib.redirect_stdout(summary):
                coco_eval.summarize()
            if self.verbose:
                print(summary.getvalue(), end="")
            precision = coco_eval.eval["precision"]
            metrics = {name: float(v) for name, v in zip(METRIC_NAMES, coco_eval.stats) if v > -1}
            curves = {thr: self._curves_at(coco_eval, thr, detections) for thr in self.curve_thresholds}
            for thr in self.iou_thrs:
                metrics[ap_key(thr)] = self._mean_defined(curves[thr].precision)
                metrics[recall_key(thr)] = self._mean_defined(curves[thr].max_recall)
        self.last_pr_curves = curves
        return {
            "metrics": metrics,
            "per_class_AP": self._per_class_ap(precision),
            "summary": summary.getvalue(),
            "pr_curves": curves,
        }

    @property
    def curve_thresholds(self) -> list[float]:
        """The IoU thresholds of the returned precision/recall curves: ``iou_thrs`` and 0.5."""
        return sorted({*self.iou_thrs, PR_CURVE_IOU})

    def _check(self, detections: Mapping[int, ImageDetections]) -> int:
        """The number of detections; raises on an unknown image id (``KeyError``) or a label
        outside the classes (``ValueError``), in the order of ``detections``."""
        known_images = set(self.coco_gt.getImgIds())
        total = 0
        for image_id, image_detections in detections.items():
            if int(image_id) not in known_images:
                raise KeyError(f"image id {image_id} is not in the ground truth")
            _, _, labels = _as_arrays(image_detections)
            outside = (labels < 0) | (labels >= len(self.cat_ids))
            if outside.any():
                raise ValueError(f"label {labels[outside][0]} outside [0, {len(self.cat_ids)})")
            total += len(labels)
        return total

    def _run(self, detections: Mapping[int, ImageDetections], iou_thrs: Sequence[float] | None = None) -> COCOeval:
        """COCOeval, evaluated and accumulated, with only ``eval`` and ``params`` kept.

        Exactly what ``COCOeval(gt, gt.loadRes(all results)).evaluate(); .accumulate()``
        computes, but the images are evaluated ``chunk_images`` at a time: COCOeval's
        per-image, per-class matching (``evaluateImg``) depends only on that image's boxes,
        so only one chunk's detections exist as pycocotools objects at a time, and each
        match record keeps just what ``accumulate`` reads (scores as float64 arrays and
        whether a detection matched as booleans, instead of float64 ground-truth ids).
        """
        by_id = {int(image_id): dets for image_id, dets in detections.items()}
        image_ids = [int(i) for i in np.unique(self.coco_gt.getImgIds())]
        coco_eval = None
        eval_imgs: list[dict | None] = []
        for first in range(0, len(image_ids), self.chunk_images):
            chunk = image_ids[first : first + self.chunk_images]
            results = self._to_coco_results({i: by_id[i] for i in chunk if i in by_id})
            coco_eval = COCOeval(self.coco_gt, self._load_results(results), "bbox")
            del results  # now owned by the results COCO only
            coco_eval.params.imgIds = chunk
            if iou_thrs is not None:
                coco_eval.params.iouThrs = np.array(iou_thrs, dtype=np.float64)
            coco_eval.evaluate()
            if not eval_imgs:  # laid out [category][area range][image], as COCOeval.evaluate does
                eval_imgs = [None] * (len(coco_eval.params.catIds) * len(coco_eval.params.areaRng) * len(image_ids))
            per_block = len(chunk)
            for block in range(len(coco_eval.evalImgs) // per_block):
                target = block * len(image_ids) + first
                records = coco_eval.evalImgs[block * per_block : (block + 1) * per_block]
                eval_imgs[target : target + per_block] = [_compact(record) for record in records]
            coco_eval.evalImgs, coco_eval.ious, coco_eval._dts, coco_eval.cocoDt = [], {}, {}, None
        coco_eval.params.imgIds = image_ids
        coco_eval._paramsEval = copy.deepcopy(coco_eval.params)
        coco_eval.evalImgs = eval_imgs
        coco_eval.accumulate()
        # summarize() reads only ``eval`` and ``params``: drop the match records now
        coco_eval.evalImgs = []
        return coco_eval

    def _load_results(self, results: list[dict]) -> COCO:
        """``coco_gt.loadRes(results)``, which cannot take an empty list: then a results COCO
        without annotations."""
        if results:
            return self.coco_gt.loadRes(results)
        empty = COCO()
        empty.dataset = {
            "images": list(self.coco_gt.dataset["images"]),
            "annotations": [],
            "categories": copy.deepcopy(self.coco_gt.dataset["categories"]),
        }
        empty.createIndex()
        return empty

    def _curves_at(self, coco_eval: COCOeval, thr: float, detections: Mapping[int, ImageDetections]) -> PrecisionCurves:
        """The curves at one IoU threshold (all sizes, 100 detections): read from the standard
        run when ``thr`` is on its grid, else from a run at that threshold alone."""
        hits = np.flatnonzero(np.isclose(coco_eval.params.iouThrs, thr))
        if hits.size:
            index, accumulated = int(hits[0]), coco_eval.eval
        else:
            index, accumulated = 0, self._run(detections, [thr]).eval
        return PrecisionCurves(
            iou_thr=float(thr),
            recall=np.asarray(coco_eval.params.recThrs, dtype=np.float64).copy(),
            precision=np.array(accumulated["precision"][index, :, :, 0, -1], dtype=np.float64),
            scores=np.array(accumulated["scores"][index, :, :, 0, -1], dtype=np.float64),
            max_recall=np.array(accumulated["recall"][index, :, 0, -1], dtype=np.float64),
            num_gt=self._gt_counts(),
        )

    @staticmethod
    def _mean_defined(values: np.ndarray) -> float:
        """The mean over the classes with ground truth of a curve's precision ([R, C]: the AP)
        or of its recall ([C]), COCO's -1 entries left out; 0 when no class has any."""
        values = values[values > -1]
        return float(values.mean()) if values.size else 0.0

    def _gt_counts(self) -> np.ndarray:
        """Ground-truth boxes per class that COCOeval counts (neither crowd nor ``ignore``)."""
        index = {cat: i for i, cat in enumerate(self.cat_ids)}
        counts = np.zeros(len(self.cat_ids), dtype=np.int64)
        for ann in self.coco_gt.dataset.get("annotations", []):
            if not ann.get("iscrowd", 0) and not ann.get("ignore", 0) and ann["category_id"] in index:
                counts[index[ann["category_id"]]] += 1
        return counts

    def _no_detections(self) -> dict:
        """Every metric COCO would define is 0; those it would leave at -1 are absent."""
        areas = [a["area"] for a in self.coco_gt.dataset.get("annotations", []) if not a.get("iscrowd", 0)]
        defined = {name: any(low <= a <= high for a in areas) for name, (low, high) in AREA_RANGES.items()}
        names = [n for n in METRIC_NAMES if not n.endswith(("_small", "_m", "_l")) or defined[n.rsplit("_", 1)[1]]]
        metrics = dict.fromkeys(names, 0.0)
        for thr in self.iou_thrs:
            metrics |= {ap_key(thr): 0.0, recall_key(thr): 0.0}
        self.last_pr_curves = {thr: self._empty_curves(thr) for thr in self.curve_thresholds}
        return {
            "metrics": metrics if areas else {},
            "per_class_AP": dict.fromkeys(self._classes_with_gt(), 0.0),
            "summary": "",
            "pr_curves": self.last_pr_curves,
        }

    def _empty_curves(self, thr: float) -> PrecisionCurves:
        """The curves of an evaluation without detections: precision 0 where a class has ground
        truth (-1 where it has none), no recall reached."""
        num_gt = self._gt_counts()
        recall = np.linspace(0.0, 1.0, 101)
        defined = np.where(num_gt > 0, 0.0, -1.0)
        return PrecisionCurves(
            iou_thr=float(thr),
            recall=recall,
            precision=np.tile(defined, (len(recall), 1)),
            scores=np.zeros((len(recall), len(num_gt))),
            max_recall=defined.copy(),
            num_gt=num_gt,
        )

    def _classes_with_gt(self) -> list[str]:
        present = {a["category_id"] for a in self.coco_gt.dataset.get("annotations", [])}
        return [name for name, cat in zip(self.class_names, self.cat_ids) if cat in present]

    def _to_coco_results(self, detections: Mapping[int, ImageDetections]) -> list[dict]:
        """Detections (already checked) in the COCO results format (``bbox`` as ``x, y, w, h``),
        built image by image from arrays: the dicts ``COCO.loadRes`` takes over and nothing else."""
        cat_ids = np.asarray(self.cat_ids, dtype=np.int64)
        results: list[dict] = []
        for image_id, image_detections in detections.items():
            boxes, scores, labels = _as_arrays(image_detections)
            boxes[:, 2:] -= boxes[:, :2]  # x1, y1, x2, y2 -> x, y, w, h (boxes is our own float64 copy)
            # "segmentation" present (empty, one shared tuple) keeps loadRes from attaching a
            # polygon to every box: box evaluation reads only "bbox", "score" and "area"
            results.extend(
                {
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": box,
                    "score": score,
                    "segmentation": _NO_SEGMENTATION,
                }
                for box, score, cat in zip(boxes.tolist(), scores.tolist(), cat_ids[labels].tolist())
            )
        return results

    def _per_class_ap(self, precision: np.ndarray) -> dict[str, float]:
        """AP@[.50:.95] of each class from COCOeval's accumulated precision.

        ``precision`` has shape ``[iou_thr, recall, class, area_range, max_dets]``; the
        class AP is the mean over thresholds and recall points of the "all" area range
        with the largest detection limit; a class without ground truth (all -1) is absent.
        """
        per_class = {}
        for index, name in enumerate(self.class_names):
            values = precision[:, :, index, 0, -1]
            values = values[values > -1]
            if values.size:
                per_class[name] = float(np.mean(values))
        return per_class


_NO_SEGMENTATION: tuple = ()


def _compact(record: dict | None) -> dict | None:
    """A COCOeval ``evaluateImg`` record reduced to what ``accumulate`` reads, with the same
    outcome: scores as a float64 array, matches as booleans (``accumulate`` only tests them
    for non-zero), the ignore flags as they are."""
    if record is None:
        return None
    return {
        "dtScores": np.asarray(record["dtScores"], dtype=np.float64),
        "dtMatches": record["dtMatches"] != 0,
        "dtIgnore": record["dtIgnore"],
        "gtIgnore": record["gtIgnore"],
    }


def _as_arrays(detections: ImageDetections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes [K, 4] float64, scores [K] float64, labels [K] int64)`` of one image; ``boxes``
    is always a fresh array the caller may change. Scores and coordinates are converted
    exactly (float32 -> float64); labels are truncated to integers like ``int()``."""
    if isinstance(detections, np.ndarray):
        rows = detections.reshape(0, 6) if detections.size == 0 else detections
        if rows.ndim != 2 or rows.shape[1] != 6:
            raise ValueError(f"detection array of shape {detections.shape}, expected [K, 6]")
        boxes = rows[:, :4].astype(np.float64)
        scores = rows[:, 4].astype(np.float64)
        labels = rows[:, 5]
    elif isinstance(detections, BoxDetections):
        boxes = np.array(detections.boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(detections.scores, dtype=np.float64).reshape(-1)
        labels = np.asarray(detections.labels).reshape(-1)
    else:
        boxes = np.array([[float(v) for v in box] for box, _, _ in detections], dtype=np.float64).reshape(-1, 4)
        scores = np.array([float(score) for _, score, _ in detections], dtype=np.float64)
        labels = np.array([int(label) for _, _, label in detections], dtype=np.int64)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"{len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels")
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all():
            raise ValueError("non-finite label")
        labels = np.trunc(labels)
    return boxes, scores, labels.astype(np.int64, copy=False)


def _maybe_captured(buffer: io.StringIO, capture: bool) -> contextlib.AbstractContextManager:
    """Redirect stdout into ``buffer`` when ``capture`` is set."""
    return contextlib.redirect_stdout(buffer) if capture else contextlib.nullcontext()
