"""Shared fixtures: configs, weights with non-trivial BN statistics, sample images."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from nanodet.config import load_config
from nanodet.model import build_model
from nanodet.weights.checkpoint import save_pth

# Each xdist worker gets one core: two OpenMP pools fighting over two cores are many times
# slower than one thread each (spin-waiting threads get preempted).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the subprocesses tests start

# Exports cached by the predictor go to a folder of this run, not the user's ~/.cache (inherited
# by the subprocesses tests start and by pytest-xdist's workers); removed when the process that
# made it exits (~80 MiB of exports a run).
if "NANODET_CACHE_DIR" not in os.environ:
    os.environ["NANODET_CACHE_DIR"] = tempfile.mkdtemp(prefix="nanodet-test-cache-")
    atexit.register(shutil.rmtree, os.environ["NANODET_CACHE_DIR"], ignore_errors=True)

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "config"
KEYS_DIR = ROOT / "tests" / "data" / "nanodet-keys"


def randomized_model(cfg, seed: int = 0, cls_bias: float = -3.0):
    """A model that behaves like a trained one for inference tests: BN statistics that are not
    the identity, and class logits that vary over the image (spread 1.5, mean ``cls_bias``) so
    some cells score above the 0.05 threshold and scores are not tied."""
    torch.manual_seed(seed)
    model = build_model(cfg.model.arch)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
            elif isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0.0, m.weight[0].numel() ** -0.5)
        model.eval()
        n = model.head.num_classes
        w, h = cfg.input_size
        levels = model.forward_levels(torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed)))
        for conv, out in zip(model.head.gfl_cls, levels):
            gain = 1.5 / out[:, :n].std().clamp(min=1e-6)
            weighted_mean = (out[:, :n] - conv.bias[:n, None, None]).mean()
            conv.weight[:n] *= gain
            conv.bias[:n] = cls_bias - weighted_mean * gain
        model.train()
    return model


@pytest.fixture(scope="session")
def plus_cfg():
    return load_config(CONFIG_DIR / "nanodet-plus-m_320.yml")


@pytest.fixture(scope="session")
def plus_weights(tmp_path_factory, plus_cfg) -> Path:
    path = tmp_path_factory.mktemp("weights") / "plus.pth"
    save_pth(randomized_model(plus_cfg, cls_bias=-7.5), path)
    return path


@pytest.fixture(scope="session")
def sample_images(tmp_path_factory) -> list[Path]:
    """The four pictures of the generated platform sample (1024 to 1280 px wide)."""
    from .sample_data import write_sample

    return sorted((write_sample(tmp_path_factory.mktemp("sample")) / "assets").glob("*.jpg"))


def synthetic_training_config(
    root: Path,
    train_images: int = 48,
    val_images: int = 12,
    input_size=(128, 128),
    epochs: int = 2,
    batch_size: int = 8,
    seed: int = 0,
    **overrides,
):
    """nanodet-plus-m on a generated 3-class shapes dataset, sized for CPU tests."""
    from nanodet.data.synthetic import make_synthetic_coco

    train_ann = root / "train" / "annotations.json"
    if not train_ann.exists():
        make_synthetic_coco(root / "train", train_images, image_size=(160, 160), seed=seed, min_size=32, max_size=80)
        make_synthetic_coco(root / "val", val_images, image_size=(160, 160), seed=seed + 1000, min_size=32, max_size=80)
    cfg = load_config(CONFIG_DIR / "nanodet-plus-m_320.yml").with_classes(["circle", "square", "triangle"])

    def split(name: str) -> dict:
        return {
            "img_path": str(root / name / "images"),
            "ann_path": str(root / name / "annotations.json"),
            "input_size": list(input_size),
        }

    base = {
        "save_dir": str(root / "work"),
        "data": {"train": split("train"), "val": split("val")},
        "device": {"batchsize_per_gpu": batch_size, "workers_per_gpu": 0},
        "schedule": {
            "total_epochs": epochs,
            "val_intervals": 1,
            "warmup": {"steps": 5},
            "lr_schedule": {"T_max": epochs},
        },
        "model": {"arch": {"detach_epoch": 1}},
        "log": {"interval": 1000},
    }
    from nanodet.config import _deep_merge

    return cfg.merged(_deep_merge(base, overrides))
