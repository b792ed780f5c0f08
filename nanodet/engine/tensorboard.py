"""TensorBoard logging: every loss term and the lr per step, and ``train/data_wait``, the share of
each logging interval (and of each epoch's last, partial one) the trainer spent waiting for its
next batch (:mod:`~nanodet.engine.data_wait`); per evaluation the COCO metrics,
per-class AP, a precision/recall curve per class (``val_PR_AP_50/<class>`` at IoU 0.5), the
confusion matrix and per-class AP chart (``val_charts/...``), and a fixed handful of
validation images with the predictions and the ground truth side by side
(``val_images/<image>``); the pictures come from :class:`~nanodet.pictures.evaluation.EvalPictures`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..config import ap_key
from ..pictures.evaluation import EvalPictures, pr_curve_counts
from .trainer import Callback, EvalResult, Trainer


class TensorBoardLogger(Callback):
    def __init__(self, log_dir: str | Path, pictures: EvalPictures | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.pictures = pictures or EvalPictures()
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
            if value is not None:
                self.writer.add_scalar(f"train/{name}", value, step)

    def on_epoch_end(self, trainer: Trainer) -> None:
        share = trainer.data_wait.epoch_end_share
        if self.writer is not None and share is not None:
            self.writer.add_scalar("train/data_wait", share, trainer.state.step)

    def on_eval_end(self, trainer: Trainer, result: EvalResult, is_best: bool) -> None:
        if self.writer is None:
            return
        epoch = result.epoch
        for name, value in result.metrics.items():
            self.writer.add_scalar(f"val/{name}", value, epoch)
        for name, value in result.per_class_AP.items():
            self.writer.add_scalar(f"val_AP/{name}", value, epoch)
        pictures = self.pictures.of(trainer, result)
        curves = pictures.curves
        if curves is not None:
            for index, name in enumerate(trainer.cfg.class_names):
                if curves.precision[0, index] <= -1:  # no ground truth: no curve
                    continue
                arrays = pr_curve_counts(curves, index)
                self.writer.add_pr_curve_raw(
                    f"val_PR_{ap_key(curves.iou_thr)}/{name}",
                    global_step=epoch,
                    num_thresholds=len(arrays["recall"]),
                    **arrays,
                )
        for name in ("confusion_matrix", "per_class_AP"):
            if name in pictures.charts:
                self.writer.add_image(f"val_charts/{name}", _rgb(pictures.charts[name]), epoch, dataformats="HWC")
        for stem, picture in pictures.val_images:
            self.writer.add_image(f"val_images/{stem}", _rgb(picture), epoch, dataformats="HWC")
        self.writer.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()


def _rgb(picture: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB))
