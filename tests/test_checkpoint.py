"""Both official weight formats load; mismatches are reported, not fatal; bad files fail clearly."""

import pickle
from pathlib import Path

import pytest
import torch

from nanodet.checkpoint import CheckpointError, load_weights, save_pth
from nanodet.config import load_config
from nanodet.model import build_model

from .conftest import CONFIG_DIR, randomized_model


@pytest.fixture(scope="module")
def cfg():
    return load_config(CONFIG_DIR / "nanodet-plus-m_320.yml")


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pth_round_trip(tmp_path: Path, cfg):
    src = randomized_model(cfg, seed=1)
    save_pth(src, tmp_path / "m.pth")
    dst = build_model(cfg.model.arch)
    report = load_weights(dst, tmp_path / "m.pth")
    assert not report.missing and not report.unexpected and not report.shape_mismatch
    assert _equal(src.state_dict(), dst.state_dict())


def test_lightning_ckpt_prefers_averaged_weights(tmp_path: Path, cfg):
    raw, ema = randomized_model(cfg, seed=1), randomized_model(cfg, seed=2)
    state = {f"model.{k}": v for k, v in raw.state_dict().items()}
    state |= {f"avg_model.{k}": v for k, v in ema.state_dict().items()}
    assert len(state) == 1774  # as the official Plus checkpoints
    torch.save(
        {"epoch": 299, "global_step": 1000, "state_dict": state, "pytorch-lightning_version": "1.9.0"},
        tmp_path / "model_best.ckpt",
    )
    dst = build_model(cfg.model.arch)
    report = load_weights(dst, tmp_path / "model_best.ckpt")
    assert report.source_format == "ckpt (EMA weights)"
    assert _equal(ema.state_dict(), dst.state_dict())


def test_lightning_ckpt_without_ema_uses_model_weights(tmp_path: Path, cfg):
    raw = randomized_model(cfg, seed=3)
    torch.save({"state_dict": {f"model.{k}": v for k, v in raw.state_dict().items()}}, tmp_path / "m.ckpt")
    dst = build_model(cfg.model.arch)
    load_weights(dst, tmp_path / "m.ckpt")
    assert _equal(raw.state_dict(), dst.state_dict())


def test_other_class_count_skips_only_mismatched_tensors(tmp_path: Path, cfg, caplog):
    coco = randomized_model(cfg, seed=4)
    save_pth(coco, tmp_path / "coco.pth")
    three = build_model(cfg.with_classes(["a", "b", "c"]).model.arch)
    before = {k: v.clone() for k, v in three.state_dict().items()}
    report = load_weights(three, tmp_path / "coco.pth")
    skipped = {k for k, _, _ in report.shape_mismatch}
    # 4 head 1×1 convs (weight + bias) and the aux head's class conv (weight + bias)
    assert skipped == {f"head.gfl_cls.{i}.{p}" for i in range(4) for p in ("weight", "bias")} | {
        "aux_head.gfl_cls.weight",
        "aux_head.gfl_cls.bias",
    }
    assert "skip head.gfl_cls.0.weight: checkpoint shape [112, 96, 1, 1], model shape [35, 96, 1, 1]" in caplog.text
    state = three.state_dict()
    for k in state:
        expected = before[k] if k in skipped else coco.state_dict()[k]
        assert torch.equal(state[k], expected), k


def test_inference_model_ignores_training_only_keys(tmp_path: Path, cfg):
    save_pth(randomized_model(cfg), tmp_path / "full.pth")
    model = build_model(cfg.model.arch, with_aux=False)
    report = load_weights(model, tmp_path / "full.pth")
    assert not report.unexpected and not report.missing and len(report.loaded) == 645


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_garbage_file_is_one_clear_error(tmp_path: Path, cfg, content):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_weights(build_model(cfg.model.arch), bad)
    message = str(err.value)
    assert message.startswith(str(bad)) and "\n" not in message


def test_missing_file(tmp_path: Path, cfg):
    with pytest.raises(CheckpointError, match="weights file not found"):
        load_weights(build_model(cfg.model.arch), tmp_path / "nope.pth")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_that_runs_code_is_refused(tmp_path: Path, cfg, capsys):
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": _RunsCode()}, f)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_weights(build_model(cfg.model.arch), evil)
    assert "this must never run" not in capsys.readouterr().out


def test_torch_saved_pickle_naming_code_is_refused_as_such(tmp_path: Path, cfg):
    """The format torch.save writes: the message says why (code), without torch's advice to
    load it with weights_only=False; the code never runs."""
    marker = tmp_path / "ran"
    torch.save({"state_dict": _WritesFile(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError) as info:
        load_weights(build_model(cfg.model.arch), tmp_path / "evil.pth")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'evil.pth'}: refused: loading it would import code (")
    assert "GLOBAL" in message and "weights_only" not in message and "add_safe_globals" not in message
    assert not marker.exists()


class _WritesFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('x')",))


def test_wrong_architecture_is_an_error(tmp_path: Path, cfg):
    torch.save({"state_dict": {"foo.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no tensor in this checkpoint fits"):
        load_weights(build_model(cfg.model.arch), tmp_path / "other.pth")
