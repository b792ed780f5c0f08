"""Building blocks shared by backbone, neck and heads.

Attribute names (``conv``/``bn``/``gn``, ``depthwise``/``pointwise``/``dwnorm``/``pwnorm``)
follow the official NanoDet modules so official checkpoints load by name.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import NormConfig


def activation_layer(name: str | None) -> nn.Module:
    """The activation a config names; NanoDet's LeakyReLU has slope 0.1."""
    if name is None:
        return nn.Identity()
    factories = {
        "ReLU": lambda: nn.ReLU(inplace=True),
        "LeakyReLU": lambda: nn.LeakyReLU(negative_slope=0.1, inplace=True),
        "ReLU6": lambda: nn.ReLU6(inplace=True),
        "SELU": lambda: nn.SELU(inplace=True),
        "ELU": lambda: nn.ELU(inplace=True),
        "GELU": nn.GELU,
        "PReLU": nn.PReLU,
        "SiLU": lambda: nn.SiLU(inplace=True),
        "HardSwish": lambda: nn.Hardswish(inplace=True),
        "Hardswish": lambda: nn.Hardswish(inplace=True),
    }
    return factories[name]()


def dense_grad(t: torch.Tensor) -> torch.Tensor:
    """``t`` unchanged; in backward, its gradient reaches the layers that made ``t`` as a dense
    channels-last tensor.

    The backward of a concatenation (or channel interleave) hands each input a strided view of
    its gradient. On CPU, channels-last batch norm and activation backward run several times
    slower on such views than on a dense copy (measured: ~5x for batch norm on a channel slice,
    ~12x for LeakyReLU on every other channel). Only for channels-last tensors that need grad."""
    if t.requires_grad and t.dim() == 4 and t.stride(1) == 1:
        t.register_hook(_dense_channels_last)
    return t


def _dense_channels_last(grad: torch.Tensor) -> torch.Tensor:
    return grad.contiguous(memory_format=torch.channels_last)


def norm_layer(cfg: NormConfig, channels: int) -> tuple[str, nn.Module]:
    """(attribute name, layer) for a norm config: ``bn`` for batch norm, ``gn`` for group norm.

    ``SyncBN`` gives a ``BatchNorm2d`` named ``bn``: outside distributed training a
    ``SyncBatchNorm`` computes exactly that, and under DDP the trainer converts the layers
    (:func:`nanodet.engine.distributed.sync_batchnorm_if_asked`).
    """
    if cfg.type == "GN":
        if cfg.num_groups is None:
            raise ValueError("group norm needs num_groups")
        layer: nn.Module = nn.GroupNorm(cfg.num_groups, channels)
        name = "gn"
    elif cfg.type in ("BN", "SyncBN"):
        layer = nn.BatchNorm2d(channels)
        name = "bn"
    else:
        raise ValueError(f"unknown norm type {cfg.type!r}")
    for p in layer.parameters():
        p.requires_grad = cfg.requires_grad
    return name, layer


class ConvModule(nn.Module):
    """conv → norm → activation; the conv has a bias only when there is no norm."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        norm: NormConfig | None = NormConfig(),
        activation: str | None = "ReLU",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=norm is None)
        self.norm_name = None
        if norm is not None:
            self.norm_name, layer = norm_layer(norm, out_channels)
            self.add_module(self.norm_name, layer)
        self.act = activation_layer(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm_name is not None:
            x = getattr(self, self.norm_name)(x)
        return self.act(x)


class DepthwiseConvModule(nn.Module):
    """Depthwise-separable conv: depthwise k×k → norm → act → pointwise 1×1 → norm → act.

    The norms are ``norm`` layers (batch norm by default) named ``dwnorm``/``pwnorm`` whatever
    their type, as in the official module."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        activation: str | None = "ReLU",
        norm: NormConfig = NormConfig(),
    ) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, stride, padding, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.dwnorm = norm_layer(norm, in_channels)[1]
        self.pwnorm = norm_layer(norm, out_channels)[1]
        self.act = activation_layer(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.dwnorm(self.depthwise(x)))
        return self.act(self.pwnorm(self.pointwise(x)))


class Scale(nn.Module):
    """A learnable scalar multiplier (one per pyramid level in the auxiliary head)."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(value, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale
