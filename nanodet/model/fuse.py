"""Fold BatchNorm into the preceding convolution for inference.

``y = γ (conv(x) − μ) / √(σ² + ε) + β`` is itself a convolution with rescaled weights and a
bias, so each conv+BN pair becomes one conv and the BN becomes an identity.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvModule, DepthwiseConvModule


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
    ).to(conv.weight.device, conv.weight.dtype)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


def _fuse_sequential(seq: nn.Sequential) -> None:
    names = list(seq._modules)
    for a, b in zip(names, names[1:]):
        conv, bn = seq._modules[a], seq._modules[b]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            seq._modules[a] = fuse_conv_bn(conv, bn)
            seq._modules[b] = nn.Identity()


@torch.no_grad()
def fuse_model(model: nn.Module) -> nn.Module:
    """Fuse every conv+BN pair in place (the model must be in eval mode); returns the model."""
    if model.training:
        raise RuntimeError("fuse_model needs an eval-mode model (BN statistics are frozen)")
    for module in model.modules():
        if isinstance(module, ConvModule) and isinstance(getattr(module, module.norm_name or "", None), nn.BatchNorm2d):
            module.conv = fuse_conv_bn(module.conv, getattr(module, module.norm_name))
            setattr(module, module.norm_name, nn.Identity())
        elif isinstance(module, DepthwiseConvModule) and isinstance(module.dwnorm, nn.BatchNorm2d):
            module.depthwise = fuse_conv_bn(module.depthwise, module.dwnorm)
            module.pointwise = fuse_conv_bn(module.pointwise, module.pwnorm)
            module.dwnorm, module.pwnorm = nn.Identity(), nn.Identity()
        elif isinstance(module, nn.Sequential):
            _fuse_sequential(module)
    return model
