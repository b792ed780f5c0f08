"""Official release checkpoints (Lightning 1.4/1.5 pickles) load without running their code;
anything that would run code is still refused, and never runs."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import pytest
import torch

from nanodet.config import load_config
from nanodet.model import build_model
from nanodet.weights.checkpoint import CheckpointError, load_weights, read_checkpoint
from nanodet.weights.stand_ins import meant_class

from .conftest import CONFIG_DIR, randomized_model
from .old_checkpoints import fake_modules, save_lightning_checkpoint

MODEL_CHECKPOINT = "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"


@pytest.fixture(scope="module")
def cfg():
    return load_config(CONFIG_DIR / "nanodet-plus-m_320.yml")


@pytest.fixture(scope="module")
def trained(cfg):
    return randomized_model(cfg, seed=7)


@pytest.mark.parametrize("version", ["1.4.9", "1.5.10"])
def test_release_checkpoint_loads_every_tensor(tmp_path: Path, cfg, trained, version):
    path = tmp_path / "nanodet-plus-m_320_checkpoint.ckpt"
    save_lightning_checkpoint(trained.state_dict(), path, version)
    assert not any(name.startswith(("pytorch_lightning", "yacs")) for name in sys.modules)

    model = build_model(cfg.model.arch)
    report = load_weights(model, path, strict=True)  # the check fetch_weights.py makes at build

    assert report.source_format == "ckpt (EMA weights)" and len(report.loaded) == 887
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in model.state_dict().items())
    assert not any(name.startswith(("pytorch_lightning", "yacs")) for name in sys.modules), "a real import happened"


def test_non_tensor_parts_come_back_as_inert_values(tmp_path: Path, trained):
    path = tmp_path / "old.ckpt"
    save_lightning_checkpoint(trained.state_dict(), path, "1.4.9")
    ckpt = read_checkpoint(path)

    (key, state), (bar, _) = ckpt["callbacks"].items()
    assert meant_class(key) == MODEL_CHECKPOINT
    assert meant_class(bar) == "pytorch_lightning.callbacks.progress.tqdm_progress.TQDMProgressBar"
    assert state["monitor"] == "mAP" and float(state["best_model_score"]) == pytest.approx(0.3325)
    assert float(state["current_score"]) == pytest.approx(0.3301)  # a numpy scalar
    hparams = ckpt["hyper_parameters"]
    assert dict(hparams["cfg"]["model"]) == {"arch": {"name": "x"}}  # yacs CfgNode → plain mapping
    assert hparams["cfg"].__dict__ == {"__immutable__": True}  # its attribute kept, inert
    assert meant_class(hparams["args"]) == "argparse.Namespace" and hparams["args"].seed == -1
    assert ckpt["pytorch-lightning_version"] == "1.4.9" and ckpt["lr_schedulers"][0]["T_max"] == 300


class _SystemCall:
    """A class whose pickle calls os.system: what a hostile checkpoint looks like."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _PluginModule:
    """A class of a module the allow-list does not name (a LightningModule subclass)."""


def _assert_refused(path: Path, marker: Path, what: str) -> None:
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert str(err.value).startswith(f"{path}: refused: loading it would import code (")
    assert what in str(err.value)
    assert not marker.exists(), "the payload ran"


def test_os_system_beside_lightning_state_is_refused_and_never_runs(tmp_path: Path, trained):
    marker = tmp_path / "sentinel"
    state = {"state_dict": {"model.w": torch.zeros(1)}, "callbacks": {"x": _SystemCall(str(marker))}}
    torch.save(state, tmp_path / "evil.ckpt")
    _assert_refused(tmp_path / "evil.ckpt", marker, "system")


def test_a_class_the_allow_list_does_not_name_is_refused(tmp_path: Path):
    marker = tmp_path / "sentinel"
    with fake_modules({"pytorch_lightning.core.lightning": {"LightningModule": _PluginModule}}):
        torch.save({"state_dict": {"model.w": torch.zeros(1)}, "module": _PluginModule()}, tmp_path / "m.ckpt")
    _assert_refused(tmp_path / "m.ckpt", marker, "pytorch_lightning.core.lightning.LightningModule")


def test_plain_pickle_payload_is_refused_and_never_runs(tmp_path: Path):
    """Not even torch's zip layout: a bare pickle whose REDUCE would call os.system."""
    marker = tmp_path / "sentinel"
    with open(tmp_path / "evil.ckpt", "wb") as f:
        pickle.dump({"state_dict": _SystemCall(str(marker))}, f)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_stand_ins_are_allowed_only_while_reading(tmp_path: Path, trained):
    """The allow-list is scoped to read_checkpoint: a plain torch.load still refuses the file."""
    path = tmp_path / "old.ckpt"
    save_lightning_checkpoint(trained.state_dict(), path)
    read_checkpoint(path)
    with pytest.raises(Exception, match="ModelCheckpoint"):
        torch.load(path, weights_only=True)
