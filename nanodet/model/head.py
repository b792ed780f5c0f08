"""Detection heads: the NanoDet-Plus head, the legacy NanoDet-m head, and the
training-only auxiliary head.

Every head predicts, for each cell of each pyramid level, ``num_classes`` class logits and
four box-side distributions of ``reg_max + 1`` bins (Generalized Focal Loss, Li et al.
2020). The output of a head is one tensor ``[N, num_priors, num_classes + 4 * (reg_max + 1)]``
with the levels concatenated finest first; :meth:`priors` gives the matching cell positions.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import NanoDetHeadConfig, NanoDetPlusHeadConfig, NormConfig, SimpleConvHeadConfig
from .box_ops import expected_distances
from .layers import ConvModule, DepthwiseConvModule, Scale

CLS_PRIOR_BIAS = -4.595  # sigmoid(-4.595) ≈ 0.01: every class starts unlikely (focal-loss prior)


class Integral(nn.Module):
    """Expected value of a discrete distribution over bins 0..reg_max (softmax · bins).

    Its ``project`` buffer (the bins) is part of the official state dict."""

    def __init__(self, reg_max: int) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.register_buffer("project", torch.linspace(0, reg_max, reg_max + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., 4 * (reg_max + 1)] logits → [..., 4] distances in units of the stride."""
        return expected_distances(x, self.reg_max)


def make_priors(
    feature_sizes: list[tuple[int, int]], strides: list[int], offset: float, device: torch.device | None = None
) -> torch.Tensor:
    """Cell positions of every level, finest first: ``[P, 4]`` rows of (x, y, stride, stride)."""
    rows = []
    for (h, w), s in zip(feature_sizes, strides):
        ys, xs = torch.meshgrid(
            (torch.arange(h, device=device, dtype=torch.float32) + offset) * s,
            (torch.arange(w, device=device, dtype=torch.float32) + offset) * s,
            indexing="ij",
        )
        stride = torch.full_like(xs, float(s))
        rows.append(torch.stack((xs, ys, stride, stride), dim=-1).reshape(-1, 4))
    return torch.cat(rows, dim=0)


