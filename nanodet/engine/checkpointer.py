"""Training checkpoints in the official layout, written atomically.

``state_dict`` holds ``model.*`` (raw weights) and ``avg_model.*`` (EMA weights), as the
official Lightning checkpoints do, so official tools read our files and we read theirs.
Beside it: optimizer, AMP scaler, epoch, step, best metric and RNG states. Everything is
plain tensors and Python values, so ``torch.load(weights_only=True)`` reads it back.

Reading one back for a resume checks everything the resume uses (counters, optimizer and scaler
layout, RNG states) and turns the counters into plain Python numbers, so that a damaged or
hostile file is one :class:`~nanodet.errors.CheckpointError` naming the file and the key,
never a TypeError half-way through restoring the training state.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from ..errors import CheckpointError
from ..utils.io import atomic_torch_save
from ..weights.checkpoint import read_checkpoint


def rng_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def lightning_state_dict(model: nn.Module, ema_model: nn.Module | None) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    if ema_model is not None:
        state |= {f"avg_model.{k}": v.detach().cpu() for k, v in ema_model.state_dict().items()}
    return state


def save_training_checkpoint(
    path: str | Path,
    model: nn.Module,
    ema_model: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    epoch: int,
    global_step: int,
    best_metric: float,
    extra: dict[str, Any] | None = None,
) -> None:
    """``epoch`` is the number of completed epochs (training resumes there)."""
    ckpt = {
        "state_dict": lightning_state_dict(model, ema_model),
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [{"last_epoch": epoch}],
        "scaler": scaler.state_dict() if scaler is not None else {},
        "epoch": epoch,
        "global_step": global_step,
        "best_metric": best_metric,
        "rng_states": rng_states(),
        **(extra or {}),
    }
    atomic_torch_save(ckpt, path)


REQUIRED_KEYS = ("state_dict", "optimizer_states", "epoch", "global_step")
SCALER_KEYS = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}


def plain_number(value: Any) -> Any:
    """A one-value tensor or a numpy number as the Python number it holds; anything else as it
    is (for the counters' validation to refuse). Checkpoint values reach here only after
    :func:`~nanodet.weights.checkpoint.read_checkpoint` refused forged numpy values."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return value.item()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


class ResumeCounters(BaseModel):
    """The numbers a resume continues from (Lightning writes ``epoch`` and ``global_step``;
    ``best_metric`` and ``best_epoch`` are ours, absent from official files)."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)

    epoch: int = Field(ge=0)
    global_step: int = Field(ge=0)
    best_metric: float = -1.0
    best_epoch: int = Field(default=-1, ge=-1)

    @field_validator("*", mode="before")
    @classmethod
    def _plain(cls, value: Any) -> Any:
        return plain_number(value)


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint to resume from, every part the resume uses checked (CheckpointError naming
    the file and the part otherwise); its counters are plain Python numbers."""
    return check_resumable(read_checkpoint(path), path)


def check_resumable(ckpt: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """``ckpt`` (read from ``path``) checked as :func:`load_training_checkpoint` checks it."""
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a resumable training checkpoint (missing {', '.join(missing)})")
    problem = _layout_problem(ckpt)
    if problem is not None:
        raise CheckpointError(f"{path}: not a resumable training checkpoint ({problem})")
    try:
        counters = ResumeCounters.model_validate({k: ckpt[k] for k in ResumeCounters.model_fields if k in ckpt})
    except ValidationError as err:
        first = err.errors()[0]
        raise CheckpointError(
            f"{path}: not a resumable training checkpoint ({'.'.join(map(str, first['loc']))}: {first['msg']})"
        ) from None
    ckpt.update(counters.model_dump())
    return ckpt


def _layout_problem(ckpt: dict[str, Any]) -> str | None:
    """What in the parts a resume restores (weights, optimizer, scaler, RNG) is not laid out as
    :func:`save_training_checkpoint` and Lightning write them, else None."""
    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not state:
        return "state_dict is not a mapping of tensors"
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        return "state_dict holds something other than named tensors"
    optimizer = ckpt["optimizer_states"]
    if not isinstance(optimizer, (list, tuple)) or not optimizer or not _optimizer_state_ok(optimizer[0]):
        return "optimizer_states[0] is not an optimizer state (state, param_groups of params)"
    scaler = ckpt.get("scaler")
    if scaler is not None and not (
        isinstance(scaler, dict)
        and (not scaler or set(scaler) == SCALER_KEYS)
        and all(type(plain_number(v)) in (int, float) for v in scaler.values())
    ):
        return f"scaler is neither empty nor a GradScaler state ({', '.join(sorted(SCALER_KEYS))})"
    if "rng_states" in ckpt:
        return _rng_problem(ckpt["rng_states"])
    return None


def _optimizer_state_ok(state: Any) -> bool:
    """``{"state": {int: {name: tensor or number}}, "param_groups": [{"params": [int], hyper-
    parameter: number, flag or None}]}``, as ``Optimizer.state_dict`` writes it."""
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict):
        return False
    groups = state.get("param_groups")
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) for g in groups):
        return False
    for group in groups:
        if not isinstance(group.get("params"), (list, tuple)) or not all(type(p) is int for p in group["params"]):
            return False
        if not all(isinstance(k, str) and (k == "params" or _hyper_parameter(v)) for k, v in group.items()):
            return False
    return all(
        type(k) is int
        and isinstance(v, dict)
        and all(isinstance(x, torch.Tensor) or type(x) in (int, float) for x in v.values())
        for k, v in state["state"].items()
    )


