"""Shared fixtures: configs, weights with non-trivial BN statistics, sample images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nanodet.checkpoint import save_pth
from nanodet.config import load_config
from nanodet.model import build_model

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "config"
SHARED = ROOT.parent / "shared"
SAMPLE = SHARED / "data" / "ymir-sample"
KEYS_DIR = SHARED / "data" / "nanodet-keys"


def randomized_model(cfg, seed: int = 0, cls_bias: float = -3.0):
    """A model that behaves like a trained one for inference tests: BN statistics that are not
    the identity, and class logits that vary over the image (spread 1.5, mean ``cls_bias``) so
    some cells score above the 0.05 threshold and scores are not tied."""
    torch.manual_seed(seed)
    model = build_model(cfg.model.arch)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
            elif isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0.0, m.weight[0].numel() ** -0.5)
        model.eval()
        n = model.head.num_classes
        w, h = cfg.input_size
        levels = model.forward_levels(torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed)))
        for conv, out in zip(model.head.gfl_cls, levels):
            gain = 1.5 / out[:, :n].std().clamp(min=1e-6)
            weighted_mean = (out[:, :n] - conv.bias[:n, None, None]).mean()
            conv.weight[:n] *= gain
            conv.bias[:n] = cls_bias - weighted_mean * gain
        model.train()
    return model


@pytest.fixture(scope="session")
def plus_cfg():
    return load_config(CONFIG_DIR / "nanodet-plus-m_320.yml")


@pytest.fixture(scope="session")
def plus_weights(tmp_path_factory, plus_cfg) -> Path:
    path = tmp_path_factory.mktemp("weights") / "plus.pth"
    save_pth(randomized_model(plus_cfg, cls_bias=-7.5), path)
    return path


@pytest.fixture(scope="session")
def sample_images() -> list[Path]:
    return sorted((SAMPLE / "assets").glob("*.jpg"))
