"""The whole detector: backbone → feature pyramid → head (+ the training-only aux branch).

NanoDet-Plus trains with an assign guidance module: a copy of the pyramid (``aux_fpn``) and
a heavier head (``aux_head``) on the concatenation of both pyramids' features. Their
predictions choose the training targets for both heads; from ``detach_epoch`` on, the aux
branch no longer back-propagates into the backbone. At inference the aux branch is unused
and :meth:`NanoDet.drop_aux` removes it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..config import ArchConfig
from .backbone import ShuffleNetV2
from .head import DetectionHead, SimpleConvHead, build_head
from .neck import build_neck

AUX_PREFIXES = ("aux_fpn.", "aux_head.")
"""Names of the training-only parameters: the auxiliary neck and head (absent after ``drop_aux``)."""


class NanoDet(nn.Module):
    def __init__(self, cfg: ArchConfig, with_aux: bool = True) -> None:
        super().__init__()
        self.detach_epoch = cfg.detach_epoch
        self.backbone = ShuffleNetV2(cfg.backbone)
        self.fpn = build_neck(cfg.fpn)
        self.head: DetectionHead = build_head(cfg.head)
        self.aux_fpn: nn.Module | None = None
        self.aux_head: SimpleConvHead | None = None
        if with_aux and cfg.aux_head is not None:
            self.aux_fpn = copy.deepcopy(self.fpn)
            self.aux_head = SimpleConvHead(cfg.aux_head)

    @property
    def has_aux(self) -> bool:
        return self.aux_head is not None

    def drop_aux(self) -> NanoDet:
        """Remove the training-only branch (inference needs none of it)."""
        self.aux_fpn = None
        self.aux_head = None
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Inference path: ``[N, 3, H, W]`` normalised images → raw head output ``[N, P, C + 4(R+1)]``."""
        return self.head(self.fpn(self.backbone(images)))

    def forward_levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Raw per-level head maps ``[N, C + 4(R+1), H_l, W_l]`` (used by uncertainty mining)."""
        return self.head.forward_levels(self.fpn(self.backbone(images)))

    def forward_train(self, images: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training path: (head output, aux head output or None)."""
        feats = self.backbone(images)
        fpn_feats = self.fpn(feats)
        preds = self.head(fpn_feats)
        if self.aux_head is None or self.aux_fpn is None:
            return preds, None
        if epoch >= self.detach_epoch:
            aux_feats = self.aux_fpn([f.detach() for f in feats])
            dual = [torch.cat((f.detach(), a), dim=1) for f, a in zip(fpn_feats, aux_feats)]
        else:
            aux_feats = self.aux_fpn(feats)
            dual = [torch.cat((f, a), dim=1) for f, a in zip(fpn_feats, aux_feats)]
        return preds, self.aux_head(dual)


def inference_parameter_count(model: NanoDet) -> int:
    """Parameters of the inference model (the aux branch left out)."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(AUX_PREFIXES))


def build_model(cfg: ArchConfig, with_aux: bool = True) -> NanoDet:
    return NanoDet(cfg, with_aux=with_aux)
