"""The model matches the official one: names, shapes, parameter counts and FLOPs."""

import json
import subprocess
import sys

import pytest
import torch

from nanodet.config import load_config
from nanodet.model import build_model

from .conftest import CONFIG_DIR, KEYS_DIR, ROOT

# (config, key list, full inference params for 80 classes, GFLOPs from the spec table)
OFFICIAL = [
    ("nanodet-m.yml", "nanodet-m.txt", 959_348, 0.684),
    ("nanodet-plus-m_320.yml", "nanodet-plus-m_320.txt", 1_197_924, 0.901),
    ("nanodet-plus-m_416.yml", "nanodet-plus-m_320.txt", 1_197_924, 1.524),
    ("nanodet-plus-m-1.5x_320.yml", "nanodet-plus-m-1.5x_320.txt", 2_477_792, 1.758),
    ("nanodet-plus-m-1.5x_416.yml", "nanodet-plus-m-1.5x_320.txt", 2_477_792, 2.973),
]


def official_keys(name: str) -> dict[str, list[int]]:
    keys = {}
    for line in (KEYS_DIR / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")
        keys[key] = json.loads(shape)
    return keys


@pytest.mark.parametrize("config, keys", [(c, k) for c, k, _, _ in OFFICIAL[:2] + OFFICIAL[3:4]])
def test_state_dict_names_and_shapes_are_official(config, keys):
    model = build_model(load_config(CONFIG_DIR / config).model.arch)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == official_keys(keys)


def test_official_state_dict_loads_strictly():
    """A state dict built only from the official key list loads with zero missing/unexpected keys."""
    ref = official_keys("nanodet-plus-m_320.txt")
    state = {k: torch.full(shape, 0.5) if shape else torch.tensor(3) for k, shape in ref.items()}
    model = build_model(load_config(CONFIG_DIR / "nanodet-plus-m_320.yml").model.arch)
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize("config, _keys, params, gflops", OFFICIAL)
def test_info_cli_params_and_flops(config, _keys, params, gflops):
    out = subprocess.run(
        [sys.executable, "-m", "nanodet", "info", str(CONFIG_DIR / config)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.strip().splitlines()
    assert len(out) == 1
    info = json.loads(out[0])
    assert info["params"] == params
    assert abs(info["gflops"] - gflops) / gflops < 0.03
    size = 416 if "416" in config else 320
    assert info["input_size"] == [size, size]


def test_info_num_classes_changes_head_only():
    out = subprocess.run(
        [sys.executable, "-m", "nanodet", "info", str(CONFIG_DIR / "nanodet-plus-m_320.yml"), "--num-classes", "3"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout
    # 4 levels × 1×1 conv from 96 channels: 77 fewer classes → 77 × (96 + 1) × 4 fewer params
    assert json.loads(out)["params"] == 1_197_924 - 77 * 97 * 4


def test_output_layout_and_aux_branch():
    cfg = load_config(CONFIG_DIR / "nanodet-plus-m_320.yml")
    model = build_model(cfg.model.arch).eval()
    x = torch.randn(2, 3, 320, 320)
    with torch.no_grad():
        out = model(x)
        preds, aux = model.forward_train(x, epoch=0)
    priors = model.head.priors((320, 320))
    assert out.shape == (2, 40 * 40 + 20 * 20 + 10 * 10 + 5 * 5, 80 + 32) == preds.shape == aux.shape
    assert priors.shape == (out.shape[1], 4)
    # NanoDet-Plus places priors at cell corners (x = i * stride), first level stride 8
    assert priors[:3, 0].tolist() == [0.0, 8.0, 16.0] and priors[-1].tolist() == [256.0, 256.0, 64.0, 64.0]
    model.drop_aux()
    assert not any(k.startswith("aux_") for k in model.state_dict())
