"""Checkpoints shaped like the official NanoDet releases of 2021 (PyTorch Lightning 1.4/1.5),
written without Lightning or yacs installed: their classes are faked in ``sys.modules`` while
``torch.save`` pickles them, then removed, so a reader sees only the names, as with a real file."""

from __future__ import annotations

import argparse
import contextlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch


class _FakeModelCheckpoint:
    def __init__(self, **state) -> None:
        self.__dict__.update(state)


class _FakeTQDMProgressBar:
    pass


class _FakeAttributeDict(dict):
    def __getattr__(self, key):
        return self[key]


class _FakeCfgNode(dict):
    """yacs' config: a dict subclass with an instance attribute (its immutability flag)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.__dict__["__immutable__"] = True


FAKE_CLASSES = {
    "pytorch_lightning.callbacks.model_checkpoint": {"ModelCheckpoint": _FakeModelCheckpoint},
    "pytorch_lightning.callbacks.progress.tqdm_progress": {"TQDMProgressBar": _FakeTQDMProgressBar},
    "pytorch_lightning.utilities.parsing": {"AttributeDict": _FakeAttributeDict},
    "yacs.config": {"CfgNode": _FakeCfgNode},
}


@contextlib.contextmanager
def fake_modules(classes: dict[str, dict[str, type]] = FAKE_CLASSES) -> Iterator[None]:
    """The named modules exist (holding the classes, renamed to their real names) only inside."""
    added = []
    for module_name, members in classes.items():
        parts = module_name.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
        for attr, cls in members.items():
            cls.__module__, cls.__qualname__, cls.__name__ = module_name, attr, attr
            setattr(sys.modules[module_name], attr, cls)
    try:
        yield
    finally:
        for name in reversed(added):
            del sys.modules[name]


def lightning_layout(state: dict[str, torch.Tensor], version: str = "1.4.9") -> dict:
    """A release checkpoint's top level around the ``model.*``/``avg_model.*`` weights: callback
    state (keyed by class in 1.4, by a state-key string in 1.5), optimizer and scheduler state,
    hyper-parameters holding a yacs config, numpy and tensor scores."""
    cfg = _FakeCfgNode({"save_dir": "workspace/nanodet-plus-m_416", "model": _FakeCfgNode({"arch": {"name": "x"}})})
    callback_state = {
        "monitor": "mAP",
        "best_model_score": torch.tensor(0.3325),
        "best_model_path": "workspace/nanodet-plus-m_416/model_best/model_best.ckpt",
        "current_score": np.float64(0.3301),
        "dirpath": "workspace/nanodet-plus-m_416",
    }
    key = _FakeModelCheckpoint if version.startswith("1.4") else "ModelCheckpoint{'monitor': 'mAP', 'mode': 'max'}"
    first = next(iter(state.values()))
    return {
        "epoch": 299,
        "global_step": 366299,
        "pytorch-lightning_version": version,
        "state_dict": {f"{p}.{k}": v for p in ("model", "avg_model") for k, v in state.items()},
        "callbacks": {key: callback_state, _FakeTQDMProgressBar: {}},
        "optimizer_states": [
            {
                "state": {0: {"step": torch.tensor(366299.0), "exp_avg": torch.zeros_like(first)}},
                "param_groups": [{"lr": 5e-05, "betas": (0.9, 0.999), "weight_decay": 0.05, "params": [0]}],
            }
        ],
        "lr_schedulers": [{"T_max": 300, "eta_min": 5e-05, "base_lrs": [0.001], "last_epoch": 299, "_step_count": 300}],
        "hparams_name": "kwargs",
        "hyper_parameters": _FakeAttributeDict(cfg=cfg, args=argparse.Namespace(config="cfg.yml", seed=-1)),
    }


def save_lightning_checkpoint(state: dict[str, torch.Tensor], path: Path, version: str = "1.4.9") -> None:
    """Write ``state`` as an official release file of Lightning ``version`` would hold it."""
    with fake_modules():
        torch.save(lightning_layout(state, version), path)
