"""Training checkpoints in the official layout, written atomically.

``state_dict`` holds ``model.*`` (raw weights) and ``avg_model.*`` (EMA weights), as the
official Lightning checkpoints do, so official tools read our files and we read theirs.
Beside it: optimizer, AMP scaler, epoch, step, best metric and RNG states. Everything is
plain tensors and Python values, so ``torch.load(weights_only=True)`` reads it back.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint import read_checkpoint
from ..utils.io import atomic_torch_save


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


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    ckpt = read_checkpoint(path)
    missing = [k for k in ("state_dict", "optimizer_states", "epoch", "global_step") if k not in ckpt]
    if missing:
        from ..checkpoint import CheckpointError

        raise CheckpointError(f"{path}: not a resumable training checkpoint (missing {', '.join(missing)})")
    return ckpt


def split_state_dict(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
