"""Data loading: pre-processing, augmentation and batching."""

from nanodet.data.transforms import (
    EvalTransform,
    TrainTransform,
    normalize_chw,
    preprocess,
    resize_matrix,
    stack_batch,
    warp_boxes,
)

__all__ = [
    "EvalTransform",
    "TrainTransform",
    "normalize_chw",
    "preprocess",
    "resize_matrix",
    "stack_batch",
    "warp_boxes",
]
