"""The PyTorch runtime of the inference graph: the BN-fused model on any device, channels-last
on the CPU, under ``inference_mode``; any input size (the priors of each size computed once)."""

from __future__ import annotations

import numpy as np
import torch

from ..model.detector import NanoDet
from .graph import InferenceGraph
from .runtimes import GraphOutputs


class TorchRuntime:
    name = "torch"
    streams = 1  # its ops share one intra-op thread pool

    def __init__(self, model: NanoDet, device: torch.device, channels_last: bool) -> None:
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(device, memory_format=self.memory_format)
        self._graphs: dict[tuple[int, int], InferenceGraph] = {}

    def graph(self, input_hw: tuple[int, int]) -> InferenceGraph:
        if input_hw not in self._graphs:  # the priors of each input size, computed once
            self._graphs[input_hw] = InferenceGraph(self.model, input_hw)
        return self._graphs[input_hw]

    def prepare(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """A batch (tensor, or array) on the model's device, in its memory layout."""
        images = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
        return images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    @torch.inference_mode()
    def run(self, images: torch.Tensor | np.ndarray) -> GraphOutputs:
        images = self.prepare(images)
        return GraphOutputs(*self.graph((images.shape[2], images.shape[3]))(images))
