"""Batch inference: a model config + weights on a device → detections for images of any size.

The optimised path folds BatchNorm into the convolutions, uses the channels-last memory
layout on CPU, and runs under ``torch.inference_mode``; images are pre-processed exactly as official (warp to the input
size, normalise) and batched with padding to a multiple of 32.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_weights
from .config import NanoDetConfig, load_config
from .data.transforms import preprocess, stack_batch
from .model import build_model
from .model.fuse import fuse_model
from .postprocess import Detections, postprocess

log = logging.getLogger(__name__)


class Predictor:
    def __init__(
        self,
        config: NanoDetConfig | str | Path,
        weights: str | Path | None,
        device: str | torch.device = "cpu",
        *,
        optimize: bool = True,
        channels_last: bool | None = None,
        score_thr: float = 0.05,
        iou_thr: float = 0.6,
        max_det: int = 100,
    ) -> None:
        self.cfg = config if isinstance(config, NanoDetConfig) else load_config(config)
        self.device = torch.device(device)
        self.class_names = list(self.cfg.class_names)
        self.input_wh = tuple(self.cfg.data.val.input_size)
        self.keep_ratio = self.cfg.data.val.keep_ratio
        self.mean, self.std = self.cfg.data.val.pipeline.normalize
        self.score_thr, self.iou_thr, self.max_det = score_thr, iou_thr, max_det
        model = build_model(self.cfg.model.arch, with_aux=False)
        if weights is not None:  # strict: weights that do not fit are an error, never a random head
            load_weights(model, weights, log, strict=True)
        else:
            log.warning("no weights given: the model has random weights")
        model.eval()
        if optimize:
            fuse_model(model)
        if channels_last is None:  # measured on CPU: 1.6x at batch 16 (bench/infer.py); CUDA unmeasured
            channels_last = optimize and self.device.type == "cpu"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.head = model.head
        self._priors: dict[tuple[int, int], torch.Tensor] = {}

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """BGR uint8 image → (CHW float32 input, 3×3 warp matrix original → input)."""
        return preprocess(image, self.input_wh, self.keep_ratio, self.mean, self.std)

    def priors(self, input_hw: tuple[int, int]) -> torch.Tensor:
        if input_hw not in self._priors:
            self._priors[input_hw] = self.head.priors(input_hw, self.device)
        return self._priors[input_hw]

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return self.model(batch)

    @torch.inference_mode()
    def forward_levels(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Raw per-level head maps (for uncertainty mining)."""
        batch = batch.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return self.model.forward_levels(batch)

    @torch.inference_mode()
    def predict_batch(
        self, batch: torch.Tensor, warp_matrices: list[np.ndarray], image_sizes: list[tuple[int, int]]
    ) -> list[Detections]:
        """A pre-processed, padded batch ``[N, 3, H, W]`` → detections per image."""
        return self.detections(self.forward(batch), (batch.shape[2], batch.shape[3]), warp_matrices, image_sizes)

    @torch.inference_mode()
    def predict_batch_with_levels(
        self, batch: torch.Tensor, warp_matrices: list[np.ndarray], image_sizes: list[tuple[int, int]]
    ) -> tuple[list[torch.Tensor], list[Detections]]:
        """One forward for both uses: the raw per-level maps (uncertainty mining) and the
        detections per image (the same as :meth:`predict_batch` gives)."""
        levels = self.forward_levels(batch)
        input_hw = (batch.shape[2], batch.shape[3])
        return levels, self.detections(self.head.flatten_levels(levels), input_hw, warp_matrices, image_sizes)

    def detections(
        self,
        preds: torch.Tensor,
        input_hw: tuple[int, int],
        warp_matrices: list[np.ndarray],
        image_sizes: list[tuple[int, int]],
    ) -> list[Detections]:
        """Raw head output ``[N, P, C + 4(R+1)]`` → detections per image, in original pixels."""
        return postprocess(
            preds,
            self.priors(input_hw),
            self.head.num_classes,
            self.head.reg_max,
            input_hw,
            warp_matrices,
            image_sizes,
            self.score_thr,
            self.iou_thr,
            self.max_det,
        )

    def predict(self, images: list[np.ndarray]) -> list[Detections]:
        """BGR uint8 images (any sizes) → detections per image, in original pixels."""
        if not images:
            return []
        inputs, matrices = zip(*(self.preprocess(img) for img in images))
        batch = stack_batch([torch.from_numpy(x) for x in inputs])
        sizes = [(img.shape[1], img.shape[0]) for img in images]
        return self.predict_batch(batch, list(matrices), sizes)