def level_sizes(input_hw: tuple[int, int], strides: tuple[int, ...] | list[int]) -> list[tuple[int, int]]:
    """(h, w) of each pyramid level for an input of ``input_hw`` (ceil division)."""
    h, w = input_hw
    return [(-(-h // s), -(-w // s)) for s in strides]


class DetectionHead(nn.Module):
    """What every head shares: layout of the outputs and the prior cells."""

    num_classes: int
    reg_max: int
    strides: list[int]
    prior_offset: float = 0.0  # NanoDet-Plus puts priors at the cell corner; legacy GFL at its centre

    def priors(self, input_hw: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
        return make_priors(level_sizes(input_hw, self.strides), self.strides, self.prior_offset, device)

    def forward_levels(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.flatten_levels(self.forward_levels(feats))

    @staticmethod
    def flatten_levels(levels: list[torch.Tensor]) -> torch.Tensor:
        """Per-level maps ``[N, C', H_l, W_l]`` → ``[N, P, C']``, finest level first (the prior order)."""
        return torch.cat([lvl.flatten(2) for lvl in levels], dim=2).permute(0, 2, 1)


def _normal_init(conv: nn.Conv2d, std: float, bias: float = 0.0) -> None:
    nn.init.normal_(conv.weight, 0.0, std)
    if conv.bias is not None:
        nn.init.constant_(conv.bias, bias)


def init_head_weights(towers: nn.Module, class_convs: list[nn.Conv2d], box_convs: list[nn.Conv2d] = ()) -> None:
    """The official initialisation of every head: N(0, 0.01) convs; class predictors start at
    the focal-loss prior (every class ~1% likely), box predictors at zero bias."""
    for m in towers.modules():
        if isinstance(m, nn.Conv2d):
            _normal_init(m, std=0.01)
    for conv in class_convs:
        _normal_init(conv, std=0.01, bias=CLS_PRIOR_BIAS)
    for conv in box_convs:
        _normal_init(conv, std=0.01)


def conv_tower(
    in_channels: int, channels: int, depth: int, kernel_size: int, depthwise: bool, norm: NormConfig, activation: str
) -> nn.ModuleList:
    """``depth`` k×k blocks (depthwise-separable or plain), every norm built from ``norm``."""
    block = DepthwiseConvModule if depthwise else ConvModule
    return nn.ModuleList(
        block(
            in_channels if i == 0 else channels,
            channels,
            kernel_size,
            padding=kernel_size // 2,
            norm=norm,
            activation=activation,
        )
        for i in range(depth)
    )


def _gfl_tower(cfg: NanoDetPlusHeadConfig | NanoDetHeadConfig, kernel_size: int) -> nn.ModuleList:
    return conv_tower(
        cfg.input_channel,
        cfg.feat_channels,
        cfg.stacked_convs,
        kernel_size,
        cfg.conv_type == "DWConv",
        cfg.norm_cfg,
        cfg.activation,
    )


class NanoDetPlusHead(DetectionHead):
    """Per level: ``stacked_convs`` depthwise-separable k×k blocks, then one 1×1 conv that
    predicts class logits and box distributions together (cls and reg share the tower)."""

    def __init__(self, cfg: NanoDetPlusHeadConfig) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        self.reg_max = cfg.reg_max
        self.strides = list(cfg.strides)
        self.distribution_project = Integral(cfg.reg_max)
        out_channels = cfg.num_classes + 4 * (cfg.reg_max + 1)
        self.cls_convs = nn.ModuleList(_gfl_tower(cfg, cfg.kernel_size) for _ in self.strides)
        self.gfl_cls = nn.ModuleList(nn.Conv2d(cfg.feat_channels, out_channels, 1) for _ in self.strides)
        init_head_weights(self.cls_convs, list(self.gfl_cls))

    def forward_levels(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for x, tower, predict in zip(feats, self.cls_convs, self.gfl_cls):
            for block in tower:
                x = block(x)
            outputs.append(predict(x))
        return outputs


class NanoDetHead(DetectionHead):
    """Legacy NanoDet-m head: depthwise 3×3 towers; with ``share_cls_reg`` one 1×1 conv
    predicts both outputs (``gfl_reg`` then exists but is unused, as in the official model)."""

    prior_offset = 0.5

    def __init__(self, cfg: NanoDetHeadConfig) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        self.reg_max = cfg.reg_max
        self.strides = list(cfg.strides)
        self.share_cls_reg = cfg.share_cls_reg
        self.distribution_project = Integral(cfg.reg_max)
        reg_channels = 4 * (cfg.reg_max + 1)
        cls_channels = cfg.num_classes + (reg_channels if cfg.share_cls_reg else 0)
        self.cls_convs = nn.ModuleList(_gfl_tower(cfg, 3) for _ in self.strides)
        self.reg_convs = nn.ModuleList(
            nn.ModuleList() if cfg.share_cls_reg else _gfl_tower(cfg, 3) for _ in self.strides
        )
        self.gfl_cls = nn.ModuleList(nn.Conv2d(cfg.feat_channels, cls_channels, 1) for _ in self.strides)
        self.gfl_reg = nn.ModuleList(nn.Conv2d(cfg.feat_channels, reg_channels, 1) for _ in self.strides)
        init_head_weights(nn.ModuleList([self.cls_convs, self.reg_convs]), list(self.gfl_cls), list(self.gfl_reg))

    def forward_levels(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for x, cls_tower, reg_tower, cls_conv, reg_conv in zip(
            feats, self.cls_convs, self.reg_convs, self.gfl_cls, self.gfl_reg
        ):
            cls_feat = x
            for block in cls_tower:
                cls_feat = block(cls_feat)
            if self.share_cls_reg:
                outputs.append(cls_conv(cls_feat))
                continue
            reg_feat = x
            for block in reg_tower:
                reg_feat = block(reg_feat)
            outputs.append(torch.cat((cls_conv(cls_feat), reg_conv(reg_feat)), dim=1))
        return outputs


class SimpleConvHead(DetectionHead):
    """The auxiliary head of NanoDet-Plus (training only): separate 3×3 conv + norm towers
    for classes and boxes, shared over levels, with a learnable scale per level. Being much
    larger than the real head, its predictions guide label assignment early in training.
    The norms are those ``norm_cfg`` names (official default: GroupNorm, 32 groups)."""

    def __init__(self, cfg: SimpleConvHeadConfig) -> None:
        super().__init__()
        self.num_classes = cfg.num_classes
        self.reg_max = cfg.reg_max
        self.strides = list(cfg.strides)
        self.cls_convs = conv_tower(
            cfg.input_channel, cfg.feat_channels, cfg.stacked_convs, 3, False, cfg.norm_cfg, cfg.activation
        )
        self.reg_convs = conv_tower(
            cfg.input_channel, cfg.feat_channels, cfg.stacked_convs, 3, False, cfg.norm_cfg, cfg.activation
        )
        self.gfl_cls = nn.Conv2d(cfg.feat_channels, cfg.num_classes, 3, padding=1)
        self.gfl_reg = nn.Conv2d(cfg.feat_channels, 4 * (cfg.reg_max + 1), 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        init_head_weights(nn.ModuleList([self.cls_convs, self.reg_convs]), [self.gfl_cls], [self.gfl_reg])

    def forward_levels(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for x, scale in zip(feats, self.scales):
            cls_feat, reg_feat = x, x
            for conv in self.cls_convs:
                cls_feat = conv(cls_feat)
            for conv in self.reg_convs:
                reg_feat = conv(reg_feat)
            outputs.append(torch.cat((self.gfl_cls(cls_feat), scale(self.gfl_reg(reg_feat)).float()), dim=1))
        return outputs


def build_head(cfg: NanoDetPlusHeadConfig | NanoDetHeadConfig) -> DetectionHead:
    return NanoDetPlusHead(cfg) if isinstance(cfg, NanoDetPlusHeadConfig) else NanoDetHead(cfg)
