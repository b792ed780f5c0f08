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


class CocoEvaluator:
    """Evaluates detections against a COCO ground truth.

    Args:
        coco_gt: The ground truth, a loaded ``pycocotools.coco.COCO``.
        class_names: Class names in category-id order; defaults to the category names
            of ``coco_gt``. Label ``i`` of a detection is the ``i``-th category when the
            categories are sorted by id.
        verbose: Let pycocotools print its progress and summary table to stdout.
    """

    def __init__(
        self, coco_gt: COCO, class_names: Sequence[str] | None = None, verbose: bool = False
    ) -> None:
        self.coco_gt = coco_gt
        self.cat_ids = sorted(coco_gt.getCatIds())
        if class_names is None:
            class_names = [cat["name"] for cat in coco_gt.loadCats(self.cat_ids)]
        if len(class_names) != len(self.cat_ids):
            raise ValueError(
                f"{len(class_names)} class names for {len(self.cat_ids)} categories"
            )
        self.class_names = list(class_names)
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
              :data:`METRIC_NAMES` (``mAP`` is AP@[.50:.95]). Where pycocotools reports
              -1 (no ground truth in that size range) the value is 0.0.
            * ``"per_class_AP"``: class name -> AP@[.50:.95] over all sizes with at most
              100 detections per image, 0.0 for a class without ground truth.
            * ``"summary"``: pycocotools' printed summary table (empty when there were
              no detections).

            Without any detection every number is 0.0.
        """
        results = self._to_coco_results(detections)
        if not results:
            return {
                "metrics": dict.fromkeys(METRIC_NAMES, 0.0),
                "per_class_AP": dict.fromkeys(self.class_names, 0.0),
                "summary": "",
            }
        output = io.StringIO()
        with _maybe_captured(output, capture=not self.verbose):
            coco_eval = COCOeval(self.coco_gt, self.coco_gt.loadRes(results), "bbox")
            coco_eval.evaluate()
            coco_eval.accumulate()
            summary = io.StringIO()
            with contextlib.redirect_stdout(summary):
                coco_eval.summarize()
            if self.verbose:
                print(summary.getvalue(), end="")
        metrics = {
            name: max(float(value), 0.0) for name, value in zip(METRIC_NAMES, coco_eval.stats)
        }
        return {
            "metrics": metrics,
            "per_class_AP": self._per_class_ap(coco_eval.eval["precision"]),
            "summary": summary.getvalue(),
        }

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
        with the largest detection limit, skipping the -1 entries of absent classes.
        """
        per_class = {}
        for index, name in enumerate(self.class_names):
            values = precision[:, :, index, 0, -1]
            values = values[values > -1]
            per_class[name] = float(np.mean(values)) if values.size else 0.0
        return per_class


def _maybe_captured(buffer: io.StringIO, capture: bool) -> contextlib.AbstractContextManager:
    """Redirect stdout into ``buffer`` when ``capture`` is set."""
    return contextlib.redirect_stdout(buffer) if capture else contextlib.nullcontext()
