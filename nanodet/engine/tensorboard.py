"""TensorBoard logging: every loss term and the lr per step, COCO metrics and per-class AP
per evaluation, and a few validation images with predicted (coloured) and true (white) boxes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..data.image_io import ImageReadError, read_image
from ..visualize import draw_detections
from .trainer import Callback, EvalResult, Trainer


class TensorBoardLogger(Callback):
    def __init__(self, log_dir: str | Path, num_images: int = 4, score_thr: float = 0.3) -> None:
        self.log_dir = Path(log_dir)
        self.num_images = num_images
        self.score_thr = score_thr
        self.writer = None

    def on_train_start(self, trainer: Trainer) -> None:
        if trainer.ctx.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.log_dir))

    def on_step_end(self, trainer: Trainer, losses: dict[str, float]) -> None:
        if self.writer is None:
            return
        step = trainer.state.step
        for name, value in losses.items():
            self.writer.add_scalar(f"train/{name}", value, step)

    def on_eval_end(self, trainer: Trainer, result: EvalResult, is_best: bool) -> None:
        if self.writer is None:
            return
        epoch = result.epoch
        for name, value in result.metrics.items():
            self.writer.add_scalar(f"val/{name}", value, epoch)
        for name, value in result.per_class_AP.items():
            self.writer.add_scalar(f"val_AP/{name}", value, epoch)
        dataset = trainer.val_set
        for img_id in dataset.img_ids[: self.num_images]:
            info = dataset.coco.imgs[img_id]
            try:
                image = read_image(dataset.img_dir / info["file_name"])
            except ImageReadError:
                continue
            dets = result.detections.get(img_id)
            if dets is None:
                continue
            gt_boxes, _ = dataset.annotations(img_id)
            drawn = draw_detections(image, dets.above(self.score_thr), list(trainer.cfg.class_names), gt_boxes)
            rgb = cv2.cvtColor(drawn, cv2.COLOR_BGR2RGB)
            self.writer.add_image(
                f"val_images/{Path(info['file_name']).stem}", np.ascontiguousarray(rgb), epoch, dataformats="HWC"
            )
        self.writer.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