def _hyper_parameter(value: Any) -> bool:
    if value is None or type(value) in (bool, int, float) or type(plain_number(value)) in (int, float):
        return True
    return isinstance(value, (list, tuple)) and all(type(plain_number(x)) in (int, float) for x in value)


def _generator_state(value: Any, numel: int | None = None) -> bool:
    """A byte tensor a generator's ``set_state`` can copy from (it reads the raw memory)."""
    return (
        isinstance(value, torch.Tensor)
        and value.dtype == torch.uint8
        and value.dim() == 1
        and value.is_contiguous()
        and (numel is None or value.numel() == numel)
    )


def _rng_problem(states: Any) -> str | None:
    """What in ``rng_states`` :func:`restore_rng_states` could not restore, else None."""
    if not isinstance(states, dict):
        return "rng_states is not a mapping"
    if not _generator_state(states.get("torch"), torch.get_rng_state().numel()):
        return "rng_states.torch is not a CPU generator state"
    n = states.get("numpy")
    if not (
        isinstance(n, dict)
        and isinstance(n.get("keys"), torch.Tensor)
        and n["keys"].shape == (624,)
        and not (n["keys"].is_floating_point() or n["keys"].is_complex() or n["keys"].requires_grad)
        and type(n.get("pos")) is int
        and 0 <= n["pos"] <= 624
        and type(n.get("has_gauss")) is int
        and type(n.get("gauss")) is float
    ):
        return "rng_states.numpy is not a MT19937 state"
    py = states.get("python")
    if not (
        isinstance(py, (tuple, list))
        and len(py) == 3
        and type(py[0]) is int
        and py[0] == random.getstate()[0]
        and isinstance(py[1], (tuple, list))
        and len(py[1]) == 625
        and all(type(x) is int and 0 <= x < 2**32 for x in py[1])
        and py[1][-1] <= 624
        and (py[2] is None or type(py[2]) is float)
    ):
        return "rng_states.python is not a random.getstate() state"
    cuda = states.get("cuda", [])
    if not (isinstance(cuda, (list, tuple)) and all(_generator_state(t) for t in cuda)):
        return "rng_states.cuda is not a list of generator states"
    return None


def split_state_dict(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
