"""The inference graph: the detector and its box decode as one module, so that every runtime
(PyTorch eager, an exported ONNX file in ONNX Runtime or OpenVINO) gives the same three outputs
(named as :data:`.interface.OUTPUT_NAMES` in an export) and the caller only runs NMS:

- ``boxes``      ``[N, P, 4]`` x1, y1, x2, y2 in input pixels, clipped to the input;
- ``scores``     ``[N, P, C]`` sigmoid class scores;
- ``cls_logits`` ``[N, P, C]`` the raw class logits (what uncertainty mining reads).

``P`` runs over the prior cells of every pyramid level, finest first (row-major in each level).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..inference.postprocess import split_head_output
from ..model.box_ops import distributions_to_boxes
from ..model.detector import NanoDet
from ..model.head import level_sizes


class InferenceGraph(nn.Module):
    """``[N, 3, H, W]`` normalised images of one fixed size → (boxes, scores, cls_logits).

    The priors of that size are a constant of the graph (an exported file holds them)."""

    def __init__(self, model: NanoDet, input_hw: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.input_hw = tuple(input_hw)
        self.num_classes = model.head.num_classes
        self.reg_max = model.head.reg_max
        device = next(model.parameters()).device
        self.register_buffer("priors", model.head.priors(self.input_hw, device), persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        cls_logits, reg = split_head_output(self.model(images), self.num_classes, self.reg_max)
        boxes = distributions_to_boxes(reg, self.priors, self.reg_max, max_shape=self.input_hw)
        return boxes, cls_logits.sigmoid(), cls_logits


def class_level_maps(
    cls_logits: Tensor, input_hw: tuple[int, int], strides: tuple[int, ...] | list[int]
) -> list[Tensor]:
    """``[N, P, C]`` flat class logits → per-level maps ``[N, C, H_l, W_l]``, finest first: the
    layout of the head's own per-level outputs, which the mining algorithms read."""
    sizes = level_sizes(input_hw, strides)
    chunks = cls_logits.split([h * w for h, w in sizes], dim=1)
    return [c.permute(0, 2, 1).reshape(c.shape[0], c.shape[2], h, w) for c, (h, w) in zip(chunks, sizes)]
