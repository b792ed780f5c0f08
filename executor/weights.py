"""Which weights a task starts from.

Training, first found wins (the log names the file used):

1. ``load_from``: a file under ``/in/models`` or an absolute path;
2. ``pretrained_model_params``: the best-then-newest file (the previous round's model, with
   the model config saved beside it when this executor trained it);
3. the official COCO checkpoint of the model, baked into the image under ``/weights``
   (``<config name>*``, e.g. ``nanodet-plus-m_416_checkpoint.ckpt``);
4. the ImageNet ShuffleNetV2 backbone (``backbone.pretrain: true``; the engine loads it from
   ``/weights`` or torch hub's cache), the rest of the model at random init;
5. random init.

Mining/infer: the best-then-newest file of ``model_params_path``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from nanodet.weights.imagenet import find_imagenet_weights, missing_imagenet_message

from .errors import ModelError
from .paths import PathMapper

log = logging.getLogger("executor.weights")

WEIGHT_SUFFIXES = {".pth", ".ckpt", ".pt"}
SAVED_CONFIG = "train_cfg.yml"


def weights_dir() -> Path:
    """Image-baked pretrained weights (overridable for tests and other layouts)."""
    return Path(os.environ.get("NANODET_WEIGHTS_DIR", "/weights"))


@dataclass
class WeightsChoice:
    path: Path | None  # whole-model weights (None: the backbone's ImageNet start, or random)
    saved_config: Path | None
    source: str  # what the log says was chosen
    kind: str = "model"  # load_from | pretrained | coco | imagenet | random | model
    class_names: list[str] | None = None  # the classes of the weights' head, from the saved config


def resolve_model_path(path: str, models_dir: Path, mapper: PathMapper) -> Path:
    """Absolute platform paths are mapped; relative ones are under ``models_dir``."""
    return mapper(path) if path.startswith("/") else models_dir / path


def rank_weights(paths: list[Path]) -> list[Path]:
    """Weight files, best first: names with 'best' before others, newer before older;
    the inference ``.pth`` before a training ``.ckpt`` of the same rank."""
    files = [p for p in paths if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES]
    return sorted(files, key=lambda p: ("best" not in p.name.lower(), -p.stat().st_mtime, p.suffix != ".pth", p.name))


def saved_config_for(weights: Path, models_dir: Path) -> Path | None:
    for candidate in (weights.parent / SAVED_CONFIG, models_dir / SAVED_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def choose_training_weights(
    load_from: str,
    pretrained: list[str],
    models_dir: Path,
    mapper: PathMapper,
    model_name: str,
    backbone_size: str,
    backbone_pretrain: bool,
) -> WeightsChoice:
    """The starting weights in the order of the module docstring."""
    if load_from:
        path = resolve_model_path(load_from, models_dir, mapper)
        if not path.is_file():
            raise ModelError(f"load_from: weights file {load_from!r} not found (looked at {path})")
        return WeightsChoice(path, saved_config_for(path, path.parent), f"load_from {path}", "load_from")
    ranked = rank_weights([resolve_model_path(p, models_dir, mapper) for p in pretrained])
    if pretrained and not ranked:
        raise ModelError(f"pretrained_model_params: none of {pretrained} is a weights file under {models_dir}")
    if ranked:
        return WeightsChoice(
            ranked[0], saved_config_for(ranked[0], models_dir), f"pretrained model {ranked[0]}", "pretrained"
        )
    baked = rank_weights(sorted(weights_dir().glob(f"{model_name}*")))
    if baked:
        return WeightsChoice(baked[0], None, f"COCO checkpoint {baked[0]}", "coco")
    missing = f"no COCO checkpoint {weights_dir() / (model_name + '*')}"
    if not backbone_pretrain:
        return WeightsChoice(None, None, f"random init ({missing}; backbone.pretrain is false)", "random")
    imagenet = find_imagenet_weights(backbone_size)
    if imagenet is not None:
        return WeightsChoice(
            None, None, f"ImageNet backbone {imagenet} ({missing}; neck and heads at random init)", "imagenet"
        )
    return WeightsChoice(None, None, f"random init ({missing}; {missing_imagenet_message(backbone_size)})", "random")


def choose_inference_weights(model_params: list[str], models_dir: Path, mapper: PathMapper) -> WeightsChoice:
    if not model_params:
        raise ModelError("model_params_path: no model given for this task")
    ranked = rank_weights([resolve_model_path(p, models_dir, mapper) for p in model_params])
    if not ranked:
        raise ModelError(f"model_params_path: none of {model_params} is a weights file under {models_dir}")
    return WeightsChoice(ranked[0], saved_config_for(ranked[0], models_dir), f"model {ranked[0]}")
