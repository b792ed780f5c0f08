"""ImageNet-pretrained ShuffleNetV2 backbones, read from local files only.

The official backbone downloads torchvision's ImageNet weights when ``backbone.pretrain`` is
true. Nothing is downloaded at run time here: the same files are looked up in
``$NANODET_WEIGHTS_DIR`` (the image's ``/weights``, filled at build time by
``docker/fetch_weights.py``) and in torch hub's cache (``$TORCH_HOME/hub/checkpoints``, where
torchvision keeps them). The hex in each file name is the start of the file's sha256.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError, LoadReport, extract_state_dict, load_state_dict_into, read_checkpoint

log = logging.getLogger(__name__)

TORCHVISION_MODELS_URL = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class ImageNetWeights:
    file_name: str
    sha256_prefix: str

    @property
    def url(self) -> str:
        return TORCHVISION_MODELS_URL + self.file_name


# The files the official NanoDet ShuffleNetV2 loads (torchvision's ImageNet classifiers).
IMAGENET_BACKBONES: dict[str, ImageNetWeights] = {
    "0.5x": ImageNetWeights("shufflenetv2_x0.5-f707e7126e.pth", "f707e7126e"),
    "1.0x": ImageNetWeights("shufflenetv2_x1-5666bf0f80.pth", "5666bf0f80"),
    "1.5x": ImageNetWeights("shufflenetv2_x1_5-3c479a10.pth", "3c479a10"),
}


def search_dirs() -> list[Path]:
    """Where pretrained files are looked for, in order."""
    dirs = []
    if os.environ.get("NANODET_WEIGHTS_DIR"):
        dirs.append(Path(os.environ["NANODET_WEIGHTS_DIR"]))
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def find_imagenet_weights(model_size: str) -> Path | None:
    """The local ImageNet file for a ShuffleNetV2 width, or None."""
    name = IMAGENET_BACKBONES[model_size].file_name
    return next((d / name for d in search_dirs() if (d / name).is_file()), None)


def missing_imagenet_message(model_size: str) -> str:
    name = IMAGENET_BACKBONES[model_size].file_name
    where = ", ".join(str(d) for d in search_dirs())
    return f"ImageNet ShuffleNetV2 {model_size} weights ({name}) not found in {where}"


def fit_backbone(backbone: nn.Module, path: str | Path) -> LoadReport:
    """Load an ImageNet ShuffleNetV2 state dict into ``backbone``. Every backbone tensor must
    be in the file with its shape (the classifier's ``conv5``/``fc`` are ignored), or
    :class:`CheckpointError` names what does not fit."""
    state, fmt = extract_state_dict(read_checkpoint(path), str(path))
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    own = backbone.state_dict()
    wrong = [
        f"{k} {list(state[k].shape)} (needs {list(v.shape)})"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    # BatchNorm's counter is absent from some older files; it has no effect on the weights
    absent = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if wrong or absent:
        detail = "; ".join(wrong[:3] + [f"missing {k}" for k in absent[:3]])
        raise CheckpointError(
            f"{path}: does not fit this ShuffleNetV2 backbone "
            f"({len(wrong)} tensors of another shape, {len(absent)} missing: {detail})"
        )
    usable = {k: v for k, v in state.items() if k in own}
    return load_state_dict_into(backbone, usable, fmt)


def load_imagenet_backbone(backbone: nn.Module, model_size: str, logger: logging.Logger = log) -> Path | None:
    """``backbone.pretrain``: ImageNet weights into the backbone when the file is here, else a
    warning naming what is missing. Returns the file used."""
    path = find_imagenet_weights(model_size)
    if path is None:
        logger.warning(
            "backbone.pretrain: %s: the backbone starts from random initialisation",
            missing_imagenet_message(model_size),
        )
        return None
    report = fit_backbone(backbone, path)
    logger.info("backbone: ImageNet weights from %s (%d tensors)", path, len(report.loaded))
    return path
