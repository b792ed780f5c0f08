"""Feature pyramids: Ghost-PAN (NanoDet-Plus) and the legacy PAN (NanoDet-m).

Ghost-PAN: each backbone level is reduced to ``out_channels`` by a 1×1 conv; a top-down
path upsamples and fuses with GhostBlocks, a bottom-up path downsamples with depthwise
5×5 stride-2 convs and fuses again; an extra stride-64 level adds a downsampled copy of
the top input to a downsampled copy of the top output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GhostPANConfig, NormConfig, PANConfig
from .layers import ConvModule, DepthwiseConvModule, activation_layer, dense_grad


class GhostModule(nn.Module):
    """GhostNet's cheap feature generator: half the channels from a 1×1 conv, the other half
    from a depthwise 3×3 conv applied to the first half."""

    def __init__(self, inp: int, oup: int, activation: str | None, ratio: int = 2, dw_size: int = 3) -> None:
        super().__init__()
        self.oup = oup
        self.norm_is_last = activation is None  # cheap_operation ends with its batch norm
        init_channels = math.ceil(oup / ratio)
        new_channels = init_channels * (ratio - 1)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(inp, init_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(init_channels),
            activation_layer(activation),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init_channels, new_channels, dw_size, 1, dw_size // 2, groups=init_channels, bias=False),
            nn.BatchNorm2d(new_channels),
            activation_layer(activation),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        if self.norm_is_last:  # a batch norm right before the concatenation
            x2 = dense_grad(x2)
        out = torch.cat((x1, x2), dim=1)
        # an odd ``oup`` makes one channel too many; slicing only then spares backward a zero-filled copy
        return out[:, : self.oup] if out.shape[1] > self.oup else out


class GhostBottleneck(nn.Module):
    """Two ghost modules with a (depthwise + pointwise) projection shortcut."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, dw_kernel_size: int, activation: str) -> None:
        super().__init__()
        self.ghost1 = GhostModule(in_chs, mid_chs, activation)
        self.ghost2 = GhostModule(mid_chs, out_chs, None)
        if in_chs == out_chs:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, dw_kernel_size, 1, (dw_kernel_size - 1) // 2, groups=in_chs, bias=False),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, 1, 1, 0, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ghost2(self.ghost1(x)) + self.shortcut(x)


class GhostBlocks(nn.Module):
    def __init__(self, cfg: GhostPANConfig, in_channels: int) -> None:
        super().__init__()
        out = cfg.out_channels
        self.use_res = cfg.use_res
        if cfg.use_res:
            self.reduce_conv = ConvModule(in_channels, out, 1, activation=cfg.activation)
        self.blocks = nn.Sequential(
            *[
                GhostBottleneck(in_channels, int(out * cfg.expand), out, cfg.kernel_size, cfg.activation)
                for _ in range(cfg.num_blocks)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(x)
        out = out + self.reduce_conv(x) if self.use_res else out
        return dense_grad(out)  # concatenated next, and the bottleneck's shortcut ends with a batch norm


class GhostPAN(nn.Module):
    def __init__(self, cfg: GhostPANConfig) -> None:
        super().__init__()
        c = cfg.out_channels
        levels = len(cfg.in_channels)
        k = cfg.kernel_size

        def downsample() -> nn.Module:
            if cfg.use_depthwise:
                return DepthwiseConvModule(c, c, k, stride=2, padding=k // 2, activation=cfg.activation)
            return ConvModule(c, c, k, stride=2, padding=k // 2, activation=cfg.activation)

        self.reduce_layers = nn.ModuleList(
            ConvModule(ch, c, 1, norm=NormConfig(), activation=cfg.activation) for ch in cfg.in_channels
        )
        self.top_down_blocks = nn.ModuleList(GhostBlocks(cfg, 2 * c) for _ in range(levels - 1))
        self.downsamples = nn.ModuleList(downsample() for _ in range(levels - 1))
        self.bottom_up_blocks = nn.ModuleList(GhostBlocks(cfg, 2 * c) for _ in range(levels - 1))
        self.extra_lvl_in_conv = nn.ModuleList(downsample() for _ in range(cfg.num_extra_level))
        self.extra_lvl_out_conv = nn.ModuleList(downsample() for _ in range(cfg.num_extra_level))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        inputs = [reduce(x) for reduce, x in zip(self.reduce_layers, features)]
        # top-down: from the coarsest level, upsample ×2 and fuse with the next finer one
        inner = [inputs[-1]]
        for block, lower in zip(self.top_down_blocks, reversed(inputs[:-1])):
            up = F.interpolate(inner[0], scale_factor=2.0, mode="bilinear")
            inner.insert(0, block(torch.cat((up, lower), dim=1)))
        # bottom-up: downsample ×2 and fuse with the top-down result of the next coarser level
        outs = [inner[0]]
        for down, block, higher in zip(self.downsamples, self.bottom_up_blocks, inner[1:]):
            outs.append(block(torch.cat((down(outs[-1]), higher), dim=1)))
        for conv_in, conv_out in zip(self.extra_lvl_in_conv, self.extra_lvl_out_conv):
            outs.append(conv_in(inputs[-1]) + conv_out(outs[-1]))
        return outs


class PAN(nn.Module):
    """Legacy NanoDet-m neck: 1×1 laterals, then top-down and bottom-up additions (no convs)."""

    def __init__(self, cfg: PANConfig) -> None:
        super().__init__()
        end = len(cfg.in_channels) if cfg.end_level == -1 else cfg.end_level
        self.start_level = cfg.start_level
        self.lateral_convs = nn.ModuleList(
            ConvModule(cfg.in_channels[i], cfg.out_channels, 1, norm=None, activation=cfg.activation)
            for i in range(cfg.start_level, end)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        lat = [conv(features[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], scale_factor=2.0, mode="bilinear")
        for i in range(len(lat) - 1):
            lat[i + 1] = lat[i + 1] + F.interpolate(lat[i], scale_factor=0.5, mode="bilinear")
        return lat


def build_neck(cfg: GhostPANConfig | PANConfig) -> nn.Module:
    return GhostPAN(cfg) if isinstance(cfg, GhostPANConfig) else PAN(cfg)
