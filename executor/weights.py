"""Which weights a task starts from.

Training: ``load_from``; else the best-then-newest file of ``pretrained_model_params``
(with the model config saved beside it when this executor trained it); else COCO weights
baked into the image under ``/weights`` that match the model; else random init.
Mining/infer: the best-then-newest file of ``model_params_path``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

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
    path: Path | None
    saved_config: Path | None
    source: str


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
    load_from: str, pretrained: list[str], models_dir: Path, mapper: PathMapper, model_name: str
) -> WeightsChoice:
    if load_from:
        path = resolve_model_path(load_from, models_dir, mapper)
        if not path.is_file():
            raise ModelError(f"load_from: weights file {load_from!r} not found (looked at {path})")
        return WeightsChoice(path, saved_config_for(path, path.parent), f"load_from {path}")
    ranked = rank_weights([resolve_model_path(p, models_dir, mapper) for p in pretrained])
    if pretrained and not ranked:
        raise ModelError(f"pretrained_model_params: none of {pretrained} is a weights file under {models_dir}")
    if ranked:
        return WeightsChoice(ranked[0], saved_config_for(ranked[0], models_dir), f"pretrained model {ranked[0]}")
    baked = rank_weights(sorted(weights_dir().glob(f"{model_name}*")))
    if baked:
        return WeightsChoice(baked[0], None, f"COCO weights {baked[0]}")
    return WeightsChoice(None, None, "random init")


def choose_inference_weights(model_params: list[str], models_dir: Path, mapper: PathMapper) -> WeightsChoice:
    if not model_params:
        raise ModelError("model_params_path: no model given for this task")
    ranked = rank_weights([resolve_model_path(p, models_dir, mapper) for p in model_params])
    if not ranked:
        raise ModelError(f"model_params_path: none of {model_params} is a weights file under {models_dir}")
    return WeightsChoice(ranked[0], saved_config_for(ranked[0], models_dir), f"model {ranked[0]}")
