"""Run a model over an evaluation loader and score it with COCO mAP."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..data.coco_dataset import TrainBatch
from ..inference.detections import Detections
from ..inference.postprocess import postprocess
from .distributed import DistContext


@torch.inference_mode()
def predict_loader(
    model: nn.Module,
    loader: Iterable[TrainBatch | None],
    device: torch.device,
    ctx: DistContext,
    autocast_dtype: torch.dtype | None = None,
) -> dict[int, Detections]:
    """Detections for every image of the loader (gathered from every rank onto every rank),
    compact: a few small numpy arrays per image, which :class:`~nanodet.evaluation.coco.CocoEvaluator`
    evaluates as they are."""
    model.eval()
    head = model.head
    results: dict[int, Detections] = {}
    priors_cache: dict[tuple[int, int], torch.Tensor] = {}
    for batch in loader:
        if batch is None:
            continue
        images = batch.images.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            preds = model(images)
        hw = (images.shape[2], images.shape[3])
        if hw not in priors_cache:
            priors_cache[hw] = head.priors(hw, device)
        dets = postprocess(
            preds, priors_cache[hw], head.num_classes, head.reg_max, hw, batch.warp_matrices, batch.sizes
        )
        results.update(zip(batch.img_ids, dets))
    merged: dict[int, Detections] = {}
    for part in ctx.gather_objects(results):
        merged.update(part)
    return merged
