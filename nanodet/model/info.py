"""Model size facts: inference parameters and FLOPs at the config's input size."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import NanoDetConfig
from . import build_model, inference_parameter_count


def model_info(cfg: NanoDetConfig) -> dict:
    """``{"params", "gflops", "input_size"}``; FLOPs count 2 per multiply-add (torch's counter)."""
    model = build_model(cfg.model.arch).eval()
    w, h = cfg.input_size
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, h, w))
    return {
        "params": inference_parameter_count(model),
        "gflops": round(counter.get_total_flops() / 1e9, 4),
        "input_size": [w, h],
    }
