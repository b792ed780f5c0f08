"""The fast CPU training step computes what the plain one computes.

The step on CPU runs channels-last, with the fused AdamW, a multi-tensor EMA update and a
few layout helpers; each is checked here against the plain computation it replaces.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from nanodet.config import load_config
from nanodet.data.coco_dataset import TrainBatch
from nanodet.engine.build import TrainingParts, build_criterion, build_optimizer, build_training_model
from nanodet.engine.distributed import DistContext
from nanodet.engine.ema import ModelEMA
from nanodet.engine.trainer import Trainer, match_state_layout, training_memory_format
from nanodet.model.backbone import concat_shuffle
from nanodet.model.box_ops import expected_distances, expected_distances_bins_leading
from nanodet.model.layers import dense_grad

from .conftest import CONFIG_DIR

CL = torch.channels_last


def _cfg():
    cfg = load_config(CONFIG_DIR / "nanodet-plus-m_320.yml").with_classes(["circle", "square", "triangle"])
    return cfg.merged({"model": {"arch": {"backbone": {"pretrain": False}}}})


def _batch(seed: int = 0, n: int = 4, size: int = 192) -> TrainBatch:
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    boxes, labels = [], []
    for _ in range(n):
        k = int(rng.integers(1, 5))
        wh = rng.uniform(0.15, 0.5, (k, 2)) * size
        xy = rng.uniform(0, 1, (k, 2)) * (size - wh)
        boxes.append(torch.tensor(np.concatenate([xy, xy + wh], 1), dtype=torch.float32))
        labels.append(torch.tensor(rng.integers(0, 3, k)))
    images = torch.randn(n, 3, size, size, generator=gen)
    return TrainBatch(images, boxes, labels, [np.eye(3)] * n, list(range(n)), [(size, size)] * n, [""] * n)


def _trainer(tmp_path, fast: bool | None) -> Trainer:
    """The library's trainer (``fast=None``: its defaults); ``fast=False``: NCHW and torch's
    default AdamW (a Python loop), the plain step; ``fast=True``: channels-last, fused AdamW."""
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_training_model(cfg)
    optimizer = build_optimizer(cfg, model)
    if fast is False:
        optimizer = torch.optim.AdamW([{**g, "fused": None} for g in optimizer.param_groups])
    parts = TrainingParts(model, build_criterion(cfg), optimizer, None, None, None, ModelEMA(model, 0.9998))
    return Trainer(cfg, tmp_path, DistContext(), parts, channels_last=fast)


def test_cpu_trains_channels_last_by_default(tmp_path) -> None:
    assert training_memory_format(torch.device("cpu")) == CL
    assert training_memory_format(torch.device("cpu"), channels_last=False) == torch.contiguous_format
    assert training_memory_format(torch.device("cuda", 0)) == torch.contiguous_format
    trainer = _trainer(tmp_path, None)
    for model in (trainer.model, trainer.ema.model):
        convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) > 100 and all(w.is_contiguous(memory_format=CL) for w in convs)


def test_channels_last_step_equals_plain_step(tmp_path) -> None:
    """One training step (aux branch on) from the same weights on the same batch: the same
    losses, gradients and updated weights, up to float rounding.

    Train-mode batch norm at random init amplifies rounding: gradients that are zero in exact
    arithmetic come out as noise (~1e-10 of the total norm) in either path, and the others differ
    by ~0.5 % between paths, about as much as float32 NCHW differs from float64. So tensors are
    compared by direction (cosine) where their gradient is not noise, and as a whole by norm."""
    fast, plain = _trainer(tmp_path / "a", True), _trainer(tmp_path / "b", False)
    assert fast.optimizer.defaults["fused"] and not plain.optimizer.defaults["fused"]
    initial = [p.detach().clone() for p in plain.model.parameters()]
    out_fast, out_plain = fast.run_step(_batch(), 0), plain.run_step(_batch(), 0)
    assert out_fast.keys() == out_plain.keys() and len(out_plain) == 8
    for key in out_plain:
        assert out_fast[key] == pytest.approx(out_plain[key], rel=1e-5, abs=1e-7), key

    pairs = [(a, b) for a, b in zip(fast.model.parameters(), plain.model.parameters())]
    g_fast = torch.cat([a.grad.flatten() for a, _ in pairs])
    g_plain = torch.cat([b.grad.flatten() for _, b in pairs])
    assert g_plain.norm() > 1.0
    assert ((g_fast - g_plain).norm() / g_plain.norm()).item() < 2e-2
    signal = [i for i, (_, b) in enumerate(pairs) if b.grad.norm() > 1e-3 * g_plain.norm()]
    for i in signal:
        a, b = pairs[i]
        assert torch.cosine_similarity(a.grad.flatten(), b.grad.flatten(), dim=0) > 0.999, i
    assert len(signal) > 50

    # Adam's first step is about lr * sign(grad): an element whose gradient is near zero moves by
    # +-lr either way, so rounding flips some signs (5.2 % of the update norm with 1 thread, under
    # 5 % with 2)
    w_fast = torch.cat([pairs[i][0].detach().flatten() for i in signal])
    w_plain = torch.cat([pairs[i][1].detach().flatten() for i in signal])
    moved = w_plain - torch.cat([initial[i].flatten() for i in signal])
    assert moved.abs().max() > 0.5 * plain.optimizer.param_groups[0]["lr"]
    assert ((w_fast - w_plain).norm() / moved.norm()).item() < 0.1


def test_fused_adamw_on_cpu_equals_the_loop(tmp_path) -> None:
    cfg = _cfg()
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1)).to(memory_format=CL)
    twin = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1)).to(memory_format=CL)
    twin.load_state_dict(model.state_dict())
    fused = build_optimizer(cfg, model)
    assert fused.defaults["fused"] is True
    twin_of = dict(zip(model.parameters(), twin.parameters()))
    groups = [{**g, "params": [twin_of[p] for p in g["params"]], "fused": None} for g in fused.param_groups]
    loop = torch.optim.AdamW(groups)  # torch's default on CPU: a Python loop over the tensors
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        for p, q in zip(model.parameters(), twin.parameters()):
            # in the parameter's own layout, as autograd hands gradients over
            p.grad = torch.empty_like(p).copy_(torch.randn(p.shape, generator=gen))
            q.grad = p.grad.clone()
        fused.step()
        loop.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(p, q, rtol=1e-6, atol=1e-7)
        assert not torch.equal(p, torch.zeros_like(p))


def test_resumed_nchw_moments_get_the_weights_layout() -> None:
    """Adam moments saved by an NCHW run, loaded for channels-last weights: ``Trainer.resume``
    gives them the weights' layout, and the fused steps then equal the plain ones (torch's
    fused CPU kernel goes wrong when the layouts of weight, gradient and moments differ)."""
    gen = torch.Generator().manual_seed(0)
    saved = nn.Parameter(torch.randn(4, 3, 3, 3, generator=gen))
    opt = torch.optim.AdamW([saved], lr=1e-2)
    for _ in range(2):
        saved.grad = torch.randn(saved.shape, generator=gen)
        opt.step()
    grads = [torch.randn(saved.shape, generator=gen) for _ in range(3)]
    results = {}
    for fused in (None, True):
        p = nn.Parameter(saved.detach().clone().contiguous(memory_format=CL))
        resumed = torch.optim.AdamW([p], lr=1e-2, fused=fused)
        resumed.load_state_dict(copy.deepcopy(opt.state_dict()))  # as read from a file: its own tensors
        assert not resumed.state[p]["exp_avg"].is_contiguous(memory_format=CL)
        match_state_layout(resumed)
        assert all(resumed.state[p][k].stride() == p.stride() for k in ("exp_avg", "exp_avg_sq"))
        for grad in grads:
            p.grad = grad.contiguous(memory_format=CL)
            resumed.step()
        results[fused] = p.detach()
    assert torch.allclose(results[True], results[None], rtol=1e-6, atol=1e-7)
    assert (results[True] - saved).abs().max() > 0.02


def test_ema_update_is_the_per_tensor_blend() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = ModelEMA(model, decay=0.9998)
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model(torch.randn(2, 3, 8, 8))  # BN running stats and num_batches_tracked move
    ema.update(model, step=7)
    w = ema.weight(7)
    for key, value in model.state_dict().items():
        got = ema.model.state_dict()[key]
        if value.dtype.is_floating_point:
            assert torch.equal(got, before[key].mul(1 - w).add(value, alpha=w)), key
        else:
            assert torch.equal(got, value), key
    assert 0.9 < w < 1.0 and not torch.equal(ema.model[0].weight, before["0.weight"])


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
def test_concat_shuffle_is_cat_then_channel_shuffle(memory_format) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 12, 5, 7, generator=gen).contiguous(memory_format=memory_format).requires_grad_()
    skip, rest = x.chunk(2, dim=1)
    branch = (rest * 3.0).contiguous(memory_format=memory_format)
    out = concat_shuffle(skip, branch)
    cat = torch.cat((skip, branch), dim=1)
    reference = cat.view(2, 2, 6, 5, 7).transpose(1, 2).reshape(2, 12, 5, 7)
    assert torch.equal(out, reference)
    assert out[:, 1::2].equal(branch) and out[:, 0::2].equal(skip)
    assert out.is_contiguous(memory_format=memory_format)
    weights = torch.randn(out.shape, generator=gen)
    (grad,) = torch.autograd.grad((out * weights).sum(), x, retain_graph=True)
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), x)
    assert torch.equal(grad, grad_ref)


def test_dense_grad_hands_on_a_dense_channels_last_gradient() -> None:
    seen = []
    for wrap in (False, True):
        x = torch.randn(2, 6, 4, 4).contiguous(memory_format=CL).requires_grad_()
        y = x * 2.0  # channels-last
        z = dense_grad(y) if wrap else y
        y.register_hook(lambda g: seen.append(g.is_contiguous(memory_format=CL)))
        (torch.cat((z, torch.ones_like(z)), dim=1) * torch.arange(12.0).view(1, 12, 1, 1)).sum().backward()
        assert torch.equal(x.grad, torch.arange(6.0).view(1, 6, 1, 1).mul(2.0).expand(2, 6, 4, 4))
    assert seen == [False, True]
    nchw = torch.randn(2, 6, 4, 4, requires_grad=True)
    assert dense_grad(nchw) is nchw and nchw._backward_hooks is None


def test_bins_leading_expectation_equals_expected_distances() -> None:
    gen = torch.Generator().manual_seed(0)
    reg = (torch.randn(3, 50, 32, generator=gen) * 6).requires_grad_()
    a, b = expected_distances(reg, 7), expected_distances_bins_leading(reg, 7)
    assert a.shape == b.shape == (3, 50, 4)
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-6)
    assert b.min() >= 0 and b.max() <= 7 and (b.max() - b.min()) > 3
    weights = torch.randn(a.shape, generator=gen)
    (ga,) = torch.autograd.grad((a * weights).sum(), reg)
    (gb,) = torch.autograd.grad((b * weights).sum(), reg)
    assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-5)
    uniform = expected_distances_bins_leading(torch.zeros(1, 32), 7)
    assert torch.allclose(uniform, torch.full((1, 4), 3.5))
    assert math.isclose(float(uniform.sum()), 14.0, rel_tol=1e-6)
