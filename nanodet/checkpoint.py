"""Reading and writing weights in the official NanoDet formats.

- ``.pth`` (``nanodet_model_best.pth``): ``{"state_dict": {...}}`` with plain model keys.
- Lightning ``.ckpt``: ``state_dict`` holds ``model.*`` (raw) and ``avg_model.*`` (EMA) keys;
  the averaged weights win when present.

Files are read with ``torch.load(weights_only=True)``: a pickle that would run code is refused.
The few Lightning/yacs/argparse/numpy names that old official checkpoints carry beside their
weights are read into inert stand-ins (``checkpoint_globals``); every other name is refused.
Tensors whose shape differs from the model (another class count) are skipped and reported,
so COCO weights fine-tune onto a user's classes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoint_globals import allowed_globals
from .utils.io import atomic_torch_save

log = logging.getLogger(__name__)

AUX_PREFIXES = ("aux_fpn.", "aux_head.")


class CheckpointError(ValueError):
    """A weights file that cannot be used; the message names the file."""


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    source_format: str = ""

    def summary(self) -> str:
        return (
            f"{len(self.loaded)} tensors loaded, {len(self.shape_mismatch)} skipped (shape), "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected ({self.source_format})"
        )


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint mapping, read safely; one clear error line when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign files
        raise CheckpointError(f"{path}: {_load_failure(err)}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a NanoDet checkpoint (top level is {type(obj).__name__})")
    return obj


def _load_failure(err: Exception) -> str:
    """One line saying why ``torch.load(weights_only=True)`` refused a file. Torch's own text
    for a refused pickle advises loading with ``weights_only=False``: the detail is kept, the
    advice dropped."""
    text = str(err).strip()
    if text.startswith("Weights only load failed"):
        lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
        advice = ("(1)", "(2)", "Please file an issue", "Check the documentation")
        unpickler = [
            line.removeprefix("WeightsUnpickler error: ") for line in lines if line.startswith("WeightsUnpickler error")
        ]
        detail = next(iter(unpickler), next((line for line in lines if not line.startswith(advice)), ""))
        detail = detail.split(". Please use")[0]  # torch's advice on allow-listing the global
        if "GLOBAL" in detail:  # a pickle naming a function or class: loading it could run code
            return f"refused: loading it would import code ({detail[:200]}); only tensors and plain values are accepted"
        return f"not a readable PyTorch checkpoint (not a weights-only pickle: {detail[:200] or 'unreadable'})"
    reason = text.splitlines()[0] if text else type(err).__name__
    return f"not a readable PyTorch checkpoint ({reason[:200]})"


def extract_state_dict(ckpt: dict, source: str = "<checkpoint>") -> tuple[dict[str, torch.Tensor], str]:
    """Plain model keys from any official layout, and a name for the layout found."""
    sd = ckpt.get("state_dict", ckpt)
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{source}: not a NanoDet checkpoint (no state_dict of tensors)")
    if any(k.startswith("avg_model.") for k in sd):
        return {k[len("avg_model.") :]: v for k, v in sd.items() if k.startswith("avg_model.")}, "ckpt (EMA weights)"
    if any(k.startswith("model.") for k in sd):
        return {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")}, "ckpt (raw weights)"
    out = {}
    for k, v in sd.items():
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    return out, "pth" if "state_dict" in ckpt else "bare state dict"


def load_state_dict_into(model: nn.Module, state: dict[str, torch.Tensor], fmt: str = "") -> LoadReport:
    """Copy every tensor whose name and shape fit; report the rest (nothing raises)."""
    own = model.state_dict()
    has_aux = any(k.startswith(AUX_PREFIXES) for k in own)
    report = LoadReport(source_format=fmt)
    usable = {}
    for key, value in state.items():
        if key not in own:
            if not (key.startswith(AUX_PREFIXES) and not has_aux):  # training-only keys are fine to drop
                report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.shape_mismatch.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            usable[key] = value
            report.loaded.append(key)
    report.missing = [k for k in own if k not in usable and k not in {m[0] for m in report.shape_mismatch}]
    model.load_state_dict(usable, strict=False)
    return report


def load_weights(model: nn.Module, path: str | Path, logger: logging.Logger = log, strict: bool = False) -> LoadReport:
    """Load an official ``.pth``/``.ckpt`` (or one of ours) into ``model`` and log what happened.

    Not strict (training, fine-tuning): tensors of another shape are skipped and logged, so
    weights of another class count start a new head. Strict (inference): every tensor of the
    model must be in the file with its shape, else :class:`CheckpointError` says what does not
    fit. Training-only aux keys are ignored by a model without the aux branch either way.
    """
    ckpt = read_checkpoint(path)
    state, fmt = extract_state_dict(ckpt, str(path))
    report = load_state_dict_into(model, state, fmt)
    if not report.loaded:
        raise CheckpointError(f"{path}: no tensor in this checkpoint fits the model (wrong architecture?)")
    if strict and (report.shape_mismatch or report.missing):
        raise CheckpointError(misfit_message(path, model, report))
    for key, theirs, ours in report.shape_mismatch:
        logger.warning("skip %s: checkpoint shape %s, model shape %s", key, list(theirs), list(ours))
    if report.missing:
        logger.warning(
            "%d model tensors not in %s (kept at init), e.g. %s", len(report.missing), path, report.missing[:3]
        )
    if report.unexpected:
        logger.warning(
            "%d tensors in %s unknown to the model, e.g. %s", len(report.unexpected), path, report.unexpected[:3]
        )
    logger.info("loaded %s: %s", path, report.summary())
    return report


def misfit_message(path: str | Path, model: nn.Module, report: LoadReport) -> str:
    """What makes weights unusable for inference with ``model``, in one line."""
    parts = []
    head = getattr(model, "head", None)
    cls_shapes = [(theirs, ours) for key, theirs, ours in report.shape_mismatch if key.startswith("head.gfl_cls")]
    if cls_shapes and hasattr(head, "num_classes"):
        theirs, ours = cls_shapes[0]
        parts.append(
            f"the weights are for {head.num_classes + theirs[0] - ours[0]} classes, "
            f"the model config has {head.num_classes}"
        )
    if report.shape_mismatch:
        key, theirs, ours = report.shape_mismatch[0]
        parts.append(
            f"{len(report.shape_mismatch)} tensors of another shape (e.g. {key}: "
            f"{list(theirs)} in the file, {list(ours)} in the model)"
        )
    if report.missing:
        parts.append(f"{len(report.missing)} model tensors missing from the file (e.g. {report.missing[0]})")
    reasons = "; ".join(parts)
    return f"{path}: these weights do not fit the model config: {reasons} (another class count or architecture?)"


def save_pth(model: nn.Module | dict[str, torch.Tensor], path: str | Path, inference_only: bool = False) -> None:
    """Write ``{"state_dict": ...}`` (the official ``.pth`` layout) atomically."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    if inference_only:
        state = {k: v for k, v in state.items() if not k.startswith(AUX_PREFIXES)}
    atomic_torch_save({"state_dict": {k: v.detach().cpu() for k, v in state.items()}}, path)
