"""Weights that cannot be used → 300004; a pickle that would run code is refused unrun."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from ..crafted_pickles import checkpoint_pickle, glob, object_array_over_file_bytes, torch_zip, with_top_level_item
from ..executor_helpers import run_start
from .checks import assert_fails_with
from .corpus import (
    GARBAGE,
    code_running_pickle,
    edit_config,
    foreign_architecture_weights,
    tiny_models,
    tiny_predict,
    tiny_training,
)

MODEL = 300004
FORGED = "refused: numpy dtype 'O8' (only plain numeric and bool dtypes are accepted)"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return tiny_models(tmp_path_factory.mktemp("models"))


def _weights(in_dir: Path, name: str) -> Path:
    path = in_dir / "models" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _load_from(name: str, write):
    def mutate(in_dir: Path, sentinel: Path) -> None:
        if write is not None:
            write(_weights(in_dir, name), sentinel)
        edit_config(in_dir, load_from=name)

    return mutate


def _truncated_checkpoint(path: Path, sentinel: Path) -> None:
    foreign_architecture_weights(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a zip cut in the middle, as a failed copy leaves it


def _forged_numpy_value(path: Path, sentinel: Path | None = None) -> None:
    """Weights beside an object array over file bytes (its dtype's object flag cleared by the
    file): read by the old allow-list, it died with SIGSEGV at the first float() or repr()."""
    foreign_architecture_weights(path)
    path.write_bytes(with_top_level_item(path.read_bytes(), "best_metric", object_array_over_file_bytes()))


def _wider_plus_weights(path: Path) -> None:
    """NanoDet-Plus-m 1.5x weights, for the 1.0x model of the workspace's config."""
    from nanodet.config import load_config
    from nanodet.model import build_model
    from nanodet.weights.checkpoint import save_pth

    from ..conftest import CONFIG_DIR

    save_pth(build_model(load_config(CONFIG_DIR / "nanodet-plus-m-1.5x_320.yml").model.arch), path)


TRAINING_CASES = [
    # (id, damage, text the monitor message must contain)
    ("load-from-missing", _load_from("nope/missing.pth", None), "load_from: weights file 'nope/missing.pth' not found"),
    (
        "load-from-garbage",
        _load_from("garbage.pth", lambda p, s: p.write_bytes(GARBAGE)),
        "garbage.pth: not a readable PyTorch checkpoint",
    ),
    ("load-from-truncated", _load_from("cut.pth", _truncated_checkpoint), "cut.pth: not a readable PyTorch checkpoint"),
    (
        "load-from-not-a-dict",
        _load_from("tensor.pth", lambda p, s: torch.save(torch.zeros(3), p)),
        "tensor.pth: not a NanoDet checkpoint (top level is Tensor)",
    ),
    (
        "load-from-other-architecture",
        _load_from("resnet.pth", lambda p, s: foreign_architecture_weights(p)),
        "resnet.pth: no tensor in this checkpoint fits the model (wrong architecture?)",
    ),
    (
        "load-from-another-width",
        _load_from("wide.pth", lambda p, s: _wider_plus_weights(p)),
        "wide.pth: only 100 of the model's 540 backbone and neck tensors fit (at least 90% must; 440 of another shape",
    ),
    (
        "load-from-code-running-pickle",
        _load_from("evil.pth", code_running_pickle),
        "evil.pth: refused: loading it would import code (Trying to load unsupported GLOBAL posix.system",
    ),
    ("load-from-forged-numpy-value", _load_from("forged.pth", _forged_numpy_value), f"forged.pth: {FORGED}"),
    (
        "pretrained-none-usable",
        lambda d, s: (_weights(d, "notes.txt").write_text("hi"), edit_config(d, pretrained_model_params=["notes.txt"])),
        "pretrained_model_params: none of ['notes.txt'] is a weights file",
    ),
]


@pytest.mark.parametrize("damage, message", [c[1:] for c in TRAINING_CASES], ids=[c[0] for c in TRAINING_CASES])
def test_training_model_error(tmp_path, damage, message):
    in_dir = tiny_training(tmp_path / "in")
    sentinel = tmp_path / "sentinel" / "pwned"
    sentinel.parent.mkdir()
    damage(in_dir, sentinel)
    out = tmp_path / "out"
    assert_fails_with(run_start(in_dir, out), out, MODEL, message)
    assert not sentinel.exists(), "unpickling ran code"
    assert not (out / "models" / "result.yaml").exists()


