"""ShuffleNetV2 (Ma et al., ECCV 2018) as the NanoDet backbone.

Channel split, a branch of pointwise → depthwise → pointwise convs, concat, channel
shuffle. Stages 2–4 produce the stride 8/16/32 features NanoDet's neck consumes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import BackboneConfig
from .layers import activation_layer, dense_grad

STAGE_CHANNELS: dict[str, list[int]] = {
    "0.5x": [24, 48, 96, 192, 1024],
    "1.0x": [24, 116, 232, 464, 1024],
    "1.5x": [24, 176, 352, 704, 1024],
}
STAGE_REPEATS = [4, 8, 4]


def concat_shuffle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The channels of ``a`` and ``b`` interleaved, ``a0, b0, a1, b1, ...``: ShuffleNet's
    concatenation followed by a channel shuffle of 2 groups, in one copy instead of two.

    Channels-last inputs (channels the innermost axis) give a channels-last result."""
    n, c, h, w = a.shape
    if b.stride(1) != 1:
        return torch.stack((a, b), dim=2).reshape(n, 2 * c, h, w)
    # each input gets every other channel of the gradient: dense copies for the layers before
    pairs = torch.stack((dense_grad(a).permute(0, 2, 3, 1), dense_grad(b).permute(0, 2, 3, 1)), dim=4)
    return pairs.reshape(n, h, w, 2 * c).permute(0, 3, 1, 2)


def _depthwise(channels: int, kernel: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel, stride, kernel // 2, groups=channels, bias=False)


class ShuffleV2Block(nn.Module):
    """One ShuffleNetV2 unit; stride 2 units also transform the skip half (``branch1``)."""

    def __init__(self, inp: int, oup: int, stride: int, activation: str, kernel: int = 3) -> None:
        super().__init__()
        self.stride = stride
        half = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise(inp, kernel, stride),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, half, 1, bias=False),
                nn.BatchNorm2d(half),
                activation_layer(activation),
            )
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            activation_layer(activation),
            _depthwise(half, kernel, stride),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            activation_layer(activation),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            skip, x = x.chunk(2, dim=1)
            return concat_shuffle(skip, self.branch2(x))
        return concat_shuffle(self.branch1(x), self.branch2(x))


class ShuffleNetV2(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        channels = STAGE_CHANNELS[cfg.model_size]
        self.out_stages = list(cfg.out_stages)
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, channels[0], 3, 2, 1, bias=False),
            nn.BatchNorm2d(channels[0]),
            activation_layer(cfg.activation),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = channels[0]
        for i, (repeats, out_ch) in enumerate(zip(STAGE_REPEATS, channels[1:4]), start=2):
            blocks = [ShuffleV2Block(in_ch, out_ch, 2, cfg.activation, cfg.kernal_size)]
            blocks += [ShuffleV2Block(out_ch, out_ch, 1, cfg.activation, cfg.kernal_size) for _ in range(repeats - 1)]
            setattr(self, f"stage{i}", nn.Sequential(*blocks))
            in_ch = out_ch
        if cfg.with_last_conv:
            self.conv5 = nn.Sequential(
                nn.Conv2d(in_ch, channels[-1], 1, bias=False),
                nn.BatchNorm2d(channels[-1]),
                activation_layer(cfg.activation),
            )
        self.out_channels = [channels[s - 1] for s in self.out_stages]
        self._init_weights()

    def _init_weights(self) -> None:
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                std = 0.01 if name.startswith("conv1") else 1.0 / m.weight.shape[1]
                nn.init.normal_(m.weight, 0.0, std)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.constant_(m.bias, 1e-4)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.conv1(x))
        outputs = []
        for i in (2, 3, 4):
            x = getattr(self, f"stage{i}")(x)
            if i == 4 and hasattr(self, "conv5"):
                x = self.conv5(x)
            if i in self.out_stages:
                outputs.append(x)
        return outputs
