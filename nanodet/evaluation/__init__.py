"""Detection metrics."""

from .coco import METRIC_NAMES, CocoEvaluator

__all__ = ["METRIC_NAMES", "CocoEvaluator"]