def test_resume_from_corrupt_last_checkpoint(tmp_path):
    """resume: true with a model_last.ckpt that is not a checkpoint (written by someone else)."""
    in_dir = tiny_training(tmp_path / "in", resume=True)
    out = tmp_path / "out"
    (out / "models").mkdir(parents=True)
    (out / "models" / "model_last.ckpt").write_bytes(GARBAGE)
    assert_fails_with(
        run_start(in_dir, out), out, MODEL, "model_last.ckpt: not a readable PyTorch checkpoint", checkpoints=False
    )  # the garbage checkpoint is the test's own


def test_resume_from_a_forged_last_checkpoint(tmp_path):
    """resume: true with a model_last.ckpt whose best metric is a forged numpy object array:
    resume converts it with float(), which killed the process (SIGSEGV) before it was refused."""
    in_dir = tiny_training(tmp_path / "in", resume=True)
    out = tmp_path / "out"
    (out / "models").mkdir(parents=True)
    (out / "models" / "model_last.ckpt").write_bytes(torch_zip(checkpoint_pickle(object_array_over_file_bytes())))
    assert_fails_with(run_start(in_dir, out), out, MODEL, f"model_last.ckpt: {FORGED}", checkpoints=False)


def test_a_refused_checkpoint_is_300004_whatever_names_it_quotes(tmp_path):
    """The refusal quotes the global the file names: a file naming 'out of memory' is still a
    refused model (300004), not an out-of-memory failure (300103) of its choosing."""
    from executor.failures import classify
    from nanodet.weights.checkpoint import CheckpointError, read_checkpoint

    path = tmp_path / "named.pth"
    path.write_bytes(torch_zip(checkpoint_pickle(glob("CUDA out of memory", "x"))))
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert "GLOBAL CUDA out of memory.x" in str(err.value)
    assert classify(err.value) == (MODEL, str(err.value))


def _params(*names):
    return lambda in_dir: edit_config(in_dir, model_params_path=list(names))


def _replace_model(write):
    def mutate(in_dir: Path) -> None:
        write(in_dir / "models" / "nanodet_model_best.pth")

    return mutate


PREDICT_CASES = [
    ("params-empty", _params(), "model_params_path: no model given for this task"),
    ("params-missing-file", _params("gone.pth"), "model_params_path: none of ['gone.pth'] is a weights file"),
    ("params-garbage", _replace_model(lambda p: p.write_bytes(GARBAGE)), "not a readable PyTorch checkpoint"),
    ("params-forged-numpy-value", _replace_model(_forged_numpy_value), FORGED),
    (
        "params-other-architecture",
        _replace_model(foreign_architecture_weights),
        "no tensor in this checkpoint fits the model (wrong architecture?)",
    ),
]


@pytest.mark.parametrize("damage, message", [c[1:] for c in PREDICT_CASES], ids=[c[0] for c in PREDICT_CASES])
def test_infer_model_error(tmp_path, models, damage, message):
    in_dir = tiny_predict(tmp_path / "in", models, mining=False)
    damage(in_dir)
    out = tmp_path / "out"
    assert_fails_with(run_start(in_dir, out), out, MODEL, message)
    assert not (out / "infer-result.json").exists()


def test_pickle_refused_in_infer_too(tmp_path, models):
    in_dir = tiny_predict(tmp_path / "in", models, mining=False)
    sentinel = tmp_path / "pwned"
    code_running_pickle(in_dir / "models" / "nanodet_model_best.pth", sentinel)
    out = tmp_path / "out"
    assert_fails_with(run_start(in_dir, out), out, MODEL, "refused: loading it would import code")
    assert not sentinel.exists()
    # the file really would have run code: unpickled without the guard it creates the sentinel
    torch.load(in_dir / "models" / "nanodet_model_best.pth", weights_only=False)
    assert sentinel.exists()
    shutil.rmtree(in_dir)
