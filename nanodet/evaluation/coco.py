"""COCO-style box evaluation with pycocotools.

Detections are matched to ground truth per image and class at IoU thresholds
0.50:0.05:0.95; average precision is the area under the interpolated precision/recall
curve (101 recall points), averaged over thresholds (``mAP``) and also reported at single
thresholds, per object size, and as average recall at 1/10/100 detections per image.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# Names of COCOeval.stats, in its order.
METRIC_NAMES = (
    "mAP",
    "AP_50",
    "AP_75",
    "AP_small",
    "AP_m",
    "AP_l",
    "AR_1",
    "AR_10",
    "AR_100",
    "AR_small",
    "AR_m",
    "AR_l",
)

Detection = tuple[Sequence[float], float, int]
"""One detection: box ``(x1, y1, x2, y2)`` in original-image pixels, score, 0-based label."""


def ap_key(iou_thr: float) -> str:
    """The metric name of AP at one IoU threshold: ``AP_50`` for 0.5, ``AP_70`` for 0.7."""
    return f"AP_{round(iou_thr * 100):d}"


# COCOeval's area ranges (inclusive bounds, in pixels²) and the metrics that depend on them.
AREA_RANGES = {"small": (0.0, 32.0**2), "m": (32.0**2, 96.0**2), "l": (96.0**2, 1e10)}


class CocoEvaluator:
    """Evaluates detections against a COCO ground truth.

    Args:
        coco_gt: The ground truth, a loaded ``pycocotools.coco.COCO``.
        class_names: Class names in category-id order; defaults to the category names
            of ``coco_gt``. Label ``i`` of a detection is the ``i``-th category when the
            categories are sorted by id.
        iou_thrs: IoU thresholds whose single-threshold AP is also reported (``AP_60`` for
            0.6; 0.5 and 0.75 are COCO's own ``AP_50``/``AP_75``), e.g. the threshold a
            platform ranks models by.
        verbose: Let pycocotools print its progress and summary table to stdout.
    """

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
            if not 0.0 < thr < 1.0:
                raise ValueError(f"IoU threshold {thr} outside (0, 1)")
        self.verbose = verbose

    def evaluate(self, detections: Mapping[int, Sequence[Detection]]) -> dict:
        """Run COCO box evaluation.

        Args:
            detections: For each image id, its detections as
                ``(box_xyxy, score, label)``. Images of the ground truth that are absent
                count as images without detections.

        Returns:
            A dict with

            * ``"metrics"``: the 12 COCOeval statistics as floats named by
              :data:`METRIC_NAMES` (``mAP`` is AP@[.50:.95]), plus ``AP_<t>`` for each of
              ``iou_thrs``. A metric that COCO leaves undefined (-1: no ground truth in that
              size range) is absent, never 0.
            * ``"per_class_AP"``: class name -> AP@[.50:.95] over all sizes with at most
              100 detections per image; classes without ground truth are absent.
            * ``"summary"``: pycocotools' printed summary table (empty when there were
              no detections).

            Without any detection every defined number is 0.0.
        """
        results = self._to_coco_results(detections)
        if not results:
            return self._no_detections()
        output = io.StringIO()
        with _maybe_captured(output, capture=not self.verbose):
            coco_eval = self._run(results)
            summary = io.StringIO()
            with contextlib.redirect_stdout(summary):
                coco_eval.summarize()
            if self.verbose:
                print(summary.getvalue(), end="")
            metrics = {name: float(v) for name, v in zip(METRIC_NAMES, coco_eval.stats) if v > -1}
            for thr in self.iou_thrs:
                metrics[ap_key(thr)] = self._ap_at(coco_eval, thr, results)
        return {
            "metrics": metrics,
            "per_class_AP": self._per_class_ap(coco_eval.eval["precision"]),
            "summary": summary.getvalue(),
        }

    def _run(self, results: list[dict], iou_thrs: Sequence[float] | None = None) -> COCOeval:
        coco_eval = COCOeval(self.coco_gt, self.coco_gt.loadRes(results), "bbox")
        if iou_thrs is not None:
            coco_eval.params.iouThrs = np.array(iou_thrs, dtype=np.float64)
        coco_eval.evaluate()
        coco_eval.accumulate()
        return coco_eval

    def _ap_at(self, coco_eval: COCOeval, thr: float, results: list[dict]) -> float:
        """AP at one IoU threshold, all sizes, 100 detections: read from the standard run
        when ``thr`` is on COCO's grid, else from a run at that threshold alone."""
        grid = coco_eval.params.iouThrs
        hits = np.flatnonzero(np.isclose(grid, thr))
        if hits.size:
            precision = coco_eval.eval["precision"][hits[0], :, :, 0, -1]
        else:
            precision = self._run(results, [thr]).eval["precision"][0, :, :, 0, -1]
        values = precision[precision > -1]
        return float(values.mean()) if values.size else 0.0

    def _no_detections(self) -> dict:
        """Every metric COCO would define is 0; those it would leave at -1 are absent."""
        areas = [a["area"] for a in self.coco_gt.dataset.get("annotations", []) if not a.get("iscrowd", 0)]
        defined = {name: any(low <= a <= high for a in areas) for name, (low, high) in AREA_RANGES.items()}
        names = [n for n in METRIC_NAMES if not n.endswith(("_small", "_m", "_l")) or defined[n.rsplit("_", 1)[1]]]
        metrics = dict.fromkeys(names, 0.0) | {ap_key(t): 0.0 for t in self.iou_thrs}
        return {
            "metrics": metrics if areas else {},
            "per_class_AP": dict.fromkeys(self._classes_with_gt(), 0.0),
            "summary": "",
        }

    def _classes_with_gt(self) -> list[str]:
        present = {a["category_id"] for a in self.coco_gt.dataset.get("annotations", [])}
        return [name for name, cat in zip(self.class_names, self.cat_ids) if cat in present]

    def _to_coco_results(self, detections: Mapping[int, Sequence[Detection]]) -> list[dict]:
        """Detections in the COCO results format (``bbox`` as ``x, y, w, h``)."""
        known_images = set(self.coco_gt.getImgIds())
        results = []
        for image_id, image_detections in detections.items():
            if int(image_id) not in known_images:
                raise KeyError(f"image id {image_id} is not in the ground truth")
            for box, score, label in image_detections:
                if not 0 <= int(label) < len(self.cat_ids):
                    raise ValueError(f"label {label} outside [0, {len(self.cat_ids)})")
                x1, y1, x2, y2 = (float(v) for v in box)
                results.append(
                    {
                        "image_id": int(image_id),
                        "category_id": self.cat_ids[int(label)],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": float(score),
                    }
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


def _maybe_captured(buffer: io.StringIO, capture: bool) -> contextlib.AbstractContextManager:
    """Redirect stdout into ``buffer`` when ``capture`` is set."""
    return contextlib.redirect_stdout(buffer) if capture else contextlib.nullcontext()
