"""The model matches the official one: names, shapes, parameter counts and FLOPs."""

import json
import subprocess
import sys

import pytest
import torch

from nanodet.config import load_config
from nanodet.engine.distributed import sync_batchnorm_if_asked
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
    out = (
        subprocess.run(
            [sys.executable, "-m", "nanodet", "info", str(CONFIG_DIR / config)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        .stdout.strip()
        .splitlines()
    )
    assert len(out) == 1
    info = json.loads(out[0])
    assert info["params"] == params
    assert abs(info["gflops"] - gflops) / gflops < 0.03
    size = 416 if "416" in config else 320
    assert info["input_size"] == [size, size]


def test_info_num_classes_changes_head_only():
    out = subprocess.run(
        [sys.executable, "-m", "nanodet", "info", str(CONFIG_DIR / "nanodet-plus-m_320.yml"), "--num-classes", "3"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
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


# --- norm_cfg: every norm layer is the one the config names -------------------------------


def _arch(config: str = "nanodet-plus-m_320.yml", head: dict | None = None, aux_head: dict | None = None):
    cfg = load_config(CONFIG_DIR / config)
    arch = {"head": head or {}} | ({"aux_head": aux_head} if aux_head else {})
    return cfg.merged({"model": {"arch": arch}}).model.arch


def _head_norms(head: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in head.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm))]


@pytest.mark.parametrize("config", [c for c, *_ in OFFICIAL])
def test_every_bundled_config_builds_with_its_norms(config):
    cfg = load_config(CONFIG_DIR / config)
    model = build_model(cfg.model.arch)
    assert _head_norms(model.head) and all(type(m) is torch.nn.BatchNorm2d for m in _head_norms(model.head))
    if model.aux_head is not None:  # official default: GN, 32 groups
        norms = _head_norms(model.aux_head)
        assert len(norms) == 2 * 4 and all(type(m) is torch.nn.GroupNorm and m.num_groups == 32 for m in norms)


@pytest.mark.parametrize("conv_type", ["DWConv", "Conv"])
def test_main_head_group_norm_is_honoured(conv_type):
    arch = _arch(head={"conv_type": conv_type, "norm_cfg": {"type": "GN", "num_groups": 8}})
    head = build_model(arch, with_aux=False).head
    norms = _head_norms(head)
    per_block = 2 if conv_type == "DWConv" else 1  # dwnorm + pwnorm, or one norm after the conv
    assert len(norms) == 4 * 2 * per_block
    assert all(type(m) is torch.nn.GroupNorm and m.num_groups == 8 and m.num_channels == 96 for m in norms)
    block = head.cls_convs[0][0]
    assert hasattr(block, "dwnorm") if conv_type == "DWConv" else block.norm_name == "gn"
    assert head([torch.randn(1, 96, s, s) for s in (8, 4, 2, 1)]).shape == (1, 85, 80 + 32)


def test_legacy_head_group_norm_is_honoured():
    head = build_model(_arch("nanodet-m.yml", head={"norm_cfg": {"type": "GN", "num_groups": 4}})).head
    norms = _head_norms(head)
    assert len(norms) == 3 * 2 * 2 and all(type(m) is torch.nn.GroupNorm and m.num_groups == 4 for m in norms)


@pytest.mark.parametrize(
    "norm_cfg, layer, groups",
    [
        ({"type": "GN", "num_groups": 32}, torch.nn.GroupNorm, 32),
        ({"type": "GN", "num_groups": 16}, torch.nn.GroupNorm, 16),
        ({"type": "BN"}, torch.nn.BatchNorm2d, None),
        ({"type": "SyncBN"}, torch.nn.BatchNorm2d, None),  # a SyncBatchNorm only under DDP
        ({"type": "GN", "num_groups": 8, "requires_grad": False}, torch.nn.GroupNorm, 8),
    ],
)
def test_aux_head_norm_is_the_configured_one(norm_cfg, layer, groups):
    aux = build_model(_arch(aux_head={"norm_cfg": {"num_groups": None} | norm_cfg})).aux_head  # merged into GN
    norms = _head_norms(aux)
    assert len(norms) == 2 * 4 and all(type(m) is layer for m in norms)
    assert all(getattr(m, "num_groups", None) == groups for m in norms)
    assert all(p.requires_grad == norm_cfg.get("requires_grad", True) for m in norms for p in m.parameters())
    attr = "gn" if layer is torch.nn.GroupNorm else "bn"
    assert all(block.norm_name == attr for block in list(aux.cls_convs) + list(aux.reg_convs))


# --- SyncBN: synchronised under DDP, plain batch norm outside it ---------------------------


def test_sync_batchnorm_converts_the_heads_that_ask_under_ddp():
    arch = _arch(head={"norm_cfg": {"type": "SyncBN"}}, aux_head={"norm_cfg": {"type": "SyncBN", "num_groups": None}})
    model = build_model(arch)
    keys = {k: v.shape for k, v in model.state_dict().items()}
    assert sync_batchnorm_if_asked(model, arch, distributed=False) is model
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())

    converted = sync_batchnorm_if_asked(model, arch, distributed=True)
    assert converted is model
    for part in (model.head, model.aux_head):
        norms = _head_norms(part)
        assert norms and all(type(m) is torch.nn.SyncBatchNorm for m in norms)
    # only the layers norm_cfg builds (as the official): backbone and pyramids keep batch norm
    for part in (model.backbone, model.fpn, model.aux_fpn):
        assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in part.modules())
    assert {k: v.shape for k, v in model.state_dict().items()} == keys  # checkpoints unchanged
    with torch.no_grad():  # outside a process group (here: eval) it computes as batch norm
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape[-1] == 80 + 32


def test_sync_batchnorm_only_where_asked():
    arch = _arch(head={"norm_cfg": {"type": "SyncBN"}})
    model = sync_batchnorm_if_asked(build_model(arch), arch, distributed=True)
    assert all(type(m) is torch.nn.SyncBatchNorm for m in _head_norms(model.head))
    assert all(type(m) is torch.nn.GroupNorm for m in _head_norms(model.aux_head))
    plain = load_config(CONFIG_DIR / "nanodet-plus-m_320.yml").model.arch
    model = sync_batchnorm_if_asked(build_model(plain), plain, distributed=True)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())


def test_fusing_leaves_group_norm_heads_correct():
    from nanodet.model.fuse import fuse_model

    arch = _arch(head={"norm_cfg": {"type": "GN", "num_groups": 8}})
    torch.manual_seed(0)
    model = build_model(arch, with_aux=False).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        after = fuse_model(model)(x)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.head.modules())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
